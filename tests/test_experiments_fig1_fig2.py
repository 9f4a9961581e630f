"""Lyle et al. 2022 Figs. 1 and 2: the experiments run with their tiny configs and produce sound outputs."""

import json

import jax
import numpy as np
import pytest
import scipy.linalg

from experiments import lyle22_fig1, lyle22_fig2
from tests._shared import once_per_session

FIG1_FILES = ("lyle22_fig1.png", "lyle22_fig1.npz", "lyle22_fig1.csv", "claims.json", "claims.md")
FIG2_FILES = ("lyle22_fig2.png", "lyle22_fig2.npz", "lyle22_fig2.csv", "claims.json", "claims.md")


@pytest.fixture(scope="module")
def fig1_out(tmp_path_factory):
    def make(out):
        lyle22_fig1.main(["--tiny", "--out", str(out), "--no-progress"])
        return out

    return once_per_session(tmp_path_factory, "fig1", make)


@pytest.fixture(scope="module")
def fig2_out(tmp_path_factory):
    def make(out):
        lyle22_fig2.main(["--tiny", "--out", str(out), "--no-progress"])
        return out

    return once_per_session(tmp_path_factory, "fig2", make)


def _claims(out, name):
    claims = json.loads((out / "claims.json").read_text())
    assert claims["experiment"] == name
    assert claims["claims"] and all({"claim", "held", "evidence"} <= set(c) for c in claims["claims"])
    return claims


# ---------------------------------------------------------------------------------------------- Fig. 1


def test_fig1_writes_outputs(fig1_out):
    for f in FIG1_FILES:
        assert (fig1_out / f).stat().st_size > 0, f
    claims = _claims(fig1_out, "lyle22_fig1")
    assert any(c["held"] is not None for c in claims["claims"])


def test_fig1_numbers(fig1_out):
    cfg = lyle22_fig1.tiny()
    n = cfg.n_position * cfg.n_velocity
    res = np.load(fig1_out / "lyle22_fig1.npz")
    k_s = int(res["num_smooth"])
    err = res["normalised_error"]
    assert res["v_pi"].shape == (n,) and res["eigenvalues"].shape == (n,)
    assert k_s >= cfg.num_per_set and err.shape[1] - k_s >= cfg.num_per_set
    assert err.shape == (cfg.num_steps + 1, len(res["selected"]))
    assert np.all(np.isfinite(err)) and np.all(np.isfinite(res["v_pi"]))
    lam = res["eigenvalues"][res["selected"]]
    assert np.all(lam[k_s:].real < 0) and np.all(lam[:k_s].real > lam[k_s:].real.max())
    # The claim: the negative-eigenvalue set has converged further than the smooth set at the end.
    assert err[-1, k_s:].mean() < 0.1 * err[-1, :k_s].mean()
    # Discrete Obs. 4.1: every coefficient error is |1 − α(1 − γλᵢ)|ᵗ times its start.
    np.testing.assert_allclose(err, res["predicted_normalised_error"], rtol=0, atol=1e-8 * err.max())


def test_fig1_dual_row_matches_inverse_of_eigenvectors():
    rng = np.random.default_rng(0)
    P = rng.random((12, 12))
    P /= P.sum(axis=1, keepdims=True)
    w, V = np.linalg.eig(P)
    dual = np.linalg.inv(V)
    with jax.enable_x64(True):
        for i in range(12):
            u, residual = lyle22_fig1.dual_row(P.astype(complex), w[i], V[:, i])
            np.testing.assert_allclose(np.asarray(u), dual[i], rtol=1e-7, atol=1e-9)
            assert float(residual) < 1e-10


def test_fig1_restarting_chain_keeps_the_value_up_to_an_affine_map():
    mdp_P = np.array([[0.5, 0.5, 0.0], [0.0, 0.2, 0.8], [0.0, 0.0, 1.0]])  # state 2 is the absorbing goal
    r = np.array([-1.0, -1.0, 0.0])
    terminal = np.array([False, False, True])
    P, r2 = lyle22_fig1.restarting_chain(mdp_P, r, terminal)
    np.testing.assert_allclose(P.sum(axis=1), 1.0)
    np.testing.assert_allclose(P[2], [0.5, 0.5, 0.0])
    g = 0.9
    v_ep = scipy.linalg.solve(np.eye(3) - g * mdp_P, r)
    v = scipy.linalg.solve(np.eye(3) - g * P, r2)
    slope, intercept = np.polyfit(v_ep, v, 1)
    assert slope > 0
    np.testing.assert_allclose(v, slope * v_ep + intercept, atol=1e-12)


# ---------------------------------------------------------------------------------------------- Fig. 2


def test_fig2_writes_outputs(fig2_out):
    for f in FIG2_FILES:
        assert (fig2_out / f).stat().st_size > 0, f
    _claims(fig2_out, "lyle22_fig2")


def test_fig2_numbers(fig2_out):
    cfg = lyle22_fig2.tiny()
    K = len(cfg.pretrain_frequencies) + int(cfg.random_labels)
    L = cfg.finetune_steps // cfg.log_every
    fine = (2 * cfg.grid - 1) ** 2
    res = np.load(fig2_out / "lyle22_fig2.npz")
    for key in ("train_mse", "interp_mse"):
        assert res[key].shape == (cfg.num_seeds, K + 1, L)
        assert np.all(np.isfinite(res[key]))
    assert res["pretrain_fit"].shape == (cfg.num_seeds, K, cfg.pretrain_steps // cfg.log_every)
    assert res["final_pred"].shape == (cfg.num_seeds, K + 1, fine)
    assert np.all(np.isfinite(res["final_pred"]))
    assert int(res["train_mask"].sum()) == cfg.grid**2
    # Fine-tuning learns the value function: training loss falls well below the target variance (1).
    assert np.all(res["train_mse"][:, :, -1] < 0.1)
    # The claim: from scratch interpolates better than after pre-training on random labels.
    interp = res["interp_mse"][:, :, -1].mean(axis=0)
    assert interp[K] < interp[K - 1]


def test_fig2_rejects_bad_config():
    import dataclasses

    with pytest.raises(ValueError, match="multiple of log_every"):
        lyle22_fig2.run(dataclasses.replace(lyle22_fig2.tiny(), finetune_steps=30), show_progress=False)
