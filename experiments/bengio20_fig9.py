"""Bengio et al. 2020, Fig. 9 (App. D): average function interference during training against capacity.

For every run, ρ̄ averaged over the evaluations made during training (the supervised loop evaluates
every `eval_interval` updates; the agents' value is ρ̄ after training, see below), against the
capacity n_h (and n_L) of the network: the mean per capacity over n_T and seeds, and Pearson's r
between log n_h and log ρ̄ over all runs. The paper (§5 and Fig. 9): "higher-capacity neural networks
have a smaller interference in TD experiments while the reverse is observed in classification".

Agents: the loops' in-training probe of ρ̄ is on replay states, not on the training images, and is
off at these scales (it costs an update-matrix probe); their ρ̄ is measured after training on the
first observations of the training images, which is what this figure then shows for them (noted in
claims.md). The runs come from the grid shared by Figs 1, 2, 8 and 9 (`experiments/_bengio20_grid.py`).

Run: `python -m experiments.bengio20_fig9 --out outputs/bengio20_fig9 [--scale smoke|cpu|paper]`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

import tdjax
from experiments import _bengio20_grid as grid
from experiments._harness import Experiment
from tdjax.report import Claims

NAME = "bengio20_fig9"
Config = grid.Config
config, tiny = grid.config, grid.tiny
PAPER = {"classification": +1, "ddqn": -1}
"""Sign of the trend of ρ̄ with capacity the paper describes (other tasks: no claim)."""


def run(cfg: Config, show_progress: bool = True) -> dict:
    rows = grid.compute(cfg, show_progress)
    out = {}
    for task, rs in rows.items():
        during = grid.column(rs, "rho_bar_during")
        final = grid.column(rs, "rho_bar")
        used_final = not np.isfinite(during).any()
        rho = final if used_final else during
        ok = np.isfinite(rho) & (rho > 0)
        h, l = grid.column(rs, "n_hidden")[ok], grid.column(rs, "n_layers")[ok]
        rho = rho[ok]
        caps = sorted({(int(a), int(b)) for a, b in zip(h, l)})
        mean = np.asarray([np.mean(rho[(h == a) & (l == b)]) for a, b in caps])
        r = float(tdjax.pearson_r(np.log(h), np.log(rho))) if np.ptp(h) > 0 else np.nan
        out.update({f"{task}_caps": np.asarray(caps), f"{task}_mean": mean, f"{task}_n_hidden": h,
                    f"{task}_rho": rho, f"{task}_r": np.asarray(r), f"{task}_after_training": np.asarray(used_final)})
    out["tasks"] = np.asarray(list(rows))
    out["labels"] = np.asarray([grid.labels(rows)[t] for t in rows])
    return out


def check_claims(cfg: Config, res: dict) -> Claims:
    tasks = [str(t) for t in res["tasks"]]
    claims = Claims(NAME, settings=dict(tasks=tasks, data=[str(x) for x in res["labels"]]))
    for t in tasks:
        r = float(res[f"{t}_r"])
        means = ", ".join(f"(n_h={a}, n_L={b}): {m:.3g}" for (a, b), m in zip(res[f"{t}_caps"], res[f"{t}_mean"]))
        ev = f"r(log n_h, log ρ̄) = {r:+.2f}; mean ρ̄ {means}"
        when = "after training" if bool(res[f"{t}_after_training"]) else "averaged during training"
        if t in PAPER:
            word = "grows" if PAPER[t] > 0 else "falls"
            claims.check(f"{t}: ρ̄ ({when}) {word} with capacity (Fig. 9)",
                         bool(r > 0) if PAPER[t] > 0 else bool(r < 0), ev)
        else:
            claims.note(f"{t}: ρ̄ ({when}) against capacity, no claim in the paper; found {ev}")
    return claims


def plot(cfg: Config, res: dict):
    import matplotlib.pyplot as plt

    tasks = [str(t) for t in res["tasks"]]
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.2), squeeze=False)
    for ax, t, lab in zip(axes[0], tasks, res["labels"]):
        ax.scatter(res[f"{t}_n_hidden"], res[f"{t}_rho"], s=10, alpha=0.4)
        caps = res[f"{t}_caps"]
        for nl in np.unique(caps[:, 1]):
            sel = caps[:, 1] == nl
            ax.plot(caps[sel, 0], res[f"{t}_mean"][sel], "o-", label=f"n_L={nl}")
        ax.set(xscale="log", yscale="log", xlabel="n_h", ylabel="ρ̄", title=f"{t}\n{str(lab)[:40]}")
        ax.title.set_fontsize(8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _rows(cfg: Config, res: dict) -> list[dict]:
    return [dict(task=str(t), n_hidden=int(a), n_layers=int(b), mean_rho_bar=float(m),
                 after_training=bool(res[f"{t}_after_training"]))
            for t in res["tasks"] for (a, b), m in zip(res[f"{t}_caps"], res[f"{t}_mean"])]


EXPERIMENT = Experiment(NAME, __doc__, config=config, tiny=tiny, scales=grid.SCALES, run=run, plot=plot,
                        claims=check_claims, rows=_rows)


def main(argv: Sequence[str] | None = None) -> Claims:
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    EXPERIMENT.cli()
