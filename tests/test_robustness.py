"""Perturbation robustness and interpolation consistency (Lyle et al. 2022, Fig. 5) against explicit loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tdjax

B, D, A = 6, 3, 4


def _apply(p, x):  # ONE observation -> [A]
    return p["W"] @ jnp.tanh(x) + p["c"]


@pytest.fixture(scope="module")
def net():
    k = jax.random.split(jax.random.PRNGKey(1), 4)
    params = {"W": jax.random.normal(k[0], (A, D)), "c": jnp.zeros(A)}
    return params, jax.random.normal(k[1], (B, D)), jax.random.normal(k[2], (B, D))


def _pi(out, policy):
    out = np.asarray(out, np.float64)
    if policy == "greedy":
        return np.eye(len(out))[np.argmax(out)]
    e = np.exp(out - out.max())
    return e / e.sum()


@pytest.mark.parametrize("policy", ["greedy", "softmax"])
def test_perturbation_matches_noise_loop(net, policy):
    params, obs, _ = net
    key, sigma, s = jax.random.PRNGKey(7), 0.5, 3
    out = jax.jit(lambda p, o: tdjax.perturbation_robustness(_apply, p, o, key, noise_scale=sigma, num_samples=s,
                                                             policy=policy))(params, obs)
    noise = np.asarray(jax.random.normal(key, (s, B, D)))
    same, l1 = np.zeros((s, B), bool), np.zeros((s, B))
    for j in range(s):
        for i in range(B):
            clean = np.asarray(_apply(params, obs[i]))
            noisy = np.asarray(_apply(params, obs[i] + sigma * noise[j, i]))
            same[j, i] = np.argmax(clean) == np.argmax(noisy)
            l1[j, i] = np.abs(_pi(clean, policy) - _pi(noisy, policy)).sum()
    assert 0 < same.sum() < same.size  # the test sees both outcomes
    np.testing.assert_array_equal(out.same_action, same)
    np.testing.assert_allclose(out.l1, l1, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.agreement, same.mean(), rtol=1e-6)
    np.testing.assert_allclose(out.policy_l1, l1.mean(), rtol=1e-4)
    if policy == "greedy":
        np.testing.assert_allclose(out.policy_l1, 2 * (1 - same.mean()), rtol=1e-5)


def test_zero_noise_is_fully_robust(net):
    params, obs, _ = net
    out = tdjax.perturbation_robustness(_apply, params, obs, jax.random.PRNGKey(0), noise_scale=0.0)
    assert float(out.agreement) == 1.0 and float(out.policy_l1) == 0.0


@pytest.mark.parametrize("policy", ["greedy", "softmax"])
def test_interpolation_matches_loop(net, policy):
    params, a, b = net
    p = 5
    out = jax.jit(lambda pr: tdjax.interpolation_consistency(_apply, pr, a, b, num_points=p, policy=policy))(params)
    cons, l1 = np.zeros((B, p), bool), np.zeros((B, p))
    for i in range(B):
        fa, fb = np.asarray(_apply(params, a[i])), np.asarray(_apply(params, b[i]))
        for j in range(p):
            alpha = (j + 1) / (p + 1)
            fm = np.asarray(_apply(params, (1 - alpha) * a[i] + alpha * b[i]))
            cons[i, j] = np.argmax(fm) in (np.argmax(fa), np.argmax(fb))
            pm = _pi(fm, policy)
            l1[i, j] = min(np.abs(pm - _pi(fa, policy)).sum(), np.abs(pm - _pi(fb, policy)).sum())
    np.testing.assert_allclose(out.alphas, np.arange(1, p + 1) / (p + 1), rtol=1e-6)
    np.testing.assert_array_equal(out.consistent, cons)
    np.testing.assert_allclose(out.l1, l1, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.consistency, cons.mean(), rtol=1e-6)


def test_inconsistent_path_is_detected():
    # Three actions; the midpoint of e0 and e2 prefers action 1, the endpoints actions 0 and 2.
    params = {"W": jnp.array([[4.0, 0.0], [2.9, 2.9], [0.0, 4.0]]), "c": jnp.zeros(3)}
    apply = lambda p, x: p["W"] @ x + p["c"]  # noqa: E731
    out = tdjax.interpolation_consistency(apply, params, jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 1.0]]),
                                          num_points=1)
    assert not bool(out.consistent[0, 0]) and float(out.policy_l1) == 2.0


def test_bad_input(net):
    params, obs, b = net
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="noise_scale"):
        tdjax.perturbation_robustness(_apply, params, obs, key, noise_scale=-1.0)
    with pytest.raises(ValueError, match="policy"):
        tdjax.perturbation_robustness(_apply, params, obs, key, noise_scale=0.1, policy="boltzmann")
    with pytest.raises(ValueError, match="apply_fn"):
        tdjax.perturbation_robustness(lambda p, x: jnp.sum(x), params, obs, key, noise_scale=0.1)
    with pytest.raises(ValueError, match="num_points"):
        tdjax.interpolation_consistency(_apply, params, obs, b, num_points=0)
    with pytest.raises(ValueError, match="obs_b"):
        tdjax.interpolation_consistency(_apply, params, obs, b[:2])
