"""Bengio et al. 2020, Fig. 3 (§5): regression on D*, the loss change at the update sample's temporal neighbours.

The paper: a trained DQN agent's transitions (ε = 5%) form a fixed dataset D*; fresh networks are
trained on it with three supervised objectives, "using D* as a dataset and Q_θ* as a distillation
target": L_MC (Q_θ(s, a) − G)², L_reg (Q_θ(s, a) − Q_θ*(s, a))² and L_TD* (Q_θ(s, a) − (r + γ maxₐ′
Q_θ*(s′, a′)))². Along training it measures "the difference in pointwise TD loss (L_QL) for states
surrounding the state used for the update (i.e. states with a temporal offset of ± 30 in the replay
buffer trajectories)". Fig. 3 plots that gain against the offset x, dotted at x = 0; the text: "curves
tend to be positive around x = 0 [...], especially from indices −10 to 10, showing that constructive
interference is possible", and L_reg and L_TD* "have similar targets [...]. Indeed, their curves mostly
overlap".

What this module does: per game, the DQN teacher of Lyle Fig. 5 (`experiments._distill.teacher_and_data`
with `lyle22_fig5`'s teacher config, so a teacher saved under `teacher_dir` is reused), and D*: its
ε = 0.05 rollouts (`tdjax.train.collect_dataset`, cached next to it, `experiments._distill.dstar`). For
each objective ("mc_regression", "q_regression", "td_star" of `tdjax.train.OfflineConfig`) `student_seeds`
students (vmapped, `tdjax.train.seeds.make_seed_runner`; every objective starts from the same initial
weights, as in the released code) are trained in chunks of `measure_every` updates. After each chunk,
per seed, `num_samples` update samples s_t drawn from the complete episodes of D* and their neighbours
s_{t+x}, x = −30..30, within the episode (`tdjax.train.replay.neighbours`) go to
`tdjax.loss_change_by_offset`: ONE step of the student's real optimizer (Adam, with its moments) on s_t
alone, and the gain J_θ(s_{t+x}) − J_θ′(s_{t+x}) of two losses J:
  * the student's own objective;
  * the TD loss to the teacher's bootstrap, (Q_θ(s, a) − (r + γ d maxₐ′ Q_θ*(s′, a′)))², i.e. L_TD*.
    The text names "the pointwise TD loss (L_QL)"; the released code (atari_regress.py, `Measures`)
    records the gains of its "td" loss, whose bootstrap is the pretrained network θ*: that is L_TD*,
    and it is what is measured here (for the L_TD* student it is its own objective).
Results: the mean gain per offset (count-weighted over samples, seeds and measuring points), and per
measuring point the relative gain (normalised by the x = 0 value).

Where this differs from the paper, on purpose or by necessity:
  * smoke/cpu: MinAtar Breakout and Asterix stand in for Atari MsPacman, Asterix and Seaquest (both are
    jittable gymnax games, so teachers, D* and vmapped students fit in minutes on 2 CPU cores; Asterix
    is the paper's own game, Breakout the teacher Fig. 5 already caches), with the MinAtar CNN;
  * the losses are squared errors (the released code uses the smooth-L1 loss);
  * no L2 weight regularisation (the paper: 1e-4): `OfflineConfig` has no weight decay;
  * the Nature CNN (paper scale) has ReLU, not the paper's leaky ReLU; gradients are not clipped;
  * `update="per_sample"` steps on s_t alone (the text: "the state used for the update"); the released
    code measures around a minibatch step of 32 (`update="batch"` does that).

Scales (`--scale`): `smoke` (2 MinAtar games, Fig. 5's 40k-step teachers, 5k-step D* × 4 envs, 2,000
updates measured every 500, 2 seeds: under 5 minutes on 2 cores with cached teachers); `cpu` (Fig. 5's
300k-step teachers, 25k-step D*, 20,000 updates, 4 seeds); `paper` (App. B.2: Atari MsPacman, Asterix,
Seaquest with sticky actions through envpool, Nature CNN, lr 1e-4, γ 0.99, batch 32, a 500k-transition
D*, 500k updates, 10 runs: a GPU job; D* is part of every vmapped seed's state, ~3.5 GB each with frames
stored once, so on one 80 GB GPU pass `--student-seeds 5` and a second `--seed`).

Run: `python -m experiments.bengio20_fig3 --out outputs/bengio20_fig3 [--scale smoke|cpu|paper]`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from experiments import lyle22_fig5
from experiments._bengio20_offsets import (
    band,
    dstar_positions,
    offline_measurer,
    relative_l1,
    teacher_and_dstar,
    temporary_folder,
    weighted_profile,
)
from experiments._harness import Experiment, progress_bar
from tdjax.report import Claims
from tdjax.train import OfflineConfig, ValueConfig, load_dataset
from tdjax.train.seeds import make_seed_runner

NAME = "bengio20_fig3"
SCALES = ("smoke", "cpu", "paper")
OBJECTIVES = ("mc_regression", "q_regression", "td_star")
LABELS = {"mc_regression": "L_MC", "q_regression": "L_reg", "td_star": "L_TD*"}
LOSSES = ("gain", "gain_td")  # the gain in the student's own objective and in the TD loss L_TD*
LOSS_NAMES = {"gain": "own objective", "gain_td": "TD loss L_TD*"}
NEAR, FAR = (1, 10), (20, 30)  # |x| ranges of the claims ("especially from indices −10 to 10")


@dataclasses.dataclass(frozen=True)
class Config:
    games: tuple[str, ...] = ("Breakout-MinAtar", "Asterix-MinAtar")  # MinAtar stand-ins (module docstring)
    seed: int = 0  # root of teacher, D*, student and update-sample randomness
    teacher_dir: str = "outputs/teachers"  # teachers and D* are saved here and reused (Fig. 5's teachers too)
    teacher: ValueConfig = lyle22_fig5.Config().teacher  # Fig. 5's DQN teacher; its env is set per game
    data_steps: int = 5_000  # vector steps of D* (× teacher.num_envs transitions)
    data_epsilon: float = 0.05  # ε of the teacher's ε-greedy rollouts (App. B.2: 5%)
    # the students; `objective`, `teacher` and `dataset` are set per run
    student: OfflineConfig = OfflineConfig(
        network="minatar_cnn", num_updates=2_000, batch_size=32, lr=1e-4, gamma=0.99, max_grad_norm=None,
        probe_interval=0, checkpoint_interval=500)
    objectives: tuple[str, ...] = OBJECTIVES  # L_MC, L_reg, L_TD* (OfflineConfig objective names)
    student_seeds: int = 2  # vmapped; every objective starts from the same initial weights
    measure_every: int = 500  # updates between measuring points (num_updates is a multiple of it)
    num_samples: int = 64  # update samples per measuring point and seed
    max_offset: int = 30  # offsets x = −X..X (§5: ± 30)
    update: str = "per_sample"  # "per_sample": one step on s_t alone; "batch": one step on all samples at once
    chunk_size: Optional[int] = None  # update samples per vmapped chunk (None: all; bounds memory)


def config(scale: str = "smoke") -> Config:
    """`smoke`: 2 MinAtar games, 2,000 updates; `cpu`: 20,000 updates; `paper`: Atari, App. B.2 (GPU)."""
    if scale not in SCALES:
        raise ValueError(f"{NAME}: scale must be one of {SCALES}, got {scale!r}.")
    cfg = Config()
    if scale == "cpu":
        cfg = dataclasses.replace(
            cfg, teacher=lyle22_fig5.config("cpu").teacher, data_steps=25_000, student_seeds=4,
            measure_every=2_000, student=cfg.student.replace(num_updates=20_000, checkpoint_interval=2_000))
    if scale == "paper":
        teacher = lyle22_fig5.config("paper").teacher
        cfg = dataclasses.replace(
            cfg, games=("MsPacman-v5", "Asterix-v5", "Seaquest-v5"), teacher=teacher,
            data_steps=500_000 // teacher.num_envs, student_seeds=10, measure_every=25_000, num_samples=32,
            chunk_size=8,
            student=cfg.student.replace(network="nature_cnn", num_updates=500_000, lr=1e-4, batch_size=32,
                                        checkpoint_interval=25_000))
    return cfg


def tiny() -> Config:
    """Seconds, for tests: CartPole with MLPs, a short teacher, 2 measuring points, offsets ±8."""
    return dataclasses.replace(
        Config(), games=("CartPole-v1",), teacher_dir="", data_steps=400, student_seeds=2, measure_every=100,
        num_samples=8, max_offset=8,
        teacher=lyle22_fig5.tiny().teacher.replace(probe_interval=0),
        student=OfflineConfig(network="mlp", hidden=(32,), num_updates=200, batch_size=32, lr=1e-3,
                              max_grad_norm=None, probe_interval=0, checkpoint_interval=100))


def _validate(cfg: Config) -> None:
    if not cfg.games:
        raise ValueError(f"{NAME}: Config.games is empty. Fix: name at least one game, e.g. ('Breakout-MinAtar',).")
    unknown = [o for o in cfg.objectives if o not in OBJECTIVES]
    if unknown or not cfg.objectives:
        raise ValueError(f"{NAME}: Config.objectives={cfg.objectives}: Fig. 3 trains with {OBJECTIVES}. "
                         "Fix: use (some of) those names.")
    for name in ("student_seeds", "measure_every", "num_samples", "max_offset", "data_steps"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{NAME}: Config.{name} must be >= 1, got {getattr(cfg, name)}.")
    if cfg.student.num_updates % cfg.measure_every:
        fixed = cfg.measure_every * max(1, cfg.student.num_updates // cfg.measure_every)
        raise ValueError(f"{NAME}: Config.student.num_updates={cfg.student.num_updates} is not a multiple of "
                         f"measure_every={cfg.measure_every}. Fix: make it one, e.g. "
                         f"--student.num-updates {fixed}.")
    if cfg.update not in ("per_sample", "batch"):
        raise ValueError(f"{NAME}: Config.update must be 'per_sample' or 'batch', got {cfg.update!r}.")
    if not 0.0 <= cfg.data_epsilon <= 1.0:
        raise ValueError(f"{NAME}: Config.data_epsilon={cfg.data_epsilon} must lie in [0, 1] (the paper: 0.05).")


def measurer(agent: Any, cfg: Config):
    """One jitted function of (learner [S], data, t [S, N], e [S, N]) -> (gain, gain_td, mask): the gain
    of the student's own objective and of the TD loss L_TD* after one step of its optimizer on each
    update sample (`cfg.update`), `experiments._bengio20_offsets.offline_measurer`."""
    return offline_measurer(agent, cfg.max_offset, cfg.update, cfg.chunk_size)


def run(cfg: Config, show_progress: bool = True) -> dict:
    """Per game and objective: students trained in chunks, the gain by offset measured after each.

    Returns arrays with axes [G games, O objectives, M measuring points, S seeds, (N samples,) W offsets]."""
    _validate(cfg)
    G, O, S, N = len(cfg.games), len(cfg.objectives), cfg.student_seeds, cfg.num_samples
    M, W = cfg.student.num_updates // cfg.measure_every, 2 * cfg.max_offset + 1
    res = {k: np.full((G, O, M, S, W), np.nan, np.float32) for k in LOSSES}
    count = np.zeros((G, O, M, S, W), np.int32)
    per_sample = np.zeros((G, O, M, S, N, W), np.float32)
    mask = np.zeros((G, O, M, S, N, W), bool)
    positions = np.zeros((G, M, S, N, 2), np.int32)
    train_loss = np.full((G, O, M), np.nan, np.float32)
    seconds = np.zeros(G)
    tmp = temporary_folder("tdjax_bengio_fig3_")
    key = jax.random.key(cfg.seed)
    bar = progress_bar(G * O * M, desc=NAME, enabled=show_progress)
    for g, game in enumerate(cfg.games):
        t0 = time.time()
        k_game = jax.random.fold_in(key, g)
        t_path, d_path = teacher_and_dstar(cfg.teacher, game, cfg.teacher_dir, tmp, k_game,
                                           data_steps=cfg.data_steps, epsilon=cfg.data_epsilon)
        ds, _ = load_dataset(d_path)
        # update samples: slots of complete episodes (L_MC needs their return), the same for every objective
        positions[g] = dstar_positions(np.asarray(ds.replay.data.valid & ds.mc_complete), N, S, M, cfg.seed, g,
                                       f"{game} (transitions in complete episodes)")
        for o, objective in enumerate(cfg.objectives):
            s_cfg = cfg.student.replace(teacher=t_path, dataset=d_path, objective=objective)
            runner = make_seed_runner(s_cfg, S)
            state = runner.init(jax.random.fold_in(k_game, 2))  # the same initial weights for every objective
            data = jax.tree.map(lambda a: a[0], state.data)
            measure = measurer(runner.agent, cfg)
            for m in range(M):
                state, metrics = runner.run(state, m * cfg.measure_every, cfg.measure_every)
                train_loss[g, o, m] = float(np.mean(metrics.loss))
                t, e = jnp.asarray(positions[g, m, ..., 0]), jnp.asarray(positions[g, m, ..., 1])
                *gains, mask[g, o, m] = jax.tree.map(np.asarray, measure(state.learner, data, t, e))
                for k, p in zip(LOSSES, gains):
                    res[k][g, o, m] = p.mean
                count[g, o, m] = gains[0].count
                per_sample[g, o, m] = gains[0].per_sample
                bar.update()
            del state
        seconds[g] = time.time() - t0
    bar.close()
    updates = cfg.measure_every * (1 + np.arange(M))
    return dict(games=np.array(cfg.games), objectives=np.array(cfg.objectives),
                offsets=np.arange(-cfg.max_offset, cfg.max_offset + 1), updates=updates, count=count,
                per_sample=per_sample, mask=mask, positions=positions, train_loss=train_loss, seconds=seconds,
                **res)


def profiles(res: dict, key: str = "gain") -> np.ndarray:
    """The gain per offset [G, O, W], averaged over every sample of every seed and measuring point."""
    return weighted_profile(res[key], res["count"], axes=(2, 3))


def check_claims(cfg: Config, res: dict) -> Claims:
    """§5 on Fig. 3, per game, for the gain in the student's own objective and in the TD loss L_TD*."""
    x = res["offsets"]
    objs = [str(o) for o in res["objectives"]]
    claims = Claims(NAME, settings=dict(
        games=list(cfg.games), teacher_steps=cfg.teacher.total_steps, data_steps=cfg.data_steps,
        data_epsilon=cfg.data_epsilon, objectives=objs, student_updates=cfg.student.num_updates,
        measure_every=cfg.measure_every, student_seeds=cfg.student_seeds, num_samples=cfg.num_samples,
        max_offset=cfg.max_offset, update=cfg.update, lr=cfg.student.lr,
        seconds_per_game=[round(float(s), 1) for s in res["seconds"]]))
    near_sel = (np.abs(x) >= NEAR[0]) & (np.abs(x) <= NEAR[1])
    for key in LOSSES:
        prof = profiles(res, key)
        for g, game in enumerate(cfg.games):
            p0 = prof[g, :, cfg.max_offset]
            near = [band(x, prof[g, o], *NEAR) for o in range(len(objs))]
            far = [band(x, prof[g, o], *FAR) for o in range(len(objs))]
            table = "; ".join(f"{LABELS[n]}: x=0 {p0[o]:.3g}, 1≤|x|≤10 {near[o]:.3g}, 20≤|x|≤30 {far[o]:.3g}"
                              for o, n in enumerate(objs))
            where = f"{game}, gain in the {LOSS_NAMES[key]}"
            claims.check(f"{where}: positive around x = 0 (mean over 1 ≤ |x| ≤ 10) for every regression "
                         "(constructive interference)", bool(np.all(np.array(near) > 0)), table)
            decays = [bool(p0[o] > near[o] > far[o]) if np.isfinite(far[o]) else bool(p0[o] > near[o])
                      for o in range(len(objs))]
            claims.check(f"{where}: decays with |x| (gain at x = 0 > mean over 1 ≤ |x| ≤ 10 > mean over "
                         "20 ≤ |x| ≤ 30) for every regression", all(decays), table)
            if "q_regression" in objs and "td_star" in objs:
                r, t = prof[g, objs.index("q_regression")], prof[g, objs.index("td_star")]
                d = relative_l1(r[near_sel], t[near_sel])
                ev = f"relative L1 distance over 1 ≤ |x| ≤ 10: L_reg vs L_TD* {d:.2f}"
                if "mc_regression" in objs:
                    mc = prof[g, objs.index("mc_regression")]
                    ev += f", L_reg vs L_MC {relative_l1(r[near_sel], mc[near_sel]):.2f}"
                claims.check(f"{where}: the L_reg and L_TD* curves mostly overlap (relative L1 distance < 0.5)",
                             bool(d < 0.5), ev)
    claims.note("Training loss at the measuring points: " + "; ".join(
        f"{game} {LABELS[o]} " + "→".join(f"{v:.3g}" for v in res["train_loss"][g, i])
        for g, game in enumerate(cfg.games) for i, o in enumerate(objs)))
    if cfg.teacher.network != "nature_cnn":
        claims.note(f"Not the paper's scale: {', '.join(cfg.games)} instead of Atari MsPacman, Asterix, Seaquest, "
                    f"{cfg.teacher.total_steps:,}-step "
                    f"teachers, a D* of {cfg.data_steps * cfg.teacher.num_envs:,} transitions instead of 500k, "
                    f"{cfg.student.num_updates:,} updates instead of 500k, {cfg.student_seeds} seeds instead of 10; "
                    "squared losses, no L2 regularisation.")
    return claims


def plot(cfg: Config, res: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = res["offsets"]
    X = cfg.max_offset
    objs = [str(o) for o in res["objectives"]]
    G = len(cfg.games)
    fig, axes = plt.subplots(len(LOSSES), G + 2, figsize=(3.4 * (G + 2), 3.0 * len(LOSSES)), squeeze=False)
    near = (np.abs(x) >= NEAR[0]) & (np.abs(x) <= NEAR[1])
    for r, key in enumerate(LOSSES):
        prof = profiles(res, key)
        panels = [(prof[g], game.replace("-MinAtar", "")) for g, game in enumerate(cfg.games)]
        panels.append((np.nanmean(prof, axis=0), "mean over games"))
        for ax, (p, title) in zip(axes[r, :G + 1], panels):
            for o, name in enumerate(objs):
                c = f"C{o}"
                ax.plot(x[x < 0], p[o, x < 0], color=c, label=f"{LABELS[name]} (x=0: {p[o, X]:.2g})")
                ax.plot(x[x > 0], p[o, x > 0], color=c)
                ax.plot(x[X - 1:X + 2], p[o, X - 1:X + 2], color=c, ls=":")  # x = 0: the update sample
            # the neighbours set the scale; the gain at x = 0 (often far larger) is in the legend
            lim = np.nanmax(np.abs(p[:, x != 0])) * 1.3 if np.isfinite(p[:, x != 0]).any() else 1.0
            ax.set_ylim(-lim, lim)
            ax.axhline(0, color="k", lw=0.5)
            ax.axvline(0, color="k", lw=0.5, ls=":")
            ax.set_title(f"{title}: {LOSS_NAMES[key]}", fontsize=9)
            ax.set_xlabel("offset x from the update sample")
            ax.legend(fontsize=6)
        axes[r, 0].set_ylabel("gain J_θ − J_θ′")
        ax = axes[r, G + 1]  # over training: the near gain relative to the gain at x = 0
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = np.nanmean(res[key][..., near], axis=(0, 3, 4)) / np.nanmean(res[key][..., X], axis=(0, 3))
        for o, name in enumerate(objs):
            ax.plot(res["updates"], rel[o], marker="o", color=f"C{o}", label=LABELS[name])
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(f"gain over 1≤|x|≤10 / gain at x=0\n({LOSS_NAMES[key]}, mean over games)", fontsize=9)
        ax.set_xlabel("updates")
        ax.legend(fontsize=6)
    fig.suptitle("Bengio et al. 2020 Fig. 3: regression on D*, loss change by temporal offset", fontsize=11)
    fig.tight_layout()
    return fig


def _rows(cfg: Config, res: dict) -> list[dict]:
    rows = []
    profs = {k: profiles(res, k) for k in LOSSES}
    for g, game in enumerate(cfg.games):
        for o, obj in enumerate(res["objectives"]):
            for w, off in enumerate(res["offsets"]):
                rows.append(dict(game=game, objective=str(obj), offset=int(off),
                                 gain=float(profs["gain"][g, o, w]), gain_td=float(profs["gain_td"][g, o, w]),
                                 count=int(res["count"][g, o, :, :, w].sum())))
    return rows


EXPERIMENT = Experiment(NAME, __doc__, config=config, tiny=tiny, scales=SCALES, run=run, plot=plot,
                        claims=check_claims, rows=_rows)


def main(argv: Sequence[str] | None = None) -> Claims:
    """`python -m experiments.bengio20_fig3 [--scale smoke|cpu|paper|tiny] [--out DIR] [--<field> VALUE ...]`."""
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    EXPERIMENT.cli()
