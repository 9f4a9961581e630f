"""Lyle et al. 2022, Fig. 11 (App. D.1): the student's update rank over distillation, by objective.

The paper: "Results from post-training distillation on a variety of objectives. We note that advantage
regression tends to exhibit the lowest update rank, with the qr agent tending to exhibit the highest
update rank and the q-regression objectives falling somewhere in between. Because the behaviour
cloning objective minimizes a cross-entropy loss rather than a regression loss, further investigation
is required to understand how the trajectory of its update dimension differs from those of the
regression objectives."

What this module does: per game, the DQN teacher of Fig. 5 (the same config and `teacher_dir`, so a
teacher trained by one figure is reused by the other: `experiments._distill`); fresh students are
distilled from it (`tdjax.train.OfflineConfig`, the teacher collecting with ε = 0.1, App. B.3) with
each objective — q-regression on all actions (`value_distillation`, eq. 22), `qa_regression`,
`advantage_regression`, `behaviour_cloning`, offline `qr_dqn` and `double_dqn` — and the in-loop
probe measures the student's update rank (ε = 0.1, k transitions, with the student's own Adam state;
the policy update matrix for the BC student) every `probe_interval` updates. The teacher's own update
rank at the end of its training is the reference line.

Scales (`--scale`): `smoke` (MinAtar Breakout and SpaceInvaders, 40k-step teachers, 3k-update students,
2 seeds; minutes on 2 cores); `cpu` (+ Asterix, 300k-step teachers, 30k updates); `paper` (Atari
through envpool, the Fig. 5 paper teachers: a GPU job).

Run: `python -m experiments.lyle22_fig11 --out outputs/lyle22_fig11 [--scale smoke|cpu|paper]`.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
import warnings
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from experiments import lyle22_fig5 as fig5
from experiments._distill import teacher_and_data
from experiments._harness import Experiment, progress_bar
from tdjax.report import Claims
from tdjax.train import OfflineConfig, ValueConfig
from tdjax.train.seeds import train_seeds

NAME = "lyle22_fig11"
SCALES = ("smoke", "cpu", "paper")
OBJECTIVES = ("value_distillation", "qa_regression", "advantage_regression", "behaviour_cloning", "qr_dqn",
              "double_dqn")
LABELS = {"value_distillation": "q-regression", "qa_regression": "qa-regression",
          "advantage_regression": "adv-regression", "behaviour_cloning": "BC", "qr_dqn": "QR", "double_dqn": "double-Q"}


@dataclasses.dataclass(frozen=True)
class Config:
    games: tuple[str, ...] = ("Breakout-MinAtar", "SpaceInvaders-MinAtar")
    seed: int = 0
    seeds: int = 2  # student seeds (vmapped)
    teacher_dir: str = "outputs/teachers"  # shared with Fig. 5
    teacher: ValueConfig = fig5.Config().teacher
    student: OfflineConfig = OfflineConfig(
        network="minatar_cnn", num_updates=3_000, batch_size=32, lr=1e-3, collect=True, collect_epsilon=0.1,
        target_update_interval=500, n_quantiles=51, probe_interval=250, probe_k=32)
    objectives: tuple[str, ...] = OBJECTIVES
    late_fraction: float = 0.5  # the claims compare the mean rank over the last half of the probes


def config(scale: str = "smoke") -> Config:
    """`smoke`: two MinAtar games; `cpu`: three, longer; `paper`: Fig. 5's Atari teachers (GPU)."""
    if scale not in SCALES:
        raise ValueError(f"{NAME}: scale must be one of {SCALES}, got {scale!r}.")
    cfg = Config()
    if scale in ("cpu", "paper"):
        f5 = fig5.config(scale)
        cfg = dataclasses.replace(cfg, games=f5.games, teacher=f5.teacher,
                                  student=cfg.student.replace(network=f5.student.network,
                                                              num_updates=f5.student.num_updates,
                                                              lr=f5.student.lr, adam_eps=f5.student.adam_eps,
                                                              probe_interval=max(250, f5.student.num_updates // 20)))
    return cfg


def tiny() -> Config:
    """Seconds, for tests: CartPole with MLPs, two of the objectives (each is one compilation), three probes."""
    f5 = fig5.tiny()
    return dataclasses.replace(
        Config(), games=("CartPole-v1",), teacher_dir="", seeds=2, teacher=f5.teacher,
        objectives=("advantage_regression", "qr_dqn"),
        student=OfflineConfig(network="mlp", hidden=(32,), num_updates=150, batch_size=32, lr=1e-3, collect=True,
                              target_update_interval=50, n_quantiles=8, probe_interval=50, probe_k=8))


def _validate(cfg: Config) -> None:
    if not cfg.games:
        raise ValueError(f"{NAME}: Config.games is empty. Fix: name at least one game.")
    bad = [o for o in cfg.objectives if o not in OBJECTIVES]
    if bad or not cfg.objectives:
        raise ValueError(f"{NAME}: Config.objectives={cfg.objectives}: use names from {OBJECTIVES}.")
    if cfg.student.probe_interval <= 0:
        raise ValueError(f"{NAME}: Config.student.probe_interval must be > 0 (the figure is made of probes).")
    if cfg.seeds < 1 or not 0 < cfg.late_fraction <= 1:
        raise ValueError(f"{NAME}: Config.seeds must be >= 1 and late_fraction in (0, 1].")


def run(cfg: Config, show_progress: bool = True) -> dict:
    """Update ranks [G, O, S, P] at the probed updates, the teacher's final rank [G]."""
    _validate(cfg)
    G, O = len(cfg.games), len(cfg.objectives)
    tmp = Path(tempfile.mkdtemp(prefix="tdjax_fig11_"))
    rank = None
    teacher_rank = np.full(G, np.nan)
    seconds = np.zeros((G, O))
    probe_updates = None
    key = jax.random.key(cfg.seed)
    jobs = [(g, o) for g in range(G) for o in range(O)]
    paths = {}
    for g, o in progress_bar(iterable=jobs, desc=NAME, enabled=show_progress):
        game = cfg.games[g]
        if g not in paths:
            folder = (Path(cfg.teacher_dir) if cfg.teacher_dir else tmp) / game
            paths[g] = teacher_and_data(cfg.teacher.replace(env=game), folder, jax.random.fold_in(key, g))
            tm = paths[g][2]
            if tm is not None and tm["probed"].any():
                teacher_rank[g] = float(np.nanmean(tm["update_rank"][tm["probed"]][-3:]))
        t0 = time.time()
        s_cfg = cfg.student.replace(teacher=paths[g][0], dataset=paths[g][1], objective=cfg.objectives[o])
        _, m = train_seeds(s_cfg, jax.random.fold_in(key, 100 + g), cfg.seeds, keep_state=False)
        m = jax.tree.map(np.asarray, m)
        probed = m.probes.probed[0]
        if rank is None:
            rank = np.full((G, O, cfg.seeds, int(probed.sum())), np.nan)
            probe_updates = m.updates[0, probed]
        rank[g, o] = m.probes.update_rank[:, probed]
        seconds[g, o] = time.time() - t0
    return dict(rank=rank, teacher_rank=teacher_rank, probe_updates=probe_updates, seconds=seconds,
                games=np.array(cfg.games), objectives=np.array(cfg.objectives))


def check_claims(cfg: Config, res: dict) -> Claims:
    """Fig. 11's caption, per game, on the mean rank over the last `late_fraction` of the probes."""
    objs = [str(o) for o in res["objectives"]]
    claims = Claims(NAME, settings=dict(
        games=list(cfg.games), seeds=cfg.seeds, teacher_steps=cfg.teacher.total_steps,
        student_updates=cfg.student.num_updates, probe_interval=cfg.student.probe_interval,
        probe_k=cfg.student.probe_k, rank_eps=cfg.student.probe_rank_eps, optimizer=cfg.student.optimizer,
        seconds_per_run=round(float(res["seconds"].mean()), 1)))
    P = res["rank"].shape[-1]
    late = slice(P - max(1, int(round(cfg.late_fraction * P))), P)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = np.nanmean(res["rank"][..., late], axis=(2, 3))  # [G, O]
    regress = [o for o in objs if o != "behaviour_cloning"]
    for g, game in enumerate(cfg.games):
        order = ", ".join(f"{LABELS[objs[i]]} {r[g, i]:.1f}" for i in np.argsort(r[g]))
        by = {o: r[g, objs.index(o)] for o in objs}
        if "advantage_regression" in by:
            claims.check(f"{game}: advantage regression has the lowest update rank of the regression objectives",
                         bool(by["advantage_regression"] <= min(by[o] for o in regress)), order)
        if "qr_dqn" in by:
            claims.check(f"{game}: the QR student has the highest update rank", bool(by["qr_dqn"] >= max(by.values())),
                         order)
        qs = [o for o in ("value_distillation", "qa_regression") if o in by]
        if qs and "advantage_regression" in by and "qr_dqn" in by:
            claims.check(f"{game}: the q-regression objectives fall between advantage regression and QR",
                         bool(all(by["advantage_regression"] <= by[q] <= by["qr_dqn"] for q in qs)), order)
        claims.note(f"{game}: the teacher's update rank at the end of its training: {res['teacher_rank'][g]:.1f}")
    if cfg.teacher.total_steps < 1_000_000:
        claims.note("CPU scale: MinAtar teachers of Fig. 5's smoke/cpu config instead of Atari; short distillation.")
    return claims


def plot(cfg: Config, res: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    G = len(cfg.games)
    fig, axes = plt.subplots(1, G, figsize=(4.6 * G, 3.6), squeeze=False)
    x = res["probe_updates"]
    for g, game in enumerate(cfg.games):
        ax = axes[0, g]
        for o, obj in enumerate(res["objectives"]):
            r = res["rank"][g, o]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, lo, hi = np.nanmean(r, 0), np.nanmin(r, 0), np.nanmax(r, 0)
            ax.plot(x, mean, color=f"C{o}", label=LABELS[str(obj)])
            ax.fill_between(x, lo, hi, color=f"C{o}", alpha=0.15, lw=0)
        if np.isfinite(res["teacher_rank"][g]):
            ax.axhline(res["teacher_rank"][g], color="k", ls="--", lw=1, label="teacher")
        ax.set_title(game, fontsize=10)
        ax.set_xlabel("distillation updates")
        if g == 0:
            ax.set_ylabel(f"update rank (k = {cfg.student.probe_k})")
            ax.legend(fontsize=7)
    fig.suptitle("Lyle et al. 2022 Fig. 11: update rank during distillation, by objective", fontsize=11)
    fig.tight_layout()
    return fig


def _rows(cfg: Config, res: dict) -> list[dict]:
    return [dict(game=game, objective=str(obj), seed=s, update=int(u), update_rank=float(res["rank"][g, o, s, p]),
                 teacher_rank=float(res["teacher_rank"][g]))
            for g, game in enumerate(cfg.games) for o, obj in enumerate(res["objectives"])
            for s in range(cfg.seeds) for p, u in enumerate(res["probe_updates"])]


EXPERIMENT = Experiment(NAME, __doc__, config=config, tiny=tiny, scales=SCALES, run=run, plot=plot,
                        claims=check_claims, rows=_rows)


def main(argv: Sequence[str] | None = None) -> Claims:
    """`python -m experiments.lyle22_fig11 [--scale smoke|cpu|paper|tiny] [--out DIR] [--<field> VALUE ...]`."""
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    EXPERIMENT.cli()
