"""tdjax.envs: gymnax wrapper against gymnax itself, auto-reset, and envpool's error path."""

import dataclasses
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tdjax import envs
from tdjax.envs import _envpool


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="Valid names: .*Breakout-MinAtar.*SpaceInvaders-MinAtar.*CartPole-v1"):
        envs.make("Breakout-v5")


@pytest.mark.parametrize("name", envs.ENV_NAMES)
def test_spec_matches_gymnax(name):
    import gymnax

    raw, params = gymnax.make(name)
    obs, _ = jax.eval_shape(raw.reset, jax.random.key(0), params)
    spec = envs.spec(name)
    assert spec.obs_shape == obs.shape and spec.num_actions == raw.num_actions
    env = envs.make(name)
    assert (env.obs_shape, env.num_actions, env.obs_storage_dtype) == spec


@pytest.mark.parametrize("name", ["CartPole-v1", "Breakout-MinAtar"])
def test_step_matches_raw_gymnax_step(name):
    import gymnax

    raw, params = gymnax.make(name)
    env = envs.make(name)
    key = jax.random.key(0)

    @jax.jit
    def both(key):
        def one(carry, t):
            s, rs = carry
            k = jax.random.fold_in(key, t)
            a = t % env.num_actions
            s, out = env.step(s, k, a)
            r_obs, rs, r_rew, r_term, r_trunc, info = raw.step(k, rs, a, params)
            return (s, rs), (out, (r_obs, r_rew, r_term, info["final_observation"]))

        s, _ = env.reset(key)
        _, rs = raw.reset(key, params)
        return jax.lax.scan(one, (s, rs), jnp.arange(300))[1]

    out, (r_obs, r_rew, r_term, r_final) = both(key)
    assert out.obs.dtype == jnp.float32 and out.obs.shape == (300,) + env.obs_shape
    np.testing.assert_array_equal(out.obs, r_obs)
    np.testing.assert_array_equal(out.next_obs, r_final)
    np.testing.assert_array_equal(out.reward, r_rew)
    np.testing.assert_array_equal(out.terminated, r_term)
    np.testing.assert_array_equal(out.raw_reward, r_rew)
    np.testing.assert_array_equal(out.episode_end, out.terminated | out.truncated)
    assert np.asarray(out.valid).all()
    assert np.asarray(out.terminated | out.truncated).any()  # episodes ended (and were reset) in 300 steps
    if env.obs_storage_dtype == jnp.uint8:  # MinAtar maps are binary: uint8 replay storage is exact
        assert set(np.unique(np.asarray(out.obs)).tolist()) <= {0.0, 1.0}


def test_auto_reset_and_truncation():
    env = envs.make("CartPole-v1")
    step = jax.jit(env.step)
    s, obs = env.reset(jax.random.key(0))
    for t in range(200):  # always pushing right topples the pole
        s, out = step(s, jax.random.key(t), 1)
        if out.terminated:
            break
    assert out.terminated and not out.truncated
    assert abs(float(out.next_obs[2])) > 0.2 or abs(float(out.next_obs[0])) > 2.4  # the final, fallen state
    assert np.all(np.abs(np.asarray(out.obs)) <= 0.05)  # a fresh episode

    short = dataclasses.replace(env, _params=env._params.replace(max_steps_in_episode=5))
    s, obs = short.reset(jax.random.key(1))
    flags = []
    for t in range(5):
        s, out = jax.jit(short.step)(s, jax.random.key(t), t % 2)
        flags.append((bool(out.terminated), bool(out.truncated)))
    assert flags == [(False, False)] * 4 + [(False, True)]


def _fake_import(exc):
    def import_module(name):
        if name == "envpool":
            raise exc
        raise AssertionError(name)

    return import_module


def test_envpool_missing_package(monkeypatch):
    err = ModuleNotFoundError("No module named 'envpool'", name="envpool")
    monkeypatch.setattr(_envpool.importlib, "import_module", _fake_import(err))
    with pytest.raises(RuntimeError, match="pip install envpool"):
        envs.make_envpool("Pong-v5")


def test_envpool_missing_qt_library(monkeypatch):
    err = ImportError("libQt5Gui.so.5: cannot open shared object file: No such file or directory")
    monkeypatch.setattr(_envpool.importlib, "import_module", _fake_import(err))
    with pytest.raises(RuntimeError, match=r"sudo apt-get install libqt5gui5"):
        envs.make_envpool("CoinRun-v0")


def test_envpool_qt_error_raised_when_creating(monkeypatch):
    def make(task_id, **kwargs):
        raise ImportError("libQt5Gui.so.5: cannot open shared object file")

    fake = types.SimpleNamespace(make=make)
    monkeypatch.setattr(_envpool.importlib, "import_module", lambda name: fake)
    with pytest.raises(RuntimeError, match="libqt5gui5"):
        envs.make_envpool("BigFish-v0", num_envs=2)


def test_envpool_passes_arguments_through(monkeypatch):
    seen = {}
    fake = types.SimpleNamespace(make=lambda task_id, **kw: seen.update(task_id=task_id, **kw) or "env")
    monkeypatch.setattr(_envpool.importlib, "import_module", lambda name: fake)
    assert envs.make_envpool("Pong-v5", num_envs=3, seed=1) == "env"
    assert seen == {"task_id": "Pong-v5", "num_envs": 3, "seed": 1, "env_type": "gymnasium"}
