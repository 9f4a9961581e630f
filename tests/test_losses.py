"""Per-example losses against hand-written NumPy maths, under jit and without, single and vmapped."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax

import tdjax
from tdjax._src import losses

VARIANTS = pytest.mark.parametrize("variant", [jax.jit, lambda f: f], ids=["jit", "nojit"])
TOL = {np.dtype(np.float32): dict(rtol=2e-5, atol=2e-5), np.dtype(np.float64): dict(rtol=1e-10, atol=1e-10)}
A, N_ATOMS, N_QUANT, T = 4, 11, 5, 6
ATOMS = np.linspace(-2.0, 2.0, N_ATOMS).astype(np.float32)
TAUS = ((np.arange(N_QUANT) + 0.5) / N_QUANT).astype(np.float32)


def close(actual, expected, dtype=np.float32):
    np.testing.assert_allclose(
        np.asarray(actual, np.float64), np.asarray(expected, np.float64), **TOL[np.dtype(dtype)]
    )


def f32(*shape, rng, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Independent NumPy references (float64).


def np_log_softmax(x):
    x = np.asarray(x, np.float64)
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


def np_entropy(logits):
    lp = np_log_softmax(logits)
    return -np.sum(np.exp(lp) * lp)


def ref_td(v_tm1, r_t, discount_t, v_t):
    return 0.5 * (r_t + discount_t * v_t - v_tm1) ** 2


def ref_q(q_tm1, a_tm1, r_t, discount_t, q_t):
    return 0.5 * (r_t + discount_t * np.max(q_t) - q_tm1[a_tm1]) ** 2


def ref_double_q(q_tm1, a_tm1, r_t, discount_t, q_t_value, q_t_selector):
    return 0.5 * (r_t + discount_t * q_t_value[np.argmax(q_t_selector)] - q_tm1[a_tm1]) ** 2


def lambda_returns_eq4(r_t, discount_t, v_t, lam):
    """Truncated λ-return as the weighted average of n-step returns (Bengio et al. 2020, eq. 4)."""
    n_steps = len(r_t)
    out = np.zeros(n_steps)
    for t in range(n_steps):
        horizon = n_steps - t
        g_n = []
        for n in range(1, horizon + 1):
            disc = np.cumprod(np.concatenate([[1.0], discount_t[t:t + n]]))
            g_n.append(np.sum(disc[:n] * r_t[t:t + n]) + disc[n] * v_t[t + n - 1])
        weights = [(1 - lam) * lam ** (n - 1) for n in range(1, horizon)] + [lam ** (horizon - 1)]
        out[t] = np.dot(weights, g_n)
    return out


def lambda_returns_loop(r_t, discount_t, v_t, lam):
    """Backward recursion Gₜ = rₜ + γₜ[(1 − λₜ) vₜ + λₜ Gₜ₊₁] with per-step λ."""
    lam = np.broadcast_to(lam, np.shape(r_t))
    out = np.zeros(len(r_t))
    g = v_t[-1]
    for t in reversed(range(len(r_t))):
        g = r_t[t] + discount_t[t] * ((1 - lam[t]) * v_t[t] + lam[t] * g)
        out[t] = g
    return out


def ref_td_lambda(v_tm1, r_t, discount_t, v_t, lam):
    return np.mean(0.5 * (lambda_returns_eq4(r_t, discount_t, v_t, lam) - v_tm1) ** 2)


def ref_mc(v_tm1, return_t):
    return 0.5 * (return_t - v_tm1) ** 2


def c51_target(atoms, r_t, discount_t, q_logits_t):
    """C51 projection (Bellemare et al. 2017, Alg. 1) onto an evenly spaced support."""
    probs = np.exp(np.apply_along_axis(np_log_softmax, 1, q_logits_t))
    a_star = np.argmax(probs @ atoms)
    vmin, vmax, dz = atoms[0], atoms[-1], atoms[1] - atoms[0]
    m = np.zeros(len(atoms))
    for z, p in zip(atoms, probs[a_star]):
        b = np.clip((np.clip(r_t + discount_t * z, vmin, vmax) - vmin) / dz, 0, len(atoms) - 1)
        lo, hi = int(np.floor(b)), int(np.ceil(b))
        if lo == hi:
            m[lo] += p
        else:
            m[lo] += p * (hi - b)
            m[hi] += p * (b - lo)
    return m


def ref_c51(atoms_tm1, logits_tm1, a_tm1, r_t, discount_t, atoms_t, logits_t):
    m = c51_target(np.asarray(atoms_t, np.float64), r_t, discount_t, logits_t)
    return -np.sum(m * np_log_softmax(logits_tm1[a_tm1]))


def huber(u, kappa):
    if kappa == 0:
        return np.abs(u)
    return np.where(np.abs(u) <= kappa, 0.5 * u ** 2, kappa * (np.abs(u) - 0.5 * kappa))


def qr_pieces(dist_q_tm1, tau, a_tm1, r_t, discount_t, sel, dist_q_t):
    a_star = np.argmax(np.mean(sel, axis=1))
    target = r_t + discount_t * np.asarray(dist_q_t[a_star], np.float64)
    u = target[None, :] - np.asarray(dist_q_tm1[a_tm1], np.float64)[:, None]  # [N, N']
    weight = np.abs(tau[:, None] - (u < 0))
    return u, weight


def ref_qr(dist_q_tm1, tau, a_tm1, r_t, discount_t, sel, dist_q_t, kappa=1.0):
    u, weight = qr_pieces(dist_q_tm1, tau, a_tm1, r_t, discount_t, sel, dist_q_t)
    loss = 0.0
    for i in range(u.shape[0]):
        loss += np.mean([weight[i, j] * huber(u[i, j], kappa) for j in range(u.shape[1])])
    return loss


def ref_reinforce(logits_t, a_t, advantage_t):
    return -np_log_softmax(logits_t)[a_t] * advantage_t


def ref_ppo(logits_t, a_t, mu_logprob_t, advantage_t, epsilon=0.2):
    ratio = np.exp(np_log_softmax(logits_t)[a_t] - mu_logprob_t)
    return -min(ratio * advantage_t, np.clip(ratio, 1 - epsilon, 1 + epsilon) * advantage_t)


def ref_vd(q_s, q_t):
    return np.sum((np.float64(q_s) - q_t) ** 2)


def ref_qa(q_s, q_t, a):
    return (np.float64(q_s[a]) - q_t[a]) ** 2


def ref_adv(q_s, q_t):
    q_s, q_t = np.float64(q_s), np.float64(q_t)
    return np.sum(((q_s - q_s.mean()) - (q_t - q_t.mean())) ** 2)


def ref_bc(logits, a, entropy_coef=1e-2):
    return -np_log_softmax(logits)[a] - entropy_coef * np_entropy(logits)


def ref_pd(s_logits, t_logits, entropy_coef=0.0):
    ls, lt = np_log_softmax(s_logits), np_log_softmax(t_logits)
    return np.sum(np.exp(ls) * (ls - lt)) + entropy_coef * np_entropy(s_logits)


# ------------------------------------------------------------------------------------------------
# Random single examples: name -> (loss for jit, reference, example(rng) -> tuple of positional args).


def ex_td(rng):
    return f32(rng=rng), f32(rng=rng), np.float32(rng.uniform(0, 1)), f32(rng=rng)


def ex_q(rng):
    q_tm1, a_tm1, r_t = f32(A, rng=rng), np.int32(rng.integers(A)), f32(rng=rng)
    return q_tm1, a_tm1, r_t, np.float32(rng.uniform(0, 1)), f32(A, rng=rng)


def ex_double_q(rng):
    return ex_q(rng) + (f32(A, rng=rng),)


def ex_td_lambda(rng):
    return f32(T, rng=rng), f32(T, rng=rng), rng.uniform(0, 1, T).astype(np.float32), f32(T, rng=rng)


def ex_c51(rng):
    return (ATOMS, f32(A, N_ATOMS, rng=rng), np.int32(rng.integers(A)), f32(rng=rng),
            np.float32(rng.uniform(0, 1)), ATOMS, f32(A, N_ATOMS, rng=rng))


def ex_qr(rng):
    return (f32(A, N_QUANT, rng=rng), TAUS, np.int32(rng.integers(A)), f32(rng=rng),
            np.float32(rng.uniform(0, 1)), f32(A, N_QUANT + 2, rng=rng),
            f32(A, N_QUANT + 2, rng=rng, scale=2.0))


def ex_pg(rng):
    return f32(A, rng=rng), np.int32(rng.integers(A)), f32(rng=rng)


def ex_ppo(rng):
    logits, a = f32(A, rng=rng), np.int32(rng.integers(A))
    # Behaviour log-probs near π's so that both the clipped and the unclipped branch occur.
    mu_logprob = np.float32(np_log_softmax(logits)[a] + 0.4 * rng.standard_normal())
    return logits, a, mu_logprob, f32(rng=rng)


def ex_pair(rng):
    return f32(A, rng=rng), f32(A, rng=rng, scale=2.0)


def ex_qa(rng):
    return ex_pair(rng) + (np.int32(rng.integers(A)),)


def ex_bc(rng):
    return f32(A, rng=rng), np.int32(rng.integers(A))


CASES = {
    "td": (losses.td_loss, ref_td, ex_td),
    "q_learning": (losses.q_learning_loss, ref_q, ex_q),
    "double_q": (losses.double_q_learning_loss, ref_double_q, ex_double_q),
    **{
        f"td_lambda_{lam}": (
            functools.partial(losses.td_lambda_loss, lambda_=lam),
            functools.partial(ref_td_lambda, lam=lam),
            ex_td_lambda,
        )
        for lam in (0.0, 0.7, 1.0)
    },
    "monte_carlo": (losses.monte_carlo_loss, ref_mc, lambda rng: (f32(rng=rng), f32(rng=rng))),
    "c51": (losses.categorical_q_learning_loss, ref_c51, ex_c51),
    **{
        f"qr_kappa{k}": (
            functools.partial(losses.quantile_q_learning_loss, kappa=k),
            functools.partial(ref_qr, kappa=k),
            ex_qr,
        )
        for k in (0.0, 1.0, 0.3)
    },
    "reinforce": (losses.reinforce_loss, ref_reinforce, ex_pg),
    "ppo": (functools.partial(losses.ppo_clip_loss, epsilon=0.1),
            functools.partial(ref_ppo, epsilon=0.1), ex_ppo),
    "value_distillation": (losses.value_distillation_loss, ref_vd, ex_pair),
    "qa_regression": (losses.qa_regression_loss, ref_qa, ex_qa),
    "advantage_regression": (losses.advantage_regression_loss, ref_adv, ex_pair),
    "behaviour_cloning": (losses.behaviour_cloning_loss, ref_bc, ex_bc),
    "behaviour_cloning_coef0.3": (functools.partial(losses.behaviour_cloning_loss, entropy_coef=0.3),
                                  functools.partial(ref_bc, entropy_coef=0.3), ex_bc),
    "policy_distillation": (losses.policy_distillation_loss, ref_pd, ex_pair),
    "policy_distillation_coef-0.2": (functools.partial(losses.policy_distillation_loss, entropy_coef=-0.2),
                                     functools.partial(ref_pd, entropy_coef=-0.2), ex_pair),
}


def test_public_names():
    expected = {
        "td_loss", "q_learning_loss", "double_q_learning_loss", "td_lambda_loss", "monte_carlo_loss",
        "categorical_q_learning_loss", "quantile_q_learning_loss", "reinforce_loss", "ppo_clip_loss",
        "value_distillation_loss", "qa_regression_loss", "advantage_regression_loss",
        "behaviour_cloning_loss", "policy_distillation_loss",
    }
    assert set(losses.__all__) == expected
    for name in expected:
        assert getattr(tdjax, name) is getattr(losses, name)


@VARIANTS
@pytest.mark.parametrize("name", list(CASES))
def test_matches_numpy_reference(name, variant):
    loss_fn, ref, example = CASES[name]
    fn = variant(loss_fn)
    rng = np.random.default_rng(sum(map(ord, name)))
    for _ in range(2):
        args = example(rng)
        out = fn(*args)
        assert jnp.shape(out) == ()
        close(out, ref(*args))


@pytest.mark.parametrize("name", list(CASES))
def test_vmap_matches_numpy_loop(name):
    loss_fn, ref, example = CASES[name]
    rng = np.random.default_rng(1 + sum(map(ord, name)))
    examples = [example(rng) for _ in range(8)]
    batch = tuple(np.stack(column) for column in zip(*examples))
    out = jax.jit(jax.vmap(loss_fn))(*batch)
    assert out.shape == (8,)
    close(out, [ref(*ex) for ex in examples])


def test_ppo_reference_cases_exercise_both_branches():
    rng = np.random.default_rng(0)
    ratios = []
    for _ in range(20):
        logits, a, mu, _ = ex_ppo(rng)
        ratios.append(np.exp(np_log_softmax(logits)[a] - mu))
    ratios = np.array(ratios)
    assert np.any(np.abs(ratios - 1) > 0.1) and np.any(np.abs(ratios - 1) < 0.1)


def test_td_lambda_vector_lambda_matches_recursion():
    rng = np.random.default_rng(3)
    v_tm1, r_t, discount_t, v_t = ex_td_lambda(rng)
    lam = rng.uniform(0, 1, T).astype(np.float32)
    target = lambda_returns_loop(r_t, discount_t, v_t, lam)
    out = jax.jit(losses.td_lambda_loss)(v_tm1, r_t, discount_t, v_t, lam)
    close(out, np.mean(0.5 * (target - v_tm1) ** 2))


def test_td_lambda_zero_is_mean_of_td_losses():
    rng = np.random.default_rng(4)
    v_tm1, r_t, discount_t, v_t = ex_td_lambda(rng)
    per_step = jax.vmap(losses.td_loss)(v_tm1, r_t, discount_t, v_t)
    close(losses.td_lambda_loss(v_tm1, r_t, discount_t, v_t, 0.0), jnp.mean(per_step))


def test_quantile_layout_is_rlax_transposed():
    args = ex_qr(np.random.default_rng(5))
    d_tm1, tau, a, r, g, sel, d_t = args
    expected = rlax.quantile_q_learning(d_tm1.T, tau, a, r, g, sel.T, d_t.T, huber_param=1.0)
    close(losses.quantile_q_learning_loss(*args), expected)


def test_qa_regression_defaults_to_teacher_greedy_action():
    q_s, q_t = ex_pair(np.random.default_rng(6))
    close(losses.qa_regression_loss(q_s, q_t), ref_qa(q_s, q_t, np.argmax(q_t)))
    close(jax.jit(losses.qa_regression_loss)(q_s, q_t), ref_qa(q_s, q_t, np.argmax(q_t)))


def test_python_scalars_and_integer_rewards_are_accepted():
    close(losses.td_loss(1.0, 1, 0.5, 2.0), 0.5 * (1 + 0.5 * 2 - 1) ** 2)
    close(losses.monte_carlo_loss(0, 3), 4.5)


# ------------------------------------------------------------------------------------------------
# Gradients: where targets are stop-gradiented, and the analytic gradient.


@VARIANTS
def test_td_gradients(variant):
    v_tm1, r_t, discount_t, v_t = ex_td(np.random.default_rng(10))
    delta = r_t + discount_t * v_t - v_tm1
    g_tm1, g_t = variant(jax.grad(losses.td_loss, argnums=(0, 3)))(v_tm1, r_t, discount_t, v_t)
    close(g_tm1, -delta)
    assert g_t == 0.0
    residual = functools.partial(losses.td_loss, stop_target_gradients=False)
    _, g_t = variant(jax.grad(residual, argnums=(0, 3)))(v_tm1, r_t, discount_t, v_t)
    close(g_t, discount_t * delta)


def test_q_learning_gradients():
    q_tm1, a, r, g, q_t = ex_q(np.random.default_rng(11))
    delta = r + g * q_t.max() - q_tm1[a]
    g_tm1, g_t = jax.jit(jax.grad(losses.q_learning_loss, argnums=(0, 4)))(q_tm1, a, r, g, q_t)
    close(g_tm1, -delta * np.eye(A)[a])
    np.testing.assert_array_equal(g_t, 0.0)


def test_double_q_gradients_skip_selector_and_target():
    q_tm1, a, r, g, q_val, q_sel = ex_double_q(np.random.default_rng(12))
    delta = r + g * q_val[np.argmax(q_sel)] - q_tm1[a]
    grads = jax.jit(jax.grad(losses.double_q_learning_loss, argnums=(0, 4, 5)))(q_tm1, a, r, g, q_val, q_sel)
    close(grads[0], -delta * np.eye(A)[a])
    np.testing.assert_array_equal(grads[1], 0.0)
    np.testing.assert_array_equal(grads[2], 0.0)
    # Without the stop-gradient the value net gets γδ at a*, but the selector still gets nothing.
    residual = functools.partial(losses.double_q_learning_loss, stop_target_gradients=False)
    grads = jax.jit(jax.grad(residual, argnums=(4, 5)))(q_tm1, a, r, g, q_val, q_sel)
    close(grads[0], g * delta * np.eye(A)[np.argmax(q_sel)])
    np.testing.assert_array_equal(grads[1], 0.0)


def test_td_lambda_gradients():
    v_tm1, r_t, discount_t, v_t = ex_td_lambda(np.random.default_rng(13))
    lam = 0.6
    target = lambda_returns_eq4(r_t, discount_t, v_t, lam)
    g_tm1, g_t = jax.jit(jax.grad(losses.td_lambda_loss, argnums=(0, 3)))(v_tm1, r_t, discount_t, v_t, lam)
    close(g_tm1, -(target - v_tm1) / T)
    np.testing.assert_array_equal(g_t, 0.0)


def test_monte_carlo_gradients():
    g_v, g_ret = jax.jit(jax.grad(losses.monte_carlo_loss, argnums=(0, 1)))(1.5, 4.0)
    close(g_v, -2.5)
    assert g_ret == 0.0


def test_c51_gradients():
    args = ex_c51(np.random.default_rng(14))
    atoms, logits_tm1, a, r, g, _, logits_t = args
    g_tm1, g_t = jax.jit(jax.grad(losses.categorical_q_learning_loss, argnums=(1, 6)))(*args)
    expected = np.zeros((A, N_ATOMS))
    expected[a] = np.exp(np_log_softmax(logits_tm1[a])) - c51_target(np.float64(atoms), r, g, logits_t)
    close(g_tm1, expected)
    np.testing.assert_array_equal(g_t, 0.0)


@pytest.mark.parametrize("kappa", [0.0, 0.3])
def test_qr_gradients(kappa):
    args = ex_qr(np.random.default_rng(15))
    loss = functools.partial(losses.quantile_q_learning_loss, kappa=kappa)
    g_tm1, g_sel, g_t = jax.jit(jax.grad(loss, argnums=(0, 5, 6)))(*args)
    u, weight = qr_pieces(*args)
    dhuber = np.clip(u, -kappa, kappa) if kappa > 0 else np.sign(u)
    expected = np.zeros((A, N_QUANT))
    expected[args[2]] = -np.mean(weight * dhuber, axis=1)
    close(g_tm1, expected)
    np.testing.assert_array_equal(g_sel, 0.0)
    np.testing.assert_array_equal(g_t, 0.0)


def test_reinforce_gradients():
    logits, a, adv = ex_pg(np.random.default_rng(16))
    g_logits, g_adv = jax.jit(jax.grad(losses.reinforce_loss, argnums=(0, 2)))(logits, a, adv)
    close(g_logits, -adv * (np.eye(A)[a] - np.exp(np_log_softmax(logits))))
    assert g_adv == 0.0


def test_ppo_gradients():
    rng = np.random.default_rng(17)
    examples = [ex_ppo(rng) for _ in range(12)]
    grad_fn = jax.grad(functools.partial(losses.ppo_clip_loss, epsilon=0.1), argnums=(0, 2, 3))
    g_logits, g_mu, g_adv = jax.jit(jax.vmap(grad_fn))(*(np.stack(c) for c in zip(*examples)))
    branches = set()
    for i, (logits, a, mu, adv) in enumerate(examples):
        ratio = np.exp(np_log_softmax(logits)[a] - mu)
        unclipped_active = ratio * adv <= np.clip(ratio, 0.9, 1.1) * adv
        branches.add(bool(unclipped_active))
        expected = -adv * ratio * (np.eye(A)[a] - np.exp(np_log_softmax(logits))) if unclipped_active else 0.0
        close(g_logits[i], np.broadcast_to(expected, (A,)))
    np.testing.assert_array_equal(g_mu, 0.0)
    np.testing.assert_array_equal(g_adv, 0.0)
    assert branches == {True, False}


def test_regression_distillation_gradients():
    q_s, q_t, a = ex_qa(np.random.default_rng(18))
    d = np.float64(q_s) - q_t
    g_s, g_t = jax.jit(jax.grad(losses.value_distillation_loss, argnums=(0, 1)))(q_s, q_t)
    close(g_s, 2 * d)
    np.testing.assert_array_equal(g_t, 0.0)
    g_s, g_t = jax.jit(jax.grad(losses.qa_regression_loss, argnums=(0, 1)))(q_s, q_t, a)
    close(g_s, 2 * d[a] * np.eye(A)[a])
    np.testing.assert_array_equal(g_t, 0.0)
    g_s, g_t = jax.jit(jax.grad(losses.advantage_regression_loss, argnums=(0, 1)))(q_s, q_t)
    close(g_s, 2 * (d - d.mean()))
    np.testing.assert_array_equal(g_t, 0.0)


@pytest.mark.parametrize("coef", [1e-2, 0.5])
def test_behaviour_cloning_gradients(coef):
    logits, a = ex_bc(np.random.default_rng(19))
    g = jax.jit(jax.grad(functools.partial(losses.behaviour_cloning_loss, entropy_coef=coef)))(logits, a)
    lp = np_log_softmax(logits)
    p, h = np.exp(lp), np_entropy(logits)
    # ∇H = −π ⊙ (log π + H), so the entropy term of −λH contributes +λ π ⊙ (log π + H).
    close(g, -(np.eye(A)[a] - p) + coef * p * (lp + h))


@pytest.mark.parametrize("coef", [0.0, -0.2, 0.3])
def test_policy_distillation_gradients(coef):
    s, t = ex_pair(np.random.default_rng(20))
    loss = functools.partial(losses.policy_distillation_loss, entropy_coef=coef)
    g_s, g_t = jax.jit(jax.grad(loss, argnums=(0, 1)))(s, t)
    ls, lt = np_log_softmax(s), np_log_softmax(t)
    p, h = np.exp(ls), np_entropy(s)
    kl = np.sum(p * (ls - lt))
    close(g_s, p * (ls - lt - kl) - coef * p * (ls + h))
    np.testing.assert_array_equal(g_t, 0.0)


def test_masked_logits_give_finite_losses_and_gradients():
    logits = jnp.array([0.3, -jnp.inf, 1.0, -0.5])
    teacher = jnp.array([1.0, -jnp.inf, 0.0, 0.2])
    for fn in (functools.partial(losses.behaviour_cloning_loss, a=2),
               functools.partial(losses.policy_distillation_loss, teacher_logits=teacher, entropy_coef=0.1)):
        value, grad = jax.jit(jax.value_and_grad(fn))(logits)
        assert np.isfinite(value) and np.all(np.isfinite(grad))
    close(losses.policy_distillation_loss(logits, teacher),
          ref_pd(np.array([0.3, -1e9, 1.0, -0.5]), np.array([1.0, -1e9, 0.0, 0.2])))


# ------------------------------------------------------------------------------------------------
# Bad arguments.


@pytest.mark.parametrize("epsilon", [0.0, -0.1])
def test_ppo_rejects_non_positive_epsilon(epsilon):
    logits, a, mu, adv = ex_ppo(np.random.default_rng(0))
    with pytest.raises(ValueError, match="`epsilon` must be > 0"):
        losses.ppo_clip_loss(logits, a, mu, adv, epsilon)
    with pytest.raises(ValueError, match="`epsilon`"):
        jax.jit(functools.partial(losses.ppo_clip_loss, epsilon=epsilon))(logits, a, mu, adv)


@pytest.mark.parametrize("lam", [1.5, -0.1, np.array([0.5, 0.5, 0.5, 0.5, 0.5, 1.2], np.float32)])
def test_td_lambda_rejects_lambda_outside_unit_interval(lam):
    with pytest.raises(ValueError, match="`lambda_` must lie in"):
        losses.td_lambda_loss(*ex_td_lambda(np.random.default_rng(0)), lam)


def test_td_lambda_rejects_mismatched_lengths():
    v_tm1, r_t, discount_t, v_t = ex_td_lambda(np.random.default_rng(0))
    with pytest.raises(ValueError, match="`lambda_`"):
        losses.td_lambda_loss(v_tm1, r_t, discount_t, v_t, np.full(T - 1, 0.5, np.float32))
    with pytest.raises(AssertionError, match="`v_tm1`, `r_t`, `discount_t`, `v_t` must have the same shape"):
        losses.td_lambda_loss(v_tm1, r_t[:-1], discount_t, v_t, 0.5)


def test_quantile_rejects_bad_kappa_and_tau():
    args = ex_qr(np.random.default_rng(0))
    with pytest.raises(ValueError, match="`kappa` must be >= 0"):
        losses.quantile_q_learning_loss(*args, kappa=-1.0)
    with pytest.raises(ValueError, match="`kappa` must be a Python number"):
        jax.jit(losses.quantile_q_learning_loss)(*args, 1.0)
    bad_tau = args[:1] + (TAUS[:-1],) + args[2:]
    with pytest.raises(ValueError, match="`dist_q_tm1`.*`tau_q_tm1`"):
        losses.quantile_q_learning_loss(*bad_tau)


def test_categorical_rejects_atom_mismatch():
    atoms, logits_tm1, a, r, g, atoms_t, logits_t = ex_c51(np.random.default_rng(0))
    with pytest.raises(ValueError, match="`q_logits_tm1` has 11 atoms"):
        losses.categorical_q_learning_loss(atoms[:-1], logits_tm1, a, r, g, atoms_t, logits_t)


@pytest.mark.parametrize(
    "call, arg",
    [
        (lambda: losses.td_loss(np.ones(3, np.float32), 0.0, 0.9, 1.0), "`v_tm1`"),
        (lambda: losses.q_learning_loss(np.ones((2, A), np.float32), 0, 0.0, 0.9, np.ones(A, np.float32)),
         "`q_tm1`"),
        (lambda: losses.reinforce_loss(np.ones(A, np.float32), np.array([1]), 1.0), "`a_t`"),
        (lambda: losses.monte_carlo_loss(1.0, np.ones(2, np.float32)), "`return_t`"),
        (lambda: losses.value_distillation_loss(np.ones(A), np.ones(A + 1)), "`q_student`, `q_teacher`"),
        (lambda: losses.policy_distillation_loss(np.ones((1, A)), np.ones(A)), "`student_logits`"),
    ],
)
def test_rank_and_shape_errors_name_the_argument(call, arg):
    with pytest.raises(AssertionError, match=arg):
        call()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: losses.q_learning_loss(np.ones(A, np.float32), 1.0, 0.0, 0.9, np.ones(A, np.float32)),
         "`a_tm1` must be an integer"),
        (lambda: losses.q_learning_loss(np.ones(A, np.float32), A, 0.0, 0.9, np.ones(A, np.float32)),
         "`a_tm1`=4 is out of range"),
        (lambda: losses.behaviour_cloning_loss(np.ones(A, np.float32), -1), "`a`=-1 is out of range"),
        (lambda: losses.qa_regression_loss(np.ones(A), np.ones(A), 0.5), "`a` must be an integer"),
    ],
)
def test_bad_actions_raise_value_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
