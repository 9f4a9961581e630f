"""Tests for tdjax._src.layerwise against jax.vmap(jax.grad) and explicit Jacobian products J Jᵀ."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from tdjax._src.layerwise import LayerwiseUnsupported, layerwise_gram, layerwise_per_example_grads
from tdjax.networks import MLP, NatureCNN

RTOL = 2e-5  # float32; scaled by the largest entry of the reference


def _assert_tree_close(actual, desired, rtol=RTOL):
    assert jax.tree.structure(actual) == jax.tree.structure(desired)
    for a, d in zip(jax.tree.leaves(actual), jax.tree.leaves(desired)):
        d = np.asarray(d)
        assert a.shape == d.shape
        np.testing.assert_allclose(a, d, rtol=rtol, atol=rtol * max(np.max(np.abs(d)), 1e-30))


def _reference(fn, params, batch, k_b):
    """Per-example gradients by jax.vmap(jax.grad) and the explicit Gram matrix J J[:k_b]ᵀ from them."""

    def ref(p, b):
        grads = jax.vmap(jax.grad(fn), in_axes=(None, 0))(p, b)
        j = jax.vmap(lambda g: ravel_pytree(g)[0])(grads)
        return grads, jnp.matmul(j, j[:k_b].T, precision="highest")

    return jax.jit(ref)(params, batch)


def _check(fn, params, batch, jit=True, symmetric=False):
    """Compares per-example gradients and the Gram matrix (of `batch` against its first k − 1 examples)."""
    k = jax.tree.leaves(batch)[0].shape[0]
    grads_ref, gram_ref = _reference(fn, params, batch, k - 1)

    def ours(p, b):
        part = jax.tree.map(lambda x: x[: k - 1], b)
        out = layerwise_per_example_grads(fn, p, b), layerwise_gram(fn, p, b, part)
        return out + ((layerwise_gram(fn, p, b),) if symmetric else ())

    got = (jax.jit(ours) if jit else ours)(params, batch)
    _assert_tree_close(got[0], grads_ref)
    _assert_tree_close(got[1], gram_ref, 1e-4)
    if symmetric:
        atol = 1e-6 * np.max(np.abs(gram_ref))
        np.testing.assert_allclose(got[2][:, : k - 1], got[1], rtol=1e-5, atol=atol)
        np.testing.assert_allclose(got[2], got[2].T, rtol=1e-5, atol=atol)


def _uniform(seed, *shape):
    return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, size=shape), jnp.float32)


def _actions(seed, k, n):
    return jnp.asarray(np.random.default_rng(seed).integers(0, n, size=k), jnp.int32)


@pytest.mark.parametrize("jit", [False, True], ids=["nojit", "jit"])
def test_mlp_taken_action_q_loss(jit):
    model = MLP((256, 256), 3) if jit else MLP((16,), 3)  # eager dispatch is slow: keep nojit small
    params = model.init(jax.random.key(0), jnp.ones(2))
    batch = (_uniform(1, 5, 2), _actions(2, 5, 3), _uniform(3, 5))

    def loss_fn(p, example):
        s_tm1, a_tm1, target_tm1 = example
        return 0.5 * (model.apply(p, s_tm1)[a_tm1] - target_tm1) ** 2

    _check(loss_fn, params, batch, jit, symmetric=jit)


def test_nature_cnn():
    model = NatureCNN(6)
    params = model.init(jax.random.key(0), jnp.ones((84, 84, 4)))
    batch = (_uniform(1, 3, 84, 84, 4), _actions(2, 3, 6))

    def loss_fn(p, example):
        s_tm1, a_tm1 = example
        return 0.5 * (model.apply(p, s_tm1)[a_tm1] - 1.0) ** 2

    _check(loss_fn, params, batch, symmetric=True)


class _ConvNet(nn.Module):
    conv_kwargs: dict
    n_spatial: int = 2

    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Conv(4, **self.conv_kwargs)(x))
        return nn.Dense(2)(x.reshape(x.shape[: x.ndim - self.n_spatial - 1] + (-1,)))


@pytest.mark.parametrize(
    "conv_kwargs, n_spatial",
    [
        (dict(kernel_size=(3, 3), strides=2, padding="SAME"), 2),  # odd kernel, stride 2: strided slices
        (dict(kernel_size=(4, 2), strides=(2, 1), padding=((1, 2), (0, 1))), 2),  # space-to-depth path
        (dict(kernel_size=(3, 3), kernel_dilation=2, padding="VALID", use_bias=False), 2),
        (dict(kernel_size=(2, 2), feature_group_count=2, padding="CIRCULAR"), 2),
        (dict(kernel_size=(7, 6), feature_group_count=2, padding="VALID"), 2),  # one output position
        (dict(kernel_size=(3, 3), input_dilation=2, padding=1), 2),
        (dict(kernel_size=(3,), padding="CAUSAL"), 1),
        (dict(kernel_size=(2, 2, 2), strides=2, padding="VALID"), 3),
    ],
    ids=[
        "same-stride2", "explicit-pad", "dilated-nobias", "groups-circular", "groups-global",
        "input-dilation", "causal-1d", "3d",
    ],
)
def test_conv_variants(conv_kwargs, n_spatial):
    model = _ConvNet(conv_kwargs, n_spatial)
    x_shape = (7, 6, 4)[:n_spatial] + (2,) if n_spatial < 3 else (4, 6, 4, 2)
    params = model.init(jax.random.key(0), jnp.ones(x_shape))
    xs = _uniform(1, 3, *x_shape)
    _check(lambda p, x: jnp.sum(jnp.sin(model.apply(p, x))), params, xs)


def test_conv_batch_of_observations_per_example():
    """One example holds two observations (s_tm1, s_t): the conv sees an extra batch axis."""
    model = _ConvNet(dict(kernel_size=(3, 3), strides=2, padding="SAME"))
    params = model.init(jax.random.key(0), jnp.ones((2, 7, 6, 2)))
    batch = (_uniform(1, 3, 2, 7, 6, 2), _uniform(2, 3))

    def loss_fn(p, example):
        obs, r_t = example
        q = model.apply(p, obs)  # [2, 2]: q_tm1 and q_t
        return 0.5 * (r_t + 0.9 * jnp.max(q[1]) - q[0, 0]) ** 2  # gradient flows into both (no stop-grad)

    _check(loss_fn, params, batch)


class _Shared(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(8)(x))
        shared = nn.Dense(8)
        h = shared(nn.tanh(shared(h)))  # the same kernel and bias, twice
        return nn.Dense(3, use_bias=False)(h)


def test_weight_sharing():
    model = _Shared()
    params = model.init(jax.random.key(0), jnp.ones(5))
    _check(lambda p, x: jnp.sum(model.apply(p, x) ** 2), params, _uniform(1, 4, 5), symmetric=True)


def test_dense_with_extra_axes():
    """A per-example sequence [T, d] through an MLP, summed over time: Σₜ aₜᵀ gₜ per example."""
    model = MLP((6,), 2)
    params = model.init(jax.random.key(0), jnp.ones((5, 3)))
    xs = _uniform(1, 4, 5, 3)
    _check(lambda p, x: jnp.mean(jnp.tanh(model.apply(p, x))), params, xs)


def test_td_loss_with_stop_gradient_target_and_wrapped_params():
    """Target network through `stop_gradient(params)`: its calls carry no gradient and are not captured.

    The params are nested one level deeper than flax's `{'params': ...}`, as in a training state.
    """
    model = MLP((16,), 3)
    params = {"online": model.init(jax.random.key(0), jnp.ones(2))}
    batch = (_uniform(1, 4, 2), _actions(2, 4, 3), _uniform(3, 4), _uniform(4, 4, 2))

    def loss_fn(p, example):
        s_tm1, a_tm1, r_t, s_t = example
        q_t = model.apply(jax.lax.stop_gradient(p["online"]), s_t)
        return 0.5 * (r_t + 0.99 * jnp.max(q_t) - model.apply(p["online"], s_tm1)[a_tm1]) ** 2

    _check(loss_fn, params, batch)


def test_unused_parameters_get_zero_gradients():
    class TwoHeads(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.relu(nn.Dense(8)(x))
            return nn.Dense(2, name="used")(h), nn.Dense(2, name="unused")(h)

    model = TwoHeads()
    params = model.init(jax.random.key(0), jnp.ones(3))
    loss_fn = lambda p, x: jnp.sum(model.apply(p, x)[0] ** 2)
    xs = _uniform(1, 3, 3)
    grads = jax.jit(lambda p, b: layerwise_per_example_grads(loss_fn, p, b))(params, xs)
    assert not np.any(grads["params"]["unused"]["kernel"])
    _assert_tree_close(grads, jax.vmap(jax.grad(loss_fn), in_axes=(None, 0))(params, xs))


class _WithLayerNorm(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(nn.LayerNorm()(nn.relu(nn.Dense(8)(x))))


@pytest.mark.parametrize("jit", [False, True], ids=["nojit", "jit"])
def test_unsupported_layer_raises_and_fallback_matches(jit):
    model = _WithLayerNorm()
    params = model.init(jax.random.key(0), jnp.ones(2))
    xs = _uniform(1, 3, 2)
    loss_fn = lambda p, x: jnp.sum(model.apply(p, x) ** 2)
    maybe_jit = jax.jit if jit else (lambda f: f)
    with pytest.raises(LayerwiseUnsupported, match="LayerNorm_0"):
        maybe_jit(lambda p, b: layerwise_per_example_grads(loss_fn, p, b))(params, xs)
    with pytest.raises(LayerwiseUnsupported, match="LayerNorm_0"):
        maybe_jit(lambda p, b: layerwise_gram(loss_fn, p, b))(params, xs)

    def per_example_grads(fn, p, b):  # the caller's fallback
        try:
            return layerwise_per_example_grads(fn, p, b)
        except LayerwiseUnsupported:
            return jax.vmap(jax.grad(fn), in_axes=(None, 0))(p, b)

    got = (jax.jit(per_example_grads, static_argnums=0) if jit else per_example_grads)(loss_fn, params, xs)
    _assert_tree_close(got, jax.vmap(jax.grad(loss_fn), in_axes=(None, 0))(params, xs))


def test_parameter_penalty_in_loss_raises():
    """A supported layer whose kernel is also used elsewhere (an L2 penalty) must not pass silently."""
    model = MLP((8,), 2)
    params = model.init(jax.random.key(0), jnp.ones(2))
    loss_fn = lambda p, x: jnp.sum(model.apply(p, x)) + 1e-3 * jnp.sum(p["params"]["Dense_0"]["kernel"] ** 2)
    with pytest.raises(LayerwiseUnsupported, match=r"\['Dense_0'\]\['kernel'\]"):
        layerwise_per_example_grads(loss_fn, params, _uniform(1, 3, 2))


def test_non_scalar_output_raises():
    model = MLP((8,), 2)
    params = model.init(jax.random.key(0), jnp.ones(2))
    with pytest.raises(ValueError, match="scalar"):
        layerwise_gram(lambda p, x: model.apply(p, x), params, _uniform(1, 3, 2))
