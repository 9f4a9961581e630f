"""replay.neighbours against an explicit loop over a stream of known episodes, past a wrap-around."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tdjax.train import replay
from tdjax.train.replay import Transition

CAPACITY, NUM_ENVS, STEPS, X = 7, 2, 11, 3
# Ground truth: the episode of every write per environment (lengths 3, 4, 2, ... and 5, 1, 4, ...).
EPISODE_LENGTHS = {0: [3, 4, 2, 5], 1: [5, 1, 4, 3]}
INVALID = {(8, 1)}  # (write, env): a transition marked not valid (as envpool's reset steps are)


def _episode_ids(env):
    return np.concatenate([np.full(n, i) for i, n in enumerate(EPISODE_LENGTHS[env])])[:STEPS]


def _stream():
    ids = [_episode_ids(e) for e in range(NUM_ENVS)]
    for g in range(STEPS):
        done = [g + 1 == STEPS or ids[e][g + 1] != ids[e][g] for e in range(NUM_ENVS)]
        obs = np.array([[g, e] for e in range(NUM_ENVS)], np.float32)  # the write index and env, to check
        yield Transition(
            obs=jnp.asarray(obs), action=jnp.full(NUM_ENVS, g, jnp.int32), reward=jnp.zeros(NUM_ENVS),
            discount=jnp.ones(NUM_ENVS), next_obs=jnp.asarray(obs + 0.5), done=jnp.asarray(done),
            valid=jnp.asarray([(g, e) not in INVALID for e in range(NUM_ENVS)]))


@pytest.fixture(scope="module")
def filled():
    batches = list(_stream())
    state = replay.init(jax.tree.map(lambda x: x[0], batches[0]), CAPACITY, NUM_ENVS)
    add = jax.jit(replay.add)
    states = []
    for b in batches:
        state = add(state, b)
        states.append(state)
    return states


def _reference(num_written, slot, env, x):
    """Explicit loop: the write held by `slot`, then whether write + x is stored, same episode, valid."""
    first = max(0, num_written - CAPACITY)
    g = next(w for w in range(first, num_written) if w % CAPACITY == slot)
    h = g + x
    if not first <= h < num_written:
        return g, None
    ids = _episode_ids(env)
    ok = ids[h] == ids[g] and (h, env) not in INVALID
    return g, h if ok else None


@pytest.mark.parametrize("num_written", [5, STEPS])  # before and after the wrap-around
def test_neighbours_match_an_explicit_loop(filled, num_written):
    state = filled[num_written - 1]
    held = min(num_written, CAPACITY)
    slots = np.array([s for s in range(CAPACITY) for _ in range(NUM_ENVS)][: held * NUM_ENVS] if held == CAPACITY
                     else [s for s in range(held) for _ in range(NUM_ENVS)])
    envs = np.array([i % NUM_ENVS for i in range(len(slots))])
    tr, mask = jax.jit(replay.neighbours, static_argnums=3)(state, jnp.asarray(slots), jnp.asarray(envs), X)
    assert tr.obs.shape == (len(slots), 2 * X + 1, 2) and mask.shape == (len(slots), 2 * X + 1)
    seen = set()
    for n, (s, e) in enumerate(zip(slots, envs)):
        for j, x in enumerate(range(-X, X + 1)):
            g, h = _reference(num_written, s, e, x)
            seen.add(h is None)
            assert bool(mask[n, j]) == (h is not None), (num_written, s, e, x)
            if h is not None:
                np.testing.assert_array_equal(tr.obs[n, j], [h, e])
                assert int(tr.action[n, j]) == h
    assert seen == {True, False}


def test_bad_input(filled):
    state = filled[-1]
    with pytest.raises(ValueError, match="max_offset.*capacity"):
        replay.neighbours(state, jnp.zeros(2, jnp.int32), jnp.zeros(2, jnp.int32), CAPACITY // 2 + 1)
    with pytest.raises(ValueError, match="max_offset"):
        replay.neighbours(state, jnp.zeros(2, jnp.int32), jnp.zeros(2, jnp.int32), 0)
    with pytest.raises(ValueError, match="`t` and `e`"):
        replay.neighbours(state, jnp.zeros((2, 2), jnp.int32), jnp.zeros((2, 2), jnp.int32), 1)
