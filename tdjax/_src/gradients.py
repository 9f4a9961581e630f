"""Per-example gradients, interference, and how interference evolves under an update.

Bengio, Pineau & Precup 2020, "Interference and Generalization in Temporal Difference Learning":
loss interference ρ (eq. 1), function interference ρ̄ (eq. 8, the empirical NTK), stiffness (Fort et
al. 2019, §5.1), the derivative ρ′ of interference along an update (eq. 14 / App. A eq. 36), its
three-term decomposition for regression and TD (eq. 16, 17) and the TD-error sign variance (§5.2).

Conventions:
  * A scalar network output is `f(params, x)` for ONE input; a loss is `loss_fn(params, example)` for
    ONE example. Batches are pytrees whose leaves share a leading example axis k.
  * For a bootstrapped (TD) loss whose target should move with θ, write the loss with the target's
    parameters as a third argument, `loss_fn(params, example, target_params)`, and pass
    `moving_target=True` to `interference_derivative`: the semi-gradient is the gradient w.r.t. the
    first argument only, and the update θ′ = θ − α∇J(B) is applied to both arguments. A
    `jax.lax.stop_gradient` on the target inside a two-argument loss instead freezes the target at θ:
    stop_gradient also zeroes forward-mode tangents, so its movement is not seen.
  * Nothing here is jitted; call the functions inside your own `jax.jit`. `chunk_size` bounds memory by
    processing at most that many examples at a time (`jax.lax.map(..., batch_size=chunk_size)`).
  * Non-finite values are propagated, never masked: a NaN or inf in any gradient shows up in every
    entry that uses it. Wrap a jitted call in `jax.experimental.checkify.checkify(...,
    errors=checkify.float_checks)` to get an error (`err.throw()`) where the first NaN or division by
    zero happens.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp

from tdjax._src.layerwise import layerwise_gram, layerwise_per_example_grads
from tdjax._src.validation import check_params, check_scalar, eval_on_example, leading_dim

__all__ = [
    "InterferenceDerivativeTerms",
    "per_example_grads",
    "gram_matrix",
    "loss_interference",
    "stiffness",
    "interference_derivative",
    "interference_derivative_terms",
    "td_sign_variance",
]

PyTree = Any
LossFn = Callable[..., chex.Array]

# float32 inner products of long gradient vectors must not drop to TF32/bf16 on accelerators.
_PRECISION = jax.lax.Precision.HIGHEST


class InterferenceDerivativeTerms(NamedTuple):
    """The three additive terms of ρ′ = −r1 − r2 − r3 (Bengio et al. 2020, eq. 16 and 17)."""

    r1: chex.Array  # shape=[k_a, k_b]. δ_B² ρ̄_AB (ρ̄_AB − ⟨∇y_A, ∇f_B⟩).
    r2: chex.Array  # shape=[k_a, k_b]. δ_A δ_B ρ̄_AB (ρ̄_BB − ⟨∇y_B, ∇f_B⟩).
    r3: chex.Array  # shape=[k_a, k_b]. δ_A δ_B² ∇f_Bᵀ (H̄_A ∇f_B + H̄_B ∇f_A).


# ----------------------------------------------------------------------------------------------------
# Argument checks (trace time).


def _check_chunk_size(chunk_size: Optional[int], fn_name: str) -> None:
    if chunk_size is None:
        return
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{fn_name}: `chunk_size` must be a positive int or None, got {chunk_size!r}.")


def _example_spec(batch: PyTree) -> PyTree:
    """Shape/dtype of one example of `batch` (the leading axis dropped)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x)[1:], jnp.result_type(x)), batch)


def _check_scalar_fn(fn: Callable, args: tuple, fn_name: str, fn_arg: str, batch_arg: str = "batch") -> None:
    """Traces `fn(*args)` abstractly and raises, naming `fn_arg`, unless it returns one scalar."""
    check_params(args[0], fn_name)
    out = eval_on_example(fn, args, fn_name, fn_arg, batch_arg)
    leaves = jax.tree.leaves(out)
    if len(leaves) != 1:
        raise ValueError(
            f"{fn_name}: `{fn_arg}` must return a single scalar for one example, got {out}. "
            "Drop auxiliary outputs (e.g. with a lambda) before passing it."
        )
    check_scalar(leaves[0], fn_name, fn_arg)


def _check_pair(a: PyTree, b: PyTree, name_a: str, name_b: str) -> None:
    """Two batches fed to the same function: same structure, same per-example shapes."""
    sa, sb = jax.tree.structure(a), jax.tree.structure(b)
    if sa != sb:  # type: ignore[operator]
        raise ValueError(f"`{name_a}` and `{name_b}` have different pytree structures:\n{sa}\nvs\n{sb}")
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
        if jnp.shape(x)[1:] != jnp.shape(y)[1:]:
            raise ValueError(
                f"`{name_a}` and `{name_b}` differ at {jax.tree_util.keystr(path)}: per-example shape "
                f"{jnp.shape(x)[1:]} vs {jnp.shape(y)[1:]}."
            )


# ----------------------------------------------------------------------------------------------------
# Small tree algebra on stacked (per-example) pytrees.


def _map_examples(fn: Callable, xs: PyTree, chunk_size: Optional[int]) -> PyTree:
    """`fn` over the leading axis of `xs`: one vmap, or chunks of `chunk_size` examples."""
    if chunk_size is None:
        return jax.vmap(fn)(xs)
    return jax.lax.map(fn, xs, batch_size=chunk_size)


def _flat(x: chex.Array) -> chex.Array:
    return jnp.reshape(x, (x.shape[0], -1))


def _tree_gram(ga: PyTree, gb: PyTree) -> chex.Array:
    """Σ_l G_a,l G_b,lᵀ over the leaves of two stacked pytrees: [k_a, k_b]."""
    blocks = jax.tree.map(lambda a, b: jnp.matmul(_flat(a), _flat(b).T, precision=_PRECISION), ga, gb)
    return sum(jax.tree.leaves(blocks))


def _tree_rowdot(ga: PyTree, gb: PyTree) -> chex.Array:
    """[k] inner products of matching rows of two stacked pytrees with the same k."""
    rows = jax.tree.map(lambda a, b: jnp.sum(_flat(a) * _flat(b), axis=1), ga, gb)
    return sum(jax.tree.leaves(rows))


# ----------------------------------------------------------------------------------------------------
# Per-example gradients.


def _grads(
    fn: Callable[[PyTree, PyTree], chex.Array],
    params: PyTree,
    batch: PyTree,
    chunk_size: Optional[int],
    method: str,
    fn_name: str,
    fn_arg: str,
    batch_arg: str,
) -> PyTree:
    """Checked per-example ∇θ fn(θ, xᵢ). The one place where gradient back-ends are dispatched."""
    k = leading_dim(batch, batch_arg)
    _check_chunk_size(chunk_size, fn_name)
    _check_scalar_fn(fn, (params, _example_spec(batch)), fn_name, fn_arg, batch_arg)
    _check_method(method, fn_name)
    if method == "vmap":
        grad_fn = jax.grad(fn)
        return _map_examples(lambda ex: grad_fn(params, ex), batch, chunk_size)
    strict = method == "layerwise"
    return _map_chunks(lambda b: layerwise_per_example_grads(fn, params, b, strict=strict), batch, k, chunk_size)


def _map_chunks(batch_fn: Callable, xs: PyTree, k: int, chunk_size: Optional[int]) -> PyTree:
    """`batch_fn` ([c] examples -> [c, ...] pytree) over chunks of `chunk_size` examples: [k, ...]."""
    if chunk_size is None or chunk_size >= k:
        return batch_fn(xs)
    n, rest = divmod(k, chunk_size)
    head = jax.tree.map(lambda x: x[: n * chunk_size].reshape((n, chunk_size) + x.shape[1:]), xs)
    out = jax.tree.map(lambda x: x.reshape((n * chunk_size,) + x.shape[2:]), jax.lax.map(batch_fn, head))
    if rest:
        tail = batch_fn(jax.tree.map(lambda x: x[n * chunk_size :], xs))
        out = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), out, tail)
    return out


_METHODS = ("auto", "vmap", "layerwise")


def _check_method(method: str, fn_name: str) -> None:
    if method not in _METHODS:
        raise ValueError(f"{fn_name}: unknown `method` {method!r}; supported: {', '.join(map(repr, _METHODS))}.")


def per_example_grads(
    loss_fn: Callable[[PyTree, PyTree], chex.Array],
    params: PyTree,
    batch: PyTree,
    *,
    chunk_size: Optional[int] = None,
    method: str = "auto",
) -> PyTree:
    """Per-example gradients ∇θ J(xᵢ; θ), i = 1..k, stacked on a new leading axis.

    Args:
      loss_fn: `loss_fn(params, example) -> scalar` for ONE example.
      params: parameter pytree θ.
      batch: pytree whose leaves all have a leading axis of size k (one entry per example).
      chunk_size: if given, at most this many examples are differentiated at once (a `jax.lax.map`
        over chunks, one batched pass each), bounding activation memory.
      method: gradient back-end. "auto" (default): one batched forward/backward pass per chunk, with
        the per-example weight gradients of every dot_general/conv_general_dilated whose weight is a
        parameter formed from the layer's inputs and output cotangents (`tdjax._src.layerwise`, any
        network library), and the other parameter leaves (biases, normalisation scales, embeddings)
        by exact per-example copies in the same pass. "layerwise": the same, but raises
        `LayerwiseUnsupported` (naming the parameter and operation) for a parameter used other than as
        a layer weight or bias. "vmap": `jax.vmap(jax.grad(loss_fn))`. All give the same gradients.

    Returns:
      A pytree like `params` whose leaves have shape [k, *leaf.shape].

    Raises:
      ValueError: `batch` leaves disagree on k, `loss_fn` does not return a scalar, or a bad
        `chunk_size` / `method`.
    """
    return _grads(loss_fn, params, batch, chunk_size, method, "per_example_grads", "loss_fn", "batch")


# ----------------------------------------------------------------------------------------------------
# Interference at a point: ρ (eq. 1), ρ̄ (eq. 8), stiffness.


def _pairwise_grads(fn, params, batch_a, batch_b, chunk_size, method, fn_name, fn_arg, names):
    ga = _grads(fn, params, batch_a, chunk_size, method, fn_name, fn_arg, names[0])
    if batch_b is None:
        return ga, ga
    _check_pair(batch_a, batch_b, *names)
    gb = _grads(fn, params, batch_b, chunk_size, method, fn_name, fn_arg, names[1])
    return ga, gb


def _pairwise_gram(ga: PyTree, gb: PyTree, symmetric: bool) -> chex.Array:
    gram = _tree_gram(ga, gb)
    # Blocked matmuls need not return A·Aᵀ exactly symmetric; a symmetric input gets a symmetric output.
    return 0.5 * (gram + gram.T) if symmetric else gram


def gram_matrix(
    f: Callable[[PyTree, PyTree], chex.Array],
    params: PyTree,
    xs_a: PyTree,
    xs_b: Optional[PyTree] = None,
    *,
    chunk_size: Optional[int] = None,
    method: str = "auto",
) -> chex.Array:
    """Function interference ρ̄ (Bengio et al. 2020, eq. 8): the empirical NTK of a scalar output.

      ρ̄_ij = ∂f(aᵢ)/∂θᵀ ∂f(bⱼ)/∂θ = Σ_l J_l(a)ᵢ · J_l(b)ⱼ

    summed leaf by leaf over the parameter pytree (no flat [k, P] Jacobian is concatenated).
    For a network with several outputs, reduce them to a scalar first, e.g. with
    `tdjax.scalar_output_fn(apply_fn, "max")` (the papers' choice).

    Args:
      f: `f(params, x) -> scalar` for ONE input x.
      params: parameter pytree θ.
      xs_a: pytree of k_a inputs (leading axis k_a).
      xs_b: pytree of k_b inputs; None means xs_b = xs_a (the result is then exactly symmetric, as it
        is for `loss_interference` and `stiffness` with batch_b=None).
      chunk_size: per-example gradients are computed at most `chunk_size` at a time. Memory holds
        the per-example gradients, O((k_a + k_b)·P) for P parameters.
      method: gradient back-end, see `per_example_grads`.

    Returns:
      [k_a, k_b] matrix ρ̄.
    """
    if method != "vmap" and chunk_size is None:
        _check_method(method, "gram_matrix")
        leading_dim(xs_a, "xs_a")
        if xs_b is not None:
            leading_dim(xs_b, "xs_b")
            _check_pair(xs_a, xs_b, "xs_a", "xs_b")
        _check_scalar_fn(f, (params, _example_spec(xs_a)), "gram_matrix", "f", "xs_a")
        gram = layerwise_gram(f, params, xs_a, xs_b, strict=method == "layerwise")
        return 0.5 * (gram + gram.T) if xs_b is None else gram
    ga, gb = _pairwise_grads(f, params, xs_a, xs_b, chunk_size, method, "gram_matrix", "f", ("xs_a", "xs_b"))
    return _pairwise_gram(ga, gb, xs_b is None)


def loss_interference(
    loss_fn: Callable[[PyTree, PyTree], chex.Array],
    params: PyTree,
    batch_a: PyTree,
    batch_b: Optional[PyTree] = None,
    *,
    chunk_size: Optional[int] = None,
    method: str = "auto",
) -> chex.Array:
    """Loss interference ρ (Bengio et al. 2020, eq. 1): ρ_ij = ∇θJ(aᵢ)ᵀ ∇θJ(bⱼ).

    ρ_ij > 0 means a gradient step on bⱼ lowers the loss at aᵢ (to first order, App. A eq. 26:
    J_θ′(A) − J_θ(A) ≈ −α ∇J(A)ᵀ∇J(B)). For a TD loss, the semi-gradient is whatever `loss_fn`
    differentiates: stop the target's gradient inside it, or close a three-argument loss over the
    current parameters, `lambda p, ex: loss3(p, ex, params)`.

    Args:
      loss_fn: `loss_fn(params, example) -> scalar` for ONE example.
      params: parameter pytree θ.
      batch_a: pytree of k_a examples.
      batch_b: pytree of k_b examples; None means batch_a.
      chunk_size, method: see `per_example_grads`.

    Returns:
      [k_a, k_b] matrix ρ.
    """
    names = ("loss_interference", "loss_fn", ("batch_a", "batch_b"))
    ga, gb = _pairwise_grads(loss_fn, params, batch_a, batch_b, chunk_size, method, *names)
    return _pairwise_gram(ga, gb, batch_b is None)


def stiffness(
    loss_fn: Callable[[PyTree, PyTree], chex.Array],
    params: PyTree,
    batch_a: PyTree,
    batch_b: Optional[PyTree] = None,
    *,
    sign: bool = False,
    chunk_size: Optional[int] = None,
    method: str = "auto",
) -> chex.Array:
    """Gradient stiffness (Fort et al. 2019; Bengio et al. 2020, §5.1, Fig. 5).

      cosine:  S_ij = ∇J(aᵢ)ᵀ∇J(bⱼ) / (‖∇J(aᵢ)‖ ‖∇J(bⱼ)‖)
      sign:    S_ij = sign(∇J(aᵢ)ᵀ∇J(bⱼ))

    Average the matrix over pairs for Fort et al.'s expectation. A pair where either gradient is
    exactly zero has no cosine and gives NaN (use `jnp.nanmean` to skip such pairs deliberately).

    Args:
      loss_fn, params, batch_a, batch_b, chunk_size, method: as in `loss_interference`.
      sign: return the sign stiffness instead of the cosine.

    Returns:
      [k_a, k_b] matrix with entries in [-1, 1] (or NaN, see above).
    """
    names = ("stiffness", "loss_fn", ("batch_a", "batch_b"))
    ga, gb = _pairwise_grads(loss_fn, params, batch_a, batch_b, chunk_size, method, *names)
    rho = _pairwise_gram(ga, gb, batch_b is None)
    if sign:
        return jnp.sign(rho)
    norm_a = jnp.sqrt(_tree_rowdot(ga, ga))
    norm_b = norm_a if batch_b is None else jnp.sqrt(_tree_rowdot(gb, gb))
    return rho / (norm_a[:, None] * norm_b[None, :])


# ----------------------------------------------------------------------------------------------------
# Evolution of interference: ρ′ (eq. 14, 36) and its terms (eq. 16, 17).


def _with_target(loss_fn: LossFn, moving_target: bool) -> Callable[[PyTree, PyTree, PyTree], chex.Array]:
    """The loss as L(θ, example, θ̄): prediction parameters θ, target parameters θ̄."""
    if moving_target:
        return loss_fn
    return lambda p, ex, t: loss_fn(p, ex)


def _second_directional(fn: Callable[[PyTree, PyTree, PyTree], chex.Array], params, ex, v) -> chex.Array:
    """vᵀ D[∇₁fn](θ) v with θ moving in both slots: d/dε ⟨∇₁fn(θ+εv, ex, θ+εv), v⟩ at ε = 0.

    Forward-over-forward: the inner jvp is ⟨∇₁fn, v⟩ (target slot held at t), the outer moves t.
    """

    def directional(t):
        return jax.jvp(lambda p: fn(p, ex, t), (t,), (v,))[1]

    return jax.jvp(directional, (params,), (v,))[1]


def _pair_matrix(pair_fn: Callable, batch_a: PyTree, batch_b: PyTree, vs_b: PyTree, chunk_size) -> chex.Array:
    """[k_a, k_b] matrix of pair_fn(a_i, b_j, v_j), mapped over b (chunked) and vmapped over a."""

    def column(b_and_v):
        ex_b, v = b_and_v
        return jax.vmap(lambda ex_a: pair_fn(ex_a, ex_b, v))(batch_a)

    return _map_examples(column, (batch_b, vs_b), chunk_size).T


def interference_derivative(
    loss_fn: LossFn,
    params: PyTree,
    batch_a: PyTree,
    batch_b: PyTree,
    *,
    moving_target: bool = False,
    chunk_size: Optional[int] = None,
) -> chex.Array:
    """ρ′: how interference changes along an update (Bengio et al. 2020, eq. 14; App. A eq. 31-36).

    With the update θ′ = θ − α∇J(bⱼ) on bⱼ (eq. 11),

      ρ′_ij = ∂/∂α [∇θ′J(aᵢ)ᵀ ∇θ′J(bⱼ)] at α = 0
            = −(∇J_Bᵀ H_A + ∇J_Aᵀ H_B) ∇J_B                          (eq. 14)
            = −∇θ(∇J_Bᵀ∇J_A) · ∇J_B                                  (eq. 36)

    with A = aᵢ, B = bⱼ and H = ∇θ²J. At α = 0, θ′ = θ, so the θ ≈ θ′ step of the paper is exact.
    Computed without Hessians: H_B∇J_B is one Hessian-vector product (jvp of grad) per bⱼ, and
    ∇J_BᵀH_A∇J_B is a forward-over-forward second directional derivative per pair, vmapped.

    Bootstrapped targets (eq. 17). With `moving_target=True`, `loss_fn(params, example,
    target_params)` takes the target's parameters separately; ∇J means the semi-gradient ∇₁ (w.r.t.
    `params` only, target_params = θ), and θ′ replaces θ in BOTH arguments, so the change of the
    bootstrap target r + γV_θ′(s′) under the update is included. H is then the Jacobian of the
    semi-gradient (not symmetric). A two-argument loss with `jax.lax.stop_gradient` on its target
    gives the frozen-target ρ′ instead (stop_gradient zeroes tangents too), as does closing over a
    fixed target network.

    Args:
      loss_fn: `loss_fn(params, example)`, or `loss_fn(params, example, target_params)` with
        `moving_target=True`; a scalar for ONE example. With a moving target, do not stop the
        target's gradient inside it.
      params: parameter pytree θ.
      batch_a: pytree of k_a examples A whose interference with B is tracked.
      batch_b: pytree of k_b examples B; column j is the update on bⱼ.
      moving_target: see above.
      chunk_size: at most `chunk_size` update examples bⱼ (each against all of batch_a) at once.

    Returns:
      [k_a, k_b] matrix ρ′.
    """
    fn_name = "interference_derivative"
    leading_dim(batch_a, "batch_a")
    leading_dim(batch_b, "batch_b")
    _check_pair(batch_a, batch_b, "batch_a", "batch_b")
    _check_chunk_size(chunk_size, fn_name)
    loss3 = _with_target(loss_fn, moving_target)
    try:
        _check_scalar_fn(loss3, (params, _example_spec(batch_a), params), fn_name, "loss_fn", "batch_a")
    except (TypeError, ValueError) as e:
        cause = e if isinstance(e, TypeError) else e.__cause__  # eval_on_example wraps the TypeError
        if not isinstance(cause, TypeError):
            raise
        form = "(params, example, target_params)" if moving_target else "(params, example)"
        raise ValueError(
            f"{fn_name}: calling `loss_fn` as loss_fn{form} failed ({cause}). With moving_target="
            f"{moving_target}, `loss_fn` must take {form}; see the docstring for the TD convention."
        ) from e

    def semi_grad(p, ex):
        return jax.grad(loss3)(p, ex, p)

    g_a = _map_examples(lambda ex: semi_grad(params, ex), batch_a, chunk_size)
    g_b = _map_examples(lambda ex: semi_grad(params, ex), batch_b, chunk_size)

    # H_B ∇J_B: derivative of the semi-gradient at bⱼ along its own update direction.
    def self_hvp(ex_and_v):
        ex, v = ex_and_v
        return jax.jvp(lambda p: semi_grad(p, ex), (params,), (v,))[1]

    h_b = _map_examples(self_hvp, (batch_b, g_b), chunk_size)
    # ∇J_Bᵀ H_A ∇J_B for every pair.
    quad = _pair_matrix(
        lambda ex_a, ex_b, v: _second_directional(loss3, params, ex_a, v), batch_a, batch_b, g_b, chunk_size
    )
    return -(quad + _tree_gram(g_a, h_b))


def interference_derivative_terms(
    value_fn: Callable[[PyTree, PyTree], chex.Array],
    target_fn: Callable[[PyTree, PyTree], chex.Array],
    params: PyTree,
    batch_a: PyTree,
    batch_b: PyTree,
    *,
    chunk_size: Optional[int] = None,
) -> InterferenceDerivativeTerms:
    """The terms r1, r2, r3 of ρ′ = −r1 − r2 − r3 for a squared loss (Bengio et al. 2020, eq. 16, 17).

    The loss is J = ½δ², δ = f − y, with prediction f = value_fn(θ, example) and target
    y = target_fn(θ, example); the update is the semi-gradient step θ′ = θ − α δ_B ∇f_B. Whatever
    θ-dependence `target_fn` has moves with the update (eq. 17): for TD(0),
    y = r + γ V_θ(s′) gives ∇y_A = γ∇f_A′. A target that ignores θ (regression, a frozen target
    network) gives ∇y = 0 and eq. 16. With ρ̄ = ∇fᵀ∇f (eq. 8) and H̄ = ∇θ²f:

      r1 = δ_B² ρ̄_AB (ρ̄_AB − ⟨∇y_A, ∇f_B⟩)        [TD: δ_B² ρ̄_AB (ρ̄_AB − γρ̄_A′B)]
      r2 = δ_A δ_B ρ̄_AB (ρ̄_BB − ⟨∇y_B, ∇f_B⟩)     [TD: δ_A δ_B ρ̄_AB (ρ̄_BB − γρ̄_B′B)]
      r3 = δ_A δ_B² ∇f_Bᵀ (H̄_A ∇f_B + H̄_B ∇f_A)

    r1 comes from the change of δ_A, r2 from the change of δ_B, r3 from the change of ρ̄_AB
    (App. A eq. 43-44, 56-59). They sum exactly to −ρ′ of `interference_derivative` for the loss
    `½(value_fn(θ, ex) − target_fn(θ̄, ex))²` with `moving_target=True` (θ ≈ θ′ is exact at α = 0).

    Reading of the paper: eq. 16 (and App. A eq. 48-49) print r2 with a factor 2,
    −2δ_Aδ_Bρ̄_ABρ̄_BB. Differentiating δ_B = f_B − y_B along the update gives −δ_Bρ̄_BB, once; the
    factor 2 comes from eq. 45, whose second term writes ∇J_A where the update direction ∇J_B
    belongs. Eq. 17 with γ = 0 has no factor 2, and the finite-difference tests agree with it, so r2
    is implemented without it.

    Args:
      value_fn: `value_fn(params, example) -> scalar` prediction f for ONE example (e.g. V(s) or
        Q(s, a)).
      target_fn: `target_fn(params, example) -> scalar` regression or bootstrap target y for ONE
        example; do not stop its gradient if it should move with the update.
      params: parameter pytree θ.
      batch_a: pytree of k_a examples A.
      batch_b: pytree of k_b examples B (the update examples).
      chunk_size: at most this many examples (or update examples bⱼ against all of A) at once.

    Returns:
      `InterferenceDerivativeTerms(r1, r2, r3)`, each [k_a, k_b].
    """
    fn_name = "interference_derivative_terms"
    leading_dim(batch_a, "batch_a")
    leading_dim(batch_b, "batch_b")
    _check_pair(batch_a, batch_b, "batch_a", "batch_b")
    _check_chunk_size(chunk_size, fn_name)
    spec = _example_spec(batch_a)
    _check_scalar_fn(value_fn, (params, spec), fn_name, "value_fn", "batch_a")
    _check_scalar_fn(target_fn, (params, spec), fn_name, "target_fn", "batch_a")

    def stats(ex):
        f, df = jax.value_and_grad(value_fn)(params, ex)
        y, dy = jax.value_and_grad(target_fn)(params, ex)
        return f - y, df, dy

    delta_a, df_a, dy_a = _map_examples(stats, batch_a, chunk_size)
    delta_b, df_b, dy_b = _map_examples(stats, batch_b, chunk_size)

    def self_hvp(ex_and_u):
        ex, u = ex_and_u
        return jax.jvp(lambda p: jax.grad(value_fn)(p, ex), (params,), (u,))[1]

    hf_b = _map_examples(self_hvp, (batch_b, df_b), chunk_size)  # H̄_B ∇f_B
    value3 = lambda p, ex, t: value_fn(p, ex)  # noqa: E731
    quad = _pair_matrix(  # ∇f_Bᵀ H̄_A ∇f_B
        lambda ex_a, ex_b, u: _second_directional(value3, params, ex_a, u), batch_a, batch_b, df_b, chunk_size
    )

    rho_bar = _tree_gram(df_a, df_b)
    rho_bar_bb = _tree_rowdot(df_b, df_b)[None, :]
    target_ab = _tree_gram(dy_a, df_b)
    target_bb = _tree_rowdot(dy_b, df_b)[None, :]
    d_a, d_b = delta_a[:, None], delta_b[None, :]
    r1 = d_b**2 * rho_bar * (rho_bar - target_ab)
    r2 = d_a * d_b * rho_bar * (rho_bar_bb - target_bb)
    r3 = d_a * d_b**2 * (quad + _tree_gram(df_a, hf_b))
    return InterferenceDerivativeTerms(r1=r1, r2=r2, r3=r3)


# ----------------------------------------------------------------------------------------------------
# §5.2: local incoherence of TD targets.


def td_sign_variance(td_errors: chex.Array, window: int = 5) -> chex.Array:
    """Variance of the sign of the TD error over sliding windows of consecutive steps (§5.2).

    Bengio et al. 2020, §5.2: "we measure the variance of the sign of the TD error along small
    windows (of length 5 here) in trajectories as a proxy of this local target incoherence". For
    window w and time t (population variance, sign(0) = 0):

      σ²_t = (1/w) Σ_{i=t}^{t+w−1} (sign δ_i − s̄_t)²,   s̄_t = (1/w) Σ_{i=t}^{t+w−1} sign δ_i

    Windows slide by one step; average the result (e.g. over time and trajectories) for the
    scalar of the paper's Fig. 6. Windows should not straddle episode boundaries: pass one
    trajectory segment per call (or per trailing index).

    Args:
      td_errors: [T, ...] TD errors δ_t, time on the leading axis; trailing axes (e.g. [T, B] for B
        trajectories) are independent.
      window: window length w (the paper uses 5), 1 ≤ w ≤ T.

    Returns:
      [T − w + 1, ...] sign variances, in [0, 1].
    """
    td_errors = jnp.asarray(td_errors)
    if td_errors.ndim < 1:
        raise ValueError("td_sign_variance: `td_errors` needs a leading time axis [T, ...], got a scalar.")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"td_sign_variance: `window` must be a positive int, got {window!r}.")
    num_steps = td_errors.shape[0]
    if num_steps < window:
        raise ValueError(
            f"td_sign_variance: `td_errors` has {num_steps} time steps, fewer than `window`={window}."
        )
    signs = jnp.sign(td_errors)
    if not jnp.issubdtype(signs.dtype, jnp.floating):
        signs = signs.astype(jnp.result_type(float))
    num_windows = num_steps - window + 1
    stacked = jnp.stack([signs[i : i + num_windows] for i in range(window)])  # [w, T − w + 1, ...]
    return jnp.var(stacked, axis=0)
