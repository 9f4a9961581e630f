"""Lyle et al. 2022 Fig. 9 and Fig. 10 experiments: tiny runs, checked on what they write."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tdjax
from experiments import lyle22_fig9, lyle22_fig10
from tests._shared import once_per_session


@pytest.fixture(scope="module")
def fig9_out(tmp_path_factory):
    def make(out):
        return out, lyle22_fig9.main(["--tiny", "--out", str(out), "--no-progress"])

    return once_per_session(tmp_path_factory, "fig9", make)


@pytest.fixture(scope="module")
def fig10_out(tmp_path_factory):
    def make(out):
        return out, lyle22_fig10.main(["--tiny", "--out", str(out), "--no-progress"])

    return once_per_session(tmp_path_factory, "fig10", make)


def _check_claims_files(out, claims):
    for name in ("claims.json", "claims.md"):
        assert (out / name).is_file()
    record = json.loads((out / "claims.json").read_text())
    assert record["experiment"] == claims.experiment
    checked = [c for c in record["claims"] if c["held"] is not None]
    assert len(checked) >= 5
    assert all(c["claim"] and c["evidence"] for c in checked)
    assert "HELD" in (out / "claims.md").read_text()


def test_fig9_outputs(fig9_out):
    out, claims = fig9_out
    cfg = lyle22_fig9.tiny()
    for suffix in ("png", "npz", "csv"):
        assert (out / f"lyle22_fig9.{suffix}").stat().st_size > 0
    _check_claims_files(out, claims)
    res = np.load(out / "lyle22_fig9.npz")
    L, G, n = len(cfg.lengthscales), len(cfg.gammas), cfg.n_states
    assert res["td"].shape == (L, G, len(cfg.td_steps), n)
    assert res["mc"].shape == (L, G, n)
    assert res["mc_train_mse"].shape == (L, G, cfg.n_curve_times)
    for key in ("td", "mc", "td_rmse", "mc_rmse", "mc_train_mse", "alpha_star_td", "alpha_star_mc", "v_pi"):
        assert np.all(np.isfinite(res[key])), key


def test_fig9_mc_error_decreases_monotonically(fig9_out):
    res = np.load(fig9_out[0] / "lyle22_fig9.npz")
    mse = res["mc_train_mse"]  # MC is gradient flow on a convex loss over the training states.
    assert np.all(np.diff(mse, axis=-1) <= 1e-10 * (1.0 + mse[..., :-1]))
    assert np.all(mse[..., -1] < mse[..., 0])


def test_fig9_large_lengthscale_td_drifts_away_without_unstable_eigenvalue(fig9_out):
    cfg = lyle22_fig9.tiny()
    res = np.load(fig9_out[0] / "lyle22_fig9.npz")
    i, j = int(np.argmax(cfg.lengthscales)), int(np.argmax(cfg.gammas))
    v_pi = res["v_pi"][j]
    err = [np.sqrt(np.mean((res["td"][i, j, s] - v_pi) ** 2)) for s in range(len(cfg.td_steps))]
    assert err[-1] > err[0]  # TD (γ = 0.99, ℓ = 100) is further from Vπ after 100 steps than after 20
    assert np.sqrt(np.mean((res["td_long"][i, j] - v_pi) ** 2)) > 10 * np.sqrt(np.mean(v_pi**2))
    assert np.sqrt(np.mean((res["mc"][i, j] - v_pi) ** 2)) < err[-1]
    assert np.max(res["growth_rate"]) < 1e-10  # no eigenvalue of the flow has positive real part


def test_fig9_euler_threshold_matches_explicit_steps():
    """Euler steps just below α* stay bounded and just above blow up (ℓ = 1, γ = 0.99)."""
    with jax.enable_x64(True):
        P, r = (jnp.asarray(a) for a in tdjax.circle_mdp(50, 24))
        mask = np.arange(50) < 40
        K = lyle22_fig9.kernel(lyle22_fig9.coordinates(50, "line"), 1.0, "none", mask)
        theta = lyle22_fig9.residual_rates(K, P, r, 0.99, jnp.asarray(mask))
        a_star = lyle22_fig9.euler_threshold(theta)
        assert a_star == pytest.approx(0.6836, abs=1e-3)

        def final_size(alpha):
            v = tdjax.kernel_td_euler_trajectory(K, P, r, 0.99, jnp.asarray(mask), jnp.zeros(50), alpha, 3000)
            return float(jnp.abs(v[-1]).max())

        assert final_size(0.97 * a_star) < 10.0
        assert final_size(1.03 * a_star) > 1e6


def test_fig9_rejects_bad_config():
    with pytest.raises(ValueError, match="embedding"):
        lyle22_fig9.run(lyle22_fig9.Config(embedding="torus"), show_progress=False)
    with pytest.raises(ValueError, match="n_train"):
        lyle22_fig9.run(lyle22_fig9.Config(n_train=50), show_progress=False)


def test_fig10_outputs(fig10_out):
    out, claims = fig10_out
    cfg = lyle22_fig10.tiny()
    for suffix in ("png", "npz", "csv"):
        assert (out / f"lyle22_fig10.{suffix}").stat().st_size > 0
    _check_claims_files(out, claims)
    res = np.load(out / "lyle22_fig10.npz")
    shape = (cfg.n_graphs, 3 + len(cfg.n_steps), len(cfg.train_fractions))
    assert res["errors"].shape == shape
    assert np.all(np.isfinite(res["errors"])) and np.all(res["errors"] >= 0)
    assert res["max_imag_eigenvalue"] < 1e-8  # undirected graphs: real spectra


def test_fig10_smooth_targets_generalise_rough_ones_do_not(fig10_out):
    cfg = lyle22_fig10.tiny()
    mean = np.load(fig10_out[0] / "lyle22_fig10.npz")["mean_errors"]
    v_pi, top, bottom = mean[0], mean[1], mean[2]
    assert v_pi[-1] < 0.5 * v_pi[0]
    assert top[-1] < 0.5 * top[0]
    assert bottom[-1] > 0.9 * bottom[0]
    small_n, large_n = 3 + int(np.argmin(cfg.n_steps)), 3 + int(np.argmax(cfg.n_steps))
    assert mean[large_n, -1] / mean[large_n, 0] < mean[small_n, -1] / mean[small_n, 0]


def test_fig10_kernel_ridge_matches_direct_solve():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((12, 4))
    K, y = X @ X.T, rng.standard_normal(12)
    train = np.arange(12) < 7
    with jax.enable_x64(True):
        got = np.asarray(lyle22_fig10.kernel_ridge_predict(jnp.asarray(K), jnp.asarray(y), jnp.asarray(train), 0.3))
    want = K[:, train] @ np.linalg.solve(K[np.ix_(train, train)] + 0.3 * np.eye(7), y[train])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
