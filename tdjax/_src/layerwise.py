"""Per-example gradients and Gram (empirical NTK) matrices by layer-wise structured maths.

For a flax linen `nn.Dense` call y = a W + b, example i's gradient is ∂ℓᵢ/∂W = Σₙ aᵢₙᵀ gᵢₙ and
∂ℓᵢ/∂b = Σₙ gᵢₙ, where aᵢₙ is the layer's input, gᵢₙ = ∂ℓᵢ/∂yᵢₙ the cotangent of its output, and n
runs over any extra (non-feature) axes of one example. An `nn.Conv` is a Dense applied to the im2col
patches of its input, so the same formula holds with n running over output positions. One batched
forward/backward therefore gives every example's gradient: we capture aᵢ and gᵢ for every Dense/Conv
call with `flax.linen.intercept_methods` (the user's model and loss are not changed) and contract.

The Gram matrix Gᵢⱼ = ⟨∇θ fᵢ, ∇θ fⱼ⟩ (the empirical NTK of a scalar f, Jacot et al. 2018) is a sum
over layers of ⟨∂fᵢ/∂W, ∂fⱼ/∂W⟩ = Σₙₘ (aᵢₙ · aⱼₘ)(gᵢₙ · gⱼₘ): with one row per example (n = m = 1)
this is (A Aᵀ) ⊙ (G Gᵀ) and no per-example gradient is ever formed; otherwise whichever of that
factored form and the materialised Jacobian product J Jᵀ is cheaper is used, layer by layer.

Networks with parameters used anywhere other than Dense/Conv kernels and biases (LayerNorm, Embed, a
raw `self.param`, a weight penalty on `params` inside the loss) raise `LayerwiseUnsupported` at trace
time; callers fall back to `jax.vmap(jax.grad(loss_fn))`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import linear as flax_linear
from jax import lax

from tdjax._src import validation

__all__ = ["LayerwiseUnsupported", "layerwise_per_example_grads", "layerwise_gram"]


class LayerwiseUnsupported(NotImplementedError):
    """The layer-wise path cannot handle this network or loss; use `jax.vmap(jax.grad(...))`."""


@dataclasses.dataclass(frozen=True)
class _ConvSpec:
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]  # explicit (low, high) per spatial axis, after `pre_pad`
    pre_pad: Optional[tuple[str, tuple[tuple[int, int], ...]]]  # flax's jnp.pad (mode, pads) for CIRCULAR...
    lhs_dilation: tuple[int, ...]
    rhs_dilation: tuple[int, ...]
    groups: int


@dataclasses.dataclass(frozen=True)
class _Call:
    """One intercepted Dense/Conv call, as seen for one example."""

    kernel: int  # index of the kernel among the flattened params leaves
    bias: Optional[int]  # index of the bias leaf, None without bias
    conv: Optional[_ConvSpec]  # None for Dense
    out_shape: tuple[int, ...]  # one example's layer output
    out_dtype: Any


def _layer_spec(module: nn.Module, x_shape: Sequence[int]):
    """(`_ConvSpec` or "dense", None) for a supported layer; (None, reason) otherwise."""
    if isinstance(module, nn.Dense):
        if type(module).__call__ is not nn.Dense.__call__:
            return None, f"{type(module).__name__} overrides nn.Dense.__call__"
        if module.dot_general is not None or module.dot_general_cls is not None:
            return None, "nn.Dense with a custom dot_general"
        if module.promote_dtype is not flax_linear.promote_dtype:
            return None, "nn.Dense with a custom promote_dtype"
        return "dense", None
    if isinstance(module, nn.Conv):
        if type(module).__call__ is not nn.Conv.__call__:
            return None, f"{type(module).__name__} overrides nn.Conv.__call__"
        if module.conv_general_dilated is not None or module.conv_general_dilated_cls is not None:
            return None, "nn.Conv with a custom conv_general_dilated"
        if module.mask is not None:
            return None, "nn.Conv with a weight mask"
        if module.promote_dtype is not flax_linear.promote_dtype:
            return None, "nn.Conv with a custom promote_dtype"
        ks = (module.kernel_size,) if isinstance(module.kernel_size, int) else tuple(module.kernel_size)
        n = len(ks)

        def bcast(v):
            v = 1 if v is None else v
            return (v,) * n if isinstance(v, int) else tuple(v)

        strides, rhs_dil = bcast(module.strides), bcast(module.kernel_dilation)
        lhs_dil = bcast(module.input_dilation)
        eff_ks = tuple((k - 1) * d + 1 for k, d in zip(ks, rhs_dil))
        padding = flax_linear.canonicalize_padding(module.padding, n)
        pre_pad = None
        if padding in ("CIRCULAR", "REFLECT"):
            pre_pad = (
                {"CIRCULAR": "wrap", "REFLECT": "reflect"}[padding],
                tuple(((k - 1) // 2, k // 2) for k in eff_ks),
            )
            padding = "VALID"
        elif padding == "CAUSAL":
            if n != 1:
                return None, "CAUSAL padding on a conv that is not 1-D"
            pre_pad = ("constant", ((rhs_dil[0] * (ks[0] - 1), 0),))
            padding = "VALID"
        spatial = tuple(x_shape[len(x_shape) - n - 1 : -1])
        if pre_pad is not None:
            spatial = tuple(s + lo + hi for s, (lo, hi) in zip(spatial, pre_pad[1]))
        if isinstance(padding, str):
            if any(d != 1 for d in lhs_dil):
                return None, "nn.Conv with input_dilation and string padding"
            padding = lax.padtype_to_pads(spatial, eff_ks, strides, padding)
        padding = tuple((int(lo), int(hi)) for lo, hi in padding)
        return _ConvSpec(ks, strides, padding, pre_pad, lhs_dil, rhs_dil, module.feature_group_count), None
    return None, None


def _own_forward(x, kernel, bias, spec):
    """The layer's output from our reading of its hyper-parameters (used only to trace dependencies)."""
    x = x.astype(jnp.result_type(x, kernel))
    if spec == "dense":
        y = lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))
    else:
        n = len(spec.kernel_size)
        lead = x.shape[: x.ndim - n - 1]
        x = x.reshape((-1,) + x.shape[x.ndim - n - 1 :])
        if spec.pre_pad is not None:
            x = jnp.pad(x, ((0, 0),) + spec.pre_pad[1] + ((0, 0),), mode=spec.pre_pad[0])
        y = lax.conv_general_dilated(
            x, kernel, spec.strides, spec.padding, spec.lhs_dilation, spec.rhs_dilation,
            dimension_numbers=flax_linear._conv_dimension_numbers(x.shape),
            feature_group_count=spec.groups,
        )
        y = y.reshape(lead + y.shape[1:])
    if bias is not None:
        y = y + bias
    return y


class _Interceptor:
    """Method interceptor for one trace of the user's function.

    mode "discover": tracing ONE example under jax.jvp w.r.t. the params. Each supported call whose kernel is
      a params leaf is recorded and recomputed with stop-gradient parameters, so that afterwards any params
      tangent still reaching the output marks a parameter used outside the intercepted calls.
    mode "capture": tracing the batch under jax.vmap. Each recorded call gets its probe added to the output
      (the probe's gradient is the call's output cotangent) and its input is saved.
    """

    def __init__(self, leaves, mode, calls=None, probes=None):
        self.index = {id(leaf): i for i, leaf in enumerate(leaves)}
        self.mode = mode
        self.calls = [] if calls is None else calls
        self.probes = probes
        self.inputs = []
        self.reasons = {}  # leaf index -> why its layer was not intercepted

    def __call__(self, next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__" or not isinstance(module, (nn.Dense, nn.Conv)):
            return next_fun(*args, **kwargs)
        if module.is_initializing() or not module.has_variable("params", "kernel"):
            return next_fun(*args, **kwargs)
        kernel = module.get_variable("params", "kernel")
        bias = module.get_variable("params", "bias") if module.use_bias else None
        k_idx = self.index.get(id(kernel))
        b_idx = None if bias is None else self.index.get(id(bias))
        if k_idx is None or (bias is not None and b_idx is None):
            return next_fun(*args, **kwargs)  # e.g. stop_gradient(params): no gradient, or reported as used
        x = args[0] if args else kwargs["inputs"]
        spec, reason = _layer_spec(module, jnp.shape(x))
        if spec is None:
            self.reasons[k_idx] = reason
            return next_fun(*args, **kwargs)

        if self.mode == "discover":
            y = next_fun(*args, **kwargs)
            y_own = _own_forward(
                x, lax.stop_gradient(kernel), None if bias is None else lax.stop_gradient(bias), spec
            )
            if y_own.shape != y.shape:
                raise LayerwiseUnsupported(
                    f"layerwise: could not reproduce {type(module).__name__} {module.name!r} "
                    f"(output {y.shape}, ours {y_own.shape})."
                )
            self.calls.append(
                _Call(k_idx, b_idx, None if spec == "dense" else spec, tuple(y.shape), y.dtype)
            )
            return y_own.astype(y.dtype)

        i = len(self.inputs)
        call = self.calls[i] if i < len(self.calls) else None
        if call is None or call.kernel != k_idx:
            raise LayerwiseUnsupported(
                "layerwise: the loss called its layers in a different order on the batch than on one example."
            )
        y = next_fun(*args, **kwargs)
        if y.shape != self.probes[i].shape:
            raise LayerwiseUnsupported(
                f"layerwise: {type(module).__name__} {module.name!r} gave shape {y.shape} on the batch "
                f"but {self.probes[i].shape} on one example."
            )
        self.inputs.append(x)
        return y + self.probes[i]


def _discover(fn, leaves, treedef, example) -> list[_Call]:
    """Records the supported calls of `fn(params, example)` and checks no parameter bypasses them."""
    if len(set(map(id, leaves))) != len(leaves):
        raise LayerwiseUnsupported("layerwise: the same array appears twice among the params leaves.")
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(
        jax.tree_util.tree_unflatten(treedef, leaves))[0]]
    for path, leaf in zip(paths, leaves):
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise LayerwiseUnsupported(f"layerwise: params leaf {path} is not floating point.")
    holder = {}

    def with_tangents(leaves_, tangents_, example_):
        def primal(ls):
            icpt = _Interceptor(ls, "discover")
            holder["icpt"] = icpt
            with nn.intercept_methods(icpt):
                out = fn(jax.tree_util.tree_unflatten(treedef, ls), example_)
            validation.check_scalar(out, "layerwise", "the per-example function")
            return out

        return jax.jvp(primal, (leaves_,), (tangents_,))

    sds = [jax.ShapeDtypeStruct(jnp.shape(l), jnp.result_type(l)) for l in leaves]
    closed = jax.make_jaxpr(with_tangents)(sds, sds, example)
    icpt = holder["icpt"]

    n = len(leaves)
    used = _used_inputs(closed.jaxpr)
    tangent_used = used[n : 2 * n] if used is not None else None
    if tangent_used is None:  # cannot analyse dependencies: require every leaf to be covered
        covered = {c.kernel for c in icpt.calls} | {c.bias for c in icpt.calls if c.bias is not None}
        tangent_used = [i not in covered for i in range(n)]
    bad = [i for i, u in enumerate(tangent_used) if u]
    if bad:
        detail = ", ".join(paths[i] + (f" ({icpt.reasons[i]})" if i in icpt.reasons else "") for i in bad)
        raise LayerwiseUnsupported(
            f"layerwise: parameter(s) {detail} reach the output other than through the kernel/bias of "
            "flax nn.Dense/nn.Conv calls (e.g. LayerNorm, Embed, a raw parameter, a penalty on params); "
            "use jax.vmap(jax.grad(fn)) for this network."
        )
    return icpt.calls


def _used_inputs(jaxpr) -> Optional[list[bool]]:
    """Which inputs the tangent output (the last output) depends on; None if JAX's DCE is unavailable."""
    try:
        from jax._src.interpreters import partial_eval as pe  # pylint: disable=g-import-not-at-top
    except ImportError:  # pragma: no cover
        return None
    used_outputs = [False] * (len(jaxpr.outvars) - 1) + [True]
    _, used = pe.dce_jaxpr(jaxpr, used_outputs, instantiate=False)
    return list(used)


def _one_example(batch):
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x)[1:], jnp.result_type(x)), batch)


def _capture(fn, params, batch):
    """One batched forward/backward: (calls, inputs [k, *in], output cotangents [k, *out]) per call."""
    k = validation.leading_dim(batch, "batch")
    leaves, treedef = jax.tree_util.tree_flatten(params)
    calls = _discover(fn, leaves, treedef, _one_example(batch))
    if not calls:
        return k, leaves, treedef, calls, [], []

    def total(probes):
        def one(probes_i, example_i):
            icpt = _Interceptor(leaves, "capture", calls, probes_i)
            with nn.intercept_methods(icpt):
                out = fn(params, example_i)
            if len(icpt.inputs) != len(calls):
                raise LayerwiseUnsupported("layerwise: the loss made different layer calls on the batch.")
            return out, icpt.inputs

        outs, inputs = jax.vmap(one)(probes, batch)
        return jnp.sum(outs), inputs

    probes = [jnp.zeros((k,) + c.out_shape, c.out_dtype) for c in calls]
    cotangents, inputs = jax.grad(total, has_aux=True)(probes)
    return k, leaves, treedef, calls, inputs, cotangents


def _rows(call: _Call, a, g):
    """Layer inputs [k, din, N] (transposed: the fast layout for XLA:CPU's batched dot) and output
    cotangents [k, N, dout] of one call, N running over extra axes and, for a Conv, output positions."""
    k = a.shape[0]
    g = g.reshape(k, -1, g.shape[-1])
    if call.conv is None:
        return jnp.swapaxes(a.reshape(k, -1, a.shape[-1]), 1, 2), g
    p, _ = _patches(a, call.conv)  # [k, W, C, N]
    return p.reshape(k, -1, p.shape[-1]), g


def _patches(a, spec: _ConvSpec):
    """im2col: a [k, *E, *S, C] -> patches [k, W, C, N] (W window offsets, N = E·P) and `to_kernel`.

    `to_kernel` maps a per-example gradient [k, W, c, o] in the patches' offset order to the kernel
    layout [k, *kernel_size, c, o]. When every kernel size is a multiple of its stride, the input is
    first folded space-to-depth (i = s·q + r), so that the window offsets become contiguous slices;
    otherwise each offset is one strided slice. On XLA:CPU both beat conv_general_dilated_patches,
    and the transposed [.., C, N] layout makes the contraction with the cotangents a fast batched dot.
    """
    ks, strides, n, k = spec.kernel_size, spec.strides, len(spec.kernel_size), a.shape[0]
    x = a.reshape((k, -1) + a.shape[a.ndim - n - 1 :])  # [k, E, *S, C]
    if spec.pre_pad is not None:
        x = jnp.pad(x, ((0, 0), (0, 0)) + spec.pre_pad[1] + ((0, 0),), mode=spec.pre_pad[0])
    x = jnp.moveaxis(x, -1, 1)  # [k, C, E, *S]
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


def _kernel_grads(call: _Call, a, g, kernel_shape):
    """Per-example kernel gradients [k, *kernel_shape] of one call."""
    k = a.shape[0]
    if call.conv is None:
        if a.ndim == 2:
            return a[:, :, None] * g[:, None, :]
        at, g2 = _rows(call, a, g)
        return jnp.einsum("bin,bno->bio", at, g2).reshape((k,) + kernel_shape)
    p, to_kernel = _patches(a, call.conv)  # [k, W, C, N]
    groups = call.conv.groups
    w, c, n = p.shape[1:]
    g2 = g.reshape(k, n, g.shape[-1])
    if groups == 1:
        dw = jnp.einsum("bkn,bno->bko", p.reshape(k, w * c, n), g2).reshape(k, w, c, -1)
    else:
        p = p.reshape(k, w, groups, c // groups, n)
        dw = jnp.einsum("bwgcn,bngo->bwcgo", p, g2.reshape(k, n, groups, -1))
        dw = dw.reshape(k, w, c // groups, -1)
    return to_kernel(dw)


def layerwise_per_example_grads(
    loss_fn: Callable[[Any, Any], jax.Array], params: Any, batch: Any
) -> Any:
    """Every example's gradient ∇θ ℓ(θ, xᵢ) from one batched forward/backward pass.

    Equivalent to `jax.vmap(jax.grad(loss_fn), in_axes=(None, 0))(params, batch)` for networks whose
    parameters are all kernels and biases of flax linen `nn.Dense` / `nn.Conv` layers (called any number
    of times, on inputs with or without extra axes), and much faster on XLA's CPU backend: per example
    ∂ℓᵢ/∂W = Σₙ aᵢₙᵀ gᵢₙ, with aᵢₙ the layer's input rows (im2col patches for a Conv) and gᵢₙ the
    cotangent of its output, captured with `flax.linen.intercept_methods`.

    Args:
      loss_fn: `loss_fn(params, example) -> scalar` for ONE example (it may call `model.apply`).
      params: the parameter pytree passed to `loss_fn`.
      batch: pytree of arrays, each with a leading example axis of size k.

    Returns:
      A pytree like `params` whose leaves have a leading axis k.

    Raises:
      LayerwiseUnsupported: at trace time, if a parameter reaches the loss other than through a Dense/Conv
        kernel or bias (LayerNorm, Embed, raw parameters, penalties on params, custom dot_general...).
    """
    k, leaves, treedef, calls, inputs, cotangents = _capture(loss_fn, params, batch)
    grads = [None] * len(leaves)

    def add(i, v):
        grads[i] = v if grads[i] is None else grads[i] + v

    for call, a, g in zip(calls, inputs, cotangents):
        kernel = leaves[call.kernel]
        add(call.kernel, _kernel_grads(call, a, g, jnp.shape(kernel)).astype(jnp.result_type(kernel)))
        if call.bias is not None:
            gb = g.reshape(k, -1, g.shape[-1]).sum(1) if g.ndim > 2 else g
            add(call.bias, gb.astype(jnp.result_type(leaves[call.bias])))
    grads = [
        jnp.zeros((k,) + jnp.shape(l), jnp.result_type(l)) if g is None else g for g, l in zip(grads, leaves)
    ]
    return jax.tree_util.tree_unflatten(treedef, grads)


def layerwise_gram(
    f: Callable[[Any, Any], jax.Array], params: Any, xs_a: Any, xs_b: Any = None
) -> jax.Array:
    """Gram matrix Gᵢⱼ = ⟨∇θ f(θ, xᵃᵢ), ∇θ f(θ, xᵇⱼ)⟩ (the empirical NTK of a scalar f) layer by layer.

    Same network requirements as `layerwise_per_example_grads`. For each layer Gᵢⱼ gets
    Σₙₘ (aᵢₙ · aⱼₘ)(gᵢₙ · gⱼₘ), computed either in that factored form (cheap when each example has few
    rows n, e.g. (A Aᵀ) ⊙ (G Gᵀ) for a Dense on one vector) or through the materialised per-example
    kernel gradients J Jᵀ, whichever needs fewer flops; biases add (Σₙ gᵢₙ)·(Σₘ gⱼₘ).

    Args:
      f: `f(params, x) -> scalar` for ONE input (e.g. a reduced Q-value or a per-example loss).
      params: the parameter pytree passed to `f`.
      xs_a: pytree of arrays with a leading axis k_a.
      xs_b: pytree like `xs_a` with a leading axis k_b; None means `xs_a` (a symmetric Gram matrix).

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
    k, leaves, treedef, calls, inputs, cotangents = _capture(f, params, xs)
    k_b = k - k_a if xs_b is not None else k_a

    def split(x):
        return (x, x) if xs_b is None else (x[:k_a], x[k_a:])

    dtype = jnp.result_type(*leaves) if leaves else jnp.float32
    gram = jnp.zeros((k_a, k_b), dtype)

    # Group calls by parameter leaf: a shared layer's contributions must be summed before the product.
    by_kernel: dict[int, list[int]] = {}
    by_bias: dict[int, list[int]] = {}
    for c_idx, call in enumerate(calls):
        by_kernel.setdefault(call.kernel, []).append(c_idx)
        if call.bias is not None:
            by_bias.setdefault(call.bias, []).append(c_idx)

    for leaf, idxs in by_kernel.items():
        kernel_shape = jnp.shape(leaves[leaf])
        din, dout = math.prod(kernel_shape[:-1]), kernel_shape[-1]
        n = sum(math.prod(cotangents[i].shape[1:-1]) for i in idxs)  # rows per example, all calls
        factored = k_a * k_b * n * n * (din + dout + 1)
        materialised = (k if xs_b is not None else k_a) * n * din * dout + k_a * k_b * din * dout
        grouped = any(calls[i].conv is not None and calls[i].conv.groups > 1 for i in idxs)
        if factored <= materialised and not grouped:  # grouped convs see only part of each patch
            rows = [_rows(calls[i], inputs[i], cotangents[i]) for i in idxs]
            (a_a, a_b) = split(jnp.concatenate([r[0] for r in rows], axis=2))  # [k, din, n]
            (g_a, g_b) = split(jnp.concatenate([r[1] for r in rows], axis=1))  # [k, n, dout]
            if n == 1:
                gram = gram + (a_a[..., 0] @ a_b[..., 0].T) * (g_a[:, 0] @ g_b[:, 0].T)
            else:
                aa = jnp.einsum("ixn,jxm->ijnm", a_a, a_b)
                gg = jnp.einsum("iny,jmy->ijnm", g_a, g_b)
                gram = gram + jnp.sum(aa * gg, axis=(2, 3))
        else:
            j = sum(_kernel_grads(calls[i], inputs[i], cotangents[i], kernel_shape) for i in idxs)
            j_a, j_b = split(j.reshape(k, -1))
            gram = gram + j_a @ j_b.T
    for leaf, idxs in by_bias.items():
        s = sum(cotangents[i].reshape(k, -1, cotangents[i].shape[-1]).sum(1) for i in idxs)
        s_a, s_b = split(s)
        gram = gram + s_a @ s_b.T
    return gram
