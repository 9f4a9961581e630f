"""Per-example losses for the value, policy and distillation objectives of both papers.

Every loss is written for ONE example (one transition, one trajectory, or one state) with rlax's
time-indexed argument names and no batch axis; batch with `jax.vmap`. Where rlax has the maths it is
called; what is added here is the reduction to a scalar, trace-time checks with errors that name the
argument, and the distillation objectives of Lyle et al. 2022, §6 and App. D.1.

Conventions:
  * TD-style losses are ½·δ², so that ∂ℓ/∂v_tm1 = −δ and a gradient step is the semi-gradient TD update
    (Bengio et al. 2020, eq. 2; Lyle et al. 2022, eq. 18). Targets are stop-gradiented unless
    `stop_target_gradients=False` (the residual-gradient variant).
  * Distillation regressions follow Lyle et al. 2022, eq. 22 literally: squared error without ½.
    Teacher outputs are always stop-gradiented.
  * Distributional heads are laid out [A, n_atoms] / [A, n_quantiles], like `tdjax.expected_q`.
  * Checks: ranks and shapes always (at trace time); values (an action in [0, A), a discount in [0, 1],
    increasing atoms) only when they are concrete. A TRACED action (under jit/vmap) is UNCHECKED by
    default: JAX clamps an index ≥ A to A − 1 and wraps a negative one, silently. Run the computation
    through `tdjax.checked(fn)` to get an error naming the argument (docs/bad_inputs.md).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Optional, TypeAlias

import chex
import jax
import jax.numpy as jnp
import numpy as np
import rlax

from tdjax._src import validation

Array: TypeAlias = chex.Array
Numeric: TypeAlias = chex.Numeric

__all__ = [
    "td_loss",
    "q_learning_loss",
    "double_q_learning_loss",
    "td_lambda_loss",
    "monte_carlo_loss",
    "categorical_q_learning_loss",
    "quantile_q_learning_loss",
    "reinforce_loss",
    "ppo_clip_loss",
    "value_distillation_loss",
    "qa_regression_loss",
    "advantage_regression_loss",
    "behaviour_cloning_loss",
    "policy_distillation_loss",
]

_RANK_WORDS = {0: "a scalar", 1: "a vector", 2: "a matrix"}


# --------------------------------------------------------------------------------------------------
# Trace-time checks.


def _check_ranks(fn: str, **named) -> None:
    """chex.assert_rank on each `name=(value, rank)`, with a message that names the argument."""
    for name, (x, rank) in named.items():
        chex.assert_rank(
            x,
            rank,
            custom_message=(
                f"{fn}: `{name}` must be {_RANK_WORDS.get(rank, f'rank {rank}')} for ONE example "
                "(no batch axis; batch with jax.vmap)"
            ),
        )


def _check_same_shape(fn: str, **named) -> None:
    names = list(named)
    chex.assert_equal_shape(
        list(named.values()),
        custom_message=f"{fn}: {', '.join(f'`{n}`' for n in names)} must have the same shape",
    )


def _check_dim(fn: str, name: str, x: Array, axis: int, size: int, what: str) -> None:
    if jnp.shape(x)[axis] != size:
        raise ValueError(
            f"{fn}: `{name}` has {jnp.shape(x)[axis]} {what} (axis {axis} of shape {jnp.shape(x)}) "
            f"but {size} were expected."
        )


def _concrete(x) -> Optional[np.ndarray]:
    """The value of `x` if it is known at trace time, else None (values are only checked if known)."""
    return validation.concrete(x)


def _float(x) -> Array:
    """Real-valued input as a float array (so integer rewards or Python ints pass rlax's type checks)."""
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


def _action(fn: str, name: str, a, num_actions: int) -> Array:
    """An int action index in [0, num_actions): checked if concrete, and under `tdjax.debug_checks()`
    through checkify if traced (unchecked by default: JAX clamps or wraps a bad index silently)."""
    return validation.check_index(fn, name, a, num_actions, "actions")


def _discount(fn: str, name: str, discount) -> None:
    """A concrete discount must lie in [0, 1] (a traced one is not checked)."""
    validation.check_interval(fn, name, discount, 0.0, 1.0,
                              fix="pass γ·(1 − done) with γ in [0, 1]; 0 ends the episode")


def _increasing(fn: str, name: str, atoms) -> None:
    value = _concrete(atoms)
    if value is not None and value.size > 1 and not np.all(np.diff(value.astype(np.float64)) > 0):
        raise ValueError(
            f"{fn}: `{name}` must be a strictly increasing support z₁ < … < z_N, got {value}. "
            "Fix: use e.g. jnp.linspace(v_min, v_max, n_atoms)."
        )


@contextlib.contextmanager
def _quiet_rlax():
    # rlax's softmax/cross-entropy helpers warn at every trace that they will move to distrax; the
    # maths is unchanged, so keep the warning out of users' logs.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Rlax .* will be deprecated", category=PendingDeprecationWarning
        )
        yield


def _log_probs_and_entropy(logits: Array):
    """log π and H(π) = −Σₐ π(a) log π(a), finite (with finite gradients) when some logits are −∞."""
    log_p = jax.nn.log_softmax(logits)
    p = jnp.exp(log_p)
    entropy = -jnp.sum(p * jnp.where(p > 0, log_p, 0.0))
    return log_p, p, entropy


# --------------------------------------------------------------------------------------------------
# Value learning.


def td_loss(
    v_tm1: Numeric,
    r_t: Numeric,
    discount_t: Numeric,
    v_t: Numeric,
    *,
    stop_target_gradients: bool = True,
) -> Array:
    """TD(0) loss for one transition: ½·δ², δ = rₜ + γₜ vₜ − vₜ₋₁.

    Bengio et al. 2020, eq. 2 (and eq. 5 with λ = 0); the expected semi-gradient of this loss drives
    Lyle et al. 2022, eq. 18. With the target stop-gradiented, ∂ℓ/∂vₜ₋₁ = −δ and ∂ℓ/∂vₜ = 0.
    δ comes from `rlax.td_learning`.

    Args:
      v_tm1: [] value estimate vₜ₋₁ of the state at time t−1.
      r_t: [] reward rₜ.
      discount_t: [] discount γₜ (0 at termination).
      v_t: [] value estimate vₜ of the next state.
      stop_target_gradients: if False, gradients also flow into vₜ (residual gradient).

    Returns:
      [] the loss ½·δ².
    """
    _check_ranks("td_loss", v_tm1=(v_tm1, 0), r_t=(r_t, 0), discount_t=(discount_t, 0), v_t=(v_t, 0))
    _discount("td_loss", "discount_t", discount_t)
    delta = rlax.td_learning(
        _float(v_tm1), _float(r_t), _float(discount_t), _float(v_t),
        stop_target_gradients=stop_target_gradients,
    )
    return 0.5 * jnp.square(delta)


def q_learning_loss(
    q_tm1: Array,
    a_tm1: Numeric,
    r_t: Numeric,
    discount_t: Numeric,
    q_t: Array,
    *,
    stop_target_gradients: bool = True,
) -> Array:
    """Q-learning loss for one transition: ½·δ², δ = rₜ + γₜ maxₐ qₜ(a) − qₜ₋₁(aₜ₋₁).

    Bengio et al. 2020, eq. 3 (with ½ so that ∂ℓ/∂qₜ₋₁(aₜ₋₁) = −δ); δ from `rlax.q_learning`.

    Args:
      q_tm1: [A] Q-values at time t−1.
      a_tm1: [] int action taken at time t−1 (traced: unchecked unless run through `tdjax.checked`).
      r_t: [] reward rₜ.
      discount_t: [] discount γₜ.
      q_t: [A] Q-values at time t (usually from a target network).
      stop_target_gradients: if False, gradients also flow into `q_t`.

    Returns:
      [] the loss ½·δ².
    """
    fn = "q_learning_loss"
    _check_ranks(fn, q_tm1=(q_tm1, 1), a_tm1=(a_tm1, 0), r_t=(r_t, 0), discount_t=(discount_t, 0),
                 q_t=(q_t, 1))
    _check_same_shape(fn, q_tm1=q_tm1, q_t=q_t)
    _discount(fn, "discount_t", discount_t)
    a_tm1 = _action(fn, "a_tm1", a_tm1, jnp.shape(q_tm1)[0])
    delta = rlax.q_learning(
        _float(q_tm1), a_tm1, _float(r_t), _float(discount_t), _float(q_t),
        stop_target_gradients=stop_target_gradients,
    )
    return 0.5 * jnp.square(delta)


def double_q_learning_loss(
    q_tm1: Array,
    a_tm1: Numeric,
    r_t: Numeric,
    discount_t: Numeric,
    q_t_value: Array,
    q_t_selector: Array,
    *,
    stop_target_gradients: bool = True,
) -> Array:
    """Double Q-learning loss for one transition: ½·δ², δ = rₜ + γₜ qₜᵛᵃˡᵘᵉ(a*) − qₜ₋₁(aₜ₋₁).

    a* = argmaxₐ qₜˢᵉˡᵉᶜᵗᵒʳ(a) (van Hasselt et al. 2016). This is the Double DQN objective of Bengio
    et al. 2020, §3, and the offline "double-q" baseline of Lyle et al. 2022, App. D.1. δ from
    `rlax.double_q_learning`. No gradient reaches `q_t_selector` (argmax), nor `q_t_value` unless
    `stop_target_gradients=False`.

    Args:
      q_tm1: [A] online Q-values at time t−1.
      a_tm1: [] int action taken at time t−1 (traced: unchecked unless run through `tdjax.checked`).
      r_t: [] reward rₜ.
      discount_t: [] discount γₜ.
      q_t_value: [A] Q-values at time t used to evaluate a* (the target network in Double DQN).
      q_t_selector: [A] Q-values at time t used to pick a* (the online network in Double DQN).
      stop_target_gradients: if False, gradients also flow into `q_t_value`.

    Returns:
      [] the loss ½·δ².
    """
    fn = "double_q_learning_loss"
    _check_ranks(fn, q_tm1=(q_tm1, 1), a_tm1=(a_tm1, 0), r_t=(r_t, 0), discount_t=(discount_t, 0),
                 q_t_value=(q_t_value, 1), q_t_selector=(q_t_selector, 1))
    _check_same_shape(fn, q_tm1=q_tm1, q_t_value=q_t_value, q_t_selector=q_t_selector)
    _discount(fn, "discount_t", discount_t)
    a_tm1 = _action(fn, "a_tm1", a_tm1, jnp.shape(q_tm1)[0])
    delta = rlax.double_q_learning(
        _float(q_tm1), a_tm1, _float(r_t), _float(discount_t), _float(q_t_value),
        _float(q_t_selector), stop_target_gradients=stop_target_gradients,
    )
    return 0.5 * jnp.square(delta)


def td_lambda_loss(
    v_tm1: Array,
    r_t: Array,
    discount_t: Array,
    v_t: Array,
    lambda_: Numeric,
    *,
    stop_target_gradients: bool = True,
) -> Array:
    """TD(λ) loss for one trajectory, AVERAGED over its T steps: (1/T) Σₜ ½ (Gₜ^λ − vₜ₋₁)².

    Bengio et al. 2020, eqs. 4–5. The truncated λ-return is computed backwards by `rlax.td_lambda`:

      Gₜ^λ = rₜ + γₜ [(1 − λₜ) vₜ + λₜ Gₜ₊₁^λ],   with the last step bootstrapping from vₜ alone.

    Averaging (rather than summing) over T makes the loss an estimate of the expected per-state loss of
    eq. 5 whatever the trajectory length; with T = 1 (or λ = 0) it is the mean of `td_loss` over steps.

    Args:
      v_tm1: [T] value estimates vₜ₋₁ of the visited states.
      r_t: [T] rewards rₜ.
      discount_t: [T] discounts γₜ.
      v_t: [T] value estimates vₜ of the next states (bootstrap values).
      lambda_: [] or [T] mixing parameter λ ∈ [0, 1] (λ = 0: TD(0); λ = 1: Monte Carlo from the
        trajectory, bootstrapped from the final vₜ).
      stop_target_gradients: if False, gradients also flow into the λ-returns.

    Returns:
      [] the loss.
    """
    fn = "td_lambda_loss"
    _check_ranks(fn, v_tm1=(v_tm1, 1), r_t=(r_t, 1), discount_t=(discount_t, 1), v_t=(v_t, 1))
    chex.assert_rank(lambda_, {0, 1}, custom_message=f"{fn}: `lambda_` must be a scalar or a [T] vector")
    _check_same_shape(fn, v_tm1=v_tm1, r_t=r_t, discount_t=discount_t, v_t=v_t)
    _discount(fn, "discount_t", discount_t)
    if jnp.ndim(lambda_) == 1:
        _check_dim(fn, "lambda_", lambda_, 0, jnp.shape(v_tm1)[0], "steps")
    lam = _concrete(lambda_)
    if lam is not None and not np.all((lam >= 0) & (lam <= 1)):
        raise ValueError(f"{fn}: `lambda_` must lie in [0, 1], got {lam}.")
    td = rlax.td_lambda(
        _float(v_tm1), _float(r_t), _float(discount_t), _float(v_t), _float(lambda_),
        stop_target_gradients=stop_target_gradients,
    )
    return 0.5 * jnp.mean(jnp.square(td))


def monte_carlo_loss(v_tm1: Numeric, return_t: Numeric) -> Array:
    """Monte Carlo regression loss for one state: ½ (Gₜ − vₜ₋₁)².

    Regression on observed returns (Bengio et al. 2020, §2); its gradient flow is the Monte Carlo
    dynamics ∂ₜV = V^π − V of Lyle et al. 2022, §4.1. The return is data and is stop-gradiented.

    Args:
      v_tm1: [] value estimate of the state.
      return_t: [] observed (discounted) return Gₜ from that state.

    Returns:
      [] the loss.
    """
    _check_ranks("monte_carlo_loss", v_tm1=(v_tm1, 0), return_t=(return_t, 0))
    return 0.5 * jnp.square(jax.lax.stop_gradient(_float(return_t)) - _float(v_tm1))


def categorical_q_learning_loss(
    q_atoms_tm1: Array,
    q_logits_tm1: Array,
    a_tm1: Numeric,
    r_t: Numeric,
    discount_t: Numeric,
    q_atoms_t: Array,
    q_logits_t: Array,
    *,
    stop_target_gradients: bool = True,
) -> Array:
    """Categorical (C51) Q-learning loss for one transition, via `rlax.categorical_q_learning`.

    Bellemare et al. 2017, the C51 agent of Lyle et al. 2022, §5 and App. D.2. With pⱼ the softmax of
    the greedy next action a* = argmaxₐ Σⱼ softmax(qₜ(a))ⱼ zⱼ, the target Φ(rₜ + γₜ z; p) is projected
    onto the support z of time t−1, and

      ℓ = −Σᵢ Φᵢ log softmax(q_logits_tm1[aₜ₋₁])ᵢ.

    Args:
      q_atoms_tm1: [N] sorted support zᵢ at time t−1 (also the projection support).
      q_logits_tm1: [A, N] logits at time t−1.
      a_tm1: [] int action taken (traced: unchecked unless run through `tdjax.checked`).
      r_t: [] reward rₜ.
      discount_t: [] discount γₜ.
      q_atoms_t: [N'] support at time t.
      q_logits_t: [A, N'] logits at time t.
      stop_target_gradients: if False, gradients also flow into the projected target.

    Returns:
      [] the cross-entropy loss.
    """
    fn = "categorical_q_learning_loss"
    _check_ranks(fn, q_atoms_tm1=(q_atoms_tm1, 1), q_logits_tm1=(q_logits_tm1, 2), a_tm1=(a_tm1, 0),
                 r_t=(r_t, 0), discount_t=(discount_t, 0), q_atoms_t=(q_atoms_t, 1),
                 q_logits_t=(q_logits_t, 2))
    _check_dim(fn, "q_logits_tm1", q_logits_tm1, 1, jnp.shape(q_atoms_tm1)[0], "atoms")
    _check_dim(fn, "q_logits_t", q_logits_t, 1, jnp.shape(q_atoms_t)[0], "atoms")
    _check_dim(fn, "q_logits_t", q_logits_t, 0, jnp.shape(q_logits_tm1)[0], "actions")
    _discount(fn, "discount_t", discount_t)
    _increasing(fn, "q_atoms_tm1", q_atoms_tm1)
    _increasing(fn, "q_atoms_t", q_atoms_t)
    a_tm1 = _action(fn, "a_tm1", a_tm1, jnp.shape(q_logits_tm1)[0])
    with _quiet_rlax():
        return rlax.categorical_q_learning(
            _float(q_atoms_tm1), _float(q_logits_tm1), a_tm1, _float(r_t), _float(discount_t),
            _float(q_atoms_t), _float(q_logits_t), stop_target_gradients=stop_target_gradients,
        )


def quantile_q_learning_loss(
    dist_q_tm1: Array,
    tau_q_tm1: Array,
    a_tm1: Numeric,
    r_t: Numeric,
    discount_t: Numeric,
    dist_q_t_selector: Array,
    dist_q_t: Array,
    kappa: float = 1.0,
    *,
    stop_target_gradients: bool = True,
) -> Array:
    """Quantile-regression (QR-DQN) Q-learning loss for one transition, via `rlax.quantile_q_learning`.

    Dabney et al. 2018; the "qr" offline baseline of Lyle et al. 2022, App. D.1. With θᵢ the quantiles
    of the taken action, θ'ⱼ those of a* = argmaxₐ meanⱼ dist_q_t_selector[a, j] and u = rₜ + γₜ θ'ⱼ − θᵢ:

      ℓ = Σᵢ (1/N') Σⱼ |τᵢ − 𝟙{u < 0}| · L_κ(u),   L_κ(u) = ½u² if |u| ≤ κ else κ(|u| − ½κ),

    and L_0(u) = |u|. L_κ is not divided by κ (rlax's convention; Dabney et al. divide by κ, the same
    for the usual κ = 1).

    Layout: [A, n_quantiles] like the rest of tdjax (`tdjax.expected_q`); note this is the TRANSPOSE of
    rlax's [n_quantiles, A]. The arrays are transposed before calling rlax.

    Args:
      dist_q_tm1: [A, N] quantiles at time t−1.
      tau_q_tm1: [N] quantile levels τᵢ of `dist_q_tm1` (usually (2i + 1) / 2N).
      a_tm1: [] int action taken (traced: unchecked unless run through `tdjax.checked`).
      r_t: [] reward rₜ.
      discount_t: [] discount γₜ.
      dist_q_t_selector: [A, N'] quantiles at time t used to choose a*.
      dist_q_t: [A, N'] quantiles at time t used as the target.
      kappa: Huber threshold κ ≥ 0, a Python number (static under jit); 0 gives the plain quantile loss.
      stop_target_gradients: if False, gradients also flow into `dist_q_t`.

    Returns:
      [] the loss.
    """
    fn = "quantile_q_learning_loss"
    _check_ranks(fn, dist_q_tm1=(dist_q_tm1, 2), tau_q_tm1=(tau_q_tm1, 1), a_tm1=(a_tm1, 0),
                 r_t=(r_t, 0), discount_t=(discount_t, 0), dist_q_t_selector=(dist_q_t_selector, 2),
                 dist_q_t=(dist_q_t, 2))
    _check_dim(fn, "dist_q_tm1", dist_q_tm1, 1, jnp.shape(tau_q_tm1)[0], "quantiles (must match `tau_q_tm1`)")
    _check_same_shape(fn, dist_q_t_selector=dist_q_t_selector, dist_q_t=dist_q_t)
    _check_dim(fn, "dist_q_t", dist_q_t, 0, jnp.shape(dist_q_tm1)[0], "actions")
    _discount(fn, "discount_t", discount_t)
    validation.check_interval(fn, "tau_q_tm1", tau_q_tm1, 0.0, 1.0,
                              fix="quantile levels are usually (2i + 1) / 2N, i = 0..N−1")
    kappa_value = _concrete(kappa)
    if kappa_value is None or kappa_value.ndim != 0:
        raise ValueError(f"{fn}: `kappa` must be a Python number (static under jit), got {kappa!r}.")
    if not kappa_value >= 0:
        raise ValueError(f"{fn}: `kappa` must be >= 0 (0 = no Huber loss), got {float(kappa_value)}.")
    a_tm1 = _action(fn, "a_tm1", a_tm1, jnp.shape(dist_q_tm1)[0])
    return rlax.quantile_q_learning(
        _float(dist_q_tm1).T, _float(tau_q_tm1), a_tm1, _float(r_t), _float(discount_t),
        _float(dist_q_t_selector).T, _float(dist_q_t).T, huber_param=float(kappa_value),
        stop_target_gradients=stop_target_gradients,
    )


# --------------------------------------------------------------------------------------------------
# Policy gradients.


def reinforce_loss(logits_t: Array, a_t: Numeric, advantage_t: Numeric) -> Array:
    """REINFORCE loss for one step: −log π(aₜ|xₜ) · Aₜ, with Aₜ stop-gradiented.

    Bengio et al. 2020, eq. 6 (Williams 1992): ∇ℓ = −Aₜ ∇ log π(aₜ|xₜ), with Aₜ the return Gₜ or an
    advantage. Computed by `rlax.policy_gradient_loss` on a length-1 sequence.

    Args:
      logits_t: [A] policy logits at xₜ.
      a_t: [] int action taken (traced: unchecked unless run through `tdjax.checked`).
      advantage_t: [] return or advantage estimate Aₜ.

    Returns:
      [] the loss.
    """
    fn = "reinforce_loss"
    _check_ranks(fn, logits_t=(logits_t, 1), a_t=(a_t, 0), advantage_t=(advantage_t, 0))
    a_t = _action(fn, "a_t", a_t, jnp.shape(logits_t)[0])
    logits_t = _float(logits_t)
    with _quiet_rlax():
        return rlax.policy_gradient_loss(
            logits_t[None], a_t[None], _float(advantage_t)[None], jnp.ones((1,), logits_t.dtype),
            use_stop_gradient=True,
        )


def ppo_clip_loss(
    logits_t: Array,
    a_t: Numeric,
    behaviour_logprob_t: Numeric,
    advantage_t: Numeric,
    epsilon: Numeric = 0.2,
) -> Array:
    """PPO clipped-surrogate loss for one step: −min(ρₜ Aₜ, clip(ρₜ, 1 − ε, 1 + ε) Aₜ).

    Schulman et al. 2017; the PPO agents of Lyle et al. 2022, §5 (Figure 4) and §6.2.
    ρₜ = π(aₜ|xₜ) / μ(aₜ|xₜ) = exp(log π(aₜ|xₜ) − log μ(aₜ|xₜ)); Aₜ and log μ are stop-gradiented.
    Computed by `rlax.clipped_surrogate_pg_loss` on a length-1 sequence.

    Args:
      logits_t: [A] logits of the current policy π at xₜ.
      a_t: [] int action taken by the behaviour policy μ (traced: unchecked unless run through `tdjax.checked`).
      behaviour_logprob_t: [] log μ(aₜ|xₜ), recorded when acting.
      advantage_t: [] advantage estimate Aₜ.
      epsilon: clipping radius ε > 0.

    Returns:
      [] the loss.
    """
    fn = "ppo_clip_loss"
    _check_ranks(fn, logits_t=(logits_t, 1), a_t=(a_t, 0), behaviour_logprob_t=(behaviour_logprob_t, 0),
                 advantage_t=(advantage_t, 0), epsilon=(epsilon, 0))
    eps = _concrete(epsilon)
    if eps is not None and not eps > 0:
        raise ValueError(f"{fn}: `epsilon` must be > 0, got {float(eps)}.")
    a_t = _action(fn, "a_t", a_t, jnp.shape(logits_t)[0])
    log_pi_a = jax.nn.log_softmax(_float(logits_t))[a_t]
    ratio = jnp.exp(log_pi_a - jax.lax.stop_gradient(_float(behaviour_logprob_t)))
    return rlax.clipped_surrogate_pg_loss(
        ratio[None], _float(advantage_t)[None], epsilon, use_stop_gradient=True
    )


# --------------------------------------------------------------------------------------------------
# Post-training distillation (Lyle et al. 2022, §6 and App. D.1).


def _check_student_teacher(fn: str, student: Array, teacher: Array, s_name: str, t_name: str) -> None:
    _check_ranks(fn, **{s_name: (student, 1), t_name: (teacher, 1)})
    _check_same_shape(fn, **{s_name: student, t_name: teacher})


def value_distillation_loss(q_student: Array, q_teacher: Array) -> Array:
    """Value distillation ("Q-regression") for one state: Σₐ (q_S(a) − q_T(a))².

    Lyle et al. 2022, eq. 22, for one s ∼ B_T: regression on ALL action values of the frozen teacher
    (following Ostrovski et al. 2021), squared error without ½ as in the paper. The teacher is
    stop-gradiented.

    Args:
      q_student: [A] student Q-values q_S(s, ·).
      q_teacher: [A] teacher Q-values q_T(s, ·).

    Returns:
      [] the loss.
    """
    _check_student_teacher("value_distillation_loss", q_student, q_teacher, "q_student", "q_teacher")
    return jnp.sum(jnp.square(_float(q_student) - jax.lax.stop_gradient(_float(q_teacher))))


def qa_regression_loss(q_student: Array, q_teacher: Array, a: Optional[Numeric] = None) -> Array:
    """qa-regression for one state: (q_S(a) − q_T(a))² for a single action a.

    Lyle et al. 2022, App. D.1: "q-value regression on the action taken by the pre-trained agent" —
    eq. 22 restricted to one action. Pass the action stored with the teacher's transition as `a`; if
    `a` is None, the teacher's greedy action argmaxₐ q_T(a) is used. The teacher is stop-gradiented.

    Args:
      q_student: [A] student Q-values.
      q_teacher: [A] teacher Q-values.
      a: [] int action taken by the teacher, or None for the teacher's greedy action (traced: unchecked
        unless run through `tdjax.checked`).

    Returns:
      [] the loss.
    """
    fn = "qa_regression_loss"
    _check_student_teacher(fn, q_student, q_teacher, "q_student", "q_teacher")
    q_teacher = jax.lax.stop_gradient(_float(q_teacher))
    if a is None:
        a = jnp.argmax(q_teacher)
    else:
        _check_ranks(fn, a=(a, 0))
        a = _action(fn, "a", a, jnp.shape(q_student)[0])
    return jnp.square(_float(q_student)[a] - q_teacher[a])


def advantage_regression_loss(q_student: Array, q_teacher: Array) -> Array:
    """Advantage regression for one state: Σₐ (adv_S(a) − adv_T(a))², adv(a) = q(a) − (1/|A|) Σ_b q(b).

    Lyle et al. 2022, App. D.1 ("adv-regression": the advantage computed as the q-value minus the mean
    over all actions), with the all-action squared error of eq. 22. Only the student's advantages are
    fitted: a shift of q_S common to all actions costs nothing. The teacher is stop-gradiented.

    Args:
      q_student: [A] student Q-values.
      q_teacher: [A] teacher Q-values.

    Returns:
      [] the loss.
    """
    _check_student_teacher("advantage_regression_loss", q_student, q_teacher, "q_student", "q_teacher")
    q_student, q_teacher = _float(q_student), jax.lax.stop_gradient(_float(q_teacher))
    adv_student = q_student - jnp.mean(q_student)
    adv_teacher = q_teacher - jnp.mean(q_teacher)
    return jnp.sum(jnp.square(adv_student - adv_teacher))


def behaviour_cloning_loss(logits: Array, a: Numeric, entropy_coef: Numeric = 1e-2) -> Array:
    """Entropy-regularised behaviour cloning for one state-action pair: −log π(a|x) − λ·H(π(x)).

    Lyle et al. 2022, eq. 23 (λ = 1e-2 in §6.1). The extracted eq. 23 reads E[log π + λH], which as a
    loss to minimise would push the teacher's action's probability DOWN; the form implemented is the
    minimised one written out in App. B.3, eq. 57: ℓ = −log P_θ(a|x) − λ H(P_θ(·|x)) (which uses
    λ = 0.1 there). A positive λ is therefore an entropy bonus. H(π) = −Σ_b π(b) log π(b).

    Args:
      logits: [A] student policy logits (e.g. DQN outputs fed to a softmax, App. B.3).
      a: [] int action taken by the teacher (traced: unchecked unless run through `tdjax.checked`).
      entropy_coef: λ; default 1e-2 (§6.1).

    Returns:
      [] the loss.
    """
    fn = "behaviour_cloning_loss"
    _check_ranks(fn, logits=(logits, 1), a=(a, 0), entropy_coef=(entropy_coef, 0))
    a = _action(fn, "a", a, jnp.shape(logits)[0])
    log_p, _, entropy = _log_probs_and_entropy(_float(logits))
    return -log_p[a] - entropy_coef * entropy


def policy_distillation_loss(
    student_logits: Array, teacher_logits: Array, entropy_coef: Numeric = 0.0
) -> Array:
    """Policy distillation for one state: D_KL(π_S(s) ‖ π_T(s)) + λ·H(π_S(s)), as written in eq. 24.

    Lyle et al. 2022, eq. 24: D_KL(π_S‖π_T) = Σₐ π_S(a) (log π_S(a) − log π_T(a)) (the student-first,
    "reverse" KL, as printed) and H(π_S) = −Σₐ π_S(a) log π_S(a). Sign convention: the loss is
    minimised with +λH exactly as printed, so λ > 0 PENALISES student entropy and a NEGATIVE λ is an
    entropy bonus. The paper gives no value of λ for eq. 24, so the default is 0 (pure KL). The teacher
    is stop-gradiented.

    Args:
      student_logits: [A] student policy logits.
      teacher_logits: [A] teacher policy logits.
      entropy_coef: λ in eq. 24 (see the sign convention above).

    Returns:
      [] the loss.
    """
    fn = "policy_distillation_loss"
    _check_student_teacher(fn, student_logits, teacher_logits, "student_logits", "teacher_logits")
    chex.assert_rank(entropy_coef, 0, custom_message=f"{fn}: `entropy_coef` must be a scalar")
    log_p_s, p_s, entropy_s = _log_probs_and_entropy(_float(student_logits))
    log_p_t = jax.nn.log_softmax(jax.lax.stop_gradient(_float(teacher_logits)))
    kl = jnp.sum(p_s * jnp.where(p_s > 0, log_p_s - log_p_t, 0.0))
    return kl + entropy_coef * entropy_s
