"""Correlation of interference with the generalisation gap, with a bootstrapped interval.

Bengio, Pineau & Precup 2020, §4, Fig. 1: for each training-set size, Pearson's r (eq. 9) between the
(log) function interference log ρ̄ (eq. 8, averaged over pairs of training inputs) and the
generalisation gap, over the runs of every capacity and seed, with a bootstrapped 90% interval
(runs resampled with replacement).
"""

from __future__ import annotations

import functools
import warnings
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["CorrelationInterval", "pearson_r", "interference_gap_correlation"]


class CorrelationInterval(NamedTuple):
    """Pearson's r with its bootstrapped percentile interval."""

    r: chex.Array  # shape=(), float. r over all runs; NaN where undefined (a constant input).
    low: chex.Array  # shape=(), float. Lower end of the interval ((1 − confidence)/2 quantile).
    high: chex.Array  # shape=(), float. Upper end ((1 + confidence)/2 quantile).
    valid_resamples: chex.Array  # shape=(), int32. Resamples whose r was defined (not constant).


def pearson_r(x: chex.Array, y: chex.Array) -> chex.Array:
    """Pearson's r (Bengio et al. 2020, eq. 9) between two [n] samples, along the last axis.

      r = Σ (xᵢ − x̄)(yᵢ − ȳ) / (√Σ (xᵢ − x̄)² √Σ (yᵢ − ȳ)²)

    NaN where either sample is constant (r is undefined there). Leading axes batch.
    """
    xc = x - jnp.mean(x, axis=-1, keepdims=True)
    yc = y - jnp.mean(y, axis=-1, keepdims=True)
    sxx, syy = jnp.sum(xc * xc, axis=-1), jnp.sum(yc * yc, axis=-1)
    # Relative to the data's scale: a constant sample centred in floating point leaves rounding dust.
    tiny = jnp.finfo(xc.dtype).eps * 10
    scale_x = jnp.sum(x * x, axis=-1) + jnp.finfo(xc.dtype).tiny
    scale_y = jnp.sum(y * y, axis=-1) + jnp.finfo(yc.dtype).tiny
    defined = (sxx > tiny**2 * scale_x) & (syy > tiny**2 * scale_y)
    r = jnp.sum(xc * yc, axis=-1) / jnp.sqrt(jnp.where(defined, sxx * syy, 1.0))
    return jnp.where(defined, jnp.clip(r, -1.0, 1.0), jnp.nan)


def _concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def interference_gap_correlation(
    rho_bar: chex.Array,
    gap: chex.Array,
    key: jax.Array,
    *,
    num_resamples: int = 1000,
    confidence: float = 0.9,
    log: bool = True,
) -> CorrelationInterval:
    """Pearson's r between log ρ̄ and the generalisation gap over runs, with a bootstrapped interval.

    Bengio et al. 2020, Fig. 1: r (eq. 9) between log ρ̄ (function interference, eq. 8) and the gap,
    over the n runs (capacities × seeds) of one training-set size; the interval is the percentile
    bootstrap: B resamples of the n runs drawn with replacement, with indices
    `jax.random.randint(key, (num_resamples, n), 0, n)`, r of each, and the (1 ∓ confidence)/2
    quantiles (linear interpolation, as `numpy.quantile`) of the resampled r's. A resample whose
    inputs are constant (e.g. one run drawn n times) has no r and is left out of the quantiles;
    `valid_resamples` counts those kept.

    Jittable (num_resamples, confidence and log static). Concrete inputs are checked: a non-positive
    ρ̄ (its log is undefined) is a ValueError, a constant input a warning (r is NaN, as SciPy's).
    Under jit, a non-positive ρ̄ gives NaN everywhere rather than a number.

    Args:
      rho_bar: [n] function interference ρ̄ of each run (> 0).
      gap: [n] generalisation gap of each run (train minus test performance).
      key: PRNG key of the resampling.
      num_resamples: B ≥ 1.
      confidence: width of the interval, in (0, 1) (the paper: 0.9).
      log: correlate log ρ̄ (the paper's Fig. 1); False correlates ρ̄ itself (Fig. 2's axes).

    Returns:
      `CorrelationInterval(r, low, high, valid_resamples)`.
    """
    if isinstance(num_resamples, bool) or not isinstance(num_resamples, int) or num_resamples < 1:
        raise ValueError(f"interference_gap_correlation: `num_resamples` must be a positive int, got "
                         f"{num_resamples!r}. Fix: e.g. num_resamples=1000.")
    if not isinstance(confidence, (int, float)) or not 0.0 < confidence < 1.0:
        raise ValueError(f"interference_gap_correlation: `confidence` must lie in (0, 1), got {confidence!r}. "
                         "Fix: e.g. confidence=0.9 (the paper's 90% interval).")
    rho_bar, gap = jnp.asarray(rho_bar), jnp.asarray(gap)
    for name, a in (("rho_bar", rho_bar), ("gap", gap)):
        if a.ndim != 1:
            raise ValueError(f"interference_gap_correlation: `{name}` must be a 1-D array of one value per "
                             f"run, got shape {a.shape}. Fix: flatten the runs into one axis.")
    if rho_bar.shape != gap.shape:
        raise ValueError(f"interference_gap_correlation: `rho_bar` and `gap` must have one value per run each, "
                         f"got lengths {rho_bar.shape[0]} and {gap.shape[0]}. Fix: pass matching runs.")
    n = rho_bar.shape[0]
    if n < 3:
        raise ValueError(f"interference_gap_correlation: needs at least 3 runs for a correlation with an "
                         f"interval, got {n}. Fix: add capacities or seeds to this training-set size.")
    dtype = jnp.result_type(rho_bar, gap, jnp.float32)
    rho_bar, gap = rho_bar.astype(dtype), gap.astype(dtype)
    if _concrete(rho_bar) and _concrete(gap):
        r_np, g_np = np.asarray(rho_bar), np.asarray(gap)
        if log and np.any(r_np <= 0):
            bad = np.flatnonzero(r_np <= 0)
            raise ValueError(f"interference_gap_correlation: `rho_bar` must be > 0 to take its log; runs "
                             f"{bad.tolist()} have {r_np[bad].tolist()}. Fix: drop those runs, or pass log=False.")
        if not (np.all(np.isfinite(r_np)) and np.all(np.isfinite(g_np))):
            warnings.warn("interference_gap_correlation: `rho_bar` or `gap` holds NaN/inf; r and its interval "
                          "are NaN. Drop the failed runs first.", RuntimeWarning, stacklevel=2)
        elif np.ptp(r_np) == 0 or np.ptp(g_np) == 0:
            which = "rho_bar" if np.ptp(r_np) == 0 else "gap"
            warnings.warn(f"interference_gap_correlation: `{which}` is constant over the runs, so r is "
                          "undefined (NaN).", RuntimeWarning, stacklevel=2)
    return _correlation(rho_bar, gap, key, num_resamples, float(confidence), bool(log))


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _correlation(rho_bar, gap, key, num_resamples, confidence, log) -> CorrelationInterval:
    n = rho_bar.shape[0]
    dtype = rho_bar.dtype
    x = jnp.log(jnp.where(rho_bar > 0, rho_bar, jnp.nan)) if log else rho_bar
    r = pearson_r(x, gap)
    idx = jax.random.randint(key, (num_resamples, n), 0, n)
    rs = pearson_r(x[idx], gap[idx])
    q = jnp.asarray([(1.0 - confidence) / 2, (1.0 + confidence) / 2], dtype)
    low, high = jnp.nanquantile(rs, q)
    valid = jnp.sum(jnp.isfinite(rs)).astype(jnp.int32)
    nan = jnp.full((), jnp.nan, dtype)
    # Not a number where r itself is not: a non-positive ρ̄ under jit makes x NaN.
    low, high = jnp.where(jnp.isfinite(r) & (valid > 0), low, nan), jnp.where(jnp.isfinite(r) & (valid > 0), high, nan)
    return CorrelationInterval(r, low, high, valid)
