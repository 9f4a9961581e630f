"""The value-based loop: config errors, replay, one update per algorithm against the library losses,
target refresh, vmap over seeds, and DQN learning CartPole."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tdjax._src.losses import (
    categorical_q_learning_loss,
    double_q_learning_loss,
    q_learning_loss,
    quantile_q_learning_loss,
)
from tdjax.train import ValueConfig, make_agent, make_train, mean_return
from tdjax.train import replay as replay_lib

_COMPILES = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, *a, **k: _COMPILES.append(event) if event.endswith("backend_compile_duration") else None
)

TINY = dict(hidden=(16,), total_steps=400, num_envs=2, buffer_size=200, batch_size=8, learning_starts=16,
            n_atoms=11, v_min=-5.0, v_max=5.0, n_quantiles=8, target_update_interval=2, max_grad_norm=None)


# ----------------------------------------------------------------------------------------------------
# Config validation: before any compilation, naming the field.


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(batch_size=64, buffer_size=32), "batch_size"),
        (dict(probe_interval=10, probe_k=0), "probe_k"),
        (dict(probe_interval=10, probe_k=1), "probe_k"),
        (dict(env="Pong-NoSuchEnv"), "env"),
        (dict(algo="rainbow"), "algo"),
        (dict(optimizer="lamb"), "optimizer"),
        (dict(optimizer="momentum", momentum=1.0), "momentum"),
        (dict(num_envs=2.0), "num_envs"),
        (dict(num_envs=True), "num_envs"),
        (dict(lr="1e-3"), "lr"),
        (dict(hidden=[64, 64]), "hidden"),
        (dict(gamma=1.5), "gamma"),
        (dict(learning_starts=8, batch_size=16), "learning_starts"),
        (dict(buffer_size=1001, num_envs=4), "buffer_size"),
        (dict(v_min=1.0, v_max=-1.0), "v_min"),
        (dict(network="mlp", env="Breakout-MinAtar"), "network"),
        (dict(network="nature_cnn", env="Breakout-MinAtar"), "network"),
        (dict(num_devices=64), "num_devices"),
        (dict(probe_interval=10, probe_k=10_000), "probe_k"),
        (dict(total_steps=2), "total_steps"),
        (dict(learning_starts=100_000, total_steps=50_000, buffer_size=10_000), "learning_starts"),
    ],
)
def test_bad_config_names_the_field(changes, field):
    before = len(_COMPILES)
    with pytest.raises(ValueError, match=rf"ValueConfig\.{field}\b") as err:
        make_train(ValueConfig(**changes))
    assert len(_COMPILES) == before, "something was compiled before the config error"
    assert "Fix" in str(err.value) or "expected" in str(err.value) or "Valid names" in str(err.value)


def test_unknown_env_lists_valid_names():
    with pytest.raises(ValueError, match="Breakout-MinAtar.*CartPole-v1"):
        make_train(ValueConfig(env="Breakout"))


def test_config_is_frozen():
    cfg = ValueConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0  # type: ignore[misc]
    assert cfg.replace(lr=1.0).lr == 1.0 and cfg.lr == 1e-3


# ----------------------------------------------------------------------------------------------------
# Replay buffer against a naive circular buffer.


def test_replay_matches_naive_circular_buffer():
    capacity, num_envs = 5, 3
    example = replay_lib.Transition(
        obs=jnp.zeros((2,)), action=jnp.zeros((), jnp.int32), reward=jnp.zeros(()), discount=jnp.zeros(()),
        next_obs=jnp.zeros((2,)), done=jnp.zeros((), bool), valid=jnp.zeros((), bool),
    )
    state = replay_lib.init(example, capacity, num_envs, obs_dtype=jnp.uint8)
    naive = []  # list of per-step dicts, oldest first
    rng = np.random.default_rng(0)
    add = jax.jit(replay_lib.add)
    for step in range(8):
        obs = rng.integers(0, 2, (num_envs, 2)).astype(np.float32)
        batch = replay_lib.Transition(
            obs=jnp.asarray(obs), action=jnp.arange(num_envs, dtype=jnp.int32) + 10 * step,
            reward=jnp.full((num_envs,), float(step)), discount=jnp.ones((num_envs,)),
            next_obs=jnp.asarray(1 - obs), done=jnp.zeros((num_envs,), bool),
            valid=jnp.ones((num_envs,), bool),
        )
        state = add(state, batch)
        naive.append(batch)
        naive = naive[-capacity:]
        assert int(replay_lib.size(state)) == len(naive) * num_envs
    assert state.data.obs.dtype == jnp.uint8
    # recent(): the last steps in time order
    seg = replay_lib.recent(state, 4)
    np.testing.assert_array_equal(seg.action, np.stack([b.action for b in naive[-4:]]))
    np.testing.assert_array_equal(seg.obs, np.stack([b.obs for b in naive[-4:]]))
    # sample(): flat index t * num_envs + e over slots 0..capacity-1 (slot = step % capacity)
    key = jax.random.key(3)
    got = replay_lib.sample(state, key, 50)
    idx = np.asarray(jax.random.randint(key, (50,), 0, capacity * num_envs))
    slots = {s % capacity: b for s, b in zip(range(8 - len(naive), 8), naive)}
    want_actions = [int(slots[i // num_envs].action[i % num_envs]) for i in idx]
    np.testing.assert_array_equal(got.action, want_actions)
    assert got.obs.dtype == jnp.float32
    # sample_distinct(): k different transitions
    d = replay_lib.sample_distinct(state, jax.random.key(4), 15)
    assert len(set(np.asarray(d.action).tolist())) == 15


# ----------------------------------------------------------------------------------------------------
# One update of each algorithm equals the library loss and one optax step, computed by hand.


def _direct_loss(algo, cfg, apply, params, target_params, batch):
    z = jnp.linspace(cfg.v_min, cfg.v_max, cfg.n_atoms)
    taus = (jnp.arange(cfg.n_quantiles) + 0.5) / cfg.n_quantiles

    def one(obs, a, r, d, next_obs):
        out, out_t, out_t_online = apply(params, obs), apply(target_params, next_obs), apply(params, next_obs)
        g = cfg.gamma * d
        if algo == "dqn":
            return q_learning_loss(out, a, r, g, out_t)
        if algo == "double_dqn":
            return double_q_learning_loss(out, a, r, g, out_t, out_t_online)
        if algo == "c51":
            return categorical_q_learning_loss(z, out, a, r, g, z, out_t)
        return quantile_q_learning_loss(out, taus, a, r, g, out_t, out_t, kappa=cfg.qr_kappa)

    return jnp.mean(jax.vmap(one)(batch.obs, batch.action, batch.reward, batch.discount, batch.next_obs))


@pytest.mark.parametrize("algo", ["dqn", "double_dqn", "c51", "qr_dqn"])
def test_one_update_matches_library(algo):
    cfg = ValueConfig(algo=algo, **TINY)
    agent = make_agent(cfg)
    run = jax.jit(agent.run, static_argnums=2)
    state = jax.jit(agent.init)(jax.random.key(7))
    params0 = state.learner.params
    w = agent.warmup_iterations
    assert w == 8
    for i in range(w):
        state, m = run(state, i, 1)
        assert not bool(m.learned[0]) and np.isnan(m.loss[0])
        assert int(state.actor.replay.count) == i + 1
    np.testing.assert_allclose(m.epsilon[0], cfg.eps_start - (cfg.eps_start - cfg.eps_end) * 14 / 10_000, rtol=1e-6)
    before = state
    state, m = run(state, w, 1)
    assert bool(m.learned[0])

    # the minibatch of iteration w, re-drawn as documented: fold_in(actor key, w), 3rd of 4 splits
    k_sample = jax.random.split(jax.random.fold_in(state.actor.key, w), 4)[2]
    rep, e = state.actor.replay, cfg.num_envs
    idx = np.asarray(jax.random.randint(k_sample, (cfg.batch_size,), 0, int(rep.count) * e))
    batch = jax.tree.map(lambda buf: jnp.asarray(np.asarray(buf)[idx // e, idx % e]), rep.data)
    batch = batch._replace(obs=batch.obs.astype(jnp.float32), next_obs=batch.next_obs.astype(jnp.float32))

    p, tp = before.learner.params, before.learner.target_params
    direct = jax.jit(jax.value_and_grad(lambda q: _direct_loss(algo, cfg, agent.network.apply, q, tp, batch)))
    want, grads = direct(p)
    np.testing.assert_allclose(m.loss[0], want, rtol=2e-5, atol=1e-6)

    updates, _ = optax.adam(cfg.lr, eps=cfg.adam_eps).update(grads, before.learner.opt_state.inner_state, p)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 state.learner.params, optax.apply_updates(p, updates))

    # target network: untouched after 1 update, refreshed after target_update_interval = 2
    jax.tree.map(np.testing.assert_array_equal, state.learner.target_params, params0)
    state, m = run(state, w + 1, 1)
    jax.tree.map(np.testing.assert_array_equal, state.learner.target_params, state.learner.params)


def test_vmap_over_seeds_equals_separate_runs():
    cfg = ValueConfig(**TINY)
    train = make_train(cfg)
    keys = jax.random.split(jax.random.key(1), 2)
    _, m_batched = jax.jit(jax.vmap(train))(keys)
    s1, m1 = jax.jit(train)(keys[1])
    np.testing.assert_allclose(m_batched.loss[1], m1.loss, rtol=1e-5)
    np.testing.assert_array_equal(m_batched.return_count[1], m1.return_count)
    assert m1.loss.shape == (400 // 2,)


def test_dqn_learns_cartpole():
    """A random policy scores ~22 on CartPole-v1; DQN must clearly beat it within 30k env steps."""
    cfg = ValueConfig(env="CartPole-v1", algo="dqn", total_steps=30_000)
    _, metrics = jax.jit(jax.vmap(make_train(cfg)))(jax.random.split(jax.random.key(0), 2))
    n = metrics.loss.shape[-1]
    first, last = mean_return(metrics, last=None), mean_return(metrics, last=n // 4)
    assert np.all(last > 100), (first, last)
    assert np.all(np.isfinite(metrics.loss[:, -n // 2:]))


def test_sample_distinct_skips_invalid_transitions():
    # envpool's reset steps (valid=False) are stored but are not transitions: probes must not draw them
    example = replay_lib.Transition(
        obs=jnp.zeros((1,)), action=jnp.zeros((), jnp.int32), reward=jnp.zeros(()), discount=jnp.zeros(()),
        next_obs=jnp.zeros((1,)), done=jnp.zeros((), bool), valid=jnp.zeros((), bool))
    state = replay_lib.init(example, 6, 2)
    for t in range(6):
        valid = jnp.array([t % 2 == 0, True])
        state = replay_lib.add(state, replay_lib.Transition(
            obs=jnp.zeros((2, 1)), action=jnp.array([10 * t, 10 * t + 1], jnp.int32), reward=jnp.zeros(2),
            discount=jnp.ones(2), next_obs=jnp.zeros((2, 1)), done=jnp.zeros(2, bool), valid=valid))
    for seed in range(5):
        d = jax.jit(replay_lib.sample_distinct, static_argnums=2)(state, jax.random.key(seed), 9)
        assert bool(d.valid.all()) and len(set(np.asarray(d.action).tolist())) == 9
