"""Tests for tdjax._src.gradients against independent references.

References: Python loops of `jax.grad` over single examples, `jax.jacrev` Jacobians flattened to NumPy,
explicit `jax.hessian`s, central finite differences of ρ(θ − α∇J(bⱼ)) in float64, and NumPy loops.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify
from jax.flatten_util import ravel_pytree

import tdjax
from tdjax.networks import MLP

JIT = pytest.mark.parametrize("jit", [False, True], ids=["nojit", "jit"])


def _maybe_jit(fn, jit):
    return jax.jit(fn) if jit else fn


def _take(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def _k(tree):
    return jax.tree.leaves(tree)[0].shape[0]


def _loop_grads(fn, params, batch):
    """[k, P] NumPy matrix of flattened single-example gradients (the naive reference)."""
    grad = jax.jit(lambda p, ex: ravel_pytree(jax.grad(fn)(p, ex))[0])  # jit only to cut dispatch time
    return np.stack([np.asarray(grad(params, _take(batch, i))) for i in range(_k(batch))])


def _assert_close(actual, desired, rtol):
    """allclose with an absolute tolerance scaled to the largest entry (inner products cancel)."""
    desired = np.asarray(desired)
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * np.max(np.abs(desired)))


def _flat_rows(stacked):
    """[k, P] from a per-example gradient pytree."""
    return np.concatenate([np.asarray(x).reshape(x.shape[0], -1) for x in jax.tree.leaves(stacked)], axis=1)


# ----------------------------------------------------------------------------------------------------
# Problems: a flax MLP regression, a plain-function tanh value network for TD, tiny CNNs.


# Test data comes from seeded NumPy generators and flax inits are jitted once: eager JAX ops would each
# compile, which dominates the run time of tests this small.
_MLP = MLP((16, 16), 3)
_mlp_init = jax.jit(_MLP.init)


def _normal(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _mlp_problem(k=7, seed=0):
    net = _MLP
    rng = np.random.default_rng(seed)
    params = _mlp_init(jax.random.PRNGKey(seed), jnp.zeros((4,)))
    batch = {"x": _normal(rng, k, 4), "y": _normal(rng, k)}
    f = tdjax.scalar_output_fn(net.apply, "max")

    def loss_fn(p, ex):
        return 0.5 * (f(p, ex["x"]) - ex["y"]) ** 2

    return net, params, batch, f, loss_fn


def _value(p, s):
    """Smooth two-layer value network V_θ(s) (tanh, so that curvature terms are non-zero)."""
    h = jnp.tanh(s @ p["w1"] + p["b1"])
    return jnp.tanh(h @ p["w2"] + p["b2"]) @ p["w3"]


def _value_params(seed, d=3, h=6, dtype=np.float64):
    """NumPy parameters (float64: becomes float32 in JAX unless x64 is enabled)."""
    rng = np.random.default_rng(seed)
    params = {
        "w1": rng.standard_normal((d, h)) / np.sqrt(d),
        "b1": 0.1 * rng.standard_normal(h),
        "w2": rng.standard_normal((h, h)) / np.sqrt(h),
        "b2": 0.1 * rng.standard_normal(h),
        "w3": rng.standard_normal(h),
    }
    return jax.tree.map(lambda x: x.astype(dtype), params)


def _transitions(seed, k, d=3, dtype=np.float64):
    rng = np.random.default_rng(1000 + seed)
    batch = {
        "s_tm1": rng.standard_normal((k, d)),
        "r_t": rng.standard_normal(k),
        "discount_t": np.full(k, 0.9),
        "s_t": rng.standard_normal((k, d)),
        "y": rng.standard_normal(k),  # a regression target for the same states
    }
    return jax.tree.map(lambda x: x.astype(dtype), batch)


def value_fn(p, ex):
    return _value(p, ex["s_tm1"])


def td_target_fn(p, ex):
    return ex["r_t"] + ex["discount_t"] * _value(p, ex["s_t"])


def regression_target_fn(p, ex):
    del p
    return ex["y"]


def td_loss3(p, ex, target_p):
    """TD(0) with the bootstrap target's parameters as a separate argument."""
    return 0.5 * (value_fn(p, ex) - td_target_fn(target_p, ex)) ** 2


def td_loss_stop_gradient(p, ex):
    return 0.5 * (value_fn(p, ex) - jax.lax.stop_gradient(td_target_fn(p, ex))) ** 2


def regression_loss(p, ex):
    return 0.5 * (value_fn(p, ex) - ex["y"]) ** 2


class TinyConv(nn.Module):
    """Conv → tanh → conv → tanh → dense, on one small [H, W, C] input; `out` outputs (0: a scalar)."""

    out: int = 0

    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(nn.Conv(4, (3, 3), strides=(2, 2))(x))
        x = jnp.tanh(nn.Conv(4, (3, 3), padding="VALID")(x))
        y = nn.Dense(max(self.out, 1))(x.reshape(-1))
        return y if self.out else y[0]


# ----------------------------------------------------------------------------------------------------
# per_example_grads


@JIT
def test_per_example_grads_matches_python_loop(jit):
    _, params, batch, _, loss_fn = _mlp_problem()
    grads = _maybe_jit(lambda p, b: tdjax.per_example_grads(loss_fn, p, b), jit)(params, batch)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    for g, p in zip(jax.tree.leaves(grads), jax.tree.leaves(params)):
        assert g.shape == (7,) + p.shape
    np.testing.assert_allclose(_flat_rows(grads), _loop_grads(loss_fn, params, batch), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 10])
def test_per_example_grads_chunked_equals_unchunked(chunk_size):
    _, params, batch, _, loss_fn = _mlp_problem()
    full = jax.jit(lambda p, b: tdjax.per_example_grads(loss_fn, p, b))(params, batch)
    chunked = jax.jit(lambda p, b: tdjax.per_example_grads(loss_fn, p, b, chunk_size=chunk_size))(params, batch)
    np.testing.assert_allclose(_flat_rows(chunked), _flat_rows(full), rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------------
# gram_matrix (eq. 8) and the output reductions it is used with.


@pytest.mark.parametrize("jit, reduction", [(False, "max"), (True, "max"), (True, "mean"), (True, 1)])
def test_gram_matrix_matches_jacrev(jit, reduction):
    net, params, batch, _, _ = _mlp_problem()
    f = tdjax.scalar_output_fn(net.apply, reduction)
    xs_a, xs_b = batch["x"], batch["x"][:4] * 2.0
    jac = lambda xs: _flat_rows(jax.jacrev(lambda p: jax.vmap(lambda x: f(p, x))(xs))(params))  # noqa: E731
    ja, jb = jac(xs_a), jac(xs_b)
    gram = _maybe_jit(lambda p, a, b: tdjax.gram_matrix(f, p, a, b), jit)
    _assert_close(gram(params, xs_a, xs_b), ja @ jb.T, rtol=1e-5)
    sym = _maybe_jit(lambda p, a: tdjax.gram_matrix(f, p, a), jit)(params, xs_a)
    _assert_close(sym, ja @ ja.T, rtol=1e-5)
    np.testing.assert_array_equal(sym, sym.T)


def test_gram_matrix_taken_action_and_distributional_outputs():
    atoms = jnp.linspace(-1.0, 1.0, 5)
    net = MLP((8,), 3 * 5)
    params = jax.jit(net.init)(jax.random.PRNGKey(3), jnp.zeros((4,)))
    apply_fn = lambda p, x: net.apply(p, x).reshape(3, 5)  # noqa: E731  # [A, n_atoms] logits
    f = tdjax.scalar_output_fn(apply_fn, "action", distribution="categorical", atoms=atoms)
    xs = (_normal(np.random.default_rng(3), 5, 4), np.array([0, 2, 1, 1, 0]))

    def reference(p, x, a):
        probs = jax.nn.softmax(apply_fn(p, x), axis=-1)
        return jnp.sum(probs[a] * atoms)

    ref = _loop_grads(lambda p, xa: reference(p, *xa), params, xs)
    _assert_close(jax.jit(lambda p, x: tdjax.gram_matrix(f, p, x))(params, xs), ref @ ref.T, rtol=1e-5)


def test_gram_matrix_conv_net_matches_loop():
    net = TinyConv(out=3)
    params = jax.jit(net.init)(jax.random.PRNGKey(4), jnp.zeros((8, 8, 2)))
    xs = _normal(np.random.default_rng(4), 3, 8, 8, 2)
    f = tdjax.scalar_output_fn(net.apply, "max")
    loop = _loop_grads(f, params, xs)
    grads = jax.jit(lambda p, x: tdjax.per_example_grads(f, p, x, chunk_size=2))(params, xs)
    np.testing.assert_allclose(_flat_rows(grads), loop, rtol=1e-4, atol=1e-6)
    gram = jax.jit(lambda p, x: tdjax.gram_matrix(f, p, x))(params, xs)
    _assert_close(gram, loop @ loop.T, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------
# loss_interference (eq. 1) and stiffness.


@JIT
def test_loss_interference_and_stiffness_match_numpy(jit):
    _, params, batch, _, loss_fn = _mlp_problem(k=6, seed=1)
    batch_b = jax.tree.map(lambda x: -x[:4], batch)
    ga, gb = _loop_grads(loss_fn, params, batch), _loop_grads(loss_fn, params, batch_b)
    rho_ref = ga @ gb.T
    cos_ref = rho_ref / np.outer(np.linalg.norm(ga, axis=1), np.linalg.norm(gb, axis=1))

    rho = _maybe_jit(lambda p, a, b: tdjax.loss_interference(loss_fn, p, a, b), jit)(params, batch, batch_b)
    _assert_close(rho, rho_ref, rtol=1e-5)
    cos = _maybe_jit(lambda p, a, b: tdjax.stiffness(loss_fn, p, a, b), jit)(params, batch, batch_b)
    _assert_close(cos, cos_ref, rtol=1e-5)
    sign = _maybe_jit(lambda p, a, b: tdjax.stiffness(loss_fn, p, a, b, sign=True), jit)(params, batch, batch_b)
    np.testing.assert_array_equal(sign, np.sign(rho_ref))

    rho_aa = _maybe_jit(lambda p, a: tdjax.loss_interference(loss_fn, p, a), jit)(params, batch)
    _assert_close(rho_aa, ga @ ga.T, rtol=1e-5)
    cos_aa = _maybe_jit(lambda p, a: tdjax.stiffness(loss_fn, p, a), jit)(params, batch)
    np.testing.assert_allclose(np.diag(cos_aa), 1.0, rtol=1e-6)


def test_loss_interference_is_first_order_loss_change():
    """App. A eq. 26: J_θ′(A) − J_θ(A) ≈ −α ρ_AB after a gradient step on B."""
    with jax.enable_x64(True):
        params, batch = _value_params(0), _transitions(1, 5)
        rho = jax.jit(lambda p, b: tdjax.loss_interference(regression_loss, p, b))(params, batch)
        alpha = 1e-6

        @jax.jit
        def loss_change(ex_b):
            moved = jax.tree.map(lambda p, d: p - alpha * d, params, jax.grad(regression_loss)(params, ex_b))
            losses = lambda p: jax.vmap(regression_loss, (None, 0))(p, batch)  # noqa: E731
            return (losses(moved) - losses(params)) / alpha

        for j in range(5):
            np.testing.assert_allclose(loss_change(_take(batch, j)), -rho[:, j], rtol=1e-4, atol=1e-8)


# ----------------------------------------------------------------------------------------------------
# interference_derivative (eq. 14, 36) against finite differences.


def _semi_grad(loss3):
    return lambda p, ex: jax.grad(loss3)(p, ex, p)


def _fd_rho_prime(semi_grad, params, batch_a, batch_b, h=1e-6):
    """Central differences over α of ρ(α)ᵢⱼ = g(θ′, aᵢ)·g(θ′, bⱼ), θ′ = θ − α g(θ, bⱼ).

    Pair by pair; g is the (semi-)gradient of one example.
    """
    flat_grad = jax.jit(lambda p, ex: ravel_pytree(semi_grad(p, ex))[0])

    @jax.jit
    def moved(alpha, v):
        return jax.tree.map(lambda p, d: p - alpha * d, params, v)

    out = np.zeros((_k(batch_a), _k(batch_b)))
    for j in range(_k(batch_b)):
        ex_b = _take(batch_b, j)
        v = semi_grad(params, ex_b)

        def rho(alpha):
            theta = moved(alpha, v)
            gb = np.asarray(flat_grad(theta, ex_b))
            return np.array([np.asarray(flat_grad(theta, _take(batch_a, i))) @ gb for i in range(_k(batch_a))])

        out[:, j] = (rho(h) - rho(-h)) / (2 * h)
    return out


def test_interference_derivative_regression_matches_finite_differences():
    with jax.enable_x64(True):
        params, batch_a, batch_b = _value_params(2), _transitions(3, 4), _transitions(4, 3)
        fd = _fd_rho_prime(_semi_grad(lambda p, ex, t: regression_loss(p, ex)), params, batch_a, batch_b)
        fn = jax.jit(lambda p, a, b: tdjax.interference_derivative(regression_loss, p, a, b))
        rho_prime = fn(params, batch_a, batch_b)
        assert rho_prime.shape == (4, 3) and rho_prime.dtype == jnp.float64
        np.testing.assert_allclose(rho_prime, fd, rtol=1e-6, atol=1e-8)


def test_interference_derivative_matches_eq14_with_explicit_hessians():
    """Eq. 14: ρ′ = −(∇J_Bᵀ H_A + ∇J_Aᵀ H_B) ∇J_B with H = ∇θ²J formed explicitly."""
    with jax.enable_x64(True):
        params, batch_a, batch_b = _value_params(2), _transitions(3, 4), _transitions(4, 3)
        rho_prime = jax.jit(lambda p, a, b: tdjax.interference_derivative(regression_loss, p, a, b))(
            params, batch_a, batch_b
        )
        flat, unravel = ravel_pytree(params)
        loss_flat = lambda w, ex: regression_loss(unravel(w), ex)  # noqa: E731
        grad, hessian = jax.jit(jax.grad(loss_flat)), jax.jit(jax.hessian(loss_flat))
        for i in range(4):
            for j in range(3):
                ea, eb = _take(batch_a, i), _take(batch_b, j)
                ga, gb = grad(flat, ea), grad(flat, eb)
                ha, hb = hessian(flat, ea), hessian(flat, eb)
                np.testing.assert_allclose(rho_prime[i, j], -(gb @ ha + ga @ hb) @ gb, rtol=1e-8, atol=1e-10)


@JIT
def test_interference_derivative_td_moving_target_matches_finite_differences(jit):
    with jax.enable_x64(True):
        params, batch_a, batch_b = _value_params(5), _transitions(6, 4), _transitions(7, 3)
        fd_moving = _fd_rho_prime(_semi_grad(td_loss3), params, batch_a, batch_b)
        moving = _maybe_jit(
            lambda p, a, b: tdjax.interference_derivative(td_loss3, p, a, b, moving_target=True), jit
        )(params, batch_a, batch_b)
        np.testing.assert_allclose(moving, fd_moving, rtol=1e-6, atol=1e-8)

        # The stop_gradient pitfall: a two-argument loss sees the target as frozen at θ, which is the
        # finite difference with the target parameters held at θ, and differs from the moving target.
        frozen = _maybe_jit(lambda p, a, b: tdjax.interference_derivative(td_loss_stop_gradient, p, a, b), jit)(
            params, batch_a, batch_b
        )
        fd_frozen = _fd_rho_prime(lambda p, ex: jax.grad(td_loss3)(p, ex, params), params, batch_a, batch_b)
        np.testing.assert_allclose(frozen, fd_frozen, rtol=1e-6, atol=1e-8)
        assert np.max(np.abs(moving - frozen)) > 1e-3 * np.max(np.abs(moving))


def test_interference_derivative_conv_net_matches_finite_differences():
    with jax.enable_x64(True):
        net = TinyConv()
        params = jax.jit(net.init)(jax.random.PRNGKey(8), jnp.zeros((6, 6, 1)))
        params = jax.tree.map(lambda x: np.asarray(x, np.float64), params)  # flax inits in float32
        rng = np.random.default_rng(8)
        batch_a = {"x": rng.standard_normal((2, 6, 6, 1)), "y": rng.standard_normal(2)}
        batch_b = {"x": rng.standard_normal((2, 6, 6, 1)), "y": rng.standard_normal(2)}
        loss = lambda p, ex: 0.5 * (net.apply(p, ex["x"]) - ex["y"]) ** 2  # noqa: E731
        fd = _fd_rho_prime(_semi_grad(lambda p, ex, t: loss(p, ex)), params, batch_a, batch_b)
        rho_prime = jax.jit(lambda p, a, b: tdjax.interference_derivative(loss, p, a, b, chunk_size=1))(
            params, batch_a, batch_b
        )
        np.testing.assert_allclose(rho_prime, fd, rtol=1e-6, atol=1e-8)


# ----------------------------------------------------------------------------------------------------
# interference_derivative_terms (eq. 16, 17).


def _explicit_terms(target_fn, params, batch_a, batch_b):
    """r1, r2, r3 from flattened gradients and explicit Hessians of f, pair by pair."""
    flat, unravel = ravel_pytree(params)
    f = lambda w, ex: value_fn(unravel(w), ex)  # noqa: E731
    y = lambda w, ex: target_fn(unravel(w), ex)  # noqa: E731

    @jax.jit
    def local(ex):  # δ, ∇f, ∇y, H̄ of one example
        return f(flat, ex) - y(flat, ex), jax.grad(f)(flat, ex), jax.grad(y)(flat, ex), jax.hessian(f)(flat, ex)

    ka, kb = _k(batch_a), _k(batch_b)
    r = np.zeros((3, ka, kb))
    for i in range(ka):
        for j in range(kb):
            (d_a, fa, ya, ha), (d_b, fb, yb, hb) = local(_take(batch_a, i)), local(_take(batch_b, j))
            r[0, i, j] = d_b**2 * (fa @ fb) * (fa @ fb - ya @ fb)
            r[1, i, j] = d_a * d_b * (fa @ fb) * (fb @ fb - yb @ fb)
            r[2, i, j] = d_a * d_b**2 * fb @ (ha @ fb + hb @ fa)
    return r


@pytest.mark.parametrize("jit, target", [(False, "td"), (True, "td"), (True, "regression")])
def test_interference_derivative_terms(jit, target):
    target_fn = {"regression": regression_target_fn, "td": td_target_fn}[target]
    with jax.enable_x64(True):
        params, batch_a, batch_b = _value_params(9), _transitions(10, 4), _transitions(11, 3)
        terms = _maybe_jit(
            lambda p, a, b: tdjax.interference_derivative_terms(value_fn, target_fn, p, a, b), jit
        )(params, batch_a, batch_b)
        assert isinstance(terms, tdjax.InterferenceDerivativeTerms)
        explicit = _explicit_terms(target_fn, params, batch_a, batch_b)
        np.testing.assert_allclose(np.stack(terms), explicit, rtol=1e-8, atol=1e-10)

        loss3 = lambda p, ex, t: 0.5 * (value_fn(p, ex) - target_fn(t, ex)) ** 2  # noqa: E731
        rho_prime = jax.jit(lambda p, a, b: tdjax.interference_derivative(loss3, p, a, b, moving_target=True))(
            params, batch_a, batch_b
        )
        np.testing.assert_allclose(terms.r1 + terms.r2 + terms.r3, -rho_prime, rtol=1e-8, atol=1e-10)
        # Eq. 16 as printed (2·r2) would not sum to −ρ′.
        assert not np.allclose(terms.r1 + 2 * terms.r2 + terms.r3, -rho_prime, rtol=1e-3)


def test_interference_derivative_terms_td_with_zero_discount_is_regression():
    """Eq. 17 at γ = 0 must equal eq. 16 with y = r."""
    with jax.enable_x64(True):
        params, batch_a, batch_b = _value_params(12), _transitions(13, 3), _transitions(14, 3)
        zero = lambda b: {**b, "discount_t": jnp.zeros_like(b["discount_t"]), "y": b["r_t"]}  # noqa: E731
        terms = lambda target_fn: jax.jit(  # noqa: E731
            lambda p, a, b: tdjax.interference_derivative_terms(value_fn, target_fn, p, a, b)
        )(params, zero(batch_a), zero(batch_b))
        td, reg = terms(td_target_fn), terms(regression_target_fn)
        for a, b in zip(td, reg):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------------------
# Chunking never changes a result.


def test_chunk_size_does_not_change_results():
    params, batch_a, batch_b = _value_params(15), _transitions(16, 5), _transitions(17, 4)
    f = lambda p, ex: value_fn(p, ex)  # noqa: E731
    calls = {
        "gram": lambda c: tdjax.gram_matrix(f, params, batch_a, batch_b, chunk_size=c),
        "rho_prime": lambda c: tdjax.interference_derivative(
            td_loss3, params, batch_a, batch_b, moving_target=True, chunk_size=c
        ),
        "terms": lambda c: jnp.stack(
            tdjax.interference_derivative_terms(value_fn, td_target_fn, params, batch_a, batch_b, chunk_size=c)
        ),
    }
    for name, call in calls.items():
        # chunk_size=3 leaves a remainder on both batches (5 = 3 + 2, 4 = 3 + 1).
        chunked, full = jax.jit(lambda: call(3))(), jax.jit(lambda: call(None))()  # noqa: B023
        np.testing.assert_allclose(chunked, full, rtol=1e-5, atol=1e-5 * np.max(np.abs(full)), err_msg=name)


# ----------------------------------------------------------------------------------------------------
# td_sign_variance (§5.2).


def _sign_variance_loop(td, window):
    td = np.asarray(td)
    return np.stack([np.var(np.sign(td[t : t + window]), axis=0) for t in range(td.shape[0] - window + 1)])


@JIT
@pytest.mark.parametrize("window", [1, 2, 5])
def test_td_sign_variance_matches_numpy_loop(jit, window):
    td = _normal(np.random.default_rng(18), 12, 3)
    td[4, 1] = 0.0  # sign(0) = 0
    out = _maybe_jit(lambda x: tdjax.td_sign_variance(x, window=window), jit)(td)
    assert out.shape == (12 - window + 1, 3)
    np.testing.assert_allclose(out, _sign_variance_loop(td, window), atol=1e-6)
    np.testing.assert_allclose(
        tdjax.td_sign_variance(td[:, 0], window=window), _sign_variance_loop(td[:, 0], window), atol=1e-6
    )


def test_td_sign_variance_paper_footnote_example():
    """§5.2 fn. 4: V = [1..6] has constant TD errors, V = [1, 2, 1, 2, 1, 2] alternating ones."""
    steady = -np.diff(np.array([1.0, 2, 3, 4, 5, 6]))  # δ_t = V(s_t) − V(s_{t+1}), γ = 1, r = 0
    zigzag = -np.diff(np.array([1.0, 2, 1, 2, 1, 2]))
    np.testing.assert_allclose(tdjax.td_sign_variance(steady, window=5), [0.0])
    np.testing.assert_allclose(tdjax.td_sign_variance(zigzag, window=5), [1.0 - 0.2**2])


def test_td_sign_variance_errors():
    with pytest.raises(ValueError, match="td_errors"):
        tdjax.td_sign_variance(jnp.array(1.0))
    with pytest.raises(ValueError, match="window"):
        tdjax.td_sign_variance(jnp.zeros(4), window=0)
    with pytest.raises(ValueError, match="window"):
        tdjax.td_sign_variance(jnp.zeros(4), window=5)


# ----------------------------------------------------------------------------------------------------
# Bad inputs fail at trace time and name the argument.


def test_errors_name_the_argument():
    params = _value_params(19)
    batch = _transitions(20, 4)
    bad_k = {**batch, "y": jnp.zeros(5)}
    vector_loss = lambda p, ex: jnp.stack([regression_loss(p, ex)] * 2)  # noqa: E731

    with pytest.raises(ValueError, match="`loss_fn`"):
        tdjax.per_example_grads(vector_loss, params, batch)
    with pytest.raises(ValueError, match="`loss_fn`"):
        jax.jit(lambda p, b: tdjax.per_example_grads(vector_loss, p, b))(params, batch)
    with pytest.raises(ValueError, match="`batch`"):
        tdjax.per_example_grads(regression_loss, params, bad_k)
    with pytest.raises(ValueError, match="`f`"):
        tdjax.gram_matrix(lambda p, ex: jnp.zeros(3), params, batch)
    with pytest.raises(ValueError, match="`xs_b`"):
        tdjax.gram_matrix(value_fn, params, batch, bad_k)
    with pytest.raises(ValueError, match="`batch_a`"):
        tdjax.loss_interference(regression_loss, params, bad_k, batch)
    with pytest.raises(ValueError, match="`batch_a` and `batch_b`"):
        tdjax.stiffness(regression_loss, params, batch, {"s_tm1": batch["s_tm1"]})
    with pytest.raises(ValueError, match="`loss_fn`"):
        tdjax.interference_derivative(vector_loss, params, batch, batch)
    with pytest.raises(ValueError, match="`batch_b`"):
        tdjax.interference_derivative(regression_loss, params, batch, bad_k)
    with pytest.raises(ValueError, match="moving_target=True"):
        tdjax.interference_derivative(regression_loss, params, batch, batch, moving_target=True)
    with pytest.raises(ValueError, match="moving_target=False"):
        tdjax.interference_derivative(td_loss3, params, batch, batch)
    with pytest.raises(ValueError, match="`target_fn`"):
        tdjax.interference_derivative_terms(value_fn, lambda p, ex: jnp.ones(2), params, batch, batch)
    with pytest.raises(ValueError, match="`value_fn`"):
        tdjax.interference_derivative_terms(vector_loss, td_target_fn, params, batch, batch)
    with pytest.raises(ValueError, match="`chunk_size`"):
        tdjax.per_example_grads(regression_loss, params, batch, chunk_size=0)
    with pytest.raises(ValueError, match="`method`"):
        tdjax.per_example_grads(regression_loss, params, batch, method="layerwise-typo")


# ----------------------------------------------------------------------------------------------------
# Non-finite gradients are surfaced.


def _nan_grad_loss(p, ex):
    # d/dθ sqrt(u) at u = 0 is inf, and 0·inf = NaN in the chain rule: example 0 has a NaN gradient.
    return jnp.sqrt(ex["y"] ** 2 * (value_fn(p, ex) - ex["y"]) ** 2)


def test_non_finite_gradients_propagate_and_checkify_catches_them():
    params, batch = _value_params(21), _transitions(22, 4)
    batch["y"][0] = 0.0
    grads = jax.jit(lambda p, b: tdjax.per_example_grads(_nan_grad_loss, p, b))(params, batch)
    rows = _flat_rows(grads)
    assert not np.all(np.isfinite(rows[0])) and np.all(np.isfinite(rows[1:]))

    rho = jax.jit(lambda p, b: tdjax.loss_interference(_nan_grad_loss, p, b))(params, batch)
    assert np.all(np.isnan(rho[0])) and np.all(np.isnan(rho[:, 0]))
    assert np.all(np.isfinite(rho[1:, 1:]))  # only pairs with the bad example are affected
    assert np.all(np.isnan(jax.jit(lambda p, b: tdjax.stiffness(_nan_grad_loss, p, b))(params, batch)[0]))

    interference = jax.jit(lambda p, b: tdjax.loss_interference(_nan_grad_loss, p, b, chunk_size=2))
    checked = checkify.checkify(interference, errors=checkify.float_checks)
    err, _ = checked(params, batch)
    assert err.get() is not None  # "division by zero" (inside sqrt's derivative) or "nan generated"
    batch["y"][0] = 1.0
    err, _ = checked(params, batch)
    assert err.get() is None


def test_stiffness_of_a_zero_gradient_is_nan():
    params, batch = _value_params(23), _transitions(24, 3)
    batch["w"] = np.array([1.0, 0.0, 1.0])  # a zero gradient at example 1
    weighted_loss = lambda p, ex: ex["w"] * regression_loss(p, ex)  # noqa: E731
    cos = jax.jit(lambda p, b: tdjax.stiffness(weighted_loss, p, b))(params, batch)
    assert np.all(np.isnan(cos[1])) and np.all(np.isfinite(np.delete(np.delete(cos, 1, 0), 1, 1)))
