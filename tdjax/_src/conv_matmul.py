"""Convolutions as strided slices (im2col) and one matmul, for any traced JAX function.

`convs_as_matmuls(fn)` returns a function that computes what `fn` computes, with every
`conv_general_dilated` of its traced computation evaluated as

  y[n, p, o] = Σ_{κ, c} x_pad[n, s·p + d·κ, c] · W[κ, c, o]
             = (patches(x) @ W.reshape(K·C, O))[n, p, o]

(p an output position, κ a kernel offset, s the window strides, d the kernel dilation): K strided
slices of the padded input, concatenated along the channels, then one `dot_general`. Same maths as the
convolution up to the order of the floating-point sums. Whatever library built the network (flax linen or
NNX, equinox, haiku, plain `jax.lax`): it works on the jaxpr, with public JAX APIs only
(`jax.make_jaxpr`, `jax.extend.core`), like `tdjax._src.layerwise`.

Why: XLA:CPU's default convolutions are several times slower per FLOP than its matmuls, most of all on
large batches and inside loop bodies (jax-ml/jax#12868), while an update matrix (Lyle et al. 2022,
eq. 21) is k·m forward passes of one network. `update_matrix(..., probe_forward="matmul")` evaluates its
probe forwards this way (the default on CPU; GPUs keep their convolutions).

Convolutions this does not rewrite, evaluated as they are (exact either way): feature or batch groups
> 1, input (lhs) dilation, and any inside control flow or custom-derivative primitives other than
`jit`, `closed_call` and `jax.checkpoint` (which are inlined). The primitive names used are checked by
tests/test_conv_matmul.py.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any, Callable

import jax
from jax import lax
from jax.extend import core as jcore

__all__ = ["convs_as_matmuls", "conv_as_matmul"]

CONV_PRIMITIVE = "conv_general_dilated"
INLINED_PRIMITIVES = ("jit", "pjit", "closed_call", "core_call", "remat2", "checkpoint")


def _inverse(perm):
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


def supported(params: dict) -> bool:
    """Whether `conv_as_matmul` rewrites a convolution with these bind parameters."""
    return (params.get("feature_group_count", 1) == 1 and params.get("batch_group_count", 1) == 1
            and all(d == 1 for d in (params.get("lhs_dilation") or ())))


def conv_as_matmul(lhs: jax.Array, rhs: jax.Array, *, window_strides, padding, lhs_dilation=None,
                   rhs_dilation=None, dimension_numbers, feature_group_count=1, batch_group_count=1,
                   precision=None, preferred_element_type=None, **_: Any) -> jax.Array:
    """`lax.conv_general_dilated` with these (bind) parameters, as slices and matmuls.

    Only for `supported(params)` convolutions (one feature/batch group, no lhs dilation). A strided,
    undilated convolution is first folded to stride 1 by space-to-depth (blocks of s input positions
    become s·C channels, the kernel is zero-padded to whole blocks), which turns its strided slices into
    contiguous ones. Then y = Σ_κ slice_κ(x) @ W[κ] over the kernel offsets κ, or, when a slice has few
    channels (< `_MIN_INNER`), one matmul of the concatenated slices (im2col)."""
    del feature_group_count, batch_group_count, lhs_dilation
    dn = dimension_numbers
    if not isinstance(dn, lax.ConvDimensionNumbers):
        dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dn)
    nsp = len(dn.lhs_spec) - 2
    # x: [N, spatial..., C]; w: [spatial..., C, O]
    x = lax.transpose(lhs, (dn.lhs_spec[0], *dn.lhs_spec[2:], dn.lhs_spec[1]))
    w = lax.transpose(rhs, (*dn.rhs_spec[2:], dn.rhs_spec[1], dn.rhs_spec[0]))
    ksize, cout = tuple(w.shape[:nsp]), w.shape[nsp + 1]
    dil = tuple(rhs_dilation or (1,) * nsp)
    strides = tuple(window_strides)
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(x.shape[1:1 + nsp], [(k - 1) * d + 1 for k, d in zip(ksize, dil)],
                                      strides, padding)
    if any(lo != 0 or hi != 0 for lo, hi in padding):
        zero = lax.full((), 0, x.dtype)
        x = lax.pad(x, zero, [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in padding] + [(0, 0, 0)])
    out = tuple((x.shape[1 + d] - ((ksize[d] - 1) * dil[d] + 1)) // strides[d] + 1 for d in range(nsp))
    if any(o <= 0 for o in out):  # an empty output: the convolution's own shape rule
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, None, rhs_dilation, dn,
                                        precision=precision, preferred_element_type=preferred_element_type)
    if any(s > 1 for s in strides) and all(d == 1 for d in dil):
        x, w = _space_to_depth(x, w, strides, out)
        ksize, strides = tuple(w.shape[:nsp]), (1,) * nsp
    n, cin = x.shape[0], x.shape[-1]
    offsets = list(itertools.product(*(range(k) for k in ksize)))  # row-major, like w's reshape

    def piece(kappa):
        start = (0, *(kappa[d] * dil[d] for d in range(nsp)), 0)
        limit = (n, *(start[1 + d] + (out[d] - 1) * strides[d] + 1 for d in range(nsp)), cin)
        return lax.slice(x, start, limit, (1, *strides, 1))

    def matmul(a, b):  # [N, out..., c] @ [c, O]
        return lax.dot_general(a, b, (((nsp + 1,), (0,)), ((), ())), precision=precision,
                               preferred_element_type=preferred_element_type)

    if cin < _MIN_INNER and len(offsets) > 1:  # im2col: one matmul over all offsets' channels
        patches = lax.concatenate([piece(kappa) for kappa in offsets], nsp + 1)
        y = matmul(patches, w.reshape(len(offsets) * cin, cout))
    else:
        y = functools.reduce(lax.add, [matmul(piece(kappa), w[kappa]) for kappa in offsets])
    # to the output layout: axis out_spec[0] is N, out_spec[1] is O, out_spec[2 + d] spatial d
    current = (dn.out_spec[0], *dn.out_spec[2:], dn.out_spec[1])  # where each axis of y must go
    return lax.transpose(y, _inverse(current))


# Below this many input channels per kernel offset, slices are concatenated into one matmul (a matmul
# with a short inner dimension runs far below the machine's rate).
_MIN_INNER = 32


def _space_to_depth(x, w, strides, out):
    """A VALID stride-s convolution of x [N, S..., C] by w [K..., C, O] as a stride-1 one: blocks of s
    positions become channels; the kernel is zero-padded to q = ⌈K/s⌉ whole blocks. Returns (x', w')."""
    nsp = len(strides)
    n, c, o = x.shape[0], x.shape[-1], w.shape[-1]
    q = tuple(-(-w.shape[d] // strides[d]) for d in range(nsp))
    need = tuple((out[d] + q[d] - 1) * strides[d] for d in range(nsp))  # whole blocks of input used
    x = lax.slice(x, (0,) * (nsp + 2), (n, *(min(x.shape[1 + d], need[d]) for d in range(nsp)), c))
    grow = [(0, 0, 0)] + [(0, need[d] - x.shape[1 + d], 0) for d in range(nsp)] + [(0, 0, 0)]
    if any(g[1] for g in grow):  # positions only ever met by the kernel's zero padding
        x = lax.pad(x, lax.full((), 0, x.dtype), grow)
    blocks = tuple(need[d] // strides[d] for d in range(nsp))
    x = x.reshape(n, *itertools.chain.from_iterable(zip(blocks, strides)), c)
    x = lax.transpose(x, (0, *range(1, 2 * nsp, 2), *range(2, 2 * nsp + 1, 2), 2 * nsp + 1))
    x = x.reshape(n, *blocks, math.prod(strides) * c)
    w = lax.pad(w, lax.full((), 0, w.dtype), [(0, q[d] * strides[d] - w.shape[d], 0) for d in range(nsp)]
                + [(0, 0, 0), (0, 0, 0)])
    w = w.reshape(*itertools.chain.from_iterable(zip(q, strides)), c, o)
    w = lax.transpose(w, (*range(0, 2 * nsp, 2), *range(1, 2 * nsp, 2), 2 * nsp, 2 * nsp + 1))
    return x, w.reshape(*q, math.prod(strides) * c, o)


def _bind(eqn, invals):
    bind_params = eqn.primitive.get_bind_params(eqn.params)
    subfuns = ()
    if isinstance(bind_params, tuple):  # jax < 0.7 returned (subfuns, params)
        subfuns, bind_params = bind_params
    with eqn.ctx.manager:
        out = eqn.primitive.bind(*subfuns, *invals, **bind_params)
    return out if eqn.primitive.multiple_results else [out]


def _sub_jaxpr(eqn):
    sub = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
    if isinstance(sub, jcore.ClosedJaxpr):
        return sub.jaxpr, sub.consts
    return sub, ()


def _evaluate(jaxpr, consts, args) -> list:
    env: dict = {}
    read = lambda v: v.val if isinstance(v, jcore.Literal) else env[v]  # noqa: E731
    for var, val in itertools.chain(zip(jaxpr.constvars, consts), zip(jaxpr.invars, args)):
        env[var] = val
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name in INLINED_PRIMITIVES:
            outs = _evaluate(*_sub_jaxpr(eqn), ins)
        elif name == CONV_PRIMITIVE and supported(eqn.params):
            with eqn.ctx.manager:
                outs = [conv_as_matmul(*ins, **eqn.params)]
        else:
            outs = _bind(eqn, ins)
        for var, val in zip(eqn.outvars, outs):
            env[var] = val
    return [read(v) for v in jaxpr.outvars]


def convs_as_matmuls(fn: Callable) -> Callable:
    """`fn` with every supported convolution of its traced computation as slices and one matmul.

    The returned function takes and returns what `fn` does (any pytrees); it traces `fn` on each call's
    arguments, so use it under `jax.jit` like `fn`. Results equal `fn`'s to floating-point tolerance.
    """

    def wrapped(*args):
        leaves, treedef = jax.tree_util.tree_flatten(args)
        flat = lambda *ls: fn(*jax.tree_util.tree_unflatten(treedef, ls))  # noqa: E731
        closed, out_shape = jax.make_jaxpr(flat, return_shape=True)(*leaves)
        outs = _evaluate(closed.jaxpr, closed.consts, leaves)
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), outs)

    wrapped.__wrapped__ = fn  # type: ignore[attr-defined]
    return wrapped
