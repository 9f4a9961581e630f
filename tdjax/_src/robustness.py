"""Robustness of a learned policy to input perturbations and interpolations (Lyle et al. 2022, §6.1).

Lyle et al. 2022, §6.1, Fig. 5: "The robustness to perturbations is measured by tracking whether the
network takes the same action under a Gaussian perturbation to its input as in the unperturbed
observation. Finally, we investigate the network's interpolation behaviour by evaluating whether, given
a convex combination of observations o₁ and o₂, the network takes the same action under the
combination as it does in either of the original observations." The Fig. 5 caption: "Axes indicate the
ℓ1 norm between the policy on the original input batch and on the perturbed input batch."

Which policy. The paper's value networks act greedily (evaluation is ε-greedy with ε = 0.01); its
behaviour-cloning students "feed the final layer of actions into a softmax to obtain a probability
distribution over actions, P_θ(a|x)" (App. B.3). So `policy="greedy"` (one-hot argmax of the outputs,
the default, for Q-networks) and `policy="softmax"` (softmax of the outputs, for logits of a policy or
BC network) are offered; any `policy(outputs) -> probabilities` callable is accepted too (e.g. an
ε-greedy policy). The action compared is always argmax of the outputs (the greedy action, or the mode
of a policy). With the greedy policy the ℓ1 distance of one state is 2·1[action changed], so the mean
ℓ1 distance is 2·(1 − agreement); with a softmax it also sees changes that do not flip the argmax.

`apply_fn(params, x)` maps ONE observation to the network's [A] outputs (Q-values or logits); the
functions vmap it over the batch. Reduce distributional heads first (`tdjax.expected_q`).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Union

import chex
import jax
import jax.numpy as jnp

__all__ = [
    "PerturbationRobustness",
    "InterpolationConsistency",
    "perturbation_robustness",
    "interpolation_consistency",
]

PyTree = Any
Policy = Union[str, Callable[[chex.Array], chex.Array]]


class PerturbationRobustness(NamedTuple):
    """Agreement of a policy with itself under Gaussian input noise (Lyle et al. 2022, Fig. 5)."""

    agreement: chex.Array  # shape=(). Fraction of (state, noise draw) pairs whose argmax action is unchanged.
    policy_l1: chex.Array  # shape=(). Mean over states and draws of ‖π(·|x) − π(·|x + σε)‖₁, in [0, 2].
    same_action: chex.Array  # shape=[num_samples, B], bool. Per draw and state.
    l1: chex.Array  # shape=[num_samples, B]. Per draw and state.


class InterpolationConsistency(NamedTuple):
    """Consistency of a policy along convex combinations of two observations (Lyle et al. 2022, Fig. 5)."""

    consistency: chex.Array  # shape=(). Fraction of (pair, point) whose action equals that of either endpoint.
    policy_l1: chex.Array  # shape=(). Mean of `l1`.
    alphas: chex.Array  # shape=[P]. Mixing weights α of the interior points x_α = (1 − α)·a + α·b.
    consistent: chex.Array  # shape=[B, P], bool. a(x_α) ∈ {a(a), a(b)}.
    l1: chex.Array  # shape=[B, P]. min(‖π(x_α) − π(a)‖₁, ‖π(x_α) − π(b)‖₁): distance to the nearer endpoint.
    l1_to_a: chex.Array  # shape=[B, P]. ‖π(x_α) − π(a)‖₁.
    l1_to_b: chex.Array  # shape=[B, P]. ‖π(x_α) − π(b)‖₁.


def _policy_fn(policy: Policy, fn_name: str) -> Callable[[chex.Array], chex.Array]:
    if callable(policy):
        return policy
    if policy == "greedy":
        return lambda out: jax.nn.one_hot(jnp.argmax(out, axis=-1), out.shape[-1], dtype=out.dtype)
    if policy == "softmax":
        return lambda out: jax.nn.softmax(out, axis=-1)
    raise ValueError(
        f"{fn_name}: unknown `policy` {policy!r}; use 'greedy' (Q-networks), 'softmax' (logits) or a "
        "callable outputs[..., A] -> probabilities[..., A]."
    )


def _outputs(apply_fn: Callable, params: PyTree, obs: chex.Array, fn_name: str) -> chex.Array:
    """apply_fn vmapped over the leading axis of obs; checks it gives [A] per observation."""
    spec = jax.eval_shape(apply_fn, params, jax.ShapeDtypeStruct(obs.shape[1:], obs.dtype))
    if not hasattr(spec, "shape") or len(spec.shape) != 1:
        raise ValueError(
            f"{fn_name}: `apply_fn(params, x)` must map ONE observation to a vector of [A] action outputs "
            f"(Q-values or logits), got {spec}. Reduce distributional heads first (tdjax.expected_q) and "
            "pass a per-observation function (it is vmapped over the batch here)."
        )
    return jax.vmap(lambda x: apply_fn(params, x))(obs)


def _check_obs(obs: chex.Array, name: str, fn_name: str) -> chex.Array:
    obs = jnp.asarray(obs)
    if obs.ndim < 2:
        raise ValueError(f"{fn_name}: `{name}` must be a batch [B, *obs_shape], got shape {obs.shape}.")
    if not jnp.issubdtype(obs.dtype, jnp.floating):
        obs = obs.astype(jnp.float32)
    return obs


def perturbation_robustness(
    apply_fn: Callable[[PyTree, chex.Array], chex.Array],
    params: PyTree,
    obs: chex.Array,
    key: chex.PRNGKey,
    *,
    noise_scale: float,
    num_samples: int = 1,
    policy: Policy = "greedy",
) -> PerturbationRobustness:
    """How often the action survives Gaussian input noise, and how far the policy moves (Lyle Fig. 5).

    For each state x in the batch and each of `num_samples` draws ε ~ N(0, I):

      same_action = 1[argmax f(x + σε) = argmax f(x)]
      l1          = ‖π(·|x) − π(·|x + σε)‖₁        (the Fig. 5 axes, "the ℓ1 norm between the policy on
                                                   the original input batch and on the perturbed batch")

    with σ = `noise_scale` in the units of `obs` (scale it to the observation range, e.g. [0, 1] pixels).

    Args:
      apply_fn: `apply_fn(params, x) -> [A]` outputs for ONE observation.
      params: network parameters.
      obs: [B, *obs_shape] clean observations (cast to float if integer).
      key: PRNG key for the noise.
      noise_scale: σ ≥ 0, the standard deviation of the Gaussian perturbation.
      num_samples: noise draws per state.
      policy: "greedy" (one-hot argmax, Q-networks), "softmax" (policy/BC logits), or a callable
        outputs[..., A] -> probabilities[..., A]. See the module docstring.

    Returns:
      `PerturbationRobustness(agreement, policy_l1, same_action, l1)`.
    """
    fn_name = "perturbation_robustness"
    obs = _check_obs(obs, "obs", fn_name)
    if isinstance(noise_scale, (int, float)) and not noise_scale >= 0:
        raise ValueError(f"{fn_name}: `noise_scale` must be ≥ 0 (a standard deviation), got {noise_scale!r}.")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"{fn_name}: `num_samples` must be a positive int, got {num_samples!r}.")
    pi = _policy_fn(policy, fn_name)
    clean = _outputs(apply_fn, params, obs, fn_name)
    noise = jax.random.normal(key, (num_samples,) + obs.shape, obs.dtype)
    noisy = jax.vmap(lambda n: _outputs(apply_fn, params, obs + noise_scale * n, fn_name))(noise)
    same = jnp.argmax(noisy, axis=-1) == jnp.argmax(clean, axis=-1)[None]
    l1 = jnp.sum(jnp.abs(pi(noisy) - pi(clean)[None]), axis=-1)
    return PerturbationRobustness(
        agreement=jnp.mean(same.astype(clean.dtype)), policy_l1=jnp.mean(l1), same_action=same, l1=l1
    )


def interpolation_consistency(
    apply_fn: Callable[[PyTree, chex.Array], chex.Array],
    params: PyTree,
    obs_a: chex.Array,
    obs_b: chex.Array,
    *,
    num_points: int = 8,
    policy: Policy = "greedy",
) -> InterpolationConsistency:
    """Whether the action along convex combinations of two observations is one of the endpoints' (Fig. 5).

    Lyle et al. 2022, §6.1: "given a convex combination of observations o₁ and o₂, the network takes the
    same action under the combination as it does in either of the original observations". For each pair
    (a, b) and interior point x_α = (1 − α)·a + α·b, α = i/(P + 1), i = 1..P (the endpoints themselves are
    trivially consistent and left out):

      consistent = 1[argmax f(x_α) ∈ {argmax f(a), argmax f(b)}]
      l1         = min(‖π(x_α) − π(a)‖₁, ‖π(x_α) − π(b)‖₁)

    The paper gives no formula for an ℓ1 distance along the path; the distance to the nearer endpoint's
    policy is the one that is 0 exactly when the policy at x_α equals one of the endpoints' (mirroring
    `consistent`); both one-sided distances are returned too.

    Args:
      apply_fn: `apply_fn(params, x) -> [A]` outputs for ONE observation.
      params: network parameters.
      obs_a, obs_b: [B, *obs_shape] the pairs' endpoints (e.g. two independent draws from a buffer).
      num_points: P ≥ 1 interior points per pair.
      policy: as in `perturbation_robustness`.

    Returns:
      `InterpolationConsistency(consistency, policy_l1, alphas, consistent, l1, l1_to_a, l1_to_b)`.
    """
    fn_name = "interpolation_consistency"
    obs_a = _check_obs(obs_a, "obs_a", fn_name)
    obs_b = _check_obs(obs_b, "obs_b", fn_name)
    if obs_a.shape != obs_b.shape:
        raise ValueError(f"{fn_name}: `obs_a` {obs_a.shape} and `obs_b` {obs_b.shape} must have the same shape.")
    if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 1:
        raise ValueError(f"{fn_name}: `num_points` must be a positive int (interior points), got {num_points!r}.")
    pi = _policy_fn(policy, fn_name)
    dtype = jnp.result_type(obs_a.dtype, obs_b.dtype)
    alphas = jnp.arange(1, num_points + 1, dtype=dtype) / (num_points + 1)
    out_a = _outputs(apply_fn, params, obs_a, fn_name)
    out_b = _outputs(apply_fn, params, obs_b, fn_name)

    def at(alpha):
        return _outputs(apply_fn, params, (1 - alpha) * obs_a + alpha * obs_b, fn_name)

    mid = jnp.swapaxes(jax.vmap(at)(alphas), 0, 1)  # [B, P, A]
    act = jnp.argmax(mid, axis=-1)
    consistent = (act == jnp.argmax(out_a, axis=-1)[:, None]) | (act == jnp.argmax(out_b, axis=-1)[:, None])
    pm = pi(mid)
    l1_a = jnp.sum(jnp.abs(pm - pi(out_a)[:, None]), axis=-1)
    l1_b = jnp.sum(jnp.abs(pm - pi(out_b)[:, None]), axis=-1)
    l1 = jnp.minimum(l1_a, l1_b)
    return InterpolationConsistency(
        consistency=jnp.mean(consistent.astype(mid.dtype)), policy_l1=jnp.mean(l1), alphas=alphas,
        consistent=consistent, l1=l1, l1_to_a=l1_a, l1_to_b=l1_b,
    )
