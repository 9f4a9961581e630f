"""The update matrix of Lyle et al. 2022 and rank statistics of matrices and representations.

Lyle et al. 2022, §5.1, eq. 21: given transitions τ₁…τ_k and parameters θ, let θᵢ be the parameters after
ONE optimizer step on the loss of τᵢ alone (from the agent's current optimizer state, App. B.1). Then

    Aᵢⱼ = f(θᵢ, xⱼ) − f(θ, xⱼ),

where f is the network output reduced to a scalar (max over actions in the paper). Its *update rank*
(App. B.1) is #{σ ∈ svd(A) : σ > ε·max σ} with ε = 0.1. Low rank: an update on one state moves the
predictions on many others alike (generalisation); full rank with a dominant diagonal: updates act like
a lookup table (memorisation).

Cost and memory: A needs k optimizer steps and k·m forward passes (m = number of probes; the forward at θ
is computed once). The steps are vmapped over `chunk_size` examples at a time, and the forwards over
`probe_chunk_size` probes at a time, so peak memory is O(chunk_size · (|θ| + probe_chunk_size ·
activations)) whatever k and m are. See docs/update_matrix.md for which strategy and chunk size to use.

Non-finite values are never turned into a rank: a row i whose stepped parameters θᵢ have a non-finite
entry (a non-finite update, which a non-finite gradient gives under optax's standard transformations)
is set to NaN in A, even where the output would not notice; and the rank functions
raise on non-finite input when called eagerly, or return an invalid marker when traced under jit (-1
from `update_rank` and `srank`, NaN from `effective_rank` and `dormant_fraction`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Literal, Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tdjax._src.conv_matmul import staged_forward
from tdjax._src.layerwise import layerwise_per_example_grads
from tdjax._src.validation import check_params, check_scalar, eval_on_example, leading_dim

__all__ = [
    "update_matrix",
    "policy_update_matrix",
    "linearized_update_matrix",
    "update_rank",
    "srank",
    "effective_rank",
    "dormant_fraction",
]

LossFn = Callable[[Any, Any], chex.Array]  # loss_fn(params, example) -> scalar
OutputFn = Callable[[Any, Any], chex.Array]  # output_fn(params, x) -> scalar, for ONE input x
Strategy = Literal["map", "loop"]

# Examples stepped at once when `chunk_size=None`: bounded memory by default, and the fastest setting
# on CPU in benchmarks/bench_update_matrix.py for small MLPs, and with the Nature CNN as fast as
# chunk_size=1, strategy="loop" (RESULTS.md, issue 14).
_DEFAULT_CHUNK = 4


# ----------------------------------------------------------------------------------------------------
# Argument checks (all run at trace time, on shapes only).


def _check_chunk(value: Optional[int], name: str, fn_name: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{fn_name}: `{name}` must be a positive int or None, got {value!r}.")


def _one(tree: Any) -> Any:
    """Shape/dtype structs of one example of a batched pytree (the leading axis dropped)."""
    return jax.tree.map(lambda l: jax.ShapeDtypeStruct(jnp.shape(l)[1:], jnp.result_type(l)), tree)


def _check_opt_state(optimizer: optax.GradientTransformation, params: Any, opt_state: Any, fn_name: str) -> None:
    """`opt_state` must look like `optimizer.init(params)`: same pytree structure, same leaf shapes.

    This catches a state initialised for other params (e.g. Adam's mu/nu with other shapes) or for another
    optimizer, which would otherwise broadcast or fail deep inside XLA.
    """
    expected = jax.eval_shape(optimizer.init, params)
    s_exp, s_got = jax.tree_util.tree_structure(expected), jax.tree_util.tree_structure(opt_state)
    if s_exp != s_got:  # type: ignore[operator]
        raise ValueError(
            f"{fn_name}: `opt_state` does not belong to `params` and `optimizer`: its pytree structure "
            f"differs from `optimizer.init(params)`.\nexpected: {s_exp}\ngot:      {s_got}\n"
            "Pass the optimizer state the agent trains with (initialised from these params)."
        )
    for (path, e), g in zip(jax.tree_util.tree_flatten_with_path(expected)[0], jax.tree_util.tree_leaves(opt_state)):
        if jnp.shape(e) != jnp.shape(g):
            raise ValueError(
                f"{fn_name}: `opt_state` does not belong to `params`: leaf {jax.tree_util.keystr(path)} has "
                f"shape {jnp.shape(g)} but `optimizer.init(params)` gives {jnp.shape(e)}. Was the state "
                "initialised for differently shaped params?"
            )


def _check_common(fn_name, loss_fn, optimizer, params, opt_state, batch, probe_xs, chunk_size, probe_chunk_size):
    _check_chunk(chunk_size, "chunk_size", fn_name)
    _check_chunk(probe_chunk_size, "probe_chunk_size", fn_name)
    k = leading_dim(batch, "batch")
    m = leading_dim(probe_xs, "probe_xs")
    check_params(params, fn_name)
    check_scalar(eval_on_example(loss_fn, (params, _one(batch)), fn_name, "loss_fn", "batch"), fn_name, "loss_fn")
    _check_opt_state(optimizer, params, opt_state, fn_name)
    return k, m


# ----------------------------------------------------------------------------------------------------
# The building blocks. Each is a pure function of a chunk; none is jitted here.


def _vmap(fn: Callable, in_axes: tuple, size: int) -> Callable:
    """jax.vmap(fn, in_axes) over a batch of `size`, except that a batch of one calls fn directly and adds
    the axis back: XLA:CPU runs a convolution vmapped by one ~5% slower than the plain one."""
    if size != 1:
        return jax.vmap(fn, in_axes=in_axes)

    def call(*args):
        args = [a if ax is None else jax.tree.map(lambda l: l[0], a) for a, ax in zip(args, in_axes)]
        return jax.tree.map(lambda l: l[None], fn(*args))

    return call


def _per_example_grads(loss_fn: LossFn, params: Any, examples: Any, method: str = "auto") -> Any:
    """∇θ loss_fn(θ, examples[i]) for each i of a chunk: a params-shaped pytree with a leading [c] axis.

    "auto"/"layerwise": one batched forward/backward with per-example weight gradients from each layer's
    inputs and output cotangents (`tdjax._src.layerwise`); "vmap": jax.vmap(jax.grad(loss_fn)). A chunk of
    one example needs no per-example work: its gradient is the batch gradient.
    """
    c = leading_dim(examples, "batch")
    if method == "vmap" or (c == 1 and method == "auto"):
        return _vmap(jax.grad(loss_fn), (None, 0), c)(params, examples)
    return layerwise_per_example_grads(loss_fn, params, examples, strict=method == "layerwise")


def _all_finite(tree: Any) -> chex.Array:
    """Whether every entry of `tree` is finite: Σ x·0 is 0 unless some x is NaN or ±inf.

    (Half the cost of all(isfinite(x)) on XLA:CPU, and unlike max|x| it cannot miss a NaN.)
    """
    total = sum(jnp.sum(l * 0, dtype=jnp.float32) for l in jax.tree_util.tree_leaves(tree))
    return total == 0


def _one_step(optimizer: optax.GradientTransformation, params: Any, opt_state: Any, grads: Any):
    """θᵢ = θ + update(∇ᵢ) for one example's gradient, and whether θᵢ is finite.

    Checking θᵢ (one pass over |θ|) rather than gradient and update (two) halves the cost; a non-finite
    gradient gives a non-finite update under optax's standard transformations (sgd, adam, rmsprop, global
    norm clipping), so it is caught all the same.
    """
    updates, _ = optimizer.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    return new_params, _all_finite(new_params)


def _prepare_probes(out_fn: Callable, params: Any, probe_xs: Any, probe_chunk_size: Optional[int],
                    probe_forward: str) -> Any:
    """With probe_forward="matmul": what the probe forwards compute from the probes alone (the first
    layer's im2col patches, `tdjax._src.conv_matmul.staged_forward`), once for all k parameter sets, per
    probe chunk ([n_chunks, ...] leaves). None otherwise."""
    if probe_forward != "matmul":
        return None
    m = leading_dim(probe_xs, "probe_xs")
    prepare, _ = staged_forward(jax.vmap(out_fn, in_axes=(None, 0)))
    if probe_chunk_size is None or probe_chunk_size >= m:
        return prepare(params, probe_xs)
    chunks, _ = _chunked(probe_xs, m, probe_chunk_size)
    return jax.lax.map(lambda xs: prepare(params, xs), chunks)


def _over_probes(out_fn: Callable, params: Any, probe_xs: Any, probe_chunk_size: Optional[int],
                 probe_forward: str = "as_is", prepared: Any = None) -> chex.Array:
    """out_fn(params, xⱼ) for every probe j: [m, ...], `probe_chunk_size` probes at a time (a `lax.scan`
    over the chunks). probe_forward="matmul": the forward finishes from `prepared` (`_prepare_probes`),
    with every convolution as matmuls.

    The scan is NOT unrolled: with jaxlib 0.10.2, XLA:CPU's common-subexpression elimination
    miscompiled unrolled probe chunks whose padding repeats probes (the last probe of a padded chunk
    got another probe's output, under vmap over parameter sets; correct with
    `--xla_disable_hlo_passes=cse`); tests/test_update_matrix.py checks such chunkings.
    """
    m = leading_dim(probe_xs, "probe_xs")
    batched = jax.vmap(out_fn, in_axes=(None, 0))
    if probe_forward == "matmul":
        _, finish = staged_forward(batched)
        evaluate = finish
    else:
        evaluate = lambda p, xs, prep: batched(p, xs)  # noqa: E731
    if probe_chunk_size is None or probe_chunk_size >= m:
        return evaluate(params, probe_xs, prepared)
    chunks, n = _chunked(probe_xs, m, probe_chunk_size)
    body = lambda carry, a: (carry, evaluate(params, *a))  # noqa: E731
    _, outs = jax.lax.scan(body, None, (chunks, prepared))
    return outs.reshape((-1,) + outs.shape[2:])[:m]


def _difference(new: chex.Array, old: chex.Array) -> chex.Array:
    return new - old


def _distance(new: chex.Array, old: chex.Array) -> chex.Array:
    return jnp.linalg.norm(new - old, axis=-1)


@dataclasses.dataclass(frozen=True)
class _SoftmaxOf:
    """p(x) = softmax(logits_fn(params, x)); hashable by `logits_fn` so jitted chunk calls are cached."""

    logits_fn: Callable

    def __call__(self, params, x):
        return jax.nn.softmax(self.logits_fn(params, x))


@dataclasses.dataclass(frozen=True)
class _ChunkRows:
    """Rows i ∈ chunk of an update matrix: compare(out_fn(θᵢ, xⱼ), out_fn(θ, xⱼ)) for all probes j.

    A frozen (hashable) description of the per-chunk maths, shared by both strategies; being hashable,
    it is a static argument of the jitted chunk call of the "loop" strategy, so repeated calls with the
    same functions and optimizer reuse one compilation.
    """

    loss_fn: Callable
    out_fn: Callable
    compare: Callable
    optimizer: optax.GradientTransformation
    probe_chunk_size: Optional[int]
    method: str = "auto"
    probe_forward: str = "as_is"  # resolved: "as_is" or "matmul"

    def prepare(self, params, probe_xs):
        return _prepare_probes(self.out_fn, params, probe_xs, self.probe_chunk_size, self.probe_forward)

    def base(self, params, probe_xs, prepared):
        return _over_probes(self.out_fn, params, probe_xs, self.probe_chunk_size, self.probe_forward, prepared)

    def chunk(self, params, opt_state, probe_xs, prepared, base, chunks, i):  # rows of chunks[i], sliced under jit
        return self(params, opt_state, probe_xs, prepared, base, jax.tree.map(lambda l: l[i], chunks))

    def __call__(self, params, opt_state, probe_xs, prepared, base, examples):  # [c] examples -> [c, m]
        c = leading_dim(examples, "batch")
        grads = _per_example_grads(self.loss_fn, params, examples, self.method)
        step = functools.partial(_one_step, self.optimizer)
        new_params, finite = _vmap(step, (None, None, 0), c)(params, opt_state, grads)
        evaluate = functools.partial(_over_probes, self.out_fn, probe_chunk_size=self.probe_chunk_size,
                                     probe_forward=self.probe_forward)
        outs = _vmap(lambda p, xs, prep: evaluate(p, xs, prepared=prep), (0, None, None), c)(
            new_params, probe_xs, prepared)
        rows = _vmap(self.compare, (0, None), c)(outs, base)
        return jnp.where(finite[:, None], rows, jnp.nan)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _jitted(spec, method, *args):
    return getattr(spec, method)(*args)


def _is_traced_tree(*trees) -> bool:
    return any(isinstance(l, jax.core.Tracer) for t in trees for l in jax.tree_util.tree_leaves(t))


def _chunked(batch: Any, k: int, chunk_size: Optional[int], default: int = _DEFAULT_CHUNK) -> tuple[Any, int]:
    """batch as [n_chunks, c, ...] leaves. The last chunk is padded with copies of example 0, whose rows
    are dropped afterwards: one compiled chunk computation serves every chunk (< c wasted examples)."""
    c = min(default if chunk_size is None else chunk_size, k)
    n = -(-k // c)
    pad = n * c - k

    def split(leaf):
        if pad:
            leaf = jnp.concatenate([leaf, jnp.broadcast_to(leaf[:1], (pad,) + leaf.shape[1:])], axis=0)
        return leaf.reshape((n, c) + leaf.shape[1:])

    return jax.tree.map(split, batch), n


def _map_chunks(chunk_fn: Callable, batch: Any, k: int, chunk_size: Optional[int],
                default: int = _DEFAULT_CHUNK) -> chex.Array:
    """chunk_fn [c, ...] -> [c, ...] over consecutive chunks of `chunk_size` examples, concatenated: [k, ...]."""
    chunks, n = _chunked(batch, k, chunk_size, default)
    rows = chunk_fn(jax.tree.map(lambda l: l[0], chunks))[None] if n == 1 else jax.lax.map(chunk_fn, chunks)
    return rows.reshape((-1,) + rows.shape[2:])[:k]


def _loop_chunks(spec: _ChunkRows, params, opt_state, probe_xs, prepared, base, batch, k: int,
                 chunk_size: Optional[int]):
    """The "loop" strategy: a host loop of jitted calls, one per chunk (one compilation)."""
    chunks, n = _chunked(batch, k, chunk_size)
    parts = [_jitted(spec, "chunk", params, opt_state, probe_xs, prepared, base, chunks, np.int32(i))
             for i in range(n)]
    return jnp.concatenate(parts, axis=0)[:k]


def _update_matrix(fn_name, spec: _ChunkRows, params, opt_state, batch, probe_xs, k, chunk_size, strategy):
    """The one code path behind `update_matrix` and `policy_update_matrix`."""
    if strategy == "loop":
        if _is_traced_tree(params, opt_state, batch, probe_xs):
            raise ValueError(
                f"{fn_name}: strategy='loop' runs a host loop of jitted chunk calls and cannot be traced "
                "(called under jit/vmap); use strategy='map' there."
            )
        prepared = _jitted(spec, "prepare", params, probe_xs)
        base = _jitted(spec, "base", params, probe_xs, prepared)
        return _loop_chunks(spec, params, opt_state, probe_xs, prepared, base, batch, k, chunk_size)
    prepared = spec.prepare(params, probe_xs)  # what the probe forwards compute from the probes alone, once
    base = spec.base(params, probe_xs, prepared)  # the forward at θ, once
    return _map_chunks(lambda ex: spec(params, opt_state, probe_xs, prepared, base, ex), batch, k, chunk_size)




def _check_method(method, fn_name):
    if method not in ("auto", "layerwise", "vmap"):
        raise ValueError(f"{fn_name}: `method` must be 'auto', 'layerwise' or 'vmap', got {method!r}.")


_PROBE_FORWARDS = ("auto", "matmul", "as_is")


def _resolve_probe_forward(probe_forward, fn_name) -> str:
    """"auto": convolutions as matmuls on CPU (XLA:CPU's convolutions are slower per FLOP than its
    matmuls), as they are on accelerators."""
    if probe_forward not in _PROBE_FORWARDS:
        raise ValueError(f"{fn_name}: `probe_forward` must be one of {', '.join(map(repr, _PROBE_FORWARDS))}, "
                         f"got {probe_forward!r}.")
    if probe_forward == "auto":
        return "matmul" if jax.default_backend() == "cpu" else "as_is"
    return probe_forward


def _check_strategy(strategy, fn_name):
    if strategy not in ("map", "loop"):
        raise ValueError(f"{fn_name}: `strategy` must be 'map' or 'loop', got {strategy!r}.")


# ----------------------------------------------------------------------------------------------------
# Update matrices.


def update_matrix(
    loss_fn: LossFn,
    output_fn: OutputFn,
    optimizer: optax.GradientTransformation,
    params: Any,
    opt_state: Any,
    batch: Any,
    probe_xs: Any,
    *,
    chunk_size: Optional[int] = None,
    probe_chunk_size: Optional[int] = None,
    strategy: Strategy = "map",
    method: str = "auto",
    probe_forward: str = "auto",
) -> chex.Array:
    """The update matrix Aᵢⱼ = f(θᵢ, xⱼ) − f(θ, xⱼ) (Lyle et al. 2022, eq. 21, App. B.1).

    θᵢ is θ after ONE step of `optimizer` on the loss of example i alone, from `opt_state` (Adam's moments
    and step count included): `updates, _ = optimizer.update(∇θ loss_fn(θ, batch[i]), opt_state, θ)`,
    `θᵢ = optax.apply_updates(θ, updates)`.

    Args:
      loss_fn: `loss_fn(params, example) -> scalar` for ONE example (e.g. a TD loss on a transition).
      output_fn: `output_fn(params, x) -> scalar` for ONE input (e.g. `tdjax.scalar_output_fn(apply_fn,
        "max")`, the paper's choice).
      optimizer: the agent's optax GradientTransformation.
      params: θ.
      opt_state: the optimizer state at θ; must have the structure and shapes of `optimizer.init(params)`.
      batch: pytree of k examples, each leaf with leading axis k (the transitions τ₁…τ_k).
      probe_xs: pytree of m inputs, each leaf with leading axis m (the paper uses xⱼ = the states of the
        same transitions, m = k).
      chunk_size: examples stepped at once (vmapped); None = 4. Peak memory grows linearly with it.
      probe_chunk_size: probes evaluated at once per stepped parameter set; None = all m.
      strategy: "map" (default; `lax.map` over chunks, composes with jit/vmap) or "loop" (a host loop of
        jitted chunk calls, compiled once; must be called outside jit). Same maths; which is faster
        depends on the net and backend (docs/update_matrix.md).
      method: per-example gradients of a chunk: "auto" (default; one batched forward/backward, see
        `tdjax.per_example_grads`), "layerwise" (the same, raising `LayerwiseUnsupported` for parameters
        used other than as layer weights or biases) or "vmap" (jax.vmap(jax.grad(loss_fn))).
      probe_forward: how the k·m probe forwards run: "matmul" (every convolution as matmuls,
        `tdjax._src.conv_matmul`: faster on XLA:CPU, same maths up to float rounding), "as_is"
        (the network's own operations) or "auto" (default: "matmul" on the CPU backend, else "as_is").

    Returns:
      A: [k, m] float array. Row i is NaN if θᵢ has a non-finite entry (a non-finite update or gradient).
    """
    fn_name = "update_matrix"
    _check_strategy(strategy, fn_name)
    probe_forward = _resolve_probe_forward(probe_forward, fn_name)
    k, _ = _check_common(fn_name, loss_fn, optimizer, params, opt_state, batch, probe_xs, chunk_size, probe_chunk_size)
    check_scalar(eval_on_example(output_fn, (params, _one(probe_xs)), fn_name, "output_fn", "probe_xs"), fn_name,
                 "output_fn")

    _check_method(method, fn_name)
    spec = _ChunkRows(loss_fn, output_fn, _difference, optimizer, probe_chunk_size, method, probe_forward)
    return _update_matrix(fn_name, spec, params, opt_state, batch, probe_xs, k, chunk_size, strategy)


def policy_update_matrix(
    loss_fn: LossFn,
    policy_fn: Callable[[Any, Any], chex.Array],
    optimizer: optax.GradientTransformation,
    params: Any,
    opt_state: Any,
    batch: Any,
    probe_xs: Any,
    *,
    from_logits: bool = True,
    chunk_size: Optional[int] = None,
    probe_chunk_size: Optional[int] = None,
    strategy: Strategy = "map",
    method: str = "auto",
    probe_forward: str = "auto",
) -> chex.Array:
    """The policy update matrix Aᵢⱼ = ‖p_θ(xⱼ) − p_θᵢ(xⱼ)‖₂ (Lyle et al. 2022, App. B.1).

    θᵢ is as in `update_matrix` (one optimizer step on example i's loss, e.g. a policy-gradient loss).
    The entries are non-negative: the paper compares action distributions by the Euclidean norm of the
    difference of the probability vectors.

    Args:
      loss_fn: `loss_fn(params, example) -> scalar` for ONE example.
      policy_fn: `policy_fn(params, x) -> [n_actions]` for ONE input: logits if `from_logits` (the
        distribution is their softmax), else the probabilities themselves.
      optimizer, params, opt_state, batch, probe_xs, chunk_size, probe_chunk_size: as in `update_matrix`.
      strategy, method, probe_forward: as in `update_matrix`.
      from_logits: whether `policy_fn` returns logits (True) or probabilities (False).

    Returns:
      A: [k, m] non-negative float array; row i is NaN if θᵢ has a non-finite entry.
    """
    fn_name = "policy_update_matrix"
    _check_strategy(strategy, fn_name)
    probe_forward = _resolve_probe_forward(probe_forward, fn_name)
    k, _ = _check_common(fn_name, loss_fn, optimizer, params, opt_state, batch, probe_xs, chunk_size, probe_chunk_size)
    out = eval_on_example(policy_fn, (params, _one(probe_xs)), fn_name, "policy_fn", "probe_xs")
    if len(out.shape) != 1:
        raise ValueError(
            f"{fn_name}: `policy_fn` must return a vector [n_actions] for one input, got shape {out.shape}."
        )
    probs_fn = _SoftmaxOf(policy_fn) if from_logits else policy_fn
    _check_method(method, fn_name)
    spec = _ChunkRows(loss_fn, probs_fn, _distance, optimizer, probe_chunk_size, method, probe_forward)
    return _update_matrix(fn_name, spec, params, opt_state, batch, probe_xs, k, chunk_size, strategy)


def linearized_update_matrix(
    loss_fn: LossFn,
    output_fn: OutputFn,
    optimizer: optax.GradientTransformation,
    params: Any,
    opt_state: Any,
    batch: Any,
    probe_xs: Any,
    *,
    chunk_size: Optional[int] = None,
    probe_chunk_size: Optional[int] = None,
    method: str = "auto",
) -> chex.Array:
    """First-order update matrix Âᵢⱼ = ⟨∇θ f(θ, xⱼ), Δθᵢ⟩ (Lyle et al. 2022, §5.1).

    Δθᵢ is the optimizer update from example i (as in `update_matrix`), so Â is the first-order Taylor
    expansion of eq. 21 in the update. For plain SGD (`optax.sgd(lr)`) Δθᵢ = −lr·∇θJ(xᵢ) and
    Âᵢⱼ = −lr·⟨∇θJ(xᵢ), ∇θf(xⱼ)⟩, a scaled empirical-NTK matrix; A → Â as lr → 0.

    Computed leaf by leaf from per-example updates and per-probe gradients, never as one flat Jacobian:
    for each chunk of `probe_chunk_size` probes the probe gradients are formed once, and the updates of
    `chunk_size` examples at a time are contracted with them. Peak memory is
    O((chunk_size + probe_chunk_size) · |θ|); the example gradients are recomputed once per probe chunk.

    Args:
      loss_fn, output_fn, optimizer, params, opt_state, batch, probe_xs: as in `update_matrix`.
      chunk_size: examples whose updates are formed at once; None = 4.
      probe_chunk_size: probes whose gradients are held at once; None = all m (m·|θ| floats).
      method: as in `update_matrix`; also used for the probe gradients.

    Returns:
      Â: [k, m] float array; row i is NaN if the update Δθᵢ has a non-finite entry.
    """
    fn_name = "linearized_update_matrix"
    _check_method(method, fn_name)
    k, m = _check_common(fn_name, loss_fn, optimizer, params, opt_state, batch, probe_xs, chunk_size, probe_chunk_size)
    check_scalar(eval_on_example(output_fn, (params, _one(probe_xs)), fn_name, "output_fn", "probe_xs"), fn_name,
                 "output_fn")

    def block(examples, probe_grads):  # [c] examples x [pc] probe gradients -> [c, pc]
        grads = _per_example_grads(loss_fn, params, examples, method)
        updates, _ = jax.vmap(lambda g: optimizer.update(g, opt_state, params))(grads)
        finite = jax.vmap(_all_finite)(updates)
        dots = jax.tree.map(
            lambda u, g: jnp.einsum("cp,qp->cq", u.reshape(u.shape[0], -1), g.reshape(g.shape[0], -1)),
            updates, probe_grads,
        )
        total = sum(jax.tree_util.tree_leaves(dots))
        return jnp.where(finite[:, None], total, jnp.nan)

    def probe_columns(probes):  # [pc] probes -> [pc, k]
        probe_grads = _per_example_grads(output_fn, params, probes, method)
        return _map_chunks(lambda ex: block(ex, probe_grads), batch, k, chunk_size).T

    return _map_chunks(probe_columns, probe_xs, m, probe_chunk_size, default=m).T


# ----------------------------------------------------------------------------------------------------
# Ranks and representation statistics.


def _is_traced(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def _finite_or_raise(x: chex.Array, name: str, fn_name: str) -> Optional[chex.Array]:
    """Eagerly: raises on non-finite `x`. Traced: returns the finiteness flag for an invalid marker."""
    if _is_traced(x):
        return jnp.all(jnp.isfinite(x))
    if not np.all(np.isfinite(np.asarray(x))):
        raise ValueError(
            f"{fn_name}: `{name}` has non-finite entries, so the statistic would be meaningless (NaN rows "
            "of an update matrix mark examples whose update was non-finite)."
        )
    return None


def _singular_values(x: chex.Array, name: str, fn_name: str) -> chex.Array:
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{fn_name}: `{name}` must be a 2-D matrix, got shape {x.shape}.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    finite = jnp.all(jnp.isfinite(x))
    # SVD of a non-finite matrix may not terminate cleanly; feed zeros and mark the result invalid instead.
    sv = jnp.linalg.svd(jnp.where(finite, x, 0.0), compute_uv=False)
    return sv  # descending


def _check_open_unit(value: Any, name: str, fn_name: str) -> None:
    if _is_traced(value):
        raise ValueError(f"{fn_name}: `{name}` must be a concrete Python float, not a traced value.")
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"{fn_name}: `{name}` must lie in the open interval (0, 1), got {value!r}.")


def update_rank(A: chex.Array, eps: float = 0.1) -> chex.Array:
    """Update rank: #{σ ∈ svd(A) : σ > eps·max σ} (Lyle et al. 2022, App. B.1; eps = 0.1 in the paper).

    Args:
      A: [k, m] update matrix (e.g. from `update_matrix`).
      eps: relative threshold in (0, 1).

    Returns:
      int32 scalar. If `A` has a non-finite entry this raises ValueError when called eagerly and returns
      -1 under jit (never a rank). An all-zero `A` has rank 0.
    """
    fn_name = "update_rank"
    _check_open_unit(eps, "eps", fn_name)
    finite = _finite_or_raise(A, "A", fn_name)
    sv = _singular_values(A, "A", fn_name)
    rank = jnp.sum(sv > eps * sv[0]).astype(jnp.int32)
    return rank if finite is None else jnp.where(finite, rank, -1)


def srank(features: chex.Array, delta: float = 0.01) -> chex.Array:
    """Effective feature rank srank_δ (Kumar et al. 2021, "Implicit Under-Parameterization").

    srank_δ(Φ) = min{k : Σᵢ₌₁ᵏ σᵢ / Σᵢ σᵢ ≥ 1 − δ}, with σ₁ ≥ σ₂ ≥ … the singular values of Φ.

    Args:
      features: [n, d] matrix, one row per input (e.g. penultimate-layer activations of n states).
      delta: tolerance in (0, 1); 0.01 in Kumar et al.

    Returns:
      int32 scalar in [0, min(n, d)] (0 for an all-zero matrix). Non-finite `features`: ValueError
      eagerly, -1 under jit.
    """
    fn_name = "srank"
    _check_open_unit(delta, "delta", fn_name)
    finite = _finite_or_raise(features, "features", fn_name)
    sv = _singular_values(features, "features", fn_name)
    total = jnp.sum(sv)
    cum = jnp.cumsum(sv)
    # number of prefixes still short of (1 − δ) of the total, plus one; clipped for the all-zero matrix
    r = jnp.sum(cum < (1.0 - delta) * total) + 1
    r = jnp.where(total > 0, jnp.minimum(r, sv.shape[0]), 0).astype(jnp.int32)
    return r if finite is None else jnp.where(finite, r, -1)


def effective_rank(matrix: chex.Array) -> chex.Array:
    """Entropy-based effective rank (Roy & Vetterli 2007): exp(H(p)), pᵢ = σᵢ / Σⱼ σⱼ.

    H(p) = −Σᵢ pᵢ log pᵢ with 0·log 0 = 0. A real number in [1, min(n, d)] for a non-zero matrix; equals
    r for a matrix with r equal non-zero singular values.

    Args:
      matrix: [n, d] matrix (features or an update matrix).

    Returns:
      float scalar; 0.0 for an all-zero matrix. Non-finite input: ValueError eagerly, NaN under jit.
    """
    fn_name = "effective_rank"
    finite = _finite_or_raise(matrix, "matrix", fn_name)
    sv = _singular_values(matrix, "matrix", fn_name)
    total = jnp.sum(sv)
    p = sv / jnp.where(total > 0, total, 1.0)
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    er = jnp.where(total > 0, jnp.exp(entropy), 0.0)
    return er if finite is None else jnp.where(finite, er, jnp.nan)


def dormant_fraction(activations: Any, tau: float = 0.0) -> chex.Array:
    """Fraction of τ-dormant units (Sokar et al. 2023, "The Dormant Neuron Phenomenon in Deep RL").

    For a layer with H units, unit i's score is sᵢ = E_x|hᵢ(x)| / ((1/H) Σₖ E_x|hₖ(x)|); it is τ-dormant if
    sᵢ ≤ τ. Sokar et al. use τ = 0 (units that never fire) and τ = 0.025 in their main experiments.

    Args:
      activations: one layer's activations, or a pytree (list/dict) of them, one array per layer. Each
        is [n, ..., H]: the last axis indexes units; the expectation runs over all other axes (inputs,
        and for conv feature maps [n, h, w, C] also spatial positions, so a unit is a channel).
      tau: threshold ≥ 0.

    Returns:
      float scalar: dormant units over all units of all layers. A layer whose activations are all zero
      counts as entirely dormant. Non-finite activations: ValueError eagerly, NaN under jit.
    """
    fn_name = "dormant_fraction"
    if _is_traced(tau):
        raise ValueError(f"{fn_name}: `tau` must be a concrete Python float, not a traced value.")
    if not float(tau) >= 0.0:
        raise ValueError(f"{fn_name}: `tau` must be ≥ 0, got {tau!r}.")
    leaves = jax.tree_util.tree_leaves(activations)
    if not leaves:
        raise ValueError(f"{fn_name}: `activations` is empty.")
    dormant, units, finite = 0, 0, []
    for path, a in jax.tree_util.tree_flatten_with_path(activations)[0]:
        if jnp.ndim(a) < 2:
            raise ValueError(
                f"{fn_name}: `activations` leaf {jax.tree_util.keystr(path) or '<root>'} has shape "
                f"{jnp.shape(a)}; expected [n, ..., units]."
            )
        flag = _finite_or_raise(a, "activations", fn_name)
        finite += [] if flag is None else [flag]
        a = jnp.abs(jnp.asarray(a, dtype=jnp.result_type(float)))
        per_unit = jnp.mean(a.reshape(-1, a.shape[-1]), axis=0)  # [H]
        layer = jnp.mean(per_unit)
        score = jnp.where(layer > 0, per_unit / jnp.where(layer > 0, layer, 1.0), 0.0)
        dormant = dormant + jnp.sum(score <= tau)  # type: ignore[assignment]
        units += a.shape[-1]
    frac = dormant / units
    return jnp.where(jnp.all(jnp.stack(finite)), frac, jnp.nan) if finite else frac
