"""tdjax.envs.make_vec: gymnax and envpool (XLA custom call and host callback) against envpool's own API,
and the value-based loop driving envpool Atari."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tdjax import envs

envpool = pytest.importorskip("envpool", reason="envpool is part of `make test`'s install ('tdjax[envs]')")


def _random_actions(n_steps, num_envs, num_actions, seed=0):
    return np.random.default_rng(seed).integers(0, num_actions, (n_steps, num_envs)).astype(np.int32)


def _reference(name, num_envs, actions, seed, options):
    """envpool's own Python API in a plain loop: the independent reference for make_vec."""
    pool = envpool.make(name, env_type="gymnasium", num_envs=num_envs, seed=seed, **options)
    obs, _ = pool.reset()
    out = {"obs": [], "reward": [], "term": [], "trunc": [], "raw": [], "lives": []}
    for a in actions:
        obs, rew, term, trunc, info = pool.step(a)
        out["obs"].append(np.moveaxis(obs, 1, -1).astype(np.float32))
        out["reward"].append(rew)
        out["term"].append(term)
        out["trunc"].append(trunc)
        out["raw"].append(info["reward"] if "reward" in info else rew)
        out["lives"].append(info.get("lives", np.zeros(num_envs)))
    return {k: np.stack(v) for k, v in out.items()}


def _run(venv, actions):
    def body(state, a):
        state, s = venv.step(state, jax.random.key(0), a)
        return state, s

    @jax.jit
    def run(key):
        state, obs = venv.reset(key)
        return jax.lax.scan(body, state, jnp.asarray(actions))[1]

    return jax.tree.map(np.asarray, run(jax.random.key(0)))


@pytest.mark.parametrize("name,options", [("Pong-v5", {"episodic_life": True, "reward_clip": True}),
                                          ("BigfishEasy-v0", {"num_levels": 3, "start_level": 5})])
@pytest.mark.parametrize("backend", ["xla", "host"])
def test_envpool_vec_matches_envpool_loop(name, options, backend):
    num_envs, n = 3, 1200
    venv = envs.make_vec(name, num_envs, seed=7, backend=backend, options=options)
    actions = _random_actions(n, num_envs, venv.num_actions)
    ref = _reference(name, num_envs, actions, seed=7, options=options)
    got = _run(venv, actions)
    np.testing.assert_array_equal(got.obs[::97], ref["obs"][::97])
    np.testing.assert_array_equal(got.reward, ref["reward"])
    np.testing.assert_array_equal(got.terminated, ref["term"].astype(bool))
    np.testing.assert_array_equal(got.raw_reward, ref["raw"])
    done = ref["term"].astype(bool) | ref["trunc"].astype(bool)
    assert done.any(), "the test needs episode ends to check the reset steps"
    # the step after an episode end is envpool's reset step: not a transition
    expected_valid = np.concatenate([np.ones((1, num_envs), bool), ~done[:-1]])
    np.testing.assert_array_equal(got.valid, expected_valid)
    np.testing.assert_array_equal(got.next_obs[::97], got.obs[::97])
    assert venv.obs_shape == got.obs.shape[2:] and venv.obs_storage_dtype == jnp.uint8
    assert venv.obs_scale == pytest.approx(1 / 255) and not venv.jittable


def test_atari_episode_end_is_game_over_not_life_loss():
    # Breakout has 5 lives: with episodic_life every lost life terminates, but only game over ends
    # the episode whose return is logged.
    venv = envs.make_vec("Breakout-v5", 2, seed=0)
    actions = _random_actions(3000, 2, venv.num_actions, seed=1)
    ref = _reference("Breakout-v5", 2, actions, 0, dict(envs.ATARI_DEFAULTS))
    got = _run(venv, actions)
    assert got.terminated.sum() > got.episode_end.sum() > 0
    np.testing.assert_array_equal(got.episode_end, ref["term"].astype(bool) & (ref["lives"] == 0)
                                  | ref["trunc"].astype(bool) & ~ref["term"].astype(bool))


def test_gymnax_vec_is_vmapped_env():
    venv = envs.make_vec("CartPole-v1", 4)
    env = envs.make("CartPole-v1")
    state, obs = jax.jit(venv.reset)(jax.random.key(3))
    ref_state, ref_obs = jax.vmap(env.reset)(jax.random.split(jax.random.key(3), 4))
    np.testing.assert_allclose(obs, ref_obs, rtol=1e-6, atol=1e-7)
    a = jnp.array([0, 1, 1, 0], jnp.int32)
    state, s = jax.jit(venv.step)(state, jax.random.key(4), a)
    _, r = jax.vmap(env.step)(ref_state, jax.random.split(jax.random.key(4), 4), a)
    np.testing.assert_allclose(s.obs, r.obs, rtol=1e-6, atol=1e-7)
    assert s.valid.all() and venv.jittable and venv.always_valid


def test_unknown_envpool_game_suggests_names():
    with pytest.raises(ValueError, match=r"Pongg-v5.*Did you mean: Pong-v5.*Fix"):
        envs.check_env_name("Pongg-v5")
    with pytest.raises(ValueError, match=r"Breakout-Minatar.*Did you mean: Breakout-MinAtar"):
        envs.check_env_name("Breakout-Minatar")
    with pytest.raises(ValueError, match="backend"):
        envs.make_vec("Pong-v5", 2, backend="gpu")


def test_value_loop_on_pong_masks_reset_steps():
    from tdjax.train import ValueConfig, make_agent
    from tdjax.train import replay as replay_lib

    cfg = ValueConfig(env="Pong-v5", num_envs=4, total_steps=480, buffer_size=480, batch_size=8,
                      learning_starts=400, train_frequency=4, target_update_interval=2)
    agent = make_agent(cfg)
    assert agent.env.name == "Pong-v5" and agent.network.torso.__class__.__name__ == "NatureTorso"
    state = jax.jit(agent.init)(jax.random.key(0))
    state, m = jax.jit(agent.run, static_argnums=2)(state, 0, agent.num_iterations)
    assert np.isfinite(np.asarray(m.loss)[np.asarray(m.learned)]).all()
    data = state.actor.replay.data
    assert data.obs.dtype == jnp.uint8 and int(data.obs.max()) > 1  # pixels stored in their own units

    # the masked batch loss equals the plain mean over the valid transitions only (naive reference)
    batch = replay_lib.sample(state.actor.replay, jax.random.key(1), 8)
    batch = batch._replace(valid=jnp.array([True, False] * 4))
    lp = state.learner
    _, loss = jax.jit(agent.learner_update)(lp, batch)
    per = [float(agent.example_loss(lp.params, lp.target_params, jax.tree.map(lambda x: x[i], batch)))
           for i in range(8) if bool(batch.valid[i])]
    np.testing.assert_allclose(float(loss), np.mean(per), rtol=1e-5)


def test_envpool_needs_one_device():
    from tdjax.train import ValueConfig, make_agent

    with pytest.raises(ValueError, match="num_devices.*envpool"):
        make_agent(ValueConfig(env="Pong-v5", num_devices=2, num_envs=4, batch_size=32))


def test_envpool_run_resumes_from_checkpoint_with_fresh_environments(tmp_path):
    from tdjax.train import ValueConfig, train_with_checkpoints

    cfg = ValueConfig(env="Pong-v5", num_envs=2, total_steps=96, buffer_size=96, batch_size=4,
                      learning_starts=48, train_frequency=2, checkpoint_interval=8)

    class Killed(Exception):
        pass

    def kill(it):
        raise Killed(it)

    with pytest.raises(Killed):
        train_with_checkpoints(cfg, jax.random.key(0), tmp_path, progress=False, on_chunk=kill)
    state, m = train_with_checkpoints(cfg, jax.random.key(0), tmp_path, progress=False)
    assert m.loss.shape == (24,) and np.isfinite(m.loss[m.learned]).all()
    assert int(state.actor.replay.count) == 48  # 24 iterations × 2 steps: full, replay restored
