"""Bengio et al. 2020, Fig. 8 (App. D): generalisation gap against the number of training seeds n_T.

Every run of the grid as a point (gap against n_T, circle size ∝ n_h), with the mean per n_T and its
bootstrapped 90% interval (the paper uses 90% here "because of the many outliers"), and Pearson's r
between log n_T and the gap over all runs. The paper (§4): the gap is driven by the training-set
size first, r < −0.91 for every task except PG, where r is slightly higher.

The runs come from the grid shared by Figs 1, 2, 8 and 9 (`experiments/_bengio20_grid.py`). Scales:
tiny, smoke, cpu (stand-in data, labelled), paper (real data, for a GPU).

Run: `python -m experiments.bengio20_fig8 --out outputs/bengio20_fig8 [--scale smoke|cpu|paper]`.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

import tdjax
from experiments import _bengio20_grid as grid
from experiments._harness import Experiment
from tdjax.report import Claims

NAME = "bengio20_fig8"
Config = grid.Config
config, tiny = grid.config, grid.tiny


def _mean_interval(x: np.ndarray, key: jax.Array, b: int) -> tuple[float, float, float]:
    """Mean of x and the 90% percentile-bootstrap interval of the mean."""
    idx = np.asarray(jax.random.randint(key, (b, len(x)), 0, len(x)))
    means = x[idx].mean(axis=1)
    return float(x.mean()), float(np.quantile(means, 0.05)), float(np.quantile(means, 0.95))


def run(cfg: Config, show_progress: bool = True) -> dict:
    rows = grid.compute(cfg, show_progress)
    out = {}
    key = jax.random.key(cfg.seed)
    for i, (task, rs) in enumerate(rows.items()):
        rs = [x for x in rs if np.isfinite(x["gap"])]
        n, gap = grid.column(rs, "n_train"), grid.column(rs, "gap")
        levels = np.unique(n)
        stats = np.asarray([_mean_interval(gap[n == v], jax.random.fold_in(key, 100 * i + j), cfg.num_resamples)
                            for j, v in enumerate(levels)])
        r = tdjax.pearson_r(np.log(n), gap) if np.ptp(gap) > 0 else np.nan
        out.update({f"{task}_n_train": n, f"{task}_gap": gap, f"{task}_n_hidden": grid.column(rs, "n_hidden"),
                    f"{task}_levels": levels, f"{task}_mean": stats[:, 0], f"{task}_low": stats[:, 1],
                    f"{task}_high": stats[:, 2], f"{task}_r": np.asarray(float(r))})
    out["tasks"] = np.asarray(list(rows))
    out["labels"] = np.asarray([grid.labels(rows)[t] for t in rows])
    return out


def check_claims(cfg: Config, res: dict) -> Claims:
    tasks = [str(t) for t in res["tasks"]]
    claims = Claims(NAME, settings=dict(tasks=tasks, data=[str(x) for x in res["labels"]]))
    for t in tasks:
        r = float(res[f"{t}_r"])
        means = ", ".join(f"n_T={int(v)}: {m:+.3f}" for v, m in zip(res[f"{t}_levels"], res[f"{t}_mean"]))
        ev = f"r(log n_T, gap) = {r:+.2f}; mean gap {means}"
        if t == "reinforce":
            claims.check(f"{t}: the gap falls as n_T grows (paper: r slightly above the others' −0.91)",
                         bool(r < 0), ev)
        else:
            claims.check(f"{t}: the gap falls as n_T grows (paper: r < −0.91)", bool(r < 0), ev)
    return claims


def plot(cfg: Config, res: dict):
    import matplotlib.pyplot as plt

    tasks = [str(t) for t in res["tasks"]]
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.2), squeeze=False)
    for ax, t, lab in zip(axes[0], tasks, res["labels"]):
        size = 10 + 40 * res[f"{t}_n_hidden"] / res[f"{t}_n_hidden"].max()
        ax.scatter(res[f"{t}_n_train"], res[f"{t}_gap"], s=size, alpha=0.5)
        lv = res[f"{t}_levels"]
        ax.plot(lv, res[f"{t}_mean"], "k-")
        ax.fill_between(lv, res[f"{t}_low"], res[f"{t}_high"], color="k", alpha=0.2)
        ax.set(xscale="log", xlabel="training seeds n_T", ylabel="generalisation gap",
               title=f"{t}: r={float(res[f'{t}_r']):+.2f}\n{str(lab)[:40]}")
        ax.title.set_fontsize(8)
    fig.tight_layout()
    return fig


def _rows(cfg: Config, res: dict) -> list[dict]:
    return [dict(task=str(t), n_train=int(v), mean_gap=float(m), low=float(lo), high=float(hi))
            for t in res["tasks"] for v, m, lo, hi in
            zip(res[f"{t}_levels"], res[f"{t}_mean"], res[f"{t}_low"], res[f"{t}_high"])]


EXPERIMENT = Experiment(NAME, __doc__, config=config, tiny=tiny, scales=grid.SCALES, run=run, plot=plot,
                        claims=check_claims, rows=_rows)


def main(argv: Sequence[str] | None = None) -> Claims:
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    EXPERIMENT.cli()
