"""The checked route for values that only exist at run time, and the warning categories of bad inputs.

tdjax checks every argument it can at trace time: shapes always, and values whenever they are concrete
(eager calls, Python numbers, NumPy arrays closed over by a jitted function). What it cannot check for
free is a value that is only known at run time under `jax.jit`/`jax.vmap`/`lax.scan`: above all an
integer action index. JAX's indexing does not raise on those: an index ≥ the number of actions is
clamped to the last action and a negative one wraps around (Python semantics), so a bad action
silently selects another action's value.

The default is UNCHECKED, because a check that raises needs `jax.experimental.checkify`, which changes
the function's signature. Switch the checks on with `checked(fn)` (or, to manage checkify yourself,
trace inside `with debug_checks():` and wrap with `checkify.checkify(fn, errors=checkify.user_checks)`):

    >>> import jax, jax.numpy as jnp, tdjax
    >>> loss = jax.jit(jax.vmap(tdjax.q_learning_loss))
    >>> q, a = jnp.zeros((2, 3)), jnp.array([0, 3])          # action 3 of 3 is out of range
    >>> float(loss(q, a, jnp.ones(2), jnp.ones(2), q).sum())  # unchecked: a number, silently
    1.0
    >>> tdjax.checked(loss)(q, a, jnp.ones(2), jnp.ones(2), q)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    jax._src.checkify.JaxRuntimeError: q_learning_loss: `a_tm1`=3 is out of range for 3 actions...

The flag is part of JAX's jit cache key, so a function jitted before the checks were switched on is
traced again (with checks) inside `checked`, and the unchecked trace is reused outside it: turning the
checks on never changes a result, only whether a bad index raises.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator

from jax.experimental import checkify

__all__ = [
    "InputWarning",
    "NonFiniteInputWarning",
    "PrecisionWarning",
    "debug_checks",
    "debug_checks_enabled",
    "checked",
]


class InputWarning(UserWarning):
    """An input for which the maths is defined but which is almost surely not what was meant
    (a kernel that is not positive semi-definite, a train mask that trains nothing, ...)."""


class NonFiniteInputWarning(InputWarning):
    """NaN or inf in an input seen only at run time (under jit); the result is NaN because of it."""


class PrecisionWarning(UserWarning):
    """The dtype cannot resolve the requested computation (γ near 1, long horizons): use float64."""


def _make_flag():
    # A jax config state, so that the flag is part of the jit cache key (a function traced without checks
    # is traced again with them). Private API: fall back to a plain context variable if it moves.
    try:
        from jax._src import config as jax_config

        return jax_config.bool_state(
            "tdjax_debug_checks", False, "tdjax: emit checkify checks for run-time index values.",
            include_in_jit_key=True, include_in_trace_context=True,
        )
    except Exception:  # pragma: no cover - depends on the JAX version
        return None


_FLAG = _make_flag()
_FALLBACK_FLAG = [False]


def debug_checks_enabled() -> bool:
    """Whether tdjax functions being traced now emit run-time (checkify) checks of index values."""
    return bool(_FLAG.value) if _FLAG is not None else _FALLBACK_FLAG[0]


@contextlib.contextmanager
def debug_checks(enabled: bool = True) -> Iterator[None]:
    """Within this context, tdjax functions traced under jit/vmap check run-time index values.

    Each out-of-range action (or policy, or eigenvector index) becomes a `checkify.check`. Those must be
    functionalised: wrap the traced function with `checkify.checkify(fn, errors=checkify.user_checks)`
    and call `err.throw()`, or use `checked(fn)`, which does both. A jitted function traced inside this
    context without checkify fails with JAX's "Cannot abstractly evaluate a checkify.check" error.
    """
    if _FLAG is not None:
        with _FLAG(bool(enabled)):
            yield
        return
    old = _FALLBACK_FLAG[0]  # pragma: no cover
    _FALLBACK_FLAG[0] = bool(enabled)  # pragma: no cover
    try:  # pragma: no cover
        yield
    finally:  # pragma: no cover
        _FALLBACK_FLAG[0] = old


def checked(fn: Callable[..., Any], *, errors: frozenset = checkify.user_checks) -> Callable[..., Any]:
    """`fn` with tdjax's run-time checks on: raises `JaxRuntimeError` naming the argument on a bad value.

    Traces `fn` under `debug_checks()` and `checkify.checkify(fn, errors=errors)` and throws the first
    failed check. `errors` can add JAX's own checks, e.g. `checkify.user_checks | checkify.nan_checks`.
    Works with jitted, vmapped and scanned code, including the training loops:
    `tdjax.checked(tdjax.train.make_train(config))(key)`. The results are those of `fn`.
    """

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with debug_checks():
            err, out = checkify.checkify(fn, errors=errors)(*args, **kwargs)
        err.throw()
        return out

    return wrapped
