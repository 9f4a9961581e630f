"""Lyle et al. 2022, Fig. 1 (§4.1): tabular TD fits the non-smooth eigen-components of Vπ first.

The figure: the value of a near-optimal MountainCar policy over (position, velocity); eigenvectors of Pπ
for a discretisation of the state space; and, along the trajectory of tabular expected TD updates

    V ← V + α(Rπ + γPπV − V),   α = 0.1,   V₀ = 0,

the error |αᵢᵗ − αᵢπ| of each eigenbasis coefficient (V = Σᵢ αᵢvᵢ), for the 25 smoothest eigenvectors and
for 25 with negative eigenvalues, divided by ‖Π_S Vπ‖₂, the norm of the projection of Vπ onto the span
of each set S (the caption's normalisation). By Obs. 4.1 each error decays like |1 − α(1 − γλᵢ)|ᵗ, so
the negative-eigenvalue components should converge first.

Choices the paper does not state, and ours:
  * MDP: `tdjax.mountain_car_mdp(30, 30)` (classic physics, bilinear/barycentric discretisation),
    γ = 0.99, and the policy greedy for `value_iteration` (optimal for the discretisation).
  * The chain is made recurrent: on reaching the goal the car restarts uniformly over the non-goal
    grid points, and the reward is the library's shifted by +1 (0 per step, 1 at the goal). Why: the
    episodic chain (absorbing goal) is a transient flow whose spectrum away from λ = 1 is dominated by
    defective λ = 0 blocks. Its computed negative eigenvalues are round-off perturbations of those
    blocks (eigenvalue condition numbers κᵢ = 1/|uᵢᵀvᵢ| ≥ 1e11, `main` prints them) and its 30
    λ = 1 eigenvectors (one per goal state) carry zero weight of Vπ. The restart changes neither the
    optimal policy nor the picture: Vπ is exactly a positive affine function of the episodic value
    (both are affine in E[γ^T], T the time to the goal; `main` checks the correlation is 1).
  * Coefficients: the restarted chain is still defective at λ = 0, so the full dual basis V⁻¹ does not
    exist (`tdjax.eigendecompose(P).condition` is inf and `eigen_coefficients` returns NaN). For a
    simple eigenvalue λᵢ the coefficient is still defined by the spectral projector: αᵢ = uᵢᵀV with uᵢ
    the left eigenvector scaled so that uᵢᵀvᵢ = 1 (equal to row i of V⁻¹ whenever V⁻¹ exists), and
    uᵢᵀ(V_{t+1} − Vπ) = (1 − α(1 − γλᵢ)) uᵢᵀ(V_t − Vπ) holds exactly. We compute uᵢ by inverse iteration
    for the selected eigenvalues only, and keep eigenvectors with κᵢ ≤ `max_condition` (1e8 in float64
    leaves ≥ 8 digits in each coefficient).
  * Sets: the smoothest set is the first 25 eigenvectors by decreasing Re λ (it includes the constant,
    λ = 1); the negative set is the 25 with the most negative Re λ. Most negative eigenvalues of this
    chain are complex; "negative" means Re λ < 0, and the number that are real is reported. A set is
    closed under complex conjugation (a pair is never split), so it may hold 26.
  * Complex eigenvectors are shown by their real part after the library's phase normalisation (the
    largest-magnitude entry made real and positive); both members of a pair give the same error line.
  * Horizon: 1000 TD steps (the smooth components need ~1/(α(1 − γλ)) ≈ 100–1000 steps).
Run: `python -m experiments.lyle22_fig1 --out outputs/lyle22_fig1` (under a minute on a laptop CPU).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

import tdjax
from experiments._harness import Experiment, progress_bar
from tdjax.report import Claims

NAME = "lyle22_fig1"
_ZERO = 1e-8  # |Re λ| below this is a zero eigenvalue (identical rows of Pπ), not a negative one.


@dataclasses.dataclass(frozen=True)
class Config:
    n_position: int = 30
    n_velocity: int = 30
    gamma: float = 0.99
    learning_rate: float = 0.1  # α of the tabular TD updates (Fig. 1 caption).
    num_steps: int = 1000
    num_per_set: int = 25  # eigenvectors in each of the smooth and negative-eigenvalue sets (caption).
    max_condition: float = 1e8  # eigenvalue condition κᵢ = 1/|uᵢᵀvᵢ| above which an eigenvector is skipped.
    num_shown: int = 3  # eigenvectors drawn from each set in the middle panel.


def config() -> Config:
    """The paper's settings (α = 0.1, 25 eigenvectors per set) on a 30 × 30 MountainCar grid."""
    return Config()


def tiny() -> Config:
    """A few-second version for tests: a 20 × 20 grid, 300 steps, 6 eigenvectors per set."""
    return dataclasses.replace(Config(), n_position=20, n_velocity=20, num_steps=300, num_per_set=6, num_shown=2)


def _validate(cfg: Config) -> None:
    def bad(msg):
        raise ValueError(f"{NAME}: {msg}")

    if cfg.n_position < 3 or cfg.n_velocity < 3:
        bad(f"the grid needs at least 3 × 3 points, got {cfg.n_position} × {cfg.n_velocity}.")
    if not 0 < cfg.gamma < 1:
        bad(f"gamma must lie in (0, 1), got {cfg.gamma}.")
    if not 0 < cfg.learning_rate <= 1:
        bad(f"learning_rate must lie in (0, 1] (larger steps overshoot the λ ≈ −1 components), "
            f"got {cfg.learning_rate}.")
    if cfg.num_steps < 1 or cfg.num_per_set < 1 or cfg.num_shown < 1:
        bad("num_steps, num_per_set and num_shown must be positive.")
    if cfg.num_shown > cfg.num_per_set:
        bad(f"num_shown ({cfg.num_shown}) cannot exceed num_per_set ({cfg.num_per_set}).")
    n = cfg.n_position * cfg.n_velocity
    if 2 * cfg.num_per_set + 2 > n:
        bad(f"num_per_set = {cfg.num_per_set} is too many for {n} states; lower it or use a finer grid.")


def restarting_chain(P: np.ndarray, r: np.ndarray, terminal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The episodic chain made recurrent: goal states restart uniformly over non-goal states; reward + 1.

    With the library's reward (−1 per step, 0 at the goal) shifted by +1 the goal pays 1 and every other
    step 0, so Vπ(x) = E_x[γ^T](1 + γ E_μ Vπ): a positive multiple of the episodic value + 1/(1 − γ).
    """
    P = np.array(P, dtype=np.float64)
    P[terminal] = (~terminal / np.sum(~terminal))[None, :]
    return P, np.asarray(r, dtype=np.float64) + 1.0


def _conjugate_groups(eigenvalues: np.ndarray) -> list[list[int]]:
    """Indices grouped as single real eigenvalues or adjacent conjugate pairs (the library's order)."""
    groups, i, n = [], 0, len(eigenvalues)
    while i < n:
        lam = eigenvalues[i]
        if i + 1 < n and abs(lam.imag) > 0 and np.isclose(eigenvalues[i + 1], np.conj(lam), rtol=0, atol=1e-12):
            groups.append([i, i + 1])
            i += 2
        else:
            groups.append([i])
            i += 1
    return groups


@jax.jit
def dual_row(P: jax.Array, lam: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """uᵀ with uᵀPπ = λuᵀ and uᵀv = 1 (the spectral projector's row for v), and ‖uᵀPπ − λuᵀ‖/‖u‖.

    Two steps of inverse iteration with (Pπ − λI)ᵀ: one O(n³) LU. Exists for any simple eigenvalue, also
    when Pπ is defective elsewhere and V⁻¹ does not exist. ‖u‖ = κ = 1/|ûᵀv| for unit û and v.
    """
    n = P.shape[0]
    # A relative shift of 1e-10 keeps the LU non-singular when λ is exact (λ = 1); u moves by O(κ·1e-10).
    shift = lam + 1e-10 * jnp.maximum(1.0, jnp.abs(lam))
    lu = jax.scipy.linalg.lu_factor((P - shift * jnp.eye(n, dtype=P.dtype)).T)
    u = jnp.conj(v)
    for _ in range(2):
        u = jax.scipy.linalg.lu_solve(lu, u / jnp.linalg.norm(u))
    residual = jnp.linalg.norm(u @ P - lam * u) / jnp.linalg.norm(u)
    return u / (u @ v), residual


def _select(P, eigenvalues, right, groups, num, max_condition, bar) -> tuple[list[int], dict, list[int]]:
    """Walk the groups in order; keep those whose κ ≤ max_condition until `num` eigenvectors are kept."""
    kept, rows, skipped = [], {}, []
    for g in groups:
        if len(kept) >= num:
            break
        u, residual = (np.asarray(a) for a in dual_row(P.astype(complex), eigenvalues[g[0]], right[:, g[0]]))
        kappa = np.linalg.norm(u)
        bar.update()
        if not np.isfinite(kappa) or kappa > max_condition or residual > 1e-8:
            skipped += g
            continue
        rows[g[0]] = (u, kappa)
        if len(g) == 2:
            rows[g[1]] = (np.conj(u), kappa)
        kept += g
    return kept, rows, skipped


def run(cfg: Config, show_progress: bool = True) -> dict:
    """All the numbers behind the figure and the claims (float64)."""
    _validate(cfg)
    n = cfg.n_position * cfg.n_velocity
    with jax.enable_x64(True), progress_bar(5 + 4 * cfg.num_per_set, desc=NAME, enabled=show_progress) as bar:
        mdp = tdjax.mountain_car_mdp(cfg.n_position, cfg.n_velocity)
        vi = tdjax.value_iteration(mdp.P, mdp.R, cfg.gamma)
        P_ep, r_ep = (np.asarray(a) for a in tdjax.policy_markov_chain(mdp.P, mdp.R, vi.policy))
        v_episodic = np.asarray(tdjax.policy_evaluation(P_ep, r_ep, cfg.gamma))
        bar.update()
        P, r = restarting_chain(P_ep, r_ep, mdp.terminal)
        v_pi = np.asarray(tdjax.policy_evaluation(P, r, cfg.gamma))
        dec = tdjax.eigendecompose(P)
        eigenvalues, right = np.asarray(dec.eigenvalues), np.asarray(dec.right)
        bar.update()
        groups = _conjugate_groups(eigenvalues)
        smooth, rows_s, skipped_s = _select(P, eigenvalues, right, groups, cfg.num_per_set, cfg.max_condition, bar)
        neg_groups = [g for g in reversed(groups) if eigenvalues[g[0]].real < -_ZERO]
        negative, rows_n, skipped_n = _select(P, eigenvalues, right, neg_groups, cfg.num_per_set,
                                              cfg.max_condition, bar)
        bar.update()
        idx = np.array(smooth + negative)
        rows = {**rows_s, **rows_n}
        U = np.stack([rows[i][0] for i in idx])  # [k, n] dual rows: αᵢ = U[i] @ V.
        kappa = np.array([rows[i][1] for i in idx])
        trajectory = np.asarray(tdjax.td_euler_trajectory(P, r, cfg.gamma, jnp.zeros(n), cfg.learning_rate,
                                                          cfg.num_steps))
        bar.update()
        alpha_pi = U @ v_pi
        coef_error = np.abs(trajectory @ U.T - alpha_pi)  # [T + 1, k]: |αᵢᵗ − αᵢπ|
        # Obs. 4.1 in discrete time: αᵢᵗ − αᵢπ = (1 − α(1 − γλᵢ))ᵗ (αᵢ⁰ − αᵢπ), with V₀ = 0 so αᵢ⁰ = 0.
        lam = eigenvalues[idx]
        steps = np.arange(cfg.num_steps + 1)[:, None]
        predicted = np.abs(1.0 - cfg.learning_rate * (1.0 - cfg.gamma * lam)) ** steps * np.abs(alpha_pi)
        k_s = len(smooth)
        proj_norm = np.array([np.linalg.norm((right[:, s] @ alpha_pi[sl]).real)
                              for s, sl in ((idx[:k_s], slice(0, k_s)), (idx[k_s:], slice(k_s, None)))])
        normaliser = np.where(np.arange(len(idx)) < k_s, proj_norm[0], proj_norm[1])
        bar.update()

    is_real = np.abs(eigenvalues.imag) <= 1e-12
    out = dict(
        states=mdp.states, v_pi=v_pi, v_episodic=v_episodic, policy=np.asarray(vi.policy),
        eigenvalues=eigenvalues, selected=idx, num_smooth=k_s, selected_kappa=kappa,
        selected_eigenvectors=right[:, idx], skipped_smooth=np.array(skipped_s, dtype=int),
        skipped_negative=np.array(skipped_n, dtype=int), alpha_pi=alpha_pi, projection_norm=proj_norm,
        normalised_error=coef_error / normaliser, predicted_normalised_error=predicted / normaliser,
        td_error_rms=np.sqrt(np.mean((trajectory - v_pi) ** 2, axis=1)),
        basis_condition=float(dec.condition), n_negative=int(np.sum(eigenvalues.real < -_ZERO)),
        n_negative_real=int(np.sum((eigenvalues.real < -_ZERO) & is_real)),
        n_negative_real_below=int(np.sum((eigenvalues.real < -0.05) & is_real)),
        # Evidence for the restart (claims.md): the episodic chain's negative eigenvalues are unusable.
        episodic_negative_kappa=episodic_negative_conditions(cfg),
    )
    return out


def episodic_negative_conditions(cfg: Config, num: int = 5) -> np.ndarray:
    """[num, 2]: (λ, κ) for the `num` most negative real eigenvalues of the *episodic* chain (evidence)."""
    with jax.enable_x64(True):
        mdp = tdjax.mountain_car_mdp(cfg.n_position, cfg.n_velocity)
        vi = tdjax.value_iteration(mdp.P, mdp.R, cfg.gamma)
        P, _ = tdjax.policy_markov_chain(mdp.P, mdp.R, vi.policy)
        dec = tdjax.eigendecompose(P)
        w = np.asarray(dec.eigenvalues)
        real_neg = np.nonzero((w.real < -_ZERO) & (np.abs(w.imag) <= 1e-12))[0]
        picks = real_neg[np.argsort(w.real[real_neg])][:num]
        kappa = [np.linalg.norm(np.asarray(dual_row(P.astype(complex), w[i], dec.right[:, i])[0])) for i in picks]
    return np.stack([w.real[picks], np.array(kappa)], axis=-1).reshape(-1, 2)


def _half_life(curve: np.ndarray) -> int:
    below = np.nonzero(curve <= 0.5 * curve[0])[0]
    return int(below[0]) if below.size else -1


def check_claims(cfg: Config, res: dict) -> Claims:
    """Which of the paper's Fig. 1 / Obs. 4.1 claims held, with the numbers."""
    episodic_kappa = res.get("episodic_negative_kappa")
    k_s = res["num_smooth"]
    lam = res["eigenvalues"][res["selected"]]
    err = res["normalised_error"]
    mean_s, mean_n = err[:, :k_s].mean(axis=1), err[:, k_s:].mean(axis=1)
    k_n = err.shape[1] - k_s
    claims = Claims(NAME, settings=dict(
        grid=f"{cfg.n_position}x{cfg.n_velocity}", gamma=cfg.gamma, learning_rate=cfg.learning_rate,
        num_steps=cfg.num_steps, smooth_set=k_s, negative_set=k_n, max_condition=cfg.max_condition,
        chain="MountainCar, value-iteration policy, uniform restart at the goal"))
    corr = np.corrcoef(res["v_pi"], res["v_episodic"])[0, 1]
    claims.note(
        f"The restarted chain's Vπ is a positive affine function of the episodic Vπ (correlation {corr:.12f}); the "
        f"chain has {res['n_negative']} eigenvalues with Re λ < 0, of which {res['n_negative_real']} are real "
        f"({res['n_negative_real_below']} below −0.05); the negative set uses the {k_n} with the most negative Re λ "
        f"(Re λ in [{lam[k_s:].real.min():.3f}, {lam[k_s:].real.max():.3f}], "
        f"κ ≤ {res['selected_kappa'][k_s:].max():.3g}; "
        f"{len(res['skipped_negative'])} skipped for κ > {cfg.max_condition:g}); the smooth set has Re λ in "
        f"[{lam[:k_s].real.min():.3f}, 1] (κ ≤ {res['selected_kappa'][:k_s].max():.3g})"
    )
    if episodic_kappa is not None and len(episodic_kappa):
        claims.note(
            "Why the restart: in the episodic chain the most negative real eigenvalues "
            + ", ".join(f"{w:.3f}" for w in episodic_kappa[:, 0])
            + " have eigenvalue condition numbers "
            + ", ".join(f"{k:.1e}" for k in episodic_kappa[:, 1])
            + (f" (above {cfg.max_condition:g}: round-off perturbations of defective λ = 0 blocks, not usable)"
               if episodic_kappa[:, 1].min() > cfg.max_condition else "")
        )
    t_mid = min(cfg.num_steps, max(1, cfg.num_steps // 10))
    hl_s, hl_n = _half_life(mean_s), _half_life(mean_n)
    claims.check(
        "Under tabular TD the error along negative-eigenvalue (non-smooth) eigenvectors falls faster than along the "
        "smoothest ones",
        bool(mean_n[-1] < mean_s[-1] and mean_n[t_mid] < mean_s[t_mid] and 0 <= hl_n < (hl_s if hl_s >= 0 else np.inf)),
        f"mean normalised error, negative vs smooth set: {mean_n[0]:.3g} vs {mean_s[0]:.3g} at step 0, "
        f"{mean_n[t_mid]:.3g} vs {mean_s[t_mid]:.3g} at step {t_mid}, {mean_n[-1]:.3g} vs {mean_s[-1]:.3g} at step "
        f"{cfg.num_steps}; steps to halve the mean: {hl_n} vs {hl_s if hl_s >= 0 else f'> {cfg.num_steps}'}",
    )
    rate = np.abs(1 - cfg.learning_rate * (1 - cfg.gamma * lam))
    claims.check(
        "Obs. 4.1 (discrete-time form): each coefficient error decays as |1 − α(1 − γλᵢ)|ᵗ",
        bool(np.max(np.abs(err - res["predicted_normalised_error"])) <= 1e-6 * np.max(err[0])),
        f"max deviation from the prediction {np.max(np.abs(err - res['predicted_normalised_error'])):.2e} "
        f"(errors start at up to {np.max(err[0]):.3g}); per-step factors {rate[k_s:].min():.3f}–{rate[k_s:].max():.3f} "
        f"(negative set) vs {rate[:k_s].min():.4f}–{rate[:k_s].max():.4f} (smooth set)",
    )
    p_s, p_n = res["projection_norm"]
    mass = np.abs(res["alpha_pi"])
    m_s, m_n = mass[:k_s].sum(), mass[k_s:].sum()
    claims.check(
        "Vπ puts non-zero weight on eigenvectors with negative eigenvalues",
        bool(p_n > 1e-3 * np.linalg.norm(res["v_pi"])),
        f"‖Π_neg Vπ‖ = {p_n:.3g} (‖Vπ‖ = {np.linalg.norm(res['v_pi']):.3g}); the largest |αᵢπ| in the negative set is "
        f"{mass[k_s:].max():.3g}",
    )
    claims.check(
        "Vπ's spectrum is dominated by smooth eigenfunctions (the smooth set carries more of Vπ than the negative set, "
        "both by ‖Π_S Vπ‖ and by coefficient mass Σ|αᵢπ|)",
        bool(p_s > p_n and m_s > m_n),
        f"‖Π_smooth Vπ‖ = {p_s:.3g} vs ‖Π_neg Vπ‖ = {p_n:.3g} (ratio neg/smooth {p_n / p_s:.3f}); Σ|αᵢπ| = {m_s:.3g} "
        f"(smooth) vs {m_n:.3g} (negative); the eigenbasis is not orthogonal, so these projections overlap and "
        "exceed ‖Vπ‖",
    )
    return claims


def _grid_image(ax, values, cfg: Config, title: str, cmap="viridis", symmetric=False):
    # Rows: position, columns: velocity (the paper's axes: velocity on x, position on y).
    img = np.asarray(values).reshape(cfg.n_position, cfg.n_velocity)
    kw = dict(origin="lower", aspect="auto", extent=(-0.07, 0.07, -1.2, 0.5), cmap=cmap)
    if symmetric:
        m = np.abs(img).max()
        kw.update(vmin=-m, vmax=m)
    im = ax.imshow(img, **kw)
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=6)
    return im


def plot(cfg: Config, res: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k_s, m = res["num_smooth"], cfg.num_shown
    fig = plt.figure(figsize=(16, 5.2))
    gs = fig.add_gridspec(2, m + 3, width_ratios=[2.2] + [1] * m + [0.15, 2.8], wspace=0.35, hspace=0.45)
    ax = fig.add_subplot(gs[:, 0])
    im = _grid_image(ax, res["v_pi"], cfg, "Vπ of the value-iteration policy (γ = %g)" % cfg.gamma)
    ax.set_xlabel("velocity", fontsize=8)
    ax.set_ylabel("position", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.05)
    lam = res["eigenvalues"][res["selected"]]
    vecs = res["selected_eigenvectors"]
    # Smooth row: skip the constant (λ = 1) and show one of each conjugate pair.
    picks_s = [j for j in range(1, k_s) if lam[j].imag >= 0][:m]
    picks_n = [j for j in range(k_s, len(lam)) if lam[j].imag >= 0][:m]
    for row, picks in enumerate((picks_s, picks_n)):
        for c, j in enumerate(picks):
            a = fig.add_subplot(gs[row, 1 + c])
            _grid_image(a, vecs[:, j].real, cfg, f"Re v, λ = {lam[j].real:.2f}{lam[j].imag:+.2f}i", cmap="RdBu_r",
                        symmetric=True)
            if c:
                a.set_yticklabels([])
    fig.text(0.27, 0.95, "eigenvectors of Pπ (real parts): smoothest non-constant (top), most negative Re λ (bottom)",
             fontsize=9)
    ax = fig.add_subplot(gs[:, -1])
    err = res["normalised_error"]
    t = np.arange(err.shape[0])
    ax.plot(t, err[:, :k_s], color="C0", alpha=0.2, lw=0.8)
    ax.plot(t, err[:, k_s:], color="C3", alpha=0.2, lw=0.8)
    ax.plot(t, err[:, :k_s].mean(axis=1), color="C0", lw=2.2, label=f"{k_s} smoothest (mean)")
    ax.plot(t, err[:, k_s:].mean(axis=1), color="C3", lw=2.2, label=f"{err.shape[1] - k_s} with Re λ < 0 (mean)")
    ax.set_yscale("log")
    ax.set_ylim(1e-6 * err.max(), 2 * err.max())  # below ~1e-10 the lines are round-off
    ax.set_xlabel(f"TD step (α = {cfg.learning_rate})", fontsize=8)
    ax.set_ylabel("|αᵢᵗ − αᵢπ| / ‖Π_S Vπ‖", fontsize=8)
    ax.set_title("normalised error per eigenvector", fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle("Lyle et al. 2022 Fig. 1: MountainCar %d×%d, tabular TD" % (cfg.n_position, cfg.n_velocity),
                 fontsize=11, y=1.03)
    return fig


def _rows(cfg: Config, res: dict) -> list[dict]:
    k_s = res["num_smooth"]
    err = res["normalised_error"]
    rows = []
    for j, i in enumerate(res["selected"]):
        lam = res["eigenvalues"][i]
        rows.append(dict(set="smooth" if j < k_s else "negative", index=int(i), eig_real=lam.real, eig_imag=lam.imag,
                         kappa=res["selected_kappa"][j], abs_alpha_pi=abs(res["alpha_pi"][j]),
                         err_step0=err[0, j], err_step10=err[min(10, len(err) - 1), j], err_final=err[-1, j]))
    return rows


EXPERIMENT = Experiment(NAME, __doc__, config=config, tiny=tiny, run=run, plot=plot, claims=check_claims,
                        rows=_rows)


def main(argv: Sequence[str] | None = None) -> Claims:
    """`python -m experiments.lyle22_fig1 [--tiny] [--out DIR] [--<any Config field> VALUE ...]`; see `--help`."""
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    EXPERIMENT.cli()
