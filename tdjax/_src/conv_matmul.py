"""Convolutions as matmuls (with shifted outputs, strided slices or im2col), for any traced JAX function.

`convs_as_matmuls(fn)` returns a function that computes what `fn` computes, with every
`conv_general_dilated` of its traced computation evaluated as

  y[n, p, o] = Σ_{κ, c} x_pad[n, s·p + d·κ, c] · W[κ, c, o]

(p an output position, κ a kernel offset, s the window strides, d the kernel dilation) by matmuls, in one
of three layouts chosen per convolution (`conv_as_matmul`): "shift" (one matmul of the whole input with
every offset's kernel side by side, then a sum of shifted slices of its output), "slices" (Σ_κ one matmul
per strided input slice) or "im2col" (the slices concatenated along the channels, then one matmul). Same
maths as the convolution up to the order of the floating-point sums. Whatever library built the network
(flax linen or NNX, equinox, haiku, plain `jax.lax`): it works on the jaxpr, with public JAX APIs only
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

import dataclasses
import functools
import itertools
import math
from typing import Any, Callable, Optional, Tuple

import jax
from jax import lax
from jax.extend import core as jcore

# the jaxpr helpers shared with the per-example fast path (the same inlined call primitives)
from tdjax._src.layerwise import INLINED_PRIMITIVES, _bind, _sub_jaxpr

__all__ = ["convs_as_matmuls", "conv_as_matmul", "staged_forward"]

CONV_PRIMITIVE = "conv_general_dilated"


def _inverse(perm):
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


def supported(params: dict) -> bool:
    """Whether `conv_as_matmul` rewrites a convolution with these bind parameters."""
    return (params.get("feature_group_count", 1) == 1 and params.get("batch_group_count", 1) == 1
            and all(d == 1 for d in (params.get("lhs_dilation") or ())))


@dataclasses.dataclass(frozen=True)
class _ConvPlan:
    """The static layout of one convolution as matmuls (shapes and bind parameters only)."""

    dn: Any  # lax.ConvDimensionNumbers
    nsp: int  # spatial dimensions
    padding: tuple  # ((lo, hi), ...) resolved
    out: tuple  # output spatial sizes
    s2d: Optional[tuple]  # the strides folded by space-to-depth, or None
    strides: tuple  # slice strides (1s after space-to-depth)
    dil: tuple
    offsets: tuple  # kernel offsets κ (after space-to-depth), row-major like the kernel's reshape
    cin: int  # channels per slice (after space-to-depth)
    mode: str  # "slices" (Σ_κ slice_κ @ W[κ]), "im2col" (one matmul of the concatenated slices) or "shift"
    inner: tuple  # the input's spatial sizes after padding and space-to-depth
    precision: Any
    preferred_element_type: Any

    @property
    def empty(self) -> bool:
        return any(o <= 0 for o in self.out)

    @property
    def n_parts(self) -> int:  # how many input-side parts `_lhs_parts` returns
        return len(self.offsets) if self.mode == "slices" else 1


def _plan(lhs_shape, rhs_shape, *, window_strides, padding, rhs_dilation=None, dimension_numbers,
          precision=None, preferred_element_type=None, prepared: bool = False, **_: Any) -> _ConvPlan:
    """The layout of one convolution. `prepared`: its input's side is computed once and reused for
    many kernels (`staged_forward`), so the copy of im2col costs nothing per kernel and im2col is used."""
    dn = dimension_numbers
    if not isinstance(dn, lax.ConvDimensionNumbers):
        dn = lax.conv_dimension_numbers(lhs_shape, rhs_shape, dn)
    nsp = len(dn.lhs_spec) - 2
    spatial = tuple(lhs_shape[d] for d in dn.lhs_spec[2:])
    ksize = tuple(rhs_shape[d] for d in dn.rhs_spec[2:])
    cin = rhs_shape[dn.rhs_spec[1]]
    dil = tuple(rhs_dilation or (1,) * nsp)
    strides = tuple(window_strides)
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(spatial, [(k - 1) * d + 1 for k, d in zip(ksize, dil)], strides, padding)
    padding = tuple((int(lo), int(hi)) for lo, hi in padding)
    padded = tuple(spatial[d] + padding[d][0] + padding[d][1] for d in range(nsp))
    out = tuple((padded[d] - ((ksize[d] - 1) * dil[d] + 1)) // strides[d] + 1 for d in range(nsp))
    s2d = None
    if any(s > 1 for s in strides) and all(d == 1 for d in dil):
        s2d = strides
        ksize = tuple(-(-ksize[d] // strides[d]) for d in range(nsp))
        cin, strides = cin * math.prod(s2d), (1,) * nsp
    offsets = tuple(itertools.product(*(range(k) for k in ksize)))
    inner = tuple(out[d] + (ksize[d] - 1) * dil[d] if s2d is not None else padded[d] for d in range(nsp))
    if len(offsets) == 1:
        mode = "slices"
    elif prepared:
        mode = "im2col"
    elif all(s == 1 for s in strides) and math.prod(inner) <= _MAX_SHIFT_WASTE * math.prod(out):
        mode = "shift"
    else:
        mode = "im2col" if cin < _MIN_INNER else "slices"
    return _ConvPlan(dn, nsp, padding, out, s2d, strides, dil, offsets, cin, mode, inner, precision,
                     preferred_element_type)


def _lhs_parts(plan: _ConvPlan, lhs: jax.Array) -> list:
    """The input's side, which does not depend on the kernel: the slices x_κ, their concatenation
    (im2col) or, for "shift", the whole (padded, space-to-depth) input."""
    dn, nsp = plan.dn, plan.nsp
    x = lax.transpose(lhs, (dn.lhs_spec[0], *dn.lhs_spec[2:], dn.lhs_spec[1]))  # [N, spatial..., C]
    if any(lo != 0 or hi != 0 for lo, hi in plan.padding):
        x = lax.pad(x, lax.full((), 0, x.dtype), [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in plan.padding] + [(0, 0, 0)])
    if plan.s2d is not None:
        x = _space_to_depth_input(x, plan.s2d, plan.out, _blocks(plan))
    n = x.shape[0]
    if plan.mode == "shift":
        return [x]

    def piece(kappa):
        start = (0, *(kappa[d] * plan.dil[d] for d in range(nsp)), 0)
        limit = (n, *(start[1 + d] + (plan.out[d] - 1) * plan.strides[d] + 1 for d in range(nsp)), plan.cin)
        return lax.slice(x, start, limit, (1, *plan.strides, 1))

    pieces = [piece(kappa) for kappa in plan.offsets]
    return [lax.concatenate(pieces, nsp + 1)] if plan.mode == "im2col" else pieces


def _rhs_parts(plan: _ConvPlan, rhs: jax.Array) -> list:
    """The kernel's side: W[κ] per offset (or the whole kernel as one [K·C, O] matrix)."""
    dn = plan.dn
    w = lax.transpose(rhs, (*dn.rhs_spec[2:], dn.rhs_spec[1], dn.rhs_spec[0]))  # [spatial..., C, O]
    if plan.s2d is not None:
        w = _space_to_depth_kernel(w, plan.s2d)
    if plan.mode == "im2col":
        return [w.reshape(len(plan.offsets) * plan.cin, w.shape[-1])]
    if plan.mode == "shift":  # [C, K·O]: every offset's kernel side by side, in `plan.offsets` order
        nsp = plan.nsp
        w = lax.transpose(w, (nsp, *range(nsp), nsp + 1))
        return [w.reshape(plan.cin, len(plan.offsets) * w.shape[-1])]
    return [w[kappa] for kappa in plan.offsets]


def _combine(plan: _ConvPlan, lhs_parts: list, rhs_parts: list) -> jax.Array:
    nsp = plan.nsp
    matmul = lambda a, b: lax.dot_general(a, b, (((nsp + 1,), (0,)), ((), ())), precision=plan.precision,  # noqa: E731
                                          preferred_element_type=plan.preferred_element_type)
    if plan.mode == "shift":  # z = x @ [W[κ]...] at every input position; y[p] = Σ_κ z[p + d·κ, κ]
        z = matmul(lhs_parts[0], rhs_parts[0])
        n, n_k = z.shape[0], len(plan.offsets)
        z = z.reshape(n, *plan.inner, n_k, z.shape[-1] // n_k)

        def shifted(i, kappa):
            start = (0, *(kappa[d] * plan.dil[d] for d in range(nsp)), i, 0)
            limit = (n, *(start[1 + d] + plan.out[d] for d in range(nsp)), i + 1, z.shape[-1])
            return lax.squeeze(lax.slice(z, start, limit), (nsp + 1,))

        y = functools.reduce(lax.add, [shifted(i, kappa) for i, kappa in enumerate(plan.offsets)])
    else:
        y = functools.reduce(lax.add, [matmul(a, b) for a, b in zip(lhs_parts, rhs_parts)])  # [N, out..., O]
    # to the output layout: axis out_spec[0] is N, out_spec[1] is O, out_spec[2 + d] spatial d
    dn = plan.dn
    return lax.transpose(y, _inverse((dn.out_spec[0], *dn.out_spec[2:], dn.out_spec[1])))


def conv_as_matmul(lhs: jax.Array, rhs: jax.Array, **params: Any) -> jax.Array:
    """`lax.conv_general_dilated(lhs, rhs)` with these bind parameters, as matmuls.

    Only for `supported(params)` convolutions (one feature/batch group, no lhs dilation). A strided,
    undilated convolution is first folded to stride 1 by space-to-depth (blocks of s input positions
    become s·C channels, the kernel is zero-padded to whole blocks), which turns its strided slices into
    contiguous ones. Then, over the kernel offsets κ, one of:
      shift:  z = x @ [W[κ₁] … W[κ_K]] at every input position, y[p] = Σ_κ z[p + d·κ, κ] (no input copies;
              when the input has at most `_MAX_SHIFT_WASTE` times the output's positions);
      slices: y = Σ_κ slice_κ(x) @ W[κ];
      im2col: one matmul of the concatenated slices, when a slice has few channels (< `_MIN_INNER`)."""
    plan = _plan(lhs.shape, rhs.shape, **params)
    if plan.empty:  # an empty output: the convolution's own shape rule
        return lax.conv_general_dilated(lhs, rhs, params["window_strides"], plan.padding, None,
                                        params.get("rhs_dilation"), plan.dn, precision=plan.precision,
                                        preferred_element_type=plan.preferred_element_type)
    return _combine(plan, _lhs_parts(plan, lhs), _rhs_parts(plan, rhs))


# Below this many input channels per kernel offset, slices are concatenated into one matmul (a matmul
# with a short inner dimension runs far below the machine's rate).
_MIN_INNER = 32
# "shift" (one matmul of the whole input with every offset's kernel side by side, then a sum of shifted
# output slices: no input copies, which XLA:CPU does slowly) when it computes at most this many times the
# output positions: the Nature CNN's 2nd layer (10² blocks for 9² outputs) yes, its 3rd (9² for 7²) no.
_MAX_SHIFT_WASTE = 1.5


def _blocks(plan: _ConvPlan) -> tuple:
    """Kernel size in whole blocks after space-to-depth."""
    return tuple(max(k[d] for k in plan.offsets) + 1 for d in range(plan.nsp))


def _space_to_depth_input(x, strides, out, q):
    """A VALID stride-s convolution's input x [N, S..., C] as blocks of s positions: [N, B..., s·C],
    B = out + q − 1 blocks (cropped, or zero-padded where only the kernel's zero padding meets it)."""
    nsp = len(strides)
    n, c = x.shape[0], x.shape[-1]
    need = tuple((out[d] + q[d] - 1) * strides[d] for d in range(nsp))  # whole blocks of input used
    x = lax.slice(x, (0,) * (nsp + 2), (n, *(min(x.shape[1 + d], need[d]) for d in range(nsp)), c))
    grow = [(0, 0, 0)] + [(0, need[d] - x.shape[1 + d], 0) for d in range(nsp)] + [(0, 0, 0)]
    if any(g[1] for g in grow):
        x = lax.pad(x, lax.full((), 0, x.dtype), grow)
    blocks = tuple(need[d] // strides[d] for d in range(nsp))
    x = x.reshape(n, *itertools.chain.from_iterable(zip(blocks, strides)), c)
    x = lax.transpose(x, (0, *range(1, 2 * nsp, 2), *range(2, 2 * nsp + 1, 2), 2 * nsp + 1))
    return x.reshape(n, *blocks, math.prod(strides) * c)


def _space_to_depth_kernel(w, strides):
    """The kernel w [K..., C, O] zero-padded to q = ⌈K/s⌉ whole blocks: [q..., s·C, O] (matching
    `_space_to_depth_input`'s channel order)."""
    nsp = len(strides)
    c, o = w.shape[-2:]
    q = tuple(-(-w.shape[d] // strides[d]) for d in range(nsp))
    w = lax.pad(w, lax.full((), 0, w.dtype), [(0, q[d] * strides[d] - w.shape[d], 0) for d in range(nsp)]
                + [(0, 0, 0), (0, 0, 0)])
    w = w.reshape(*itertools.chain.from_iterable(zip(q, strides)), c, o)
    w = lax.transpose(w, (*range(0, 2 * nsp, 2), *range(1, 2 * nsp, 2), 2 * nsp, 2 * nsp + 1))
    return w.reshape(*q, math.prod(strides) * c, o)


def _evaluate(jaxpr, consts, args) -> list:
    env: dict = {}
    read = lambda v: v.val if isinstance(v, jcore.Literal) else env[v]  # noqa: E731
    for var, val in itertools.chain(zip(jaxpr.constvars, consts), zip(jaxpr.invars, args)):
        env[var] = val
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name in INLINED_PRIMITIVES:
            sub, sub_consts = _sub_jaxpr(eqn)
            outs = _evaluate(sub, sub_consts, ins)
        elif name == CONV_PRIMITIVE and supported(eqn.params):
            with eqn.ctx.manager:
                outs = [conv_as_matmul(*ins, **eqn.params)]
        else:
            outs = _bind(eqn, ins)
        for var, val in zip(eqn.outvars, outs):
            env[var] = val
    return [read(v) for v in jaxpr.outvars]


def convs_as_matmuls(fn: Callable) -> Callable:
    """`fn` with every supported convolution of its traced computation as matmuls (`conv_as_matmul`).

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


# ----------------------------------------------------------------------------------------------------
# Two stages: what does not depend on the parameters, once; the rest, per parameter set.


def _staged(jaxpr, consts, args, known, prepare: bool, store: list, cursor: list):
    """Evaluates a jaxpr in one of two stages. Known values depend only on the known inputs (the data).

    prepare: evaluates the known equations and appends to `store` every known value that parameter-
      dependent work needs (a convolution with a known input and an unknown kernel contributes its
      input's side `_lhs_parts`, not its input); unknown equations are not evaluated.
    finish: skips the known equations, takes those values from `store` in the same order, and evaluates
      the unknown equations (supported convolutions as matmuls).
    Returns (outputs, whether each output is known).
    """
    env: dict = {}
    kn: dict = {}
    taken: set = set()
    outs: Any
    out_known: list
    for var, val in zip(jaxpr.constvars, consts):
        env[var], kn[var] = val, True
    for var, val, k in zip(jaxpr.invars, args, known):
        env[var], kn[var] = val, k

    def is_known(v):
        return isinstance(v, jcore.Literal) or kn[v]

    def boundary(v):  # a known value that parameter-dependent work reads
        if isinstance(v, jcore.Literal):
            return v.val
        if v not in taken:
            taken.add(v)
            if prepare:
                store.append(env[v])
            else:
                env[v] = store[cursor[0]]
                cursor[0] += 1
        return env[v]

    for eqn in jaxpr.eqns:
        ks = [is_known(v) for v in eqn.invars]
        name = eqn.primitive.name
        if all(ks):
            outs = _bind(eqn, [env[v] if not isinstance(v, jcore.Literal) else v.val for v in eqn.invars]) \
                if prepare else [None] * len(eqn.outvars)
            out_known = [True] * len(eqn.outvars)
        elif name in INLINED_PRIMITIVES:
            sub, sub_consts = _sub_jaxpr(eqn)
            vals = [v.val if isinstance(v, jcore.Literal) else env[v] for v in eqn.invars]
            outs, out_known = _staged(sub, sub_consts, vals, ks, prepare, store, cursor)
        elif name == CONV_PRIMITIVE and supported(eqn.params) and ks[0] and not ks[1]:
            plan = _plan(eqn.invars[0].aval.shape, eqn.invars[1].aval.shape, **eqn.params, prepared=True)
            n_parts = plan.n_parts
            if plan.empty:
                ins = [boundary(eqn.invars[0]), env[eqn.invars[1]]]
                outs = None if prepare else _bind(eqn, ins)
            elif prepare:
                with eqn.ctx.manager:
                    store.extend(_lhs_parts(plan, env[eqn.invars[0]]))
                outs = None
            else:
                parts = store[cursor[0]:cursor[0] + n_parts]
                cursor[0] += n_parts
                with eqn.ctx.manager:
                    outs = [_combine(plan, parts, _rhs_parts(plan, env[eqn.invars[1]]))]
            outs = outs or [None]
            out_known = [False]
        else:
            ins = [boundary(v) if k else env[v] for v, k in zip(eqn.invars, ks)]
            if prepare:
                outs = [None] * len(eqn.outvars)
            elif name == CONV_PRIMITIVE and supported(eqn.params):
                with eqn.ctx.manager:
                    outs = [conv_as_matmul(*ins, **eqn.params)]
            else:
                outs = _bind(eqn, ins)
            out_known = [False] * len(eqn.outvars)
        for var, val, k in zip(eqn.outvars, outs, out_known):
            env[var], kn[var] = val, k
    results = [boundary(v) if is_known(v) else env[v] for v in jaxpr.outvars]
    return results, [is_known(v) for v in jaxpr.outvars]


def staged_forward(fn: Callable) -> Tuple[Callable, Callable]:
    """(prepare, finish) for `fn(params, xs)` evaluated at many parameter sets on the same `xs`.

    `prepare(params, xs) -> list` computes, once, everything of `fn`'s traced computation that does not
    depend on `params` and that the rest reads (for a convolution of the data itself, the im2col
    patches of its input); `finish(params, xs, prepared)` computes `fn(params, xs)` from it, with every supported
    convolution as matmuls (`convs_as_matmuls`). Equal to `fn` up to float rounding.
    `params` in `prepare` only fixes shapes and dtypes (its values are not read).
    """

    def trace(params, xs):
        p_leaves, p_def = jax.tree_util.tree_flatten(params)
        x_leaves, x_def = jax.tree_util.tree_flatten(xs)
        n = len(p_leaves)
        flat = lambda *ls: fn(jax.tree_util.tree_unflatten(p_def, ls[:n]),  # noqa: E731
                              jax.tree_util.tree_unflatten(x_def, ls[n:]))
        closed, out_shape = jax.make_jaxpr(flat, return_shape=True)(*p_leaves, *x_leaves)
        known = [False] * n + [True] * len(x_leaves)
        return closed, p_leaves + x_leaves, known, jax.tree_util.tree_structure(out_shape)

    def prepare(params, xs) -> list:
        closed, leaves, known, _ = trace(params, xs)
        store: list = []
        _staged(closed.jaxpr, closed.consts, [None if not k else v for v, k in zip(leaves, known)], known,
                True, store, [0])
        return store

    def finish(params, xs, prepared: list):
        closed, leaves, known, out_def = trace(params, xs)
        cursor = [0]
        outs, _ = _staged(closed.jaxpr, closed.consts, [None if k else v for v, k in zip(leaves, known)], known,
                          False, list(prepared), cursor)
        if cursor[0] != len(prepared):
            raise RuntimeError(f"staged_forward: finish read {cursor[0]} of {len(prepared)} prepared values; "
                               "prepare and finish must be called with the same function and shapes.")
        return jax.tree_util.tree_unflatten(out_def, outs)

    return prepare, finish
