"""Reducing a network's vector output to the scalar that interference and update-matrix analyses use.

Lyle et al. 2022, App. B.1: "we considered taking the maximum over actions, the mean over actions,
selecting a fixed action index, and selecting the action taken in the transition ... Q-functions are
reduced using the max operator. We apply the same approach for distributional agents by taking the
expectation over the distribution associated with each state-action pair."
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Optional, Union

import chex
import jax
import jax.numpy as jnp

from tdjax._src import validation

Reduction = Union[Literal["max", "mean", "action", "none"], int]
Distribution = Optional[Literal["categorical", "quantile"]]

__all__ = ["expected_q", "reduce_output", "scalar_output_fn"]


def expected_q(
    out: chex.Array, distribution: Distribution = None, atoms: Optional[chex.Array] = None
) -> chex.Array:
    """Q-values [A] from a network head's output.

    Args:
      out: [A] Q-values; [A, n_atoms] logits for `distribution="categorical"`; [A, n_quantiles]
        quantile locations for `distribution="quantile"`.
      distribution: None, "categorical" (C51) or "quantile" (QR-DQN).
      atoms: [n_atoms] support of the categorical distribution (required for "categorical").

    Returns:
      [A] expected action values: Σ_z softmax(logits)_z · z for C51, the mean quantile for QR.
    """
    if distribution is None:
        return out
    if distribution == "categorical":
        if atoms is None:
            raise ValueError("expected_q: distribution='categorical' needs `atoms` (the [n_atoms] support).")
        chex.assert_rank(out, 2)
        if out.shape[-1] != atoms.shape[-1]:
            raise ValueError(
                f"expected_q: logits have {out.shape[-1]} atoms but `atoms` has {atoms.shape[-1]}."
            )
        return jnp.sum(jax.nn.softmax(out, axis=-1) * atoms, axis=-1)
    if distribution == "quantile":
        chex.assert_rank(out, 2)
        return jnp.mean(out, axis=-1)
    raise ValueError(
        f"expected_q: unknown distribution {distribution!r}; use None, 'categorical' or 'quantile'."
    )


def reduce_output(
    out: chex.Array,
    reduction: Reduction = "max",
    action: Optional[chex.Array] = None,
    *,
    distribution: Distribution = None,
    atoms: Optional[chex.Array] = None,
) -> chex.Array:
    """Reduces one example's network output to a scalar.

    Args:
      out: the output for ONE input (no batch axis): a scalar, [A] Q-values, or a distributional
        head (see `expected_q`).
      reduction: "max" (the papers' default), "mean", "action" (the taken action `action`), an int
        (a fixed output index), or "none" (the output must already be a scalar or of shape [1]).
      action: scalar int, required for `reduction="action"`; checked when concrete, and when traced only
        under `tdjax.checked` (JAX would clamp or wrap it silently).
      distribution, atoms: see `expected_q`; the expectation is taken before reducing.

    Returns:
      A scalar.
    """
    q = expected_q(out, distribution, atoms)
    if reduction == "none":
        if q.size != 1:
            raise ValueError(
                f"reduce_output: reduction='none' needs a scalar output, got shape {q.shape}; "
                "pick reduction='max', 'mean', 'action' or an index."
            )
        return jnp.reshape(q, ())
    chex.assert_rank(q, 1)
    if reduction == "max":
        return jnp.max(q)
    if reduction == "mean":
        return jnp.mean(q)
    if reduction == "action":
        if action is None:
            raise ValueError("reduce_output: reduction='action' needs the taken `action`.")
        return q[validation.check_index("reduce_output", "action", action, q.shape[0], "outputs")]
    if isinstance(reduction, int) and not isinstance(reduction, bool):
        if not -q.shape[0] <= reduction < q.shape[0]:
            raise ValueError(f"reduce_output: index {reduction} out of range for {q.shape[0]} outputs.")
        return q[reduction]
    raise ValueError(
        f"reduce_output: unknown reduction {reduction!r}; use 'max', 'mean', 'action', 'none' or an int."
    )


def scalar_output_fn(
    apply_fn: Callable[[Any, Any], chex.Array],
    reduction: Reduction = "max",
    *,
    distribution: Distribution = None,
    atoms: Optional[chex.Array] = None,
) -> Callable[[Any, Any], chex.Array]:
    """Wraps `apply_fn(params, x)` into a scalar `f(params, x)` for ONE input x.

    With `reduction="action"`, the returned function takes `x = (obs, action)`.

    Example:
      >>> import jax.numpy as jnp
      >>> apply_fn = lambda params, x: params * x          # a 'network' with 3 outputs
      >>> f = scalar_output_fn(apply_fn, "max")
      >>> float(f(2.0, jnp.array([1.0, 3.0, -1.0])))
      6.0
    """
    if reduction == "action":

        def f(params, x):
            obs, action = x
            return reduce_output(apply_fn(params, obs), "action", action, distribution=distribution, atoms=atoms)

    else:

        def f(params, x):
            return reduce_output(apply_fn(params, x), reduction, distribution=distribution, atoms=atoms)

    return f
