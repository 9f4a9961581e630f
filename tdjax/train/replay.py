"""A circular replay buffer held in JAX arrays, laid out [time, env] so trajectories stay readable.

Each call to `add` writes one vectorised environment step (one transition per environment) at time
slot `pos`, overwriting the oldest slot once the buffer is full. Sampling draws uniformly over the
stored transitions; `recent` returns the last T steps of every environment in time order, which is
what per-trajectory statistics (the TD-error sign variance of Bengio et al. 2020, §5.2) need.

All functions are pure and jittable; state is a `ReplayState` NamedTuple.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Transition", "ReplayState", "init", "add", "sample", "sample_distinct", "recent", "size"]


class Transition(NamedTuple):
    """One transition τ = (xₜ, aₜ, rₜ₊₁, dₜ₊₁, xₜ₊₁); a batch has a leading axis on every field."""

    obs: jax.Array  # shape=obs_shape, float32 (storage dtype inside the buffer). xₜ.
    action: jax.Array  # shape=(), int32. aₜ.
    reward: jax.Array  # shape=(), float32. rₜ₊₁.
    discount: jax.Array  # shape=(), float32. 0 if the episode terminated at t+1, else 1 (γ applied by the loss).
    next_obs: jax.Array  # shape=obs_shape. xₜ₊₁ (the final observation if the episode ended).
    done: jax.Array  # shape=(), bool. The episode ended at t+1 (terminated or truncated).
    valid: jax.Array  # shape=(), bool. A transition of the MDP (False for envpool's reset steps).


class ReplayState(NamedTuple):
    """Circular buffer of `capacity` time slots × `num_envs` environments."""

    data: Transition  # each field shape=[capacity, num_envs, ...].
    pos: jax.Array  # shape=(), int32. Next time slot to write.
    count: jax.Array  # shape=(), int32. Time slots written so far (saturates at capacity).


def init(example: Transition, capacity: int, num_envs: int, obs_dtype: Any = None) -> ReplayState:
    """An empty buffer for transitions shaped like `example` (ONE transition, no batch axis).

    Args:
      example: one transition (arrays or ShapeDtypeStructs); only shapes and dtypes are used.
      capacity: number of time slots; the buffer holds capacity · num_envs transitions.
      num_envs: number of environments written per `add`.
      obs_dtype: dtype to store `obs`/`next_obs` in (e.g. uint8 for binary images); default: as given.
    """

    def zeros(name, leaf):
        dtype = obs_dtype if (obs_dtype is not None and name in ("obs", "next_obs")) else leaf.dtype
        return jnp.zeros((capacity, num_envs) + tuple(leaf.shape), dtype)

    data = Transition(*[zeros(n, l) for n, l in zip(Transition._fields, example)])
    return ReplayState(data=data, pos=jnp.zeros((), jnp.int32), count=jnp.zeros((), jnp.int32))


def size(state: ReplayState) -> jax.Array:
    """Number of stored transitions (time slots written × num_envs)."""
    return state.count * state.data.action.shape[1]


def add(state: ReplayState, batch: Transition) -> ReplayState:
    """Writes one vectorised step (`batch` fields [num_envs, ...]) at slot `pos`."""
    capacity = state.data.action.shape[0]
    data = jax.tree.map(lambda buf, x: buf.at[state.pos].set(x.astype(buf.dtype)), state.data, batch)
    return ReplayState(
        data=data,
        pos=(state.pos + 1) % capacity,
        count=jnp.minimum(state.count + 1, capacity),
    )


def _gather(state: ReplayState, flat_idx: jax.Array) -> Transition:
    """Transitions at flat indices t·num_envs + e, observations cast back to float32."""
    num_envs = state.data.action.shape[1]
    t, e = flat_idx // num_envs, flat_idx % num_envs
    out = jax.tree.map(lambda buf: buf[t, e], state.data)
    return out._replace(obs=out.obs.astype(jnp.float32), next_obs=out.next_obs.astype(jnp.float32))


def sample(state: ReplayState, key: jax.Array, batch_size: int) -> Transition:
    """`batch_size` transitions drawn uniformly WITH replacement from the stored ones.

    The flat index is `jax.random.randint(key, (batch_size,), 0, size(state))`, slot t = index //
    num_envs, environment e = index % num_envs. An empty buffer returns slot 0 (zeros).
    """
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(size(state), 1))
    return _gather(state, idx)


def sample_distinct(state: ReplayState, key: jax.Array, k: int) -> Transition:
    """k DISTINCT stored transitions, uniformly (the top-k of i.i.d. uniform scores over stored slots).

    Only transitions marked `valid` are drawn (envpool's reset steps are not transitions). Needs at
    least k stored valid transitions; with fewer, invalid or unwritten slots fill the remainder.
    """
    capacity, num_envs = state.data.action.shape[:2]
    scores = jax.random.uniform(key, (capacity * num_envs,))
    ok = (jnp.arange(capacity * num_envs) < size(state)) & state.data.valid.reshape(-1)
    scores = jnp.where(ok, scores, -1.0)
    _, idx = jax.lax.top_k(scores, k)
    return _gather(state, idx)


def recent(state: ReplayState, num_steps: int) -> Transition:
    """The last `num_steps` time slots written, oldest first: every field [num_steps, num_envs, ...].

    Along axis 0 each environment's transitions are consecutive in time (episode boundaries are
    marked by `done`). Needs `num_steps` ≤ capacity and at least `num_steps` slots written.
    """
    capacity = state.data.action.shape[0]
    t = (state.pos - num_steps + jnp.arange(num_steps)) % capacity
    out = jax.tree.map(lambda buf: buf[t], state.data)
    return out._replace(obs=out.obs.astype(jnp.float32), next_obs=out.next_obs.astype(jnp.float32))
