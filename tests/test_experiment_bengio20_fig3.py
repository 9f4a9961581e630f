"""Bengio et al. 2020 Fig. 3 experiment: a tiny run (CartPole, MLP students on a short teacher's D*),
checked on what it writes; its mask against an explicit walk along D*'s episodes; its gain against one
optax step taken by hand; the D* cache."""

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import bengio20_fig3
from experiments._distill import dstar
from tdjax.train import load_dataset, load_teacher
from tdjax.train.seeds import make_seed_runner
from tests._shared import once_per_session

GAME = "CartPole-v1"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    def make(root):
        claims = bengio20_fig3.main(["--tiny", "--out", str(root / "out"), "--no-progress",
                                     "--teacher-dir", str(root / "teachers")])
        cfg = bengio20_fig3.tiny()
        folder = root / "teachers" / GAME
        d_path = folder / f"dstar_{cfg.data_steps}_eps{cfg.data_epsilon:g}"
        return root, claims, dict(np.load(root / "out" / "bengio20_fig3.npz")), str(folder / "teacher"), str(d_path)

    return once_per_session(tmp_path_factory, "bengio_fig3", make)


def test_outputs(run):
    root, _, res, _, _ = run
    out = root / "out"
    for name in ("bengio20_fig3.png", "bengio20_fig3.npz", "bengio20_fig3.csv", "claims.json", "claims.md"):
        assert (out / name).is_file(), name
    cfg = bengio20_fig3.tiny()
    G, O, S, N = 1, len(cfg.objectives), cfg.student_seeds, cfg.num_samples
    M, W, X = cfg.student.num_updates // cfg.measure_every, 2 * cfg.max_offset + 1, cfg.max_offset
    assert res["gain"].shape == res["gain_td"].shape == res["count"].shape == (G, O, M, S, W)
    assert res["per_sample"].shape == res["mask"].shape == (G, O, M, S, N, W)
    assert list(res["offsets"]) == list(range(-X, X + 1))
    assert list(res["updates"]) == [cfg.measure_every * (m + 1) for m in range(M)]
    mask, per_sample = res["mask"], res["per_sample"]
    # the mask is respected: nothing where masked, the count is the mask's, the mean the masked mean
    assert np.all(per_sample[~mask] == 0)
    np.testing.assert_array_equal(res["count"], mask.sum(axis=4))
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(res["gain"], per_sample.sum(axis=4) / res["count"], rtol=1e-5, atol=1e-7)
    assert np.all(mask[..., X])  # every update sample is a valid transition of a complete episode
    assert np.all(np.isfinite(res["gain"][..., X])) and np.all(np.isfinite(res["gain_td"][..., X]))
    assert np.all(res["gain"][..., X] > 0)  # one step on s_t lowers its own loss
    assert np.all(np.isnan(res["gain"]) == (res["count"] == 0))
    record = json.loads((out / "claims.json").read_text())
    held = [c for c in record["claims"] if c["held"] is not None]
    assert len(held) == 2 * 3 and all(c["evidence"] for c in held)
    rows = (out / "bengio20_fig3.csv").read_text().splitlines()
    assert len(rows) == 1 + G * O * W


def test_mask_is_the_update_samples_episode(run):
    """The mask against an explicit walk from t along D*'s stored stream, one slot at a time."""
    _, _, res, _, d_path = run
    ds, _ = load_dataset(d_path)
    done, valid = np.asarray(ds.replay.data.done), np.asarray(ds.replay.data.valid)
    capacity = done.shape[0]
    X = bengio20_fig3.tiny().max_offset
    positions, mask = res["positions"][0], res["mask"][0, 0]  # [M, S, N, 2], [M, S, N, W]
    for (t, e), m in zip(positions.reshape(-1, 2), mask.reshape(-1, 2 * X + 1)):
        expected = np.zeros(2 * X + 1, bool)
        expected[X] = valid[t, e]
        for step in (1, -1):
            s = t
            for k in range(1, X + 1):
                s_next = s + step
                if not 0 <= s_next < capacity or done[min(s, s_next), e]:
                    break
                s = s_next
                expected[X + step * k] = valid[s, e]
        np.testing.assert_array_equal(m, expected, err_msg=f"update sample at slot {t}, env {e}")


def test_gain_equals_one_optax_step_by_hand(run):
    """gain(t, x) = J_θ(s_{t+x}) − J_θ′(s_{t+x}), θ′ one step of the student's optax optimizer on s_t
    alone, computed explicitly under jit for the update sample itself (x = 0) and one neighbour, with
    both losses written out from the saved teacher: the L_reg student's (q(s)[a] − q_T(s)[a])² and the
    TD loss to the teacher's bootstrap (q(s)[a] − r − γ d maxₐ′ q_T(s′, a′))²."""
    _, _, _, t_path, d_path = run
    cfg = bengio20_fig3.tiny()
    X = cfg.max_offset
    s_cfg = cfg.student.replace(teacher=t_path, dataset=d_path, objective="q_regression")
    runner = make_seed_runner(s_cfg, cfg.student_seeds)
    state, _ = runner.run(runner.init(jax.random.key(3)), 0, 20)
    agent, data = runner.agent, jax.tree.map(lambda a: a[0], state.data)
    ds, _ = load_dataset(d_path)
    pool = np.flatnonzero(np.asarray(ds.replay.data.valid & ds.mc_complete).reshape(-1))
    pick = np.random.default_rng(0).choice(pool, (cfg.student_seeds, 4), replace=False)
    num_envs = ds.replay.data.action.shape[1]
    t, e = jnp.asarray(pick // num_envs), jnp.asarray(pick % num_envs)
    gain, gain_td, mask = bengio20_fig3.measurer(agent, cfg)(state.learner, data, t, e)

    learner = jax.tree.map(lambda a: a[1], state.learner)  # seed 1, update sample 0
    t0, e0 = int(t[1, 0]), int(e[1, 0])
    offsets = [0] + [x for x in range(1, X + 1) if bool(mask[1, 0, X + x])][:1] + [-1]
    assert len(offsets) == 3 and bool(mask[1, 0, X - 1]) == (t0 > 0 and not bool(ds.replay.data.done[t0 - 1, e0]))
    teacher = load_teacher(t_path)
    obs, act = ds.replay.data.obs, ds.replay.data.action
    gamma = s_cfg.gamma

    def l_reg(p, tt):
        return (agent.q_values(p, obs[tt, e0])[act[tt, e0]] - teacher.outputs(obs[tt, e0])[act[tt, e0]]) ** 2

    def l_td_star(p, tt):
        tr = jax.tree.map(lambda a: a[tt, e0], ds.replay.data)
        target = tr.reward + gamma * tr.discount * jnp.max(teacher.outputs(tr.next_obs))
        return (agent.q_values(p, tr.obs)[tr.action] - target) ** 2

    @jax.jit
    def by_hand(tt):
        grads = jax.grad(l_reg)(learner.params, t0)
        updates, _ = agent.optimizer.update(grads, learner.opt_state, learner.params)
        new = optax.apply_updates(learner.params, updates)
        return (l_reg(learner.params, tt) - l_reg(new, tt), l_td_star(learner.params, tt) - l_td_star(new, tt))

    for x in offsets:
        if not bool(mask[1, 0, X + x]):
            assert gain.per_sample[1, 0, X + x] == 0 and gain_td.per_sample[1, 0, X + x] == 0
            continue
        want, want_td = by_hand(t0 + x)
        np.testing.assert_allclose(gain.per_sample[1, 0, X + x], want, rtol=2e-4, atol=1e-7, err_msg=f"x={x}")
        np.testing.assert_allclose(gain_td.per_sample[1, 0, X + x], want_td, rtol=2e-4, atol=1e-7, err_msg=f"x={x}")
    assert float(gain.per_sample[1, 0, X]) > 0


def test_dstar_is_collected_once(run):
    _, _, _, t_path, d_path = run
    cfg = bengio20_fig3.tiny()
    saved = Path(d_path) / "dataset.npz"
    before = saved.stat().st_mtime_ns
    again = dstar(t_path, Path(d_path).parent, jax.random.key(9), data_steps=cfg.data_steps,
                  epsilon=cfg.data_epsilon)
    assert again == d_path and saved.stat().st_mtime_ns == before  # reused, not collected again
    ds, info = load_dataset(d_path)
    assert info.source == "collected" and info.epsilon == cfg.data_epsilon
    assert ds.replay.data.action.shape == (cfg.data_steps, cfg.teacher.num_envs)


@pytest.mark.parametrize("change, field", [
    (dict(objectives=("q_learning",)), "objectives"),
    (dict(measure_every=300), "measure_every"),
    (dict(update="minibatch"), "update"),
])
def test_bad_config_names_the_field(change, field):
    with pytest.raises(ValueError, match=field):
        bengio20_fig3.run(dataclasses.replace(bengio20_fig3.tiny(), **change), show_progress=False)
