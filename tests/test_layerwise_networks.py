"""The jaxpr-level fast path on every kind of network, against jax.vmap(jax.grad) and naive loops.

Networks: flax linen, flax nnx (via nnx.split), equinox, a hand-written pure function (the Nature-DQN
CNN in plain jax.lax), LayerNorm, a reused layer, grouped and dilated convolutions, jax.checkpoint,
custom_vjp, float64. Each is checked through the public functions with the default method ("auto")
and with method="vmap".
"""

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax import lax
from jax.flatten_util import ravel_pytree

import tdjax
from tdjax._src import layerwise
from tdjax.networks import MLP


def _assert_tree_close(actual, desired, rtol=2e-5):
    assert jax.tree.structure(actual) == jax.tree.structure(desired)
    for a, d in zip(jax.tree.leaves(actual), jax.tree.leaves(desired)):
        d = np.asarray(d)
        assert a.shape == d.shape and a.dtype == d.dtype
        np.testing.assert_allclose(a, d, rtol=rtol, atol=rtol * max(np.max(np.abs(d)), 1e-30))


def _uniform(seed, *shape, dtype=jnp.float32):
    return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, size=shape), dtype)


def _check(fn, params, xs, rtol=2e-5, expect_copied=None):
    """per_example_grads and gram_matrix (default method) against a naive loop of jax.grad and J Jᵀ."""
    k = jax.tree.leaves(xs)[0].shape[0]
    grad = jax.jit(jax.grad(fn))
    naive = [grad(params, jax.tree.map(lambda x: x[i], xs)) for i in range(k)]
    naive = jax.tree.map(lambda *g: jnp.stack(g), *naive)
    j = np.stack([ravel_pytree(jax.tree.map(lambda g: g[i], naive))[0] for i in range(k)]).astype(np.float64)
    part = jax.tree.map(lambda x: x[: k - 1], xs)

    @jax.jit
    def ours(p, b):
        return (tdjax.per_example_grads(fn, p, b), tdjax.gram_matrix(fn, p, b),
                tdjax.gram_matrix(fn, p, b, part), tdjax.per_example_grads(fn, p, b, method="vmap"))

    grads, gram, gram_ab, grads_vmap = ours(params, xs)
    _assert_tree_close(grads, naive, rtol)
    _assert_tree_close(grads_vmap, naive, rtol)
    scale = np.max(np.abs(j @ j.T))
    np.testing.assert_allclose(gram, j @ j.T, rtol=10 * rtol, atol=10 * rtol * scale)
    np.testing.assert_allclose(gram_ab, j @ j[: k - 1].T, rtol=10 * rtol, atol=10 * rtol * scale)
    if expect_copied is not None:  # which leaves took the per-example-copy route (not the layer route)
        leaves, treedef = jax.tree.flatten(params)
        _, plan, paths = layerwise._plan(fn, leaves, treedef, jax.tree.map(lambda x: x[0], xs), strict=False)
        assert sorted(paths[i] for i in plan.copied) == sorted(expect_copied)


# ----------------------------------------------------------------------------------------------------
# The Nature-DQN CNN as a hand-written pure function (no network library): NCHW/OIHW plain lax.


def _nature_params(key, dtype=jnp.float32):
    ks = jax.random.split(key, 5)
    w = lambda k, shape, fan: (jax.random.normal(k, shape) / np.sqrt(fan)).astype(dtype)  # noqa: E731
    return {
        "c1": {"w": w(ks[0], (32, 4, 8, 8), 256), "b": jnp.full(32, 0.01, dtype)},
        "c2": {"w": w(ks[1], (64, 32, 4, 4), 512), "b": jnp.full(64, 0.01, dtype)},
        "c3": {"w": w(ks[2], (64, 64, 3, 3), 576), "b": jnp.full(64, 0.01, dtype)},
        "fc": {"w": w(ks[3], (3136, 512), 3136), "b": jnp.zeros(512, dtype)},
        "out": {"w": w(ks[4], (512, 6), 512), "b": jnp.zeros(6, dtype)},
    }


def nature_cnn(p, x):
    """Q-values [6] of one [84, 84, 4] observation."""
    x = jnp.transpose(x, (2, 0, 1))[None]
    for name, stride in (("c1", 4), ("c2", 2), ("c3", 1)):
        x = lax.conv_general_dilated(x, p[name]["w"], (stride, stride), "VALID")
        x = jax.nn.relu(x + p[name]["b"][None, :, None, None])
    x = jax.nn.relu(x.reshape(-1) @ p["fc"]["w"] + p["fc"]["b"])
    return x @ p["out"]["w"] + p["out"]["b"]


def test_plain_lax_nature_cnn():
    params = _nature_params(jax.random.key(0))
    batch = (_uniform(1, 3, 84, 84, 4), jnp.array([0, 5, 2]))
    loss = lambda p, ex: 0.5 * (nature_cnn(p, ex[0])[ex[1]] - 1.0) ** 2  # noqa: E731
    _check(loss, params, batch, expect_copied=[f"['{n}']['b']" for n in ("c1", "c2", "c3", "fc", "out")])


# ----------------------------------------------------------------------------------------------------
# Library networks.


class _LinenCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), strides=2)(x))
        return nn.Dense(3)(nn.relu(nn.Dense(8)(x.reshape(-1))))


def test_linen_cnn_and_mlp():
    model = _LinenCNN()
    params = model.init(jax.random.key(0), jnp.ones((7, 6, 2)))
    _check(lambda p, x: jnp.sum(jnp.sin(model.apply(p, x))), params, _uniform(1, 4, 7, 6, 2))
    mlp = MLP((16, 16), 3)
    params = mlp.init(jax.random.key(0), jnp.ones(2))
    _check(tdjax.scalar_output_fn(mlp.apply, "max"), params, _uniform(2, 5, 2))


class _NNXNet(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(2, 4, (3, 3), strides=2, rngs=rngs)
        self.norm = nnx.LayerNorm(4 * 4 * 3, rngs=rngs)
        self.fc = nnx.Linear(4 * 4 * 3, 3, rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.conv(x))
        return self.fc(self.norm(h.reshape(-1)))


def test_nnx_model_via_split():
    graphdef, state = nnx.split(_NNXNet(nnx.Rngs(0)))
    apply_fn = lambda s, x: nnx.merge(graphdef, s)(x)  # noqa: E731
    _check(lambda s, x: jnp.max(apply_fn(s, x)), state, _uniform(1, 4, 7, 6, 2))


def test_equinox_model():
    eqx = pytest.importorskip("equinox")
    key1, key2 = jax.random.split(jax.random.key(0))
    model = [eqx.nn.Conv2d(2, 3, 3, stride=2, key=key1), eqx.nn.MLP(3 * 3 * 3, 2, 8, 2, key=key2)]
    params, static = eqx.partition(model, eqx.is_array)

    def f(p, x):  # x: [C, H, W], equinox's layout
        conv, mlp = eqx.combine(p, static)
        return jnp.sum(mlp(jax.nn.relu(conv(x)).reshape(-1)) ** 2)

    _check(f, params, _uniform(1, 4, 2, 7, 7))


# ----------------------------------------------------------------------------------------------------
# Parameters used other ways, reuse, convolution variants, transformations, float64.


class _WithLayerNorm(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(nn.LayerNorm()(nn.relu(nn.Dense(8)(x))))


def test_layernorm_exact_by_copies_and_strict_raises():
    model = _WithLayerNorm()
    params = model.init(jax.random.key(0), jnp.ones(2))
    loss = lambda p, x: jnp.sum(model.apply(p, x) ** 2)  # noqa: E731
    xs = _uniform(1, 4, 2)
    ln = ["['params']['LayerNorm_0']['scale']", "['params']['LayerNorm_0']['bias']"]
    biases = ["['params']['Dense_0']['bias']", "['params']['Dense_1']['bias']"]
    _check(loss, params, xs, expect_copied=ln + biases)
    with pytest.raises(tdjax.LayerwiseUnsupported, match=r"LayerNorm_0'\]\['scale'\] \(used by mul"):
        tdjax.per_example_grads(loss, params, xs, method="layerwise")
    with pytest.raises(tdjax.LayerwiseUnsupported, match="LayerNorm_0"):
        tdjax.gram_matrix(loss, params, xs, method="layerwise")


def test_reused_layer_embedding_and_penalty():
    """One weight in three dot_generals (once transposed), an embedding lookup, an L2 penalty."""
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(5, 5)), jnp.float32),
              "emb": jnp.asarray(rng.normal(size=(7, 5)), jnp.float32),
              "v": jnp.asarray(rng.normal(size=(5, 2)), jnp.float32)}

    def f(p, ex):
        x, token = ex
        h = jnp.tanh(x @ p["w"]) + p["emb"][token]
        h = jnp.tanh(h @ p["w"])
        h = jnp.tanh(p["w"] @ h)  # W as the lhs: the transpose of the same layer
        return jnp.sum(jnp.sin(h @ p["v"])) + 0.01 * jnp.sum(p["w"] ** 2)

    xs = (_uniform(1, 4, 5), jnp.array([0, 3, 6, 3]))
    _check(f, params, xs, expect_copied=["['emb']", "['w']"])
    # a parameter that is the output itself
    _check(lambda p, x: p["v"][0, 1], params, xs, expect_copied=["['v']"])


@pytest.mark.parametrize(
    "groups, rhs_dilation, lhs_dilation, padding",
    [(2, (1, 1), (1, 1), "SAME"), (1, (2, 2), (1, 1), "VALID"), (4, (1, 2), (2, 1), ((1, 0), (2, 1)))],
    ids=["grouped", "dilated", "grouped-depthwise-lhs-dilated"],
)
def test_plain_conv_variants(groups, rhs_dilation, lhs_dilation, padding):
    rng = np.random.default_rng(0)
    c_in = 4
    w = jnp.asarray(rng.normal(size=(3, 3, c_in // groups, 4)), jnp.float32)  # HWIO
    v = jnp.asarray(rng.normal(size=(2,)), jnp.float32)

    def f(p, x):  # x: [H, W, C] -> NHWC with a batch of 1
        y = lax.conv_general_dilated(
            x[None], p["w"], (1, 1), padding, lhs_dilation, rhs_dilation,
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups,
        )
        return jnp.sum(jnp.tanh(y)) * p["v"][0] + jnp.mean(y**2) * p["v"][1]

    _check(f, {"w": w, "v": v}, _uniform(1, 3, 8, 7, c_in))


def test_checkpoint_jit_and_custom_vjp():
    """Layers inside jax.checkpoint and jit are found; a weight entering a custom_vjp stays exact."""
    rng = np.random.default_rng(0)
    params = {n: jnp.asarray(rng.normal(size=s), jnp.float32) for n, s in
              (("w1", (3, 6)), ("w2", (6, 6)), ("w3", (6, 1)))}

    @jax.custom_vjp
    def scaled_matmul(x, w):
        return x @ w

    scaled_matmul.defvjp(lambda x, w: (x @ w, (x, w)), lambda res, g: (g @ res[1].T, jnp.outer(res[0], g)))

    @jax.checkpoint
    def block(p, x):
        return jax.jit(lambda h: jnp.tanh(h @ p["w2"]))(jnp.tanh(x @ p["w1"]))

    f = lambda p, x: jnp.sum(scaled_matmul(block(p, x), p["w3"]))  # noqa: E731
    _check(f, params, _uniform(1, 4, 3), expect_copied=["['w3']"])
    with pytest.raises(tdjax.LayerwiseUnsupported, match=r"\['w3'\] \(used by custom_vjp"):
        tdjax.per_example_grads(f, params, _uniform(1, 4, 3), method="layerwise")


def test_float64():
    with jax.enable_x64(True):
        params = jax.tree.map(lambda x: x.astype(jnp.float64), _nature_params(jax.random.key(0)))
        params = {"c1": params["c1"], "out": {"w": params["out"]["w"][:6, :], "b": params["out"]["b"]}}

        def f(p, x):  # [18, 18, 4] -> conv 8/4 -> [32, 3, 3] -> first 6 features -> dense
            y = lax.conv_general_dilated(jnp.transpose(x, (2, 0, 1))[None], p["c1"]["w"], (4, 4), "VALID")
            h = jnp.tanh(y + p["c1"]["b"][None, :, None, None]).reshape(-1)[:6]
            return jnp.sum(jnp.sin(h @ p["out"]["w"] + p["out"]["b"]))

        _check(f, params, _uniform(1, 3, 18, 18, 4, dtype=jnp.float64), rtol=1e-11)


# ----------------------------------------------------------------------------------------------------
# Every public function: default method equals method="vmap".


def test_public_functions_default_equals_vmap():
    model = _LinenCNN()
    params = model.init(jax.random.key(0), jnp.ones((7, 6, 2)))
    xs = _uniform(1, 5, 7, 6, 2)
    batch = {"obs": xs, "a": jnp.array([0, 1, 2, 0, 1]), "y": _uniform(2, 5)}
    loss = lambda p, ex: 0.5 * (model.apply(p, ex["obs"])[ex["a"]] - ex["y"]) ** 2  # noqa: E731
    out = tdjax.scalar_output_fn(model.apply, "max")
    tx = optax.adam(1e-2)
    opt_state = tx.init(params)
    opt_state = tx.update(jax.tree.map(jnp.ones_like, params), opt_state, params)[1]

    def all_of(method):
        return (
            tdjax.per_example_grads(loss, params, batch, method=method, chunk_size=2),
            tdjax.loss_interference(loss, params, batch, method=method),
            tdjax.stiffness(loss, params, batch, method=method),
            tdjax.gram_matrix(out, params, xs, xs[:3], method=method),
            tdjax.update_matrix(loss, out, tx, params, opt_state, batch, xs, method=method),
            tdjax.policy_update_matrix(loss, model.apply, tx, params, opt_state, batch, xs, method=method),
            tdjax.linearized_update_matrix(loss, out, tx, params, opt_state, batch, xs, method=method),
        )

    got, ref = jax.jit(lambda: all_of("auto"))(), jax.jit(lambda: all_of("vmap"))()
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * max(np.max(np.abs(b)), 1e-30))


def test_primitive_names():
    """Fails loudly if JAX renames the primitives the pass recognises (it would silently stop finding
    layers, and every leaf would take the slower per-example-copy route)."""
    w = jnp.ones((3, 3))

    def f(x):
        h = jax.checkpoint(lambda x: x @ w)(x)
        h = jax.jit(lambda h: lax.conv_general_dilated(h[None, None], w[:1, None], (1,), "SAME"))(h)
        return jnp.sum(h)

    eqns = jax.make_jaxpr(f)(jnp.ones(3)).jaxpr.eqns
    calls = [e for e in eqns if any(isinstance(v, (jax.extend.core.Jaxpr, jax.extend.core.ClosedJaxpr))
                                    for v in e.params.values())]
    assert len(calls) == 2 and all(e.primitive.name in layerwise.INLINED_PRIMITIVES for e in calls)
    found = {e.primitive.name for eqn in calls for e in layerwise._sub_jaxpr(eqn)[0].eqns}
    assert set(layerwise.LAYER_PRIMITIVES) <= found
    # and a plain MLP is handled entirely by the layer route (no leaf left to per-example copies but biases)
    mlp = MLP((4,), 2)
    params = mlp.init(jax.random.key(0), jnp.ones(3))
    leaves, treedef = jax.tree.flatten(params)
    _, plan, _ = layerwise._plan(lambda p, x: jnp.sum(mlp.apply(p, x)), leaves, treedef, jnp.ones(3), strict=True)
    assert len(plan.layers) == 2 and all(set(ops) <= {"add"} for ops in plan.copied.values())


def test_update_matrix_with_layernorm_default_exact_and_strict_raises():
    model = _WithLayerNorm()
    params = model.init(jax.random.key(0), jnp.ones(2))
    xs = _uniform(1, 5, 2)
    batch = {"obs": xs, "y": _uniform(2, 5)}
    loss = lambda p, ex: 0.5 * (jnp.max(model.apply(p, ex["obs"])) - ex["y"]) ** 2  # noqa: E731
    out = tdjax.scalar_output_fn(model.apply, "max")
    tx = optax.adam(1e-2)
    state = tx.init(params)
    run = jax.jit(lambda method: tdjax.update_matrix(loss, out, tx, params, state, batch, xs, method=method),
                  static_argnums=0)
    np.testing.assert_allclose(run("auto"), run("vmap"), rtol=1e-5, atol=1e-7)
    with pytest.raises(tdjax.LayerwiseUnsupported, match="LayerNorm_0"):
        run("layerwise")
