"""Bengio et al. 2020 Figs 5, 11, 13 experiment: a tiny run (CartPole, MLP TD(λ) students on a short
teacher's D*, λ × seeds as one vmapped program), checked on what it writes; one run of the sweep against
a run configured with its λ; the stiffness against an explicit cosine of two `jax.grad`s with the
λ-return written out as a backward loop over the episode; the singular values against NumPy's SVD."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import bengio20_fig5
from tdjax.train import load_dataset
from tdjax.train.seeds import make_seed_runner
from tests._shared import once_per_session

GAME = "CartPole-v1"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    def make(root):
        claims = bengio20_fig5.main(["--tiny", "--out", str(root / "out"), "--no-progress",
                                     "--teacher-dir", str(root / "teachers")])
        cfg = dataclasses.replace(bengio20_fig5.tiny(), teacher_dir=str(root / "teachers"))
        t_path, d_path = bengio20_fig5.data_paths(cfg)  # cached by the run: nothing is trained again
        return root, claims, dict(np.load(root / "out" / "bengio20_fig5.npz")), cfg, d_path

    return once_per_session(tmp_path_factory, "bengio_fig5", make)


K = 1  # the λ of the sweep compared with a configured run: λ = 0.9


@pytest.fixture(scope="module")
def configured(run):
    """R seeds of a runner CONFIGURED with td_lambda = λ_K (no sweep), after the first chunk, measured on
    the update samples the experiment drew for that point."""
    _, _, res, cfg, d_path = run
    runner = make_seed_runner(cfg.student.replace(dataset=d_path, td_lambda=cfg.lambdas[K]), cfg.student_seeds)
    state, _ = runner.run(runner.init(bengio20_fig5.student_key(cfg)), 0, cfg.measure_every)
    data = jax.tree.map(lambda a: a[0], state.data)
    pos = res["positions"][0]
    profs, mask = bengio20_fig5.measurer(runner.agent, cfg)(state.learner, data, jnp.asarray(pos[..., 0]),
                                                            jnp.asarray(pos[..., 1]))
    return runner, state, profs, mask


def test_outputs(run):
    root, _, res, cfg, _ = run
    out = root / "out"
    for name in ("bengio20_fig5.png", "bengio20_fig5.npz", "bengio20_fig5.csv", "claims.json", "claims.md"):
        assert (out / name).is_file(), name
    L, R, N = len(cfg.lambdas), cfg.student_seeds, cfg.num_samples
    M, W, X = cfg.student.num_updates // cfg.measure_every, 2 * cfg.max_offset + 1, cfg.max_offset
    for k in bengio20_fig5.MEASURES:
        assert res[k].shape == (L, M, R, N, W), k
        assert np.all(res[k][~res["mask"]] == 0), k  # nothing where masked
    assert res["mask"].shape == (L, M, R, N, W) and np.all(res["mask"][..., X])
    assert res["singular_values"].shape == (L, M, R, 32)  # min(64 states, 32 hidden units)
    np.testing.assert_allclose(res["stiffness"][..., X], 1.0, rtol=1e-5)  # a gradient with itself
    np.testing.assert_allclose(res["stiffness_value"][..., X], 1.0, rtol=1e-5)
    # one step on s_t lowers its own loss on average (not always: Adam's step carries its momentum)
    assert np.all(res["gain"][..., X].mean(axis=(1, 2, 3)) > 0)
    # λ = 0: G⁰ = r + γ d maxₐ Q_θ⁻(s′, a), so the own loss IS the TD loss and both gains agree everywhere
    np.testing.assert_allclose(res["gain"][0], res["gain_td"][0], rtol=1e-4, atol=1e-6)
    # the profile is the count-weighted mean of the per-sample values
    prof = bengio20_fig5.profiles(res, "gain_td")
    want = res["gain_td"].sum(axis=(1, 2, 3)) / res["mask"].sum(axis=(1, 2, 3))
    np.testing.assert_allclose(prof, want, rtol=1e-5)
    record = json.loads((out / "claims.json").read_text())
    held = [c for c in record["claims"] if c["held"] is not None]
    assert len(held) == 7 and all(c["evidence"] for c in held)
    rows = (out / "bengio20_fig5.csv").read_text().splitlines()
    assert len(rows) == 1 + L * W


def test_sweep_run_equals_configured_run(run, configured):
    """Runs K·R .. K·R + R − 1 of the vmapped λ sweep (λ as data) measure what R seeds of a runner
    configured with td_lambda = λ_K measure, on the same update samples after the first chunk: the
    parameters, λ-returns and optimizer state of the runs agree, hence every measurement."""
    _, _, res, cfg, _ = run
    _, _, profs, mask = configured
    np.testing.assert_array_equal(mask, res["mask"][K, 0])
    for key in bengio20_fig5.MEASURES:
        np.testing.assert_allclose(profs[key].per_sample, res[key][K, 0], rtol=2e-3, atol=2e-5, err_msg=key)
    assert not np.allclose(res["stiffness"][K, 0], res["stiffness"][0, 0], rtol=1e-2)  # λ matters


def test_stiffness_equals_explicit_cosine(run, configured):
    """S(t, x) = cos(∇J(s_t), ∇J(s_{t+x})) for J = (Q_θ(s, a) − G^λ)² with G^λ from an explicit backward
    loop over the episode (G_k = r_k + γ d_k [(1 − λ) maxₐ Q_θ⁻(s′_k, a) + λ G_{k+1}], λ = 0 at its last
    step), and for J = maxₐ Q_θ(s, a); for the configured run of λ = 0.9, seed 1, one update sample."""
    _, _, res, cfg, d_path = run
    runner, state, profs, mask = configured
    s, i = 1, 0
    agent, lam, gamma = runner.agent, cfg.lambdas[K], cfg.student.gamma
    learner = jax.tree.map(lambda a: a[s], state.learner)
    ds, _ = load_dataset(d_path)
    d = jax.tree.map(np.asarray, ds.replay.data)
    t0, e0 = (int(v) for v in res["positions"][0, s, i])
    X = cfg.max_offset
    offsets = [x for x in range(-X, X + 1) if x != 0 and bool(mask[s, i, X + x])]
    assert offsets, "the update sample has no neighbour"
    x = offsets[len(offsets) // 2]

    q_next = jax.jit(lambda p, xs: jnp.max(agent.q_values(p, xs), axis=-1))

    def naive_lambda_return(tt):
        end = tt
        while not d.done[end, e0]:
            end += 1
        v = np.asarray(q_next(learner.target_params, d.next_obs[tt:end + 1, e0]))
        g = 0.0
        for j in range(end, tt - 1, -1):
            lam_j = 0.0 if j == end else lam
            g = d.reward[j, e0] + gamma * d.discount[j, e0] * ((1 - lam_j) * v[j - tt] + lam_j * g)
        return g

    def own(p, tt, g):
        return (agent.q_values(p, d.obs[tt, e0])[d.action[tt, e0]] - g) ** 2

    def value(p, tt):
        return jnp.max(agent.q_values(p, d.obs[tt, e0]))

    def cosine(a, b):
        a, b = (jnp.concatenate([jnp.ravel(v) for v in jax.tree.leaves(g)]) for g in (a, b))
        return jnp.dot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b))

    g_t, g_x = naive_lambda_return(t0), naive_lambda_return(t0 + x)
    np.testing.assert_allclose(learner.lambda_return[t0, e0], g_t, rtol=1e-4, atol=1e-4)

    @jax.jit
    def explicit(params):
        own_grad, value_grad = jax.grad(own), jax.grad(value)
        return (cosine(own_grad(params, t0, g_t), own_grad(params, t0 + x, g_x)),
                cosine(value_grad(params, t0), value_grad(params, t0 + x)))

    want, want_v = (float(v) for v in explicit(learner.params))
    np.testing.assert_allclose(profs["stiffness"].per_sample[s, i, X + x], want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(profs["stiffness_value"].per_sample[s, i, X + x], want_v, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(res["stiffness"][K, 0, s, i, X + x], want, rtol=1e-3, atol=1e-4)  # the sweep's


def test_singular_values_equal_numpy(run, configured):
    """σᵢ/√B of the last hidden layer at the saved feature states against np.linalg.svd, for both seeds
    of λ_K after the first chunk."""
    _, _, res, cfg, d_path = run
    runner, state, _, _ = configured
    ds, _ = load_dataset(d_path)
    t, e = res["feature_slots"][:, 0], res["feature_slots"][:, 1]
    obs = np.asarray(ds.replay.data.obs)[t, e]
    for s in range(cfg.student_seeds):
        params = jax.tree.map(lambda a: a[s], state.learner.params)
        phi = np.asarray(runner.agent.features(params, obs), np.float64)
        want = np.linalg.svd(phi, compute_uv=False) / np.sqrt(len(t))
        np.testing.assert_allclose(res["singular_values"][K, 0, s], want, rtol=2e-3, atol=1e-5)


@pytest.mark.parametrize("change, field", [
    (dict(lambdas=(0.0, 1.5)), "lambdas"),
    (dict(lambdas=(0.9, 0.0)), "lambdas"),
    (dict(measure_every=70), "measure_every"),
    (dict(update="minibatch"), "update"),
])
def test_bad_config_names_the_field(change, field):
    with pytest.raises(ValueError, match=field):
        bengio20_fig5.run(dataclasses.replace(bengio20_fig5.tiny(), **change), show_progress=False)


def test_bad_objective_names_the_field():
    cfg = bengio20_fig5.tiny()
    with pytest.raises(ValueError, match="student"):
        bengio20_fig5.run(dataclasses.replace(cfg, student=cfg.student.replace(objective="q_learning")),
                          show_progress=False)
