"""Tests for tdjax.dynamics against independent references (SciPy expm, NumPy loops, linear models)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sl

import tdjax


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _maybe_jit(fn, use_jit):
    return jax.jit(fn) if use_jit else fn


def _dense_nonsymmetric(n, seed):
    """A dense random row-stochastic matrix: non-normal, with complex eigenvalue pairs."""
    rng = np.random.default_rng(seed)
    A = rng.random((n, n)) ** 3
    return A / A.sum(1, keepdims=True)


def _symmetric_doubly_stochastic(n, seed):
    rng = np.random.default_rng(seed)
    A = np.zeros((n, n))
    for w in rng.dirichlet(np.ones(4)):
        A += w * np.eye(n)[rng.permutation(n)]
    return (A + A.T) / 2


N = 12  # one size for most tests: compiled functions are reused across tests


def _problem(kind, n=N, seed=0):
    P = _dense_nonsymmetric(n, seed) if kind == "nonsymmetric" else _symmetric_doubly_stochastic(n, seed)
    rng = np.random.default_rng(seed + 100)
    return P, rng.standard_normal(n), rng.standard_normal(n)


def _expm_reference(P, r, gamma, v0, ts):
    A = np.eye(len(r)) - gamma * P
    v_pi = np.linalg.solve(A, r)
    return np.stack([sl.expm(-t * A) @ (v0 - v_pi) + v_pi for t in ts])


def _numpy_euler(field, v0, h, num_steps):
    out = [np.array(v0, dtype=np.float64)]
    for _ in range(num_steps):
        out.append(out[-1] + h * field(out[-1]))
    return np.stack(out)


# ------------------------------------------------------------------------------------------------
# Eigendecomposition
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_jit", [False, True])
def test_eigendecompose_nonsymmetric_complex_spectrum(use_jit):
    P = _dense_nonsymmetric(20, 1)
    dec = _maybe_jit(lambda P: tdjax.eigendecompose(P, symmetric=False), use_jit)(P)
    lam, R, L = map(np.asarray, (dec.eigenvalues, dec.right, dec.left))
    assert np.sum(np.abs(lam.imag) > 1e-8) >= 2  # the test is meaningful: complex pairs exist
    np.testing.assert_allclose(P @ R, R * lam[None, :], atol=1e-10)
    np.testing.assert_allclose(L @ R, np.eye(20), atol=1e-10)
    assert np.all(np.diff(lam.real) <= 1e-12)  # sorted: smoothest (largest real part) first
    np.testing.assert_allclose(lam[0], 1.0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(R, axis=0), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.sort_complex(lam), np.sort_complex(np.linalg.eigvals(P)), atol=1e-10)
    assert float(dec.condition) < 1e6


def test_eigendecompose_symmetric_is_orthonormal_and_detected():
    P = _symmetric_doubly_stochastic(16, 2)
    dec = tdjax.eigendecompose(P)  # symmetry detected on the concrete input
    R = np.asarray(dec.right)
    np.testing.assert_allclose(R.conj().T @ R, np.eye(16), atol=1e-12)
    np.testing.assert_allclose(np.asarray(dec.eigenvalues).imag, 0.0)


def test_eigen_coefficients_use_the_dual_basis():
    P = _dense_nonsymmetric(15, 3)
    v = np.random.default_rng(0).standard_normal((4, 15))
    dec = tdjax.eigendecompose(P)
    alpha = np.asarray(tdjax.eigen_coefficients(dec, v))
    R = np.asarray(dec.right)
    np.testing.assert_allclose(alpha, np.linalg.solve(R, v.T).T, atol=1e-10)
    np.testing.assert_allclose((alpha @ R.T).real, v, atol=1e-10)
    # An orthogonal projection would give different numbers for this non-normal P.
    assert np.abs(alpha - v @ R.conj()).max() > 1e-3


def test_eigen_projection_kernel_and_expected_variation():
    P, r = tdjax.random_walk_mdp(N, seed=4)
    dec = tdjax.eigendecompose(P)
    v = np.random.default_rng(1).standard_normal(N)
    np.testing.assert_allclose(tdjax.eigen_projection(dec, v, jnp.arange(N)), v, atol=1e-10)
    top, bottom = tdjax.eigen_projection(dec, v, jnp.arange(5)), tdjax.eigen_projection(dec, v, jnp.arange(5, N))
    np.testing.assert_allclose(top + bottom, v, atol=1e-10)
    K = np.asarray(tdjax.eigen_kernel(dec, jnp.arange(5)))
    R = np.asarray(dec.right)[:, :5].real  # undirected random walk: real eigenvectors
    np.testing.assert_allclose(K, R @ R.T, atol=1e-12)
    assert np.linalg.eigvalsh(K).min() > -1e-10
    # eq. 8: the expected variation of an eigenvector is Σ|(1 − λ)v(x)|.
    rho = np.asarray(tdjax.expected_variation(P, np.asarray(dec.right).T))
    lam = np.asarray(dec.eigenvalues)
    np.testing.assert_allclose(rho, np.abs(1 - lam) * np.abs(np.asarray(dec.right)).sum(0), rtol=1e-8, atol=1e-12)
    assert rho[0] < 1e-10 and rho[-1] > rho[1]


def test_rbf_kernel_against_numpy():
    x = np.random.default_rng(2).standard_normal((7, 2))
    K = np.asarray(tdjax.rbf_kernel(x, 0.7))
    ref = np.exp(-((x[:, None, :] - x[None, :, :]) ** 2).sum(-1) / (2 * 0.7**2))
    np.testing.assert_allclose(K, ref, atol=1e-12)
    np.testing.assert_allclose(tdjax.rbf_kernel(np.arange(5.0), 1.0, np.arange(3.0)).shape, (5, 3))


# ------------------------------------------------------------------------------------------------
# Tabular TD / MC closed forms (eq. 9–10)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind,method,use_jit",
    [("nonsymmetric", "eig", False), ("symmetric", "eig", False), ("nonsymmetric", "krylov", False),
     ("symmetric", "krylov", False), ("nonsymmetric", "expm", False),
     ("nonsymmetric", "eig", True), ("nonsymmetric", "krylov", True)],
)
def test_td_trajectory_matches_scipy_expm(kind, method, use_jit):
    P, r, v0 = _problem(kind)
    gamma, ts = 0.95, np.linspace(0.0, 40.0, 5)[::-1]  # unsorted times are fine
    fn = _maybe_jit(lambda P, r, v0, ts: tdjax.td_value_trajectory(P, r, gamma, v0, ts, method=method), use_jit)
    V = np.asarray(fn(P, r, v0, ts))
    ref = _expm_reference(P, r, gamma, v0, ts)
    np.testing.assert_allclose(V, ref, rtol=0, atol=1e-10 * np.abs(ref).max())


@pytest.mark.parametrize("kind", ["nonsymmetric", "symmetric"])
def test_td_trajectory_matches_small_step_euler(kind):
    P, r, v0 = _problem(kind, seed=5)
    gamma, h, steps = 0.9, 1e-3, 3000
    ts = h * np.arange(0, steps + 1, 750)
    euler = _numpy_euler(lambda v: r + gamma * P @ v - v, v0, h, steps)[::750]
    V = np.asarray(tdjax.td_value_trajectory(P, r, gamma, v0, ts))
    np.testing.assert_allclose(V, euler, atol=2e-3 * np.abs(euler).max())  # Euler error is O(h)
    ours = np.asarray(tdjax.td_euler_trajectory(P, r, gamma, v0, h, steps))[::750]
    np.testing.assert_allclose(ours, euler, atol=1e-10)


def test_td_closure_is_a_reusable_pytree():
    P, r, _ = _problem("nonsymmetric", seed=5)
    gamma, ts = 0.9, np.linspace(0, 3, 5)
    dyn = tdjax.td_dynamics(P, r, gamma)
    np.testing.assert_allclose(dyn.v_pi, np.linalg.solve(np.eye(N) - gamma * P, r), atol=1e-12)
    # jit it, and vmap it over initial values.
    v0s = np.random.default_rng(0).standard_normal((3, N))
    batched = jax.jit(jax.vmap(lambda d, v: d(v, ts), in_axes=(None, 0)))(dyn, v0s)
    for k in range(3):
        np.testing.assert_allclose(batched[k], _expm_reference(P, r, gamma, v0s[k], ts), atol=1e-10)


def test_mc_trajectory_against_euler():
    rng = np.random.default_rng(0)
    v_pi, v0 = rng.standard_normal(9), rng.standard_normal(9)
    ts = np.linspace(0, 3, 4)
    V = np.asarray(jax.jit(tdjax.mc_value_trajectory)(v_pi, v0, ts))
    np.testing.assert_allclose(V, v_pi + np.exp(-ts)[:, None] * (v0 - v_pi), atol=1e-14)
    euler = _numpy_euler(lambda v: v_pi - v, v0, 1e-3, 3000)[::1000]
    np.testing.assert_allclose(V, euler, atol=2e-3)
    np.testing.assert_allclose(tdjax.mc_euler_trajectory(v_pi, v0, 1e-3, 3000)[::1000], euler, atol=1e-12)


def test_large_time_grid_krylov_against_expm():
    """A long horizon and γ near 1 (slow λ = 1 mode) on a random directed graph."""
    P, r = tdjax.random_walk_mdp(N, directed=True, seed=7)
    v0 = np.zeros(N)
    ts = np.linspace(0.0, 400.0, 5)
    V = np.asarray(tdjax.td_value_trajectory(P, r, 0.99, v0, ts, method="krylov"))
    ref = _expm_reference(P, r, 0.99, v0, ts)
    np.testing.assert_allclose(V, ref, atol=1e-9 * np.abs(ref).max())


# ------------------------------------------------------------------------------------------------
# Obs. 4.1 and Thm 4.1
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["nonsymmetric", "symmetric"])
def test_observation_4_1_coefficient_errors(kind):
    P, r, v0 = _problem(kind, seed=2)
    gamma, ts = 0.9, np.array([0.0, 0.5, 3.0, 10.0, 20.0])
    dyn = tdjax.td_dynamics(P, r, gamma)
    errs = np.asarray(dyn.coefficient_errors(v0, ts))
    R = np.asarray(dyn.decomposition.right)
    ref_v = _expm_reference(P, r, gamma, v0, ts)
    v_pi = np.linalg.solve(np.eye(N) - gamma * P, r)
    ref = np.linalg.solve(R, (ref_v - v_pi).T).T  # coefficients of Vₜ − Vπ, independently
    np.testing.assert_allclose(errs, ref, atol=1e-10)
    # Components with smaller Re λ (less smooth) converge faster.
    rate = np.asarray(dyn.rates).real
    assert np.all(np.diff(rate) >= -1e-12)


def test_theorem_4_1_bound_holds_nonsymmetric():
    P, r, _ = _problem("nonsymmetric", seed=8)
    gamma = 0.9
    dyn = tdjax.td_dynamics(P, r, gamma)
    vs = np.random.default_rng(3).standard_normal((50, N)) * 3
    td = np.asarray(tdjax.td_error(P, r, gamma, vs))
    resid = r + gamma * vs @ P.T - vs
    np.testing.assert_allclose(td, (resid**2).sum(-1), rtol=1e-12)
    bound = np.asarray(tdjax.td_error_bound(P, r, gamma, vs, dynamics=dyn))
    assert np.all(td <= bound * (1 + 1e-10))
    # eq. 12 is an identity.
    lam = np.asarray(dyn.decomposition.eigenvalues)
    diff = np.asarray(dyn.coefficients(dyn.v_pi)) - np.asarray(dyn.coefficients(vs))
    eq12 = np.linalg.norm((diff * (1 - gamma * lam)) @ np.asarray(dyn.decomposition.right).T, axis=-1) ** 2
    np.testing.assert_allclose(td, eq12, rtol=1e-8)


def test_theorem_4_1_equality_for_symmetric_P_along_a_trajectory():
    P, r, v0 = _problem("symmetric", seed=9)
    gamma, ts = 0.8, np.linspace(0, 5, 5)
    V = np.asarray(tdjax.td_value_trajectory(P, r, gamma, v0, ts))
    td = np.asarray(tdjax.td_error(P, r, gamma, V))
    np.testing.assert_allclose(tdjax.td_error_bound(P, r, gamma, V), td, rtol=1e-9)
    np.testing.assert_allclose(tdjax.td_error_bound(P, r, gamma, V, paper_form=True), td, rtol=1e-9)


def test_theorem_4_1_printed_form_can_fail_for_non_normal_P():
    """eq. 13 as printed (no ‖W‖₂² factor) is violated by a V aligned with W's top singular vector."""
    P, r = tdjax.random_walk_mdp(N, seed=2)  # reversible, real spectrum, non-orthogonal eigenvectors
    gamma = 0.9
    dyn = tdjax.td_dynamics(P, r, gamma)
    R = np.asarray(dyn.decomposition.right)
    _, s, vh = np.linalg.svd(R)
    v = (np.asarray(dyn.v_pi) - R @ (vh[0].conj() / np.asarray(dyn.rates))).real
    td = float(tdjax.td_error(P, r, gamma, v))
    assert td > 1.5 * float(tdjax.td_error_bound(P, r, gamma, v, dynamics=dyn, paper_form=True))
    np.testing.assert_allclose(td, float(tdjax.td_error_bound(P, r, gamma, v, dynamics=dyn)), rtol=1e-8)
    np.testing.assert_allclose(td, s[0] ** 2, rtol=1e-8)


# ------------------------------------------------------------------------------------------------
# Fallbacks
# ------------------------------------------------------------------------------------------------


_DEFECTIVE_P = np.eye(N, k=1) + np.diag(np.eye(N)[-1])  # a path into an absorbing state: Jordan block at 0
_R_END = np.eye(N)[-1]


@pytest.mark.parametrize("use_jit", [False, True])
def test_defective_P_falls_back_with_a_warning(use_jit):
    r, v0, ts = _R_END, np.zeros(N), np.linspace(0, 6, 5)
    fn = _maybe_jit(lambda P, r, v0, ts: tdjax.td_value_trajectory(P, r, 0.9, v0, ts, method="eig"), use_jit)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        V = np.asarray(fn(_DEFECTIVE_P, r, v0, ts))
    messages = [str(w.message) for w in caught if issubclass(w.category, tdjax.NumericalFallbackWarning)]
    assert any("badly conditioned or defective" in m for m in messages), messages
    np.testing.assert_allclose(V, _expm_reference(_DEFECTIVE_P, r, 0.9, v0, ts), atol=1e-12)
    assert bool(tdjax.td_dynamics(_DEFECTIVE_P, r, 0.9).fallback)
    with pytest.warns(tdjax.NumericalFallbackWarning, match="eigen-coefficients are unreliable"):
        tdjax.td_dynamics(_DEFECTIVE_P, r, 0.9).coefficient_errors(v0, ts)
    assert np.abs(V[-1]).max() > 1e-3  # the reward at the end of the path has propagated


def test_krylov_that_cannot_converge_falls_back_to_expm():
    r, v0, ts = _R_END, np.zeros(N), np.linspace(0, 6, 5)
    with pytest.warns(tdjax.NumericalFallbackWarning, match="Krylov integrator stopped"):
        V = tdjax.td_value_trajectory(_DEFECTIVE_P, r, 0.9, v0, ts, method="krylov", krylov_dim=2, max_restarts=1)
    np.testing.assert_allclose(V, _expm_reference(_DEFECTIVE_P, r, 0.9, v0, ts), atol=1e-12)


def test_well_conditioned_P_does_not_warn():
    P, r, v0 = _problem("nonsymmetric")
    with warnings.catch_warnings():
        warnings.simplefilter("error", tdjax.NumericalFallbackWarning)
        tdjax.td_value_trajectory(P, r, 0.9, v0, np.linspace(0, 1, 5))


# ------------------------------------------------------------------------------------------------
# Kernel TD / MC with a train/test split (eq. 14–16, 50–56)
# ------------------------------------------------------------------------------------------------


def _linear_model_problem(n=N, d=5, seed=0):
    rng = np.random.default_rng(seed)
    P = _dense_nonsymmetric(n, seed)
    r = rng.standard_normal(n)
    phi = rng.standard_normal((n, d)) / np.sqrt(d)
    w0 = rng.standard_normal(d) * 0.1
    mask = np.zeros(n, bool)
    mask[rng.permutation(n)[: n * 2 // 3]] = True
    return P, r, phi, w0, mask


@pytest.mark.parametrize("use_jit", [False, True])
def test_kernel_td_matches_semi_gradient_updates_of_a_linear_model(use_jit):
    P, r, phi, w0, mask = _linear_model_problem()
    gamma, lr, steps = 0.9, 1e-3, 4000
    w, saved = w0.copy(), []
    for k in range(steps + 1):
        if k % 1000 == 0:
            saved.append(phi @ w)
        v = phi @ w
        delta = (r + gamma * P @ v - v)[mask]
        w = w + lr * phi[mask].T @ delta  # semi-gradient TD on training states only
    saved = np.stack(saved)
    K, v0, ts = phi @ phi.T, phi @ w0, lr * np.arange(0, steps + 1, 1000)
    fn = _maybe_jit(lambda K, P, r, m, v0, ts: tdjax.kernel_td_trajectory(K, P, r, gamma, m, v0, ts), use_jit)
    V = np.asarray(fn(K, P, r, mask, v0, ts))
    scale = np.abs(saved - v0).max()
    np.testing.assert_allclose(V, saved, atol=2e-3 * scale)  # O(lr) discretisation error
    euler = np.asarray(tdjax.kernel_td_euler_trajectory(K, P, r, gamma, mask, v0, lr, steps))[::1000]
    np.testing.assert_allclose(euler, saved, atol=1e-10)  # same discrete updates exactly
    assert np.abs(V[-1][~mask] - v0[~mask]).max() > 1e-2  # test states did move, through K(X_test, X_train)


@pytest.mark.parametrize("method", ["eig", "krylov", "expm"])
def test_kernel_td_methods_agree_and_follow_eq_51(method):
    P, r, phi, w0, mask = _linear_model_problem(d=N, seed=1)  # K(X_train, X_train) invertible
    K, v0, gamma, ts = phi @ phi.T + 0.1 * np.eye(N), phi @ w0, 0.95, np.linspace(0, 8, 5)
    V = np.asarray(tdjax.kernel_td_trajectory(K, P, r, gamma, mask, v0, ts, method=method))
    euler = np.asarray(tdjax.kernel_td_euler_trajectory(K, P, r, gamma, mask, v0, 2e-4, 40000))[::10000]
    np.testing.assert_allclose(V, euler, atol=2e-3 * np.abs(euler - v0).max())
    # eq. 51: test predictions are slaved to training predictions through κ K̃⁻¹.
    tr, te = mask, ~mask
    G = K[np.ix_(te, tr)] @ np.linalg.inv(K[np.ix_(tr, tr)])
    np.testing.assert_allclose((V - v0)[:, te], (V - v0)[:, tr] @ G.T, atol=1e-8 * np.abs(V).max())


def test_kernel_td_closed_form_against_expm_of_the_full_system():
    P, r, phi, w0, mask = _linear_model_problem(seed=3)
    K, v0, gamma, ts = phi @ phi.T, phi @ w0, 0.9, np.linspace(0, 10, 5)
    D = np.diag(mask.astype(float))
    # ∂V = KD(r + γPV − V) as an affine system, exponentiated with an extra constant coordinate.
    M = np.zeros((N + 1, N + 1))
    M[:N, :N] = K @ D @ (gamma * P - np.eye(N))
    M[:N, N] = K @ D @ r
    ref = np.stack([(sl.expm(t * M) @ np.append(v0, 1.0))[:N] for t in ts])
    flow = tdjax.kernel_td_dynamics(K, P, r, gamma, mask)
    np.testing.assert_allclose(flow(v0, ts), ref, atol=1e-9 * np.abs(ref).max())
    np.testing.assert_allclose(tdjax.kernel_td_trajectory(K, P, r, gamma, mask, v0, ts), ref,
                               atol=1e-9 * np.abs(ref).max())


@pytest.mark.parametrize("method", ["eig", "krylov"])
def test_kernel_mc_against_scipy(method):
    P, r, phi, w0, mask = _linear_model_problem(d=N, seed=4)
    K = phi @ phi.T + 0.05 * np.eye(N)
    v_pi = np.linalg.solve(np.eye(N) - 0.9 * P, r)
    v0, ts = phi @ w0, np.linspace(0, 20, 5)
    V = np.asarray(tdjax.kernel_mc_trajectory(K, v_pi, mask, v0, ts, method=method))
    tr = mask
    Ktt = K[np.ix_(tr, tr)]
    d0 = (v_pi - v0)[tr]
    ref = np.stack([v0 + K[:, tr] @ np.linalg.solve(Ktt, d0 - sl.expm(-t * Ktt) @ d0) for t in ts])
    np.testing.assert_allclose(V, ref, atol=1e-9 * np.abs(ref).max())
    euler = np.asarray(tdjax.kernel_mc_euler_trajectory(K, v_pi, mask, v0, 4e-3, 5000))[::1250]
    np.testing.assert_allclose(V, euler, atol=5e-3 * np.abs(euler).max())


def test_kernel_td_on_the_circle_mdp_rbf_lengthscales():
    """Fig. 9 setting: the ℓ = 0.01 (identity) kernel on a 40-state path is defective, and still exact."""
    P, r = tdjax.circle_mdp(50, 25)
    mask, v0, ts = np.arange(50) < 40, np.zeros(50), np.linspace(0, 20, 5)
    for ell in (0.01, 1.0, 100.0):
        K = np.asarray(tdjax.rbf_kernel(np.arange(50.0), ell))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", tdjax.NumericalFallbackWarning)
            V = np.asarray(tdjax.kernel_td_trajectory(K, P, r, 0.5, mask, v0, ts))
        euler = np.asarray(tdjax.kernel_td_euler_trajectory(K, P, r, 0.5, mask, v0, 1e-3, 20000))[::5000]
        np.testing.assert_allclose(V, euler, atol=2e-3 * max(1.0, np.abs(euler).max()))
        if ell == 0.01:
            np.testing.assert_allclose(V[:, ~mask], 0.0, atol=1e-12)  # no interference: test states frozen


# ------------------------------------------------------------------------------------------------
# Obs. 4.2: the f₁ correction
# ------------------------------------------------------------------------------------------------


def _mlp_problem(seed=0, n=6):
    rng = np.random.default_rng(seed)
    P, r = tdjax.random_walk_mdp(n, directed=True, seed=3, edge_prob=0.5)
    states = rng.standard_normal((n, 3))
    params = {"W": rng.standard_normal((3, 8)) * 0.5, "b": np.zeros(8), "w": rng.standard_normal(8) * 0.5}
    params = jax.tree_util.tree_map(jnp.asarray, params)

    def apply_fn(p, x):
        return jnp.tanh(x @ p["W"] + p["b"]) @ p["w"]

    return apply_fn, params, states, P, r, 0.9


def _flat(tree):
    return np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)])


def test_semi_gradient_update_of_a_linear_model():
    rng = np.random.default_rng(0)
    P, r = tdjax.random_walk_mdp(N, directed=True, seed=1, edge_prob=0.5)
    phi, w = rng.standard_normal((N, 3)), rng.standard_normal(3)
    f = tdjax.semi_gradient_update(lambda w, x: x @ w, jnp.asarray(w), phi, P, r, 0.8)
    np.testing.assert_allclose(f, phi.T @ (r + 0.8 * P @ phi @ w - phi @ w), atol=1e-12)


def test_second_order_correction_is_jacobian_times_f_and_sum_of_eq19_terms():
    apply_fn, params, states, P, r, gamma = _mlp_problem()
    f1 = tdjax.second_order_correction(apply_fn, params, states, P, r, gamma)
    f = tdjax.semi_gradient_update(apply_fn, params, states, P, r, gamma)
    eps = 1e-6
    plus = jax.tree_util.tree_map(lambda p, d: p + eps * d, params, f)
    minus = jax.tree_util.tree_map(lambda p, d: p - eps * d, params, f)
    fd = (_flat(tdjax.semi_gradient_update(apply_fn, plus, states, P, r, gamma))
          - _flat(tdjax.semi_gradient_update(apply_fn, minus, states, P, r, gamma))) / (2 * eps)
    np.testing.assert_allclose(_flat(f1), fd, rtol=1e-6, atol=1e-8)
    grad_norm, interference = tdjax.second_order_correction_terms(apply_fn, params, states, P, r, gamma)
    np.testing.assert_allclose(_flat(grad_norm) + _flat(interference), _flat(f1), atol=1e-10)
    # The gradient-norm term is ½∇‖∇TD‖² with a frozen target, checked by finite differences.
    target = r + gamma * P @ np.asarray(jax.vmap(apply_fn, (None, 0))(params, states))

    def half_sq_grad_norm(p):
        g = jax.grad(lambda q: 0.5 * jnp.sum((jax.vmap(apply_fn, (None, 0))(q, states) - target) ** 2))(p)
        return 0.5 * sum(jnp.sum(x**2) for x in jax.tree_util.tree_leaves(g))

    np.testing.assert_allclose(_flat(grad_norm), _flat(jax.grad(half_sq_grad_norm)(params)), atol=1e-10)


def test_second_order_flow_tracks_gradient_steps_to_second_order():
    apply_fn, params, states, P, r, gamma = _mlp_problem()
    horizon, errs1, errs2, errs_paper = 0.8, [], [], []
    for h in (0.04, 0.02, 0.01):
        theta_n = _flat(tdjax.td_parameter_steps(apply_fn, params, states, P, r, gamma, h, int(round(horizon / h))))
        first = _flat(tdjax.td_parameter_flow(apply_fn, params, states, P, r, gamma, horizon, num_substeps=160))
        second = _flat(tdjax.td_parameter_flow(apply_fn, params, states, P, r, gamma, horizon, step_size=h,
                                               num_substeps=160))
        # eq. 20 as printed (+α/2 f₁) is the corrected flow with the opposite step size.
        paper = _flat(tdjax.td_parameter_flow(apply_fn, params, states, P, r, gamma, horizon, step_size=-h,
                                              num_substeps=160))
        errs1.append(np.linalg.norm(theta_n - first))
        errs2.append(np.linalg.norm(theta_n - second))
        errs_paper.append(np.linalg.norm(theta_n - paper))
    errs1, errs2, errs_paper = map(np.array, (errs1, errs2, errs_paper))
    assert np.all(errs2 < errs1 / 3)
    ratio1, ratio2 = errs1[:-1] / errs1[1:], errs2[:-1] / errs2[1:]
    assert np.all((ratio1 > 1.6) & (ratio1 < 2.5)), ratio1  # O(h)
    assert np.all(ratio2 > 3.2), ratio2  # O(h²)
    assert np.all(errs_paper > errs1)  # the printed sign is worse than no correction at all


# ------------------------------------------------------------------------------------------------
# Input checks and precision
# ------------------------------------------------------------------------------------------------


def test_bad_inputs_name_the_argument():
    P, r, v0 = _problem("nonsymmetric", n=5)
    ts, mask, K = np.linspace(0, 1, 5), np.ones(5, bool), np.eye(5)
    with pytest.raises(ValueError, match="`P` must be a square"):
        tdjax.td_value_trajectory(P[:4], r, 0.9, v0, ts)
    with pytest.raises(ValueError, match="`P` must be row-stochastic"):
        tdjax.td_value_trajectory(P * 1.1, r, 0.9, v0, ts)
    negative = np.full((5, 5), 0.2)
    negative[0, :2] = (-0.2, 0.6)
    with pytest.raises(ValueError, match=r"`P` must be row-stochastic but P\[0, 0\]"):
        tdjax.td_dynamics(negative, r, 0.9)
    for gamma in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="`gamma` must lie in"):
            tdjax.td_value_trajectory(P, r, gamma, v0, ts)
    with pytest.raises(ValueError, match="`v0` must have shape"):
        tdjax.td_value_trajectory(P, r, 0.9, v0[:3], ts)
    with pytest.raises(ValueError, match="`ts` must be a 1-D"):
        tdjax.td_value_trajectory(P, r, 0.9, v0, ts[None])
    with pytest.raises(ValueError, match="`ts` must be finite and ≥ 0"):
        tdjax.td_value_trajectory(P, r, 0.9, v0, -ts)
    with pytest.raises(ValueError, match="`train_mask` must be a boolean array of shape"):
        tdjax.kernel_td_trajectory(K, P, r, 0.9, mask[:4], v0, ts)
    with pytest.raises(ValueError, match="`K` must be the"):
        tdjax.kernel_td_trajectory(K[:4], P, r, 0.9, mask, v0, ts)
    with pytest.raises(ValueError, match="`K` must be the"):
        tdjax.kernel_mc_trajectory(K[:, :3], r, mask, v0, ts)
    with pytest.raises(ValueError, match="`K` must be symmetric"):
        tdjax.kernel_mc_trajectory(K + np.triu(np.ones((5, 5)), 1), r, mask, v0, ts)
    with pytest.raises(ValueError, match="`method` must be"):
        tdjax.td_value_trajectory(P, r, 0.9, v0, ts, method="pade")


def test_shape_checks_run_at_trace_time_under_jit():
    P, r, v0 = _problem("nonsymmetric", n=5)
    ts, mask = np.linspace(0, 1, 3), np.ones(5, bool)
    with pytest.raises(ValueError, match="`train_mask`"):
        jax.jit(lambda m: tdjax.kernel_td_trajectory(np.eye(5), P, r, 0.9, m, v0, ts))(mask[:3])
    with pytest.raises(ValueError, match="`K`"):
        jax.jit(lambda K: tdjax.kernel_td_trajectory(K, P, r, 0.9, mask, v0, ts))(np.eye(4))
    with pytest.raises(ValueError, match="`P` must be a square"):
        jax.jit(lambda P: tdjax.td_value_trajectory(P, r, 0.9, v0, ts))(P[:, :4])
    # Value checks cannot run on traced values (documented): a traced γ is accepted.
    out = jax.jit(lambda g: tdjax.td_value_trajectory(P, r, g, v0, ts))(0.9)
    assert out.shape == (3, 5)


def test_float32_inputs_are_accepted():
    P, r, v0 = _problem("nonsymmetric")
    ts = np.linspace(0, 5, 5)
    ref = _expm_reference(P, r, 0.9, v0, ts)
    with jax.enable_x64(False):
        for method in ("eig", "krylov"):
            V = tdjax.td_value_trajectory(P.astype(np.float32), r.astype(np.float32), 0.9,
                                          v0.astype(np.float32), ts.astype(np.float32), method=method)
            assert V.dtype == jnp.float32
            np.testing.assert_allclose(V, ref, atol=1e-4 * np.abs(ref).max())


# --------------------------------------------------------------------------------------------------
# Unreliable bases are reported, never consumed silently.


def test_defective_basis_warns_at_decomposition():
    with jax.enable_x64(True):
        # A Jordan block: P defective (eigenvalue 0 with one eigenvector for two dimensions).
        P = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
        with pytest.warns(tdjax.NumericalFallbackWarning, match="eigendecompose: the eigenvector basis"):
            dec = tdjax.eigendecompose(P)
        assert not float(dec.condition) <= 1e7
        # Under jit the same warning is raised when the computation runs.
        with pytest.warns(tdjax.NumericalFallbackWarning, match="eigendecompose"):
            jax.block_until_ready(jax.jit(lambda p: tdjax.eigendecompose(p).eigenvalues)(P))


def test_kernel_dynamics_warns_when_eigensolver_fails():
    with jax.enable_x64(True):
        P, r = tdjax.circle_mdp(50, 24)
        K = tdjax.rbf_kernel(np.arange(1.0, 51.0), 0.03162277660168379)  # entries down to ~1e-218
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            flow = tdjax.kernel_td_dynamics(K, P, r, 0.99, np.arange(50) < 40)
        if np.all(np.isfinite(np.asarray(flow.eigenvalues))):
            pytest.skip("this LAPACK build converged on the matrix; nothing to report")
        assert any(issubclass(w.category, tdjax.NumericalFallbackWarning) and "eigensolver failed" in str(w.message)
                   for w in caught)
