"""Lyle et al. 2022, Fig. 9 (App. C.2): kernel TD vs kernel Monte Carlo with an RBF kernel on the circle MDP.

The setting of the caption: states 1, ..., 50 on a cycle, the policy moves n → n + 1 mod 50, a single
reward at state 25; values are updated on states 1–40 only (states 41–50 are test states, read only as
bootstrap targets); RBF kernels of lengthscale 0.01, 1 and 100; γ = 0.5 and 0.99; TD for 20 and 100
steps, MC for 1500 steps. The dynamics are the kernel semi-gradient flows of Thm 4.2 (eq. 16), from V₀ = 0:

    TD:  ∂ₜV = K[:, train] (Rπ + γPπV − V)[train]        MC:  ∂ₜV = K[:, train] (Vπ − V)[train]

Choices the paper does not state, and ours:
  * Embedding: the states are the integers 1..50 on a line (the caption's "states are integers"), so
    K(x, y) = exp(−(x − y)²/(2ℓ²)). `embedding="circle"` puts them on a circle of circumference 50.
  * Kernel: the plain RBF (K(x, x) = 1), not normalised. `normalisation` also offers K/λmax(K_train) and
    row-normalised K.
  * "n steps" means the exact flow at time t = n (unit learning rate in the small-step limit), computed
    in closed form by `tdjax.kernel_td_trajectory`. Explicit Euler steps are analysed separately below.

What we found about the divergence (`main` recomputes every number and writes it to claims.md):
  * The paper's picture reproduces in continuous time, but the mechanism is not an unstable
    eigenvalue. No eigenvalue of C = D(I − γPπ)KD (the residual obeys ∂ₜδ = −Cδ) has negative real part
    beyond round-off (max growth rate ~4e-16), at any lengthscale or γ and for both embeddings. At
    ℓ = 100 with γ = 0.99, C is nearly singular: its eigenvalues are 0.39, 1.0e-2, 5.6e-5,
    2.4e-7, and so on. Training on states 1–40 only is an off-policy state distribution, so the
    projected TD fixed point lies very far from Vπ, and the flow drifts towards it through the slow
    modes. The RMS error to Vπ is 2.02 at t = 0, 1.08 at t = 20, 2.35 at t = 100 and 41.7 at
    t = 10⁴, while MC's error falls to 0.29. With γ = 0.5, or with ℓ ≤ 1, TD's error does not grow.
  * Discrete step sizes do not explain it. Euler steps V ← V + α·(field) diverge exponentially iff
    α > α* = min 2 Re θ/|θ|². At ℓ = 100 TD with γ = 0.99 has α* = 5.1, about 100 times MC's
    α* = 0.051 (MC's largest rate is 40, TD's 40(1 − γ)). So any step that makes TD blow up there also
    makes MC blow up. Scaling the kernel leaves this ratio unchanged, and row normalisation keeps it
    near 95. TD (γ = 0.99) has the lower threshold only at intermediate lengthscales on the line
    (0.13 ≲ ℓ ≲ 2.5). For example, at ℓ = 1 with α = 0.75 the TD residual grows by 1.05 per step
    while MC and TD (γ = 0.5) contract.
Run: `python -m experiments.lyle22_fig9 --out outputs/lyle22_fig9` (under a minute on a CPU).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

import tdjax
from experiments._harness import Experiment, progress_bar
from tdjax.report import Claims

NAME = "lyle22_fig9"
EMBEDDINGS = ("line", "circle")
NORMALISATIONS = ("none", "max_eig", "row")
# Euler thresholds ignore eigenvalues below this fraction of the largest: their real parts are
# round-off (the ℓ = 100 kernel is rank-deficient to machine precision), and they would need steps
# ~1e8 times larger than the fast modes to go unstable.
_NEGLIGIBLE_RATE = 1e-8


@dataclasses.dataclass(frozen=True)
class Config:
    n_states: int = 50
    reward_state: int = 24  # 0-based index of the paper's state 25.
    n_train: int = 40  # states 0..n_train-1 (the paper's 1..40) are updated; the rest are test states.
    lengthscales: tuple[float, ...] = (0.01, 1.0, 100.0)
    gammas: tuple[float, ...] = (0.5, 0.99)
    td_steps: tuple[int, ...] = (20, 100)
    mc_steps: int = 1500
    time_per_step: float = 1.0  # learning rate: "n steps" is the flow at t = n × time_per_step.
    long_time: float = 1e4  # horizon of the divergence check (TD error still growing?).
    n_curve_times: int = 61  # log-spaced times for the error curves.
    embedding: str = "line"  # "line" (x = 1..n) or "circle" (circumference n, neighbours ~1 apart).
    normalisation: str = "none"  # "none" (K(x, x) = 1), "max_eig" (K / λmax(K_train)), "row" (rows sum to 1).
    euler_step_size: float = 0.75  # α for the discrete-step check (inside ℓ = 1's TD-only window).
    scan_lengthscales: tuple[float, ...] = tuple(np.logspace(-2, 2, 41).tolist())  # Euler threshold scan.
    diverged_factor: float = 10.0  # an error growing above this × its initial value counts as divergence.


def config() -> Config:
    """The paper's settings (Fig. 9 caption) with the choices stated in the module docstring."""
    return Config()


def tiny() -> Config:
    """A few-second version for tests: a coarse stability scan and fewer curve points."""
    return dataclasses.replace(Config(), n_curve_times=13, scan_lengthscales=(0.01, 1.0, 100.0))


def _validate(cfg: Config) -> None:
    def bad(msg):
        raise ValueError(f"{NAME}: {msg}")

    if not 0 < cfg.n_train < cfg.n_states:
        bad(f"n_train must lie in (0, n_states = {cfg.n_states}) so that there are test states, got {cfg.n_train}.")
    if not 0 <= cfg.reward_state < cfg.n_states:
        bad(f"reward_state must lie in [0, {cfg.n_states}), got {cfg.reward_state}.")
    if cfg.embedding not in EMBEDDINGS:
        bad(f"embedding must be one of {EMBEDDINGS}, got {cfg.embedding!r}.")
    if cfg.normalisation not in NORMALISATIONS:
        bad(f"normalisation must be one of {NORMALISATIONS}, got {cfg.normalisation!r}.")
    ells = tuple(cfg.lengthscales) + tuple(cfg.scan_lengthscales)
    if not cfg.lengthscales or not cfg.scan_lengthscales or min(ells) <= 0:
        bad("lengthscales and scan_lengthscales must be non-empty tuples of positive numbers.")
    if not cfg.gammas or not all(0 <= g < 1 for g in cfg.gammas):
        bad(f"gammas must lie in [0, 1), got {cfg.gammas}.")
    if not cfg.td_steps or min(cfg.td_steps) < 1 or cfg.mc_steps < 1:
        bad("td_steps and mc_steps must be positive.")
    if cfg.time_per_step <= 0 or cfg.euler_step_size <= 0:
        bad("time_per_step and euler_step_size must be positive.")
    if cfg.long_time < cfg.time_per_step * max(cfg.td_steps) or cfg.n_curve_times < 2:
        bad("long_time must be at least the TD horizon and n_curve_times at least 2.")


def coordinates(n_states: int, embedding: str) -> np.ndarray:
    """[n] (line) or [n, 2] (circle of circumference n) coordinates of the states."""
    if embedding == "line":
        return np.arange(1.0, n_states + 1.0)
    angle = 2.0 * np.pi * np.arange(n_states) / n_states
    return n_states / (2.0 * np.pi) * np.stack([np.cos(angle), np.sin(angle)], axis=-1)


def kernel(points: np.ndarray, lengthscale: float, normalisation: str, train_mask: np.ndarray) -> jax.Array:
    """The RBF kernel over all states, optionally normalised (see `Config.normalisation`)."""
    K = tdjax.rbf_kernel(jnp.asarray(points), lengthscale)
    # Entries below machine epsilon cannot matter next to the unit diagonal, but tiny ones (~1e-218
    # at ℓ = 0.03) make LAPACK's non-symmetric eig fail to converge (NaN eigenvalues).
    K = jnp.where(K < jnp.finfo(K.dtype).eps, 0.0, K)
    if normalisation == "max_eig":
        return K / jnp.linalg.eigvalsh(K[train_mask][:, train_mask])[-1]
    if normalisation == "row":
        return K / jnp.sum(K, axis=1, keepdims=True)
    return K


def residual_rates(K, P, r, gamma, train_mask) -> np.ndarray:
    """Eigenvalues θ of C = D(I − γPπ)KD; the TD residual obeys ∂ₜδ = −Cδ. γ = 0 gives MC's DKD."""
    return np.asarray(tdjax.kernel_td_dynamics(K, P, r, gamma, train_mask).eigenvalues)


def _significant(theta: np.ndarray) -> np.ndarray:
    return theta[np.abs(theta) > _NEGLIGIBLE_RATE * np.abs(theta).max()]


def euler_threshold(theta: np.ndarray) -> float:
    """α* = min 2 Re θ/|θ|²: Euler steps V ← V + α·(field) diverge iff α > α* (0 if some Re θ < 0)."""
    theta = _significant(theta)
    if np.any(theta.real <= 0):
        return 0.0
    return float(np.min(2.0 * theta.real / np.abs(theta) ** 2))


def euler_radius(theta: np.ndarray, step_size: float) -> float:
    """Spectral radius max |1 − αθ| of the Euler residual iteration; above 1 the steps diverge."""
    return float(np.max(np.abs(1.0 - step_size * _significant(theta))))


def _threshold_scan(cfg: Config, P, r, mask, embedding, normalisation, bar) -> tuple[np.ndarray, np.ndarray]:
    """α*_MC [M] and α*_TD [G, M] over the scan lengthscales, for one embedding and normalisation."""
    points = coordinates(cfg.n_states, embedding)
    mc, td = [], []
    for ell in cfg.scan_lengthscales:
        K = kernel(points, ell, normalisation, np.asarray(mask))
        mc.append(euler_threshold(residual_rates(K, P, r, 0.0, mask)))
        td.append([euler_threshold(residual_rates(K, P, r, g, mask)) for g in cfg.gammas])
        bar.update()
    return np.array(mc), np.array(td).T


def run(cfg: Config, show_progress: bool = True) -> dict:
    """All the numbers behind the figure and the claims (computed in float64)."""
    _validate(cfg)
    L, G = len(cfg.lengthscales), len(cfg.gammas)
    M, n = len(cfg.scan_lengthscales), cfg.n_states
    td_times = cfg.time_per_step * np.asarray(cfg.td_steps, dtype=np.float64)
    mc_time = cfg.time_per_step * cfg.mc_steps
    curve_times = np.concatenate([[0.0], np.geomspace(cfg.time_per_step, max(cfg.long_time, mc_time),
                                                      cfg.n_curve_times - 1)])
    with jax.enable_x64(True), progress_bar(L * G + M * len(EMBEDDINGS) * 2, desc=NAME,
                                            enabled=show_progress) as bar, warnings.catch_warnings():
        # Large lengthscales give ill-conditioned eigenbases; the Krylov integrator needs none.
        warnings.simplefilter("ignore", tdjax.NumericalFallbackWarning)
        P, r = (jnp.asarray(a) for a in tdjax.circle_mdp(n, cfg.reward_state))
        mask = np.arange(n) < cfg.n_train
        jmask, v0 = jnp.asarray(mask), jnp.zeros(n)
        points = coordinates(n, cfg.embedding)
        v_pi = np.stack([np.asarray(tdjax.policy_evaluation(P, r, g)) for g in cfg.gammas])
        shapes = dict(td=(L, G, len(td_times), n), mc=(L, G, n), td_rmse=(L, G, cfg.n_curve_times),
                      mc_rmse=(L, G, cfg.n_curve_times), mc_train_mse=(L, G, cfg.n_curve_times),
                      td_long=(L, G, n), growth_rate=(L, G), slowest_rate=(L, G), alpha_star_td=(L, G),
                      rho_td=(L, G), euler_td_max_abs=(L, G), alpha_star_mc=(L,), rho_mc=(L,))
        out = {k: np.zeros(s) for k, s in shapes.items()}
        for i, ell in enumerate(cfg.lengthscales):
            K = kernel(points, ell, cfg.normalisation, mask)
            theta_mc = residual_rates(K, P, r, 0.0, jmask)
            out["alpha_star_mc"][i] = euler_threshold(theta_mc)
            out["rho_mc"][i] = euler_radius(theta_mc, cfg.euler_step_size)
            for j, g in enumerate(cfg.gammas):
                theta = residual_rates(K, P, r, g, jmask)
                out["growth_rate"][i, j] = np.max(-theta.real)
                out["slowest_rate"][i, j] = np.abs(_significant(theta)).min()
                out["alpha_star_td"][i, j] = euler_threshold(theta)
                out["rho_td"][i, j] = euler_radius(theta, cfg.euler_step_size)
                with np.errstate(all="ignore"):
                    euler = tdjax.kernel_td_euler_trajectory(K, P, r, g, jmask, v0, cfg.euler_step_size,
                                                             max(cfg.td_steps))
                out["euler_td_max_abs"][i, j] = np.abs(np.asarray(euler[-1])).max()
                td = np.asarray(tdjax.kernel_td_trajectory(K, P, r, g, jmask, v0, np.concatenate(
                    [td_times, [cfg.long_time], curve_times]), method="krylov"))
                out["td"][i, j], out["td_long"][i, j] = td[:len(td_times)], td[len(td_times)]
                out["td_rmse"][i, j] = np.sqrt(np.mean((td[len(td_times) + 1:] - v_pi[j]) ** 2, axis=1))
                mc = np.asarray(tdjax.kernel_mc_trajectory(K, v_pi[j], jmask, v0, np.concatenate(
                    [[mc_time], curve_times]), method="eig"))  # DKD is symmetric: eigh, well conditioned
                out["mc"][i, j] = mc[0]
                out["mc_rmse"][i, j] = np.sqrt(np.mean((mc[1:] - v_pi[j]) ** 2, axis=1))
                out["mc_train_mse"][i, j] = np.mean((mc[1:, mask] - v_pi[j][mask]) ** 2, axis=1)
                bar.update()
        # Euler thresholds over a lengthscale grid, both embeddings, plain and row-normalised K (a scalar
        # normalisation such as "max_eig" rescales every threshold alike, so "none" covers it).
        scan_mc = np.zeros((len(EMBEDDINGS), 2, M))
        scan_td = np.zeros((len(EMBEDDINGS), 2, G, M))
        for e, emb in enumerate(EMBEDDINGS):
            for k, norm in enumerate(("none", "row")):
                scan_mc[e, k], scan_td[e, k] = _threshold_scan(cfg, P, r, jmask, emb, norm, bar)
    out.update(v_pi=v_pi, train_mask=mask, td_times=td_times, mc_time=mc_time, curve_times=curve_times,
               scan_alpha_mc=scan_mc, scan_alpha_td=scan_td, scan_lengthscales=np.array(cfg.scan_lengthscales),
               lengthscales=np.array(cfg.lengthscales), gammas=np.array(cfg.gammas))
    return out


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _rmse(v, target, mask=None):
    if mask is not None:
        v, target = v[..., mask], target[..., mask]
    return float(np.sqrt(np.mean((v - target) ** 2)))


def check_claims(cfg: Config, res: dict) -> Claims:
    """Which of the paper's Fig. 9 / App. C.2 claims held, with the numbers."""
    claims = Claims(NAME, settings=dict(
        embedding=cfg.embedding, normalisation=cfg.normalisation, time_per_step=cfg.time_per_step,
        td_steps=list(cfg.td_steps), mc_steps=cfg.mc_steps, long_time=cfg.long_time,
        euler_step_size=cfg.euler_step_size, lengthscales=list(cfg.lengthscales), gammas=list(cfg.gammas),
        n_train=cfg.n_train, reward_state_paper_numbering=cfg.reward_state + 1))
    ells, gammas, v_pi, mask = cfg.lengthscales, cfg.gammas, res["v_pi"], res["train_mask"]
    L, G = len(ells), len(gammas)
    i_big, i_small = int(np.argmax(ells)), int(np.argmin(ells))
    j_hi, j_lo = int(np.argmax(gammas)), int(np.argmin(gammas))
    g_hi, g_lo = gammas[j_hi], gammas[j_lo]
    t_td, t_mc = res["td_times"], res["mc_time"]

    err0 = np.array([[_rmse(np.zeros_like(v_pi[j]), v_pi[j]) for j in range(G)] for _ in range(L)])
    err_td = np.array([[[_rmse(res["td"][i, j, s], v_pi[j]) for s in range(len(t_td))] for j in range(G)]
                       for i in range(L)])
    err_long = np.array([[_rmse(res["td_long"][i, j], v_pi[j]) for j in range(G)] for i in range(L)])
    err_mc = np.array([[_rmse(res["mc"][i, j], v_pi[j]) for j in range(G)] for i in range(L)])
    diverges = err_long > cfg.diverged_factor * err0
    claims.check(
        f"For γ = {g_hi} the larger-lengthscale (ℓ = {ells[i_big]:g}) kernel TD predictions diverge, though MC's "
        f"do not (exact flow; divergence = RMS error to Vπ at t = {cfg.long_time:g} above {cfg.diverged_factor:g}× "
        "its initial value)",
        bool(diverges[i_big, j_hi] and err_mc[i_big, j_hi] < err0[i_big, j_hi]),
        f"TD RMS error {_fmt(err0[i_big, j_hi])} at t = 0, " + ", ".join(
            f"{_fmt(err_td[i_big, j_hi, s])} at t = {t:g}" for s, t in enumerate(t_td))
        + f", {_fmt(err_long[i_big, j_hi])} at t = {cfg.long_time:g}; MC {_fmt(err_mc[i_big, j_hi])} at t = {t_mc:g}",
    )
    others = [(i, j) for i in range(L) for j in range(G) if (i, j) != (i_big, j_hi)]
    ratio = err_long / err0
    claims.check(
        f"TD does not diverge at the other settings (ℓ < {ells[i_big]:g} or γ = {g_lo})",
        not any(diverges[i, j] for i, j in others),
        "error at t = {:g} / initial error: ".format(cfg.long_time) + ", ".join(
            f"{_fmt(ratio[i, j])} (ℓ = {ells[i]:g}, γ = {gammas[j]})" for i, j in others),
    )
    growth = res["growth_rate"]
    claims.check(
        "The divergence comes from an unstable eigenvalue of the continuous-time dynamics (Re θ < 0 for some "
        "eigenvalue θ of C = D(I − γPπ)KD)",
        growth[i_big, j_hi] * cfg.long_time > 1.0,  # such a mode would grow by e or more over the horizon
        f"largest growth rate max(−Re θ) is {_fmt(growth[i_big, j_hi])} at ℓ = {ells[i_big]:g}, γ = {g_hi} and "
        f"{_fmt(growth.max())} over all settings (round-off); the error grows instead through slow modes of a nearly "
        f"singular C (smallest resolved |θ| = {_fmt(res['slowest_rate'][i_big, j_hi])})",
    )

    a_td, a_mc = res["alpha_star_td"][i_big, j_hi], res["alpha_star_mc"][i_big]
    scan_ells = res["scan_lengthscales"]
    ratio_scan = res["scan_alpha_td"][:, :, j_hi, :] / res["scan_alpha_mc"]
    e_line, e_circle = EMBEDDINGS.index("line"), EMBEDDINGS.index("circle")
    k_big = int(np.argmax(scan_ells))
    claims.check(
        f"Discrete steps explain it: some Euler step size makes TD (γ = {g_hi}, ℓ = {ells[i_big]:g}) diverge "
        "exponentially while MC at the same step does not",
        a_td < a_mc,
        f"divergence thresholds α* = {_fmt(a_td)} (TD) vs {_fmt(a_mc)} (MC): every step that makes TD diverge makes "
        f"MC diverge; rescaling K leaves the ratio unchanged, at ℓ = {scan_ells[k_big]:g} it is "
        f"{_fmt(ratio_scan[e_line, 1, k_big])} with row-normalised K and {_fmt(ratio_scan[e_circle, 0, k_big])} on the "
        "circle embedding",
    )
    rho_td, rho_mc = res["rho_td"], res["rho_mc"]
    hits = [i for i in range(L) if i != i_small and rho_td[i, j_hi] > 1 and rho_mc[i] < 1 and rho_td[i, j_lo] < 1]
    i_show = hits[0] if hits else next(i for i in range(L) if i != i_small)
    window = scan_ells[ratio_scan[e_line, 0] < 1]
    claims.check(
        f"With Euler steps of size α = {cfg.euler_step_size}, TD with γ = {g_hi} diverges at some lengthscale larger "
        f"than {ells[i_small]:g} while MC and TD with γ = {g_lo} (same step) stay bounded",
        bool(hits),
        f"ℓ = {ells[i_show]:g}: per-step growth of the residual (spectral radius) {_fmt(rho_td[i_show, j_hi])} "
        f"for TD γ = {g_hi}, {_fmt(rho_mc[i_show])} for MC, {_fmt(rho_td[i_show, j_lo])} for TD γ = {g_lo}; "
        "max |V| after "
        f"{max(cfg.td_steps)} steps {_fmt(res['euler_td_max_abs'][i_show, j_hi])} vs max Vπ {_fmt(v_pi[j_hi].max())}. "
        f"TD (γ = {g_hi}) has a lower threshold than MC only for ℓ in "
        + (f"[{window.min():.2g}, {window.max():.2g}]" if window.size else "none of the scanned lengthscales")
        + f" (line embedding); at ℓ = {ells[i_big]:g} this step makes MC (α* = {_fmt(a_mc)}) and TD with "
        f"γ = {g_lo} (α* = {_fmt(res['alpha_star_td'][i_big, j_lo])}) diverge instead",
    )

    order = np.argsort(ells)
    claims.check(
        "Shorter lengthscales give more stable learning dynamics (exact flow: TD's error growth factor "
        "err(t_long)/err(0) does not fall with ℓ, for each γ)",
        bool(all(np.all(np.diff(ratio[order, j]) >= -1e-9) for j in range(G))),
        "; ".join(f"γ = {g}: " + ", ".join(f"{_fmt(ratio[i, j])} at ℓ = {ells[i]:g}" for i in order)
                  for j, g in enumerate(gammas)),
    )
    a_star = {"MC": res["alpha_star_mc"], **{f"TD γ = {g}": res["alpha_star_td"][:, j] for j, g in enumerate(gammas)}}
    claims.check(
        "Shorter lengthscales give more stable learning dynamics (Euler steps: the threshold α* does not grow with "
        "ℓ, for MC and TD at each γ)",
        bool(all(np.all(np.diff(a[order]) <= 1e-12) for a in a_star.values())),
        "; ".join(f"{name}: α* = " + ", ".join(_fmt(a[i]) for i in order) for name, a in a_star.items())
        + f" at ℓ = {', '.join(f'{ells[i]:g}' for i in order)}",
    )

    mc = res["mc"]
    for j, g in enumerate(gammas):
        test = [_rmse(mc[i, j], v_pi[j], ~mask) ** 2 for i in range(L)]
        train = [_rmse(mc[i, j], v_pi[j], mask) ** 2 for i in range(L)]
        claims.check(
            f"MC (γ = {g}): the larger lengthscale has lower test MSE than the smallest",
            test[i_big] < test[i_small],
            f"test MSE at t = {t_mc:g}: " + ", ".join(f"{_fmt(test[i])} at ℓ = {ells[i]:g}" for i in order)
            + (f" (Vπ ≤ {_fmt(np.abs(v_pi[j][~mask]).max())} on the test states, so predicting 0 is already "
               "accurate)"
               if np.abs(v_pi[j][~mask]).max() < 1e-3 else ""),
        )
        claims.check(
            f"MC (γ = {g}): the larger lengthscale fails to fit the discontinuity at the reward state; the smallest "
            "fits the training set",
            train[i_big] > 100 * max(train[i_small], 1e-12),
            "train MSE: " + ", ".join(f"{_fmt(train[i])} at ℓ = {ells[i]:g}" for i in order),
        )
    test_max = np.abs(mc[i_small][:, ~mask]).max()
    claims.check(
        f"MC with the smallest lengthscale (ℓ = {ells[i_small]:g}) predicts zero on the test states",
        test_max < 1e-6,
        f"max |V(test)| = {_fmt(test_max)}",
    )
    return claims


def plot(cfg: Config, res: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    L, G = len(cfg.lengthscales), len(cfg.gammas)
    fig, axes = plt.subplots(G, L + 1, figsize=(4.2 * (L + 1), 3.3 * G), squeeze=False)
    x = np.arange(1, cfg.n_states + 1)
    td_colors = ["C0", "C1", "C4", "C5"]
    for j, g in enumerate(cfg.gammas):
        v_pi = res["v_pi"][j]
        for i, ell in enumerate(cfg.lengthscales):
            ax = axes[j, i]
            lo = min(0.0, v_pi.min()) - 0.4 * np.ptp(v_pi)
            hi = max(v_pi.max() + 0.8 * np.ptp(v_pi), 1.05 * min(res["td"][i, j].max(), 3 * np.abs(v_pi).max()))
            ax.axvspan(cfg.n_train + 0.5, cfg.n_states + 0.5, color="0.92", lw=0)
            ax.plot(x, v_pi, "k-", lw=2, label="Vπ")
            for s, t in enumerate(res["td_times"]):
                ax.plot(x, np.clip(res["td"][i, j, s], lo, hi), color=td_colors[s % 4], lw=1.3,
                        label=f"TD, {cfg.td_steps[s]} steps (t = {t:g})")
            ax.plot(x, np.clip(res["mc"][i, j], lo, hi), "--", color="C2", lw=1.5,
                    label=f"MC, {cfg.mc_steps} steps (t = {res['mc_time']:g})")
            if np.abs(res["td"][i, j]).max() > hi:
                ax.text(0.03, 0.97, f"TD clipped: max V = {np.abs(res['td'][i, j]).max():.3g}", transform=ax.transAxes,
                        va="top", fontsize=7, color="C3")
            ax.set_ylim(lo, hi)
            ax.set_title(f"γ = {g}, ℓ = {ell:g}", fontsize=10)
            if j == G - 1:
                ax.set_xlabel("state (shaded: test states, never updated)")
        axes[j, 0].set_ylabel("value")
    axes[0, 0].legend(fontsize=7, loc="upper left")

    ax = axes[0, L]
    t = res["curve_times"][1:]
    ell_colors = ["C0", "C1", "C3", "C4", "C5", "C6"]
    for i, ell in enumerate(cfg.lengthscales):
        for j, g in enumerate(cfg.gammas):
            style = dict(color=ell_colors[i % 6], ls="-" if j == len(cfg.gammas) - 1 else ":", lw=1.4)
            ax.loglog(t, res["td_rmse"][i, j, 1:], label=f"TD ℓ = {ell:g}, γ = {g}", **style)
    i_big = int(np.argmax(cfg.lengthscales))
    for j, g in enumerate(cfg.gammas):
        ax.loglog(t, res["mc_rmse"][i_big, j, 1:], color="C2", ls="--" if j == len(cfg.gammas) - 1 else "-.", lw=1.2,
                  label=f"MC ℓ = {cfg.lengthscales[i_big]:g}, γ = {g}")
    for s in cfg.td_steps:
        ax.axvline(s * cfg.time_per_step, color="0.6", lw=0.6)
    ax.set_ylim(bottom=1e-3)
    ax.set_xlabel("time t (steps × learning rate)")
    ax.set_title("RMS error to Vπ along the exact flow", fontsize=9)
    ax.legend(fontsize=6, ncol=2)

    ax = axes[min(1, G - 1), L] if G > 1 else axes[0, L].twinx()
    j_hi = int(np.argmax(cfg.gammas))
    ells = res["scan_lengthscales"]
    for e, emb in enumerate(EMBEDDINGS):
        for k, norm in enumerate(("plain", "row-normalised")):
            ax.loglog(ells, res["scan_alpha_td"][e, k, j_hi] / res["scan_alpha_mc"][e, k], ls="-" if k == 0 else "--",
                      color=f"C{6 + e}", label=f"{emb}, {norm} K")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xlabel("lengthscale ℓ")
    ax.set_title(f"Euler steps: α*_TD(γ = {cfg.gammas[j_hi]}) / α*_MC\n(below 1 some step makes TD alone diverge)",
                 fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle(f"Lyle et al. 2022 Fig. 9: kernel TD vs MC on the circle MDP, trained on states 1–{cfg.n_train} "
                 f"({cfg.embedding} embedding, exact gradient flow)", fontsize=11)
    fig.tight_layout()
    return fig


def _summary_rows(cfg: Config, res: dict) -> list[dict]:
    mask, rows = res["train_mask"], []
    for i, ell in enumerate(cfg.lengthscales):
        for j, g in enumerate(cfg.gammas):
            v_pi = res["v_pi"][j]
            row = dict(lengthscale=ell, gamma=g, rmse_t0=_rmse(np.zeros_like(v_pi), v_pi))
            for s, steps in enumerate(cfg.td_steps):
                row[f"td{steps}_rmse"] = _rmse(res["td"][i, j, s], v_pi)
                row[f"td{steps}_test_mse"] = _rmse(res["td"][i, j, s], v_pi, ~mask) ** 2
            row.update(td_long_rmse=_rmse(res["td_long"][i, j], v_pi),
                       mc_rmse=_rmse(res["mc"][i, j], v_pi), mc_train_mse=_rmse(res["mc"][i, j], v_pi, mask) ** 2,
                       mc_test_mse=_rmse(res["mc"][i, j], v_pi, ~mask) ** 2, growth_rate=res["growth_rate"][i, j],
                       slowest_rate=res["slowest_rate"][i, j], alpha_star_td=res["alpha_star_td"][i, j],
                       alpha_star_mc=res["alpha_star_mc"][i], euler_rho_td=res["rho_td"][i, j],
                       euler_rho_mc=res["rho_mc"][i], euler_td_max_abs=res["euler_td_max_abs"][i, j])
            rows.append(row)
    return rows


EXPERIMENT = Experiment(NAME, __doc__, config=config, tiny=tiny, run=run, plot=plot, claims=check_claims,
                        rows=_summary_rows)


def main(argv: Sequence[str] | None = None) -> Claims:
    """`python -m experiments.lyle22_fig9 [--tiny] [--out DIR] [--<any Config field> VALUE ...]`; see `--help`."""
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    EXPERIMENT.cli()
