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

Along-trajectory probes (Bengio et al. 2020, §5, §5.1, Fig. 7, App. D.1), each off by default and, when
off, a zero-size field that costs nothing (`trajectory_probes`):

  * loss change by temporal offset: `tdjax.loss_change_by_offset` (`update="per_sample"`) for N update
    samples drawn among the valid transitions and their neighbours x = −X..X within the episode, with
    the agent's per-example loss, its real optimizer and current optimizer state; per-offset mean [2X+1];
  * stiffness by offset: `tdjax.stiffness_by_offset` on the same samples; per-offset mean [2X+1];
  * the ρ′ terms r1, r2, r3 (eq. 16, 17): `tdjax.interference_derivative_terms` over the k × k pairs of
    the probe's k transitions; for each term the mean over pairs and the means of its positive and of
    its negative samples (Fig. 7's lines), [3, 3];
  * the singular values of the last hidden layer's features over the k states:
    `tdjax.singular_value_spread(φ).singular_values`, [min(k, D)].
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from tdjax._src.gradients import (
    InterferenceDerivativeTerms,
    gram_matrix,
    interference_derivative_terms,
    td_sign_variance,
)
from tdjax._src.metrics import loss_change_by_offset, singular_value_spread, stiffness_by_offset
from tdjax._src.update_matrix import dormant_fraction, srank, update_matrix, update_rank
from tdjax.train.validation import require

__all__ = ["ProbeSettings", "ProbeMetrics", "TrajectoryProbes", "empty_probe_metrics", "value_probes",
           "trajectory_probes", "rho_term_summary", "trajectory_settings", "check_trajectory_fields",
           "masked_sign_variance", "mean_off_diagonal"]


class ProbeSettings(NamedTuple):
    """Static probe settings (Python numbers; see `tdjax.train.ValueConfig` for their meaning)."""

    rank_eps: float = 0.1
    srank_delta: float = 0.01
    dormant_tau: float = 0.025
    sign_window: int = 5
    chunk_size: Optional[int] = None
    full: bool = True  # False: only ρ̄ and the TD-sign variance (no update matrices, ranks or features)
    max_offset: int = 0  # X of the offset probes (0: off)
    offset_samples: int = 8  # N update samples of the offset probes
    rho_terms: bool = False  # the ρ′-term probe is on
    rho_moving_target: bool = False  # its TD target moves with θ (eq. 17) instead of the loop's target
    num_singular_values: int = 0  # min(k, D) when the singular-value probe is on, else 0

    @property
    def offset_width(self) -> int:
        """W = 2X + 1 offsets, or 0 when the offset probes are off."""
        return 2 * self.max_offset + 1 if self.max_offset > 0 else 0


class ProbeMetrics(NamedTuple):
    """One probe. float32, NaN where no probe was taken (`probed` False) or where a quantity was
    invalid (e.g. a non-finite update matrix, or no window without an episode end). The last four
    fields have shapes set by `ProbeSettings` (zero-size when their probe is off); stacked over T
    updates every field gets a leading [T]."""

    probed: jax.Array  # shape=(), bool. A probe was taken at this update.
    update_rank: jax.Array  # shape=(), float32. Update rank of the agent (eq. 21, ε = rank_eps).
    update_rank_fresh: jax.Array  # shape=(), float32. Same for a freshly initialised network.
    srank: jax.Array  # shape=(), float32. srank_δ of the penultimate features of the k states.
    dormant_fraction: jax.Array  # shape=(), float32. τ-dormant fraction of those features.
    interference: jax.Array  # shape=(), float32. Mean off-diagonal of ρ̄ (gram matrix).
    interference_cos: jax.Array  # shape=(), float32. Mean off-diagonal of the normalised ρ̄.
    td_sign_variance: jax.Array  # shape=(), float32. Mean TD-error sign variance over windows.
    loss_change_by_offset: jax.Array  # shape=[W], float32. Mean J_θ(s_{t+x}) − J_θ′(s_{t+x}), x = −X..X.
    stiffness_by_offset: jax.Array  # shape=[W], float32. Mean gradient cosine of s_t and s_{t+x}.
    rho_terms: jax.Array  # shape=[3, 3] (rho_terms) or [0, 3], float32. Rows r1, r2, r3; columns mean
    #                       over the k × k pairs, mean of the positive entries, mean of the negative ones.
    singular_values: jax.Array  # shape=[num_singular_values], float32. σᵢ(φ)/√k of the features, descending.


class TrajectoryProbes(NamedTuple):
    """The along-trajectory fields of `ProbeMetrics` (shapes as there)."""

    loss_change_by_offset: jax.Array  # shape=[W], float32.
    stiffness_by_offset: jax.Array  # shape=[W], float32.
    rho_terms: jax.Array  # shape=[3, 3] or [0, 3], float32.
    singular_values: jax.Array  # shape=[num_singular_values], float32.


def trajectory_settings(c: Any, network: Any, obs_shape: Tuple[int, ...]) -> dict:
    """The along-trajectory `ProbeSettings` fields of a loop config `c` (`probe_max_offset`,
    `probe_offset_samples`, `probe_rho_terms`, `probe_rho_moving_target`, `probe_singular_values`);
    the features' width D of `network` (a `ValueNetwork`) is read from abstract shapes (nothing compiled)."""
    n_sv = 0
    if c.probe_singular_values:
        def feats(key, x):
            return network.apply(network.init(key, x), x, method="features")

        xs = jax.ShapeDtypeStruct((c.probe_k,) + tuple(obs_shape), jnp.float32)
        out = jax.eval_shape(feats, jax.random.key(0), xs)
        n_sv = min(c.probe_k, math.prod(out.shape[1:]))
    return dict(max_offset=int(c.probe_max_offset), offset_samples=int(c.probe_offset_samples),
                rho_terms=bool(c.probe_rho_terms), rho_moving_target=bool(c.probe_rho_moving_target),
                num_singular_values=n_sv)


def check_trajectory_fields(c: Any, *, steps_per_env: int, first_probe_transitions: Optional[int]) -> None:
    """ValueError naming the field for bad along-trajectory probe settings of config `c`.

    Args:
      c: a loop config with the `probe_max_offset`, `probe_offset_samples`, `probe_rho_*` fields.
      steps_per_env: time slots per environment of the buffer / dataset (2X + 1 must fit in them).
      first_probe_transitions: valid transitions (per device) available to the first probe, or None
        when the config does not probe.
    """
    require(c.probe_max_offset >= 0, c, "probe_max_offset", "must be >= 0",
            "use 0 to disable the offset probes, or e.g. probe_max_offset=30 (Bengio et al. 2020 §5)")
    require(c.probe_offset_samples >= 1, c, "probe_offset_samples", "must be a positive integer",
            "e.g. probe_offset_samples=8")
    require(c.probe_rho_terms or not c.probe_rho_moving_target, c, "probe_rho_moving_target",
            "sets the target of the ρ′-term probe, which is off", "set probe_rho_terms=True too, or leave it False")
    if first_probe_transitions is None or c.probe_max_offset == 0:
        return
    x = c.probe_max_offset
    require(2 * x + 1 <= steps_per_env, c, "probe_max_offset",
            f"offsets −{x}..{x} need 2X + 1 = {2 * x + 1} consecutive steps but the buffer/dataset holds "
            f"{steps_per_env} steps per environment", f"set probe_max_offset <= {(steps_per_env - 1) // 2}")
    require(c.probe_offset_samples <= first_probe_transitions, c, "probe_offset_samples",
            f"the first probe has only {first_probe_transitions} transitions to draw distinct update samples from",
            f"set probe_offset_samples <= {first_probe_transitions}")


def _empty_trajectory(settings: ProbeSettings) -> TrajectoryProbes:
    w = settings.offset_width

    def nan(*shape):
        return jnp.full(shape, jnp.nan, jnp.float32)

    return TrajectoryProbes(nan(w), nan(w), nan(3 if settings.rho_terms else 0, 3), nan(settings.num_singular_values))


def empty_probe_metrics(settings: Optional[ProbeSettings] = None) -> ProbeMetrics:
    """The value recorded at updates without a probe (field shapes from `settings`; default: the
    along-trajectory probes off, zero-size)."""
    settings = ProbeSettings() if settings is None else settings
    nan = jnp.full((), jnp.nan, jnp.float32)
    scalars = {f: nan for f in ProbeMetrics._fields[1:] if f not in TrajectoryProbes._fields}
    return ProbeMetrics(probed=jnp.zeros((), bool), **scalars, **_empty_trajectory(settings)._asdict())


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


def rho_term_summary(terms: InterferenceDerivativeTerms) -> jax.Array:
    """Fig. 7's three lines per term of ρ′ = −r1 − r2 − r3 (Bengio et al. 2020, eq. 16, 17).

    Args:
      terms: `tdjax.interference_derivative_terms(...)`, each term [k_a, k_b].

    Returns:
      [3, 3] float32: row i is rᵢ₊₁; columns: the mean over all k_a · k_b pairs, the mean of the
      positive entries, the mean of the negative entries (NaN where there are none).
    """
    rows = []
    for r in terms:
        r = jnp.ravel(r).astype(jnp.float32)
        pos, neg = r > 0, r < 0

        def part(m, r=r):
            n = jnp.sum(m)
            return jnp.where(n > 0, jnp.sum(jnp.where(m, r, 0.0)) / jnp.maximum(n, 1), jnp.nan)

        rows.append(jnp.stack([jnp.mean(r), part(pos), part(neg)]))
    return jnp.stack(rows)


def trajectory_probes(
    settings: ProbeSettings,
    *,
    loss_fn: Callable[[Any, Any], jax.Array],
    optimizer: optax.GradientTransformation,
    params: Any,
    opt_state: Any,
    phi: Optional[jax.Array],
    offset_batch: Any = None,
    offset_neighbours: Any = None,
    offset_mask: Optional[jax.Array] = None,
    value_fn: Optional[Callable[[Any, Any], jax.Array]] = None,
    target_fn: Optional[Callable[[Any, Any], jax.Array]] = None,
    rho_batch: Any = None,
) -> TrajectoryProbes:
    """The along-trajectory probes of Bengio et al. 2020 that `settings` switches on (pure; jittable).

      gain(t, x) = J_θ(s_{t+x}) − J_θ′(s_{t+x}),  θ′ one real optimizer step on s_t    (§5, Figs 3, 4)
      S(t, x) = ∇J(s_t)ᵀ∇J(s_{t+x}) / (‖∇J(s_t)‖ ‖∇J(s_{t+x})‖)                         (§5.1, Fig. 5)
      ρ′ = −r1 − r2 − r3 for J = ½(f − y)²                                              (eq. 16, 17, Fig. 7)
      σ₁ ≥ … ≥ σ_min(k,D) of φ/√k                                                        (App. D.1, Fig. 12)

    Args:
      settings: `ProbeSettings` (max_offset X, rho_terms, num_singular_values; chunk_size).
      loss_fn: `loss_fn(params, example)` for ONE example, the loop's per-example loss (target closed over).
      optimizer, params, opt_state: the agent's optax optimizer and its CURRENT state at θ.
      phi: [k, D] last-hidden-layer features of the probe's k states (needed for the singular values only).
      offset_batch: N update samples (leading axis N); `offset_neighbours` the same pytree [N, 2X+1, ...]
        and `offset_mask` [N, 2X+1] bool, as `tdjax.train.replay.neighbours` returns them (X > 0 only).
      value_fn, target_fn: prediction f(θ, example) and target y(θ, example) for the ρ′ terms, over the
        k × k pairs of `rho_batch` (rho_terms only).

    Returns:
      `TrajectoryProbes`; fields of the probes that are off are zero-size (as `empty_probe_metrics`).
    """
    s = settings
    out = _empty_trajectory(s)
    if s.max_offset > 0:
        assert offset_batch is not None and offset_neighbours is not None and offset_mask is not None
        lc = loss_change_by_offset(loss_fn, params, optimizer, opt_state, offset_batch, offset_neighbours, offset_mask,
                                   update="per_sample", chunk_size=s.chunk_size)
        st = stiffness_by_offset(loss_fn, params, offset_batch, offset_neighbours, offset_mask, chunk_size=s.chunk_size)
        out = out._replace(loss_change_by_offset=lc.mean.astype(jnp.float32),
                           stiffness_by_offset=st.mean.astype(jnp.float32))
    if s.rho_terms:
        assert value_fn is not None and target_fn is not None and rho_batch is not None
        terms = interference_derivative_terms(value_fn, target_fn, params, rho_batch, rho_batch,
                                              chunk_size=s.chunk_size)
        out = out._replace(rho_terms=rho_term_summary(terms))
    if s.num_singular_values > 0:
        assert phi is not None
        sv = singular_value_spread(phi.reshape(phi.shape[0], -1)).singular_values
        out = out._replace(singular_values=sv.astype(jnp.float32))
    return out


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
    offset_batch: Any = None,
    offset_neighbours: Any = None,
    offset_mask: Optional[jax.Array] = None,
    value_fn: Optional[Callable[[Any, Any], jax.Array]] = None,
    target_fn: Optional[Callable[[Any, Any], jax.Array]] = None,
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
        `optimizer.init(fresh_params)`, with `opt_state`'s hyperparameters when it holds them).
      td_errors, done: [T, E] TD errors and episode ends of recent consecutive transitions.
      offset_batch, offset_neighbours, offset_mask, value_fn, target_fn: the along-trajectory probes'
        inputs (`trajectory_probes`; the ρ′ terms use `batch` as their k transitions).

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
    phi = None
    if s.full or s.num_singular_values > 0:
        phi = features_fn(params, probe_xs)
        phi = phi.reshape(phi.shape[0], -1)
    # the along-trajectory probes are computed whenever switched on, whatever the probe set
    traj = trajectory_probes(s, loss_fn=loss_fn, optimizer=optimizer, params=params, opt_state=opt_state, phi=phi,
                             offset_batch=offset_batch, offset_neighbours=offset_neighbours, offset_mask=offset_mask,
                             value_fn=value_fn, target_fn=target_fn, rho_batch=batch)
    if not s.full:
        nan = jnp.full((), jnp.nan, jnp.float32)
        return ProbeMetrics(jnp.ones((), bool), nan, nan, nan, nan, interference, interference_cos, sign_variance,
                            **traj._asdict())
    a = update_matrix(loss_fn, output_fn, optimizer, params, opt_state, batch, probe_xs, chunk_size=s.chunk_size)
    fresh_state = optimizer.init(fresh_params)
    if hasattr(opt_state, "hyperparams"):  # the learner's hyperparameters (an lr set as data), not the config's
        fresh_state = fresh_state._replace(hyperparams=opt_state.hyperparams)
    a0 = update_matrix(fresh_loss_fn, output_fn, optimizer, fresh_params, fresh_state, batch,
                       probe_xs, chunk_size=s.chunk_size)
    assert phi is not None
    return ProbeMetrics(
        probed=jnp.ones((), bool),
        update_rank=_rank(update_rank(a, s.rank_eps)),
        update_rank_fresh=_rank(update_rank(a0, s.rank_eps)),
        srank=_rank(srank(phi, s.srank_delta)),
        dormant_fraction=jnp.asarray(dormant_fraction(phi, s.dormant_tau), jnp.float32),
        interference=interference,
        interference_cos=interference_cos,
        td_sign_variance=sign_variance,
        **traj._asdict(),
    )
