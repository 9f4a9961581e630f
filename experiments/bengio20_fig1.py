"""Bengio et al. 2020, Fig. 1 (§4, App. B.1): correlation of log ρ̄ with the generalisation gap, per training-set size.

For each task (classification, regression, DDQN and REINFORCE on the masked-image task) and each
training-set size n_T, Pearson's r (eq. 9) between log ρ̄ (mean function interference over pairs of
training inputs after training, eq. 8) and the generalisation gap (train minus test performance),
over the runs of every capacity (n_h, n_L) and seed, with a bootstrapped 90% interval
(`tdjax.interference_gap_correlation`). The paper: once there is enough data, TD (DDQN) has a strong
negative correlation and classifiers a positive one; regression and PG are weaker or mixed.

The runs come from the grid shared by Figs 1, 2, 8 and 9 (`experiments/_bengio20_grid.py`, trained
once into `--grid-dir` and read back by the other figures). Scales: tiny, smoke, cpu (the scikit-learn
stand-ins, labelled as such), paper (SVHN and SARCOS from local files, App. B.1's grids, for a GPU).

Run: `python -m experiments.bengio20_fig1 --out outputs/bengio20_fig1 [--scale smoke|cpu|paper]`.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

import tdjax
from experiments import _bengio20_grid as grid
from experiments._harness import Experiment
from tdjax.report import Claims

NAME = "bengio20_fig1"
Config = grid.Config
config, tiny = grid.config, grid.tiny


def run(cfg: Config, show_progress: bool = True) -> dict:
    rows = grid.compute(cfg, show_progress)
    out = {}
    for task, rs in rows.items():
        n_t = np.unique(grid.column(rs, "n_train")).astype(int)
        r, lo, hi, n_runs = [], [], [], []
        for j, n in enumerate(n_t):
            sel = [x for x in rs if x["n_train"] == n and np.isfinite(x["rho_bar"]) and x["rho_bar"] > 0
                   and np.isfinite(x["gap"])]
            n_runs.append(len(sel))
            if len(sel) < 3 or np.ptp(grid.column(sel, "gap")) == 0:
                r.append(np.nan), lo.append(np.nan), hi.append(np.nan)
                continue
            c = tdjax.interference_gap_correlation(grid.column(sel, "rho_bar"), grid.column(sel, "gap"),
                                                   jax.random.fold_in(jax.random.key(cfg.seed), j),
                                                   num_resamples=cfg.num_resamples, confidence=0.9)
            r.append(float(c.r)), lo.append(float(c.low)), hi.append(float(c.high))
        out.update({f"{task}_n_train": n_t, f"{task}_r": np.asarray(r), f"{task}_low": np.asarray(lo),
                    f"{task}_high": np.asarray(hi), f"{task}_runs": np.asarray(n_runs)})
    out["tasks"] = np.asarray(list(rows))
    out["labels"] = np.asarray([grid.labels(rows)[t] for t in rows])
    return out


def check_claims(cfg: Config, res: dict) -> Claims:
    tasks = [str(t) for t in res["tasks"]]
    claims = Claims(NAME, settings=dict(tasks=tasks, data=[str(x) for x in res["labels"]]))
    for t in tasks:
        r, n_t = res[f"{t}_r"], res[f"{t}_n_train"]
        ok = np.isfinite(r)
        if not ok.any():
            claims.note(f"{t}: no training-set size had 3+ runs with a defined r")
            continue
        upper = r[ok][len(r[ok]) // 2:]  # "after being given sufficient amounts of data": the larger half
        ev = ", ".join(f"n_T={n}: r={x:+.2f} [{lo:+.2f}, {hi:+.2f}]" for n, x, lo, hi in
                       zip(n_t, r, res[f"{t}_low"], res[f"{t}_high"]))
        sign = grid.PAPER_SIGN[t]
        if sign > 0:
            claims.check(f"{t}: log ρ̄ correlates positively with the gap once there is enough data (Fig. 1, left)",
                         bool(np.mean(upper) > 0), ev)
        elif sign < 0:
            claims.check(f"{t}: log ρ̄ correlates negatively with the gap once there is enough data (Fig. 1, "
                         "middle: TD)", bool(np.mean(upper) < 0), ev)
        else:
            claims.note(f"{t}: the paper reports weak or mixed correlations here; found {ev}")
    return claims


def plot(cfg: Config, res: dict):
    import matplotlib.pyplot as plt

    tasks = [str(t) for t in res["tasks"]]
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.2), squeeze=False)
    for ax, t, lab in zip(axes[0], tasks, res["labels"]):
        n = res[f"{t}_n_train"]
        ax.plot(n, res[f"{t}_r"], "o-")
        ax.fill_between(n, res[f"{t}_low"], res[f"{t}_high"], alpha=0.3)
        ax.axhline(0, color="k", lw=0.5)
        ax.set(xscale="log", ylim=(-1.05, 1.05), xlabel="training-set size n_T", ylabel="r(log ρ̄, gap)",
               title=f"{t}\n{str(lab)[:40]}")
        ax.title.set_fontsize(8)
    fig.tight_layout()
    return fig


def _rows(cfg: Config, res: dict) -> list[dict]:
    return [dict(task=str(t), n_train=int(n), r=float(r), low=float(lo), high=float(hi), runs=int(k))
            for t in res["tasks"] for n, r, lo, hi, k in
            zip(res[f"{t}_n_train"], res[f"{t}_r"], res[f"{t}_low"], res[f"{t}_high"], res[f"{t}_runs"])]


EXPERIMENT = Experiment(NAME, __doc__, config=config, tiny=tiny, scales=grid.SCALES, run=run, plot=plot,
                        claims=check_claims, rows=_rows)


def main(argv: Sequence[str] | None = None) -> Claims:
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    EXPERIMENT.cli()
