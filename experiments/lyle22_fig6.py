"""Lyle et al. 2022, Fig. 6 (§6.2): policy distillation of PPO agents and generalisation to new levels.

The paper: the PPO agents of Fig. 4 are the teachers; "we train a freshly initialized network (the
distillation agent) to minimize the KL divergence with the teacher's policy π_T on transitions
collected by the teacher and stored in a buffer B_T" (eq. 24), then evaluate it on the test levels.
Fig. 6 plots, per ProcGen game, the teacher's train-level and test-level return and the student's
test-level return; the text claims that "post-training distillation consistently meets or improves
upon the generalization gap obtained by the original network, in many environments significantly
improving on the final test set performance of the PPO agent" (bigfish, caveflyer, chaser, climber
and bossfight in the figure), and that the effect varies a lot between environments.

What this module does: per game, a PPO teacher (`tdjax.train.ActorCriticConfig`, trained once and
saved under `teacher_dir`, `experiments._distill.policy_teacher_and_data`); a dataset of `data_steps`
vector steps the teacher collects on its TRAINING levels by sampling its own policy
(`tdjax.train.collect_dataset`); `student_seeds` fresh students (`tdjax.train.OfflineConfig`,
objective `policy_distillation`: KL(π ‖ π_T) + λ H(π), eq. 24, with λ = −0.01: "an entropy bonus
equal to that used to train the original PPO agent", App. B.2) trained on that fixed dataset; then
teacher and students are evaluated with `tdjax.train.evaluate_policy` (actions sampled from the
policy, ε = `eval_epsilon`) on the training levels and on the held-out test levels. The student's
train-level return is measured too, so both generalisation gaps (train − test) are reported.

Scales (`--scale`):
  * `smoke` (`make reproduce`): MinAtar Breakout and SpaceInvaders stand in for ProcGen (as in Fig. 4
    smoke). gymnax games have no level split: the "test levels" are the same game with other seeds,
    so the claims are about distillation's effect on return, not about generalisation;
  * `cpu`: ProcGen bigfish and miner (easy) through envpool, IMPALA CNN, 10 training levels and
    disjoint test levels; a short teacher run per game (the Fig. 4 cpu settings, longer);
  * `paper`: the Fig. 4 paper teachers (Raileanu & Fergus's PPO settings, 25M steps, 200 levels) on
    the 16 ProcGen games; a 1M-step teacher dataset and 100k student updates: a GPU job.

Run: `python -m experiments.lyle22_fig6 --out outputs/lyle22_fig6 [--scale smoke|cpu|paper]`.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from experiments._distill import policy_teacher_and_data
from experiments._harness import Experiment, progress_bar
from tdjax.envs import make_vec, procgen_id
from tdjax.report import Claims
from tdjax.train import ActorCriticConfig, OfflineConfig, evaluate_policy, load_teacher, make_agent
from tdjax.train.actor_critic import ppo_procgen_paper_config
from tdjax.train.seeds import train_seeds

NAME = "lyle22_fig6"
SCALES = ("smoke", "cpu", "paper")
PAPER_GAMES = ("bigfish", "heist", "miner", "chaser", "climber", "dodgeball", "fruitbot", "leaper",
               "starpilot", "plunder", "ninja", "coinrun", "caveflyer", "jumper", "maze", "bossfight")
# The returns measured per game: [teacher train, teacher test, student train, student test].
BARS = ("teacher train", "teacher test", "student train", "student test")


@dataclasses.dataclass(frozen=True)
class Config:
    # ProcGen games by name ("bigfish": envpool's easy distribution) or any environment id.
    games: tuple[str, ...] = ("Breakout-MinAtar", "SpaceInvaders-MinAtar")
    seed: int = 0
    teacher_dir: str = "outputs/teachers_ppo"  # PPO teachers and their data are saved here and reused
    # The PPO teacher (Fig. 4 smoke settings, a longer run). Its env is set per game.
    teacher: ActorCriticConfig = ActorCriticConfig(
        algo="ppo", network="auto", num_envs=16, num_steps=32, total_steps=98_304, gamma=0.99, gae_lambda=0.95,
        lr=5e-4, num_epochs=3, num_minibatches=4, normalize_rewards=True, probe_interval=0, eval_interval=8,
        eval_num_envs=8, eval_steps=32, checkpoint_interval=10)
    data_steps: int = 1_000  # vector steps of the teacher's collection (× its num_envs transitions)
    data_epsilon: float = 0.0  # ε-random actions on top of the teacher's sampled policy while collecting
    student: OfflineConfig = OfflineConfig(
        objective="policy_distillation", network="minatar_cnn", num_updates=3_000, batch_size=64, lr=5e-4,
        pd_entropy_coef=-0.01, probe_interval=0)  # an entropy BONUS equal to the PPO teacher's (App. B.2)
    student_seeds: int = 2
    eval_envs: int = 16  # environments of each return evaluation
    eval_steps: int = 1_000  # vector steps of each return evaluation
    eval_epsilon: float = 0.0  # ε of the evaluation policy (actions are sampled from the policy)
    paper: bool = False  # teachers from tdjax.train.ppo_procgen_paper_config per game instead of `teacher`


def _teacher_config(cfg: Config, game: str) -> ActorCriticConfig:
    if cfg.paper:
        return ppo_procgen_paper_config(game, env_seed=cfg.seed).replace(probe_interval=0)
    return cfg.teacher.replace(env=game if "-" in game else procgen_id(game))


def config(scale: str = "smoke") -> Config:
    """`smoke`: MinAtar stand-ins (minutes on 2 cores); `cpu`: ProcGen bigfish and miner, IMPALA CNN,
    10 training levels; `paper`: the 16 ProcGen games with the paper's PPO teachers (GPU)."""
    if scale not in SCALES:
        raise ValueError(f"{NAME}: scale must be one of {SCALES}, got {scale!r}.")
    cfg = Config()
    if scale == "cpu":
        cfg = dataclasses.replace(
            cfg, games=("bigfish", "miner"), eval_envs=8, eval_steps=500, data_steps=256,
            teacher=cfg.teacher.replace(network="impala_cnn", num_levels=10, start_level=0, num_envs=8, num_steps=32,
                                        total_steps=16_384, gamma=0.999, loop="host", eval_interval=4),
            student=cfg.student.replace(network="impala_cnn", num_updates=2_000, batch_size=32))
    if scale == "paper":
        cfg = dataclasses.replace(
            cfg, games=PAPER_GAMES, paper=True, student_seeds=3, data_steps=16_384, eval_envs=64, eval_steps=4_000,
            student=cfg.student.replace(network="impala_cnn", num_updates=100_000, batch_size=256))
    return cfg


def tiny() -> Config:
    """Seconds, for tests: CartPole with MLPs, a short PPO teacher and two students."""
    return dataclasses.replace(
        Config(), games=("CartPole-v1",), teacher_dir="", data_steps=64, eval_envs=4, eval_steps=100,
        teacher=ActorCriticConfig(env="CartPole-v1", algo="ppo", network="mlp", hidden=(32, 32), num_envs=4,
                                  num_steps=32, total_steps=2_048, num_epochs=2, num_minibatches=2, lr=1e-3,
                                  probe_interval=0, eval_interval=4, eval_num_envs=4, eval_steps=16),
        student=OfflineConfig(objective="policy_distillation", network="mlp", hidden=(32,), num_updates=200,
                              batch_size=32, lr=1e-3, pd_entropy_coef=-0.01, probe_interval=0))


def _validate(cfg: Config) -> None:
    if not cfg.games:
        raise ValueError(f"{NAME}: Config.games is empty. Fix: name at least one game, e.g. ('bigfish',).")
    if cfg.student.objective != "policy_distillation":
        raise ValueError(f"{NAME}: Config.student.objective={cfg.student.objective!r}: Fig. 6 distils with eq. 24. "
                         "Fix: --student.objective policy_distillation.")
    if not cfg.paper and cfg.teacher.algo not in ("ppo", "daac"):
        raise ValueError(f"{NAME}: Config.teacher.algo={cfg.teacher.algo!r}: the teachers are PPO agents. "
                         "Fix: --teacher.algo ppo.")
    for name in ("student_seeds", "data_steps", "eval_envs", "eval_steps"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{NAME}: Config.{name} must be >= 1, got {getattr(cfg, name)}.")
    for name in ("data_epsilon", "eval_epsilon"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ValueError(f"{NAME}: Config.{name} must lie in [0, 1], got {getattr(cfg, name)}.")


def _returns(policy_fn: Any, params: Any, env_name: str, options: dict, key: jax.Array, cfg: Config,
             backend: str) -> np.ndarray:
    """Mean return per seed (`params` stacked [S]) of the sampled policy in environments with `options`."""
    env = make_vec(env_name, cfg.eval_envs, seed=cfg.seed + 7, backend=backend, options=options)

    def one(p, k):
        return evaluate_policy(policy_fn, p, env, k, num_steps=cfg.eval_steps, epsilon=cfg.eval_epsilon,
                               sample=True)[0]

    S = jax.tree.leaves(params)[0].shape[0]
    keys = jax.random.split(key, S)
    if env.jittable:
        return np.asarray(jax.jit(jax.vmap(one))(params, keys))
    one = jax.jit(one)
    return np.array([float(one(jax.tree.map(lambda x, s=s: x[s], params), keys[s])) for s in range(S)])


def run(cfg: Config, show_progress: bool = True) -> dict:
    """Per game: teacher (trained or reused) and its data, `student_seeds` students; returns
    [G, 4 bars (`BARS`), S] (the teacher's bars repeated over the seed axis' first entry only)."""
    _validate(cfg)
    G, S = len(cfg.games), cfg.student_seeds
    returns = np.full((G, len(BARS), S), np.nan)
    teacher_run = np.full((G, 2), np.nan)  # the teacher's own training run: train, test (last quarter)
    seconds = np.zeros(G)
    tmp = Path(tempfile.mkdtemp(prefix="tdjax_fig6_"))
    key = jax.random.key(cfg.seed)
    for g, game in enumerate(progress_bar(iterable=cfg.games, desc=NAME, enabled=show_progress)):
        t0 = time.time()
        k_game = jax.random.fold_in(key, g)
        t_cfg = _teacher_config(cfg, game)
        folder = (Path(cfg.teacher_dir) if cfg.teacher_dir else tmp) / t_cfg.env
        t_path, d_path, t_metrics = policy_teacher_and_data(t_cfg, folder, k_game, data_steps=cfg.data_steps,
                                                            data_epsilon=cfg.data_epsilon)
        teacher_run[g] = [float(t_metrics.get("train_return", np.nan)), float(t_metrics.get("test_return", np.nan))]
        teacher = load_teacher(t_path)
        s_cfg = cfg.student.replace(teacher=t_path, dataset=d_path)
        agent = make_agent(s_cfg)
        state, _ = train_seeds(s_cfg, jax.random.fold_in(k_game, 1), S, keep_state=True)
        spec = teacher.agent.spec
        t_params = jax.tree.map(lambda x: np.asarray(x)[None], teacher.params)
        for b, (who, split) in enumerate((("teacher", "train"), ("teacher", "test"), ("student", "train"),
                                          ("student", "test"))):
            fn, params = (teacher.output_fn(), t_params) if who == "teacher" else (agent.q_values, state.learner.params)
            options = spec.train_env_options if split == "train" else spec.test_env_options
            r = _returns(fn, params, t_cfg.env, dict(options), jax.random.fold_in(k_game, 10 + b), cfg,
                         t_cfg.env_backend)
            returns[g, b, :len(r)] = r
        seconds[g] = time.time() - t0
    return dict(games=np.array(cfg.games), bars=np.array(BARS), returns=returns, teacher_run=teacher_run,
                seconds=seconds)


def _means(res: dict) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(res["returns"], axis=-1)  # [G, 4]


def check_claims(cfg: Config, res: dict) -> Claims:
    """Lyle §6.2 / Fig. 6, per game and over games."""
    t = _teacher_config(cfg, cfg.games[0])
    claims = Claims(NAME, settings=dict(
        games=list(cfg.games), teacher_algo=t.algo, teacher_network=t.network, teacher_steps=t.total_steps,
        num_levels=t.num_levels if t.env.endswith("-v0") else None, data_steps=cfg.data_steps,
        data_transitions=cfg.data_steps * t.num_envs, data_epsilon=cfg.data_epsilon,
        student_network=cfg.student.network, student_updates=cfg.student.num_updates,
        student_batch=cfg.student.batch_size, student_seeds=cfg.student_seeds,
        pd_entropy_coef=cfg.student.pd_entropy_coef, eval_envs=cfg.eval_envs, eval_steps=cfg.eval_steps,
        eval_epsilon=cfg.eval_epsilon, seconds_per_game=[round(float(s), 1) for s in res["seconds"]]))
    m = _means(res)
    better = []
    for g, game in enumerate(cfg.games):
        tt, te, st, se = m[g]
        scale = max(abs(tt), abs(te), 1e-8)
        table = f"teacher train {tt:.2f}, teacher test {te:.2f}, student train {st:.2f}, student test {se:.2f}"
        if not np.isfinite(m[g]).all():
            claims.note(f"{game}: the claims could not be checked: no episode ended within an evaluation ({table}). "
                        f"Fix: raise --eval-steps (now {cfg.eval_steps}).")
            continue
        claims.check(f"{game}: the distilled student's generalisation gap (train − test) meets or improves on the "
                     "teacher's (within 5% of the teacher's return)",
                     bool((st - se) <= (tt - te) + 0.05 * scale), table)
        better.append(bool(se > te))
        claims.check(f"{game}: the student's test-level return is above the teacher's", better[-1], table)
    if better:
        claims.check("distillation improves the test-level return in many games (the paper: 5 of 16; here: at least "
                     "one game, or 30% of them)", bool(sum(better) >= max(1, int(np.ceil(0.3 * len(better))))),
                     f"{sum(better)} of {len(better)} games with returns")
    claims.note("The teacher's own training run (last quarter, training levels → test levels): " + "; ".join(
        f"{game} {res['teacher_run'][g, 0]:.2f} → {res['teacher_run'][g, 1]:.2f}" for g, game in enumerate(cfg.games)))
    if not t.env.endswith("-v0"):
        claims.note("Smoke scale: gymnax games have no level split, so 'test' is the same game with other seeds; "
                    "the train–test differences are noise and the claims say little about generalisation. The cpu "
                    "and paper scales run ProcGen with disjoint test levels.")
    elif not cfg.paper:
        claims.note(f"CPU scale: {t.total_steps:,}-step teachers instead of 25M, {cfg.student.num_updates:,} "
                    "distillation updates; the teachers are far from the paper's, so only the direction of the "
                    "effect is comparable.")
    return claims


def plot(cfg: Config, res: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    G = len(cfg.games)
    m = _means(res)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanmin(res["returns"], -1), np.nanmax(res["returns"], -1)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * G + 2), 3.6))
    width = 0.8 / 3
    x = np.arange(G)
    shown = ((0, "teacher (train levels)", "C0"), (1, "teacher (test levels)", "C1"),
             (3, "student (test levels)", "C2"))
    for i, (b, label, color) in enumerate(shown):
        err = np.stack([m[:, b] - lo[:, b], hi[:, b] - m[:, b]]) if b == 3 else None
        ax.bar(x + i * width, m[:, b], width, label=label, color=color, yerr=err, capsize=3)
    ax.plot(x + 2 * width, m[:, 2], "D", color="k", mfc="w", ms=6, zorder=5, ls="none",
            label="student (train levels)")
    ax.set_xticks(x + width, [gm.replace("-MinAtar", "") for gm in cfg.games], fontsize=9)
    ax.set_ylabel("mean episode return")
    ax.legend(fontsize=7)
    ax.set_title(f"Lyle et al. 2022 Fig. 6: PPO teacher vs policy-distilled student\n({cfg.student_seeds} student "
                 "seeds; error bars: min–max)", fontsize=10)
    fig.tight_layout()
    return fig


def _rows(cfg: Config, res: dict) -> list[dict]:
    rows = []
    for g, game in enumerate(cfg.games):
        for b, bar in enumerate(BARS):
            who, split = bar.split()
            seeds = 1 if who == "teacher" else cfg.student_seeds
            for s in range(seeds):
                rows.append(dict(game=game, network=who, levels=split, seed=s,
                                 mean_return=float(res["returns"][g, b, s])))
    return rows


EXPERIMENT = Experiment(NAME, __doc__, config=config, tiny=tiny, scales=SCALES, run=run, plot=plot,
                        claims=check_claims, rows=_rows)


def main(argv: Sequence[str] | None = None) -> Claims:
    """`python -m experiments.lyle22_fig6 [--scale smoke|cpu|paper|tiny] [--out DIR] [--<field> VALUE ...]`."""
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    EXPERIMENT.cli()
