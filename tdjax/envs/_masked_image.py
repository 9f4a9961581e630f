"""The masked-image classification task of Bengio et al. 2020 §3, as a jittable environment.

An episode is seeded by the index of one image: the agent first sees an 8×8 window at the centre of
the image; each step it names a class and moves the window by 8 pixels, revealing more of the image;
the episode ends on the right class (reward 1) or after 20 steps (reward −0.1 for every wrong class).
Training and test sets are disjoint sets of image indices ("seeds"), so the generalisation gap of an
agent is measured exactly like the one of a classifier on the same images.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from tdjax.envs._gymnax import EnvStep

__all__ = ["MaskedImageEnv", "MaskedImageState", "MaskedImageEpisodes", "NUM_MOVES", "MOVE_NAMES"]

NUM_MOVES = 4
MOVE_NAMES: Tuple[str, ...] = ("up", "down", "left", "right")
"""Move m of action a = NUM_MOVES · class + m: 0 up (row − 8), 1 down (row + 8), 2 left (column − 8),
3 right (column + 8), as in the authors' code (dataset_experiments/env.py)."""


class MaskedImageState(NamedTuple):
    """State of ONE masked-image episode."""

    slot: jax.Array  # shape=(), int32. Position of the episode's image in `MaskedImageEnv.indices`.
    image_index: jax.Array  # shape=(), int32. The episode's seed: the image's index in the data set.
    pos: jax.Array  # shape=[2], int32. Centre (row, column) of the current window.
    revealed: jax.Array  # shape=[H, W], bool. Pixels seen so far in this episode.
    t: jax.Array  # shape=(), int32. Steps taken in this episode.
    pool: jax.Array  # shape=(), int32. New episodes draw their slot uniformly from [0, pool) (≤ num_images).


class MaskedImageEpisodes(NamedTuple):
    """One episode on each of K images (`MaskedImageEnv.play`)."""

    image_index: jax.Array  # shape=[K], int32. The images (seeds).
    episode_return: jax.Array  # shape=[K], float32. Undiscounted return Σₜ rₜ₊₁.
    discounted_return: jax.Array  # shape=[K], float32. Σₜ γᵗ rₜ₊₁.
    correct: jax.Array  # shape=[K], bool. The episode ended on the right class.
    length: jax.Array  # shape=[K], int32. Steps taken (≤ max_steps).


def _window(pos: jax.Array, size: int, shape: Tuple[int, int]) -> jax.Array:
    """[H, W] bool: rows [max(r − size/2, 0), min(r + size/2, H)) × the same for columns."""
    h, w = shape
    half = size // 2
    rows = jnp.arange(h)
    cols = jnp.arange(w)
    in_r = (rows >= pos[0] - half) & (rows < pos[0] + half)
    in_c = (cols >= pos[1] - half) & (cols < pos[1] + half)
    return in_r[:, None] & in_c[None, :]


@dataclasses.dataclass(frozen=True, eq=False)
class MaskedImageEnv:
    """Classify a masked image by moving an observation window (Bengio et al. 2020, §3 and App. B.1).

    Rules, as in the authors' released code (bengioe/interference_and_generalization_in_td,
    dataset_experiments/env.py):

      * reset: the episode's seed is an image index drawn uniformly from `indices` (the training or the
        test set), or from its first `pool` entries (see below); the window's centre starts at
        (H/2, W/2) = (16, 16) and the window covers rows [r − 4, r + 4) × columns [c − 4, c + 4),
        clipped to the image.
      * action a ∈ {0, …, 39} is the pair (class, move) = (a // 4, a % 4); the moves are
        `MOVE_NAMES` = up, down, left, right, each shifting the centre by `window` = 8 pixels, the
        centre clipped to [0, H − 1] × [0, W − 1] (so windows at the border are partial, as in the
        authors' code). The class and the move act in the same step.
      * reward rₜ₊₁ = 1 if the class is the image's label (the episode terminates), −`step_penalty`
        (0.1, the paper; the authors' CIFAR scripts use 0.05) otherwise; after `max_steps` = 20
        steps the episode is truncated (the authors' code treats this time limit as terminal; here it
        is a truncation, so value-based agents bootstrap through it, since the step count is not in
        the observation).
      * observation [H, W, 1 + C], channels last: channel 0 marks the current window (1 inside, 0
        outside), channels 1… hold the pixels revealed so far in the episode (they stay revealed),
        0 elsewhere. In the environment's units: uint8 images give 0…255 (the marker is 255) with
        `obs_scale` = 1/255 and uint8 storage; float images in [0, 1] give [0, 1] with `obs_scale` 1.

    The authors' agents have a factored output (10 class values + 4 move values); the joint action
    space of 40 here lets the value-based and actor-critic loops of `tdjax.train` run unchanged.

    Like the other environments of `tdjax.envs`, `step` resets by itself when an episode ends:
    `EnvStep.obs` is then the first observation of the next episode and `next_obs` the final one.

    Training-set size as data: the state carries `pool` (int32, traced or not); every new episode
    draws its slot with `jax.random.randint(key, (), 0, pool)`. `reset(key)` starts with pool =
    `num_images`; `reset(key, pool=n)` (n may be traced, e.g. vmapped over runs) plays only the first n
    slots, and the draws are exactly those of an environment built with `indices[:n]` from the same
    keys, so runs with different n_T can share one program on an environment holding the largest n_T.

    Args (of the constructor):
      images: [N, H, W, C] uint8, or float in [0, 1]; H, W ≥ `window` (32 × 32 in the paper).
      labels: [N] integers in [0, num_classes).
      indices: the image indices episodes are drawn from (the training set, e.g. range(n_T), or a
        disjoint test set); None: all N. Only these images are kept (in the jitted program's
        constants), so a small training set costs little memory.
      num_classes: classes of the task (10).
      window: side of the square window and length of one move, in pixels (8).
      max_steps: time limit of an episode (20).
      step_penalty: −reward of a wrong class (0.1).
      name: a name for logs.

    Example:
      >>> import jax, numpy as np
      >>> images = np.zeros((5, 32, 32, 3), np.uint8); labels = np.arange(5)
      >>> env = MaskedImageEnv(images, labels, indices=[0, 1, 2])
      >>> env.obs_shape, env.num_actions
      ((32, 32, 4), 40)
      >>> state, obs = env.reset(jax.random.key(0))
      >>> int(obs[..., 0].sum()) // 255               # the 8 × 8 window at the centre
      64
      >>> right = 4 * int(state.image_index) + 1       # class = label (= index here), move down
      >>> state, step = jax.jit(env.step)(state, jax.random.key(1), right)
      >>> float(step.reward), bool(step.terminated)    # the right class ends the episode
      (1.0, True)
    """

    images: Any
    labels: Any
    indices: Optional[Sequence[int] | Any] = None
    num_classes: int = 10
    window: int = 8
    max_steps: int = 20
    step_penalty: float = 0.1
    name: str = "MaskedImage"

    if TYPE_CHECKING:  # set in __post_init__ (not dataclass fields; ClassVar only for the type checker)
        _images: ClassVar[Any]
        _labels: ClassVar[Any]
        _indices: ClassVar[Any]
        _hi: ClassVar[float]
        obs_shape: ClassVar[Tuple[int, ...]]
        num_actions: ClassVar[int]
        obs_storage_dtype: ClassVar[Any]
        obs_scale: ClassVar[float]
        max_episode_steps: ClassVar[int]
        num_images: ClassVar[int]

    def __post_init__(self):
        images = self.images
        if not hasattr(images, "shape") or not hasattr(images, "dtype"):
            images = np.asarray(images)
        if images.ndim != 4:
            raise ValueError(f"MaskedImageEnv: images must be [N, H, W, C] (e.g. [N, 32, 32, 3]), got shape "
                             f"{tuple(images.shape)}. Fix: stack the images along a first axis, channels last.")
        n, h, w, _ = images.shape
        if min(h, w) < self.window:
            raise ValueError(f"MaskedImageEnv: images of {h}×{w} are smaller than the window={self.window}. "
                             "Fix: use 32×32 images (the paper's) or a smaller window.")
        is_uint8 = images.dtype == np.uint8
        if not is_uint8:
            if not np.issubdtype(images.dtype, np.floating):
                raise TypeError(f"MaskedImageEnv: images must be uint8 (0…255) or float in [0, 1], got dtype "
                                f"{images.dtype}. Fix: convert them, e.g. images.astype(np.float32) / 255.")
            arr = np.asarray(images)
            if arr.size and (not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0):
                raise ValueError("MaskedImageEnv: float images must lie in [0, 1] (got values in "
                                 f"[{arr.min()}, {arr.max()}]). Fix: divide 0…255 pixels by 255, or pass uint8.")
        labels = np.asarray(self.labels)
        if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"MaskedImageEnv: labels must be [N] = [{n}] integers, got shape {labels.shape} "
                             f"and dtype {labels.dtype}. Fix: one integer class per image.")
        if n and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"MaskedImageEnv: labels must lie in [0, num_classes={self.num_classes}), got "
                             f"[{labels.min()}, {labels.max()}]. Fix: map the classes to 0…{self.num_classes - 1}.")
        if self.indices is None:
            idx = np.arange(n)
        else:
            idx = np.asarray(self.indices)
            if idx.size == 0:
                idx = idx.astype(np.int64)
            if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
                raise ValueError(f"MaskedImageEnv: indices must be a 1-D sequence of image indices, got {idx!r:.80}.")
        if idx.size == 0:
            raise ValueError("MaskedImageEnv: indices is empty; an episode needs at least one image. "
                             "Fix: pass e.g. indices=range(n_T) with n_T >= 1.")
        if idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"MaskedImageEnv: indices must lie in [0, N={n}), got [{idx.min()}, {idx.max()}]. "
                             f"Fix: use at most the {n} images given.")
        if np.unique(idx).size != idx.size:
            raise ValueError("MaskedImageEnv: indices has repeated entries; it is a SET of image indices. "
                             "Fix: pass each index once (np.unique).")
        for field, lo in (("num_classes", 2), ("window", 1), ("max_steps", 1)):
            if not isinstance(getattr(self, field), int) or getattr(self, field) < lo:
                raise ValueError(f"MaskedImageEnv: {field} must be an integer >= {lo}, got {getattr(self, field)!r}.")
        if not np.isfinite(self.step_penalty):
            raise ValueError(f"MaskedImageEnv: step_penalty must be finite, got {self.step_penalty!r}.")
        # Keep only the images episodes can use; gathered with NumPy when possible (no device copy).
        kept = np.asarray(images)[idx] if isinstance(images, np.ndarray) else jnp.asarray(images)[jnp.asarray(idx)]
        object.__setattr__(self, "_images", jnp.asarray(kept, jnp.uint8 if is_uint8 else jnp.float32))
        object.__setattr__(self, "_labels", jnp.asarray(labels[idx], jnp.int32))
        object.__setattr__(self, "_indices", jnp.asarray(idx, jnp.int32))
        object.__setattr__(self, "_hi", 255.0 if is_uint8 else 1.0)
        object.__setattr__(self, "obs_shape", (h, w, 1 + images.shape[-1]))
        object.__setattr__(self, "num_actions", self.num_classes * NUM_MOVES)
        object.__setattr__(self, "obs_storage_dtype", jnp.uint8 if is_uint8 else jnp.float32)
        object.__setattr__(self, "obs_scale", 1.0 / 255.0 if is_uint8 else 1.0)
        object.__setattr__(self, "max_episode_steps", self.max_steps)
        object.__setattr__(self, "num_images", int(idx.size))

    def __repr__(self) -> str:
        return (f"MaskedImageEnv(name={self.name!r}, num_images={self.num_images}, obs_shape={self.obs_shape}, "
                f"num_actions={self.num_actions})")

    # ------------------------------------------------------------------------------------------------

    @property
    def episode_indices(self) -> jax.Array:
        """[K] int32: the image indices (seeds) episodes are drawn from."""
        return self._indices

    def _observe(self, state: MaskedImageState) -> jax.Array:
        h, w = self.obs_shape[:2]
        image = self._images[state.slot].astype(jnp.float32)
        marker = _window(state.pos, self.window, (h, w)).astype(jnp.float32) * self._hi
        seen = jnp.where(state.revealed[..., None], image, 0.0)
        return jnp.concatenate([marker[..., None], seen], axis=-1)

    def _pool(self, pool: Any) -> jax.Array:
        if pool is None:
            return jnp.asarray(self.num_images, jnp.int32)
        if not isinstance(pool, jax.core.Tracer):
            p = np.asarray(pool)
            if p.shape != () or not np.issubdtype(p.dtype, np.integer) or not 1 <= int(p) <= self.num_images:
                raise ValueError(f"MaskedImageEnv.reset: pool={pool!r} must be an integer in [1, num_images="
                                 f"{self.num_images}] (episodes draw from the first `pool` images). Fix: pass "
                                 f"1 <= pool <= {self.num_images}, or build the environment with more images.")
        return jnp.asarray(pool, jnp.int32)

    def reset_to(self, slot: jax.Array, pool: Any = None) -> Tuple[MaskedImageState, jax.Array]:
        """(state, obs [H, W, 1 + C] float32) of a new episode on image `indices[slot]` (slot in [0, K));
        later episodes (auto-reset in `step`) draw from the first `pool` slots (default all K)."""
        h, w = self.obs_shape[:2]
        slot = jnp.asarray(slot, jnp.int32)
        pos = jnp.array([h // 2, w // 2], jnp.int32)
        state = MaskedImageState(slot=slot, image_index=self._indices[slot], pos=pos,
                                 revealed=_window(pos, self.window, (h, w)), t=jnp.zeros((), jnp.int32),
                                 pool=self._pool(pool))
        return state, self._observe(state)

    def reset(self, key: jax.Array, pool: Any = None) -> Tuple[MaskedImageState, jax.Array]:
        """(state, obs [H, W, 1 + C] float32) of a new episode on an image drawn uniformly from the first
        `pool` entries of `indices` (default: all `num_images`; an int32 scalar, traced or not, in
        [1, num_images]): slot = `jax.random.randint(key, (), 0, pool)`, the draw of an environment
        built with `indices[:pool]`, so both play the same episodes from the same keys."""
        pool = self._pool(pool)
        return self.reset_to(jax.random.randint(key, (), 0, pool), pool)

    def transition(self, state: MaskedImageState, action: jax.Array
                   ) -> Tuple[MaskedImageState, jax.Array, jax.Array, jax.Array, jax.Array]:
        """One step WITHOUT the automatic reset: (state, obs, reward, terminated, truncated)."""
        h, w = self.obs_shape[:2]
        action = jnp.asarray(action, jnp.int32)
        cls, move = action // NUM_MOVES, action % NUM_MOVES
        correct = cls == self._labels[state.slot]
        delta = jnp.array([[-1, 0], [1, 0], [0, -1], [0, 1]], jnp.int32)[move] * self.window
        pos = jnp.clip(state.pos + delta, 0, jnp.array([h - 1, w - 1], jnp.int32))
        t = state.t + 1
        state = MaskedImageState(slot=state.slot, image_index=state.image_index, pos=pos,
                                 revealed=state.revealed | _window(pos, self.window, (h, w)), t=t, pool=state.pool)
        reward = jnp.where(correct, 1.0, -jnp.float32(self.step_penalty)).astype(jnp.float32)
        truncated = (t >= self.max_steps) & ~correct
        return state, self._observe(state), reward, correct, truncated

    def step(self, state: MaskedImageState, key: jax.Array, action: jax.Array) -> Tuple[MaskedImageState, EnvStep]:
        """One step of `action` (= 4 · class + move); when the episode ends, a new one starts on an image
        drawn with `key` from the first `state.pool` slots (the returned state and `obs` belong to it;
        `next_obs` is the final observation)."""
        state, next_obs, reward, terminated, truncated = self.transition(state, action)
        done = terminated | truncated
        new_state, new_obs = self.reset(key, state.pool)
        state = jax.tree.map(lambda a, b: jnp.where(done, a, b), new_state, state)
        obs = jnp.where(done, new_obs, next_obs)
        step = EnvStep(obs=obs, reward=reward, terminated=terminated, truncated=truncated, next_obs=next_obs,
                       valid=jnp.ones((), bool), episode_end=done, raw_reward=reward)
        return state, step

    def play(self, act_fn: Any, slots: Optional[jax.Array] = None, gamma: float = 1.0) -> MaskedImageEpisodes:
        """One episode on each image `indices[slots]` (all K by default), actions from `act_fn`.

        How the authors measure an agent's train and test performance (`run_test` in their
        cifar_ddqn.py: the greedy policy, one episode per image): e.g. with a Q network,
        `act_fn = lambda obs: jnp.argmax(q_fn(params, obs * env.obs_scale))`.

        Args:
          act_fn: obs [H, W, 1 + C] float32 (environment units) → action () int32; traced, vmapped
            over the images.
          slots: [K] positions in `indices` (default: all of them).
          gamma: discount of `discounted_return`.
        Returns a `MaskedImageEpisodes` with [K] fields; accuracy = `correct.mean()`.
        """
        slots = jnp.arange(self.num_images) if slots is None else jnp.asarray(slots, jnp.int32)

        def one(slot):
            state, obs = self.reset_to(slot)

            def body(carry, _):
                state, obs, done, ret, disc, power, correct, length = carry
                state2, obs2, r, term, trunc = self.transition(state, act_fn(obs))
                live = ~done
                carry = (state2, obs2, done | term | trunc, ret + jnp.where(live, r, 0.0),
                         disc + jnp.where(live, power * r, 0.0), power * gamma, correct | (live & term),
                         length + live.astype(jnp.int32))
                return carry, None

            z = jnp.zeros((), jnp.float32)
            init = (state, obs, jnp.zeros((), bool), z, z, jnp.ones((), jnp.float32), jnp.zeros((), bool),
                    jnp.zeros((), jnp.int32))
            (state, _, _, ret, disc, _, correct, length), _ = jax.lax.scan(body, init, None, length=self.max_steps)
            return MaskedImageEpisodes(state.image_index, ret, disc, correct, length)

        return jax.vmap(one)(slots)
