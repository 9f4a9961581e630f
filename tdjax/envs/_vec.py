"""Batches of environments behind one interface, for the training loops: `make_vec(name, num_envs)`.

A `VecEnv` steps E environments together:

  state, obs = venv.reset(key)                  # obs [E, *obs_shape] float32
  state, step = venv.step(state, key, action)   # action [E] int32; every EnvStep field [E, ...]

Two kinds sit behind it:

  * gymnax games (MinAtar, classic control): pure JAX, `jittable=True`, so a whole run can be
    `jax.vmap`-ed over seeds. Every step is a real transition (`valid` all True).
  * envpool games (Atari `*-v5`, ProcGen `*Easy-v0`/`*Hard-v0`): C++ environments driven from inside
    jit, either through envpool's XLA custom call (`backend="xla"`, the default) or by a host callback
    into envpool's Python API (`backend="host"`, `jax.experimental.io_callback`, ordered). The
    environments are seeded at construction (`seed`), live outside JAX, and cannot be vmapped over.

envpool resets an environment on the call AFTER the one that ended its episode: that call ignores
the action and returns the first observation of the next episode with reward 0. `EnvStep.valid` is
False for exactly those steps, so a loop can drop them (they are not transitions of the MDP).
`episode_end` marks the end of a real episode (with Atari's `episodic_life`, a lost life terminates
the TD episode but not the game), and `raw_reward` is the unclipped reward, for logging returns.

Observations come out as float32 in the environment's own units (Atari/ProcGen pixels 0..255,
channels last); `obs_scale` is the factor networks should apply (1/255 for pixels) and
`obs_storage_dtype` the narrowest dtype that holds them exactly (for replay buffers).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
from typing import Any, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from tdjax.envs import _envpool, _gymnax, _registry
from tdjax.envs._gymnax import EnvStep

__all__ = ["VecEnv", "make_vec", "vec_spec", "check_env_name", "is_envpool_name",
           "ATARI_DEFAULTS"]

ATARI_DEFAULTS: Dict[str, Any] = {"episodic_life": True, "reward_clip": True}
"""envpool options tdjax sets for Atari unless given: the usual DQN preprocessing. envpool itself
does the rest of it by default (no-op starts, frame skip 4 with max-pooling, grey 84×84, 4 stacked
frames, sticky actions p = 0.25 for `-v5`, 108k-frame time limit)."""


class VecSpec(NamedTuple):
    obs_shape: Tuple[int, ...]
    num_actions: int
    obs_storage_dtype: Any
    obs_scale: float
    jittable: bool
    frame_stack: int = 1  # frames stacked along the last obs axis (4 for envpool Atari).
    network: str = "auto"  # the torso network="auto" picks for a registered env (tdjax.envs.register_env)


@dataclasses.dataclass(frozen=True, eq=False)
class VecEnv:
    """E environments stepped together (see the module docstring for the protocol).

    Attributes:
      name: the environment's name, e.g. "Breakout-MinAtar" or "Pong-v5".
      num_envs: E.
      obs_shape: shape of one observation (channels last for images).
      num_actions: number of discrete actions.
      obs_storage_dtype: narrowest dtype holding observations exactly (uint8 for pixels and MinAtar).
      obs_scale: factor a network applies to observations (1/255 for pixels, 1 otherwise).
      jittable: pure JAX (can be vmapped over seeds and checkpointed bit-for-bit).
      always_valid: every step is a transition (no envpool reset steps).
      max_episode_steps: time limit after which an episode is truncated.
      frame_stack: frames stacked along the last observation axis, oldest first (4 for envpool Atari,
        1 otherwise); a replay buffer stores each frame once (`tdjax.train.replay.init`).
    """

    name: str
    num_envs: int
    obs_shape: Tuple[int, ...]
    num_actions: int
    obs_storage_dtype: Any
    obs_scale: float
    jittable: bool
    always_valid: bool
    max_episode_steps: int
    frame_stack: int = 1

    def reset(self, key: jax.Array, pool: Any = None) -> Tuple[Any, jax.Array]:
        """(state, obs [E, ...]); `pool` (only where `pool_size` is not None): episodes draw their
        seed from the first `pool` of the environment's `pool_size` (the masked-image tasks' images)."""
        raise NotImplementedError

    @property
    def pool_size(self) -> Optional[int]:
        """How many episode seeds `reset(key, pool=...)` chooses among (a masked-image task's
        `num_images`), or None: this environment has no pool."""
        return None

    def step(self, state: Any, key: jax.Array, action: jax.Array) -> Tuple[Any, EnvStep]:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True, eq=False)
class _GymnaxVec(VecEnv):
    env: Any = None  # tdjax.envs.JaxEnv

    def reset(self, key, pool=None):
        keys = jax.random.split(key, self.num_envs)
        if pool is None:
            return jax.vmap(self.env.reset)(keys)
        if self.pool_size is None:
            raise ValueError(f"{self.name}.reset: pool={pool!r} given, but {self.name} has no pool of episode "
                             "seeds. Fix: pass no pool (only the masked-image tasks take one).")
        return jax.vmap(lambda k: self.env.reset(k, pool))(keys)

    @property
    def pool_size(self):
        n = getattr(self.env, "num_images", None)
        return None if n is None else int(n)

    def step(self, state, key, action):
        return jax.vmap(self.env.step)(state, jax.random.split(key, self.num_envs), action)


@dataclasses.dataclass(frozen=True, eq=False)
class _EnvpoolVec(VecEnv):
    """envpool environments stepped inside jit. State: (handle [8] uint8 | step counter, prev_done [E])."""

    pool: Any = None
    backend: str = "xla"
    xla_step: Any = None

    def _to_jax_obs(self, obs):
        return jnp.moveaxis(jnp.asarray(obs), -3, -1).astype(jnp.float32)  # [E, C, H, W] → [E, H, W, C]

    def _host_reset(self):
        obs, _ = self.pool.reset()
        return np.ascontiguousarray(np.moveaxis(obs, -3, -1))

    def _host_step(self, action):
        obs, rew, term, trunc, info = self.pool.step(np.asarray(action, np.int32))
        lives = np.asarray(info.get("lives", np.zeros(self.num_envs)), np.int32)
        raw = np.asarray(info.get("reward", rew), np.float32)
        return (np.ascontiguousarray(np.moveaxis(obs, -3, -1)), np.asarray(rew, np.float32),
                np.asarray(term, bool), np.asarray(trunc, bool), lives, raw)

    def _shapes(self):
        e = self.num_envs
        obs = jax.ShapeDtypeStruct((e,) + self.obs_shape, jnp.uint8)
        return obs, (obs, jax.ShapeDtypeStruct((e,), jnp.float32), jax.ShapeDtypeStruct((e,), bool),
                     jax.ShapeDtypeStruct((e,), bool), jax.ShapeDtypeStruct((e,), jnp.int32),
                     jax.ShapeDtypeStruct((e,), jnp.float32))

    def reset(self, key, pool=None):
        from jax.experimental import io_callback

        if pool is not None:
            raise ValueError(f"{self.name}.reset: envpool environments have no pool of episode seeds "
                             f"(pool={pool!r}). Fix: pass no pool.")
        del key  # envpool environments are seeded at construction
        obs_shape, _ = self._shapes()
        obs = io_callback(self._host_reset, obs_shape, ordered=True)
        prev_done = jnp.zeros((self.num_envs,), bool)
        if self.backend == "xla":
            handle = jnp.asarray(self.xla_step[0])
            handle, obs = jax.lax.optimization_barrier((handle, obs))  # step only after the reset
            return (handle, prev_done), obs.astype(jnp.float32)
        return (jnp.zeros((), jnp.int32), prev_done), obs.astype(jnp.float32)

    def step(self, state, key, action):
        from jax.experimental import io_callback

        del key
        handle, prev_done = state
        action = jnp.asarray(action, jnp.int32)
        if self.backend == "xla":
            handle, (obs, rew, term, trunc, info) = self.xla_step[1](handle, action)
            obs = self._to_jax_obs(obs)
            lives = info["lives"] if "lives" in info else jnp.zeros_like(term, jnp.int32)
            raw = info["reward"] if "reward" in info else rew
        else:
            _, shapes = self._shapes()
            obs, rew, term, trunc, lives, raw = io_callback(self._host_step, shapes, action, ordered=True)
            obs = obs.astype(jnp.float32)
            handle = handle + 1
        term = jnp.asarray(term).astype(bool)
        trunc = jnp.asarray(trunc).astype(bool) & ~term
        done = term | trunc
        valid = ~prev_done
        step = EnvStep(
            obs=obs, reward=jnp.asarray(rew, jnp.float32), terminated=term, truncated=trunc, next_obs=obs,
            valid=valid, episode_end=trunc | (term & (jnp.asarray(lives) <= 0)),
            raw_reward=jnp.asarray(raw, jnp.float32),
        )
        return (handle, done), step


# ----------------------------------------------------------------------------------------------------
# Names and specs.


def is_envpool_name(name: Any) -> bool:
    """Whether `name` looks like an envpool task id (Atari `*-v5`, ProcGen `*-v0`), not a gymnax name."""
    return (isinstance(name, str) and name not in _gymnax.ENV_NAMES and _registry.registered_env(name) is None
            and (name.endswith("-v5") or name.endswith("-v0")))


@functools.lru_cache(maxsize=None)
def _envpool_ids() -> Tuple[str, ...]:
    try:
        envpool = importlib.import_module("envpool")
    except ImportError as err:
        raise _envpool._explain(err, "envpool") from err
    return tuple(envpool.list_all_envs())


def check_env_name(name: Any, field: str = "env") -> None:
    """ValueError naming `field` and close matches unless `name` is a gymnax name or an envpool
    Atari (`*-v5`) / ProcGen (`*-v0`) task id; RuntimeError naming the fix if envpool is missing."""
    if isinstance(name, str) and (name in _gymnax.ENV_NAMES or _registry.registered_env(name) is not None):
        return
    if is_envpool_name(name):
        ids = [i for i in _envpool_ids() if i.endswith("-v5") or i.endswith("-v0")]
        if name in ids:
            return
        close = difflib.get_close_matches(name, ids, n=5)
        raise ValueError(
            f"{field}={name!r} is not an envpool Atari or ProcGen game. "
            + (f"Did you mean: {', '.join(close)}? " if close else "")
            + "Fix: use an envpool task id (Atari like 'Pong-v5', ProcGen like 'BigfishEasy-v0'; "
            f"envpool.list_all_envs() lists them) or a jitted gymnax game: {', '.join(_gymnax.ENV_NAMES)}."
        )
    jitted = list(_gymnax.ENV_NAMES) + list(_registry.registered_env_names())
    close = difflib.get_close_matches(str(name), jitted, n=3)
    raise ValueError(
        f"{field}={name!r} is not a known environment. "
        + (f"Did you mean: {', '.join(close)}? " if close else "")
        + f"Fix: use a jitted environment ({', '.join(jitted)}), an envpool Atari ('Pong-v5', "
        "...) or ProcGen ('BigfishEasy-v0', ...) task id, or register one (tdjax.envs.register_env)."
    )


@functools.lru_cache(maxsize=None)
def vec_spec(name: str) -> VecSpec:
    """Observation shape (channels last), actions, storage dtype, scale and jittability of `name`,
    without constructing the environment (envpool: from `envpool.make_spec`)."""
    check_env_name(name)
    reg = _registry.registered_env(name)
    if reg is not None:
        return VecSpec(reg.obs_shape, reg.num_actions, reg.obs_storage_dtype, reg.obs_scale, True, 1, reg.network)
    if name in _gymnax.ENV_NAMES:
        s = _gymnax.spec(name)
        return VecSpec(s.obs_shape, s.num_actions, s.obs_storage_dtype, 1.0, True)
    envpool = importlib.import_module("envpool")
    sp = envpool.make_spec(name)
    c, h, w = sp.observation_space.shape
    stack = int(getattr(sp.config, "stack_num", 1)) if name.endswith("-v5") else 1
    return VecSpec((h, w, c), int(sp.action_space.n), jnp.uint8, 1.0 / 255.0, False, stack)


def make_vec(name: str, num_envs: int, *, seed: int = 0, backend: str = "xla",
             options: Optional[Dict[str, Any]] = None) -> VecEnv:
    """`num_envs` environments of `name` behind the `VecEnv` protocol.

    Args:
      name: a gymnax name (`tdjax.envs.ENV_NAMES`), a registered name (`registered_env_names()`, e.g.
        "MaskedImage-digits") or an envpool Atari/ProcGen task id.
      num_envs: environments stepped together.
      seed: envpool's seed (gymnax environments are seeded by the keys passed to reset/step).
      backend: envpool only: "xla" (envpool's XLA custom call) or "host" (an ordered io_callback into
        envpool's Python API; slower, for platforms where the XLA interface does not work).
      options: envpool: extra `envpool.make` arguments (e.g. {"num_levels": 200}); for Atari,
        `ATARI_DEFAULTS` are applied unless overridden. Registered environments (`register_env`, e.g.
        the masked-image tasks): the factory's keyword arguments (e.g. {"num_images": 100}).

    Example:
      >>> import jax
      >>> venv = make_vec("CartPole-v1", num_envs=3)
      >>> state, obs = venv.reset(jax.random.key(0))
      >>> state, step = jax.jit(venv.step)(state, jax.random.key(1), jax.numpy.zeros(3, "int32"))
      >>> step.obs.shape, bool(step.valid.all())
      ((3, 4), True)
    """
    check_env_name(name)
    if not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"make_vec: num_envs must be a positive integer, got {num_envs!r}.")
    if backend not in ("xla", "host"):
        raise ValueError(f"make_vec: backend must be 'xla' or 'host', got {backend!r}.")
    s = vec_spec(name)
    reg = _registry.registered_env(name)
    if reg is not None:
        env = reg.factory(**dict(options or {}))
        if tuple(env.obs_shape) != s.obs_shape or env.num_actions != s.num_actions:
            raise ValueError(f"make_vec: the environment registered as {name!r} built observations {env.obs_shape} "
                             f"and {env.num_actions} actions, but was registered with {s.obs_shape} and "
                             f"{s.num_actions}. Fix: register it with the shapes its factory builds.")
        return _GymnaxVec(name=name, num_envs=num_envs, obs_shape=s.obs_shape, num_actions=s.num_actions,
                          obs_storage_dtype=s.obs_storage_dtype, obs_scale=s.obs_scale, jittable=True,
                          always_valid=True, max_episode_steps=int(env.max_episode_steps), env=env)
    if s.jittable:
        env = _gymnax.make(name)
        return _GymnaxVec(name=name, num_envs=num_envs, obs_shape=s.obs_shape, num_actions=s.num_actions,
                          obs_storage_dtype=s.obs_storage_dtype, obs_scale=1.0, jittable=True,
                          always_valid=True, max_episode_steps=env.max_episode_steps, env=env)
    opts = dict(ATARI_DEFAULTS) if name.endswith("-v5") else {}
    opts.update(options or {})
    pool = _envpool.make_envpool(name, num_envs=num_envs, seed=int(seed), **opts)
    xla = None
    if backend == "xla":
        handle, _recv, _send, step = pool.xla()
        xla = (handle, step)
    return _EnvpoolVec(name=name, num_envs=num_envs, obs_shape=s.obs_shape, num_actions=s.num_actions,
                       obs_storage_dtype=jnp.uint8, obs_scale=s.obs_scale, jittable=False, always_valid=False,
                       max_episode_steps=int(pool.spec.config.max_episode_steps),
                       frame_stack=int(getattr(pool.spec.config, "stack_num", 1)) if name.endswith("-v5") else 1,
                       pool=pool, backend=backend, xla_step=xla)
