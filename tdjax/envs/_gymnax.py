"""A small, jittable interface over gymnax environments (MinAtar and classic control)."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Tuple

import jax
import jax.numpy as jnp

__all__ = ["EnvSpec", "EnvStep", "JaxEnv", "make", "spec", "check_name", "ENV_NAMES"]



class EnvSpec(NamedTuple):
    """What a training loop needs to know about an environment before building it."""

    obs_shape: Tuple[int, ...]
    num_actions: int
    obs_storage_dtype: Any  # narrowest dtype holding observations exactly (MinAtar maps are binary)


# Names accepted by `make`. The specs let configs be checked without constructing the environment
# (constructing a gymnax environment already runs XLA computations); tests check them against gymnax.
_ENVS = {
    "Breakout-MinAtar": EnvSpec((10, 10, 4), 3, jnp.uint8),
    "SpaceInvaders-MinAtar": EnvSpec((10, 10, 6), 4, jnp.uint8),
    "Asterix-MinAtar": EnvSpec((10, 10, 4), 5, jnp.uint8),
    "Freeway-MinAtar": EnvSpec((10, 10, 7), 3, jnp.uint8),
    "Seaquest-MinAtar": EnvSpec((10, 10, 10), 6, jnp.uint8),
    "CartPole-v1": EnvSpec((4,), 2, jnp.float32),
    "Acrobot-v1": EnvSpec((6,), 3, jnp.float32),
    "MountainCar-v0": EnvSpec((2,), 3, jnp.float32),
}
ENV_NAMES: Tuple[str, ...] = tuple(_ENVS)
"""Environment names `tdjax.envs.make` accepts."""


def spec(name: str) -> EnvSpec:
    """Observation shape, number of actions and storage dtype of `name`, without building it."""
    check_name(name)
    return _ENVS[name]


class EnvStep(NamedTuple):
    """What one environment step returns: of ONE environment (`JaxEnv.step`), or of E environments
    with a leading [E] axis on every field (`tdjax.envs.VecEnv.step`). The one step type of tdjax."""

    obs: jax.Array  # shape=obs_shape, float32. Observation to act on next (after an auto-reset).
    reward: jax.Array  # shape=(), float32. rₜ₊₁ as the agent should learn it (clipped for Atari).
    terminated: jax.Array  # shape=(), bool. The (TD) episode ended: no bootstrap from next_obs.
    truncated: jax.Array  # shape=(), bool. Time limit: the episode ended but next_obs has a value.
    next_obs: jax.Array  # shape=obs_shape, float32. The true successor xₜ₊₁ (the final observation
    #                       when the episode ended, before the reset that produced `obs`).
    valid: jax.Array  # shape=(), bool. A transition of the MDP (False on envpool's reset steps).
    episode_end: jax.Array  # shape=(), bool. A real episode (game) ended: log its return.
    raw_reward: jax.Array  # shape=(), float32. Unclipped reward, for logging returns.


@dataclasses.dataclass(frozen=True, eq=False)
class JaxEnv:
    """One gymnax environment with auto-reset, stepped inside jit; observations as float32.

    Attributes:
      name: the registered name, e.g. "Breakout-MinAtar".
      obs_shape: shape of one observation, e.g. (10, 10, 4).
      num_actions: number of discrete actions.
      obs_storage_dtype: the narrowest dtype that holds observations exactly (uint8 for MinAtar's
        binary maps, float32 otherwise); replay buffers store observations in it.
      max_episode_steps: the time limit after which an episode is truncated.
    """

    name: str
    obs_shape: Tuple[int, ...]
    num_actions: int
    obs_storage_dtype: Any
    max_episode_steps: int
    _env: Any = dataclasses.field(repr=False)
    _params: Any = dataclasses.field(repr=False)

    def reset(self, key: jax.Array) -> Tuple[Any, jax.Array]:
        """(env_state, obs [obs_shape] float32) for a new episode (the argument order of every tdjax
        environment: state first)."""
        obs, state = self._env.reset(key, self._params)
        return state, obs.astype(jnp.float32)

    def step(self, state: Any, key: jax.Array, action: jax.Array) -> Tuple[Any, EnvStep]:
        """One step; when the episode ends the environment resets itself (the new state and `obs`
        belong to the next episode, `next_obs` is the final observation of the old one)."""
        obs, state, reward, terminated, truncated, info = self._env.step(key, state, action, self._params)
        terminated = jnp.asarray(terminated, bool)
        truncated = jnp.asarray(truncated, bool) & ~terminated
        reward = jnp.asarray(reward, jnp.float32)
        step = EnvStep(
            obs=obs.astype(jnp.float32), reward=reward, terminated=terminated, truncated=truncated,
            next_obs=info["final_observation"].astype(jnp.float32), valid=jnp.ones((), bool),
            episode_end=terminated | truncated, raw_reward=reward,
        )
        return state, step


def check_name(name: Any, field: str = "name") -> None:
    """ValueError naming `field` unless `name` is one of `ENV_NAMES`."""
    if not isinstance(name, str) or name not in _ENVS:
        raise ValueError(
            f"{field}={name!r} is not a known environment. Valid names: {', '.join(ENV_NAMES)}. "
            "(Atari and ProcGen run through envpool: see tdjax.envs.make_envpool.)"
        )


def make(name: str) -> JaxEnv:
    """A jittable environment by name (see `ENV_NAMES`).

    Example:
      >>> import jax
      >>> env = make("Breakout-MinAtar")
      >>> env.obs_shape, env.num_actions
      ((10, 10, 4), 3)
      >>> state, obs = env.reset(jax.random.key(0))
      >>> state, step = jax.jit(env.step)(state, jax.random.key(1), 0)
      >>> step.obs.dtype
      dtype('float32')
    """
    check_name(name)
    import gymnax  # deferred: importing gymnax pulls in its registry of environments

    env, params = gymnax.make(name)
    s = _ENVS[name]
    return JaxEnv(
        name=name,
        obs_shape=s.obs_shape,
        num_actions=s.num_actions,
        obs_storage_dtype=s.obs_storage_dtype,
        max_episode_steps=int(params.max_steps_in_episode),
        _env=env,
        _params=params,
    )
