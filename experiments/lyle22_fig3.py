"""Lyle et al. 2022, Fig. 3 (§5.1, App. B.1): update rank of DQN agents over training, dense vs sparse reward.

The paper trains DQN on Atari (Pong, Boxing, Seaquest: dense reward; Montezuma's Revenge: sparse) and
tracks the update rank, the ε-rank (ε = 0.1) of the update matrix Aᵢⱼ = Q̄_θᵢ(xⱼ) − Q̄_θ(xⱼ) (eq. 21,
Q reduced by max, θᵢ one optimizer step on transition τᵢ from the agent's optimizer state). Its claim:
agents in dense-reward games start with a low update rank that rises well above that of a randomly
initialised network, while an agent without reward keeps a low-rank update matrix.

Here, at CPU scale, the same measurement runs on MinAtar (Young & Tian 2019) with the shared value-based
loop (`tdjax.train.make_train`, probes inside jit): Breakout and SpaceInvaders (dense reward) against
Freeway (sparse: a random policy rarely gets the chicken across). Every probe also measures a freshly
initialised network (a new one per probe) on the same k transitions: the "random parameters" baseline.
Seeds are vmapped by `tdjax.train.seeds.train_seeds`: `jax.jit(jax.vmap(make_train(cfg)))(keys)`.

Scales (`--scale`): `smoke` (all three games, a few minutes on 2 CPU cores), `cpu` (longer runs, each
game ~10-15 minutes), `paper` (Atari Pong, Boxing, Seaquest and Montezuma's Revenge through envpool with
the Nature CNN, 7M frames per game, for a GPU: `paper_config()` says what it sets and why). envpool
environments are stepped inside jit but cannot be vmapped, so at paper scale the seeds run one after
another (each seeds its emulators with `env_seed`).

Run: `python -m experiments.lyle22_fig3 --out outputs/lyle22_fig3 [--scale smoke|cpu]`.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Sequence

import jax
import numpy as np

from experiments._harness import Experiment, progress_bar
from tdjax.report import Claims
from tdjax.train import ValueConfig, family_of
from tdjax.train.seeds import train_seeds

NAME = "lyle22_fig3"
SCALES = ("smoke", "cpu", "paper")
PAPER_DENSE = ("Pong-v5", "Boxing-v5", "Seaquest-v5")
PAPER_SPARSE = ("MontezumaRevenge-v5",)


@dataclasses.dataclass(frozen=True)
class Config:
    dense_games: tuple[str, ...] = ("Breakout-MinAtar", "SpaceInvaders-MinAtar")
    sparse_games: tuple[str, ...] = ("Freeway-MinAtar",)
    seeds: int = 2
    seed: int = 0
    # DQN with the MinAtar torso; everything not set here is ValueConfig's default.
    agent: ValueConfig = ValueConfig(
        algo="dqn", network="minatar_cnn", num_envs=4, total_steps=80_000, buffer_size=20_000, batch_size=32,
        learning_starts=1_000, train_frequency=1, target_update_interval=500, lr=1e-3, eps_decay_steps=20_000,
        eps_end=0.05, probe_interval=1_000, probe_k=32)
    return_bins: int = 20  # windows of training over which episode returns are averaged
    early_fraction: float = 0.2  # "early" / "late" = first / last fraction of the probes
    near_baseline: float = 2.0  # the sparse agent "stays near the baseline" if within this many ranks of it

    @property
    def games(self) -> tuple[str, ...]:
        return self.dense_games + self.sparse_games


def paper_config() -> Config:
    """Atari at the paper's scale, for a GPU: DQN with the Nature CNN on envpool's `-v5` games (sticky
    actions, frame skip 4, 84×84 grey, 4 stacked frames, episodic life and clipped rewards for learning),
    7M frames = 1.75M agent steps per game, 3 seeds.

    Dopamine-style DQN settings: Adam (lr 6.25e-5, ε 1.5e-4), batch 32, one update every 4 agent steps
    (num_envs=4, train_frequency=1), target network every 2,000 updates (8,000 steps), ε-greedy from 1 to
    0.01 over 250k steps, 20k steps of warm-up. The replay buffer holds Dopamine's 1M transitions (Lyle
    App. B.3): tdjax's buffer stores each 84×84 frame once (~7 KB per transition, ~7 GB in all;
    docs/replay.md).
    A probe (k = 32 transitions, as at CPU scale) every 2,500 updates = 40k frames: 175 probes per run.
    """
    agent = ValueConfig(
        algo="dqn", network="nature_cnn", num_envs=4, total_steps=1_750_000, buffer_size=1_000_000, batch_size=32,
        learning_starts=20_000, train_frequency=1, target_update_interval=2_000, optimizer="adam", lr=6.25e-5,
        adam_eps=1.5e-4, eps_start=1.0, eps_end=0.01, eps_decay_steps=250_000, max_grad_norm=None,
        probe_interval=2_500, probe_k=32, checkpoint_interval=25_000)
    return Config(dense_games=PAPER_DENSE, sparse_games=PAPER_SPARSE, seeds=3, agent=agent)


def config(scale: str = "smoke") -> Config:
    """`smoke`: all three games in a few minutes on 2 CPU cores; `cpu`: 2.5× longer runs, 3 seeds (~15 min);
    `paper`: `paper_config()` (Atari, for a GPU)."""
    if scale not in SCALES:
        raise ValueError(f"{NAME}: scale must be one of {SCALES}, got {scale!r}.")
    if scale == "paper":
        return paper_config()
    cfg = Config()
    if scale == "cpu":
        cfg = dataclasses.replace(cfg, seeds=3, agent=cfg.agent.replace(
            total_steps=200_000, buffer_size=50_000, eps_decay_steps=50_000, probe_interval=2_000))
    return cfg


def tiny() -> Config:
    """Seconds per game, for tests: one dense and one sparse game, 2 seeds, a handful of probes."""
    return dataclasses.replace(
        Config(), dense_games=("Breakout-MinAtar",), sparse_games=("Freeway-MinAtar",), return_bins=4,
        agent=Config().agent.replace(total_steps=2_000, buffer_size=2_000, learning_starts=400,
                                     eps_decay_steps=1_200, probe_interval=100, probe_k=8,
                                     probe_sign_steps=16, target_update_interval=100))


def _validate(cfg: Config) -> None:
    if not cfg.dense_games or not cfg.sparse_games:
        raise ValueError(f"{NAME}: needs at least one dense-reward and one sparse-reward game.")
    if cfg.seeds < 1 or cfg.return_bins < 1:
        raise ValueError(f"{NAME}: seeds and return_bins must be >= 1.")
    if cfg.agent.probe_interval <= 0:
        raise ValueError(f"{NAME}: agent.probe_interval must be > 0 (the figure is made of probes).")
    if not 0 < cfg.early_fraction <= 0.5:
        raise ValueError(f"{NAME}: early_fraction must lie in (0, 0.5].")


def _binned_returns(return_sum: np.ndarray, return_count: np.ndarray, bins: int) -> np.ndarray:
    """[S, T] per-iteration sums/counts → [S, bins] mean return of the episodes ending in each window."""
    edges = np.linspace(0, return_sum.shape[-1], bins + 1).astype(int)
    s = np.add.reduceat(return_sum, edges[:-1], axis=-1)
    n = np.add.reduceat(return_count, edges[:-1], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def run(cfg: Config, show_progress: bool = True) -> dict:
    """Trains every game with `cfg.seeds` vmapped seeds; returns the probe and return arrays, [G, S, ...]."""
    _validate(cfg)
    fields = ("update_rank", "update_rank_fresh", "srank", "dormant_fraction", "interference_cos")
    out = {f: [] for f in fields}
    out.update(returns=[], final_return=[], seconds=[])
    probe_steps = bin_steps = None
    for game in progress_bar(iterable=cfg.games, desc=NAME, enabled=show_progress):
        t0 = time.time()
        # gymnax: all seeds in one vmapped run; envpool: one run per seed, each seeding its emulators
        agent_cfg = cfg.agent.replace(env=game, env_seed=cfg.seed)
        _, m = train_seeds(agent_cfg, jax.random.key(cfg.seed), cfg.seeds, keep_state=False)
        m = jax.tree.map(np.asarray, m)
        probed = m.probes.probed[0]  # the probe schedule depends on the iteration only, not the seed
        for f in fields:
            out[f].append(getattr(m.probes, f)[:, probed])
        probe_steps = m.env_steps[0, probed]
        out["returns"].append(_binned_returns(m.return_sum, m.return_count, cfg.return_bins))
        out["final_return"].append(family_of(agent_cfg).mean_return(m, max(1, m.env_steps.shape[1] // 10)))
        edges = np.linspace(0, m.env_steps.shape[1], cfg.return_bins + 1).astype(int)
        bin_steps = m.env_steps[0, edges[1:] - 1]
        out["seconds"].append(time.time() - t0)
    res = {k: np.stack(v) for k, v in out.items()}
    res.update(probe_env_steps=probe_steps, return_env_steps=bin_steps, games=np.array(cfg.games),
               dense=np.array([g in cfg.dense_games for g in cfg.games]))
    return res


def _windows(n: int, fraction: float) -> tuple[slice, slice]:
    w = max(1, int(round(fraction * n)))
    return slice(0, w), slice(n - w, n)


def check_claims(cfg: Config, res: dict) -> Claims:
    """Which of the paper's Fig. 3 / §5.1 claims held, with the numbers (means over seeds and windows)."""
    a = cfg.agent
    claims = Claims(NAME, settings=dict(
        games=list(cfg.games), sparse=list(cfg.sparse_games), seeds=cfg.seeds, algo=a.algo, network=a.network,
        total_steps=a.total_steps, num_envs=a.num_envs, batch_size=a.batch_size, lr=a.lr, optimizer=a.optimizer,
        probe_interval_updates=a.probe_interval, probe_k=a.probe_k, rank_eps=a.probe_rank_eps,
        probes=int(res["update_rank"].shape[-1]), seconds_per_game=[round(float(x), 1) for x in res["seconds"]]))
    early, late = _windows(res["update_rank"].shape[-1], cfg.early_fraction)
    r_early = np.nanmean(res["update_rank"][:, :, early], axis=(1, 2))
    r_late = np.nanmean(res["update_rank"][:, :, late], axis=(1, 2))
    f_late = np.nanmean(res["update_rank_fresh"][:, :, late], axis=(1, 2))
    steps = res["probe_env_steps"]
    win = (f"early = probes up to {int(steps[early][-1]):,} env steps, late = probes from "
           f"{int(steps[late][0]):,} to {int(steps[late][-1]):,}")
    games = list(cfg.games)
    for g in cfg.dense_games:
        i = games.index(g)
        claims.check(
            f"{g} (dense reward): the agent's update rank rises over training, above the random-init baseline",
            bool(r_late[i] > r_early[i] and r_late[i] > f_late[i]),
            f"update rank {r_early[i]:.2f} early → {r_late[i]:.2f} late; fresh network {f_late[i]:.2f} late ({win})")
    dense_gap = [r_late[games.index(g)] - f_late[games.index(g)] for g in cfg.dense_games]
    for g in cfg.sparse_games:
        i = games.index(g)
        gap = r_late[i] - f_late[i]
        claims.check(
            f"{g} (sparse reward): the agent's update rank stays near the random-init baseline "
            f"(late rank within {cfg.near_baseline:g} of it)",
            bool(abs(gap) <= cfg.near_baseline),
            f"update rank {r_early[i]:.2f} early → {r_late[i]:.2f} late; fresh network {f_late[i]:.2f} late")
        claims.check(
            f"{g} (sparse reward): its rise above the baseline is smaller than every dense-reward game's",
            bool(all(gap < d for d in dense_gap)),
            f"late rank − baseline: {gap:.2f} for {g}; " + ", ".join(
                f"{d:.2f} for {dg}" for d, dg in zip(dense_gap, cfg.dense_games)))
    ret = res["returns"]
    with warnings.catch_warnings():  # a game may have no episode ending in a window
        warnings.simplefilter("ignore", RuntimeWarning)
        first = np.array([np.nanmean(r[:, : max(1, ret.shape[-1] // 5)]) for r in ret])
        final = np.nanmean(res["final_return"], axis=1)
    for g in cfg.dense_games:
        i = games.index(g)
        claims.check(f"{g}: the agent learned (mean return of the last 10% of training above the first 20%)",
                     bool(final[i] > first[i]), f"return {first[i]:.2f} → {final[i]:.2f}")
    claims.note("Sparse-reward returns: " + ", ".join(
        f"{g} {first[games.index(g)]:.2f} → {final[games.index(g)]:.2f}" for g in cfg.sparse_games)
        + " (first 20% of training → last 10%). If this rises, the agent found the reward: the game is then "
        "not reward-free for it, unlike the paper's Montezuma's Revenge, and the sparse-reward claims above do "
        "not test the paper's 'absence of reward' case.")
    if not all(g.endswith("-v5") for g in cfg.games):
        claims.note("MinAtar stands in for Atari (Breakout/SpaceInvaders for Pong/Boxing/Seaquest, Freeway for "
                    "Montezuma's Revenge), and the budgets are ~10⁵ steps instead of ~7M frames.")
    return claims


def plot(cfg: Config, res: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    G = len(cfg.games)
    fig, axes = plt.subplots(2, G, figsize=(4.2 * G, 6.4), squeeze=False, sharex="col")
    steps = res["probe_env_steps"] / 1e3
    for i, game in enumerate(cfg.games):
        ax = axes[0, i]
        for key, label, color in (("update_rank", "agent", "C0" if res["dense"][i] else "C3"),
                                  ("update_rank_fresh", "random parameters", "0.45")):
            r = res[key][i]
            mean = np.nanmean(r, axis=0)
            ax.plot(steps, mean, color=color, lw=1.6, label=f"{label} (mean)")
            ax.fill_between(steps, np.nanmin(r, axis=0), np.nanmax(r, axis=0), color=color, alpha=0.2, lw=0)
        kind = "dense" if res["dense"][i] else "sparse"
        ax.set_title(f"{game} ({kind} reward)", fontsize=10)
        ax.set_ylim(0, min(cfg.agent.probe_k, np.nanmax(res["update_rank_fresh"]), np.nanmax(res["update_rank"])) + 1)
        axes[0, 0].set_ylabel(f"update rank (k = {cfg.agent.probe_k}, ε = {cfg.agent.probe_rank_eps})")
        ax.legend(fontsize=7, loc="upper left")
        ax = axes[1, i]
        r = res["returns"][i]
        x = res["return_env_steps"] / 1e3
        with warnings.catch_warnings():  # windows in which no episode ended are NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, lo, hi = np.nanmean(r, axis=0), np.nanmin(r, axis=0), np.nanmax(r, axis=0)
        ok = np.isfinite(mean)
        ax.plot(x[ok], mean[ok], "o-", ms=3, color="C2", label="mean over seeds")
        ax.fill_between(x[ok], lo[ok], hi[ok], color="C2", alpha=0.2, lw=0)
        ax.set_xlabel("environment steps (thousands)")
        axes[1, 0].set_ylabel("episode return (window mean)")
        ax.legend(fontsize=7, loc="upper left")
    where = "paper scale: DQN on Atari" if cfg.games[0].endswith("-v5") else "CPU scale: DQN on MinAtar"
    fig.suptitle(f"Lyle et al. 2022 Fig. 3 at {where}, {cfg.seeds} seeds (lines: mean, "
                 "shading: min–max over seeds)", fontsize=11)
    fig.tight_layout()
    return fig


def _rows(cfg: Config, res: dict) -> list[dict]:
    rows = []
    for i, game in enumerate(cfg.games):
        for s in range(cfg.seeds):
            for p, step in enumerate(res["probe_env_steps"]):
                rows.append(dict(game=game, seed=s, env_steps=int(step),
                                 **{k: float(res[k][i, s, p]) for k in
                                    ("update_rank", "update_rank_fresh", "srank", "dormant_fraction",
                                     "interference_cos")}))
    return rows


EXPERIMENT = Experiment(NAME, __doc__, config=config, tiny=tiny, scales=SCALES, run=run, plot=plot,
                        claims=check_claims, rows=_rows)


def main(argv: Sequence[str] | None = None) -> Claims:
    """`python -m experiments.lyle22_fig3 [--scale smoke|cpu|paper|tiny] [--out DIR] [--<any Config field> VALUE ...]`
    (nested fields too: `--agent.total-steps 5000`); see `--help`."""
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    EXPERIMENT.cli()
