"""tdjax._src.conv_matmul: convolutions as slices + one matmul, against lax.conv_general_dilated and a
NumPy loop over output positions, under jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from tdjax._src import conv_matmul
from tdjax._src.conv_matmul import conv_as_matmul, convs_as_matmuls


def _numpy_conv(x, w, strides, pads, dil):
    """NHWC x, HWIO w: the definition, one output position at a time."""
    x = np.pad(x, [(0, 0), *pads, (0, 0)])
    kh, kw = w.shape[:2]
    oh = (x.shape[1] - ((kh - 1) * dil[0] + 1)) // strides[0] + 1
    ow = (x.shape[2] - ((kw - 1) * dil[1] + 1)) // strides[1] + 1
    out = np.zeros((x.shape[0], oh, ow, w.shape[3]))
    for i in range(oh):
        for j in range(ow):
            for a in range(kh):
                for b in range(kw):
                    out[:, i, j] += x[:, i * strides[0] + a * dil[0], j * strides[1] + b * dil[1]] @ w[a, b]
    return out


_FORCE = {"shift": dict(_MAX_SHIFT_WASTE=np.inf), "slices": dict(_MAX_SHIFT_WASTE=0, _MIN_INNER=0),
          "im2col": dict(_MAX_SHIFT_WASTE=0, _MIN_INNER=10**9)}


@pytest.mark.parametrize("mode", list(_FORCE))
@pytest.mark.parametrize("strides,padding,dil", [((1, 1), "VALID", (1, 1)), ((2, 3), "SAME", (1, 1)),
                                                 ((1, 2), ((2, 1), (0, 3)), (2, 1)),
                                                 ((1, 1), ((1, 2), (2, 0)), (2, 3))])
def test_conv_as_matmul_matches_lax_and_numpy(strides, padding, dil, mode, monkeypatch):
    """Each of the three layouts (forced), with strides, padding and kernel dilation."""
    for name, value in _FORCE[mode].items():
        monkeypatch.setattr(conv_matmul, name, value)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 11, 9, 4)).astype(np.float32)
    w = rng.normal(size=(3, 2, 4, 5)).astype(np.float32)
    dn = ("NHWC", "HWIO", "NHWC")
    plan = conv_matmul._plan(x.shape, w.shape, window_strides=strides, padding=padding, rhs_dilation=dil,
                             dimension_numbers=dn)
    assert plan.mode == mode or (mode == "shift" and strides == (1, 2))  # shift needs stride 1 (after s2d)
    ref = lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dil, dimension_numbers=dn)
    f = jax.jit(convs_as_matmuls(lambda x, w: lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dil,
                                                                       dimension_numbers=dn)))
    got = f(x, w)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    pads = lax.padtype_to_pads((11, 9), [(3 - 1) * dil[0] + 1, (2 - 1) * dil[1] + 1], strides, padding) \
        if isinstance(padding, str) else padding
    np.testing.assert_allclose(got, _numpy_conv(x, w, strides, pads, dil), rtol=1e-4, atol=1e-4)
    # gradients through the layout, with respect to input and kernel
    conv = lambda x, w: lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dil, dimension_numbers=dn)
    loss = lambda c: (lambda x, w: jnp.sum(jnp.sin(c(x, w))))  # noqa: E731
    for a, b in zip(jax.jit(jax.grad(loss(convs_as_matmuls(conv)), (0, 1)))(x, w), jax.grad(loss(conv), (0, 1))(x, w)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # the rewritten program has no convolution left
    assert "conv_general_dilated" not in str(jax.make_jaxpr(convs_as_matmuls(
        lambda x, w: lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dil, dimension_numbers=dn)))(x, w))


@pytest.mark.parametrize("dn", [("NCHW", "OIHW", "NCHW"), ("NHWC", "OIHW", "NCHW"), ("NCW", "WIO", "NWC")])
def test_layouts_and_one_dimensional(dn):
    rng = np.random.default_rng(1)
    lhs_shape = {"NCHW": (2, 3, 7, 6), "NHWC": (2, 7, 6, 3), "NCW": (2, 3, 9)}[dn[0]]
    rhs_shape = {"OIHW": (4, 3, 3, 2), "WIO": (3, 3, 4)}[dn[1]]
    x = rng.normal(size=lhs_shape).astype(np.float32)
    w = rng.normal(size=rhs_shape).astype(np.float32)
    strides = (2,) * (len(lhs_shape) - 2)
    conv = lambda x, w: lax.conv_general_dilated(x, w, strides, "SAME", dimension_numbers=dn)
    np.testing.assert_allclose(jax.jit(convs_as_matmuls(conv))(x, w), conv(x, w), rtol=1e-5, atol=1e-5)


def test_float64_and_precision_kept():
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        x, w = rng.normal(size=(2, 5, 5, 3)), rng.normal(size=(2, 2, 3, 4))
        conv = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        got = jax.jit(convs_as_matmuls(conv))(x, w)
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(got, conv(x, w), rtol=1e-12)


def test_unsupported_convolutions_are_kept_and_exact():
    """Grouped convolutions and lhs dilation are evaluated as they are; nested jit/checkpoint is inlined."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 6, 6, 4)).astype(np.float32)
    w = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)
    dn = ("NHWC", "HWIO", "NHWC")

    def net(x, w):
        grouped = lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn, feature_group_count=2)
        dilated = lambda h: lax.conv_general_dilated(h, jnp.concatenate([w, w], 2), (1, 1), ((1, 1), (1, 1)),
                                                     lhs_dilation=(2, 2),
                                                     dimension_numbers=dn)
        inner = jax.checkpoint(jax.jit(dilated))
        plain = jax.jit(lambda h: lax.conv_general_dilated(h, jnp.concatenate([w, w], 2), (1, 1), "VALID",
                                                           dimension_numbers=dn))
        return jnp.sum(inner(grouped) ** 2) + jnp.sum(plain(grouped))

    np.testing.assert_allclose(jax.jit(convs_as_matmuls(net))(x, w), net(x, w), rtol=1e-5)
    text = str(jax.make_jaxpr(convs_as_matmuls(net))(x, w))
    assert text.count("conv_general_dilated") == 2  # the grouped one and the lhs-dilated one


def test_pytrees_in_and_out_and_gradients():
    from tdjax.networks import NatureCNN

    net = NatureCNN(4)
    x = jnp.asarray(np.random.default_rng(4).uniform(size=(3, 44, 44, 4)), jnp.float32)  # small frames
    params = net.init(jax.random.key(0), x[0])
    f = lambda p, xs: {"q": jax.vmap(lambda o: net.apply(p, o))(xs)}
    got = jax.jit(convs_as_matmuls(f))(params, x)
    np.testing.assert_allclose(got["q"], f(params, x)["q"], rtol=1e-4, atol=1e-5)
    g_ref = jax.grad(lambda p: jnp.sum(f(p, x)["q"]))(params)
    g = jax.jit(jax.grad(lambda p: jnp.sum(convs_as_matmuls(f)(p, x)["q"])))(params)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-5)


def test_primitive_names():
    """The names the rewrite keys on are still JAX's (fails loudly if JAX renames them)."""
    x, w = jnp.ones((1, 4, 4, 1)), jnp.ones((2, 2, 1, 1))
    conv = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    names = {e.primitive.name for e in jax.make_jaxpr(conv)(x, w).jaxpr.eqns}
    assert conv_matmul.CONV_PRIMITIVE in names
    outer = {e.primitive.name for e in jax.make_jaxpr(jax.jit(conv))(x, w).jaxpr.eqns}
    assert outer & set(conv_matmul.INLINED_PRIMITIVES)
    assert conv_as_matmul(x, w, window_strides=(1, 1), padding=((0, 0), (0, 0)),
                          dimension_numbers=("NHWC", "HWIO", "NHWC")).shape == (1, 3, 3, 1)


def test_staged_forward_equals_the_function_and_hoists_the_data_convolution():
    """prepare once on the data, finish per parameter set: the network's outputs; the first layer's im2col
    patches are prepared (finish holds no work on the raw input), a known output is passed through."""
    from tdjax._src.conv_matmul import staged_forward
    from tdjax.networks import NatureCNN

    net = NatureCNN(3)
    xs = jnp.asarray(np.random.default_rng(5).uniform(size=(4, 44, 44, 4)), jnp.float32)
    params = net.init(jax.random.key(1), xs[0])
    f = lambda p, x: (jnp.max(net.apply(p, x), -1), jnp.sum(x ** 2))  # the 2nd output is data only
    prepare, finish = staged_forward(f)
    prepared = jax.jit(prepare)(params, xs)
    assert any(a.shape == (4, 10, 10, 256) for a in prepared)  # layer 1's im2col patches (space-to-depth)
    other = jax.tree.map(lambda l: l * 1.1, params)
    for p in (params, other):
        got = jax.jit(finish)(p, xs, prepared)
        want = f(p, xs)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-6)
    # finish never touches the raw input: the same result with a garbage xs of the same shape
    np.testing.assert_allclose(jax.jit(finish)(other, xs * 0 + jnp.nan, prepared)[0], f(other, xs)[0],
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(RuntimeError, match="prepared"):
        finish(params, xs, prepared + [jnp.zeros(1)])
