"""Measurements along trajectories: loss change, interference and stiffness by temporal offset, and the
singular-value spread of a representation (Bengio, Pineau & Precup 2020, §5, §5.1, App. D).

Bengio et al. 2020, §5: "we evaluate the expected TD loss difference [...] and measure the difference in
pointwise TD loss for states surrounding the state used for the update (i.e. states with a temporal
offset of ± 30 in the replay buffer trajectories)" (Figs 3, 4, 10, 11, 14); §5.1, Fig. 5: "Cosine
similarity between gradients at S_t (offset x = 0) and the gradients at the neighboring states in the
replay buffer"; App. D.1, Figs 12, 13: "the singular values of the last hidden layer's matrix".

Data layout. The functions are independent of any buffer: an update sample is one example (a pytree,
e.g. a `tdjax.train.replay.Transition`), its temporal neighbours come as the same pytree with leaves
[N, W, ...], W = 2X + 1, offset x = −X..X at index x + X (index X is the update sample itself), and a
bool mask [N, W] says which neighbours exist: false where t + x leaves the episode or the buffer
(`tdjax.train.replay.neighbours` returns exactly this). An update sample at an episode edge is valid:
its missing neighbours are masked, and an offset no sample reaches has a NaN mean (count 0).

Losses are `loss_fn(params, example) -> scalar` for ONE example (vmapped here). `eval_loss_fn` is the
loss measured at the neighbours; Bengio et al. update with one objective and measure another (Fig. 3
trains on L_MC, L_reg, L_TD* and measures "the difference in pointwise TD loss (L_QL)").
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp
import optax

from tdjax._src.gradients import _check_chunk_size, _check_scalar_fn, _map_examples, per_example_grads
from tdjax._src.validation import leading_dim

__all__ = [
    "OffsetProfile",
    "SingularValueSpread",
    "loss_change_by_offset",
    "interference_by_offset",
    "stiffness_by_offset",
    "singular_value_spread",
]

PyTree = Any
LossFn = Callable[[PyTree, PyTree], chex.Array]

_PRECISION = jax.lax.Precision.HIGHEST
_UPDATES = ("per_sample", "batch")


class OffsetProfile(NamedTuple):
    """A measurement between update samples s_t and their neighbours s_{t+x}, x = −X..X."""

    offsets: chex.Array  # shape=[W], int32. x = −X..X.
    mean: chex.Array  # shape=[W]. Average over the unmasked update samples (NaN where count is 0).
    per_sample: chex.Array  # shape=[N, W]. The measurement per update sample and offset; 0 where masked.
    count: chex.Array  # shape=[W], int32. Unmasked update samples per offset.


class SingularValueSpread(NamedTuple):
    """Singular values of a feature matrix Φ [B, D] (Bengio et al. 2020, App. D.1, Figs 12, 13)."""

    singular_values: chex.Array  # shape=[min(B, D)]. σᵢ(Φ)/√B, descending.
    relative: chex.Array  # shape=[min(B, D)]. σᵢ/σ₁ (1 first; NaN if Φ = 0).
    num_above: chex.Array  # shape=(), int32. #{i: σᵢ > tol·σ₁}, where the spectrum cuts off.
    spread: chex.Array  # shape=(), the sum of the normalised spectrum, Σᵢ σᵢ/√B (the area the figures shade).


# ----------------------------------------------------------------------------------------------------
# Checks (trace time).


def _window(neighbours: PyTree, mask: chex.Array, fn_name: str) -> tuple[int, int]:
    """(N, W) from the mask, checked against every neighbour leaf; W must be odd (x = −X..X)."""
    mask = jnp.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{fn_name}: `mask` must be [N, 2X + 1] (update samples × offsets), got shape {mask.shape}.")
    if mask.dtype != jnp.bool_:
        raise TypeError(f"{fn_name}: `mask` must be bool (True where the neighbour exists), got {mask.dtype}.")
    n, w = mask.shape
    if w % 2 == 0 or w < 3:
        raise ValueError(
            f"{fn_name}: `mask` has {w} offsets; it needs an odd window 2X + 1 ≥ 3, offsets −X..X with the "
            "update sample at the centre (X ≥ 1; a window of 0 neighbours measures nothing)."
        )
    for path, leaf in jax.tree_util.tree_flatten_with_path(neighbours)[0]:
        if tuple(jnp.shape(leaf)[:2]) != (n, w):
            raise ValueError(
                f"{fn_name}: `neighbours` leaf {jax.tree_util.keystr(path) or '<root>'} has shape "
                f"{jnp.shape(leaf)}; every leaf must start with [N, W] = {(n, w)} like `mask`."
            )
    return n, w


def _check_update_batch(update_batch: PyTree, neighbours: PyTree, n: int, fn_name: str) -> None:
    k = leading_dim(update_batch, "update_batch")
    if k != n:
        raise ValueError(f"{fn_name}: `update_batch` has {k} examples but `mask` has N = {n} rows.")
    sa, sb = jax.tree.structure(update_batch), jax.tree.structure(neighbours)
    if sa != sb:  # type: ignore[operator]
        raise ValueError(f"{fn_name}: `update_batch` and `neighbours` differ in pytree structure:\n{sa}\nvs\n{sb}")
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(update_batch)[0], jax.tree.leaves(neighbours)):
        if jnp.shape(a)[1:] != jnp.shape(b)[2:]:
            raise ValueError(
                f"{fn_name}: `update_batch` and `neighbours` differ at {jax.tree_util.keystr(path)}: per-example "
                f"shape {jnp.shape(a)[1:]} vs {jnp.shape(b)[2:]}."
            )


def _one_example(batch: PyTree) -> PyTree:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x)[1:], jnp.result_type(x)), batch)


def _check_losses(loss_fn, eval_loss_fn, params, update_batch, fn_name) -> LossFn:
    spec = _one_example(update_batch)
    _check_scalar_fn(loss_fn, (params, spec), fn_name, "loss_fn")
    if eval_loss_fn is None:
        return loss_fn
    _check_scalar_fn(eval_loss_fn, (params, spec), fn_name, "eval_loss_fn")
    return eval_loss_fn


def _profile(values: chex.Array, mask: chex.Array) -> OffsetProfile:
    w = mask.shape[1]
    x = w // 2
    values = jnp.where(mask, values, jnp.zeros((), values.dtype))
    count = jnp.sum(mask, axis=0, dtype=jnp.int32)
    mean = jnp.sum(values, axis=0) / count.astype(values.dtype)  # NaN where count = 0: no data there
    return OffsetProfile(offsets=jnp.arange(-x, x + 1, dtype=jnp.int32), mean=mean, per_sample=values, count=count)


def _flat_eval(eval_loss_fn: LossFn, params: PyTree, window: PyTree) -> chex.Array:
    """eval_loss_fn at each of the W neighbours of ONE update sample (leaves [W, ...]) -> [W]."""
    return jax.vmap(lambda ex: eval_loss_fn(params, ex))(window)


# ----------------------------------------------------------------------------------------------------
# Loss change after one real optimizer step (Bengio's "gain").


def loss_change_by_offset(
    loss_fn: LossFn,
    params: PyTree,
    optimizer: optax.GradientTransformation,
    opt_state: optax.OptState,
    update_batch: PyTree,
    neighbours: PyTree,
    mask: chex.Array,
    *,
    eval_loss_fn: Optional[LossFn] = None,
    update: str = "per_sample",
    chunk_size: Optional[int] = None,
) -> OffsetProfile:
    """Pointwise loss change at the temporal neighbours of an update sample (Bengio et al. 2020, §5).

    After ONE real optimizer step θ → θ′ on the update sample s_t (the optimizer's own update rule and
    state, e.g. Adam's moments, as in training):

      gain(t, x) = J_θ(s_{t+x}) − J_θ′(s_{t+x}),      x = −X..X,

    averaged per offset over the update samples whose neighbour t + x exists (`mask`). Positive means the
    update lowered the loss at the neighbour (constructive interference). The sign follows Bengio et al.'s
    released code (`gain = loss_pre − loss_post`, interference_and_generalization_in_td,
    atari_experiments/atari_regress.py, `Measures.post`), which is also the sign of the first-order
    expansion J_θ − J_θ′ ≈ α∇J(s_{t+x})ᵀ∇J(s_t) = αρ (App. A eq. 26): `interference_by_offset` is its
    first-order counterpart for SGD.

    Which step. `update="per_sample"` (default) takes, for each update sample separately, the step on
    that sample alone (`jax.grad` of `loss_fn` at s_t, `optimizer.update(g, opt_state, params)`),
    vmapped over the N samples: gain(t, x) is then the effect of updating on s_t only, as the paper's
    text describes it. `update="batch"` takes one step on the mean loss over all N update samples and
    measures every sample's neighbours after it: that is what the released code does (one minibatch
    step of 32, the near-state losses taken before and after it), and what a training loop's own step
    gives for free.

    Args:
      loss_fn: `loss_fn(params, example) -> scalar`, the update objective for ONE example (close a TD
        loss over its target network's parameters).
      params: θ.
      optimizer: an optax `GradientTransformation`.
      opt_state: its state at θ (the real one, so Adam/RMSProp steps are the ones training takes).
      update_batch: pytree of the N update samples s_t (leading axis N).
      neighbours: the same pytree with leaves [N, W, ...], W = 2X + 1, index x + X holding s_{t+x}.
      mask: [N, W] bool, True where s_{t+x} is in s_t's episode and in the buffer. An update sample at an
        episode edge is valid; its missing neighbours are simply masked.
      eval_loss_fn: the loss measured at the neighbours (default: `loss_fn`); Fig. 3 measures the TD loss
        L_QL after regression updates.
      update: "per_sample" or "batch", see above.
      chunk_size: with "per_sample", at most this many update samples (each with its W neighbours) at
        once; None vmaps all N. Memory is O(chunk · (P + W · activations)).

    Returns:
      `OffsetProfile(offsets, mean, per_sample, count)`; `per_sample[i, x + X]` = gain(tᵢ, x).
    """
    fn_name = "loss_change_by_offset"
    n, w = _window(neighbours, mask, fn_name)
    _check_update_batch(update_batch, neighbours, n, fn_name)
    _check_chunk_size(chunk_size, fn_name)
    if update not in _UPDATES:
        raise ValueError(f"{fn_name}: `update` must be one of {_UPDATES}, got {update!r}.")
    if not hasattr(optimizer, "update"):
        raise TypeError(f"{fn_name}: `optimizer` must be an optax GradientTransformation, got {type(optimizer)}.")
    eval_fn = _check_losses(loss_fn, eval_loss_fn, params, update_batch, fn_name)

    def stepped(g):
        updates, _ = optimizer.update(g, opt_state, params)
        return optax.apply_updates(params, updates)

    before = jax.vmap(lambda win: _flat_eval(eval_fn, params, win))(neighbours)  # [N, W]
    if update == "batch":
        g = jax.grad(lambda p: jnp.mean(jax.vmap(lambda ex: loss_fn(p, ex))(update_batch)))(params)
        new = stepped(g)
        after = jax.vmap(lambda win: _flat_eval(eval_fn, new, win))(neighbours)
    else:
        grad_fn = jax.grad(loss_fn)

        def one(sample_and_window):
            sample, window = sample_and_window
            return _flat_eval(eval_fn, stepped(grad_fn(params, sample)), window)

        after = _map_examples(one, (update_batch, neighbours), chunk_size)
    return _profile(before - after, jnp.asarray(mask))


# ----------------------------------------------------------------------------------------------------
# First order: interference ρ and stiffness between s_t and s_{t+x}.


def interference_by_offset(
    loss_fn: LossFn,
    params: PyTree,
    update_batch: PyTree,
    neighbours: PyTree,
    mask: chex.Array,
    *,
    eval_loss_fn: Optional[LossFn] = None,
    chunk_size: Optional[int] = None,
    method: str = "auto",
) -> OffsetProfile:
    """Loss interference ρ between each update sample and its temporal neighbours (Bengio et al. 2020, eq. 1).

      ρ(t, x) = ∇θJ(s_t)ᵀ ∇θJ_eval(s_{t+x})

    the first-order counterpart of `loss_change_by_offset`: an SGD step of size α on s_t changes the loss
    at s_{t+x} by J_θ − J_θ′ = αρ(t, x) + O(α²) (App. A eq. 26). The update samples' gradients come from
    `tdjax.per_example_grads`; each neighbour's inner product with them is one forward-mode directional
    derivative (`jax.jvp` of J_eval along ∇J(s_t)), so no [N·W, P] matrix of neighbour gradients is held.

    Args:
      loss_fn, params, update_batch, neighbours, mask, eval_loss_fn: as in `loss_change_by_offset`.
      chunk_size: at most this many update samples (with their W neighbours) at once.
      method: gradient back-end for the update samples' gradients, see `tdjax.per_example_grads`.

    Returns:
      `OffsetProfile` of ρ; at x = 0 (with eval_loss_fn = loss_fn) it is ‖∇J(s_t)‖².
    """
    fn_name = "interference_by_offset"
    n, w = _window(neighbours, mask, fn_name)
    _check_update_batch(update_batch, neighbours, n, fn_name)
    _check_chunk_size(chunk_size, fn_name)
    eval_fn = _check_losses(loss_fn, eval_loss_fn, params, update_batch, fn_name)
    g = per_example_grads(loss_fn, params, update_batch, chunk_size=chunk_size, method=method)

    def one(g_and_window):
        g_t, window = g_and_window
        directional = lambda ex: jax.jvp(lambda p: eval_fn(p, ex), (params,), (g_t,))[1]  # noqa: E731
        return jax.vmap(directional)(window)

    rho = _map_examples(one, (g, neighbours), chunk_size)
    return _profile(rho, jnp.asarray(mask))


def stiffness_by_offset(
    loss_fn: LossFn,
    params: PyTree,
    update_batch: PyTree,
    neighbours: PyTree,
    mask: chex.Array,
    *,
    eval_loss_fn: Optional[LossFn] = None,
    sign: bool = False,
    chunk_size: Optional[int] = None,
    method: str = "auto",
) -> OffsetProfile:
    """Gradient cosine between each update sample and its temporal neighbours (Bengio et al. 2020, Fig. 5).

      S(t, x) = ∇J(s_t)ᵀ∇J(s_{t+x}) / (‖∇J(s_t)‖ ‖∇J(s_{t+x})‖)      (sign=True: sign of the numerator)

    Fig. 5: "Cosine similarity between gradients at S_t (offset x = 0) and the gradients at the
    neighboring states in the replay buffer". S(t, 0) = 1. A pair where either gradient is exactly zero
    has no cosine: NaN in `per_sample` (unless masked) and hence in that offset's mean; filter such
    samples out first (e.g. terminal states of a loss that ignores them). Per-example gradients come
    from `tdjax.per_example_grads`, W neighbours of at most `chunk_size` update samples at a time.

    Args:
      loss_fn, params, update_batch, neighbours, mask, eval_loss_fn: as in `loss_change_by_offset`
        (`eval_loss_fn` is the loss differentiated at the neighbours).
      sign: the sign stiffness instead of the cosine.
      chunk_size: at most this many update samples (with their W neighbours) at once. Memory holds
        chunk · (W + 1) gradients of P parameters.
      method: gradient back-end, see `tdjax.per_example_grads`.

    Returns:
      `OffsetProfile` of S, entries in [−1, 1].
    """
    fn_name = "stiffness_by_offset"
    n, w = _window(neighbours, mask, fn_name)
    _check_update_batch(update_batch, neighbours, n, fn_name)
    _check_chunk_size(chunk_size, fn_name)
    eval_fn = _check_losses(loss_fn, eval_loss_fn, params, update_batch, fn_name)
    g = per_example_grads(loss_fn, params, update_batch, chunk_size=chunk_size, method=method)

    def one(g_and_window):
        g_t, window = g_and_window
        g_nb = per_example_grads(eval_fn, params, window, method=method)  # leaves [W, ...]
        flat = lambda a: jnp.reshape(a, (a.shape[0], -1))  # noqa: E731
        dots = sum(jax.tree.leaves(jax.tree.map(
            lambda gn, gt: jnp.matmul(flat(gn), jnp.reshape(gt, (-1,)), precision=_PRECISION), g_nb, g_t)))
        if sign:
            return jnp.sign(dots)
        nb_norm = jnp.sqrt(sum(jax.tree.leaves(jax.tree.map(lambda gn: jnp.sum(flat(gn) ** 2, axis=1), g_nb))))
        t_norm = jnp.sqrt(sum(jax.tree.leaves(jax.tree.map(lambda gt: jnp.sum(gt**2), g_t))))
        return dots / (nb_norm * t_norm)

    s = _map_examples(one, (g, neighbours), chunk_size)
    return _profile(s, jnp.asarray(mask))


# ----------------------------------------------------------------------------------------------------
# Singular values of the last hidden layer (App. D.1).


def singular_value_spread(features: chex.Array, *, tol: float = 1e-3) -> SingularValueSpread:
    """Spectrum of the last hidden layer's features over a batch (Bengio et al. 2020, App. D.1, Figs 12, 13).

    App. D.1: "the spread of singular values after 100k minibatch updates [...] larger λ values yield
    larger singular values and a wider distribution [...] all runs [...] have a dramatic cutoff in
    singular values after about the 200th SV". For features Φ ∈ ℝ^{B×D} (rows: states, columns: units)
    this returns the singular values σ₁ ≥ … ≥ σ_min(B,D) of Φ divided by √B, i.e. the square roots of
    the eigenvalues of the uncentred second-moment matrix ΦᵀΦ/B. The paper plots the sorted spectrum
    without stating a normalisation; dividing by √B keeps the curve independent of the batch size, and
    the magnitudes are kept (not divided by σ₁) because the paper compares them across runs ("larger
    singular values"). `relative` (σᵢ/σ₁) and `num_above` (the cutoff index, σᵢ > tol·σ₁) are the shape
    summaries; `spread` = Σᵢ σᵢ/√B (the nuclear norm over √B) summarises both.

    Args:
      features: [B, D] last-hidden-layer activations over a batch of B states.
      tol: relative threshold for `num_above`, in (0, 1).

    Returns:
      `SingularValueSpread(singular_values, relative, num_above, spread)`.
    """
    features = jnp.asarray(features)
    if features.ndim != 2:
        raise ValueError(
            f"singular_value_spread: `features` must be [B, D] (states × hidden units), got shape {features.shape}. "
            "Flatten the layer's output per state first."
        )
    if isinstance(tol, (int, float)) and not 0.0 < tol < 1.0:
        raise ValueError(f"singular_value_spread: `tol` must be in (0, 1), got {tol!r}.")
    if not jnp.issubdtype(features.dtype, jnp.floating):
        features = features.astype(jnp.float32)
    s = jnp.linalg.svd(features, compute_uv=False) / jnp.sqrt(jnp.asarray(features.shape[0], features.dtype))
    rel = s / s[0]
    return SingularValueSpread(
        singular_values=s, relative=rel, num_above=jnp.sum(s > tol * s[0], dtype=jnp.int32), spread=jnp.sum(s)
    )
