"""Bengio et al. 2020, Fig. 2 (§4): generalisation gap against interference ρ̄ over all runs of every task.

Every run of the grid (all training-set sizes, capacities and seeds) as one point: ρ̄ (normalised by
the task's largest, for comparison, as the paper) against the gap, with the least-squares line and
Pearson's r over all runs (bootstrapped 90% interval, `tdjax.interference_gap_correlation` with
`log=False`). The paper: for both classification tasks r > 0.9, positive to a lesser extent for PG;
negative but weak for regression and value-based (DDQN) runs.

The runs come from the grid shared by Figs 1, 2, 8 and 9 (`experiments/_bengio20_grid.py`). Scales:
tiny, smoke, cpu (stand-in data, labelled), paper (real data, for a GPU).

Run: `python -m experiments.bengio20_fig2 --out outputs/bengio20_fig2 [--scale smoke|cpu|paper]`.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

import tdjax
from experiments import _bengio20_grid as grid
from experiments._harness import Experiment
from tdjax.report import Claims

NAME = "bengio20_fig2"
Config = grid.Config
config, tiny = grid.config, grid.tiny
PAPER = {"classification": +1, "reinforce": +1, "regression": -1, "ddqn": -1}
"""Sign of r(ρ̄, gap) over all runs in the paper's Fig. 2."""


def run(cfg: Config, show_progress: bool = True) -> dict:
    rows = grid.compute(cfg, show_progress)
    out = {}
    for i, (task, rs) in enumerate(rows.items()):
        rs = [x for x in rs if np.isfinite(x["rho_bar"]) and np.isfinite(x["gap"])]
        rho, gap = grid.column(rs, "rho_bar"), grid.column(rs, "gap")
        rho_n = rho / np.max(np.abs(rho))
        c = tdjax.interference_gap_correlation(rho_n, gap, jax.random.fold_in(jax.random.key(cfg.seed), i),
                                               num_resamples=cfg.num_resamples, log=False)
        slope, intercept = np.polyfit(rho_n, gap, 1)
        out.update({f"{task}_rho": rho_n, f"{task}_gap": gap, f"{task}_n_hidden": grid.column(rs, "n_hidden"),
                    f"{task}_n_layers": grid.column(rs, "n_layers"), f"{task}_n_train": grid.column(rs, "n_train"),
                    f"{task}_r": np.asarray([float(c.r), float(c.low), float(c.high)]),
                    f"{task}_fit": np.asarray([slope, intercept])})
    out["tasks"] = np.asarray(list(rows))
    out["labels"] = np.asarray([grid.labels(rows)[t] for t in rows])
    return out


def check_claims(cfg: Config, res: dict) -> Claims:
    tasks = [str(t) for t in res["tasks"]]
    claims = Claims(NAME, settings=dict(tasks=tasks, data=[str(x) for x in res["labels"]]))
    for t in tasks:
        r, lo, hi = res[f"{t}_r"]
        ev = f"r={r:+.2f} [{lo:+.2f}, {hi:+.2f}] over {len(res[f'{t}_gap'])} runs"
        if PAPER[t] > 0:
            claims.check(f"{t}: the gap grows with ρ̄ over all runs (Fig. 2: r > 0)", bool(r > 0), ev)
            if t == "classification":
                claims.check(f"{t}: strongly (the paper: r > 0.9 for SVHN and CIFAR-10)", bool(r > 0.9), ev)
        else:
            claims.check(f"{t}: the gap falls with ρ̄ over all runs (Fig. 2: r < 0, weak)", bool(r < 0), ev)
    return claims


def plot(cfg: Config, res: dict):
    import matplotlib.pyplot as plt

    tasks = [str(t) for t in res["tasks"]]
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.2), squeeze=False)
    for ax, t, lab in zip(axes[0], tasks, res["labels"]):
        x, y = res[f"{t}_rho"], res[f"{t}_gap"]
        size = 10 + 40 * res[f"{t}_n_hidden"] / res[f"{t}_n_hidden"].max()
        sc = ax.scatter(x, y, s=size, c=np.log10(res[f"{t}_n_train"]), alpha=0.7)
        xs = np.linspace(x.min(), x.max(), 10)
        a, b = res[f"{t}_fit"]
        ax.plot(xs, a * xs + b, "k--", lw=1)
        ax.set(xlabel="ρ̄ (normalised)", ylabel="generalisation gap", title=f"{t}: r={res[f'{t}_r'][0]:+.2f}\n"
               f"{str(lab)[:40]}")
        ax.title.set_fontsize(8)
        fig.colorbar(sc, ax=ax, label="log10 n_T")
    fig.tight_layout()
    return fig


def _rows(cfg: Config, res: dict) -> list[dict]:
    return [dict(task=str(t), rho_normalised=float(x), gap=float(y), n_hidden=int(h), n_layers=int(l), n_train=int(n))
            for t in res["tasks"] for x, y, h, l, n in
            zip(res[f"{t}_rho"], res[f"{t}_gap"], res[f"{t}_n_hidden"], res[f"{t}_n_layers"], res[f"{t}_n_train"])]


EXPERIMENT = Experiment(NAME, __doc__, config=config, tiny=tiny, scales=grid.SCALES, run=run, plot=plot,
                        claims=check_claims, rows=_rows)


def main(argv: Sequence[str] | None = None) -> Claims:
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    EXPERIMENT.cli()
