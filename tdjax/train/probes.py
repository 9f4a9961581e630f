"""Representation and interference probes run inside a training loop (under jit).

Every probe here is a call to the analysis library, so a probe taken inside the loop equals the
library function called outside on the same parameters and data:

  * update rank (Lyle et al. 2022, §5.1, eq. 21, App. B.1): `tdjax.update_rank` of
    `tdjax.update_matrix` on k transitions sampled from replay, with the agent's current optimizer
    state and Q reduced by max (expected Q for distributional heads); the probe inputs xⱼ are the
    states of the same k transitions;
  * the same update rank for a freshly initialised network (fresh optimizer state, target = itself),
    the baseline of the paper's Figure 3 comparisons;
  * srank (Kumar et al. 2021) and the τ-dormant fraction (Sokar et al. 2023) of the penultimate
    features φ(xⱼ) of those k states;
  * mean function interference: the mean off-diagonal entry of ρ̄ = `tdjax.gram_matrix` of the
    reduced output over the k states (Bengio et al. 2020, eq. 8), raw and normalised
    (ρ̄ᵢⱼ / √(ρ̄ᵢᵢ ρ̄ⱼⱼ), a cosine in [−1, 1] that does not grow with the gradient scale);
  * TD-error sign variance (Bengio et al. 2020, §5.2): `tdjax.td_sign_variance` over windows of the
    most recent trajectory segment of every environment, averaged over the windows that do not cross
    an episode boundary.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from tdjax._src.gradients import gram_matrix, td_sign_variance
from tdjax._src.update_matrix import dormant_fraction, srank, update_matrix, update_rank

__all__ = ["ProbeSettings", "ProbeMetrics", "empty_probe_metrics", "value_probes", "masked_sign_variance",
           "mean_off_diagonal"]


class ProbeSettings(NamedTuple):
    """Static probe settings (Python numbers; see `tdjax.train.ValueConfig` for their meaning)."""

    rank_eps: float = 0.1
    srank_delta: float = 0.01
    dormant_tau: float = 0.025
    sign_window: int = 5
    chunk_size: Optional[int] = None
    full: bool = True  # False: only ρ̄ and the TD-sign variance (no update matrices, ranks or features)


class ProbeMetrics(NamedTuple):
    """One probe. All float32 scalars; NaN where no probe was taken (`probed` False) or where a
    quantity was invalid (e.g. a non-finite update matrix, or no window without an episode end)."""

    probed: jax.Array  # shape=(), bool. A probe was taken at this update.
    update_rank: jax.Array  # shape=(), float32. Update rank of the agent (eq. 21, ε = rank_eps).
    update_rank_fresh: jax.Array  # shape=(), float32. Same for a freshly initialised network.
    srank: jax.Array  # shape=(), float32. srank_δ of the penultimate features of the k states.
    dormant_fraction: jax.Array  # shape=(), float32. τ-dormant fraction of those features.
    interference: jax.Array  # shape=(), float32. Mean off-diagonal of ρ̄ (gram matrix).
    interference_cos: jax.Array  # shape=(), float32. Mean off-diagonal of the normalised ρ̄.
    td_sign_variance: jax.Array  # shape=(), float32. Mean TD-error sign variance over windows.


def empty_probe_metrics() -> ProbeMetrics:
    """The value recorded at updates without a probe."""
    nan = jnp.full((), jnp.nan, jnp.float32)
    return ProbeMetrics(jnp.zeros((), bool), *([nan] * (len(ProbeMetrics._fields) - 1)))


def mean_off_diagonal(m: jax.Array) -> jax.Array:
    """Mean of the off-diagonal entries of a square [k, k] matrix (k ≥ 2)."""
    k = m.shape[0]
    return (jnp.sum(m) - jnp.trace(m)) / (k * (k - 1))


def masked_sign_variance(td_errors: jax.Array, done: jax.Array, window: int) -> jax.Array:
    """Mean of `tdjax.td_sign_variance(td_errors, window)` over windows inside one episode.

    Args:
      td_errors: [T, E] TD errors of consecutive transitions of E environments.
      done: [T, E] bool, transition t ended its episode.
      window: window length w (5 in Bengio et al. 2020).

    Returns:
      float32 scalar; NaN if every window crosses an episode boundary. A window over transitions
      t..t+w−1 is kept iff none of t..t+w−2 ended an episode (the last one may).
    """
    sv = td_sign_variance(td_errors, window)  # [T − w + 1, E]
    n = sv.shape[0]
    ends = done.astype(jnp.int32)
    crossings = sum(ends[i : i + n] for i in range(window - 1)) if window > 1 else jnp.zeros_like(sv, jnp.int32)
    valid = crossings == 0
    total = jnp.sum(jnp.where(valid, sv, 0.0))
    count = jnp.sum(valid)
    return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan).astype(jnp.float32)


def _rank(r: jax.Array) -> jax.Array:
    # the library marks a rank of a non-finite matrix with −1 under jit
    return jnp.where(r >= 0, r.astype(jnp.float32), jnp.nan)


def value_probes(
    settings: ProbeSettings,
    *,
    loss_fn: Callable[[Any, Any], jax.Array],
    output_fn: Callable[[Any, Any], jax.Array],
    features_fn: Callable[[Any, Any], jax.Array],
    optimizer: optax.GradientTransformation,
    params: Any,
    opt_state: Any,
    batch: Any,
    probe_xs: Any,
    fresh_loss_fn: Callable[[Any, Any], jax.Array],
    fresh_params: Any,
    td_errors: jax.Array,
    done: jax.Array,
) -> ProbeMetrics:
    """All probes of a value-based agent at one point of training (pure; jittable).

    Args:
      settings: `ProbeSettings`.
      loss_fn: `loss_fn(params, transition)` for ONE transition (target network closed over).
      output_fn: `output_fn(params, x)` scalar for ONE state (Q reduced by max).
      features_fn: `features_fn(params, xs)` → [k, d] penultimate features of a batch of states.
      optimizer: the agent's optax optimizer; `opt_state` its current state at `params`.
      batch: k transitions (leading axis k), e.g. `replay.sample_distinct(buffer, key, k)`.
      probe_xs: the k states xⱼ (here `batch.obs`).
      fresh_loss_fn, fresh_params: the same for a newly initialised network (its optimizer state is
        `optimizer.init(fresh_params)`).
      td_errors, done: [T, E] TD errors and episode ends of recent consecutive transitions.

    Returns:
      `ProbeMetrics` with `probed=True`; with `settings.full=False` only ρ̄ (raw and normalised) and
      the sign variance, the other fields NaN (a program far quicker to compile).
    """
    s = settings
    g = gram_matrix(output_fn, params, probe_xs, chunk_size=s.chunk_size)
    diag = jnp.sqrt(jnp.clip(jnp.diag(g), 1e-30))
    interference = mean_off_diagonal(g).astype(jnp.float32)
    interference_cos = mean_off_diagonal(g / (diag[:, None] * diag[None, :])).astype(jnp.float32)
    sign_variance = masked_sign_variance(td_errors, done, s.sign_window)
    if not s.full:
        nan = jnp.full((), jnp.nan, jnp.float32)
        return ProbeMetrics(jnp.ones((), bool), nan, nan, nan, nan, interference, interference_cos, sign_variance)
    a = update_matrix(loss_fn, output_fn, optimizer, params, opt_state, batch, probe_xs, chunk_size=s.chunk_size)
    a0 = update_matrix(fresh_loss_fn, output_fn, optimizer, fresh_params, optimizer.init(fresh_params), batch,
                       probe_xs, chunk_size=s.chunk_size)
    phi = features_fn(params, probe_xs)
    phi = phi.reshape(phi.shape[0], -1)
    return ProbeMetrics(
        probed=jnp.ones((), bool),
        update_rank=_rank(update_rank(a, s.rank_eps)),
        update_rank_fresh=_rank(update_rank(a0, s.rank_eps)),
        srank=_rank(srank(phi, s.srank_delta)),
        dormant_fraction=jnp.asarray(dormant_fraction(phi, s.dormant_tau), jnp.float32),
        interference=interference,
        interference_cos=interference_cos,
        td_sign_variance=sign_variance,
    )
