"""Replay stores each frame once: its transitions equal those of a buffer of whole transitions.

The reference is the previous buffer (whole `Transition`s per slot), copied below verbatim as
`OldReplay*`/`old_*`. Both buffers are fed the same streams, past several wrap-arounds:

  * synthetic envpool-like streams (reset steps with valid=False, stacks repeated at full resets and
    continued across life-loss resets, truncations, static frames, environments re-created mid-run);
  * a synthetic gymnax-like stream (auto-reset: next_obs ≠ next slot's obs at episode ends);
  * a real envpool Atari stream (Breakout-v5 with a short time limit: truncations and lost lives).

Which transitions cannot be rebuilt is computed independently, from the stream's own ground truth
(how many earlier frames each stack holds, where the stream was cut), not from the buffer's metadata.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tdjax.train import replay
from tdjax.train.replay import Transition

# ----------------------------------------------------------------------------------------------------
# Reference: the buffer of whole transitions (tdjax/train/replay.py before frames were stored once).


class OldReplayState(NamedTuple):
    data: Transition  # each field shape=[capacity, num_envs, ...].
    pos: jax.Array
    count: jax.Array


def old_init(example: Transition, capacity: int, num_envs: int, obs_dtype: Any = None) -> OldReplayState:
    def zeros(name, leaf):
        dtype = obs_dtype if (obs_dtype is not None and name in ("obs", "next_obs")) else leaf.dtype
        return jnp.zeros((capacity, num_envs) + tuple(leaf.shape), dtype)

    data = Transition(*[zeros(n, l) for n, l in zip(Transition._fields, example)])
    return OldReplayState(data=data, pos=jnp.zeros((), jnp.int32), count=jnp.zeros((), jnp.int32))


def old_size(state):
    return state.count * state.data.action.shape[1]


def old_add(state, batch):
    capacity = state.data.action.shape[0]
    data = jax.tree.map(lambda buf, x: buf.at[state.pos].set(x.astype(buf.dtype)), state.data, batch)
    return OldReplayState(data=data, pos=(state.pos + 1) % capacity, count=jnp.minimum(state.count + 1, capacity))


def old_gather(state, flat_idx):
    num_envs = state.data.action.shape[1]
    t, e = flat_idx // num_envs, flat_idx % num_envs
    out = jax.tree.map(lambda buf: buf[t, e], state.data)
    return out._replace(obs=out.obs.astype(jnp.float32), next_obs=out.next_obs.astype(jnp.float32))


def old_sample(state, key, batch_size):
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(old_size(state), 1))
    return old_gather(state, idx)


def old_sample_distinct(state, key, k):
    capacity, num_envs = state.data.action.shape[:2]
    scores = jax.random.uniform(key, (capacity * num_envs,))
    ok = (jnp.arange(capacity * num_envs) < old_size(state)) & state.data.valid.reshape(-1)
    scores = jnp.where(ok, scores, -1.0)
    _, idx = jax.lax.top_k(scores, k)
    return old_gather(state, idx)


def old_recent(state, num_steps):
    capacity = state.data.action.shape[0]
    t = (state.pos - num_steps + jnp.arange(num_steps)) % capacity
    out = jax.tree.map(lambda buf: buf[t], state.data)
    return out._replace(obs=out.obs.astype(jnp.float32), next_obs=out.next_obs.astype(jnp.float32))


# ----------------------------------------------------------------------------------------------------
# Streams.


class EnvpoolLikeStream:
    """E environments with envpool's protocol, in NumPy. After a step that ends an episode, the next
    step is a reset step (valid=False, reward 0) whose obs is the new episode's first observation.
    A full reset (game over, time limit) repeats one frame K times; a lost life (terminated, game
    not over) continues the stack, as envpool's Atari does. `hist` is the ground truth: how many
    earlier frames each env's current stack holds (0 after a full reset, at most K − 1)."""

    def __init__(self, num_envs, frame_shape, k, seed, max_len=9):
        self.e, self.frame_shape, self.k, self.max_len = num_envs, frame_shape, k, max_len
        self.rng = np.random.default_rng(seed)

    def _frame(self, last=None):
        if last is not None and self.rng.random() < 0.3:
            return last.copy()  # a static screen: equal consecutive frames
        return self.rng.integers(0, 256, self.frame_shape, dtype=np.uint8)

    def _full_reset(self, e):
        self.stack[e] = [self._frame()] * self.k
        self.hist[e], self.steps[e] = 0, 0

    def reset_all(self):
        """Fresh environments (also how a run resumed from a checkpoint re-creates them)."""
        self.stack, self.hist, self.steps = [None] * self.e, [0] * self.e, [0] * self.e
        self.prev_done, self.full_next = [False] * self.e, [False] * self.e
        for e in range(self.e):
            self._full_reset(e)
        return self.obs(), np.array(self.hist)

    def obs(self):
        return np.stack([np.concatenate(s, axis=-1) for s in self.stack]).astype(np.float32)

    def _push(self, e):
        self.stack[e] = self.stack[e][1:] + [self._frame(self.stack[e][-1])]
        self.hist[e] = min(self.hist[e] + 1, self.k - 1)

    def step(self):
        rew, term, trunc, valid = (np.zeros(self.e, np.float32), np.zeros(self.e, bool), np.zeros(self.e, bool),
                                   np.ones(self.e, bool))
        for e in range(self.e):
            if self.prev_done[e]:
                valid[e], self.prev_done[e] = False, False
                if self.full_next[e]:
                    self._full_reset(e)
                else:
                    self._push(e)
                    self.steps[e] = 0
                continue
            self._push(e)
            self.steps[e] += 1
            rew[e] = self.rng.normal()
            term[e] = self.rng.random() < 0.12
            trunc[e] = not term[e] and self.steps[e] >= self.max_len
            self.full_next[e] = bool(trunc[e] or (term[e] and self.rng.random() < 0.5))
            self.prev_done[e] = bool(term[e] or trunc[e])
        return self.obs(), rew, term, trunc, valid, np.array(self.hist)


def envpool_like_batches(num_envs, frame_shape, k, seed, steps, cut_at=()):
    """The batches the value loop would `add` (obs acted on, next_obs = step obs; action = a unique id
    i·E + e), and per id the ground truth: its stack's reach, and where the stream was cut after it,
    the step whose `add` reveals the cut."""
    s = EnvpoolLikeStream(num_envs, frame_shape, k, seed)
    obs, hist = s.reset_all()
    batches, reach, cut = [], {}, {}
    for i in range(steps):
        if i in cut_at:  # environments re-created: the previous transitions' next_obs never comes back
            for e in range(num_envs):
                cut[(i - 1) * num_envs + e] = i  # known to the buffer once step i is added
            obs, hist = s.reset_all()
        nxt, rew, term, trunc, valid, nhist = s.step()
        ids = np.arange(num_envs, dtype=np.int32) + i * num_envs
        for e in range(num_envs):
            reach[int(ids[e])] = int(hist[e])
        batches.append(Transition(obs=obs, action=ids, reward=rew, discount=1.0 - term.astype(np.float32),
                                  next_obs=nxt, done=term | trunc, valid=valid))
        obs, hist = nxt, nhist
    return batches, reach, cut


def gymnax_like_batches(num_envs, obs_shape, seed, steps):
    """Auto-reset inside step: at done steps next_obs is the final observation and the next obs a reset one."""
    rng = np.random.default_rng(seed)
    obs = rng.integers(0, 2, (num_envs,) + obs_shape).astype(np.float32)
    batches = []
    for i in range(steps):
        nxt = rng.integers(0, 2, (num_envs,) + obs_shape).astype(np.float32)
        term, trunc = rng.random(num_envs) < 0.15, rng.random(num_envs) < 0.1
        reset = rng.integers(0, 2, (num_envs,) + obs_shape).astype(np.float32)
        batches.append(Transition(obs=obs, action=np.arange(num_envs, dtype=np.int32) + i * num_envs,
                                  reward=rng.normal(size=num_envs).astype(np.float32),
                                  discount=1.0 - term.astype(np.float32), next_obs=nxt, done=term | trunc,
                                  valid=np.ones(num_envs, bool)))
        obs = np.where((term | trunc)[:, None, None], reset, nxt)
    assert any(bool((b.done & np.any(b.next_obs != n.obs, axis=(1, 2))).any()) for b, n in zip(batches, batches[1:]))
    return batches


def example_of(batch):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), batch)


# ----------------------------------------------------------------------------------------------------
# Side-by-side comparison.

_BATCH, _K, _STEPS = 256, 6, 4  # sample size, sample_distinct size, recent length


@jax.jit
def _add_both(new, old, batch):
    return replay.add(new, batch), old_add(old, batch)


@jax.jit
def _query_both(new, old, key):
    """What `compare` checks, from both buffers, in one compilation per stream shape."""
    k_s, k_d = jax.random.split(key)
    capacity, num_envs = old.data.action.shape
    return dict(
        sample=(replay.sample(new, k_s, _BATCH), old_sample(old, k_s, _BATCH)),
        sample_idx=jax.random.randint(k_s, (_BATCH,), 0, jnp.maximum(old_size(old), 1)),  # as documented
        distinct=(replay.sample_distinct(new, k_d, _K), old_sample_distinct(old, k_d, _K)),
        scores=jax.random.uniform(k_d, (capacity * num_envs,)),
        recent=(replay.recent(new, _STEPS), old_recent(old, _STEPS)),
        recent_all=(replay.recent(new, capacity), old_recent(old, capacity)),
    )


def assert_transitions_equal(a, b, where=None, skip=()):
    for name in Transition._fields:
        if name in skip:
            continue
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        assert x.dtype == y.dtype, name
        if where is not None:
            x, y = x[where], y[where]
        np.testing.assert_array_equal(x, y, err_msg=name)


def excluded_reference(old, reach, cut):
    """[C, E] bool: stored transitions the new buffer cannot rebuild, from the stream's ground truth:
    a stack reaching further back than the oldest stored slot, or a next_obs cut off."""
    capacity, num_envs = old.data.action.shape
    pos, count = int(old.pos), int(old.count)
    ids = np.asarray(old.data.action)
    steps_added = int(ids[(pos - 1) % capacity].max()) // num_envs + 1
    excl = np.zeros((capacity, num_envs), bool)
    for t in range(count):
        age = (t - pos + count) % capacity
        for e in range(num_envs):
            i = int(ids[t, e])
            excl[t, e] = reach[i] > age or cut.get(i, steps_added) < steps_added
    return excl


def np_gather(old, flat):
    """The reference's stored transitions at flat indices t·E + e, gathered in NumPy."""
    num_envs = old.data.action.shape[1]
    t, e = flat // num_envs, flat % num_envs
    out = Transition(*[np.asarray(x)[t, e] for x in old.data])
    return out._replace(obs=out.obs.astype(np.float32), next_obs=out.next_obs.astype(np.float32))


def compare(new, old, excl, key):
    """sample / sample_distinct / recent of `new` against the reference `old` with the same key."""
    capacity, num_envs = old.data.action.shape
    flat_excl = excl.reshape(-1)
    stored = int(old_size(old))
    by_id = {int(i): n for n, i in enumerate(np.asarray(old.data.action).reshape(-1)[:stored])}
    q = _query_both(new, old, key)

    # sample: the same draws wherever the reference's draw can be rebuilt; a redraw elsewhere
    got, want = q["sample"]
    hit = ~flat_excl[np.asarray(q["sample_idx"])]
    assert_transitions_equal(got, want, where=hit)
    where_new = np.array([by_id[int(i)] for i in np.asarray(got.action)])
    assert not flat_excl[where_new].any()
    assert_transitions_equal(got, np_gather(old, where_new))  # every draw is exact

    # sample_distinct: the reference's top-k of the same scores, over what can be rebuilt
    got, want = q["distinct"]
    scores = np.asarray(q["scores"])
    stored_valid = (np.arange(capacity * num_envs) < stored) & np.asarray(old.data.valid).reshape(-1)
    assert_transitions_equal(got, np_gather(old, np.argsort(-np.where(stored_valid & ~flat_excl, scores, -1.0),
                                                            kind="stable")[:_K]))
    if not flat_excl[np.argsort(-np.where(stored_valid, scores, -1.0), kind="stable")[:_K]].any():
        assert_transitions_equal(got, want)

    # recent: equal where rebuildable; the others are marked valid=False
    for name, steps in (("recent", _STEPS), ("recent_all", capacity)):
        if steps > int(old.count):
            continue
        got, want = q[name]
        ok = ~excl[(int(old.pos) - steps + np.arange(steps)) % capacity]
        assert_transitions_equal(got, want, where=ok, skip=("valid",))
        np.testing.assert_array_equal(got.valid, np.asarray(want.valid) & ok)
    return int((~hit).sum())


def run_side_by_side(batches, reach, cut, capacity, check_at, new_kwargs, obs_dtype=jnp.uint8, seed=0):
    example = example_of(batches[0])
    new = replay.init(example, capacity, batches[0].action.shape[0], obs_dtype, **new_kwargs)
    old = old_init(example, capacity, batches[0].action.shape[0], obs_dtype)
    redrawn = 0
    for i, b in enumerate(batches):
        new, old = _add_both(new, old, b)
        if i + 1 in check_at:
            excl = excluded_reference(old, reach, cut)
            redrawn += compare(new, old, excl, jax.random.key(seed + i))
    return new, old, redrawn


# ----------------------------------------------------------------------------------------------------
# Tests.


@pytest.mark.parametrize("k, channels", [(3, 2), (1, 6)])  # obs [3, 2, 6] in both (K = 4 on real Atari below)
def test_envpool_like_stream_matches_whole_transition_buffer(k, channels):
    num_envs, capacity, steps = 3, 7, 45
    batches, reach, cut = envpool_like_batches(num_envs, (3, 2, channels), k, seed=k, steps=steps, cut_at=(20, 33))
    assert any(not b.valid.all() for b in batches) and any(b.done.any() for b in batches)
    assert set(reach.values()) == set(range(k))  # full resets and long continued stacks both occur
    new, old, redrawn = run_side_by_side(batches, reach, cut, capacity, check_at={5, 20, 21, 32, 34, 45},
                                         new_kwargs=dict(frame_stack=k, next_obs_follows=True))
    assert redrawn > 0  # some reference draws were not rebuildable, and were redrawn
    # frames stored once: each slot holds obs_shape[-1] / K channels and there is no dense next_obs
    assert new.data.obs.shape == (capacity, num_envs, 3, 2, channels) and new.data.next_obs is None


def test_sample_redraws_uniformly_over_rebuildable_transitions():
    num_envs, capacity = 3, 7  # the shapes of test_envpool_like_stream...[3-2]: no new compilation
    batches, reach, cut = envpool_like_batches(num_envs, (3, 2, 2), 3, seed=5, steps=30, cut_at=(28,))
    new, old, _ = run_side_by_side(batches, reach, cut, capacity, check_at=(),
                                   new_kwargs=dict(frame_stack=3, next_obs_follows=True))
    excl = excluded_reference(old, reach, cut).reshape(-1)
    assert 0 < excl.sum() < excl.size
    ids = np.concatenate([np.asarray(_query_both(new, old, jax.random.key(s))["sample"][0].action)
                          for s in range(80)])
    counts = np.array([np.sum(ids == i) for i in np.asarray(old.data.action).reshape(-1)])
    assert (counts[excl] == 0).all()
    expected = ids.size / (~excl).sum()  # ~1,400 each; binomial sd ~37
    assert np.abs(counts[~excl] - expected).max() < 6 * np.sqrt(expected)


def test_gymnax_like_stream_is_bit_identical_with_the_default_init():
    batches = gymnax_like_batches(num_envs=3, obs_shape=(2, 3), seed=0, steps=23)
    reach = {int(i): 0 for b in batches for i in b.action}
    new, old, redrawn = run_side_by_side(batches, reach, {}, 5, check_at={3, 5, 17, 23}, new_kwargs={})
    assert redrawn == 0 and new.data.next_obs is not None and new.last_obs is None
    # nothing was excluded, so `compare` found every draw equal to the reference's with the same key


def test_real_atari_stream_matches_whole_transition_buffer():
    """Breakout-v5 (5 lives: lost lives continue the stack), 30-step time limit (full resets)."""
    envs = pytest.importorskip("tdjax.envs")
    try:
        venv = envs.make_vec("Breakout-v5", 2, seed=3, options={"max_episode_steps": 30})
    except Exception as err:  # noqa: BLE001 - any failure to load envpool's Atari skips, with its reason
        pytest.skip(f"envpool Atari cannot load here: {err}")
    assert venv.frame_stack == envs.vec_spec("Breakout-v5").frame_stack == 4 and venv.obs_shape == (84, 84, 4)
    assert not venv.always_valid and envs.vec_spec("Breakout-MinAtar").frame_stack == 1
    num_envs, steps, capacity = 2, 70, 20
    env_state, obs = venv.reset(jax.random.key(0))
    step = jax.jit(venv.step)
    rng = np.random.default_rng(0)
    batches, reach, hist, full_next = [], {}, np.zeros(num_envs, int), np.zeros(num_envs, bool)
    obs = np.asarray(obs)
    for i in range(steps):
        action = rng.integers(0, venv.num_actions, num_envs).astype(np.int32)
        env_state, s = step(env_state, jax.random.key(i), jnp.asarray(action))
        s = jax.tree.map(np.asarray, s)
        ids = np.arange(num_envs, dtype=np.int32) + i * num_envs
        for e in range(num_envs):
            reach[int(ids[e])] = int(hist[e])
        batches.append(Transition(obs=obs, action=ids, reward=s.reward, discount=1.0 - s.terminated.astype(np.float32),
                                  next_obs=s.next_obs, done=s.terminated | s.truncated, valid=s.valid))
        # envpool's Atari: a reset after a truncation or game over repeats the first frame; after a lost
        # life (terminated, game not over) the stack continues
        hist = np.where(~s.valid & full_next, 0, np.minimum(hist + 1, 3))
        full_next = np.where(s.terminated | s.truncated, s.episode_end, full_next)
        obs = s.obs
    done = np.stack([b.done for b in batches])
    lives_lost = np.stack([b.done & (b.discount == 0) for b in batches]).sum()
    assert done.sum() >= 4 and lives_lost >= 1 and (~np.stack([b.valid for b in batches])).sum() >= 4
    new, old, _ = run_side_by_side(batches, reach, {}, capacity, check_at={15, 50, 70},
                                   new_kwargs=dict(frame_stack=4, next_obs_follows=True))
    assert new.data.obs.shape == (capacity, num_envs, 84, 84, 1)


def test_bytes_per_transition_for_an_atari_stream_are_about_one_frame():
    obs = jax.ShapeDtypeStruct((84, 84, 4), jnp.float32)
    scalar = lambda d: jax.ShapeDtypeStruct((), d)  # noqa: E731
    example = Transition(obs=obs, action=scalar(jnp.int32), reward=scalar(jnp.float32),
                         discount=scalar(jnp.float32), next_obs=obs, done=scalar(bool), valid=scalar(bool))
    num_envs = 4
    capacity = 1_000_000 // num_envs  # the paper's 1M-transition buffer (Lyle et al. 2022, App. B.3)

    def nbytes(state):
        return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))

    new = jax.eval_shape(functools.partial(replay.init, example, capacity, num_envs, jnp.uint8, frame_stack=4,
                                           next_obs_follows=True))
    old = jax.eval_shape(functools.partial(old_init, example, capacity, num_envs, jnp.uint8))
    per_new, per_old = nbytes(new) / 1_000_000, nbytes(old) / 1_000_000
    assert 84 * 84 <= per_new <= 84 * 84 + 16 + 1  # one frame + 16 B of per-slot fields (+ last_obs)
    assert int(per_old) == 2 * 84 * 84 * 4 + 14  # + 8 B of pos, count
    assert round(nbytes(new) / 1e9, 2) == 7.07 and round(nbytes(old) / 1e9, 1) == 56.5  # GB, docs/replay.md


def test_vmap_over_seeds_equals_separate_runs():
    """A whole buffer's life (adds in a lax.scan, then queries) under jax.jit(jax.vmap(...)) over two
    streams equals each stream run alone (which `compare` checks against the reference elsewhere)."""
    num_envs, capacity, steps = 3, 7, 17  # the shapes of test_envpool_like_stream...[3-2]
    streams = [envpool_like_batches(num_envs, (3, 2, 2), 3, seed=s, steps=steps, cut_at=(9,))[0] for s in (11, 12)]
    stack = lambda xs: jax.tree.map(lambda *x: jnp.stack(x), *xs)  # noqa: E731
    keys = jnp.stack([jax.random.key(0), jax.random.key(1)])

    def run(batches, key):
        state = replay.init(example_of(streams[0][0]), capacity, num_envs, jnp.uint8, frame_stack=3,
                            next_obs_follows=True)
        state, _ = jax.lax.scan(lambda s, b: (replay.add(s, b), None), state, batches)
        k_s, k_d = jax.random.split(key)
        return state, (replay.sample(state, k_s, _BATCH), replay.sample_distinct(state, k_d, _K),
                       replay.recent(state, _STEPS), replay.recent(state, capacity))

    states, queries = jax.jit(jax.vmap(run))(stack([stack(bs) for bs in streams]), keys)
    for s, batches in enumerate(streams):
        new = replay.init(example_of(batches[0]), capacity, num_envs, jnp.uint8, frame_stack=3, next_obs_follows=True)
        old = old_init(example_of(batches[0]), capacity, num_envs, jnp.uint8)
        for b in batches:
            new, old = _add_both(new, old, b)
        q = _query_both(new, old, keys[s])
        alone = (q["sample"][0], q["distinct"][0], q["recent"][0], q["recent_all"][0])
        pick = lambda tree: jax.tree.map(lambda x: x[s], tree)  # noqa: E731
        jax.tree.map(np.testing.assert_array_equal, pick(states), new)
        jax.tree.map(np.testing.assert_array_equal, pick(queries), alone)


def test_init_and_add_fail_early_with_the_fix():
    obs = jax.ShapeDtypeStruct((4, 4, 6), jnp.float32)
    s = jax.ShapeDtypeStruct((), jnp.float32)
    example = Transition(obs, jax.ShapeDtypeStruct((), jnp.int32), s, s, obs,
                         jax.ShapeDtypeStruct((), bool), jax.ShapeDtypeStruct((), bool))
    with pytest.raises(ValueError, match="next_obs_follows=True"):
        replay.init(example, 8, 2, frame_stack=2)
    with pytest.raises(ValueError, match="frame_stack=4 does not divide"):
        replay.init(example, 8, 2, frame_stack=4, next_obs_follows=True)
    with pytest.raises(ValueError, match="capacity"):
        replay.init(example, 0, 2)
    state = replay.init(example, 8, 2, frame_stack=3, next_obs_follows=True)
    bad = jax.tree.map(lambda x: jnp.zeros((3,) + x.shape, x.dtype), example)
    with pytest.raises(ValueError, match=r"batch.obs has shape \(3, 4, 4, 6\), expected \(2, 4, 4, 6\)"):
        replay.add(state, bad)
