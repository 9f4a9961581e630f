"""Learning dynamics of TD and Monte Carlo value estimates: eigen-analysis, closed forms, f₁ correction.

Lyle et al. 2022, "Learning Dynamics and Generalization in Deep RL", §4 and App. A.2:

  Monte Carlo (§4.1):  ∂ₜVₜ = Vπ − Vₜ,                  Vₜ = e^{−t}(V₀ − Vπ) + Vπ
  TD (eq. 9–10):       ∂ₜVₜ = −(I − γPπ)Vₜ + Rπ,        Vₜ = exp(−t(I − γPπ))(V₀ − Vπ) + Vπ
  Obs. 4.1:            αᵢᵗ − αᵢπ = exp(−t(1 − γλᵢ))(αᵢ⁰ − αᵢπ)  in the eigenbasis Pπvᵢ = λᵢvᵢ
  Thm 4.1 (eq. 11–13): ‖TπVₜ − Vₜ‖² = ‖Σᵢ(1 − γλᵢ)(αᵢπ − αᵢᵗ)vᵢ‖²
  kernel TD (eq. 14–16, 54–56): ∂ₜVₜ(X) = K(X, X_train)[(TπVₜ − Vₜ)(X_train)]
  kernel MC:           ∂ₜVₜ(X) = K(X, X_train)[(Vπ − Vₜ)(X_train)]
  Obs. 4.2 (eq. 17–20): θ after n steps of size h ≈ the flow ∂ₜθ = f(θ) − (h/2)f₁(θ), f₁ = (∇f)f (eq. 19)

Conventions. `P` is the [n, n] row-stochastic Pπ, `r` the [n] expected reward Rπ, `gamma` ∈ [0, 1),
`ts` a 1-D array of T times (learning rate × number of steps), trajectories are [T, n]. Eigenvalues are
sorted by decreasing real part, so index 0 is the smoothest eigenvector (λ = 1, the constant for an
irreducible chain) and the last ones are the least smooth (λ near −1).

How the trajectories are computed (all are jit-able; `method` picks the algorithm):
  * "eig": one eigendecomposition (O(n³): ~4 s at n = 1000 and ~50 s at n = 2500 on one busy CPU core),
    then any v₀ and any number of times for O(n²) + O(n·T) + one [n, n]×[n, T] matmul. The cached
    closures `td_dynamics`, `kernel_td_dynamics` and `kernel_mc_dynamics` return this decomposition.
  * "krylov": Arnoldi on the one vector that matters (δ₀ = Tπ V₀ − V₀), restarted in time: O(n²) per
    matrix–vector product, typically tens to a few hundred of them for a whole time grid, no O(n³) work.
    The default for n > 256. A-posteriori error estimates (Saad 1992) control each step.
  * "expm": a dense matrix exponential per time point (O(n³·T)); the reference, and the last resort.
Where the eigenvector matrix is badly conditioned or defective (condition estimate above
`max_condition`, default 1e7 in float64 and 1e4 in float32, or not finite) the closed forms switch to
"krylov" (which needs no eigenbasis), and a Krylov run that stops early (`max_restarts` reached, or a
near-defective m×m projection) switches to "expm" (or, for the kernel trajectories, to "eig"). Each switch emits a
`NumericalFallbackWarning` (through `jax.debug.callback` under jit); the closures carry the decision in
their `fallback` field. Nothing is returned silently from an unreliable eigenbasis. Absorbing chains
with transient flows (e.g. `mountain_car_mdp` under a good policy) are typically defective.

Precision. Everything runs in the dtype of the inputs (float32 unless x64 is on). Use float64
(`with jax.enable_x64(True): ...`) for γ near 1 (errors grow like 1/(1 − γ)), long horizons (the slow
components decay like e^{−t(1−γ)} and must stay resolved), and eigenvector matrices with condition
above ~1e3; a concrete γ whose horizon 1/(1 − γ) is too long for the dtype gives a `PrecisionWarning`.
Value checks (row sums, γ ∈ [0, 1), ts ≥ 0, finite inputs, a positive step size; an `InputWarning` for a
kernel that is not symmetric PSD or an all-False train mask) run on concrete inputs, NumPy arrays closed
over by a jitted function included; under `jax.jit` traced inputs get shape checks only, except that NaN
or inf in them is reported at run time as a `NonFiniteInputWarning` (and keeps them off the fallback
paths, whose warnings would blame conditioning). See docs/bad_inputs.md.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Literal, NamedTuple, Optional, cast

import jax
import jax.numpy as jnp
import numpy as np

from tdjax._src import validation
from tdjax._src.checks import InputWarning
from tdjax._src.mdp import (
    _check_gamma,
    _check_matrix,
    _check_vector,
    _float_dtype,
    _is_concrete,
    _value_tol,
)

__all__ = [
    "NumericalFallbackWarning",
    "EigenDecomposition",
    "eigendecompose",
    "eigen_coefficients",
    "eigen_projection",
    "eigen_kernel",
    "expected_variation",
    "rbf_kernel",
    "TDDynamics",
    "td_dynamics",
    "td_value_trajectory",
    "mc_value_trajectory",
    "td_error",
    "td_error_bound",
    "LinearFlow",
    "kernel_td_dynamics",
    "kernel_mc_dynamics",
    "kernel_td_trajectory",
    "kernel_mc_trajectory",
    "td_euler_trajectory",
    "mc_euler_trajectory",
    "kernel_td_euler_trajectory",
    "kernel_mc_euler_trajectory",
    "semi_gradient_update",
    "second_order_correction",
    "second_order_correction_terms",
    "td_parameter_steps",
    "td_parameter_flow",
]

Method = Literal["auto", "eig", "krylov", "expm"]
_AUTO_EIG_MAX_N = 256


class NumericalFallbackWarning(UserWarning):
    """A closed form was replaced by a slower, reliable method (ill-conditioned or defective eigenbasis)."""


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


def _default_max_condition(dtype: Any) -> float:
    return 1e7 if jnp.dtype(dtype) == jnp.float64 else 1e4


def _default_rtol(dtype: Any) -> float:
    return 1e-12 if jnp.dtype(dtype) == jnp.float64 else 1e-6


def _norm1(A: jax.Array) -> jax.Array:
    return jnp.max(jnp.sum(jnp.abs(A), axis=0))


def _warn(message: str) -> None:
    warnings.warn(message, NumericalFallbackWarning, stacklevel=4)


def _warn_unreliable(flag: Any, message: str) -> None:
    """Warns (NumericalFallbackWarning) when `flag` is true: now if concrete, at run time under jit."""
    if _is_concrete(flag):
        if bool(flag):
            _warn(message)
        return
    jax.debug.callback(lambda f: _warn(message) if bool(f) else None, flag)


def _select(use_fallback: jax.Array, fallback: Callable[[], Any], main: Callable[[], Any], message: str) -> Any:
    """`fallback()` with a warning if `use_fallback`, else `main()`; a `lax.cond` when traced."""
    if _is_concrete(use_fallback):
        if bool(use_fallback):
            _warn(message)
            return fallback()
        return main()

    def warned_fallback():
        jax.debug.callback(functools.partial(_warn, message))
        return fallback()

    return jax.lax.cond(use_fallback, warned_fallback, main)


def _finite(*xs: Any) -> jax.Array:
    """True when every entry of every array is finite (a traced bool under jit)."""
    return functools.reduce(jnp.logical_and, [jnp.all(jnp.isfinite(x)) for x in xs])


def _check_times(ts: Any, fn: str, dtype: Any) -> jax.Array:
    ts = jnp.asarray(ts)
    if ts.ndim != 1:
        raise ValueError(f"{fn}: `ts` must be a 1-D array of times, got shape {ts.shape}.")
    ts = ts.astype(dtype)
    if _is_concrete(ts) and ts.size:
        t = np.asarray(ts)
        if not np.all(np.isfinite(t)) or t.min() < 0:
            raise ValueError(f"{fn}: `ts` must be finite and ≥ 0, got min {t.min()}.")
    return ts


def _check_mask(train_mask: Any, n: int, fn: str) -> jax.Array:
    value = validation.concrete(train_mask)  # before jnp.asarray, which stages NumPy inputs under jit
    m = jnp.asarray(train_mask)
    if m.shape != (n,):
        raise ValueError(f"{fn}: `train_mask` must be a boolean array of shape ({n},) (one entry per state), "
                         f"got shape {m.shape}.")
    if not (m.dtype == jnp.bool_ or jnp.issubdtype(m.dtype, jnp.integer)):
        raise ValueError(f"{fn}: `train_mask` must be boolean, got dtype {m.dtype}.")
    if m.dtype != jnp.bool_ and value is not None and not np.all(np.isin(value, (0, 1))):
        raise ValueError(f"{fn}: `train_mask` holds integers other than 0 and 1.")
    if value is not None and not np.any(value):
        validation.warn("`train_mask` is all False: no state is trained, so the values never move "
                        "from v0. Fix: mark the training states True.", InputWarning)
    return m.astype(bool)


def _check_kernel(K: Any, n: int, fn: str, dtype: Any, symmetric: bool) -> jax.Array:
    value = validation.concrete(K)  # before jnp.asarray, which stages NumPy inputs under jit
    K = jnp.asarray(K)
    if K.shape != (n, n):
        raise ValueError(f"{fn}: `K` must be the [n, n] = {(n, n)} kernel over all states, got {K.shape}.")
    K = K.astype(dtype)
    if value is not None:
        Kn = value.astype(jnp.dtype(dtype))
        if not np.all(np.isfinite(Kn)):
            raise ValueError(f"{fn}: `K` has non-finite entries.")
        tol = _value_tol(Kn.dtype) * max(1.0, float(np.max(np.abs(Kn))))
        asym = float(np.max(np.abs(Kn - Kn.T)))
        if asym > tol:
            if symmetric:
                raise ValueError(f"{fn}: `K` must be symmetric (a kernel), max |K − Kᵀ| = {asym:.3g}.")
            validation.warn(f"`K` is not symmetric (max |K − Kᵀ| = {asym:.3g}), so it is not a kernel; the "
                            "flow is still defined but none of the kernel results apply. Fix: use (K + Kᵀ)/2 or "
                            "ΦΦᵀ.", InputWarning)
        elif not _is_psd(Kn, tol):
            validation.warn(f"`K` is not positive semi-definite (an eigenvalue below −{tol:.2g}); the flow is "
                            "still defined but may diverge and is not kernel regression. Fix: use a PSD kernel "
                            "such as `rbf_kernel` or ΦΦᵀ.", InputWarning)
    return K


def _is_psd(K: np.ndarray, tol: float) -> bool:
    """Cholesky of (K + Kᵀ)/2 + tol·n·I succeeds (O(n³/3), concrete inputs only)."""
    n = K.shape[0]
    try:
        np.linalg.cholesky((K + K.T).astype(np.float64) / 2 + tol * n * np.eye(n))
        return True
    except np.linalg.LinAlgError:
        return False


def _resolve_method(method: str, n: int, fn: str) -> Method:
    if method not in ("auto", "eig", "krylov", "expm"):
        raise ValueError(f"{fn}: `method` must be 'auto', 'eig', 'krylov' or 'expm', got {method!r}.")
    if method == "auto":
        return "eig" if n <= _AUTO_EIG_MAX_N else "krylov"
    return cast(Method, method)


def _phi1(t: jax.Array, theta: jax.Array) -> jax.Array:
    """∫₀ᵗ e^{−sθ} ds = (1 − e^{−tθ})/θ, accurate as θ → 0 (where it is t)."""
    z = t * theta
    safe = jnp.where(theta == 0, 1.0, theta)
    series = t * (1.0 - z / 2.0 + z * z / 6.0)
    return jnp.where(jnp.abs(z) < 1e-5, series, -jnp.expm1(-z) / safe)


def _phi2(t: jax.Array, theta: jax.Array) -> jax.Array:
    """∫₀ᵗ φ₁(s, θ) ds = (tθ − 1 + e^{−tθ})/θ² (used only in error estimates)."""
    z = t * theta
    safe = jnp.where(theta == 0, 1.0, theta)
    series = t * t * (0.5 - z / 6.0 + z * z / 24.0 - z * z * z / 120.0)
    return jnp.where(jnp.abs(z) < 1e-2, series, (z + jnp.expm1(-z)) / (safe * safe))


# --------------------------------------------------------------------------------------------------
# Eigendecomposition of Pπ (not symmetric in general)
# --------------------------------------------------------------------------------------------------


class EigenDecomposition(NamedTuple):
    """Pπ = right · diag(eigenvalues) · left, sorted by decreasing real part (smoothest first)."""

    eigenvalues: jax.Array  # shape=[n], complex: λᵢ, Re λ₀ ≥ Re λ₁ ≥ ...; conjugate pairs adjacent, Im > 0 first.
    right: jax.Array  # shape=[n, n], complex: column i is vᵢ (unit 2-norm, largest entry real > 0).
    left: jax.Array  # shape=[n, n], complex: the dual basis, left @ right = I; row i gives αᵢ = left[i] · V.
    condition: jax.Array  # shape=(), real: ‖right‖₁‖left‖₁ (inf if the basis is singular / P defective).


@functools.partial(jax.jit, static_argnames=("symmetric",))
def _eigendecompose(P: jax.Array, symmetric: bool) -> EigenDecomposition:
    n = P.shape[0]
    cdtype = jnp.result_type(P.dtype, jnp.complex64)
    if symmetric:
        w, V = jnp.linalg.eigh(P)
        w, V = w.astype(cdtype), V.astype(cdtype)
    else:
        w, V = jnp.linalg.eig(P)
    order = jnp.lexsort((-w.imag, jnp.abs(w.imag), -w.real))
    w, V = w[order], V[:, order]
    pivot = V[jnp.argmax(jnp.abs(V), axis=0), jnp.arange(n)]
    phase = pivot / jnp.where(pivot == 0, 1.0, jnp.abs(pivot))
    V = V / phase[None, :]
    left = V.conj().T if symmetric else jnp.linalg.inv(V)
    condition = _norm1(V) * _norm1(left)
    condition = jnp.where(jnp.isfinite(condition), condition, jnp.inf)
    return EigenDecomposition(w, V, left, condition.real)


def eigendecompose(P: Any, *, symmetric: Optional[bool] = None) -> EigenDecomposition:
    """Eigendecomposition Pπ = V diag(λ) V⁻¹ of a (generally non-symmetric) transition matrix.

    Complex conjugate pairs are normal for random walks on directed graphs. Eigenvalues are sorted by
    decreasing real part: index 0 is the smoothest eigenvector (Lyle et al. 2022 eq. 8: the expected
    variation of vᵢ is Σₓ|(1 − λᵢ)vᵢ(x)|). `left` is the dual basis V⁻¹, so the coefficients of any V in
    the eigenbasis are `left @ V` (no orthogonality assumed).

    Cost: one O(n³) `jnp.linalg.eig` (`eigh` if symmetric) plus an O(n³) inverse. Jit-able; on GPU
    `jnp.linalg.eig` needs a jaxlib with GPU eig support.

    Args:
      P: [n, n] row-stochastic Pπ.
      symmetric: use `eigh` (orthonormal real eigenvectors, needed for the equality case of Thm 4.1 when
        eigenvalues repeat). Default: detected from a concrete P; False under jit.

    Returns:
      An `EigenDecomposition`; check `.condition` (relative errors of anything built on the basis are
      about condition × machine epsilon).
    """
    fn = "eigendecompose"
    P = _check_matrix(P, "P", fn)
    if symmetric is None:
        symmetric = _is_concrete(P) and bool(np.allclose(np.asarray(P), np.asarray(P).T, rtol=0,
                                                         atol=10 * jnp.finfo(P.dtype).eps))
    dec = _eigendecompose(P, bool(symmetric))
    _warn_unreliable(
        ~(dec.condition <= _default_max_condition(P.dtype)) & _finite(P),
        "eigendecompose: the eigenvector basis of P is badly conditioned or P is defective (see "
        "`.condition`; inf means the basis is singular or the eigensolver failed). Coefficients, "
        "projections and closed forms built on it are unreliable; the trajectory functions switch to "
        "Krylov/expm integrators automatically.",
    )
    return dec


def eigen_coefficients(decomposition: EigenDecomposition, v: Any) -> jax.Array:
    """Coefficients α with V = Σᵢ αᵢ vᵢ (Obs. 4.1), via the dual basis: α = V⁻¹V.

    Args:
      decomposition: from `eigendecompose`.
      v: [..., n] real or complex functions on the states.

    Returns:
      [..., n] complex coefficients (conjugate pairs of eigenvectors get conjugate coefficients for real V).
    """
    v = jnp.asarray(v)
    n = decomposition.left.shape[0]
    if v.shape[-1:] != (n,):
        raise ValueError(f"eigen_coefficients: `v` must have trailing dimension n = {n}, got shape {v.shape}.")
    return jnp.einsum("ij,...j->...i", decomposition.left, v.astype(decomposition.left.dtype))


def _index_array(indices: Any, n: int, fn: str) -> jax.Array:
    idx = jnp.asarray(indices)
    if idx.ndim != 1 or not jnp.issubdtype(idx.dtype, jnp.integer):
        raise ValueError(f"{fn}: `indices` must be a 1-D integer array of eigenvector positions, got "
                         f"shape {idx.shape}, dtype {idx.dtype}.")
    if _is_concrete(idx) and idx.size and (int(idx.min()) < -n or int(idx.max()) >= n):
        raise ValueError(f"{fn}: `indices` must lie in [−{n}, {n}), got range [{int(idx.min())}, {int(idx.max())}].")
    return validation.check_index(fn, "indices", idx, n, "eigenvectors", lo=-n)


def eigen_projection(decomposition: EigenDecomposition, v: Any, indices: Any) -> jax.Array:
    """Π_S V = Re Σ_{i∈S} αᵢ vᵢ: the (oblique) projection of V onto span{vᵢ : i ∈ S} along the others.

    Used for Lyle et al. 2022 Fig. 10 (regressing on the projection of Vπ onto the top or bottom
    eigenvectors). Take S closed under conjugation (both members of each complex pair) for an exact real
    projection; the real part is returned either way.

    Args:
      decomposition: from `eigendecompose`.
      v: [..., n] real values.
      indices: [k] positions in the sorted spectrum, e.g. `jnp.arange(20)` (smoothest) or
        `jnp.arange(n − 20, n)` (least smooth).

    Returns:
      [..., n] real.
    """
    n = decomposition.left.shape[0]
    idx = _index_array(indices, n, "eigen_projection")
    alpha = eigen_coefficients(decomposition, v)[..., idx]
    return jnp.einsum("ij,...j->...i", decomposition.right[:, idx], alpha).real


def eigen_kernel(decomposition: EigenDecomposition, indices: Any) -> jax.Array:
    """K_S(x, y) = Re Σ_{i∈S} vᵢ(x) v̄ᵢ(y), the eigenfunction kernel of Lyle et al. 2022 App. C.2 / Fig. 10.

    For real eigenvectors this is Σ_{i∈S} vᵢ(x)vᵢ(y); in general it is real, symmetric and PSD.

    Args:
      decomposition: from `eigendecompose`.
      indices: [k] positions in the sorted spectrum (0 = smoothest).

    Returns:
      [n, n] real kernel.
    """
    n = decomposition.left.shape[0]
    idx = _index_array(indices, n, "eigen_kernel")
    Vs = decomposition.right[:, idx]
    return (Vs @ Vs.conj().T).real


def expected_variation(P: Any, v: Any) -> jax.Array:
    """ρ(V) = Σₓ |V(x) − E_{Pπ(x'|x)} V(x')| (Lyle et al. 2022 Def. 4.1, eq. 7); small means smooth.

    Args:
      P: [n, n] row-stochastic Pπ.
      v: [..., n] real or complex (e.g. eigenvectors as columns transposed: `decomposition.right.T`).

    Returns:
      [...] non-negative.
    """
    P = _check_matrix(P, "P", "expected_variation")
    v = jnp.asarray(v)
    if v.shape[-1:] != P.shape[:1]:
        raise ValueError(f"expected_variation: `v` must have trailing dimension {P.shape[0]}, got {v.shape}.")
    return jnp.sum(jnp.abs(v - jnp.einsum("xy,...y->...x", P.astype(jnp.result_type(P, v)), v)), axis=-1)


def rbf_kernel(points: Any, lengthscale: Any, points2: Any = None) -> jax.Array:
    """K(x, y) = exp(−‖x − y‖² / (2ℓ²)), the RBF kernel of Lyle et al. 2022 App. C.2 / Fig. 9.

    Args:
      points: [n] or [n, d] state coordinates (e.g. `jnp.arange(50.)` for the circle MDP, or
        `mountain_car_mdp(...).states`).
      lengthscale: ℓ > 0 (the paper uses 0.01, 1 and 100).
      points2: optional [m] or [m, d]; defaults to `points`.

    Returns:
      [n, m] kernel matrix.
    """
    x = jnp.asarray(points)
    y = x if points2 is None else jnp.asarray(points2)
    if x.ndim == 1:
        x = x[:, None]
    if y.ndim == 1:
        y = y[:, None]
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"rbf_kernel: `points` must be [n] or [n, d] (and `points2` [m, d]); got "
                         f"{jnp.shape(points)} and {None if points2 is None else jnp.shape(points2)}.")
    ell = jnp.asarray(lengthscale)
    if _is_concrete(ell) and not float(ell) > 0:
        raise ValueError(f"rbf_kernel: `lengthscale` must be > 0, got {float(ell)}.")
    dtype = _float_dtype(x, y, ell)
    x, y = x.astype(dtype), y.astype(dtype)
    sq = jnp.sum(x * x, 1)[:, None] + jnp.sum(y * y, 1)[None, :] - 2.0 * x @ y.T
    return jnp.exp(-jnp.maximum(sq, 0.0) / (2.0 * ell.astype(dtype) ** 2))


# --------------------------------------------------------------------------------------------------
# Tabular TD and MC (eq. 9–10, Obs. 4.1, Thm 4.1)
# --------------------------------------------------------------------------------------------------


def _td_expm(P: jax.Array, v_pi: jax.Array, gamma: jax.Array, v0: jax.Array, ts: jax.Array) -> jax.Array:
    A = jnp.eye(P.shape[0], dtype=P.dtype) - gamma * P
    u = v0 - v_pi
    return jax.lax.map(lambda t: jax.scipy.linalg.expm(-t * A) @ u + v_pi, ts)


_td_expm_jit = jax.jit(_td_expm)


@jax.jit
def _td_eig_eval(dec: EigenDecomposition, v_pi, gamma, v0, ts):
    rates = 1.0 - gamma * dec.eigenvalues
    c = dec.left @ (v0 - v_pi).astype(dec.left.dtype)
    decay = jnp.exp(-ts[:, None].astype(rates.dtype) * rates[None, :])
    return ((decay * c) @ dec.right.T).real + v_pi


class TDDynamics(NamedTuple):
    """The cached closed form of expected tabular TD (eq. 9–10), from one eigendecomposition of Pπ.

    Call it as `dyn(v0, ts)` for the [T, n] trajectory; each call costs O(n²) for the coefficients of
    v₀ − Vπ plus one [T, n]×[n, n] complex matmul (or, if `fallback`, a Krylov run). Pytree:
    pass it through `jax.jit`.
    """

    decomposition: EigenDecomposition  # of Pπ, smoothest first.
    P: jax.Array  # shape=[n, n].
    r: jax.Array  # shape=[n].
    gamma: jax.Array  # shape=().
    v_pi: jax.Array  # shape=[n]: Vπ = (I − γPπ)⁻¹Rπ.
    fallback: jax.Array  # shape=(), bool: the eigenbasis is unreliable; trajectories use Krylov (then expm).

    @property
    def rates(self) -> jax.Array:
        """[n] complex convergence rates 1 − γλᵢ (Obs. 4.1): component i decays like exp(−t(1 − γλᵢ))."""
        return 1.0 - self.gamma * self.decomposition.eigenvalues

    def coefficients(self, v: Any) -> jax.Array:
        """[..., n] eigen-coefficients α of v (dual basis)."""
        return eigen_coefficients(self.decomposition, v)

    def coefficient_errors(self, v0: Any, ts: Any) -> jax.Array:
        """αᵢᵗ − αᵢπ = exp(−t(1 − γλᵢ))(αᵢ⁰ − αᵢπ) for every eigencomponent (Obs. 4.1), [T, n] complex."""
        fn = "TDDynamics.coefficient_errors"
        n = self.P.shape[0]
        v0 = _check_vector(v0, n, "v0", fn, self.P.dtype)
        ts = _check_times(ts, fn, self.P.dtype)
        a0 = self.coefficients(v0 - self.v_pi)
        out = jnp.exp(-ts[:, None] * self.rates[None, :]) * a0[None, :]
        return _select(self.fallback, lambda: out, lambda: out,
                       "TDDynamics.coefficient_errors: the eigenvector matrix of P is badly conditioned "
                       "or defective; eigen-coefficients are unreliable.")

    def __call__(self, v0: Any, ts: Any) -> jax.Array:
        """Vₜ = exp(−t(I − γPπ))(V₀ − Vπ) + Vπ at every t in ts (eq. 10): [T, n]."""
        fn = "TDDynamics"
        n = self.P.shape[0]
        v0 = _check_vector(v0, n, "v0", fn, self.P.dtype)
        ts = _check_times(ts, fn, self.P.dtype)
        ok = validation.report_nonfinite(v0=v0, ts=ts)
        return _select(
            self.fallback & ok,
            lambda: _td_krylov_or_expm(self.P, self.r, self.gamma, v0, ts, None, 48, 500, fn),
            lambda: _td_eig_eval(self.decomposition, self.v_pi, self.gamma, v0, ts),
            f"{fn}: the eigenvector matrix of P is badly conditioned or defective (condition estimate above "
            "the threshold); using the Krylov integrator instead.",
        )


def _td_krylov_or_expm(P, r, g, v0, ts, rtol, m, max_restarts, fn):
    delta0 = r + g * (P @ v0) - v0
    Y, failed = _krylov_flow("td", (P, g), delta0, ts, _rtol(rtol, P.dtype), min(m, P.shape[0]), max_restarts)

    def expm_path():
        v_pi = jnp.linalg.solve(jnp.eye(P.shape[0], dtype=P.dtype) - g * P, r)
        return _td_expm_jit(P, v_pi, g, v0, ts)

    return _select(failed & _finite(delta0, ts), expm_path, lambda: v0 + Y,
                   f"{fn}: the Krylov integrator stopped (max_restarts={max_restarts} reached or a near-defective "
                   "projection); using a matrix exponential per time point instead (O(n³) each).")


def td_dynamics(
    P: Any, r: Any, gamma: Any, *, symmetric: Optional[bool] = None, max_condition: Optional[float] = None
) -> TDDynamics:
    """Decomposes Pπ once and returns the cached closed form of expected TD (eq. 9–10, Obs. 4.1).

    Like neural-tangents' `predict.gradient_descent_mse`: O(n³) now (eigendecomposition, inverse of the
    eigenvector matrix, one solve for Vπ), then `dyn(v0, ts)` for any v₀ and any times at O(n²·T).

    Args:
      P: [n, n] row-stochastic Pπ.
      r: [n] expected reward Rπ.
      gamma: discount in [0, 1).
      symmetric: see `eigendecompose`.
      max_condition: switch to the Krylov integrator when the eigenvector condition estimate exceeds this
        (default 1e7 in float64, 1e4 in float32).

    Returns:
      A `TDDynamics` (callable; also `.coefficients`, `.coefficient_errors`, `.rates`, `.v_pi`).
    """
    fn = "td_dynamics"
    dtype = _float_dtype(P, r, gamma)
    P = _check_matrix(P, "P", fn, dtype)
    n = P.shape[0]
    r = _check_vector(r, n, "r", fn, dtype)
    g = _check_gamma(gamma, fn, dtype)
    ok = validation.report_nonfinite(P=P, r=r, gamma=g)
    dec = eigendecompose(P, symmetric=symmetric)
    v_pi = jnp.linalg.solve(jnp.eye(n, dtype=dtype) - g * P, r)
    mc = _default_max_condition(dtype) if max_condition is None else max_condition
    fallback = ~(dec.condition <= mc) & ok
    return TDDynamics(decomposition=dec, P=P, r=r, gamma=g, v_pi=v_pi, fallback=fallback)


def td_value_trajectory(
    P: Any,
    r: Any,
    gamma: Any,
    v0: Any,
    ts: Any,
    *,
    method: Method = "auto",
    rtol: Optional[float] = None,
    krylov_dim: int = 48,
    max_restarts: int = 500,
) -> jax.Array:
    """Expected TD learning in closed form: Vₜ = exp(−t(I − γPπ))(V₀ − Vπ) + Vπ (Lyle et al. 2022 eq. 10).

    The solution of ∂ₜVₜ = −(I − γPπ)Vₜ + Rπ (eq. 9), i.e. tabular TD with learning rate α after t/α
    steps in the small-α limit.

    Args:
      P: [n, n] row-stochastic Pπ (complex spectra fine).
      r: [n] expected reward Rπ.
      gamma: discount in [0, 1).
      v0: [n] initial values V₀.
      ts: [T] times ≥ 0.
      method: "eig" (closed form from `td_dynamics`), "krylov" (restarted Arnoldi, no O(n³) work),
        "expm" (a matrix exponential per time), or "auto" (eig for n ≤ 256, else krylov). An unreliable
        eigenbasis falls back to "krylov"; a Krylov run that stops early (`max_restarts`, or a
        near-defective projection) falls back to "expm"; both warn.
      rtol: Krylov tolerance relative to ‖Tπ V₀ − V₀‖ (default 1e-12 in float64, 1e-6 in float32).
      krylov_dim: Krylov subspace dimension per restart.
      max_restarts: Krylov restarts before falling back.

    Returns:
      [T, n] values Vₜ.
    """
    fn = "td_value_trajectory"
    dtype = _float_dtype(P, r, v0, gamma)
    P = _check_matrix(P, "P", fn, dtype)
    n = P.shape[0]
    r = _check_vector(r, n, "r", fn, dtype)
    v0 = _check_vector(v0, n, "v0", fn, dtype)
    g = _check_gamma(gamma, fn, dtype)
    ts = _check_times(ts, fn, dtype)
    method = _resolve_method(method, n, fn)
    _check_krylov_options(rtol, krylov_dim, max_restarts, fn)
    if method == "eig":
        return td_dynamics(P, r, g)(v0, ts)
    validation.report_nonfinite(P=P, r=r, gamma=g, v0=v0, ts=ts)
    if method == "expm":
        v_pi = jnp.linalg.solve(jnp.eye(n, dtype=dtype) - g * P, r)
        return _td_expm_jit(P, v_pi, g, v0, ts)
    return _td_krylov_or_expm(P, r, g, v0, ts, rtol, krylov_dim, max_restarts, fn)


def mc_value_trajectory(v_pi: Any, v0: Any, ts: Any) -> jax.Array:
    """Expected Monte Carlo learning: Vₜ = e^{−t}(V₀ − Vπ) + Vπ (Lyle et al. 2022 §4.1).

    Args:
      v_pi: [n] regression target Vπ (e.g. `policy_evaluation(P, r, gamma)`).
      v0: [n] initial values.
      ts: [T] times ≥ 0.

    Returns:
      [T, n]. O(nT).
    """
    fn = "mc_value_trajectory"
    dtype = _float_dtype(v_pi, v0)
    v_pi = jnp.asarray(v_pi)
    if v_pi.ndim != 1:
        raise ValueError(f"{fn}: `v_pi` must be a 1-D [n] vector, got shape {v_pi.shape}.")
    n = v_pi.shape[0]
    v_pi = _check_vector(v_pi, n, "v_pi", fn, dtype)
    v0 = _check_vector(v0, n, "v0", fn, dtype)
    ts = _check_times(ts, fn, dtype)
    return v_pi + jnp.exp(-ts)[:, None] * (v0 - v_pi)


def td_error(P: Any, r: Any, gamma: Any, v: Any) -> jax.Array:
    """TD(V) = ‖TπV − V‖² = ‖Rπ + γPπV − V‖² (Lyle et al. 2022 Thm 4.1, eq. 11).

    Args:
      P, r, gamma: the Markov reward process.
      v: [..., n] values (e.g. a [T, n] trajectory).

    Returns:
      [...] squared Euclidean norms. O(n²) per value function.
    """
    fn = "td_error"
    dtype = _float_dtype(P, r, v, gamma)
    P = _check_matrix(P, "P", fn, dtype)
    n = P.shape[0]
    r = _check_vector(r, n, "r", fn, dtype)
    g = _check_gamma(gamma, fn, dtype)
    v = jnp.asarray(v).astype(dtype)
    if v.shape[-1:] != (n,):
        raise ValueError(f"{fn}: `v` must have trailing dimension n = {n}, got shape {v.shape}.")
    residual = r + g * jnp.einsum("xy,...y->...x", P, v) - v
    return jnp.sum(residual**2, axis=-1)


def td_error_bound(
    P: Any,
    r: Any,
    gamma: Any,
    v: Any,
    *,
    dynamics: Optional[TDDynamics] = None,
    paper_form: bool = False,
) -> jax.Array:
    """Upper bound on TD(V) from the eigen-coefficients (Lyle et al. 2022 Thm 4.1, eq. 12–13).

    TD(V) = ‖Σᵢ(1 − γλᵢ)(αᵢπ − αᵢ)vᵢ‖² (eq. 12) ≤ ‖W‖₂² Σᵢ |1 − γλᵢ|² |αᵢπ − αᵢ|², W = [v₁ … vₙ],
    with equality when the eigenvectors are orthonormal (symmetric Pπ), where ‖W‖₂ = 1. The paper's
    eq. 13 omits the factor ‖W‖₂² ≥ 1; without it the inequality can fail for non-normal Pπ (unit but
    non-orthogonal eigenvectors), so `paper_form=True` returns the printed sum only for comparison.
    Along a TD trajectory, αᵢπ − αᵢᵗ = e^{−t(1−γλᵢ)}(αᵢπ − αᵢ⁰), which gives eq. 27.

    Args:
      P, r, gamma: the Markov reward process.
      v: [..., n] values.
      dynamics: a `td_dynamics(P, r, gamma)` to reuse its decomposition (otherwise one is computed, O(n³)).
      paper_form: drop the ‖W‖₂² factor (eq. 13 as printed).

    Returns:
      [...] the bound. Computing ‖W‖₂ is an O(n³) SVD.
    """
    fn = "td_error_bound"
    dyn = td_dynamics(P, r, gamma) if dynamics is None else dynamics
    v = jnp.asarray(v).astype(dyn.P.dtype)
    if v.shape[-1:] != dyn.P.shape[:1]:
        raise ValueError(f"{fn}: `v` must have trailing dimension n = {dyn.P.shape[0]}, got shape {v.shape}.")
    diff = dyn.coefficients(dyn.v_pi) - dyn.coefficients(v)
    total = jnp.sum(jnp.abs(dyn.rates) ** 2 * jnp.abs(diff) ** 2, axis=-1)
    if paper_form:
        return total
    return total * jnp.linalg.norm(dyn.decomposition.right, 2) ** 2


# --------------------------------------------------------------------------------------------------
# Linear flows ∂ₜV = L(b − BV): kernel TD / kernel MC with a train/test split (eq. 14–16, 50–56)
# --------------------------------------------------------------------------------------------------


class LinearFlow(NamedTuple):
    """Cached closed form of ∂ₜV = L(b − BV), via the residual δ = b − BV, which obeys ∂ₜδ = −Cδ, C = BL.

    Vₜ = V₀ + L ∫₀ᵗ e^{−sC} ds δ₀ = V₀ + Re[LS diag((1 − e^{−tθ})/θ) S⁻¹ δ₀] with C = S diag(θ) S⁻¹.
    No fixed point is needed, so singular C (states never updated, rank-deficient kernels) and
    divergent dynamics (eigenvalues with negative real part) are handled. Call as `flow(v0, ts)`:
    O(n²) + O(nkT) per call (or a Krylov run on C if `fallback`).
    """

    L: jax.Array  # shape=[n, k].
    B: jax.Array  # shape=[k, n].
    b: jax.Array  # shape=[k].
    C: jax.Array  # shape=[k, k]: B @ L.
    eigenvalues: jax.Array  # shape=[k], complex: θ, eigenvalues of C (rates; Re θ < 0 diverges).
    LS: jax.Array  # shape=[n, k], complex: L @ S.
    S_inv: jax.Array  # shape=[k, k], complex.
    condition: jax.Array  # shape=(): ‖S‖₁‖S⁻¹‖₁.
    fallback: jax.Array  # shape=(), bool.

    def __call__(self, v0: Any, ts: Any) -> jax.Array:
        """[T, n] values Vₜ at the times ts."""
        fn = "LinearFlow"
        n = self.L.shape[0]
        v0 = _check_vector(v0, n, "v0", fn, self.L.dtype)
        ts = _check_times(ts, fn, self.L.dtype)
        ok = validation.report_nonfinite(v0=v0, ts=ts)
        return _select(
            self.fallback & ok,
            lambda: _flow_krylov_or_expm(self, v0, ts, None, 48, 500, fn),
            lambda: _flow_eig_eval(self, v0, ts),
            f"{fn}: the eigenvector matrix of C = B·L is badly conditioned or defective; using the Krylov "
            "integrator instead.",
        )


def _flow_krylov_or_expm(flow: LinearFlow, v0, ts, rtol, m, max_restarts, fn):
    delta0 = flow.b - flow.B @ v0
    k = flow.C.shape[0]
    Y, failed = _krylov_flow("dense", (flow.C,), delta0, ts, _rtol(rtol, flow.C.dtype), min(m, k), max_restarts)
    return _select(failed & _finite(delta0, ts, flow.C), lambda: _flow_expm(flow.L, flow.B, flow.b, flow.C, v0, ts),
                   lambda: v0 + Y @ flow.L.T,
                   f"{fn}: the Krylov integrator stopped (max_restarts={max_restarts} reached or a near-defective "
                   "projection); using a matrix exponential per time point instead (O(k³) each).")


@jax.jit
def _flow_eig_eval(flow: LinearFlow, v0, ts):
    delta0 = flow.b - flow.B @ v0
    c = flow.S_inv @ delta0.astype(flow.S_inv.dtype)
    phi = _phi1(ts[:, None].astype(c.dtype), flow.eigenvalues[None, :])
    return v0 + ((phi * c) @ flow.LS.T).real


@jax.jit
def _flow_expm(L, B, b, C, v0, ts):
    k = C.shape[0]
    M = jnp.block([[-C, jnp.zeros_like(C)], [jnp.eye(k, dtype=C.dtype), jnp.zeros_like(C)]])
    z0 = jnp.concatenate([b - B @ v0, jnp.zeros(k, C.dtype)])
    Y = jax.lax.map(lambda t: (jax.scipy.linalg.expm(t * M) @ z0)[k:], ts)
    return v0 + Y @ L.T


@functools.partial(jax.jit, static_argnames=("symmetric",))
def _linear_flow(L, B, b, max_condition, symmetric: bool) -> LinearFlow:
    C = B @ L
    cdtype = jnp.result_type(C.dtype, jnp.complex64)
    if symmetric:
        theta, S = jnp.linalg.eigh((C + C.T) / 2)
        theta, S = theta.astype(cdtype), S.astype(cdtype)
        S_inv = S.T
    else:
        theta, S = jnp.linalg.eig(C)
        S_inv = jnp.linalg.inv(S)
    condition = (_norm1(S) * _norm1(S_inv)).real
    condition = jnp.where(jnp.isfinite(condition), condition, jnp.inf)
    return LinearFlow(L=L, B=B, b=b, C=C, eigenvalues=theta, LS=L.astype(cdtype) @ S, S_inv=S_inv,
                      condition=condition, fallback=~(condition <= max_condition) & _finite(C, b))


def _kernel_td_operands(K, P, r, gamma, train_mask, fn):
    dtype = _float_dtype(P, r, K, gamma)
    P = _check_matrix(P, "P", fn, dtype)
    n = P.shape[0]
    K = _check_kernel(K, n, fn, dtype, symmetric=False)
    r = _check_vector(r, n, "r", fn, dtype)
    g = _check_gamma(gamma, fn, dtype)
    m = _check_mask(train_mask, n, fn)
    return K, P, r, g, m, dtype


def kernel_td_dynamics(
    K: Any, P: Any, r: Any, gamma: Any, train_mask: Any, *, max_condition: Optional[float] = None
) -> LinearFlow:
    """Cached closed form of kernel TD with a train/test split (Lyle et al. 2022 Thm 4.2, eq. 16, 56).

    ∂ₜVₜ(X) = K(X, X_train)[(TπVₜ − Vₜ)(X_train)]: only training states are regressed on, their
    bootstrap targets γPπVₜ may read test states, and test predictions move through K(X_test, X_train).
    With D = diag(train_mask) this is ∂ₜV = KD(Rπ + γPπV − V), so L = KD, B = D(I − γPπ), b = DRπ and
    the residual rate matrix is C = D(I − γPπ)KD (O(n³) to decompose, once).

    Args:
      K: [n, n] kernel over all states (e.g. `rbf_kernel(states, ℓ)`, or ΦΦᵀ for a linear model).
      P, r, gamma: the Markov reward process.
      train_mask: [n] bool, True for X_train.
      max_condition: as in `td_dynamics`.

    Returns:
      A `LinearFlow`; call it as `flow(v0, ts)`.
    """
    fn = "kernel_td_dynamics"
    K, P, r, g, m, dtype = _kernel_td_operands(K, P, r, gamma, train_mask, fn)
    validation.report_nonfinite(K=K, P=P, r=r, gamma=g)
    D = m.astype(dtype)
    n = P.shape[0]
    L = K * D[None, :]
    B = D[:, None] * (jnp.eye(n, dtype=dtype) - g * P)
    mc = _default_max_condition(dtype) if max_condition is None else max_condition
    flow = _linear_flow(L, B, D * r, mc, symmetric=False)
    _warn_unreliable(
        ~jnp.all(jnp.isfinite(flow.eigenvalues)) & _finite(flow.C),
        f"{fn}: the eigensolver failed on C = D(I − γPπ)KD (`.eigenvalues` is NaN; tiny kernel entries "
        "often cause this: zero those below machine epsilon). Trajectories still use the Krylov integrator.",
    )
    return flow


def kernel_mc_dynamics(K: Any, v_pi: Any, train_mask: Any, *, max_condition: Optional[float] = None) -> LinearFlow:
    """Cached closed form of kernel Monte Carlo regression with a train/test split.

    ∂ₜVₜ(X) = K(X, X_train)[(Vπ − Vₜ)(X_train)] (the MC analogue of eq. 16; kernel gradient descent on
    ½‖Vπ − V‖² over X_train). C = DKD is symmetric PSD, decomposed with `eigh` (O(n³), once).

    Args:
      K: [n, n] symmetric kernel over all states.
      v_pi: [n] regression target (only its training entries are read).
      train_mask: [n] bool.
      max_condition: as in `td_dynamics`.

    Returns:
      A `LinearFlow`.
    """
    fn = "kernel_mc_dynamics"
    dtype = _float_dtype(K, v_pi)
    v_pi = jnp.asarray(v_pi)
    if v_pi.ndim != 1:
        raise ValueError(f"{fn}: `v_pi` must be a 1-D [n] vector, got shape {v_pi.shape}.")
    n = v_pi.shape[0]
    v_pi = _check_vector(v_pi, n, "v_pi", fn, dtype)
    K = _check_kernel(K, n, fn, dtype, symmetric=True)
    D = _check_mask(train_mask, n, fn).astype(dtype)
    validation.report_nonfinite(K=K, v_pi=v_pi)
    mc = _default_max_condition(dtype) if max_condition is None else max_condition
    return _linear_flow(K * D[None, :], jnp.diag(D), D * v_pi, mc, symmetric=True)


def kernel_td_trajectory(
    K: Any,
    P: Any,
    r: Any,
    gamma: Any,
    train_mask: Any,
    v0: Any,
    ts: Any,
    *,
    method: Method = "auto",
    rtol: Optional[float] = None,
    krylov_dim: int = 48,
    max_restarts: int = 500,
) -> jax.Array:
    """Kernel TD trajectory with a train/test split (Lyle et al. 2022 eq. 16): [T, n].

    ∂ₜVₜ = K[:, train] · (TπVₜ − Vₜ)[train]. See `kernel_td_dynamics` for the closed form and
    `td_value_trajectory` for `method`, `rtol`, `krylov_dim`, `max_restarts`.
    """
    fn = "kernel_td_trajectory"
    K, P, r, g, m, dtype = _kernel_td_operands(K, P, r, gamma, train_mask, fn)
    n = P.shape[0]
    v0 = _check_vector(v0, n, "v0", fn, dtype)
    ts = _check_times(ts, fn, dtype)
    method = _resolve_method(method, n, fn)
    _check_krylov_options(rtol, krylov_dim, max_restarts, fn)
    if method in ("eig", "expm"):
        flow = kernel_td_dynamics(K, P, r, g, m)
        if method == "expm":
            return _flow_expm(flow.L, flow.B, flow.b, flow.C, v0, ts)
        return flow(v0, ts)
    validation.report_nonfinite(K=K, P=P, r=r, gamma=g, v0=v0, ts=ts)
    D = m.astype(dtype)
    delta0 = D * (r + g * (P @ v0) - v0)
    Y, failed = _krylov_flow("kernel_td", (K, P, g, D), delta0, ts, _rtol(rtol, dtype), min(krylov_dim, n),
                             max_restarts)
    return _select(failed & _finite(delta0, ts, K), lambda: kernel_td_dynamics(K, P, r, g, m)(v0, ts),
                   lambda: v0 + (Y * D) @ K.T,
                   f"{fn}: the Krylov integrator stopped (max_restarts={max_restarts} reached or a near-defective "
                   "projection); using the eigendecomposition closed form instead (O(n³)).")


def kernel_mc_trajectory(
    K: Any,
    v_pi: Any,
    train_mask: Any,
    v0: Any,
    ts: Any,
    *,
    method: Method = "auto",
    rtol: Optional[float] = None,
    krylov_dim: int = 48,
    max_restarts: int = 500,
) -> jax.Array:
    """Kernel Monte Carlo trajectory with a train/test split: ∂ₜVₜ = K[:, train]·(Vπ − Vₜ)[train], [T, n].

    See `kernel_mc_dynamics` and `td_value_trajectory` for the options.
    """
    fn = "kernel_mc_trajectory"
    dtype = _float_dtype(K, v_pi, v0)
    v_pi = jnp.asarray(v_pi)
    if v_pi.ndim != 1:
        raise ValueError(f"{fn}: `v_pi` must be a 1-D [n] vector, got shape {v_pi.shape}.")
    n = v_pi.shape[0]
    v_pi = _check_vector(v_pi, n, "v_pi", fn, dtype)
    K = _check_kernel(K, n, fn, dtype, symmetric=True)
    m = _check_mask(train_mask, n, fn)
    v0 = _check_vector(v0, n, "v0", fn, dtype)
    ts = _check_times(ts, fn, dtype)
    method = _resolve_method(method, n, fn)
    _check_krylov_options(rtol, krylov_dim, max_restarts, fn)
    if method in ("eig", "expm"):
        flow = kernel_mc_dynamics(K, v_pi, m)
        if method == "expm":
            return _flow_expm(flow.L, flow.B, flow.b, flow.C, v0, ts)
        return flow(v0, ts)
    validation.report_nonfinite(K=K, v_pi=v_pi, v0=v0, ts=ts)
    D = m.astype(dtype)
    delta0 = D * (v_pi - v0)
    Y, failed = _krylov_flow("kernel_mc", (K, D), delta0, ts, _rtol(rtol, dtype), min(krylov_dim, n), max_restarts)
    return _select(failed & _finite(delta0, ts, K), lambda: kernel_mc_dynamics(K, v_pi, m)(v0, ts),
                   lambda: v0 + (Y * D) @ K.T,
                   f"{fn}: the Krylov integrator stopped (max_restarts={max_restarts} reached or a near-defective "
                   "projection); using the eigendecomposition closed form instead (O(n³)).")


# --------------------------------------------------------------------------------------------------
# Restarted Krylov integrator for Y(t) = ∫₀ᵗ e^{−sC} ds δ₀ at many times
# --------------------------------------------------------------------------------------------------


def _rtol(rtol: Optional[float], dtype: Any) -> float:
    return _default_rtol(dtype) if rtol is None else float(rtol)


def _check_krylov_options(rtol: Any, krylov_dim: Any, max_restarts: Any, fn: str) -> None:
    if rtol is not None:
        value = validation.concrete(rtol)
        if value is None or value.ndim != 0 or not (np.isfinite(value) and float(value) > 0):
            raise ValueError(f"{fn}: `rtol` must be a positive Python float (or None for the dtype's default), "
                             f"got {rtol!r}.")
    for name, v, lo in (("krylov_dim", krylov_dim, 1), ("max_restarts", max_restarts, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{fn}: `{name}` must be a Python int ≥ {lo}, got {v!r}.")


def _matvec(kind: str, ops: tuple, d: jax.Array) -> jax.Array:
    if kind == "td":
        P, g = ops
        return d - g * (P @ d)
    if kind == "kernel_td":
        K, P, g, D = ops
        u = K @ (D * d)
        return D * (u - g * (P @ u))
    if kind == "kernel_mc":
        K, D = ops
        return D * (K @ (D * d))
    if kind == "dense":
        (C,) = ops
        return C @ d
    raise ValueError(kind)


def _small_flow_eig(H, beta, s):
    theta, W = jnp.linalg.eig(H)
    W_inv = jnp.linalg.inv(W)
    g = beta * W_inv[:, 0]
    ss = s[:, None].astype(theta.dtype)
    E = ((jnp.exp(-ss * theta) * g) @ W.T).real
    Phi = ((_phi1(ss, theta) * g) @ W.T).real
    Psi = ((_phi2(ss, theta) * g) @ W.T).real
    condition = (_norm1(W) * _norm1(W_inv)).real
    return E, Phi, Psi, jnp.where(jnp.isfinite(condition), condition, jnp.inf)


@functools.partial(jax.jit, static_argnames=("kind", "m", "max_restarts"))
def _krylov_flow(kind: str, ops: tuple, delta0: jax.Array, ts: jax.Array, rtol: float, m: int, max_restarts: int):
    """Y(t) = ∫₀ᵗ e^{−sC} ds δ₀ for every t in ts, by Arnoldi restarted in time (expokit-style).

    Each restart builds an m-dimensional Krylov basis Q of the current residual δ(t_c) and evaluates
    δ(t_c + s) ≈ Q e^{−sH} βe₁ and Y(t_c + s) ≈ Y(t_c) + Q φ₁(s, H) βe₁ for every output time it can
    reach, using the estimates ‖error‖ ≈ h_{m+1,m}|e_mᵀ φ₁(s, H)βe₁| (δ) and h_{m+1,m}|e_mᵀ φ₂(s, H)βe₁| (Y).
    The small m×m functions come from eig(H); a badly conditioned H (a near-defective projection) stops
    the run with failed=True, as does running out of restarts.
    Returns (Y [T, k] in the order of ts, failed).
    """
    dtype = delta0.dtype
    k = delta0.shape[0]
    T = ts.shape[0]
    if T == 0:
        return jnp.zeros((0, k), dtype), jnp.asarray(False)
    eps = jnp.finfo(dtype).eps
    max_cond = _default_max_condition(dtype)
    order = jnp.argsort(ts)
    t_sorted = ts[order]
    idx = jnp.arange(T)
    ladder = 2.0 ** -jnp.arange(1, 31, dtype=dtype)
    beta0 = jnp.linalg.norm(delta0)

    def arnoldi(delta, beta):
        Q = jnp.zeros((m + 1, k), dtype).at[0].set(delta / jnp.where(beta > 0, beta, 1.0))
        H = jnp.zeros((m + 1, m), dtype)

        def step(j, QH):
            Q, H = QH
            w = _matvec(kind, ops, Q[j])
            w_norm = jnp.linalg.norm(w)
            h = Q @ w  # Q's rows beyond j are still zero.
            w = w - h @ Q
            h2 = Q @ w  # second pass of classical Gram–Schmidt keeps Q orthonormal
            w = w - h2 @ Q
            h = h + h2
            hn = jnp.linalg.norm(w)
            breakdown = hn <= 1e3 * eps * w_norm  # invariant subspace: the Krylov solution is exact
            hn = jnp.where(breakdown, 0.0, hn)
            Q = Q.at[j + 1].set(jnp.where(breakdown, 0.0, w / jnp.where(breakdown, 1.0, hn)))
            H = H.at[:, j].set(h.at[j + 1].set(hn))
            return Q, H

        return jax.lax.fori_loop(0, m, step, (Q, H))

    def cond(state):
        _, j_next, _, _, _, restarts, failed = state
        return (j_next < T) & (restarts < max_restarts) & ~failed

    def body(state):
        t_cur, j_next, delta, Y, out, restarts, failed = state
        beta = jnp.linalg.norm(delta)
        Q, H = arnoldi(delta, beta)
        Hm, h_next, Qm = H[:m], H[m, m - 1], Q[:m]
        remaining = idx >= j_next
        s_out = jnp.where(remaining, t_sorted - t_cur, 0.0)
        s_next = t_sorted[jnp.minimum(j_next, T - 1)] - t_cur
        s_all = jnp.concatenate([s_out, s_next * ladder])
        E, Phi, Psi, small_cond = _small_flow_eig(Hm, beta, s_all)
        err_delta = h_next * jnp.abs(Phi[:, m - 1])
        err_y = h_next * jnp.abs(Psi[:, m - 1])
        scale_y = jnp.maximum(beta0 * jnp.maximum(t_cur + s_all, 1.0), jnp.linalg.norm(Y))
        ok = (err_delta <= rtol * jnp.maximum(beta0, beta)) & (err_y <= rtol * scale_y)
        bad_out = remaining & ~ok[:T]
        first_bad = jnp.where(jnp.any(bad_out), jnp.argmax(bad_out), T)
        accepted = remaining & (idx < first_bad)
        out = jnp.where(accepted[:, None], Y[None, :] + Phi[:T] @ Qm, out)
        use_out = first_bad > j_next
        ok_ladder = ok[T:]
        row = jnp.where(use_out, first_bad - 1, T + jnp.argmax(ok_ladder))
        delta_new = E[row] @ Qm
        Y_new = Y + Phi[row] @ Qm
        t_new = jnp.where(use_out, t_sorted[jnp.maximum(first_bad - 1, 0)], t_cur + s_all[row])
        failed = (failed | (~use_out & ~jnp.any(ok_ladder)) | ~jnp.all(jnp.isfinite(delta_new))
                  | ~(small_cond <= max_cond))  # a near-defective projection: leave it to expm
        return (t_new, jnp.where(use_out, first_bad, j_next), delta_new, Y_new, out, restarts + 1, failed)

    init = (jnp.zeros((), dtype), jnp.asarray(0), delta0, jnp.zeros(k, dtype), jnp.zeros((T, k), dtype),
            jnp.asarray(0), jnp.asarray(False))
    _, j_next, _, _, out, _, failed = jax.lax.while_loop(cond, body, init)
    inverse = jnp.argsort(order)
    return out[inverse], failed | (j_next < T)


# --------------------------------------------------------------------------------------------------
# Explicit Euler integrators (the discrete updates the flows approximate)
# --------------------------------------------------------------------------------------------------


def _euler_field(kind: str, ops: tuple, v: jax.Array) -> jax.Array:
    if kind == "td":
        P, r, g = ops
        return r + g * (P @ v) - v
    if kind == "mc":
        (v_pi,) = ops
        return v_pi - v
    if kind == "kernel_td":
        K, P, r, g, D = ops
        return K @ (D * (r + g * (P @ v) - v))
    K, v_pi, D = ops
    return K @ (D * (v_pi - v))


@functools.partial(jax.jit, static_argnames=("kind", "num_steps"))
def _euler_jit(kind: str, ops: tuple, v0: jax.Array, step_size, num_steps: int) -> jax.Array:
    def step(v, _):
        v = v + step_size * _euler_field(kind, ops, v)
        return v, v

    _, vs = jax.lax.scan(step, v0, None, length=num_steps)
    return jnp.concatenate([v0[None], vs], axis=0)


def _euler(kind: str, ops: tuple, v0: jax.Array, step_size, num_steps: int, fn: str) -> jax.Array:
    if isinstance(num_steps, bool) or int(num_steps) != num_steps or num_steps < 0:
        raise ValueError(f"{fn}: `num_steps` must be a non-negative Python int (static under jit), got {num_steps}.")
    h = validation.concrete(step_size)
    if h is not None and (h.ndim != 0 or not (np.isfinite(h) and float(h) > 0)):
        raise ValueError(f"{fn}: `step_size` must be a positive scalar (the learning rate h), got {step_size!r}. "
                         "A zero step never moves; a negative one runs the dynamics backwards, away from the fixed "
                         "point.")
    return _euler_jit(kind, ops, v0, jnp.asarray(step_size, v0.dtype), int(num_steps))


def _euler_precision(dtype: Any, step_size: Any, num_steps: int, rate: Any) -> None:
    """Rounding accumulates over min(num_steps, 1/(h·rate)) steps (the slowest mode's memory)."""
    h = validation.concrete(step_size)
    if rate is None or h is None or h.ndim or not float(h) > 0 or not isinstance(num_steps, (int, np.integer)):
        return
    memory = np.inf if float(rate) <= 0 else 1.0 / (float(h) * float(rate))
    validation.check_precision(dtype, min(float(num_steps), memory),
                               f"`num_steps` = {num_steps} with `step_size` = {float(h):g}: the accumulation")


def td_euler_trajectory(P: Any, r: Any, gamma: Any, v0: Any, step_size: Any, num_steps: int) -> jax.Array:
    """Expected tabular TD updates V ← V + h(Rπ + γPπV − V): the Euler discretisation of eq. 9.

    Returns [num_steps + 1, n], row k being V after k steps (time k·h). O(n²) per step; a `lax.scan`.
    """
    fn = "td_euler_trajectory"
    dtype = _float_dtype(P, r, v0, gamma)
    P = _check_matrix(P, "P", fn, dtype)
    n = P.shape[0]
    r = _check_vector(r, n, "r", fn, dtype)
    v0 = _check_vector(v0, n, "v0", fn, dtype)
    g = _check_gamma(gamma, fn, dtype)
    gc = validation.concrete(g) if _is_concrete(g) else None
    _euler_precision(dtype, step_size, num_steps, None if gc is None else 1.0 - gc)
    return _euler("td", (P, r, g), v0, step_size, num_steps, fn)


def mc_euler_trajectory(v_pi: Any, v0: Any, step_size: Any, num_steps: int) -> jax.Array:
    """Expected Monte Carlo updates V ← V + h(Vπ − V). Returns [num_steps + 1, n]."""
    fn = "mc_euler_trajectory"
    dtype = _float_dtype(v_pi, v0)
    v_pi = jnp.asarray(v_pi)
    if v_pi.ndim != 1:
        raise ValueError(f"{fn}: `v_pi` must be a 1-D [n] vector, got shape {v_pi.shape}.")
    v_pi = _check_vector(v_pi, v_pi.shape[0], "v_pi", fn, dtype)
    v0 = _check_vector(v0, v_pi.shape[0], "v0", fn, dtype)
    _euler_precision(dtype, step_size, num_steps, 1.0)
    return _euler("mc", (v_pi,), v0, step_size, num_steps, fn)


def kernel_td_euler_trajectory(
    K: Any, P: Any, r: Any, gamma: Any, train_mask: Any, v0: Any, step_size: Any, num_steps: int
) -> jax.Array:
    """Kernel TD steps V ← V + h·K[:, train]·(Rπ + γPπV − V)[train] (Euler for eq. 16). [num_steps + 1, n].

    For a linear model V = Φw with K = ΦΦᵀ these are exactly the semi-gradient steps
    w ← w + h Φ[train]ᵀ(Rπ + γPπΦw − Φw)[train], mapped to values.
    """
    fn = "kernel_td_euler_trajectory"
    K, P, r, g, m, dtype = _kernel_td_operands(K, P, r, gamma, train_mask, fn)
    v0 = _check_vector(v0, P.shape[0], "v0", fn, dtype)
    return _euler("kernel_td", (K, P, r, g, m.astype(dtype)), v0, step_size, num_steps, fn)


def kernel_mc_euler_trajectory(
    K: Any, v_pi: Any, train_mask: Any, v0: Any, step_size: Any, num_steps: int
) -> jax.Array:
    """Kernel MC steps V ← V + h·K[:, train]·(Vπ − V)[train]. [num_steps + 1, n]."""
    fn = "kernel_mc_euler_trajectory"
    dtype = _float_dtype(K, v_pi, v0)
    v_pi = jnp.asarray(v_pi)
    if v_pi.ndim != 1:
        raise ValueError(f"{fn}: `v_pi` must be a 1-D [n] vector, got shape {v_pi.shape}.")
    n = v_pi.shape[0]
    v_pi = _check_vector(v_pi, n, "v_pi", fn, dtype)
    K = _check_kernel(K, n, fn, dtype, symmetric=False)
    D = _check_mask(train_mask, n, fn).astype(dtype)
    v0 = _check_vector(v0, n, "v0", fn, dtype)
    return _euler("kernel_mc", (K, v_pi, D), v0, step_size, num_steps, fn)


# --------------------------------------------------------------------------------------------------
# Parametric V_θ: semi-gradient field f (eq. 17–18) and second-order correction f₁ (eq. 19–20)
# --------------------------------------------------------------------------------------------------


def _tree_axpy(a, x, y):
    return jax.tree_util.tree_map(lambda xi, yi: a * xi + yi, x, y)


def _values(apply_fn: Callable, params: Any, states: Any, n: int, fn: str) -> jax.Array:
    v = jax.vmap(apply_fn, in_axes=(None, 0))(params, states)
    if v.shape != (n,):
        raise ValueError(f"{fn}: `apply_fn(params, x)` must return a scalar for one state x "
                         f"(values over `states` of shape ({n},)), got shape {v.shape}.")
    return v


def _parametric_operands(states, P, r, gamma, fn):
    dtype = _float_dtype(P, r, gamma)
    P = _check_matrix(P, "P", fn, dtype)
    n = P.shape[0]
    r = _check_vector(r, n, "r", fn, dtype)
    g = _check_gamma(gamma, fn, dtype)
    leaves = jax.tree_util.tree_leaves(states)
    if not leaves or any(jnp.shape(x)[:1] != (n,) for x in leaves):
        raise ValueError(f"{fn}: `states` must hold one input per state along its leading axis (n = {n}), "
                         f"got leading shapes {[jnp.shape(x)[:1] for x in leaves]}.")
    return P, r, g


def _semi_gradient(apply_fn, params, states, P, r, g, fn="semi_gradient_update"):
    v, vjp = jax.vjp(lambda p: _values(apply_fn, p, states, P.shape[0], fn), params)
    (f,) = vjp(r + g * (P @ v) - v)  # the target enters as a constant: a semi-gradient
    return f


def _correction(apply_fn, params, states, P, r, g):
    f_fn = lambda p: _semi_gradient(apply_fn, p, states, P, r, g, "second_order_correction")  # noqa: E731
    return jax.jvp(f_fn, (params,), (f_fn(params),))[1]


def _correction_terms(apply_fn, params, states, P, r, g):
    n = P.shape[0]
    values = lambda p: _values(apply_fn, p, states, n, "second_order_correction_terms")  # noqa: E731
    target = jax.lax.stop_gradient(r + g * (P @ values(params)))

    def grad_td(p):
        v, vjp = jax.vjp(values, p)
        return vjp(v - target)[0]

    gt = grad_td(params)
    grad_norm_term = jax.jvp(grad_td, (params,), (gt,))[1]
    f = jax.tree_util.tree_map(jnp.negative, gt)
    _, vjp = jax.vjp(values, params)
    jf = jax.jvp(values, (params,), (f,))[1]
    (interference_term,) = vjp(g * (P @ jf))
    return grad_norm_term, interference_term


def _steps(apply_fn, params, states, P, r, g, step_size, num_steps):
    def body(_, p):
        return _tree_axpy(step_size, _semi_gradient(apply_fn, p, states, P, r, g, "td_parameter_steps"), p)

    return jax.lax.fori_loop(0, num_steps, body, params)


def _flow(apply_fn, params, states, P, r, g, time, step_size, num_substeps, corrected):
    def field(p):
        f_fn = lambda q: _semi_gradient(apply_fn, q, states, P, r, g, "td_parameter_flow")  # noqa: E731
        f = f_fn(p)
        if not corrected:
            return f
        return _tree_axpy(-0.5 * step_size, jax.jvp(f_fn, (p,), (f,))[1], f)

    dt = time / num_substeps

    def rk4(_, p):
        k1 = field(p)
        k2 = field(_tree_axpy(dt / 2, k1, p))
        k3 = field(_tree_axpy(dt / 2, k2, p))
        k4 = field(_tree_axpy(dt, k3, p))
        incr = jax.tree_util.tree_map(lambda a, b, c, d: (a + 2 * b + 2 * c + d) / 6, k1, k2, k3, k4)
        return _tree_axpy(dt, incr, p)

    return jax.lax.fori_loop(0, num_substeps, rk4, params)


_STATIC_JITS: dict = {}


def _call_cached(impl: Callable, apply_fn: Callable, *args, static: tuple = ()):
    """impl(apply_fn, *args, *static), jitted with apply_fn and `static` static when apply_fn is hashable.

    The cache makes repeated calls with the same network function compile once (not once per call).
    """
    try:
        hash(apply_fn)
        hash(static)
    except TypeError:
        return impl(apply_fn, *args, *static)
    if impl not in _STATIC_JITS:
        n_args = len(args)
        _STATIC_JITS[impl] = jax.jit(impl, static_argnums=(0, *range(1 + n_args, 1 + n_args + len(static))))
    return _STATIC_JITS[impl](apply_fn, *args, *static)


def semi_gradient_update(apply_fn: Callable, params: Any, states: Any, P: Any, r: Any, gamma: Any) -> Any:
    """f(θ) = ∇_θV_θᵀ[(γPπ − I)V_θ + Rπ], the expected semi-gradient TD update (Lyle et al. 2022 eq. 17–18).

    Equals −∇_θ TD(θ) with TD(θ) = ½‖V_θ − □TπV_θ‖² (□ = stop-gradient). One VJP through all n states.

    Args:
      apply_fn: `apply_fn(params, x) -> scalar` for ONE state input x (hashable, e.g. a plain function or
        `module.apply`, to reuse compilations across calls).
      params: pytree θ.
      states: [n, ...] inputs, one per state (row x of Pπ), or a pytree of such arrays.
      P, r, gamma: the Markov reward process.

    Returns:
      A pytree like `params`.
    """
    P, r, g = _parametric_operands(states, P, r, gamma, "semi_gradient_update")
    return _call_cached(_semi_gradient, apply_fn, params, states, P, r, g)


def second_order_correction(apply_fn: Callable, params: Any, states: Any, P: Any, r: Any, gamma: Any) -> Any:
    """f₁(θ) = (∇_θ f)(θ)·f(θ) (Lyle et al. 2022 eq. 19, 36), the O(h) correction of Obs. 4.2.

    It equals ½∇_θ‖∇_θTD(θ)‖² + γ∇_θV_θᵀ Pπ ∇_θV_θ f(θ) (eq. 19; see `second_order_correction_terms`).
    Gradient steps θ ← θ + h f(θ) (eq. 17) follow, to O(h²) over a fixed time horizon, the modified flow

        ∂ₜθ = f(θ) − (h/2) f₁(θ)

    (backward error analysis, Barrett & Dherin 2021). Note the minus sign: the paper's eq. 20 prints
    "+ α/2 f₁", which contradicts its own derivation (eq. 32: θ₁ = θ̃(α) − α²/2 f₁ + O(α³)) and would only
    be first-order accurate; with the minus sign the first term is the implicit gradient-norm *penalty*
    the paper describes. `td_parameter_flow(..., step_size=h)` integrates the corrected flow.

    Cost: one JVP of the semi-gradient (a forward-over-reverse pass through all n states).

    Returns:
      A pytree like `params`.
    """
    P, r, g = _parametric_operands(states, P, r, gamma, "second_order_correction")
    return _call_cached(_correction, apply_fn, params, states, P, r, g)


def second_order_correction_terms(
    apply_fn: Callable, params: Any, states: Any, P: Any, r: Any, gamma: Any
) -> tuple[Any, Any]:
    """The two terms of f₁ (Lyle et al. 2022 eq. 19, 39): (gradient-norm term, interference term).

    gradient-norm term = ½∇_θ‖∇_θTD(θ)‖² with the target frozen at θ (TD = ½‖V_θ − □TπV_θ‖²);
    interference term = γ∇_θV_θᵀ Pπ ∇_θV_θ f(θ) (alignment of each state's gradient with its successors').
    Their sum is `second_order_correction`.

    Returns:
      (grad_norm_term, interference_term), pytrees like `params`.
    """
    P, r, g = _parametric_operands(states, P, r, gamma, "second_order_correction_terms")
    return _call_cached(_correction_terms, apply_fn, params, states, P, r, g)


def td_parameter_steps(
    apply_fn: Callable, params: Any, states: Any, P: Any, r: Any, gamma: Any, step_size: Any, num_steps: Any
) -> Any:
    """θ after `num_steps` expected semi-gradient TD steps θ ← θ + h f(θ) (Lyle et al. 2022 eq. 17).

    A `lax.fori_loop` (num_steps may be traced). Returns a pytree like `params`.
    """
    P, r, g = _parametric_operands(states, P, r, gamma, "td_parameter_steps")
    return _call_cached(_steps, apply_fn, params, states, P, r, g, step_size, num_steps)


def td_parameter_flow(
    apply_fn: Callable,
    params: Any,
    states: Any,
    P: Any,
    r: Any,
    gamma: Any,
    time: Any,
    *,
    step_size: Any = None,
    num_substeps: int = 200,
) -> Any:
    """θ(time) under the semi-gradient flow, first order (eq. 18) or with the f₁ correction (Obs. 4.2).

    step_size=None integrates ∂ₜθ = f(θ); step_size=h integrates ∂ₜθ = f(θ) − (h/2)f₁(θ), which matches
    `td_parameter_steps(..., h, n)` at time n·h up to O(h²) (vs O(h) for the first-order flow). Classic
    RK4 with `num_substeps` steps (error O((time/num_substeps)⁴)); each step costs 4 semi-gradients (plus
    4 JVPs of them with the correction).

    Returns:
      A pytree like `params`.
    """
    fn = "td_parameter_flow"
    P, r, g = _parametric_operands(states, P, r, gamma, fn)
    if isinstance(num_substeps, bool) or int(num_substeps) != num_substeps or num_substeps < 1:
        raise ValueError(f"{fn}: `num_substeps` must be a positive Python int, got {num_substeps}.")
    corrected = step_size is not None
    h = jnp.asarray(0.0 if step_size is None else step_size, P.dtype)
    return _call_cached(_flow, apply_fn, params, states, P, r, g, jnp.asarray(time, P.dtype), h,
                        static=(int(num_substeps), corrected))
