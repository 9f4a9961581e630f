"""Lyle et al. 2022, Fig. 10 (App. C.2): a smooth eigenfunction kernel generalises from smooth targets only.

On random-walk MDPs over random graphs, kernel regression with the kernel K_S(x, y) = Σ_{i∈S} vᵢ(x)vᵢ(y)
built from the |S| = 20 smoothest eigenvectors of Pπ is fitted on a fraction of the states and tested on
the rest. The targets are:
  * n-step returns (left panel), and
  * Vπ, its projection Π_T Vπ on the top 20 eigenvectors, and its projection Π_B Vπ on the bottom 20
    (right panel).
The paper's claim is that the test error falls as the training fraction grows for Vπ, for Π_T Vπ and
for n-step returns with large n, but not for Π_B Vπ or for small n.

Choices the paper does not state, and ours:
  * Graphs: undirected Erdős–Rényi G(100, p = 2 ln 100 / 100), built by `tdjax.random_walk_mdp`.
    Undirected graphs give a reversible Pπ = D⁻¹A, so the spectrum is real and "top/bottom
    eigenvectors" is unambiguous. Rewards are i.i.d. N(0, 1) per state, and results are averaged over
    50 graphs (seeds 0–49).
  * γ = 0.99. The n-step return target is the expected n-step return bootstrapped from V₀ = 0, that is
    (Tπ)ⁿ 0 = Σ_{k<n} γᵏ Pπᵏ Rπ, for n ∈ {1, 3, 10, 30, 100}.
  * The eigenvectors have unit 2-norm (`tdjax.eigen_kernel`). The projections are the oblique
    projections along the other eigenvectors (`tdjax.eigen_projection`).
  * Regression: kernel ridge regression f = K[:, train](K[train, train] + λI)⁻¹ y[train] with λ = 0.1.
    A ridge is needed because K_S has rank 20, so the ridgeless interpolant blows up when about 20
    points are trained on. Training sets are the first ⌊fraction × n⌋ states (the paper's footnote:
    the graph distribution is permutation invariant), for fractions 0.05, 0.10, ..., 0.95.
  * Error: the mean squared error on the test states, divided by the target's mean square over all
    states, so that targets of different scales share one axis. "Falls" means the error at the largest
    fraction is at most `falls_ratio` (0.5) of the error at the smallest; "no benefit" means it is at
    least `flat_ratio` (0.9) of it.
Run: `python -m experiments.lyle22_fig10 --out outputs/lyle22_fig10` (under a minute on a CPU).
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

NAME = "lyle22_fig10"


@dataclasses.dataclass(frozen=True)
class Config:
    n_states: int = 100
    edge_prob: float | None = None  # None: tdjax's default 2 ln(n)/n (connected with high probability).
    n_graphs: int = 50
    seed: int = 0  # graphs use seeds seed, seed + 1, ...
    gamma: float = 0.99
    n_eigen: int = 20  # |S|: the kernel's smooth eigenvectors, and the size of the top/bottom sets T, B.
    n_steps: tuple[int, ...] = (1, 3, 10, 30, 100)
    train_fractions: tuple[float, ...] = tuple(np.round(np.arange(0.05, 0.951, 0.05), 2).tolist())
    ridge: float = 0.1
    falls_ratio: float = 0.5  # error(largest fraction) / error(smallest) at most this: the error falls.
    flat_ratio: float = 0.9  # at least this: no benefit from more data.


def config() -> Config:
    """The settings stated in the module docstring."""
    return Config()


def tiny() -> Config:
    """A few-second version for tests."""
    return dataclasses.replace(Config(), n_states=60, n_graphs=4, n_steps=(1, 100),
                               train_fractions=(0.1, 0.3, 0.5, 0.7, 0.9))


def _validate(cfg: Config) -> None:
    def bad(msg):
        raise ValueError(f"{NAME}: {msg}")

    if not 0 < 2 * cfg.n_eigen <= cfg.n_states:
        bad(f"n_eigen must be positive and at most n_states / 2 = {cfg.n_states // 2} (top and bottom sets must "
            f"not overlap), got {cfg.n_eigen}.")
    if cfg.n_graphs < 1:
        bad(f"n_graphs must be at least 1, got {cfg.n_graphs}.")
    if not 0 <= cfg.gamma < 1:
        bad(f"gamma must lie in [0, 1), got {cfg.gamma}.")
    if not cfg.n_steps or min(cfg.n_steps) < 1:
        bad(f"n_steps must be positive integers, got {cfg.n_steps}.")
    counts = [int(f * cfg.n_states) for f in cfg.train_fractions]
    if len(counts) < 2 or min(counts) < 1 or max(counts) >= cfg.n_states or counts != sorted(counts):
        bad(f"train_fractions must be increasing, with at least one training and one test state each; got "
            f"{cfg.train_fractions} (training set sizes {counts} of {cfg.n_states}).")
    if cfg.ridge <= 0:
        bad(f"ridge must be positive (K_S has rank n_eigen), got {cfg.ridge}.")


def target_names(cfg: Config) -> list[str]:
    return ["Vπ", f"Π_T Vπ (top {cfg.n_eigen})", f"Π_B Vπ (bottom {cfg.n_eigen})"] + [f"{n}-step return"
                                                                                  for n in cfg.n_steps]


def kernel_ridge_predict(K: jax.Array, y: jax.Array, train_mask: jax.Array, ridge: float) -> jax.Array:
    """f = K[:, train](K[train, train] + λI)⁻¹ y[train] over all states, with a fixed-shape mask.

    The masked system (DKD + λI)a = Dy has a = 0 off the training set, so K(Da) is the usual kernel ridge
    prediction, and the shapes do not depend on the training-set size (one jit for every fraction).
    """
    d = train_mask.astype(K.dtype)
    a = jnp.linalg.solve(d[:, None] * K * d[None, :] + ridge * jnp.eye(K.shape[0], dtype=K.dtype), d * y)
    return K @ (d * a)


@jax.jit
def _test_errors(K, targets, masks, ridge):
    """[targets, fractions] test MSE / mean square of the target over all states."""
    fit = jax.vmap(jax.vmap(kernel_ridge_predict, (None, None, 0, None)), (None, 0, None, None))
    pred = fit(K, targets, masks, ridge)  # [targets, fractions, n]
    test = ~masks
    mse = jnp.sum(test[None] * (pred - targets[:, None]) ** 2, axis=-1) / jnp.sum(test, axis=-1)[None]
    return mse / jnp.mean(targets**2, axis=-1)[:, None]


def graph_targets(cfg: Config, seed: int) -> tuple[jax.Array, jax.Array, np.ndarray]:
    """(K_S [n, n], targets [3 + len(n_steps), n], eigenvalues [n]) for one random graph."""
    P, r = tdjax.random_walk_mdp(cfg.n_states, edge_prob=cfg.edge_prob, directed=False, seed=seed)
    n, k = cfg.n_states, cfg.n_eigen
    dec = tdjax.eigendecompose(P)
    top, bottom = jnp.arange(k), jnp.arange(n - k, n)
    v_pi = tdjax.policy_evaluation(P, r, cfg.gamma)
    returns = tdjax.td_euler_trajectory(P, r, cfg.gamma, jnp.zeros(n), 1.0, max(cfg.n_steps))  # row m: (Tπ)ᵐ 0
    targets = jnp.stack([v_pi, tdjax.eigen_projection(dec, v_pi, top), tdjax.eigen_projection(dec, v_pi, bottom)]
                        + [returns[m] for m in cfg.n_steps])
    return tdjax.eigen_kernel(dec, top), targets, np.asarray(dec.eigenvalues)


def run(cfg: Config, show_progress: bool = True) -> dict:
    """Test errors [graphs, targets, fractions] and what they were computed from (float64)."""
    _validate(cfg)
    counts = np.array([int(f * cfg.n_states) for f in cfg.train_fractions])
    errors, spectra = [], []
    with jax.enable_x64(True):
        masks = jnp.asarray(np.arange(cfg.n_states)[None, :] < counts[:, None])
        for g in progress_bar(iterable=range(cfg.n_graphs), desc=NAME, enabled=show_progress):
            K, targets, eigenvalues = graph_targets(cfg, cfg.seed + g)
            errors.append(np.asarray(_test_errors(K, targets, masks, cfg.ridge)))
            spectra.append(eigenvalues)
    errors = np.stack(errors)
    spectra = np.stack(spectra)
    return dict(errors=errors, mean_errors=errors.mean(0), sem_errors=errors.std(0, ddof=1) / np.sqrt(len(errors))
                if len(errors) > 1 else np.zeros_like(errors[0]), train_fractions=np.array(cfg.train_fractions),
                train_counts=counts, n_steps=np.array(cfg.n_steps), eigenvalues=spectra,
                max_imag_eigenvalue=np.abs(spectra.imag).max(), target_names=np.array(target_names(cfg)))


def check_claims(cfg: Config, res: dict) -> Claims:
    """Which of the paper's Fig. 10 claims held, with the numbers."""
    claims = Claims(NAME, settings=dict(
        n_states=cfg.n_states, edge_prob=cfg.edge_prob or "2 ln(n)/n", n_graphs=cfg.n_graphs, gamma=cfg.gamma,
        n_eigen=cfg.n_eigen, n_steps=list(cfg.n_steps), ridge=cfg.ridge,
        train_fractions=f"{cfg.train_fractions[0]}..{cfg.train_fractions[-1]} ({len(cfg.train_fractions)} values)",
        falls_ratio=cfg.falls_ratio, flat_ratio=cfg.flat_ratio))
    names, mean = list(res["target_names"]), res["mean_errors"]
    ratio = mean[:, -1] / mean[:, 0]
    frac = (res["errors"][:, :, -1] < res["errors"][:, :, 0]).mean(0)
    f0, f1 = cfg.train_fractions[0], cfg.train_fractions[-1]

    def evidence(t):
        return (f"error {mean[t, 0]:.3g} at fraction {f0:g} → {mean[t, -1]:.3g} at {f1:g} (ratio {ratio[t]:.2f}); "
                f"fell in {100 * frac[t]:.0f}% of {cfg.n_graphs} graphs")

    i_small, i_large = 3 + int(np.argmin(cfg.n_steps)), 3 + int(np.argmax(cfg.n_steps))
    for t, what in ((0, "Vπ"), (1, "the projection of Vπ on the top eigenvectors"), (i_large, names[i_large])):
        claims.check(f"Generalisation error falls with the training fraction for {what}", ratio[t] <= cfg.falls_ratio,
                     evidence(t))
    for t, what in ((2, "the projection of Vπ on the bottom eigenvectors"), (i_small, names[i_small])):
        claims.check(f"Adding training states does not improve generalisation for {what}", ratio[t] >= cfg.flat_ratio,
                     evidence(t))
    order = 3 + np.argsort(cfg.n_steps)
    claims.check(
        "The benefit of more data grows with n (error ratio largest/smallest fraction decreases with n)",
        bool(np.all(np.diff(ratio[order]) <= 0)),
        ", ".join(f"n = {cfg.n_steps[t - 3]}: {ratio[t]:.2f}" for t in order),
    )
    claims.note(f"Spectra are real for undirected graphs: max |Im λ| = {res['max_imag_eigenvalue']:.1e}; "
                f"λ₂ averages {res['eigenvalues'][:, 1].real.mean():.2f} and λ_{cfg.n_eigen} "
                f"{res['eigenvalues'][:, cfg.n_eigen - 1].real.mean():.2f}")
    return claims


def plot(cfg: Config, res: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, mean, sem, x = list(res["target_names"]), res["mean_errors"], res["sem_errors"], res["train_fractions"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    cmap = plt.get_cmap("viridis")
    for s in range(len(cfg.n_steps)):
        t = 3 + s
        color = cmap(s / max(1, len(cfg.n_steps) - 1))
        left.plot(x, mean[t], "o-", ms=3, color=color, label=names[t])
        left.fill_between(x, mean[t] - sem[t], mean[t] + sem[t], color=color, alpha=0.2, lw=0)
    left.plot(x, mean[0], "k--", lw=1, label="Vπ")
    for t, color in ((0, "k"), (1, "C0"), (2, "C3")):
        right.plot(x, mean[t], "o-", ms=3, color=color, label=names[t])
        right.fill_between(x, mean[t] - sem[t], mean[t] + sem[t], color=color, alpha=0.2, lw=0)
    left.set_title("n-step return targets")
    right.set_title("Vπ and its projections on eigenvectors of Pπ")
    left.set_ylabel("test MSE / mean square of target")
    for ax in (left, right):
        ax.set_yscale("log")
        ax.set_xlabel("fraction of states in the training set")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(f"Lyle et al. 2022 Fig. 10: kernel ridge regression with K_S (top {cfg.n_eigen} eigenvectors), "
                 f"{cfg.n_graphs} random graphs, n = {cfg.n_states}, γ = {cfg.gamma}", fontsize=10)
    fig.tight_layout()
    return fig


def _rows(cfg: Config, res: dict) -> list[dict]:
    names = list(res["target_names"])
    return [dict(target=names[t], train_fraction=f, train_states=int(c), mean_error=res["mean_errors"][t, i],
                 sem_error=res["sem_errors"][t, i])
            for t in range(len(names)) for i, (f, c) in enumerate(zip(cfg.train_fractions, res["train_counts"]))]


EXPERIMENT = Experiment(NAME, __doc__, config=config, tiny=tiny, run=run, plot=plot, claims=check_claims,
                        rows=_rows)


def main(argv: Sequence[str] | None = None) -> Claims:
    """`python -m experiments.lyle22_fig10 [--tiny] [--out DIR] [--<any Config field> VALUE ...]`; see `--help`."""
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    EXPERIMENT.cli()
