"""Torsos and value heads: shapes, parameter counts, and agreement with tdjax.networks / tdjax.expected_q."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tdjax
from tdjax.networks import MLP, NatureCNN
from tdjax.networks.heads import (
    C51Head,
    ImpalaTorso,
    MinAtarTorso,
    MLPTorso,
    NatureTorso,
    PatchConv,
    QHead,
    QRHead,
    ValueNetwork,
)


def _count(params):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


@pytest.mark.parametrize(
    "torso, obs_shape, dim, head, out_shape",
    [
        (MLPTorso((32, 8)), (5,), 8, QHead(3), (3,)),
        (MinAtarTorso(), (10, 10, 4), 128, C51Head(3, 11), (3, 11)),
        (ImpalaTorso(), (64, 64, 3), 256, QRHead(3, 7), (3, 7)),
    ],
)
def test_shapes_single_and_batched(torso, obs_shape, dim, head, out_shape):
    net = ValueNetwork(torso, head)
    params = jax.jit(net.init)(jax.random.key(0), jnp.zeros(obs_shape))
    x = jax.random.uniform(jax.random.key(1), (2, 3) + obs_shape)

    @jax.jit
    def outputs(params, x):
        return (net.apply(params, x), net.apply(params, x[1, 2]),
                net.apply(params, x, method=ValueNetwork.features), net.apply(params, x, method=ValueNetwork.q_values))

    out, single, phi, q = outputs(params, x)
    assert out.shape == (2, 3) + out_shape
    np.testing.assert_allclose(single, out[1, 2], rtol=1e-5, atol=1e-6)
    assert phi.shape == (2, 3, dim) and q.shape == (2, 3, 3)


def test_q_values_are_the_library_expectation():
    x = jax.random.normal(jax.random.key(2), (4, 6))
    for head, dist, atoms in [(C51Head(3, 11, -2.0, 3.0), "categorical", jnp.linspace(-2.0, 3.0, 11)),
                              (QRHead(3, 5), "quantile", None), (QHead(3), None, None)]:
        net = ValueNetwork(MLPTorso((16,)), head)

        @jax.jit
        def both(x):
            params = net.init(jax.random.key(0), x[0])
            q = net.apply(params, x, method=ValueNetwork.q_values)
            return q, jax.vmap(lambda xi: tdjax.expected_q(net.apply(params, xi), dist, atoms))(x)

        q, want = both(x)
        np.testing.assert_allclose(q, want, rtol=1e-6)
    np.testing.assert_allclose(C51Head(2, 5, -1.0, 1.0).atoms, [-1, -0.5, 0, 0.5, 1])
    np.testing.assert_allclose(QRHead(2, 4).taus, [0.125, 0.375, 0.625, 0.875])


def test_minatar_torso_is_the_reference_network():
    # Young & Tian 2019: conv 3x3 (4 -> 16, valid: 10x10 -> 8x8), dense 8*8*16 -> 128
    params = jax.eval_shape(MinAtarTorso().init, jax.random.key(0), jnp.zeros((10, 10, 4)))
    assert _count(params) == (3 * 3 * 4 * 16 + 16) + (8 * 8 * 16 * 128 + 128)


def test_patch_conv_equals_flax_conv():
    x = jax.random.normal(jax.random.key(0), (2, 3, 10, 9, 5))
    conv = nn.Conv(7, (3, 2), padding="VALID")
    params = jax.jit(conv.init)(jax.random.key(1), x)
    want = jax.jit(conv.apply)(params, x)
    got = jax.jit(PatchConv(7, (3, 2)).apply)(params, x)
    assert got.shape == want.shape == (2, 3, 8, 8, 7)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(
        jnp.shape, jax.eval_shape(PatchConv(7, (3, 2)).init, jax.random.key(1), x))


def test_impala_torso_parameter_count():
    params = jax.eval_shape(ImpalaTorso().init, jax.random.key(0), jnp.zeros((64, 64, 3)))
    conv = lambda cin, c: 9 * cin * c + c  # noqa: E731
    want = sum(conv(cin, c) + 4 * conv(c, c) for cin, c in [(3, 16), (16, 32), (32, 32)])
    want += 8 * 8 * 32 * 256 + 256  # 64 -> 32 -> 16 -> 8 after three stride-2 pools
    assert _count(params) == want


def test_nature_and_mlp_torsos_with_q_head_equal_the_existing_networks():
    """ValueNetwork(NatureTorso, QHead) computes exactly tdjax.networks.NatureCNN (and MLP likewise)."""
    cases = [(NatureTorso(), NatureCNN(4), (84, 84, 4)), (MLPTorso((32, 16)), MLP((32, 16), 4), (6,))]
    for torso, ref, obs_shape in cases:
        net = ValueNetwork(torso, QHead(4))
        p_ref = jax.jit(ref.init)(jax.random.key(0), jnp.zeros(obs_shape))["params"]
        names = sorted(p_ref)  # Conv_0.. then Dense_0..; the last Dense is the output layer
        dense = [n for n in names if n.startswith("Dense")]
        torso_p = {n: p_ref[n] for n in names if n != dense[-1]}
        p = {"params": {"torso": torso_p, "head": {"Dense_0": p_ref[dense[-1]]}}}
        jax.tree.map(lambda a, b: None, p, jax.eval_shape(net.init, jax.random.key(1), jnp.zeros(obs_shape)))
        x = jax.random.uniform(jax.random.key(3), (1,) + obs_shape)
        np.testing.assert_allclose(jax.jit(net.apply)(p, x), jax.jit(ref.apply)({"params": p_ref}, x),
                                   rtol=1e-5, atol=1e-6)
