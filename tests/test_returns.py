"""GAE and λ-returns against a NumPy loop and against rlax, under jit and without, single and vmapped."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax

import tdjax
from tdjax._src.returns import generalized_advantage_estimation, lambda_returns

VARIANTS = pytest.mark.parametrize("variant", [jax.jit, lambda f: f], ids=["jit", "nojit"])
T = 9


def np_gae(r, d, v, v_boot, lam):
    """The textbook double sum Âₜ = Σₖ (Πᵢ<ₖ γₜ₊ᵢ λₜ₊ᵢ) δₜ₊ₖ, in float64, no recursion."""
    r, d, v = (np.asarray(x, np.float64) for x in (r, d, v))
    lam = np.broadcast_to(np.asarray(lam, np.float64), r.shape)
    v_next = np.append(v[1:], v_boot)
    delta = r + d * v_next - v
    out = np.zeros_like(r)
    for t in range(len(r)):
        weight = 1.0
        for k in range(t, len(r)):
            out[t] += weight * delta[k]
            weight *= d[k] * lam[k]
    return out


def episode(seed, t=T):
    rng = np.random.default_rng(seed)
    r = rng.standard_normal(t).astype(np.float32)
    done = rng.uniform(size=t) < 0.25
    d = (0.97 * (1.0 - done)).astype(np.float32)
    v = rng.standard_normal(t).astype(np.float32)
    return r, d, v, np.float32(rng.standard_normal())


@VARIANTS
@pytest.mark.parametrize("lam", [0.0, 0.5, 0.95, 1.0])
def test_gae_against_numpy_loop_and_rlax(variant, lam):
    r, d, v, vb = episode(int(lam * 100))
    got = variant(generalized_advantage_estimation)(r, d, v, vb, lam)
    np.testing.assert_allclose(got, np_gae(r, d, v, vb, lam), rtol=1e-5, atol=1e-5)
    ref = rlax.truncated_generalized_advantage_estimation(r, d, lam, np.append(v, vb))
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


@VARIANTS
def test_gae_per_step_lambda_and_special_cases(variant):
    r, d, v, vb = episode(3)
    lam = np.linspace(0.0, 1.0, T).astype(np.float32)
    got = variant(generalized_advantage_estimation)(r, d, v, vb, lam)
    np.testing.assert_allclose(got, np_gae(r, d, v, vb, lam), rtol=1e-5, atol=1e-5)
    # λ = 0 is the one-step TD error; λ = 1 with no episode end is the discounted return − v
    td = r + d * np.append(v[1:], vb) - v
    np.testing.assert_allclose(variant(generalized_advantage_estimation)(r, d, v, vb, 0.0), td, rtol=1e-6, atol=1e-6)
    g = np.full(T, 0.9, np.float32)
    ret = np.array([sum(0.9 ** (k - t) * r[k] for k in range(t, T)) + 0.9 ** (T - t) * vb for t in range(T)])
    np.testing.assert_allclose(variant(generalized_advantage_estimation)(r, g, v, vb, 1.0), ret - v,
                               rtol=1e-5, atol=1e-5)


@VARIANTS
def test_lambda_returns_against_rlax(variant):
    r, d, v, vb = episode(5)
    got = variant(lambda_returns)(r, d, v, vb, 0.8)
    ref = rlax.lambda_returns(r, d, np.append(v[1:], vb), 0.8)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, np_gae(r, d, v, vb, 0.8) + v, rtol=1e-5, atol=1e-5)


def test_vmapped_over_environments_of_a_rollout():
    eps = [episode(s) for s in range(4)]
    r, d, v = (np.stack([e[i] for e in eps], axis=1) for i in range(3))  # [T, E]
    vb = np.array([e[3] for e in eps])
    got = jax.jit(jax.vmap(generalized_advantage_estimation, in_axes=(1, 1, 1, 0, None), out_axes=1))(r, d, v, vb, 0.9)
    for e in range(4):
        np.testing.assert_allclose(got[:, e], np_gae(r[:, e], d[:, e], v[:, e], vb[e], 0.9), rtol=1e-5, atol=1e-5)


def test_gradients_flow_into_the_values():
    r, d, v, vb = episode(7)
    g = jax.grad(lambda v: jnp.sum(generalized_advantage_estimation(r, d, v, vb, 1.0)))(jnp.asarray(v))
    assert np.all(np.isfinite(g)) and np.any(g != 0)


def test_public_names():
    assert tdjax.generalized_advantage_estimation is generalized_advantage_estimation
    assert tdjax.lambda_returns is lambda_returns


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(rewards=np.zeros((T, 2))), "rewards"),
        (dict(discounts=np.zeros(T + 1)), "discounts"),
        (dict(values=np.zeros(T - 1)), "values"),
        (dict(bootstrap_value=np.zeros(2)), "bootstrap_value"),
        (dict(lambda_=1.5), "lambda_"),
        (dict(lambda_=-0.1), "lambda_"),
        (dict(lambda_=np.zeros(T + 2)), "lambda_"),
        (dict(rewards=np.array(["a"] * T)), "rewards"),
    ],
)
def test_bad_input_names_the_argument(kwargs, name):
    args = dict(rewards=np.zeros(T), discounts=np.ones(T), values=np.zeros(T), bootstrap_value=0.0, lambda_=0.9)
    args.update(kwargs)
    for fn in (generalized_advantage_estimation, lambda_returns):
        with pytest.raises(ValueError, match=f"`{name}`"):
            fn(**args)
