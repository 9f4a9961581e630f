"""Bengio et al. 2020 App. B.1 networks: shapes, hand-counted parameters, a NumPy forward pass, the
strided/padded PatchConv against nn.Conv, and the config plumbing (network="bengio_cnn")."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tdjax.networks import (
    BengioCNN,
    BengioCNNTorso,
    BengioMLP,
    PatchConv,
    bengio_cnn_param_count,
    bengio_mlp_param_count,
)
from tdjax.train import ValueConfig
from tdjax.train.core import torso_factory


def _count(params):
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


def _shapes(net, x):
    """The parameter shapes of net at x, traced abstractly (nothing is compiled)."""
    return jax.eval_shape(net.init, jax.random.key(0), x)


def _np_conv(x, k, b, stride, pad):
    """Direct loops: y[i, j, o] = Σ x[s·i + u, s·j + v, c] k[u, v, c, o] + b[o]."""
    x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    kh, kw, _, o = k.shape
    h, w = (x.shape[0] - kh) // stride + 1, (x.shape[1] - kw) // stride + 1
    y = np.zeros((h, w, o))
    for i in range(h):
        for j in range(w):
            y[i, j] = np.tensordot(x[stride * i: stride * i + kh, stride * j: stride * j + kw], k, axes=3) + b
    return y


def _leaky(x):
    return np.where(x > 0, x, 0.01 * x)


def test_param_counts_by_hand():
    # n_h = 8, n_L = 1, 3 input channels, 10 outputs:
    #   conv 5×5 3→8: 600 + 8; conv 3×3 8→16: 1152 + 16; conv 3×3 16→32: 4608 + 32; extra 32→32: 9216 + 32;
    #   dense 3200→32: 102400 + 32; dense 32→10: 320 + 10
    hand = 608 + 1168 + 4640 + 9248 + 102432 + 330
    params = _shapes(BengioCNN(8, 1, 10), jnp.zeros((32, 32, 3)))
    assert _count(params) == hand == bengio_cnn_param_count(8, 1, 3, 10)
    # torso only, n_h = 16, n_L = 0, 4 channels (marker + RGB): 1616 + 4640 + 18496 + 409664
    torso = _shapes(BengioCNNTorso(16, 0), jnp.zeros((32, 32, 4)))
    assert _count(torso) == 1616 + 4640 + 18496 + 409664 == bengio_cnn_param_count(16, 0, 4)
    # California: 8 → 64 → 64 → 64 → 1: 576 + 4160 + 4160 + 65; SARCOS n_L = 2: 21 → 32 ×3 → 7
    assert _count(_shapes(BengioMLP(64, 3, 1), jnp.zeros((8,)))) == 576 + 4160 + 4160 + 65
    assert bengio_mlp_param_count(21, 32, 3, 7) == 704 + 1056 + 1056 + 231
    assert _count(_shapes(BengioMLP(32, 3, 7), jnp.zeros((21,)))) == 3047


def test_cnn_forward_matches_numpy():
    net = BengioCNN(2, 1, 5)
    x = np.random.default_rng(0).uniform(-1, 1, size=(32, 32, 3)).astype(np.float32)
    rng = np.random.default_rng(1)  # random parameters of the right shapes (biases too), no init to compile
    params = jax.tree.map(lambda s: rng.normal(0, 0.3, s.shape).astype(np.float32), _shapes(net, x))
    p = jax.tree.map(np.asarray, params)["params"]
    t = p["BengioCNNTorso_0"]
    h = _leaky(_np_conv(x, t["Conv_0"]["kernel"], t["Conv_0"]["bias"], 2, 0))
    assert h.shape == (14, 14, 2)
    h = _leaky(_np_conv(h, t["Conv_1"]["kernel"], t["Conv_1"]["bias"], 1, 0))
    h = _leaky(_np_conv(h, t["Conv_2"]["kernel"], t["Conv_2"]["bias"], 1, 0))
    h = _leaky(_np_conv(h, t["Conv_3"]["kernel"], t["Conv_3"]["bias"], 1, 1))
    assert h.shape == (10, 10, 8)
    h = _leaky(h.reshape(-1) @ t["Dense_0"]["kernel"] + t["Dense_0"]["bias"])
    want = h @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
    got = jax.jit(net.apply)(params, jnp.asarray(np.stack([x, x])))
    assert got.shape == (2, 5)
    np.testing.assert_allclose(np.asarray(got[1]), want, rtol=2e-4, atol=2e-5)


def test_mlp_forward_and_init_match_reference():
    net = BengioMLP(16, 3, 2)
    x = np.random.default_rng(3).normal(size=(4, 8)).astype(np.float32)
    params = jax.jit(net.init)(jax.random.key(0), x)
    layers = [params["params"][f"Dense_{i}"] for i in range(4)]
    h = x
    for i, layer in enumerate(layers):
        h = h @ np.asarray(layer["kernel"]) + np.asarray(layer["bias"])
        h = _leaky(h) if i < 3 else h
    np.testing.assert_allclose(np.asarray(jax.jit(net.apply)(params, x)), h, rtol=1e-5, atol=1e-6)
    img = np.random.default_rng(2).integers(0, 256, size=(4, 8)).astype(np.uint8)  # uint8 → [0, 1]
    np.testing.assert_allclose(net.apply(params, img), net.apply(params, img / 255.0), rtol=1e-5, atol=1e-6)
    # the authors' init: U(±√(6 / (fan_in + fan_out))), zero biases
    k = np.asarray(layers[1]["kernel"])
    assert np.abs(k).max() <= np.sqrt(6 / 32) and np.abs(k).max() > 0.8 * np.sqrt(6 / 32)
    assert all(float(np.abs(np.asarray(layer["bias"])).max()) == 0.0 for layer in layers)


@pytest.mark.parametrize("stride,pad", [(3, 2)])
def test_patch_conv_equals_nn_conv(stride, pad):
    x = jax.random.normal(jax.random.key(0), (2, 3, 13, 11, 4))
    conv = PatchConv(5, (3, 5), (stride, stride), pad)
    params = jax.jit(conv.init)(jax.random.key(1), x)
    ref = nn.Conv(5, (3, 5), strides=(stride, stride), padding="VALID" if pad == "VALID" else ((pad, pad), (pad, pad)))
    np.testing.assert_allclose(np.asarray(jax.jit(conv.apply)(params, x)), np.asarray(jax.jit(ref.apply)(params, x)),
                               rtol=1e-4, atol=1e-5)


def test_config_builds_the_torso_with_n_h_and_n_L():
    c = ValueConfig(env="MaskedImage-digits", network="auto", cnn_width=3, cnn_extra_layers=2)
    torso = torso_factory(c, (32, 32, 2))()
    assert isinstance(torso, BengioCNNTorso) and (torso.n_h, torso.n_L) == (3, 2)
    with pytest.raises(ValueError, match="cnn_width"):
        from tdjax.train import make_agent
        make_agent(ValueConfig(env="MaskedImage-digits", cnn_width=0))
