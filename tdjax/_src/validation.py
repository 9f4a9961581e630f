"""Trace-time argument checks shared by the analysis modules. Errors name the argument."""

from __future__ import annotations

import functools
import os
import sys
import warnings
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from tdjax._src import checks


def leading_dim(tree: Any, name: str) -> int:
    """The common leading-axis size k of every leaf of `tree`, or a ValueError naming `name`."""
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        raise ValueError(f"`{name}` is empty: expected a pytree of arrays with a leading example axis.")
    sizes = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        shape = jnp.shape(leaf)
        if len(shape) == 0:
            raise ValueError(
                f"`{name}` leaf {jax.tree_util.keystr(path) or '<root>'} is a scalar: every leaf needs a "
                "leading example axis of size k."
            )
        sizes.append((jax.tree_util.keystr(path) or "<root>", shape[0]))
    ks = {k for _, k in sizes}
    if len(ks) != 1:
        detail = ", ".join(f"{p}: {k}" for p, k in sizes)
        raise ValueError(f"`{name}` leaves disagree on the number of examples k (leading axis): {detail}.")
    k = ks.pop()
    if k == 0:
        raise ValueError(f"`{name}` is empty: its leading example axis has size 0. Fix: pass at least one example.")
    return k


def check_params(params: Any, fn_name: str, name: str = "params") -> None:
    """`params` is a non-empty pytree of floating-point arrays (gradients need them)."""
    if params is None:
        raise ValueError(
            f"{fn_name}: `{name}` is None. Fix: pass the parameter pytree θ that `apply_fn`/`loss_fn` take "
            "(e.g. `params = net.init(key, x)`)."
        )
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    if not leaves:
        raise ValueError(f"{fn_name}: `{name}` has no array leaves: there is nothing to differentiate.")
    for path, leaf in leaves:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(
                f"{fn_name}: `{name}` leaf {jax.tree_util.keystr(path) or '<root>'} has dtype {dtype}: gradients "
                f"need floating-point parameters. Fix: `jax.tree.map(lambda p: p.astype(jnp.float32), {name})`."
            )


def eval_on_example(fn: Any, args: tuple, fn_name: str, fn_arg: str, batch_arg: str) -> Any:
    """`jax.eval_shape(fn, *args)` on one example's shapes; an error raised inside `fn` (an unbatched
    input, a feature size the network does not take) is re-raised as a ValueError naming `batch_arg`."""
    try:
        return jax.eval_shape(fn, *args)
    except (TypeError, ValueError, IndexError) as e:
        shapes = jax.tree.map(lambda s: tuple(s.shape), args[1])
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(
            f"{fn_name}: `{fn_arg}(params, x)` fails on one example of `{batch_arg}` (per-example shapes "
            f"{shapes}): {type(e).__name__}: {first} Fix: `{batch_arg}` needs a leading example axis (one "
            "entry per example) and per-example shapes the network takes; is it unbatched, or is its feature "
            "size not the network's?"
        ) from e


def check_scalar(value: Any, fn_name: str, what: str = "loss_fn") -> None:
    """Raises if `value` (a traced output for one example) is not a scalar."""
    shape = jnp.shape(value)
    if shape != ():
        raise ValueError(
            f"{fn_name}: `{what}` must return a scalar for one example, got shape {shape}. "
            "Write it for a single example and let tdjax batch it (reduce vector outputs first)."
        )


def check_same_structure(a: Any, b: Any, name_a: str, name_b: str) -> None:
    """Raises if two pytrees differ in structure or leaf shapes."""
    sa, sb = jax.tree_util.tree_structure(a), jax.tree_util.tree_structure(b)
    if sa != sb:  # type: ignore[operator]
        raise ValueError(f"`{name_a}` and `{name_b}` have different pytree structures:\n{sa}\nvs\n{sb}")
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_leaves(b)):
        if jnp.shape(x) != jnp.shape(y):
            raise ValueError(
                f"`{name_a}` and `{name_b}` differ at {jax.tree_util.keystr(path)}: "
                f"shape {jnp.shape(x)} vs {jnp.shape(y)}."
            )


# --------------------------------------------------------------------------------------------------
# Values: checked when concrete (free), through checkify when traced and `tdjax.debug_checks()` is on.


def is_concrete(x: Any) -> bool:
    """True when the value of `x` is known now (not a tracer): value checks cost nothing then."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


def concrete(x: Any) -> Optional[np.ndarray]:
    """The value of `x` as a NumPy array if it is known at trace time, else None."""
    if not is_concrete(x):
        return None
    try:
        return np.asarray(x)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_JAX_DIR = os.path.dirname(os.path.abspath(jax.__file__))


def user_stacklevel() -> int:
    """The `stacklevel` for `warnings.warn` called by the caller of this function that points at the
    first frame outside tdjax and JAX: the user's call site (also under jit, where JAX's tracing frames
    sit between the user's call and tdjax). Python's default filter then shows a warning once per call
    site."""
    frame, level = sys._getframe(2), 2
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if not (path.startswith(_PKG_DIR + os.sep) or path.startswith(_JAX_DIR + os.sep)
                or "/jaxlib/" in path or path.startswith("<frozen")):
            return level
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    return level


def warn(message: str, category: type) -> None:
    """`warnings.warn(message, category)` pointing at the user's call site (see `user_stacklevel`)."""
    warnings.warn(message, category, stacklevel=user_stacklevel())


def check_index(fn: str, name: str, idx: Any, n: int, what: str = "actions", lo: int = 0) -> Any:
    """An integer index array `idx` with every entry in [lo, n) (lo = −n allows Python's negative indices).

    Concrete: a ValueError naming `name`. Traced: unchecked by default (JAX clamps or wraps a bad index
    silently); with `tdjax.debug_checks()` on, a `checkify.check` that names `name`.
    """
    value = concrete(idx)  # before jnp.asarray, which stages even a Python int under jit
    idx = jnp.asarray(idx)
    if not jnp.issubdtype(idx.dtype, jnp.integer):
        raise ValueError(
            f"{fn}: `{name}` must be an integer index into {n} {what}, got dtype {idx.dtype}. "
            f"Fix: pass an int array (e.g. `{name}.astype(jnp.int32)`)."
        )
    if value is not None:
        if value.size and not np.all((lo <= value) & (value < n)):
            bad = value[(value < lo) | (value >= n)]
            raise ValueError(
                f"{fn}: `{name}`={bad.ravel()[0]} is out of range for {n} {what}: every entry must lie in "
                f"[{lo}, {n}). JAX would silently clamp or wrap it under jit."
            )
        return idx
    if checks.debug_checks_enabled():
        bad = (idx < lo) | (idx >= n)
        checkify.check(
            ~jnp.any(bad),
            f"{fn}: `{name}`={{value}} is out of range for {n} {what}: every entry must lie in [{lo}, {n}).",
            value=idx.ravel()[jnp.argmax(bad.ravel())] if idx.ndim else idx,
        )
    return idx


def check_interval(fn: str, name: str, x: Any, lo: float, hi: float, *, closed_hi: bool = True,
                   fix: str = "") -> None:
    """ValueError naming `name` unless every concrete entry of `x` lies in [lo, hi] (or [lo, hi)).
    Traced values are unchecked by default, and checked through checkify under `tdjax.debug_checks()`."""
    value = concrete(x)
    if value is None:
        if checks.debug_checks_enabled():
            x = jnp.asarray(x)
            ok = (x >= lo) & ((x <= hi) if closed_hi else (x < hi))
            interval = f"[{lo:g}, {hi:g}{']' if closed_hi else ')'}"
            checkify.check(jnp.all(ok), f"{fn}: `{name}` must lie in {interval}, got {{value}}.",
                           value=x.ravel()[jnp.argmin(ok.ravel())] if x.ndim else x)
        return
    if value.size == 0:
        return
    value = value.astype(np.float64)
    ok = (value >= lo) & ((value <= hi) if closed_hi else (value < hi))
    if not np.all(ok):
        bad = value[~ok].ravel()[0]
        interval = f"[{lo:g}, {hi:g}{']' if closed_hi else ')'}"
        raise ValueError(f"{fn}: `{name}` must lie in {interval}, got {bad:g}." + (f" Fix: {fix}." if fix else ""))


_PRECISION_TOL = 1e-4


def check_precision(dtype: Any, horizon: Any, what: str) -> None:
    """PrecisionWarning (once per call site) when float rounding over `horizon` steps exceeds 1e-4.

    Rounding errors of recursions and solves with discount γ grow like eps/(1 − γ) (the condition of
    I − γP); in float32 (eps = 1.2e-7) the relative error passes 1e-4 near γ = 0.9988, and errors of
    1e-3 are seen at γ = 0.9999. `horizon` is a concrete effective horizon, e.g. 1/(1 − γ) or a time
    span; nothing is checked for traced values. The message names `what` but not the function, so that
    nested tdjax calls from one line of user code warn once.
    """
    if not jnp.issubdtype(dtype, jnp.floating):
        return
    hc = concrete(horizon)
    if hc is None:
        return
    h = float(np.max(hc)) if np.size(hc) else 0.0
    eps = float(jnp.finfo(dtype).eps)
    if h * eps > _PRECISION_TOL:
        warn(
            f"{what} is too long for {jnp.dtype(dtype).name}: expected relative rounding error "
            f"≈ {min(h * eps, 1.0):.1g} (horizon {h:.3g} × eps {eps:.1g}). Fix: compute in float64 "
            "(`jax.config.update('jax_enable_x64', True)` and float64 inputs).",
            checks.PrecisionWarning,
        )


def _warn_nonfinite(flags: Any, *, names: tuple) -> None:
    bad = [n for n, f in zip(names, np.asarray(flags)) if f]
    if not bad:  # under vmap, lax.cond runs both branches
        return
    # No function name in the text: nested tdjax calls on the same inputs warn once.
    warnings.warn(
        f"NaN or inf in {', '.join(f'`{n}`' for n in bad)} (seen at run time under jit): the result is NaN "
        "because of these inputs, not because of conditioning. Fix: check them with `jnp.isfinite` before "
        "the call (or run the call outside jit, where they are checked).",
        checks.NonFiniteInputWarning, stacklevel=2,
    )


def report_nonfinite(**named: Any) -> Any:
    """Under jit, a `NonFiniteInputWarning` naming the TRACED inputs that hold NaN/inf (concrete ones
    are checked eagerly); returns the all-finite flag, used to keep NaN inputs off the fallback paths (whose
    warnings would blame conditioning). Costs one reduction per input and a `lax.cond`; the callback runs
    only when an input is not finite."""
    traced = {k: v for k, v in named.items() if not is_concrete(v)}
    if not traced:
        return jnp.bool_(True)
    flags = jnp.stack([~jnp.all(jnp.isfinite(v)) for v in traced.values()])
    names = tuple(traced)
    callback = functools.partial(_warn_nonfinite, names=names)
    jax.lax.cond(jnp.any(flags), lambda f: jax.debug.callback(callback, f), lambda f: None, flags)
    return ~jnp.any(flags)
