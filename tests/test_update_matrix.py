"""Tests for tdjax._src.update_matrix against independent references.

References: naive Python loops of single-example `jax.grad` + `optimizer.update` + one `output_fn` call
per (example, probe) pair, from a non-trivial Adam state; flattened (`ravel_pytree`) gradient dot
products; NumPy SVDs and NumPy re-implementations of srank, effective rank and dormant fractions.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import tdjax
from tdjax.networks import MLP

JIT = pytest.mark.parametrize("jit", [False, True], ids=["nojit", "jit"])


def _take(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def _k(tree):
    return jax.tree.leaves(tree)[0].shape[0]


# ----------------------------------------------------------------------------------------------------
# Problems: a flax MLP and a small flax CNN, a TD loss, Adam after a few real steps.


class _SmallCNN(nn.Module):
    """Conv 3×3/2 (4) → conv 3×3/1 (4) → dense 3 on [10, 10, 2] inputs (NatureCNN's shape, small)."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), strides=(2, 2), padding="VALID")(x))
        x = nn.relu(nn.Conv(4, (3, 3), padding="VALID")(x))
        return nn.Dense(3)(x.reshape(x.shape[:-3] + (-1,)))


_NETS = {"mlp": (MLP((16, 16), 3), (3,)), "cnn": (_SmallCNN(), (10, 10, 2))}


@functools.lru_cache(maxsize=None)
def _problem(net="mlp", k=7, m=5, optimizer=None, seed=0, adam_steps=3):
    """(loss_fn, output_fn, optimizer, params, opt_state, batch, probes) with a non-trivial Adam state."""
    model, shape = _NETS[net]
    rng = np.random.default_rng(seed)
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    batch = {
        "obs": f32(rng.normal(size=(k, *shape))),
        "a": jnp.asarray(rng.integers(0, 3, size=k), jnp.int32),
        "r": f32(rng.normal(size=k)),
        "next_obs": f32(rng.normal(size=(k, *shape))),
    }
    probes = f32(rng.normal(size=(m, *shape)))
    params = jax.jit(model.init)(jax.random.key(seed), jnp.zeros(shape, jnp.float32))

    def loss_fn(p, ex):
        target = ex["r"] + 0.9 * jnp.max(jax.lax.stop_gradient(model.apply(p, ex["next_obs"])))
        return 0.5 * (model.apply(p, ex["obs"])[ex["a"]] - target) ** 2

    output_fn = tdjax.scalar_output_fn(model.apply, "max")
    tx = optax.adam(1e-2) if optimizer is None else optimizer
    opt_state = tx.init(params)

    @jax.jit
    def train_step(p, s):
        g = jax.grad(lambda q: jnp.mean(jax.vmap(loss_fn, in_axes=(None, 0))(q, batch)))(p)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    for _ in range(adam_steps):
        params, opt_state = train_step(params, opt_state)
    return loss_fn, output_fn, tx, params, opt_state, batch, probes


def _naive_matrix(loss_fn, out_fn, compare, tx, params, opt_state, batch, probes):
    """A[i, j] = compare(out_fn(θᵢ, xⱼ), out_fn(θ, xⱼ)), one optimizer.update per example, one call per pair."""

    @jax.jit  # jit only to cut dispatch and compile time; still one example / one probe per call
    def step(ex):
        updates, _ = tx.update(jax.grad(loss_fn)(params, ex), opt_state, params)
        return optax.apply_updates(params, updates)

    out = jax.jit(out_fn)
    rows = []
    for i in range(_k(batch)):
        new = step(_take(batch, i))
        rows.append([compare(out(new, probes[j]), out(params, probes[j])) for j in range(probes.shape[0])])
    return np.asarray(rows, dtype=np.float64)


@functools.lru_cache(maxsize=None)
def _reference(net):
    loss_fn, f, tx, params, opt_state, batch, probes = _problem(net)
    return _naive_matrix(loss_fn, f, _diff, tx, params, opt_state, batch, probes)


def _diff(new, old):
    return float(new - old)


def _assert_close(actual, desired, rtol=2e-4):
    desired = np.asarray(desired)
    np.testing.assert_allclose(np.asarray(actual), desired, rtol=rtol, atol=rtol * np.max(np.abs(desired)))


def test_problem_has_nontrivial_adam_state():
    *_, opt_state, _, _ = _problem()
    adam = opt_state[0]
    assert int(adam.count) == 3
    assert all(float(jnp.max(jnp.abs(x))) > 0 for x in jax.tree.leaves(adam.mu))
    assert all(float(jnp.max(x)) > 0 for x in jax.tree.leaves(adam.nu))


# ----------------------------------------------------------------------------------------------------
# update_matrix


@JIT
@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_update_matrix_matches_naive_loop(net, jit):
    loss_fn, f, tx, params, opt_state, batch, probes = _problem(net)
    ref = _reference(net)
    fn = lambda p, s, b, x: tdjax.update_matrix(loss_fn, f, tx, p, s, b, x, chunk_size=3)
    A = (jax.jit(fn) if jit else fn)(params, opt_state, batch, probes)
    assert A.shape == (7, 5)
    assert np.max(np.abs(ref)) > 1e-3  # the steps move the outputs: the comparison is not vacuous
    _assert_close(A, ref)


@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_update_matrix_loop_strategy_matches_naive_loop(net):
    loss_fn, f, tx, params, opt_state, batch, probes = _problem(net)
    ref = _reference(net)
    A = tdjax.update_matrix(loss_fn, f, tx, params, opt_state, batch, probes, chunk_size=2, strategy="loop")
    _assert_close(A, ref)


def test_probe_forward_as_is_and_matmul_match_the_naive_loop(monkeypatch):
    """The CNN's probe forwards with its own convolutions and as matmuls (the CPU default; again with the
    second convolution in the "shift" layout): the same matrix as the naive loop; the "matmul" program's
    probe forwards hold no convolution."""
    from tdjax._src import conv_matmul

    loss_fn, f, tx, params, opt_state, batch, probes = _problem("cnn")
    ref = _reference("cnn")
    for forward, waste in (("as_is", None), ("matmul", None), ("matmul", np.inf)):
        if waste is not None:
            monkeypatch.setattr(conv_matmul, "_MAX_SHIFT_WASTE", waste)
        fn = lambda p: tdjax.update_matrix(loss_fn, f, tx, p, opt_state, batch, probes, chunk_size=3,
                                           probe_forward=forward)
        _assert_close(jax.jit(fn)(params), ref)
    text = lambda forward: str(jax.make_jaxpr(lambda p: tdjax.update_matrix(  # noqa: E731
        lambda q, ex: 0.0 * jnp.sum(q["params"]["Dense_0"]["kernel"]), f, tx, p, opt_state, batch, probes,
        probe_forward=forward))(params))
    assert "conv_general_dilated" in text("as_is") and "conv_general_dilated" not in text("matmul")
    with pytest.raises(ValueError, match="probe_forward"):
        tdjax.update_matrix(loss_fn, f, tx, params, opt_state, batch, probes, probe_forward="im2col")
    with pytest.raises(ValueError, match="probe_forward"):
        tdjax.policy_update_matrix(loss_fn, f, tx, params, opt_state, batch, probes, probe_forward="conv")


def test_update_matrix_uses_the_optimizer_state():
    """From a fresh Adam state the matrix differs: the moments and count of `opt_state` matter."""
    loss_fn, f, tx, params, opt_state, batch, probes = _problem()
    fn = jax.jit(lambda s: tdjax.update_matrix(loss_fn, f, tx, params, s, batch, probes))
    A, A_fresh = fn(opt_state), fn(tx.init(params))
    assert np.max(np.abs(np.asarray(A) - np.asarray(A_fresh))) > 1e-2 * np.max(np.abs(np.asarray(A)))


def test_update_matrix_chunked_equals_unchunked():
    loss_fn, f, tx, params, opt_state, batch, probes = _problem("cnn")
    um = lambda c, pc: tdjax.update_matrix(loss_fn, f, tx, params, opt_state, batch, probes, chunk_size=c,
                                           probe_chunk_size=pc)
    whole = np.asarray(jax.jit(lambda: um(7, None))())  # all k = 7 examples vmapped at once
    # one-example chunks, the default (4: a padded last chunk), chunk_size > k; probe chunks too
    # (4, 4): a padded probe chunk that repeats probes (an XLA:CPU CSE miscompile, see _over_probes)
    for c, pc in [(1, None), (None, 2), (100, 4), (4, 4)]:
        np.testing.assert_allclose(np.asarray(jax.jit(lambda: um(c, pc))()), whole, rtol=1e-5, atol=1e-6)
    loop = tdjax.update_matrix(loss_fn, f, tx, params, opt_state, batch, probes, chunk_size=3, probe_chunk_size=2,
                               strategy="loop")
    np.testing.assert_allclose(np.asarray(loop), whole, rtol=1e-5, atol=1e-6)


def test_update_matrix_of_tabular_values_is_diagonal():
    """A lookup table (one parameter per state) with SGD: A = −lr·diag(∂loss/∂V(sᵢ)) exactly (§5.1)."""
    n, lr = 6, 0.1
    table = jnp.linspace(-1.0, 1.0, n)
    targets = jnp.arange(n, dtype=jnp.float32)
    loss_fn = lambda v, s: 0.5 * (v[s] - targets[s]) ** 2
    output_fn = lambda v, s: v[s]
    tx = optax.sgd(lr)
    states = jnp.arange(n)
    A = tdjax.update_matrix(loss_fn, output_fn, tx, table, tx.init(table), states, states)
    np.testing.assert_allclose(np.asarray(A), np.diag(-lr * np.asarray(table - targets)), atol=1e-6)
    assert int(tdjax.update_rank(A, eps=0.01)) == n - int(np.sum(np.isclose(np.asarray(table - targets), 0)))


# ----------------------------------------------------------------------------------------------------
# policy_update_matrix


@functools.lru_cache(maxsize=None)
def _policy_problem(k=6, m=4, seed=1):
    model = MLP((16,), 4)
    rng = np.random.default_rng(seed)
    batch = {
        "obs": jnp.asarray(rng.normal(size=(k, 3)), jnp.float32),
        "a": jnp.asarray(rng.integers(0, 4, size=k), jnp.int32),
        "adv": jnp.asarray(rng.normal(size=k), jnp.float32),
    }
    probes = jnp.asarray(rng.normal(size=(m, 3)), jnp.float32)
    params = jax.jit(model.init)(jax.random.key(seed), jnp.zeros(3))

    def loss_fn(p, ex):  # REINFORCE-style: −A·log π(a|s)
        return -ex["adv"] * jax.nn.log_softmax(model.apply(p, ex["obs"]))[ex["a"]]

    tx = optax.adam(3e-2)
    opt_state = tx.init(params)
    for _ in range(2):
        g = jax.grad(lambda q: jnp.mean(jax.vmap(loss_fn, in_axes=(None, 0))(q, batch)))(params)
        u, opt_state = tx.update(g, opt_state, params)
        params = optax.apply_updates(params, u)
    return loss_fn, model.apply, tx, params, opt_state, batch, probes


@JIT
def test_policy_update_matrix_matches_naive_loop(jit):
    loss_fn, logits_fn, tx, params, opt_state, batch, probes = _policy_problem()
    probs_fn = lambda p, x: jax.nn.softmax(logits_fn(p, x))
    dist = lambda new, old: float(np.linalg.norm(np.asarray(old) - np.asarray(new)))
    ref = _naive_matrix(loss_fn, probs_fn, dist, tx, params, opt_state, batch, probes)
    fn = lambda p, s: tdjax.policy_update_matrix(loss_fn, logits_fn, tx, p, s, batch, probes, chunk_size=4)
    A = (jax.jit(fn) if jit else fn)(params, opt_state)
    assert np.min(ref) >= 0 and np.max(ref) > 1e-3
    _assert_close(A, ref)
    # the same matrix from a probabilities function
    A_probs = jax.jit(lambda: tdjax.policy_update_matrix(loss_fn, probs_fn, tx, params, opt_state, batch, probes,
                                                         from_logits=False))()
    _assert_close(A_probs, ref)


# ----------------------------------------------------------------------------------------------------
# linearized_update_matrix


def _ntk_reference(loss_fn, output_fn, params, batch, probes):
    """⟨∇θJ(xᵢ), ∇θf(xⱼ)⟩ from flattened single-example gradients, in float64."""
    flat = lambda fn: jax.jit(lambda ex: ravel_pytree(jax.grad(fn)(params, ex))[0])
    gj = np.stack([flat(loss_fn)(_take(batch, i)) for i in range(_k(batch))]).astype(np.float64)
    gf = np.stack([flat(output_fn)(probes[j]) for j in range(probes.shape[0])]).astype(np.float64)
    return gj @ gf.T


@JIT
def test_linearized_update_matrix_is_scaled_ntk_for_sgd(jit):
    lr = 0.05
    loss_fn, f, tx, params, opt_state, batch, probes = _problem("mlp", optimizer=optax.sgd(lr), adam_steps=0)
    fn = lambda p, s: tdjax.linearized_update_matrix(loss_fn, f, tx, p, s, batch, probes, chunk_size=3,
                                                      probe_chunk_size=2)
    A_lin = (jax.jit(fn) if jit else fn)(params, opt_state)
    _assert_close(A_lin, -lr * _ntk_reference(loss_fn, f, params, batch, probes))


def test_linearized_matches_first_order_for_adam():
    """For Adam, Â[i, j] = ⟨∇θf(xⱼ), Δθᵢ⟩ with Δθᵢ Adam's update from the given state."""
    loss_fn, f, tx, params, opt_state, batch, probes = _problem("mlp")
    A_lin = tdjax.linearized_update_matrix(loss_fn, f, tx, params, opt_state, batch, probes)
    update = jax.jit(lambda ex: ravel_pytree(tx.update(jax.grad(loss_fn)(params, ex), opt_state, params)[0])[0])
    grad_f = jax.jit(lambda x: ravel_pytree(jax.grad(f)(params, x))[0])
    ref = np.zeros((7, 5))
    for i in range(7):
        u = update(_take(batch, i))
        for j in range(5):
            ref[i, j] = float(u @ grad_f(probes[j]))
    _assert_close(A_lin, ref)


def test_linearized_and_exact_agree_as_lr_goes_to_zero():
    """A smooth (tanh) regression net, so that the first-order error shrinks cleanly, ∝ lr."""
    rng = np.random.default_rng(0)
    f32 = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
    params = {"w1": f32(3, 16) / np.sqrt(3), "b1": jnp.zeros(16), "w2": f32(16, 3) / 4}
    apply = lambda p, x: jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]
    f = tdjax.scalar_output_fn(apply, "mean")
    loss_fn = lambda p, ex: 0.5 * jnp.sum((apply(p, ex["x"]) - ex["y"]) ** 2)
    batch, probes = {"x": f32(7, 3), "y": f32(7, 3)}, f32(5, 3)

    @jax.jit  # the learning rate is traced: one compilation for all of them
    def both(lr):
        tx = optax.sgd(lr)
        s = tx.init(params)
        return (tdjax.update_matrix(loss_fn, f, tx, params, s, batch, probes),
                tdjax.linearized_update_matrix(loss_fn, f, tx, params, s, batch, probes))

    errs = []
    for lr in (1e-1, 1e-2, 1e-3):
        exact, lin = (np.asarray(a, np.float64) for a in both(lr))
        errs.append(np.linalg.norm(exact - lin) / np.linalg.norm(lin))
    assert errs[0] > 1e-2  # the first-order approximation is visibly off at a large step ...
    assert errs[1] < 0.2 * errs[0] and errs[2] < 0.2 * errs[1]  # ... and the error shrinks ∝ lr
    assert errs[2] < 1e-3


# ----------------------------------------------------------------------------------------------------
# Ranks


def _with_singular_values(sv, n, m, seed):
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(n, n)))
    v, _ = np.linalg.qr(rng.normal(size=(m, m)))
    s = np.zeros((n, m))
    s[: len(sv), : len(sv)] = np.diag(sv)
    return (u @ s @ v.T).astype(np.float32)


@JIT
@pytest.mark.parametrize("eps", [0.1, 0.01, 0.5])
def test_update_rank_matches_numpy(jit, eps):
    fn = lambda a: tdjax.update_rank(a, eps=eps)
    fn = jax.jit(fn) if jit else fn
    # constructed: singular values 10, 6, 3, 0.7, 0.2, 0.03 and zeros (rank 6 exactly)
    a = _with_singular_values([10, 6, 3, 0.7, 0.2, 0.03], 12, 9, seed=0)
    expected = int(np.sum(np.array([10, 6, 3, 0.7, 0.2, 0.03]) > eps * 10))
    assert int(fn(jnp.asarray(a))) == expected
    for seed in range(3):  # random matrices: compare with NumPy's SVD directly
        b = np.random.default_rng(seed).normal(size=(10, 8)).astype(np.float32) ** 3
        sv = np.linalg.svd(b.astype(np.float64), compute_uv=False)
        assert int(fn(jnp.asarray(b))) == int(np.sum(sv > eps * sv[0]))


def test_update_rank_extremes():
    assert int(tdjax.update_rank(jnp.eye(5))) == 5  # tabular
    assert int(tdjax.update_rank(jnp.ones((5, 5)))) == 1  # a single shared parameter
    assert int(tdjax.update_rank(jnp.zeros((4, 4)))) == 0


def _srank_numpy(x, delta):
    sv = np.linalg.svd(np.asarray(x, np.float64), compute_uv=False)
    if sv.sum() == 0:
        return 0
    for k in range(1, len(sv) + 1):
        if sv[:k].sum() / sv.sum() >= 1 - delta:
            return k


def _erank_numpy(x):
    sv = np.linalg.svd(np.asarray(x, np.float64), compute_uv=False)
    p = sv / sv.sum()
    p = p[p > 0]
    return float(np.exp(-np.sum(p * np.log(p))))


@JIT
def test_srank_and_effective_rank_match_numpy(jit):
    srank = jax.jit(tdjax.srank, static_argnames="delta") if jit else tdjax.srank
    erank = jax.jit(tdjax.effective_rank) if jit else tdjax.effective_rank
    mats = [_with_singular_values([5, 4, 1, 0.5, 0.05, 0.01], 20, 8, seed=1)]
    mats += [np.random.default_rng(s).exponential(size=(30, 12)).astype(np.float32) for s in range(3)]
    for x in mats:
        for delta in (0.01, 0.1, 0.3):
            assert int(srank(jnp.asarray(x), delta=delta)) == _srank_numpy(x, delta)
        np.testing.assert_allclose(float(erank(jnp.asarray(x))), _erank_numpy(x), rtol=1e-4)
    # r equal singular values: effective rank r; srank r for small δ
    x = _with_singular_values([2.0, 2.0, 2.0], 7, 5, seed=2)
    np.testing.assert_allclose(float(erank(jnp.asarray(x))), 3.0, rtol=1e-4)
    assert int(srank(jnp.asarray(x), delta=0.01)) == 3


def _dormant_numpy(layers, tau):
    dormant = units = 0
    for a in layers:
        a = np.abs(np.asarray(a, np.float64)).reshape(-1, a.shape[-1])
        per_unit = a.mean(axis=0)
        for i in range(a.shape[1]):
            score = per_unit[i] / per_unit.mean() if per_unit.mean() > 0 else 0.0
            dormant += score <= tau
        units += a.shape[1]
    return dormant / units


@JIT
def test_dormant_fraction_matches_numpy(jit):
    rng = np.random.default_rng(0)
    dense = np.maximum(rng.normal(size=(50, 20)), 0)
    dense[:, [2, 5, 11]] = 0.0  # three dead units
    dense[:, 7] *= 0.01  # a nearly dormant unit: dormant at τ = 0.025 only
    conv = np.maximum(rng.normal(size=(10, 4, 4, 8)), 0)  # a unit is a channel
    conv[..., 3] = 0.0
    layers = [jnp.asarray(dense, jnp.float32), jnp.asarray(conv, jnp.float32)]
    for tau in (0.0, 0.025, 0.5):
        fn = lambda acts: tdjax.dormant_fraction(acts, tau=tau)
        got = float((jax.jit(fn) if jit else fn)(layers))
        np.testing.assert_allclose(got, _dormant_numpy(layers, tau), rtol=1e-6)
    assert float(tdjax.dormant_fraction(layers[0])) == pytest.approx(3 / 20)
    assert float(tdjax.dormant_fraction(layers[0], tau=0.025)) == pytest.approx(4 / 20)
    assert float(tdjax.dormant_fraction({"dense": layers[0], "conv": layers[1]})) == pytest.approx(4 / 28)


# ----------------------------------------------------------------------------------------------------
# Non-finite gradients are surfaced, never turned into a rank.


def _problem_with_bad_example():
    """Example 2's loss has an infinite gradient w.r.t. a parameter that the output does not read."""
    loss_fn, f, tx, params, opt_state, batch, probes = _problem("mlp", adam_steps=0)
    params = {"net": params, "extra": jnp.zeros(3)}
    batch = dict(batch, scale=jnp.asarray([0, 0, np.inf, 0, 0, 0, 0], jnp.float32))
    loss = lambda p, ex: loss_fn(p["net"], ex) + ex["scale"] * jnp.sum(p["extra"] ** 2 + p["extra"])
    out = lambda p, x: f(p["net"], x)
    return loss, out, tx, params, tx.init(params), batch, probes


@JIT
def test_non_finite_update_gives_nan_row(jit):
    loss_fn, f, tx, params, opt_state, batch, probes = _problem_with_bad_example()
    fn = lambda p, s: tdjax.update_matrix(loss_fn, f, tx, p, s, batch, probes, chunk_size=3)
    A = np.asarray((jax.jit(fn) if jit else fn)(params, opt_state))
    assert np.all(np.isnan(A[2])) and np.all(np.isfinite(np.delete(A, 2, axis=0)))
    lin = np.asarray(tdjax.linearized_update_matrix(loss_fn, f, tx, params, opt_state, batch, probes))
    assert np.all(np.isnan(lin[2])) and np.all(np.isfinite(np.delete(lin, 2, axis=0)))


def test_ranks_refuse_non_finite_input():
    a = jnp.ones((4, 4)).at[1, 2].set(jnp.nan)
    for fn in (tdjax.update_rank, tdjax.srank, tdjax.effective_rank, tdjax.dormant_fraction):
        with pytest.raises(ValueError, match="non-finite"):
            fn(a)
    assert int(jax.jit(tdjax.update_rank)(a)) == -1
    assert int(jax.jit(tdjax.srank)(a.at[0, 0].set(jnp.inf))) == -1
    assert np.isnan(float(jax.jit(tdjax.effective_rank)(a)))
    assert np.isnan(float(jax.jit(tdjax.dormant_fraction)(a)))


# ----------------------------------------------------------------------------------------------------
# Bad input fails at trace time with a message naming the argument.


def test_bad_inputs_raise_naming_the_argument():
    loss_fn, f, tx, params, opt_state, batch, probes = _problem("mlp", adam_steps=1)
    um = lambda **kw: tdjax.update_matrix(
        kw.get("loss_fn", loss_fn), kw.get("output_fn", f), tx, params, kw.get("opt_state", opt_state),
        kw.get("batch", batch), kw.get("probes", probes), chunk_size=kw.get("chunk_size"),
        strategy=kw.get("strategy", "map"),
    )
    with pytest.raises(ValueError, match="loss_fn"):
        um(loss_fn=lambda p, ex: jnp.stack([loss_fn(p, ex)] * 2))
    with pytest.raises(ValueError, match="output_fn"):
        um(output_fn=lambda p, x: jnp.stack([f(p, x)] * 2))
    with pytest.raises(ValueError, match="batch"):
        um(batch=dict(batch, r=batch["r"][:5]))
    with pytest.raises(ValueError, match="probe_xs"):
        um(probes={"a": probes, "b": probes[:2]})
    with pytest.raises(ValueError, match="chunk_size"):
        um(chunk_size=0)
    with pytest.raises(ValueError, match="strategy"):
        um(strategy="vmap")
    # an Adam state initialised for differently shaped params (same layer names)
    other = jax.jit(MLP((8, 16), 3).init)(jax.random.key(0), jnp.zeros(3))
    with pytest.raises(ValueError, match="opt_state"):
        um(opt_state=tx.init(other))
    with pytest.raises(ValueError, match="opt_state"):  # the state of another optimizer
        um(opt_state=optax.sgd(0.1, momentum=0.9).init(params))
    with pytest.raises(ValueError, match="opt_state"):
        tdjax.linearized_update_matrix(loss_fn, f, tx, params, tx.init(other), batch, probes)
    with pytest.raises(ValueError, match="strategy='loop'"):  # a host loop cannot be traced
        jax.jit(lambda p: tdjax.update_matrix(loss_fn, f, tx, p, opt_state, batch, probes, strategy="loop"))(params)
    with pytest.raises(ValueError, match="policy_fn"):
        tdjax.policy_update_matrix(loss_fn, f, tx, params, opt_state, batch, probes)
    a = jnp.eye(3)
    for eps in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="eps"):
            tdjax.update_rank(a, eps=eps)
    with pytest.raises(ValueError, match="eps"):
        jax.jit(tdjax.update_rank)(a, 0.1)  # a traced eps cannot be checked
    with pytest.raises(ValueError, match="delta"):
        tdjax.srank(a, delta=1.0)
    with pytest.raises(ValueError, match="tau"):
        tdjax.dormant_fraction(a, tau=-0.1)
    with pytest.raises(ValueError, match="A"):
        tdjax.update_rank(jnp.ones(3))
