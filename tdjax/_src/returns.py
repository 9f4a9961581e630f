"""Advantage and return estimators over one trajectory: GAE and λ-returns.

Both are written for ONE trajectory, time-major, with rlax's time indices (rₜ₊₁ is the reward after
acting at xₜ) and no batch axis; batch with `jax.vmap` over environments (`in_axes=1` for [T, E]
rollouts). The recursion runs backwards with `jax.lax.scan(reverse=True)`.

The maths is that of `rlax.truncated_generalized_advantage_estimation` and `rlax.lambda_returns`
(the tests compare against both); the arguments are laid out the way an actor-critic rollout holds
them, with the values of the T visited states and the bootstrap value of the state reached after
the last step passed separately, and every argument is checked at trace time with an error that
names it.
"""

from __future__ import annotations

from typing import TypeAlias

import chex
import jax
import jax.numpy as jnp
import numpy as np

from tdjax._src import validation

Array: TypeAlias = chex.Array
Numeric: TypeAlias = chex.Numeric

__all__ = ["generalized_advantage_estimation", "lambda_returns"]


def _float(name: str, fn: str, x) -> Array:
    dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        raise ValueError(f"{fn}: `{name}` must be a real array, got dtype {dtype}.")
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating):
        return x
    if jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == jnp.bool_:
        return x.astype(jnp.result_type(float))
    raise ValueError(f"{fn}: `{name}` must be a real array, got dtype {x.dtype}.")


def _check(fn: str, rewards, discounts, values, bootstrap_value, lambda_):
    # values first: jnp.asarray stages even NumPy inputs under jit
    d, lam = validation.concrete(discounts), validation.concrete(lambda_)
    validation.check_interval(fn, "lambda_", lambda_, 0.0, 1.0)
    validation.check_interval(fn, "discounts", discounts, 0.0, 1.0,
                              fix="pass γ·(1 − done) with γ in [0, 1]; 0 ends the episode")
    rewards, discounts, values = (_float(n, fn, x) for n, x in
                                  (("rewards", rewards), ("discounts", discounts), ("values", values)))
    bootstrap_value = _float("bootstrap_value", fn, bootstrap_value)
    lambda_ = _float("lambda_", fn, lambda_)
    if rewards.ndim != 1:
        raise ValueError(
            f"{fn}: `rewards` must be a vector [T] for ONE trajectory, got shape {rewards.shape} "
            "(batch with jax.vmap, e.g. in_axes=1 for a [T, E] rollout)."
        )
    t = rewards.shape[0]
    for name, x in (("discounts", discounts), ("values", values)):
        if x.shape != (t,):
            raise ValueError(f"{fn}: `{name}` has shape {x.shape}, but `rewards` has {(t,)}: both are [T].")
    if bootstrap_value.shape != ():
        raise ValueError(
            f"{fn}: `bootstrap_value` must be a scalar (the value of the state after the last step), "
            f"got shape {bootstrap_value.shape}."
        )
    if lambda_.shape not in ((), (t,)):
        raise ValueError(f"{fn}: `lambda_` must be a scalar or have shape {(t,)}, got {lambda_.shape}.")
    if d is not None and lam is not None and d.size:
        decay = float(np.max(d.astype(np.float64) * np.broadcast_to(lam, d.shape)))
        horizon = t if decay >= 1.0 else min(t, 1.0 / (1.0 - decay))
        validation.check_precision(jnp.result_type(rewards, discounts, values, bootstrap_value), horizon,
                                   "the effective horizon min(T, 1/(1 − max γλ)) of `discounts`·`lambda_`")
    dtype = jnp.result_type(rewards, discounts, values, bootstrap_value)
    return (rewards.astype(dtype), discounts.astype(dtype), values.astype(dtype), bootstrap_value.astype(dtype),
            jnp.broadcast_to(lambda_.astype(dtype), (t,)))


def generalized_advantage_estimation(
    rewards: Array,
    discounts: Array,
    values: Array,
    bootstrap_value: Numeric,
    lambda_: Numeric,
) -> Array:
    """Generalised advantage estimates Âₜ of one trajectory (Schulman et al. 2016, eq. 16).

        δₜ = rₜ₊₁ + γₜ₊₁ v(xₜ₊₁) − v(xₜ)
        Âₜ = δₜ + γₜ₊₁ λₜ₊₁ Âₜ₊₁,        Â_T = 0,   v(x_T) = bootstrap_value

    i.e. Âₜ = Σₖ (Πᵢ₌₁ᵏ γₜ₊ᵢ λₜ₊ᵢ) δₜ₊ₖ. λ = 1 gives the Monte-Carlo return minus v(xₜ) (bootstrapped
    from v(x_T) at the cut), λ = 0 the one-step TD error. An episode end at step t is a discount
    γₜ₊₁ = 0: it stops both the bootstrap and the trace. The same maths as
    `rlax.truncated_generalized_advantage_estimation(rewards, discounts, lambda_,
    concat(values, [bootstrap_value]))`.

    Args:
      rewards: [T] rₜ₊₁, the reward after acting at xₜ, t = 0..T−1.
      discounts: [T] γₜ₊₁ = γ·(1 − terminalₜ₊₁), the discount applied to v(xₜ₊₁).
      values: [T] v(xₜ), t = 0..T−1 (the critic at the states acted on).
      bootstrap_value: [] v(x_T), the value of the state reached after the last step.
      lambda_: [] or [T] the trace parameter λ ∈ [0, 1].

    Returns:
      [T] Âₜ. Gradients flow into `values` and `bootstrap_value` (stop them yourself for targets).

    Raises:
      ValueError: an argument has the wrong rank or shape (named), or a concrete λ or discount lies
        outside [0, 1] (traced values are not checked).

    Warns:
      PrecisionWarning: concrete discounts and λ whose effective horizon min(T, 1/(1 − max γλ)) makes
        the float32 recursion lose more than 1e-4 relative accuracy; compute in float64.
    """
    fn = "generalized_advantage_estimation"
    return _gae(*_check(fn, rewards, discounts, values, bootstrap_value, lambda_))


def _gae(r, d, v, v_boot, lam):
    v_next = jnp.concatenate([v[1:], v_boot[None]])
    delta = r + d * v_next - v

    def body(acc, xs):
        delta_t, d_t, lam_t = xs
        acc = delta_t + d_t * lam_t * acc
        return acc, acc

    # zeros_like(δ), not a constant: inside shard_map the carry must vary across devices like δ does
    _, adv = jax.lax.scan(body, jnp.zeros_like(delta[-1]), (delta, d, lam), reverse=True)
    return adv


def lambda_returns(
    rewards: Array,
    discounts: Array,
    values: Array,
    bootstrap_value: Numeric,
    lambda_: Numeric,
) -> Array:
    """λ-returns Gₜ^λ = Âₜ + v(xₜ) of one trajectory (Sutton & Barto 2018, §12.1).

        Gₜ^λ = rₜ₊₁ + γₜ₊₁ [(1 − λₜ₊₁) v(xₜ₊₁) + λₜ₊₁ Gₜ₊₁^λ],     G_T^λ = v(x_T) = bootstrap_value

    The critic's regression target in actor-critic methods (`generalized_advantage_estimation` plus
    the values). Equal to `rlax.lambda_returns(rewards, discounts, concat(values[1:],
    [bootstrap_value]), lambda_)`.

    Args:
      rewards, discounts, values, bootstrap_value, lambda_: as in `generalized_advantage_estimation`.

    Returns:
      [T] Gₜ^λ.
    """
    fn = "lambda_returns"
    r, d, v, v_boot, lam = _check(fn, rewards, discounts, values, bootstrap_value, lambda_)
    return _gae(r, d, v, v_boot, lam) + v
