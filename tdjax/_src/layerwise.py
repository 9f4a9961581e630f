"""Per-example gradients and Gram (empirical NTK) matrices from one batched forward/backward pass.

Works on the traced computation (the jaxpr of `fn(params, example)` for ONE example), whatever library
built the network: flax linen or nnx, equinox, haiku, plain `jax.lax`. Every `dot_general` or
`conv_general_dilated` one of whose operands is a parameter leaf (possibly reshaped, transposed or cast)
is a *layer*. The jaxpr is evaluated on the whole batch (vmapped) with a zero-valued tap added to each
layer's output, z = op(a, W) + t, keeping each layer's other operand a (its input activations); one
`jax.grad` w.r.t. the taps gives every layer's output cotangents gᵢ = ∂ℓᵢ/∂zᵢ. Then, per example,

  ∂ℓᵢ/∂W = Σₙ aᵢₙᵀ gᵢₙ   (Goodfellow 2015, "Efficient per-example gradient computations")

with n over extra axes of one example and, for a convolution, over output positions (aᵢₙ the im2col
patch), as BackPACK and Opacus do for PyTorch. For the Gram matrix of a dense layer,
⟨∂ℓᵢ/∂W, ∂ℓⱼ/∂W⟩ = Σₙₘ (aᵢₙ · aⱼₘ)(gᵢₙ · gⱼₘ), which for one row per example is (A Aᵀ) ⊙ (G Gᵀ) and never
forms a per-example gradient.

Parameters used by any other operation (biases, normalisation scales, embeddings, a penalty on the
params, both operands of a product of parameters) are handled exactly in the same pass: those leaves
alone are fed as per-example copies, so `jax.grad` w.r.t. the copies is their per-example gradient. A
leaf used both ways gets both contributions, summed. With `strict=True` such leaves raise
`LayerwiseUnsupported` naming the operation and the parameter instead.

Calls to jit, closed_call and jax.checkpoint are inlined; any other higher-order primitive (custom_jvp,
custom_vjp, scan, cond, while) is evaluated as it is, and a parameter entering it directly takes the
per-example-copy route. Only public JAX APIs are used (`jax.make_jaxpr`, `jax.extend.core`); the names
of the primitives recognised are checked by tests/test_layerwise.py::test_primitive_names.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core as jcore

from tdjax._src import validation

__all__ = ["LayerwiseUnsupported", "layerwise_per_example_grads", "layerwise_gram"]

# float32 Gram entries are long sums: keep them in full precision on accelerators.
_PRECISION = lax.Precision.HIGHEST

# The primitives the pass understands, by name (tests/test_layerwise.py checks these still exist).
LAYER_PRIMITIVES = ("dot_general", "conv_general_dilated")
INLINED_PRIMITIVES = ("jit", "pjit", "closed_call", "core_call", "remat2", "checkpoint")
# Linear re-arrangements of a parameter that keep it "the parameter" (their transpose is applied after).
STRUCTURAL_PRIMITIVES = (
    "reshape", "transpose", "convert_element_type", "squeeze", "expand_dims", "broadcast_in_dim",
    "rev", "copy", "copy_p", "reduce_precision", "slice",
)
# Structural primitives that only permute or cast entries: inner products of gradients are unchanged.
_BIJECTIVE = ("reshape", "transpose", "convert_element_type", "squeeze", "expand_dims", "copy", "copy_p")


# Other uses that count as supported with strict=True: a bias's per-example copy costs no more than
# summing the output cotangent over positions.
_BIAS_PRIMITIVES = ("add", "sub", "add_any")


class LayerwiseUnsupported(NotImplementedError):
    """The layer-wise path cannot handle this network exactly; use `jax.vmap(jax.grad(...))`."""


# ----------------------------------------------------------------------------------------------------
# Analysis of the jaxpr: which values are (re-arrangements of) parameters, which ops are layers.


@dataclasses.dataclass(frozen=True)
class _Struct:
    """A value that is a structural function of one parameter leaf."""

    leaf: int
    chain: tuple  # ((primitive, bind params), ...) applied to the leaf, in order

    def apply(self, leaf_value):
        for prim, params in self.chain:
            leaf_value = prim.bind(leaf_value, **params)
        return leaf_value

    @property
    def bijective(self) -> bool:
        return all(p.name in _BIJECTIVE for p, _ in self.chain)


@dataclasses.dataclass
class _Layer:
    """One parameter-consuming dot_general / conv_general_dilated, as traced for one example."""

    prim: Any
    params: dict
    param_side: int  # 0: the parameter is the lhs, 1: the rhs
    struct: _Struct
    out_aval: Any


@dataclasses.dataclass
class _Plan:
    layers: list  # [_Layer] in evaluation order
    copied: dict  # leaf -> names of the primitives that use it other than as a layer weight


_PARAM = object()  # marks a value that depends on the parameters (other than structurally)


def _sub_jaxpr(eqn):
    """(jaxpr, consts) of an inlined call primitive."""
    sub = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
    if isinstance(sub, jcore.ClosedJaxpr):
        return sub.jaxpr, sub.consts
    return sub, ()


def _bind(eqn, invals):
    bind_params = eqn.primitive.get_bind_params(eqn.params)
    subfuns = ()
    if isinstance(bind_params, tuple):  # jax < 0.7 returned (subfuns, params)
        subfuns, bind_params = bind_params
    with eqn.ctx.manager:
        out = eqn.primitive.bind(*subfuns, *invals, **bind_params)
    return out if eqn.primitive.multiple_results else [out]


class _Interpreter:
    """Evaluates a jaxpr, routing parameter uses.

    analysis (`plan is None`): values are `_Struct`, `_PARAM` or None (parameter-free); records the layers
    and the leaves used otherwise.
    evaluation: values are pairs (shared value, per-example-copy value or None). Layers use the shared
    parameter, add their tap and record their input; other uses of a parameter use its per-example copy.
    """

    def __init__(self, plan: Optional[_Plan] = None, taps=None):
        self.plan = _Plan([], {}) if plan is None else plan
        self.taps = taps
        self.activations: list[Any] = []
        self.n_layers = 0

    # -- analysis ----------------------------------------------------------------------------------

    def analyse(self, jaxpr, invals):
        env = {}
        read = lambda v: None if isinstance(v, jcore.Literal) else env.get(v)  # noqa: E731
        for var, val in zip(jaxpr.invars, invals):
            env[var] = val
        for eqn in jaxpr.eqns:
            ins = [read(v) for v in eqn.invars]
            name = eqn.primitive.name
            if name in INLINED_PRIMITIVES:
                outs = self.analyse(_sub_jaxpr(eqn)[0], ins)
            elif all(x is None for x in ins):
                outs = [None] * len(eqn.outvars)
            elif name == "stop_gradient":
                outs = [None]
            elif name in STRUCTURAL_PRIMITIVES and isinstance(ins[0], _Struct) and len(ins) == 1:
                s = ins[0]
                outs = [_Struct(s.leaf, s.chain + ((eqn.primitive, dict(eqn.params)),))]
            elif name in LAYER_PRIMITIVES and sum(isinstance(x, _Struct) for x in ins) == 1:
                side = 0 if isinstance(ins[0], _Struct) else 1
                self.plan.layers.append(_Layer(eqn.primitive, dict(eqn.params), side, ins[side], eqn.outvars[0].aval))
                outs = [_PARAM]
            else:
                for x in ins:
                    if isinstance(x, _Struct):
                        self.plan.copied.setdefault(x.leaf, [])
                        if name not in self.plan.copied[x.leaf]:
                            self.plan.copied[x.leaf].append(name)
                outs = [_PARAM] * len(eqn.outvars)
            for var, val in zip(eqn.outvars, outs):
                env[var] = val
        return [read(v) for v in jaxpr.outvars]

    # -- evaluation ----------------------------------------------------------------------------------

    def evaluate(self, jaxpr, consts, invals):
        """invals: (shared, copy) pairs; `_Struct` bookkeeping comes from the analysis, re-derived here."""
        env = {}

        def read(v):
            if isinstance(v, jcore.Literal):
                return (v.val, None), None
            return env[v]

        for var, val in zip(jaxpr.constvars, consts):
            env[var] = ((val, None), None)
        for var, val in zip(jaxpr.invars, invals):
            env[var] = val
        for eqn in jaxpr.eqns:
            ins = [read(v) for v in eqn.invars]  # each ((shared, copy), struct or None)
            name = eqn.primitive.name
            structs = [s for _, s in ins]
            if name in INLINED_PRIMITIVES:
                sub, sub_consts = _sub_jaxpr(eqn)
                outs = self.evaluate(sub, sub_consts, ins)
            elif name == "stop_gradient":
                (shared, _), _ = ins[0]
                outs = [((_bind(eqn, [shared])[0], None), None)]
            elif name in STRUCTURAL_PRIMITIVES and len(ins) == 1 and structs[0] is not None:
                (shared, copy), s = ins[0]
                new_s = _Struct(s.leaf, s.chain + ((eqn.primitive, dict(eqn.params)),))
                copy = None if copy is None else _bind(eqn, [copy])[0]
                outs = [((_bind(eqn, [shared])[0], copy), new_s)]
            elif name in LAYER_PRIMITIVES and sum(s is not None for s in structs) == 1:
                side = 0 if structs[0] is not None else 1
                operands = [shared for (shared, _), _ in ins]  # the weight: shared, not a per-example copy
                y = _bind(eqn, operands)[0]
                i = self.n_layers
                self.n_layers += 1
                self.activations.append(operands[1 - side])
                outs = [((y + self.taps[i].astype(y.dtype), None), None)]
            else:
                vals = [copy if s is not None else shared for (shared, copy), s in ins]
                outs = [((v, None), None) for v in _bind(eqn, vals)]
            for var, val in zip(eqn.outvars, outs):
                env[var] = val
        return [read(v) for v in jaxpr.outvars]


def _leaf_paths(treedef, n):
    dummy = jax.tree_util.tree_unflatten(treedef, list(range(n)))
    return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(dummy)[0]]


def _trace(fn, leaves, treedef, example_spec):
    """The jaxpr of fn(params, example) on one example, with params and example as flat inputs."""
    ex_leaves, ex_def = jax.tree_util.tree_flatten(example_spec)

    def flat(ls, exs):
        out = fn(jax.tree_util.tree_unflatten(treedef, ls), jax.tree_util.tree_unflatten(ex_def, exs))
        validation.check_scalar(out, "layerwise", "the per-example function")
        return out

    # Traced on the values themselves (not on shapes): inside `shard_map` their types carry which mesh
    # axes they vary over, so the jaxpr gets the same implicit `pvary`s as the caller's own trace.
    return jax.make_jaxpr(flat)(list(leaves), ex_leaves)


def _plan(fn, leaves, treedef, example_spec, strict: bool):
    paths = _leaf_paths(treedef, len(leaves))
    for path, leaf in zip(paths, leaves):
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            raise LayerwiseUnsupported(f"layerwise: params leaf {path} is not floating point.")
    closed = _trace(fn, leaves, treedef, example_spec)
    n_ex = len(closed.jaxpr.invars) - len(leaves)
    interp = _Interpreter()
    outs = interp.analyse(closed.jaxpr, [_Struct(i, ()) for i in range(len(leaves))] + [None] * n_ex)
    plan = interp.plan
    if isinstance(outs[0], _Struct):  # the output is (a re-arrangement of) a parameter itself
        plan.copied.setdefault(outs[0].leaf, []).append("output")
    unsupported = {i: ops for i, ops in plan.copied.items() if set(ops) - set(_BIAS_PRIMITIVES)}
    if strict and unsupported:
        detail = ", ".join(f"{paths[i]} (used by {', '.join(ops)})" for i, ops in sorted(unsupported.items()))
        raise LayerwiseUnsupported(
            f"layerwise: parameter(s) {detail} reach the output other than as the weight operand of a "
            "dot_general/conv_general_dilated; use method='auto' (these leaves then take an exact "
            "per-example route) or method='vmap'."
        )
    return closed, plan, paths


def _one_example(batch):
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x)[1:], jnp.result_type(x)), batch)


def _capture(fn, params, batch, strict):
    """One batched forward/backward: (plan, leaves, treedef, activations, tap cotangents, copy grads)."""
    k = validation.leading_dim(batch, "batch")
    leaves, treedef = jax.tree_util.tree_flatten(params)
    closed, plan, _ = _plan(fn, leaves, treedef, jax.tree_util.tree_map(lambda x: x[0], batch), strict)
    copied = sorted(plan.copied)
    ex_leaves = jax.tree_util.tree_leaves(batch)

    def one(taps, copies, exs):
        copy_of = dict(zip(copied, copies))
        invals = [((l, copy_of.get(i)), _Struct(i, ())) for i, l in enumerate(leaves)]
        invals += [((x, None), None) for x in exs]
        interp = _Interpreter(plan, taps)
        (out, copy), struct = interp.evaluate(closed.jaxpr, closed.consts, invals)[0]
        out = out if struct is None else copy
        return out, interp.activations

    def total(taps, copies):
        outs, acts = jax.vmap(one)(taps, copies, ex_leaves)
        return jnp.sum(outs), acts

    taps = [jnp.zeros((k,) + l.out_aval.shape, l.out_aval.dtype) for l in plan.layers]
    copies = [jnp.broadcast_to(leaves[i], (k,) + jnp.shape(leaves[i])) for i in copied]
    (g_taps, g_copies), acts = jax.grad(total, argnums=(0, 1), has_aux=True)(taps, copies)
    return k, plan, leaves, treedef, acts, g_taps, dict(zip(copied, g_copies))


# ----------------------------------------------------------------------------------------------------
# Per-example weight gradients of one layer.


def _dense_rows(layer: _Layer, a, g):
    """For a dot_general with a 2-D weight (one contracting, one free axis) and no batch axes:
    rows a [k, n, din] and cotangents g [k, n, dout], else None."""
    (lc, rc), (lb, rb) = layer.params["dimension_numbers"]
    side = layer.param_side
    wc, xc = (lc, rc) if side == 0 else (rc, lc)
    if lb or rb or len(wc) != 1 or len(xc) != 1:
        return None
    k = a.shape[0]
    x_nd = a.ndim - 1
    out_nd = g.ndim - 1
    if out_nd != x_nd:  # weight must have exactly one free axis
        return None
    a = jnp.moveaxis(a, 1 + xc[0], -1).reshape(k, -1, a.shape[1 + xc[0]])
    # output axes: (lhs free..., rhs free...): the weight's single free axis is first if it is the lhs
    g = jnp.moveaxis(g, 1, -1) if side == 0 else g
    return a, g.reshape(k, -1, g.shape[-1])


def _conv_grads(layer: _Layer, a, g, w_shape):
    """Per-example kernel gradients [k, *w_shape] of a convolution by im2col patches, or None."""
    p = layer.params
    if p["batch_group_count"] != 1 or layer.param_side != 1:
        return None
    dn = p["dimension_numbers"]
    lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
    k = a.shape[0]
    a = jnp.transpose(a, (0,) + tuple(1 + d for d in (lhs_spec[0],) + tuple(lhs_spec[2:]) + (lhs_spec[1],)))
    g = jnp.transpose(g, (0,) + tuple(1 + d for d in (out_spec[0],) + tuple(out_spec[2:]) + (out_spec[1],)))
    ks = tuple(w_shape[d] for d in rhs_spec[2:])
    spec = _ConvSpec(ks, tuple(p["window_strides"]), tuple(tuple(x) for x in p["padding"]),
                     tuple(p["lhs_dilation"]), tuple(p["rhs_dilation"]), p["feature_group_count"])
    patches, to_kernel = _patches(a, spec)  # [k, W, C, N]
    groups = spec.groups
    w, c, n = patches.shape[1:]
    g2 = g.reshape(k, n, g.shape[-1])
    if groups == 1:
        dw = jnp.einsum("bkn,bno->bko", patches.reshape(k, w * c, n), g2).reshape(k, w, c, -1)
    else:
        patches = patches.reshape(k, w, groups, c // groups, n)
        dw = jnp.einsum("bwgcn,bngo->bwcgo", patches, g2.reshape(k, n, groups, -1)).reshape(k, w, c // groups, -1)
    dw = to_kernel(dw)  # [k, *ks, I, O]
    order = tuple(rhs_spec[2:]) + (rhs_spec[1], rhs_spec[0])  # rhs axes in dw's order
    return jnp.transpose(dw, (0,) + tuple(1 + order.index(d) for d in range(len(order))))


@dataclasses.dataclass(frozen=True)
class _ConvSpec:
    kernel_size: tuple
    strides: tuple
    padding: tuple  # explicit (low, high) per spatial axis
    lhs_dilation: tuple
    rhs_dilation: tuple
    groups: int


def _patches(a, spec: _ConvSpec):
    """im2col: a [k, E, *S, C] -> patches [k, W, C, N] (W window offsets, N = E·P) and `to_kernel`.

    `to_kernel` maps a per-example gradient [k, W, c, o] in the patches' offset order to the kernel
    layout [k, *kernel_size, c, o]. When every kernel size is a multiple of its stride, the input is
    first folded space-to-depth (i = s·q + r), so that the window offsets become contiguous slices;
    otherwise each offset is one strided slice. On XLA:CPU both beat conv_general_dilated_patches,
    and the transposed [.., C, N] layout makes the contraction with the cotangents a fast batched dot.
    """
    ks, strides, n, k = spec.kernel_size, spec.strides, len(spec.kernel_size), a.shape[0]
    x = jnp.moveaxis(a, -1, 1)  # [k, C, E, *S]
    x = lax.pad(
        x, jnp.zeros((), x.dtype),
        ((0, 0, 0),) * 3 + tuple((lo, hi, d - 1) for (lo, hi), d in zip(spec.padding, spec.lhs_dilation)),
    )
    c, e = x.shape[1], x.shape[2]
    out_sp = tuple(
        (sz - (kk - 1) * d - 1) // st + 1
        for sz, kk, d, st in zip(x.shape[3:], ks, spec.rhs_dilation, strides)
    )
    if all(d == 1 for d in spec.rhs_dilation) and all(kk % st == 0 for kk, st in zip(ks, strides)):
        qs = tuple(kk // st for kk, st in zip(ks, strides))
        ls = tuple(m + q - 1 for m, q in zip(out_sp, qs))
        x = x[(slice(None),) * 3 + tuple(slice(0, st * l) for st, l in zip(strides, ls))]
        x = x.reshape((k, c, e) + sum(((l, st) for l, st in zip(ls, strides)), ()))
        x = x.transpose((0,) + tuple(range(4, 3 + 2 * n, 2)) + (1, 2) + tuple(range(3, 3 + 2 * n, 2)))
        cols = [  # each [k, *strides, C, E, *S']
            x[(Ellipsis,) + tuple(slice(q, q + m) for q, m in zip(offs, out_sp))]
            for offs in itertools.product(*(range(q) for q in qs))
        ]
        p = jnp.stack(cols, axis=1).reshape((k, -1, c, math.prod(out_sp) * e))

        def to_kernel(dw):
            dw = dw.reshape((k,) + qs + strides + dw.shape[-2:])
            perm = (0,) + sum(((1 + i, 1 + n + i) for i in range(n)), ()) + (2 * n + 1, 2 * n + 2)
            return dw.transpose(perm).reshape((k,) + ks + dw.shape[-2:])

        return p, to_kernel
    cols = []
    for offs in itertools.product(*(range(kk) for kk in ks)):
        start = tuple(o * d for o, d in zip(offs, spec.rhs_dilation))
        limit = tuple(s0 + st * (m - 1) + 1 for s0, st, m in zip(start, strides, out_sp))
        cols.append(lax.slice(x, (0, 0, 0) + start, x.shape[:3] + limit, (1, 1, 1) + strides))
    p = jnp.stack(cols, axis=1)  # [k, W, C, E, *S']
    return p.reshape(p.shape[:3] + (-1,)), lambda dw: dw.reshape((k,) + ks + dw.shape[-2:])


def _operand_grads(layer: _Layer, a, g, w_shape, w_dtype):
    """Per-example gradients [k, *w_shape] w.r.t. the layer's weight operand (after the structural chain)."""
    if layer.prim.name == "dot_general":
        rows = _dense_rows(layer, a, g)
        if rows is not None and len(w_shape) == 2:
            ar, gr = rows
            if ar.shape[1] == 1:
                dw = ar[:, 0, :, None] * gr[:, 0, None, :]
            else:
                dw = jnp.einsum("bni,bno->bio", ar, gr)
            (lc, rc), _ = layer.params["dimension_numbers"]
            wc = lc if layer.param_side == 0 else rc
            dw = dw if wc[0] == 0 else jnp.swapaxes(dw, 1, 2)
            return dw.astype(w_dtype)
    elif layer.prim.name == "conv_general_dilated":
        dw = _conv_grads(layer, a, g, w_shape)
        if dw is not None:
            return dw.astype(w_dtype)
    # General case: the transpose of the op w.r.t. the weight, per example.
    w0 = jnp.zeros(w_shape, w_dtype)

    def vjp(a_i, g_i):
        def op(w):
            operands = (w, a_i) if layer.param_side == 0 else (a_i, w)
            return layer.prim.bind(*operands, **layer.params)

        return jax.vjp(op, w0)[1](g_i)[0]

    return jax.vmap(vjp)(a, g)


def _to_leaf(struct: _Struct, leaf, d_operand):
    """Maps per-example gradients w.r.t. struct.apply(leaf) back to the leaf (the chain's transpose)."""
    if not struct.chain:
        return d_operand
    _, vjp = jax.vjp(struct.apply, leaf)
    return jax.vmap(lambda d: vjp(d)[0])(d_operand)


def _layer_grads(plan, leaves, acts, g_taps):
    """{leaf: [k, *leaf.shape]} summed over the layers using each leaf."""
    out = {}
    for layer, a, g in zip(plan.layers, acts, g_taps):
        leaf = leaves[layer.struct.leaf]
        w = jax.eval_shape(layer.struct.apply, leaf)
        d = _to_leaf(layer.struct, leaf, _operand_grads(layer, a, g, w.shape, w.dtype))
        d = d.astype(jnp.result_type(leaf))
        out[layer.struct.leaf] = d if layer.struct.leaf not in out else out[layer.struct.leaf] + d
    return out


def layerwise_per_example_grads(
    loss_fn: Callable[[Any, Any], jax.Array], params: Any, batch: Any, *, strict: bool = True
) -> Any:
    """Every example's gradient ∇θ ℓ(θ, xᵢ) from one batched forward/backward pass.

    Equal to `jax.vmap(jax.grad(loss_fn), in_axes=(None, 0))(params, batch)` for any `loss_fn`, and
    much faster on XLA:CPU for networks of dense and convolution layers: per example
    ∂ℓᵢ/∂W = Σₙ aᵢₙᵀ gᵢₙ (Goodfellow 2015), with aᵢₙ a layer's input rows (im2col patches for a
    convolution) and gᵢₙ the cotangent of its output, read off the traced computation (module docstring).

    Args:
      loss_fn: `loss_fn(params, example) -> scalar` for ONE example (any library, or plain jax).
      params: the parameter pytree passed to `loss_fn`.
      batch: pytree of arrays, each with a leading example axis of size k.
      strict: raise `LayerwiseUnsupported` if a parameter is used other than as the weight operand of a
        dot_general/conv_general_dilated (True), or give such leaves their exact per-example gradients
        through per-example copies in the same pass (False).

    Returns:
      A pytree like `params` whose leaves have a leading axis k.

    Raises:
      LayerwiseUnsupported: at trace time, a non-floating parameter, or with `strict` a parameter used
        by another operation (the message names the parameter and the operation).
    """
    k, plan, leaves, treedef, acts, g_taps, g_copies = _capture(loss_fn, params, batch, strict)
    grads = _layer_grads(plan, leaves, acts, g_taps)
    for i, g in g_copies.items():
        grads[i] = g if i not in grads else grads[i] + g
    out = [grads.get(i, jnp.zeros((k,) + jnp.shape(l), jnp.result_type(l))) for i, l in enumerate(leaves)]
    return jax.tree_util.tree_unflatten(treedef, out)


def layerwise_gram(
    f: Callable[[Any, Any], jax.Array], params: Any, xs_a: Any, xs_b: Any = None, *, strict: bool = True
) -> jax.Array:
    """Gram matrix Gᵢⱼ = ⟨∇θ f(θ, xᵃᵢ), ∇θ f(θ, xᵇⱼ)⟩ (the empirical NTK of a scalar f) layer by layer.

    Same network handling as `layerwise_per_example_grads`. A dense layer whose weight is used by that
    layer alone adds Σₙₘ (aᵢₙ · aⱼₘ)(gᵢₙ · gⱼₘ) in that factored form when it needs fewer flops than the
    per-example gradients (e.g. (A Aᵀ) ⊙ (G Gᵀ) for one row per example); every other leaf adds J Jᵀ of
    its per-example gradients.

    Args:
      f: `f(params, x) -> scalar` for ONE input (e.g. a reduced Q-value or a per-example loss).
      params: the parameter pytree passed to `f`.
      xs_a: pytree of arrays with a leading axis k_a.
      xs_b: pytree like `xs_a` with a leading axis k_b; None means `xs_a` (a symmetric Gram matrix).
      strict: as in `layerwise_per_example_grads`.

    Returns:
      [k_a, k_b] Gram matrix.

    Raises:
      LayerwiseUnsupported: as `layerwise_per_example_grads`.
    """
    k_a = validation.leading_dim(xs_a, "xs_a")
    if xs_b is None:
        xs = xs_a
    else:
        validation.leading_dim(xs_b, "xs_b")
        validation.check_same_structure(_one_example(xs_a), _one_example(xs_b), "xs_a", "xs_b")
        xs = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), xs_a, xs_b)
    k, plan, leaves, treedef, acts, g_taps, g_copies = _capture(f, params, xs, strict)
    k_b = k - k_a if xs_b is not None else k_a

    def split(x):
        return (x, x) if xs_b is None else (x[:k_a], x[k_a:])

    dtype = jnp.result_type(*leaves) if leaves else jnp.float32
    gram = jnp.zeros((k_a, k_b), dtype)
    uses: dict[int, list[int]] = {}
    for i, layer in enumerate(plan.layers):
        uses.setdefault(layer.struct.leaf, []).append(i)

    materialise = []
    for leaf, idxs in uses.items():
        rows = None
        if leaf not in g_copies and len(idxs) == 1:
            layer = plan.layers[idxs[0]]
            if layer.prim.name == "dot_general" and layer.struct.bijective:
                rows = _dense_rows(layer, acts[idxs[0]], g_taps[idxs[0]])
        if rows is not None:
            ar, gr = rows
            n, din, dout = ar.shape[1], ar.shape[2], gr.shape[2]
            factored = k_a * k_b * n * n * (din + dout + 1)
            materialised = k * n * din * dout + k_a * k_b * din * dout
            if factored <= materialised:
                (a_a, a_b), (g_a, g_b) = split(ar), split(gr)
                if n == 1:
                    gram = gram + (
                        jnp.matmul(a_a[:, 0], a_b[:, 0].T, precision=_PRECISION)
                        * jnp.matmul(g_a[:, 0], g_b[:, 0].T, precision=_PRECISION)
                    ).astype(dtype)
                else:
                    aa = jnp.einsum("inx,jmx->ijnm", a_a, a_b, precision=_PRECISION)
                    gg = jnp.einsum("iny,jmy->ijnm", g_a, g_b, precision=_PRECISION)
                    gram = gram + jnp.sum(aa * gg, axis=(2, 3)).astype(dtype)
                continue
        materialise.append(leaf)
    sub = _Plan([l for l in plan.layers if l.struct.leaf in materialise], plan.copied)
    sub_acts = [a for l, a in zip(plan.layers, acts) if l.struct.leaf in materialise]
    sub_g = [g for l, g in zip(plan.layers, g_taps) if l.struct.leaf in materialise]
    grads = _layer_grads(sub, leaves, sub_acts, sub_g)
    for i, g in g_copies.items():
        grads[i] = g if i not in grads else grads[i] + g
    for g in grads.values():
        j_a, j_b = split(g.reshape(k, -1))
        gram = gram + jnp.matmul(j_a, j_b.T, precision=_PRECISION).astype(dtype)
    return gram
