"""Tests for tdjax._src.outputs (output reductions) against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tdjax

JIT = pytest.mark.parametrize("jit", [False, True], ids=["nojit", "jit"])


def _maybe_jit(fn, jit):
    return jax.jit(fn) if jit else fn


_Q = np.array([0.5, -1.0, 2.0, 0.25], dtype=np.float32)


@JIT
@pytest.mark.parametrize(
    "reduction, expected",
    [("max", 2.0), ("mean", np.mean(_Q)), (0, 0.5), (3, 0.25), (-1, 0.25), (-4, 0.5)],
)
def test_reduce_output_q_values(jit, reduction, expected):
    out = _maybe_jit(lambda q: tdjax.reduce_output(q, reduction), jit)(_Q)
    assert out.shape == ()
    np.testing.assert_allclose(out, expected, rtol=1e-6)


@JIT
def test_reduce_output_taken_action(jit):
    out = _maybe_jit(lambda q, a: tdjax.reduce_output(q, "action", a), jit)(_Q, jnp.int32(2))
    np.testing.assert_allclose(out, _Q[2])
    batched = jax.vmap(lambda q, a: tdjax.reduce_output(q, "action", a))(np.stack([_Q, -_Q]), np.array([1, 2]))
    np.testing.assert_allclose(batched, [_Q[1], -_Q[2]])


@pytest.mark.parametrize("out", [np.float32(1.5), np.array([1.5], np.float32)])
def test_reduce_output_none_keeps_a_scalar(out):
    assert float(tdjax.reduce_output(out, "none")) == 1.5


@JIT
def test_expected_q_categorical_and_quantile(jit):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 7)).astype(np.float32)
    atoms = np.linspace(-2.0, 3.0, 7).astype(np.float32)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    expected = probs @ atoms
    got = _maybe_jit(lambda x, z: tdjax.expected_q(x, "categorical", z), jit)(logits, atoms)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    got_max = _maybe_jit(lambda x, z: tdjax.reduce_output(x, "max", distribution="categorical", atoms=z), jit)(
        logits, atoms
    )
    np.testing.assert_allclose(got_max, expected.max(), rtol=1e-5)

    quantiles = rng.standard_normal((4, 5)).astype(np.float32)
    got_q = _maybe_jit(lambda x: tdjax.reduce_output(x, "mean", distribution="quantile"), jit)(quantiles)
    np.testing.assert_allclose(got_q, quantiles.mean(-1).mean(), rtol=1e-5)
    np.testing.assert_array_equal(tdjax.expected_q(_Q), _Q)


def test_scalar_output_fn_wraps_apply_fn():
    apply_fn = lambda params, x: params["w"] @ x  # noqa: E731  # [3] outputs
    params = {"w": np.arange(6.0, dtype=np.float32).reshape(3, 2)}
    x = np.array([1.0, 0.5], np.float32)  # q = [0.5, 3.5, 6.5]: no ties
    q = params["w"] @ x
    assert float(tdjax.scalar_output_fn(apply_fn, "max")(params, x)) == q.max()
    assert float(tdjax.scalar_output_fn(apply_fn, "mean")(params, x)) == pytest.approx(q.mean())
    assert float(tdjax.scalar_output_fn(apply_fn, 1)(params, x)) == q[1]
    assert float(jax.jit(tdjax.scalar_output_fn(apply_fn, "action"))(params, (x, 2))) == q[2]
    # Its gradient is the gradient of the selected output.
    grad = jax.grad(tdjax.scalar_output_fn(apply_fn, "max"))(params, x)
    expected = np.zeros((3, 2), np.float32)
    expected[np.argmax(q)] = x
    np.testing.assert_array_equal(grad["w"], expected)


def test_reduce_output_errors():
    with pytest.raises(ValueError, match="action"):
        tdjax.reduce_output(_Q, "action")
    with pytest.raises(ValueError, match="out of range"):
        tdjax.reduce_output(_Q, 4)
    with pytest.raises(ValueError, match="unknown reduction"):
        tdjax.reduce_output(_Q, "median")
    with pytest.raises(ValueError, match="scalar output"):
        tdjax.reduce_output(_Q, "none")
    with pytest.raises(ValueError, match="atoms"):
        tdjax.expected_q(np.zeros((4, 3)), "categorical")
    with pytest.raises(ValueError, match="atoms"):
        tdjax.expected_q(np.zeros((4, 3)), "categorical", np.zeros(5))
    with pytest.raises(ValueError, match="unknown distribution"):
        tdjax.expected_q(np.zeros((4, 3)), "gaussian")
