"""MaskedImageEnv against a plain NumPy implementation of Bengio et al.'s rules, and the env registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tdjax.envs as E
from tdjax.envs import MaskedImageEnv


class NumpyWindowEnv:
    """The rules of the authors' WindowEnv (dataset_experiments/env.py), channels last, written again in
    NumPy: centre (16, 16), window [c − 4, c + 4) clipped, moves of 8 with the centre clipped to [0, 31],
    marker channel first, revealed pixels kept; reward 1 / −penalty; time limit 20."""

    def __init__(self, images, labels, penalty=0.1, max_steps=20, window=8):
        self.images, self.labels, self.penalty, self.max_steps, self.w = images, labels, penalty, max_steps, window

    def reset(self, index):
        self.index, self.t = index, 0
        h, w, c = self.images.shape[1:]
        self.visible = np.zeros((h, w, c + 1), np.float64)
        self.pos = [h // 2, w // 2]
        self._draw()
        return self.visible.copy()

    def _draw(self):
        u, v = self.pos
        h, w = self.visible.shape[:2]
        t, l, b, r = max(u - self.w // 2, 0), max(v - self.w // 2, 0), min(u + self.w // 2, h), min(v + self.w // 2, w)
        hi = 255.0 if self.images.dtype == np.uint8 else 1.0
        self.visible[t:b, l:r, 1:] = self.images[self.index][t:b, l:r].astype(np.float64)
        self.visible[..., 0] = 0
        self.visible[t:b, l:r, 0] = hi

    def step(self, action):
        cls, mov = action // 4, action % 4
        h, w = self.visible.shape[:2]
        correct = cls == self.labels[self.index]
        reward = 1.0 if correct else -self.penalty
        if mov == 0:
            self.pos[0] = max(self.pos[0] - self.w, 0)
        if mov == 1:
            self.pos[0] = min(self.pos[0] + self.w, h - 1)
        if mov == 2:
            self.pos[1] = max(self.pos[1] - self.w, 0)
        if mov == 3:
            self.pos[1] = min(self.pos[1] + self.w, w - 1)
        self._draw()
        self.t += 1
        return self.visible.copy(), reward, bool(correct), (self.t >= self.max_steps) and not correct


def _data(n=6, c=3, dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 256, size=(n, 32, 32, c)).astype(np.uint8)
    if dtype != np.uint8:
        x = (x / 255.0).astype(dtype)
    return x, rng.integers(0, 10, size=n)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_steps_match_numpy_reference(dtype):
    images, labels = _data(dtype=dtype)
    env = MaskedImageEnv(images, labels, indices=[1, 3, 4], step_penalty=0.1)
    ref = NumpyWindowEnv(images, labels)
    step = jax.jit(env.transition)
    rng = np.random.default_rng(1)
    for slot in range(3):
        state, obs = jax.jit(env.reset_to)(slot)
        assert int(state.image_index) == [1, 3, 4][slot]
        np.testing.assert_allclose(np.asarray(obs), ref.reset([1, 3, 4][slot]), rtol=1e-6)
        wrong = [a for a in range(40) if a // 4 != labels[[1, 3, 4][slot]]]
        for t in range(25):
            a = int(rng.choice(wrong)) if t < 22 else 4 * int(labels[[1, 3, 4][slot]]) + int(rng.integers(4))
            state, obs, r, term, trunc = step(state, a)
            r_obs, r_r, r_term, r_trunc = ref.step(a)
            np.testing.assert_allclose(np.asarray(obs), r_obs, rtol=1e-6, err_msg=f"slot {slot} step {t}")
            assert float(r) == pytest.approx(r_r) and bool(term) == r_term and bool(trunc) == r_trunc
            if r_term or r_trunc:
                break
        assert r_trunc and t == 19  # twenty wrong classes: truncated at the time limit


def test_border_windows_and_revealed_pixels():
    images, labels = _data(n=1, c=1)
    env = MaskedImageEnv(images, labels)
    state, obs = jax.jit(env.reset)(jax.random.key(0))
    assert obs.shape == (32, 32, 2) and float(obs[..., 0].sum()) == 64 * 255
    wrong = 4 * ((int(labels[0]) + 1) % 10)
    transition = jax.jit(env.transition)
    for _ in range(3):  # up, up, up: centre 16 → 8 → 0 → 0, the last windows cover rows 0..3
        state, obs, *_ = transition(state, wrong + 0)
    marker = np.asarray(obs[..., 0]) > 0
    assert marker.sum() == 4 * 8 and marker[:4, 12:20].all()
    # rows 0..19 of columns 12..19 have been seen (windows at centres 16, 8, 0), nothing else
    seen = np.asarray(obs[..., 1]) > 0
    expect = np.zeros((32, 32), bool)
    expect[0:20, 12:20] = True
    np.testing.assert_array_equal(seen, expect)
    for _ in range(5):  # right until clipped at column 31: window columns 27..31
        state, obs, *_ = transition(state, wrong + 3)
    assert int(state.pos[1]) == 31 and (np.asarray(obs[..., 0]) > 0)[0, 27:32].all()


def test_auto_reset_and_episode_seeds():
    images, labels = _data(n=8)
    env = MaskedImageEnv(images, labels, indices=range(2, 5))
    keys = jax.random.split(jax.random.key(0), 200)
    seeds = np.asarray(jax.jit(jax.vmap(lambda k: env.reset(k)[0].image_index))(keys))
    assert set(seeds.tolist()) == {2, 3, 4}  # uniform over the index set, nothing else
    state, _ = jax.jit(env.reset)(keys[0])
    right = 4 * int(labels[int(state.image_index)])
    new_state, s = jax.jit(env.step)(state, keys[1], right)
    assert bool(s.terminated) and bool(s.episode_end) and not bool(s.truncated) and float(s.reward) == 1.0
    assert int(new_state.t) == 0 and float(s.obs[..., 0].sum()) == 64 * 255  # a fresh episode
    assert int(np.asarray(s.next_obs[..., 0] > 0).sum()) <= 64  # final obs: the moved window


def test_bad_input_errors():
    images, labels = _data(n=3)
    with pytest.raises(ValueError, match="images must be"):
        MaskedImageEnv(images[0], labels)
    with pytest.raises(ValueError, match="labels must be"):
        MaskedImageEnv(images, labels[:2])
    with pytest.raises(ValueError, match="num_classes"):
        MaskedImageEnv(images, np.array([0, 1, 12]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        MaskedImageEnv(images.astype(np.float32), labels)
    with pytest.raises(ValueError, match="indices must lie"):
        MaskedImageEnv(images, labels, indices=[0, 5])
    with pytest.raises(ValueError, match="empty"):
        MaskedImageEnv(images, labels, indices=[])
    with pytest.raises(ValueError, match="repeated"):
        MaskedImageEnv(images, labels, indices=[0, 0])


def test_registry_make_vec_and_disjoint_test_images():
    assert {"MaskedImage-digits", "MaskedImage-cifar10", "MaskedImage-svhn"} <= set(E.registered_env_names())
    spec = E.vec_spec("MaskedImage-digits")
    assert spec.obs_shape == (32, 32, 2) and spec.num_actions == 40 and spec.jittable and spec.network == "bengio_cnn"
    opts = {"num_images": 7, "start_image": 3}
    train = E.make_vec("MaskedImage-digits", 3, options=opts)
    test = E.make_vec("MaskedImage-digits", 3, options=E.test_env_options("MaskedImage-digits", opts))
    np.testing.assert_array_equal(np.asarray(train.env.episode_indices), np.arange(3, 10))
    assert test.env.num_images == 297  # the whole test split of the stand-in: other images than training
    state, obs = train.reset(jax.random.key(0))
    assert obs.shape == (3, 32, 32, 2) and train.obs_scale == pytest.approx(1 / 255)
    state, step = jax.jit(train.step)(state, jax.random.key(1), jnp.arange(3))
    assert step.reward.shape == (3,) and bool(step.valid.all())


def test_registry_errors():
    with pytest.raises(ValueError, match="n_T"):
        E.make_vec("MaskedImage-digits", 1, options={"num_images": 5000})
    with pytest.raises(ValueError, match="unknown env_options"):
        E.make_vec("MaskedImage-digits", 1, options={"n_train": 5})
    with pytest.raises(ValueError, match="is not a known environment"):
        E.check_env_name("MaskedImage-digitz")
    with pytest.raises(ValueError, match="already registered"):
        E.register_env("MaskedImage-digits", lambda: None, obs_shape=(1,), num_actions=1)
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        E.make_vec("MaskedImage-cifar10", 1, options={"data_dir": "/nonexistent"})


def test_play_one_episode_per_image_matches_numpy():
    images, labels = _data(n=6)
    env = MaskedImageEnv(images, labels, indices=[0, 2, 3, 5], step_penalty=0.1)

    def policy(obs):  # deterministic, depends on what was revealed: class and move from pixel sums
        s = np.asarray(obs[..., 1:]).sum()
        return int(s // 97) % 40

    got = jax.jit(lambda: env.play(lambda o: (jnp.sum(o[..., 1:]) // 97).astype(jnp.int32) % 40, gamma=0.9))()
    ref = NumpyWindowEnv(images, labels)
    for k, idx in enumerate([0, 2, 3, 5]):
        obs, ret, disc, power, correct, n = ref.reset(idx), 0.0, 0.0, 1.0, False, 0
        for _ in range(20):
            obs, r, term, trunc = ref.step(policy(obs))
            ret, disc, power, n = ret + r, disc + power * r, power * 0.9, n + 1
            if term or trunc:
                correct = term
                break
        assert int(got.image_index[k]) == idx and int(got.length[k]) == n and bool(got.correct[k]) == correct
        assert float(got.episode_return[k]) == pytest.approx(ret, abs=1e-5)
        assert float(got.discounted_return[k]) == pytest.approx(disc, abs=1e-5)


def test_pool_plays_only_the_first_slots_and_equals_the_smaller_env():
    """pool = n on an env of N images: the same slots, images, rewards and observations, key by key, as
    an env built with the first n indices (a walk of auto-resets), and no slot >= n is ever played."""
    images, labels = _data(n=8)
    big = MaskedImageEnv(images, labels, indices=range(1, 7))  # N = 6 images
    small = MaskedImageEnv(images, labels, indices=range(1, 3))  # the first n = 2 of them
    keys = jax.random.split(jax.random.key(5), 300)
    slots = np.asarray(jax.jit(jax.vmap(lambda k: big.reset(k, jnp.int32(2))[0].slot))(keys))
    np.testing.assert_array_equal(slots, np.asarray(jax.vmap(lambda k: small.reset(k)[0].slot)(keys)))
    assert set(slots.tolist()) == {0, 1}

    def walk(env, pool):  # 60 steps of a fixed action sequence through many auto-resets
        def body(state, inp):
            k, a = inp
            state, s = env.step(state, k, a)
            return state, (state.slot, state.image_index, s.reward, s.obs, s.episode_end)

        state, _ = env.reset(keys[0]) if pool is None else env.reset(keys[0], pool)
        actions = jnp.asarray(np.random.default_rng(0).integers(0, 40, 60), jnp.int32)
        return jax.lax.scan(body, state, (keys[1:61], actions))[1]

    got = jax.jit(lambda p: walk(big, p))(jnp.int32(2))
    want = jax.jit(lambda: walk(small, None))()
    for g, w in zip(got, want):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    assert set(np.asarray(got[0]).tolist()) == {0, 1} and int(np.asarray(got[4]).sum()) >= 5  # many episodes
    with pytest.raises(ValueError, match=r"pool=7 must be an integer in \[1, num_images=6\]"):
        big.reset(keys[0], 7)
    assert int(big.reset(keys[0])[0].pool) == 6  # reset(key): pool = num_images, as before
