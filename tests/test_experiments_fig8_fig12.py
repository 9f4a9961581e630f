"""Lyle et al. 2022 Figs. 8 and 12: tiny runs checked on what they write, and the measurements checked against
independent references (a naive per-state loop for the spectra, a naive per-transition optimizer step for the
update matrix)."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tdjax
from experiments import lyle22_fig8, lyle22_fig12
from tdjax.train import make_agent
from tdjax.train import replay as replay_lib
from tests._shared import once_per_session


def _filled_replay(key, capacity, num_envs, obs_shape, writes, done_every=None):
    """A replay buffer written `writes` times (wrapping when writes > capacity) with random binary frames."""
    example = replay_lib.Transition(
        obs=jnp.zeros(obs_shape), action=jnp.zeros((), jnp.int32), reward=jnp.zeros(()), discount=jnp.zeros(()),
        next_obs=jnp.zeros(obs_shape), done=jnp.zeros((), bool), valid=jnp.zeros((), bool))
    replay = replay_lib.init(example, capacity, num_envs, jnp.uint8)
    add = jax.jit(replay_lib.add)
    for w in range(writes):
        ks = jax.random.split(jax.random.fold_in(key, w), 4)
        done = jnp.zeros((num_envs,), bool)
        if done_every is not None:
            done = (jnp.arange(num_envs) + w) % done_every == 0
        replay = add(replay, replay_lib.Transition(
            obs=jax.random.bernoulli(ks[0], 0.3, (num_envs,) + obs_shape).astype(jnp.float32),
            action=jax.random.randint(ks[1], (num_envs,), 0, 3),
            reward=jax.random.randint(ks[2], (num_envs,), 0, 2).astype(jnp.float32),
            discount=1.0 - done.astype(jnp.float32),
            next_obs=jax.random.bernoulli(ks[3], 0.3, (num_envs,) + obs_shape).astype(jnp.float32),
            done=done, valid=jnp.ones((num_envs,), bool)))
    return replay


# ------------------------------------------------------------------------------------------------ Fig. 8


@pytest.fixture(scope="module")
def fig8_out(tmp_path_factory):
    def make(out):
        return out, lyle22_fig8.main(["--tiny", "--out", str(out), "--no-progress"])

    return once_per_session(tmp_path_factory, "fig8", make)


def test_fig8_files_arrays_and_claims(fig8_out):
    out, claims = fig8_out
    for name in ("lyle22_fig8.png", "lyle22_fig8.npz", "lyle22_fig8.csv", "claims.json", "claims.md"):
        assert (out / name).is_file(), name
    record = json.loads((out / "claims.json").read_text())
    assert record["experiment"] == "lyle22_fig8"
    assert all(c["evidence"] for c in record["claims"] if c["held"] is not None)
    cfg = lyle22_fig8.tiny()
    res = np.load(out / "lyle22_fig8.npz")
    G, S, n, k = len(cfg.games), cfg.seeds, cfg.windows, cfg.window
    assert res["spectrum_agent"].shape == res["spectrum_random"].shape == (G, S, n, k // 2 + 1)
    assert res["value_agent"].shape == res["reward"].shape == (G, S, n, k)
    assert np.all(res["windows_found"] == n)
    # the stored spectra are |rfft| of the stored signals, and the low-frequency fraction matches its definition
    np.testing.assert_allclose(res["spectrum_agent"], np.abs(np.fft.rfft(res["value_agent"], axis=-1)), rtol=1e-10)
    np.testing.assert_allclose(res["spectrum_reward"], np.abs(np.fft.rfft(res["reward"], axis=-1)), atol=1e-10)
    p = res["spectrum_agent"][..., 1:] ** 2
    m = int(np.ceil(cfg.low_fraction * (k // 2)))
    np.testing.assert_allclose(res["low_fraction_agent"], p[..., :m].sum(-1) / p.sum(-1), rtol=1e-10)


def test_fig8_spectra_match_naive_per_state_loop():
    cfg = lyle22_fig8.tiny()
    agent = make_agent(cfg.agent.replace(env="Breakout-MinAtar"))
    params = agent.network.init(jax.random.key(3), jnp.zeros(agent.env.obs_shape, jnp.float32))
    capacity, E, k = 12, 2, 5
    replay = _filled_replay(jax.random.key(4), capacity, E, agent.env.obs_shape, writes=17)  # wrapped: pos = 5
    assert int(replay.pos) == 5 and int(replay.count) == capacity
    order = lyle22_fig8.buffer_order(replay)
    starts, envs, cross = lyle22_fig8.select_windows(np.asarray(replay.data.done)[order],
                                                     np.asarray(replay.data.valid)[order], k, 3)
    assert len(starts) == 3 and np.all(cross == 0)
    apply = jax.jit(agent.network.apply)  # compiled once, applied to one state at a time
    for action in (0, None):
        values, rewards = lyle22_fig8.window_signals(agent, params, replay, starts, envs, k, action)
        spec = lyle22_fig8.spectrum(values)
        ordered = replay_lib.recent(replay, capacity)  # the library's own time order, oldest first
        for w, (t0, e) in enumerate(zip(starts, envs)):
            naive = []
            for j in range(k):
                q = np.asarray(apply(params, ordered.obs[t0 + j, e]))  # one state at a time
                naive.append(q.max() if action is None else q[action])
            np.testing.assert_allclose(values[w], naive, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(spec[w], np.abs(np.fft.rfft(np.array(naive, np.float64))), rtol=1e-4, atol=1e-5)
            np.testing.assert_array_equal(rewards[w], np.asarray(ordered.reward[t0:t0 + k, e]))


def test_fig8_select_windows_prefers_clean_recent_nonoverlapping():
    T, E, k = 30, 2, 10
    done = np.zeros((T, E), bool)
    done[[9, 19], 0] = True  # env 0 ends episodes at t = 9 and 19 (the last transition of two windows)
    valid = np.ones((T, E), bool)
    starts, envs, cross = lyle22_fig8.select_windows(done, valid, k, 4)
    assert list(zip(starts.tolist(), envs.tolist())) == [(20, 0), (20, 1), (10, 0), (10, 1)]
    assert np.all(cross == 0)
    # a done mid-window or a non-transition counts as a crossing; with none clean left, the fewest are taken
    done2 = np.zeros((T, E), bool)
    done2[::4] = True
    valid2 = valid.copy()
    valid2[5, 1] = False
    done2, valid2 = np.concatenate([done2, done2]), np.concatenate([valid2, valid2])  # T = 60: room for 5
    starts, envs, cross = lyle22_fig8.select_windows(done2, valid2, k, 5)
    assert len(starts) == 5 and np.all(np.diff(cross) >= 0)
    for t0, e, c in zip(starts, envs, cross):
        assert c == done2[t0:t0 + k - 1, e].sum() + (~valid2[t0:t0 + k, e]).sum()
    for e in range(E):  # no two windows of one environment overlap
        spans = sorted(t for t, ee in zip(starts, envs) if ee == e)
        assert all(b - a >= k for a, b in zip(spans, spans[1:]))


def test_fig8_bad_config_names_the_field():
    with pytest.raises(ValueError, match="window"):
        lyle22_fig8.run(dataclasses.replace(lyle22_fig8.tiny(), window=1))
    with pytest.raises(ValueError, match="dense_games"):
        lyle22_fig8.run(dataclasses.replace(lyle22_fig8.tiny(), dense_games=(), sparse_games=()))
    with pytest.raises(ValueError, match="windows"):
        lyle22_fig8.run(dataclasses.replace(lyle22_fig8.tiny(), windows=0))


# ------------------------------------------------------------------------------------------------ Fig. 12


@pytest.fixture(scope="module")
def fig12_out(tmp_path_factory):
    # C51 only, to keep the file under a minute: DQN's panel is checked against the naive loop below.
    def make(out):
        return out, lyle22_fig12.main(["--tiny", "--algos", "c51", "--out", str(out), "--no-progress"])

    return once_per_session(tmp_path_factory, "fig12", make)


def test_fig12_files_arrays_and_claims(fig12_out):
    out, claims = fig12_out
    for name in ("lyle22_fig12.png", "lyle22_fig12.npz", "lyle22_fig12.csv", "claims.json", "claims.md"):
        assert (out / name).is_file(), name
    record = json.loads((out / "claims.json").read_text())
    assert record["experiment"] == "lyle22_fig12"
    assert all(c["evidence"] for c in record["claims"] if c["held"] is not None)
    cfg = dataclasses.replace(lyle22_fig12.tiny(), algos=("c51",))
    res = np.load(out / "lyle22_fig12.npz")
    assert list(res["algos"]) == ["c51"]
    L, G, S, k = len(cfg.algos), len(cfg.games), cfg.seeds, cfg.k
    P = cfg.agent.total_steps // cfg.point_interval
    assert res["A"].shape == res["A_ordered"].shape == res["A_fresh"].shape == (L, G, S, P, k, k)
    assert np.all(np.isfinite(res["A"]))
    assert list(res["env_steps"]) == [cfg.point_interval * (p + 1) for p in range(P)]
    for idx in np.ndindex(L, G, S, P):
        A, order = res["A"][idx], res["order"][idx]
        assert sorted(order.tolist()) == list(range(k))  # a permutation
        np.testing.assert_array_equal(res["A_ordered"][idx], A[order][:, order])
        assert res["update_rank"][idx] == int(tdjax.update_rank(A, cfg.rank_eps))
        assert res["update_rank_fresh"][idx] == int(tdjax.update_rank(res["A_fresh"][idx], cfg.rank_eps))
        assert 1 <= res["update_rank"][idx] <= k
        np.testing.assert_array_equal(order, lyle22_fig12.cluster_order(A, cfg.linkage))  # deterministic


def test_fig12_panel_matches_naive_one_step_loop():
    """A[i, j] from `panel` equals: one Adam step (the agent's optimizer, its current moments) on transition i
    alone, then the max-Q change at state j, computed transition by transition."""
    cfg = lyle22_fig12.tiny()
    agent = make_agent(cfg.agent.replace(env="Breakout-MinAtar", algo="dqn"))
    obs0 = jnp.zeros(agent.env.obs_shape, jnp.float32)
    params = agent.network.init(jax.random.key(0), obs0)
    target = agent.network.init(jax.random.key(1), obs0)
    replay = _filled_replay(jax.random.key(2), 10, 4, agent.env.obs_shape, writes=10, done_every=3)
    learner = tdjax.train.value_based.LearnerState(params, target, agent.optimizer.init(params))
    update = jax.jit(agent.learner_update)
    for s in range(2):  # non-trivial Adam moments and step count
        learner, _ = update(learner, replay_lib.sample(replay, jax.random.key(10 + s), 16))
    key, k = jax.random.key(7), 4
    A, A_fresh, batch = jax.jit(lambda l, r, key: lyle22_fig12.panel(agent, l, r, key, k))(learner, replay, key)
    k_batch, k_fresh = jax.random.split(key)
    expected_batch = replay_lib.sample_distinct(replay, k_batch, k)
    jax.tree.map(np.testing.assert_array_equal, batch, expected_batch)

    grad = jax.jit(jax.grad(agent.example_loss))  # jitted once, applied to one transition at a time
    step = jax.jit(agent.optimizer.update)
    apply = jax.jit(agent.network.apply)

    def naive(params, opt_state, target_params):
        out = np.zeros((k, k))
        for i in range(k):
            tr = jax.tree.map(lambda x: x[i], batch)
            updates, _ = step(grad(params, target_params, tr), opt_state, params)
            p_i = optax.apply_updates(params, updates)
            for j in range(k):
                x = batch.obs[j]
                out[i, j] = float(np.max(apply(p_i, x)) - np.max(apply(params, x)))
        return out

    np.testing.assert_allclose(A, naive(learner.params, learner.opt_state, learner.target_params), rtol=2e-3,
                               atol=1e-6)
    fresh = agent.network.init(k_fresh, obs0)
    np.testing.assert_allclose(A_fresh, naive(fresh, agent.optimizer.init(fresh), fresh), rtol=2e-3, atol=1e-6)


def test_fig12_cluster_order_groups_blocks():
    rng = np.random.default_rng(0)
    k = 12
    labels = rng.permutation(np.repeat([0, 1, 2], 4))
    A = 5.0 * labels[:, None] + 0.01 * rng.normal(size=(k, k))
    order = lyle22_fig12.cluster_order(A)
    assert sorted(order.tolist()) == list(range(k))
    runs = np.sum(np.diff(labels[order]) != 0)
    assert runs == 2  # each cluster contiguous
    np.testing.assert_array_equal(order, lyle22_fig12.cluster_order(A))


def test_fig12_samples_only_valid_transitions():
    # envpool's reset steps are not transitions: the panels draw with replay.sample_distinct, which skips them
    replay = _filled_replay(jax.random.key(5), 6, 2, (2, 2, 1), writes=6)
    valid = np.ones((6, 2), bool)
    valid[::2, 0] = False
    replay = replay._replace(data=replay.data._replace(valid=jnp.asarray(valid)))
    for s in range(5):
        batch = replay_lib.sample_distinct(replay, jax.random.key(s), 9)  # all 9 valid ones
        assert bool(np.all(batch.valid))


def test_fig12_bad_config_names_the_field():
    tiny = lyle22_fig12.tiny()
    for changes, field in ((dict(k=1), "k"), (dict(games=()), "games"), (dict(algos=()), "algos"),
                           (dict(algos=("ppo",)), "algos"), (dict(point_interval=200), "point_interval"),
                           (dict(linkage="median"), "linkage")):
        with pytest.raises(ValueError, match=f"Config.{field}"):
            lyle22_fig12.run(dataclasses.replace(tiny, **changes))


def test_paper_scale_configs_build_agents():
    pytest.importorskip("envpool")
    c8, c12 = lyle22_fig8.config("paper"), lyle22_fig12.config("paper")
    assert c12.agent.total_steps * lyle22_fig12.FRAME_SKIP == 7_000_000
    assert c12.point_interval * lyle22_fig12.FRAME_SKIP == 100_000
    assert c12.agent.total_steps // c12.point_interval == 70
    lyle22_fig8._validate(c8)
    lyle22_fig12._validate(c12)
    agent = make_agent(c12.agent.replace(env=c12.games[0], algo="c51"))
    assert agent.network is not None and not agent.env.jittable
