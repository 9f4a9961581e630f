"""A circular replay buffer held in JAX arrays, laid out [time, env], that stores each frame once.

Each call to `add` writes one vectorised environment step (one transition per environment) at time
slot `pos`, overwriting the oldest slot once the buffer is full. Sampling draws uniformly over the
stored transitions; `recent` returns the last T steps of every environment in time order, which is
what per-trajectory statistics (the TD-error sign variance of Bengio et al. 2020, §5.2) need.

Observations are not stored twice (as obs and next_obs) and stacked frames are not stored K times.
Two layouts, chosen at `init` by what the stream guarantees (docs/replay.md):

  * `next_obs_follows=True` (envpool: Atari, ProcGen): xₜ₊₁ of slot t is the obs of slot t+1, because
    envpool returns the final observation of an episode as the obs of the following (invalid) reset
    step. Each slot keeps only the newest frame of its obs; a stack of `frame_stack` frames is
    rebuilt from the previous slots, and a per-slot `depth` (how many earlier slots the stack reaches
    into; older positions repeat the oldest frame, as envpool pads a new episode) stops stacks at
    episode starts. The newest slot's xₜ₊₁ is kept whole in `last_obs`. Atari: one 84×84 frame
    (7,056 bytes) plus 16 bytes per transition, instead of 2 × 28,224 + 14.
  * `next_obs_follows=False` (gymnax, the default): auto-reset inside `step` makes xₜ₊₁ differ from
    the next slot's obs at episode ends, so next_obs is stored densely beside obs (MinAtar: 2 × 400
    bytes, fine for observations that small). Frames are not stacked (`frame_stack=1`).

Transitions are rebuilt bit-exactly (the same obs and next_obs as a buffer of whole `Transition`s).
The few that cannot be — in the oldest `frame_stack − 1` slots, a stack whose earlier frames were
already overwritten; and a transition whose xₜ₊₁ never reached the buffer because the stream was cut
after it (environments re-created on resume from a checkpoint) — are never drawn by `sample` or
`sample_distinct`, and come back from `recent`/`gather` with `valid=False`.

All functions are pure and jittable (and vmappable over seeds); state is a `ReplayState` NamedTuple.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

__all__ = ["Transition", "Slots", "ReplayState", "init", "add", "sample", "sample_distinct",
           "sample_distinct_slots", "recent", "gather", "neighbours", "size"]

# `sample` redraws a transition that cannot be rebuilt exactly; they are at most (frame_stack − 1) ·
# num_envs slots plus those cut by resumes, so needing this many redraws is astronomically unlikely.
_MAX_REDRAWS = 64


class Transition(NamedTuple):
    """One transition τ = (xₜ, aₜ, rₜ₊₁, dₜ₊₁, xₜ₊₁); a batch has a leading axis on every field."""

    obs: jax.Array  # shape=obs_shape, float32 (storage dtype inside the buffer). xₜ.
    action: jax.Array  # shape=(), int32. aₜ.
    reward: jax.Array  # shape=(), float32. rₜ₊₁.
    discount: jax.Array  # shape=(), float32. 0 if the episode terminated at t+1, else 1 (γ applied by the loss).
    next_obs: jax.Array  # shape=obs_shape. xₜ₊₁ (the final observation if the episode ended).
    done: jax.Array  # shape=(), bool. The episode ended at t+1 (terminated or truncated).
    valid: jax.Array  # shape=(), bool. A transition of the MDP (False for envpool's reset steps).


class Slots(NamedTuple):
    """What the buffer stores per time slot and environment (C = capacity, E = num_envs, K = frame_stack)."""

    obs: jax.Array  # [C, E, *frame_shape] obs_dtype. xₜ whole if K = 1, else only its newest frame
    #                 (the last obs_shape[-1] / K channels); the others are in the previous slots.
    action: jax.Array  # [C, E] as example.action. aₜ.
    reward: jax.Array  # [C, E] as example.reward. rₜ₊₁.
    discount: jax.Array  # [C, E] as example.discount.
    done: jax.Array  # [C, E] bool.
    valid: jax.Array  # [C, E] bool. As stored; `gather` also clears it where the slot cannot be rebuilt.
    depth: jax.Array  # [C, E] uint8 in 0..K-1. xₜ's stack takes frames from slots t-depth..t; its older
    #                   positions repeat the frame of slot t-depth (a new episode's padding). 0 if K = 1.
    next_kept: jax.Array  # [C, E] bool. xₜ₊₁ is in the buffer (False where the stream was cut after t).
    next_obs: Optional[jax.Array]  # [C, E, *obs_shape] obs_dtype: xₜ₊₁ stored densely; None when
    #                                next_obs follows (xₜ₊₁ is the obs of slot t+1, or `last_obs`).


class ReplayState(NamedTuple):
    """Circular buffer of `capacity` time slots × `num_envs` environments."""

    data: Slots  # per-slot fields [capacity, num_envs, ...].
    last_obs: Optional[jax.Array]  # [E, *obs_shape] obs_dtype: xₜ₊₁ of the newest slot (None unless
    #                                next_obs follows).
    next_depth: jax.Array  # [E] uint8. `depth` of the slot written next, if its obs continues the stream.
    pos: jax.Array  # shape=(), int32. Next time slot to write.
    count: jax.Array  # type: ignore[assignment]  # shape=(), int32. Time slots written so far (saturates at capacity).


def init(example: Transition, capacity: int, num_envs: int, obs_dtype: Any = None, *,
         frame_stack: int = 1, next_obs_follows: bool = False) -> ReplayState:
    """An empty buffer for transitions shaped like `example` (ONE transition, no batch axis).

    Args:
      example: one transition (arrays or ShapeDtypeStructs); only shapes and dtypes are used.
      capacity: number of time slots; the buffer holds capacity · num_envs transitions.
      num_envs: number of environments written per `add`.
      obs_dtype: dtype to store `obs`/`next_obs` in (e.g. uint8 for pixels); default: as given.
      frame_stack: K, frames stacked along the last observation axis (`VecEnv.frame_stack`: 4 for
        envpool Atari, 1 otherwise). Each frame is stored once; needs `next_obs_follows=True`.
      next_obs_follows: the stream guarantees next_obs of each step equals the obs written by the next
        `add` (envpool, whose final observation comes back as the obs of the reset step; True for a
        `VecEnv` with `always_valid=False`). False (gymnax auto-reset) stores next_obs densely.

    Returns:
      The empty `ReplayState`. Bytes per transition: docs/replay.md.
    """
    obs_shape = tuple(example.obs.shape)
    for name, v in (("capacity", capacity), ("num_envs", num_envs), ("frame_stack", frame_stack)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"replay.init: {name} must be a positive integer, got {v!r}.")
    if tuple(example.next_obs.shape) != obs_shape:
        raise ValueError(f"replay.init: example.next_obs has shape {tuple(example.next_obs.shape)} but "
                         f"example.obs has {obs_shape}; pass one transition with both shaped alike.")
    if frame_stack > 1:
        if not next_obs_follows:
            raise ValueError(
                f"replay.init: frame_stack={frame_stack} needs next_obs_follows=True (stacks are rebuilt from "
                "the following slots, which only envpool-like streams guarantee). Fix: pass "
                "next_obs_follows=True for envpool environments, or frame_stack=1.")
        if not obs_shape or obs_shape[-1] % frame_stack:
            raise ValueError(
                f"replay.init: frame_stack={frame_stack} does not divide the last axis of obs shape {obs_shape}. "
                "Fix: pass the environment's frame_stack (VecEnv.frame_stack), stacked along the last axis.")
        if capacity < frame_stack:
            raise ValueError(f"replay.init: capacity={capacity} must be at least frame_stack={frame_stack}.")
    dtype = obs_dtype if obs_dtype is not None else example.obs.dtype
    frame_shape = obs_shape[:-1] + (obs_shape[-1] // frame_stack,) if frame_stack > 1 else obs_shape
    cell = (capacity, num_envs)
    data = Slots(
        obs=jnp.zeros(cell + frame_shape, dtype),
        action=jnp.zeros(cell, example.action.dtype),
        reward=jnp.zeros(cell, example.reward.dtype),
        discount=jnp.zeros(cell, example.discount.dtype),
        done=jnp.zeros(cell, example.done.dtype),
        valid=jnp.zeros(cell, example.valid.dtype),
        depth=jnp.zeros(cell, jnp.uint8),
        next_kept=jnp.ones(cell, bool),
        next_obs=None if next_obs_follows else jnp.zeros(cell + obs_shape, dtype),
    )
    return ReplayState(
        data=data,
        last_obs=jnp.zeros((num_envs,) + obs_shape, dtype) if next_obs_follows else None,
        next_depth=jnp.zeros((num_envs,), jnp.uint8),
        pos=jnp.zeros((), jnp.int32),
        count=jnp.zeros((), jnp.int32),
    )


def _frame_stack(state: ReplayState) -> int:
    """K, static: the stacked obs (`last_obs`) has K times the channels of a stored frame."""
    if state.last_obs is None or state.data.obs.ndim == 2:
        return 1
    return state.last_obs.shape[-1] // state.data.obs.shape[-1]


def size(state: ReplayState) -> jax.Array:
    """Number of stored transitions (time slots written × num_envs)."""
    return state.count * state.data.action.shape[1]


def add(state: ReplayState, batch: Transition) -> ReplayState:
    """Writes one vectorised step (`batch` fields [num_envs, ...]) at slot `pos`.

    With `next_obs_follows`, `batch.obs` should be the previous `batch.next_obs`; where it is not (the
    environments were re-created), the previous slot's transition is marked as not rebuildable and
    `batch.obs` starts a new stack.
    """
    data = state.data
    capacity, num_envs = data.action.shape
    dtype = data.obs.dtype
    k = _frame_stack(state)
    obs_shape = state.last_obs.shape[1:] if state.last_obs is not None else data.next_obs.shape[2:]  # type: ignore[union-attr]
    for name in ("obs", "next_obs"):
        got = tuple(getattr(batch, name).shape)
        if got != (num_envs,) + obs_shape:
            raise ValueError(f"replay.add: batch.{name} has shape {got}, expected {(num_envs,) + obs_shape} "
                             "([num_envs, *obs_shape], as given to init).")
    obs = batch.obs.astype(dtype)
    next_obs = batch.next_obs.astype(dtype)
    axes = tuple(range(1, obs.ndim))
    pos = state.pos

    depth = state.next_depth
    next_kept = data.next_kept
    if state.last_obs is not None:
        follows = jnp.all(obs == state.last_obs, axis=axes)  # [E]
        depth = jnp.where(follows, depth, 0).astype(jnp.uint8)
        prev = (pos - 1) % capacity
        next_kept = next_kept.at[prev].set(next_kept[prev] & follows)
    if k > 1:
        c = obs.shape[-1] // k
        cont = jnp.all(next_obs[..., :-c] == obs[..., c:], axis=axes)  # xₜ₊₁'s stack continues xₜ's
        next_depth = jnp.where(cont, jnp.minimum(depth.astype(jnp.int32) + 1, k - 1), 0).astype(jnp.uint8)
        frame = obs[..., -c:]
    else:
        next_depth = state.next_depth
        frame = obs

    def put(buf, x):
        return buf.at[pos].set(jnp.asarray(x).astype(buf.dtype))

    data = Slots(
        obs=put(data.obs, frame), action=put(data.action, batch.action), reward=put(data.reward, batch.reward),
        discount=put(data.discount, batch.discount), done=put(data.done, batch.done),
        valid=put(data.valid, batch.valid), depth=put(data.depth, depth),
        next_kept=put(next_kept, jnp.ones((num_envs,), bool)),
        next_obs=None if data.next_obs is None else put(data.next_obs, next_obs),
    )
    return ReplayState(
        data=data,
        last_obs=None if state.last_obs is None else next_obs,
        next_depth=next_depth,
        pos=(pos + 1) % capacity,
        count=jnp.minimum(state.count + 1, capacity),
    )


def _obs_at(state: ReplayState, t: jax.Array, e: jax.Array) -> jax.Array:
    """xₜ at slots t, envs e (int arrays of one shape S), storage dtype, shape S + obs_shape."""
    frames = state.data.obs
    k = _frame_stack(state)
    if k == 1:
        return frames[t, e]
    capacity = frames.shape[0]
    back = jnp.minimum(jnp.arange(k - 1, -1, -1), state.data.depth[t, e][..., None].astype(jnp.int32))
    f = frames[(t[..., None] - back) % capacity, e[..., None]]  # S + [K] + frame_shape, oldest first
    f = jnp.moveaxis(f, t.ndim, -2)  # S + frame_shape[:-1] + [K, c]
    return f.reshape(t.shape + frames.shape[2:-1] + (k * frames.shape[-1],))


def _exact(state: ReplayState, t: jax.Array, e: jax.Array) -> jax.Array:
    """Whether the transition at slots t, envs e is rebuilt exactly: its stack reaches no overwritten
    slot (depth ≤ age, the slot's place in time order, 0 = oldest) and its xₜ₊₁ was kept."""
    capacity = state.data.action.shape[0]
    age = (t - state.pos + state.count) % capacity
    return (state.data.depth[t, e].astype(jnp.int32) <= age) & state.data.next_kept[t, e]


def gather(state: ReplayState, t: jax.Array, e: jax.Array) -> Transition:
    """The transitions at time slots `t` and environments `e` (int arrays of one shape S).

    Returns:
      A `Transition` with fields of shape S + field shape, observations cast to float32. A transition
      that cannot be rebuilt exactly (module docstring) has `valid=False`.
    """
    t, e = jnp.broadcast_arrays(jnp.asarray(t, jnp.int32), jnp.asarray(e, jnp.int32))
    d = state.data
    obs = _obs_at(state, t, e)
    if d.next_obs is not None:
        next_obs = d.next_obs[t, e]
    else:
        capacity = d.action.shape[0]
        newest = t == (state.pos - 1) % capacity
        newest = newest.reshape(newest.shape + (1,) * (obs.ndim - t.ndim))
        next_obs = jnp.where(newest, state.last_obs[e], _obs_at(state, (t + 1) % capacity, e))  # type: ignore[index]
    return Transition(
        obs=obs.astype(jnp.float32), action=d.action[t, e], reward=d.reward[t, e], discount=d.discount[t, e],
        next_obs=next_obs.astype(jnp.float32), done=d.done[t, e], valid=d.valid[t, e] & _exact(state, t, e),
    )


def sample(state: ReplayState, key: jax.Array, batch_size: int) -> Transition:
    """`batch_size` transitions drawn uniformly WITH replacement from the stored ones.

    The flat index is `jax.random.randint(key, (batch_size,), 0, size(state))`, slot t = index //
    num_envs, environment e = index % num_envs, as in a buffer of whole transitions. An index whose
    transition cannot be rebuilt exactly is redrawn (`randint(fold_in(key, r), ...)`, r = 1, 2, ...),
    which keeps the draw uniform over the exact ones. An empty buffer returns slot 0 (zeros).
    """
    num_envs = state.data.action.shape[1]
    n = jnp.maximum(size(state), 1)
    idx = jax.random.randint(key, (batch_size,), 0, n)
    if state.data.next_obs is None:  # only then can a transition be inexact

        def ok(i):
            return _exact(state, i // num_envs, i % num_envs)

        def redraw(carry):
            r, i = carry
            new = jax.random.randint(jax.random.fold_in(key, r), (batch_size,), 0, n)
            return r + 1, jnp.where(ok(i), i, new)

        _, idx = jax.lax.while_loop(lambda c: (c[0] <= _MAX_REDRAWS) & ~jnp.all(ok(c[1])), redraw, (1, idx))
    return gather(state, idx // num_envs, idx % num_envs)


def sample_distinct_slots(state: ReplayState, key: jax.Array, k: int,
                          where: Optional[jax.Array] = None) -> tuple[jax.Array, jax.Array]:
    """The (slot t, environment e) positions [k] of k DISTINCT stored transitions, drawn uniformly.

    The top-k of i.i.d. uniform scores `jax.random.uniform(key, (capacity · num_envs,))` over the
    flat positions t · num_envs + e, among the stored transitions marked `valid` that can be rebuilt
    exactly (envpool's reset steps are not transitions) and, if given, where `where` ([capacity,
    num_envs] bool) is True. Needs at least k such transitions; with fewer, others fill the remainder.
    """
    capacity, num_envs = state.data.action.shape
    flat = jnp.arange(capacity * num_envs)
    t, e = flat // num_envs, flat % num_envs
    scores = jax.random.uniform(key, (capacity * num_envs,))
    ok = (flat < size(state)) & state.data.valid.reshape(-1) & _exact(state, t, e)
    if where is not None:
        ok = ok & jnp.asarray(where, bool).reshape(-1)
    scores = jnp.where(ok, scores, -1.0)
    _, idx = jax.lax.top_k(scores, k)
    return idx // num_envs, idx % num_envs


def sample_distinct(state: ReplayState, key: jax.Array, k: int) -> Transition:
    """k DISTINCT stored transitions, uniformly: `gather` at `sample_distinct_slots(state, key, k)`.

    Only transitions marked `valid` that can be rebuilt exactly are drawn (envpool's reset steps are
    not transitions). Needs at least k such transitions; with fewer, others fill the remainder.
    """
    return gather(state, *sample_distinct_slots(state, key, k))


def recent(state: ReplayState, num_steps: int) -> Transition:
    """The last `num_steps` time slots written, oldest first: every field [num_steps, num_envs, ...].

    Along axis 0 each environment's transitions are consecutive in time (episode boundaries are
    marked by `done`). Needs `num_steps` ≤ capacity and at least `num_steps` slots written. Once the
    buffer has wrapped, transitions of its oldest frame_stack − 1 slots whose stacks reach overwritten
    slots (and any whose xₜ₊₁ was cut off) have `valid=False`.
    """
    capacity, num_envs = state.data.action.shape
    if not 1 <= num_steps <= capacity:
        raise ValueError(f"replay.recent: num_steps={num_steps} must be in 1..capacity={capacity}.")
    t = (state.pos - num_steps + jnp.arange(num_steps)) % capacity
    return gather(state, t[:, None], jnp.arange(num_envs)[None, :])


def neighbours(state: ReplayState, t: jax.Array, e: jax.Array, max_offset: int) -> tuple[Transition, jax.Array]:
    """The temporal neighbours of the transitions at slots `t`, environments `e`, within their episode.

    For each of the N positions (t, e) and each offset x = −X..X (X = `max_offset`), the transition of
    the same environment at slot t + x (mod capacity), and whether it belongs to the same episode of the
    stored stream (Bengio et al. 2020, §5: losses "for states surrounding the state used for the update,
    i.e. states with a temporal offset of ± 30 in the replay buffer trajectories").

    mask[n, x + X] is False where
      * t + x is outside the written slots: before the oldest or after the newest (wrap-around) or not yet
        written;
      * an episode boundary lies between t and t + x: `done` at a slot in [t, t + x) for x > 0, or in
        [t + x, t) for x < 0 (a transition with `done` is the last of its episode); a stream cut
        (environments re-created on resume) counts as a boundary;
      * the neighbour itself is not a valid transition (`valid=False`: envpool's reset steps, stacks
        that cannot be rebuilt).
    A position at an episode edge is valid: its neighbours beyond the edge are masked. Positions that
    are themselves invalid have mask False at x = 0 (and a mask computed as if they were in an episode).

    Args:
      state: the buffer.
      t: [N] int time slots; e: [N] int environments (as for `gather`, e.g. from a sample's indices).
      max_offset: X ≥ 1, with 2X + 1 ≤ capacity.

    Returns:
      (transitions, mask): a `Transition` with fields [N, 2X + 1, ...] (index x + X holds offset x) and
      a bool mask [N, 2X + 1]. Feed them to `tdjax.loss_change_by_offset` / `stiffness_by_offset`.
    """
    capacity = state.data.action.shape[0]
    if isinstance(max_offset, bool) or not isinstance(max_offset, int) or max_offset < 1:
        raise ValueError(f"replay.neighbours: `max_offset` must be a positive int (X in offsets −X..X), got "
                         f"{max_offset!r}; a window of 0 has no neighbours.")
    if 2 * max_offset + 1 > capacity:
        raise ValueError(f"replay.neighbours: `max_offset`={max_offset} needs 2X + 1 = {2 * max_offset + 1} slots, "
                         f"more than the buffer's capacity={capacity}. Fix: max_offset ≤ {(capacity - 1) // 2}.")
    t = jnp.asarray(t, jnp.int32)
    e = jnp.asarray(e, jnp.int32)
    if t.ndim != 1 or e.shape != t.shape:
        raise ValueError(f"replay.neighbours: `t` and `e` must be [N] int arrays of one shape, "
                         f"got {t.shape}, {e.shape}.")
    x = jnp.arange(-max_offset, max_offset + 1, dtype=jnp.int32)
    slots = (t[:, None] + x[None, :]) % capacity  # [N, W]
    ee = jnp.broadcast_to(e[:, None], slots.shape)
    age = (t - state.pos + state.count) % capacity  # place of slot t in time order, 0 = oldest
    in_buffer = (age[:, None] + x[None, :] >= 0) & (age[:, None] + x[None, :] < state.count)
    d = state.data
    boundary = (d.done[slots, ee] | ~d.next_kept[slots, ee]).astype(jnp.int32)  # [N, W]: an episode ends after
    # The forward side crosses the boundaries of slots t .. t+x−1; the backward side those of t+x .. t−1.
    fwd = jnp.cumsum(boundary[:, max_offset:-1], axis=1)  # [N, X]: boundaries in [t, t+k), k = 1..X
    bwd = jnp.cumsum(boundary[:, max_offset - 1::-1], axis=1)[:, ::-1]  # [N, X]: in [t−k, t), k = X..1
    zero = jnp.zeros((t.shape[0], 1), jnp.int32)
    crossed = jnp.concatenate([bwd, zero, fwd], axis=1) > 0
    tr = gather(state, slots, ee)
    mask = in_buffer & ~crossed & tr.valid
    return tr, mask
