"""Bengio et al. 2020 Fig. 7 experiment: a tiny run (CartPole, MLP students on a short teacher's D*),
checked on what it writes; its recorded r1, r2, r3 for one pair against eq. 16/17 written out with
explicit Hessians, and their sum against the derivative of the interference along the update; B
against the minibatch the loop really used; its statistics against a plain loop."""

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from experiments import bengio20_fig7
from tdjax.train import load_dataset, load_teacher, make_agent, offline
from tests._shared import once_per_session

GAME = "CartPole-v1"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    def make(root):
        claims = bengio20_fig7.main(["--tiny", "--out", str(root / "out"), "--no-progress",
                                     "--teacher-dir", str(root / "teachers")])
        cfg = bengio20_fig7.tiny()
        folder = root / "teachers" / GAME
        d_path = folder / f"dstar_{cfg.data_steps}_eps{cfg.data_epsilon:g}"
        return root, claims, dict(np.load(root / "out" / "bengio20_fig7.npz")), str(folder / "teacher"), str(d_path)

    return once_per_session(tmp_path_factory, "bengio_fig7", make)


def test_outputs(run):
    root, _, res, _, _ = run
    out = root / "out"
    for name in ("bengio20_fig7.png", "bengio20_fig7.npz", "bengio20_fig7.csv", "claims.json", "claims.md"):
        assert (out / name).is_file(), name
    cfg = bengio20_fig7.tiny()
    V, S, NA, NB = len(cfg.variants), cfg.student_seeds, cfg.num_other, cfg.student.batch_size
    P = cfg.student.num_updates // cfg.measure_every + 1
    assert res["terms"].shape == (V, P, S, 3, NA, NB) and res["weight"].shape == (V, P, S, NA, NB)
    assert list(res["updates"]) == [cfg.measure_every * p for p in range(P)]
    assert np.all(res["weight"] == 1) and np.all(np.isfinite(res["terms"]))
    # every variant starts from the same weights and draws the same first minibatch
    first = res["slots_b"][:, 0]
    np.testing.assert_array_equal(first, np.broadcast_to(first[:1], first.shape))
    td = [i for i, v in enumerate(cfg.variants) if v != "Reg"]
    for v in td[1:]:  # the TD variants measure the same eq. 17 at the same θ before the first update
        np.testing.assert_allclose(res["terms"][v, 0], res["terms"][td[0], 0], rtol=1e-5, atol=1e-6)
    reg = list(cfg.variants).index("Reg")
    assert np.all(res["terms"][reg, :, :, 0] >= 0)  # regression: r1 = δ_B² ρ̄_AB² ≥ 0
    record = json.loads((out / "claims.json").read_text())
    assert sum(c["held"] is not None for c in record["claims"]) == 6
    assert all(c["evidence"] for c in record["claims"] if c["held"] is not None)
    rows = (out / "bengio20_fig7.csv").read_text().splitlines()
    assert len(rows) == 1 + V * P * 3


def test_statistics_against_a_loop(run):
    """Fig. 7's lines (per-seed statistics over the pairs, averaged over seeds) by a plain loop."""
    _, _, res, _, _ = run
    lines = bengio20_fig7.over_time(res)
    V, P, S = res["terms"].shape[:3]
    for v, p, i in [(0, 0, 1), (V - 1, P - 1, 2), (V - 1, 1, 1)]:
        per_seed = {k: [] for k in ("mean", "pos_mean", "neg_mean", "frac_pos")}
        for s in range(S):
            xs = [float(x) for x in res["terms"][v, p, s, i].ravel()]
            pos, neg = [x for x in xs if x > 0], [x for x in xs if x < 0]
            per_seed["mean"].append(sum(xs) / len(xs))
            per_seed["pos_mean"].append(sum(pos) / len(pos) if pos else np.nan)
            per_seed["neg_mean"].append(sum(neg) / len(neg) if neg else np.nan)
            per_seed["frac_pos"].append(len(pos) / len(xs))
        for k, vals in per_seed.items():
            np.testing.assert_allclose(lines[k][v, p, i], np.nanmean(vals), rtol=1e-5, err_msg=k)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _pair_by_hand(f, y, theta, ex_a, ex_b):
    """r1, r2, r3 of eq. 16/17 for one pair, with explicit gradient vectors and Hessian matrices."""
    d_a, d_b = f(theta, ex_a) - y(theta, ex_a), f(theta, ex_b) - y(theta, ex_b)
    g_a, g_b = jax.grad(f)(theta, ex_a), jax.grad(f)(theta, ex_b)
    gy_a, gy_b = jax.grad(y)(theta, ex_a), jax.grad(y)(theta, ex_b)
    h_a, h_b = jax.hessian(f)(theta, ex_a), jax.hessian(f)(theta, ex_b)
    rho_ab, rho_bb = g_a @ g_b, g_b @ g_b
    r1 = d_b**2 * rho_ab * (rho_ab - gy_a @ g_b)
    r2 = d_a * d_b * rho_ab * (rho_bb - gy_b @ g_b)
    r3 = d_a * d_b**2 * g_b @ (h_a @ g_b + h_b @ g_a)
    return jnp.stack([r1, r2, r3])


def test_terms_against_explicit_hessians(run):
    """At the first measuring point (the students' initial weights), pair (A_2, B_5) of seed 1: the
    recorded r_i against eq. 16 (Reg: y = Q_θ*(s, a)) and eq. 17 (QL: y = r + γ d maxₐ′ Q_θ(s′, a′))
    with explicit Hessians; −(r1 + r2 + r3) against d/dα [δ_A δ_B ∇f_A·∇f_B](θ − α δ_B ∇f_B) by
    forward-mode differentiation; and B against the minibatch of the loop's first update."""
    _, _, res, t_path, d_path = run
    cfg = bengio20_fig7.tiny()
    key = jax.random.fold_in(jax.random.key(cfg.seed), 0)
    agent = make_agent(bengio20_fig7.student_config(cfg, "QL", t_path, d_path))
    s, i, j = 1, 2, 5
    state = jax.jit(agent.init)(jax.random.split(jax.random.fold_in(key, 2), cfg.student_seeds)[s])  # seed s
    params = state.learner.params
    theta, unravel = ravel_pytree(params)
    d = load_dataset(d_path)[0].replay.data
    teacher = load_teacher(t_path)
    gamma = cfg.student.gamma

    def example(slot):
        t, e = (int(x) for x in slot)
        return dict(obs=d.obs[t, e], a=d.action[t, e], r=d.reward[t, e], disc=d.discount[t, e],
                    next_obs=d.next_obs[t, e])

    ex_a, ex_b = example(res["slots_a"][0, s, i]), example(res["slots_b"][0, 0, s, j])

    def f(th, ex):
        return agent.q_values(unravel(th), ex["obs"])[ex["a"]]

    targets = {
        "Reg": lambda th, ex: teacher.outputs(ex["obs"])[ex["a"]],
        "QL": lambda th, ex: ex["r"] + gamma * ex["disc"] * jnp.max(agent.q_values(unravel(th), ex["next_obs"])),
    }
    for name, y in targets.items():
        v = list(cfg.variants).index(name)
        recorded = res["terms"][v, 0, s, :, i, j]
        want = _pair_by_hand(f, y, theta, ex_a, ex_b)
        np.testing.assert_allclose(recorded, want, rtol=2e-3, atol=1e-4 * np.abs(want).max(), err_msg=name)

        def rho(alpha, y=y):
            step = (f(theta, ex_b) - y(theta, ex_b)) * jax.grad(f)(theta, ex_b)
            th = theta - alpha * step
            delta = lambda ex: f(th, ex) - y(th, ex)  # noqa: E731
            return delta(ex_a) * delta(ex_b) * (jax.grad(f)(th, ex_a) @ jax.grad(f)(th, ex_b))

        rho_prime = jax.jit(lambda a, rho=rho: jax.jvp(rho, (a,), (1.0,))[1])(0.0)
        np.testing.assert_allclose(-recorded.sum(), rho_prime, rtol=2e-3, atol=1e-4 * np.abs(want).max(),
                                   err_msg=name)
    # B is the minibatch the loop used for its first update: its mean QL loss is the loss it logged
    _, metrics = jax.jit(lambda st: offline.iteration(agent.spec, st, jnp.int32(0), None))(state)
    target_params = params  # θ⁻ = θ at the start
    losses = []
    for slot in res["slots_b"][0, 0, s]:
        ex = example(slot)
        q_next = agent.q_values(target_params, ex["next_obs"])
        losses.append(0.5 * (ex["r"] + gamma * ex["disc"] * jnp.max(q_next) - f(theta, ex)) ** 2)
    np.testing.assert_allclose(metrics.loss, np.mean(losses), rtol=1e-4)


@pytest.mark.parametrize("change, field", [
    (dict(variants=("Reg", "SARSA")), "variants"),
    (dict(td_target="frozen"), "td_target"),
    (dict(measure_every=30), "measure_every"),
    (dict(ddqn_tau=0.0), "ddqn_tau"),
])
def test_bad_config_names_the_field(change, field):
    with pytest.raises(ValueError, match=field):
        bengio20_fig7.run(dataclasses.replace(bengio20_fig7.tiny(), **change), show_progress=False)
