"""Lyle et al. 2022, Fig. 12 (App. D.2): update matrices of DQN and C51 agents over early training.

The paper (App. D.2): "We include a more detailed view of the update matrices obtained by DQN and C51 agents
during the first 7 million frames of training [...]. We see that even early in training, the DQN and C51
agents both exhibit significant overfitting behaviour. Note that states are sampled uniformly at random from
the replay buffer, and then assigned an index based on the output of a clustering algorithm to improve
readability of the figures." Caption: "Update matrices for distributional and DQN agents on four games from
the Atari suite, chosen to represent a range of reward densities and difficulties. Each iteration
corresponds to 1e5 training frames."

The update matrix is eq. 21 of §5 (App. B.1): "Aᵢⱼ = V_θᵢ(xⱼ) − V_θ(xⱼ)", θᵢ the parameters after one
optimizer step on transition τᵢ "using the agent's current optimizer state and its current parameters",
with "Q-functions [...] reduced using the max operator" and, for distributional agents, "the expectation
over the distribution associated with each state-action pair". Here it is `tdjax.update_matrix` with the
agent's own `example_loss` (target network = the agent's current one), `output_fn` (maxₐ of the expected Q),
`optimizer` and `state.learner.params / opt_state`. The update rank is #{σ > ε σ_max} (ε = 0.1,
`tdjax.update_rank`). Each point also builds the matrix of a freshly initialised network (fresh optimizer
state, its own target) on the same transitions: the random-init baseline of Fig. 3.

What this module does: for every (agent ∈ {DQN, C51}, game) it trains with `agent.run` in chunks of
`point_interval` environment steps; after each chunk it samples k distinct transitions uniformly from replay
(`tdjax.train.replay.sample_distinct`, which draws only valid transitions: never envpool's reset steps),
builds A and the baseline, and orders the k states by hierarchical clustering of the rows of A
(`scipy.cluster.hierarchy.linkage(A, "average", optimal_ordering=True)`, leaves order; deterministic). The
same permutation is applied to rows and columns, so the diagonal (an update's effect on its own state) stays
the diagonal. The figure is a grid of heatmaps: rows agent × game, columns training points.

At CPU scale: MinAtar (Breakout, SpaceInvaders: dense reward; Freeway: sparse) instead of Atari (Pong,
Boxing, Seaquest, Montezuma's Revenge); 12k–100k agent steps instead of 7M frames; the MinAtar CNN.

Scales (`--scale`): `smoke` (3 games × 2 agents, 12k steps, 4 points, k = 32; ~3 min on 2 CPU cores),
`cpu` (100k steps, 5 points, k = 48; ~10–15 min), `paper` (Atari through envpool with the Nature CNN, 7M
frames = 1.75M agent steps, a point every 1e5 frames = 25k agent steps (70 points), k = 64: for a GPU).

Run: `python -m experiments.lyle22_fig12 --out outputs/lyle22_fig12 [--scale smoke|cpu|paper]`.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

import tdjax
from experiments._harness import Experiment, progress_bar
from tdjax.report import Claims
from tdjax.train import ValueConfig, family_of
from tdjax.train import replay as replay_lib
from tdjax.train.seeds import make_seed_runner

NAME = "lyle22_fig12"
SCALES = ("smoke", "cpu", "paper")
ALGO_NAMES = {"dqn": "DQN", "c51": "C51", "double_dqn": "Double DQN", "qr_dqn": "QR-DQN"}
PAPER_GAMES = ("Pong-v5", "Boxing-v5", "Seaquest-v5", "MontezumaRevenge-v5")
FRAME_SKIP = 4  # envpool Atari: one agent step = 4 frames
LINKAGES = ("average", "complete", "single", "ward")


@dataclasses.dataclass(frozen=True)
class Config:
    games: tuple[str, ...] = ("Breakout-MinAtar", "SpaceInvaders-MinAtar", "Freeway-MinAtar")
    sparse_games: tuple[str, ...] = ("Freeway-MinAtar",)  # which of `games` have sparse reward
    algos: tuple[str, ...] = ("dqn", "c51")
    seeds: int = 1
    seed: int = 0
    # The MinAtar agent of lyle22_fig3 (C51 differs only in its head and loss); no in-loop probes.
    agent: ValueConfig = ValueConfig(
        algo="dqn", network="minatar_cnn", num_envs=4, total_steps=12_000, buffer_size=12_000, batch_size=32,
        learning_starts=1_000, train_frequency=1, target_update_interval=500, lr=1e-3, eps_decay_steps=10_000,
        eps_end=0.05, probe_interval=0)
    point_interval: int = 3_000  # environment steps (all envs) between update matrices
    k: int = 32  # transitions per update matrix
    rank_eps: float = 0.1  # update rank threshold (the paper's ε)
    linkage: str = "average"  # scipy linkage method for the ordering
    max_columns: int = 4  # training points drawn (evenly spaced, always the first and last)
    color_percentile: float = 98.0  # each panel's colour scale is ± this percentile of |A|


def config(scale: str = "smoke") -> Config:
    """`smoke`: 3 games × DQN/C51, 12k steps, 4 points; `cpu`: 100k steps, 5 points, k = 48; `paper`: Atari."""
    if scale not in SCALES:
        raise ValueError(f"{NAME}: scale must be one of {SCALES}, got {scale!r}.")
    cfg = Config()
    if scale == "cpu":
        cfg = dataclasses.replace(cfg, k=48, point_interval=20_000, max_columns=5,
                                  agent=cfg.agent.replace(total_steps=100_000, buffer_size=40_000,
                                                          eps_decay_steps=40_000))
    elif scale == "paper":
        # Dopamine-style agents on Atari through envpool (sticky actions, frame skip 4, 84×84×4, clipped
        # rewards, episodic life); 7M frames; a point every 1e5 frames. The replay holds 250k transitions (not
        # 1M) so that obs and next_obs fit in GPU memory (~14 GB). envpool cannot be vmapped: one seed.
        cfg = dataclasses.replace(
            cfg, games=PAPER_GAMES, sparse_games=("MontezumaRevenge-v5",), seeds=1, k=64,
            point_interval=100_000 // FRAME_SKIP, max_columns=7,
            agent=ValueConfig(env=PAPER_GAMES[0], algo="dqn", network="nature_cnn", num_envs=4,
                              total_steps=7_000_000 // FRAME_SKIP, buffer_size=250_000, batch_size=32,
                              learning_starts=20_000, train_frequency=1, target_update_interval=2_000,
                              optimizer="adam", lr=6.25e-5, adam_eps=1.5e-4, gamma=0.99, eps_decay_steps=250_000,
                              eps_end=0.01, probe_interval=0, checkpoint_interval=10_000))
    return cfg


def tiny() -> Config:
    """Seconds per agent, for tests: Breakout only, DQN and C51, 2 points, k = 8."""
    return dataclasses.replace(
        Config(), games=("Breakout-MinAtar",), sparse_games=(), k=8, point_interval=800,
        agent=Config().agent.replace(total_steps=1_600, buffer_size=800, learning_starts=400, eps_decay_steps=800,
                                     target_update_interval=100))


def _validate(cfg: Config) -> None:
    def bad(field, msg):
        raise ValueError(f"{NAME}: Config.{field} {msg}")

    if not cfg.games:
        bad("games", "is empty: needs at least one game.")
    if len(set(cfg.games)) != len(cfg.games):
        bad("games", f"repeats a game: {cfg.games}.")
    if not set(cfg.sparse_games) <= set(cfg.games):
        bad("sparse_games", f"must be a subset of games {cfg.games}, got {cfg.sparse_games}. Fix: set both, e.g. "
                            "--games Breakout-MinAtar Freeway-MinAtar --sparse-games Freeway-MinAtar.")
    if not cfg.algos:
        bad("algos", "is empty: needs at least one agent (e.g. ('dqn', 'c51')).")
    unknown = [a for a in cfg.algos if a not in ALGO_NAMES]
    if unknown:
        bad("algos", f"has unknown agents {unknown}; choose from {tuple(ALGO_NAMES)}.")
    if cfg.seeds < 1:
        bad("seeds", f"must be >= 1, got {cfg.seeds}.")
    if cfg.k < 2:
        bad("k", f"must be >= 2 (the update matrix needs at least 2 transitions), got {cfg.k}.")
    if not 0 < cfg.rank_eps < 1:
        bad("rank_eps", f"must lie in (0, 1), got {cfg.rank_eps}.")
    if cfg.linkage not in LINKAGES:
        bad("linkage", f"must be one of {LINKAGES}, got {cfg.linkage!r}.")
    if cfg.max_columns < 1:
        bad("max_columns", f"must be >= 1, got {cfg.max_columns}.")
    if not 0 < cfg.color_percentile <= 100:
        bad("color_percentile", f"must lie in (0, 100], got {cfg.color_percentile}.")
    a = cfg.agent
    per_iter = a.num_envs * a.train_frequency
    if cfg.point_interval <= 0 or cfg.point_interval % per_iter:
        bad("point_interval", f"must be a positive multiple of agent.num_envs * agent.train_frequency = {per_iter} "
                              f"env steps, got {cfg.point_interval}.")
    if cfg.point_interval <= a.learning_starts:
        bad("point_interval", f"= {cfg.point_interval} must exceed agent.learning_starts = {a.learning_starts}, so "
                              "that the first update matrix is taken after the agent has learned.")
    if cfg.point_interval > a.total_steps:
        bad("point_interval", f"= {cfg.point_interval} is longer than the run (agent.total_steps = {a.total_steps}).")
    stored = min(a.buffer_size, cfg.point_interval)
    if cfg.k > stored:
        bad("k", f"= {cfg.k} exceeds the {stored} transitions stored at the first point.")


def panel(agent, learner, replay, key, k: int):
    """One panel: (A, A_fresh, batch). A [k, k] is eq. 21 for the agent (its params, optimizer state and
    target network); A_fresh the same for a new network (new key, `optimizer.init`, its own target)."""
    k_batch, k_fresh = jax.random.split(key)
    batch = replay_lib.sample_distinct(replay, k_batch, k)
    A = tdjax.update_matrix(lambda p, tr: agent.example_loss(p, learner.target_params, tr), agent.output_fn,
                            agent.optimizer, learner.params, learner.opt_state, batch, batch.obs)
    fresh = agent.network.init(k_fresh, jnp.zeros(agent.env.obs_shape, jnp.float32))
    A_fresh = tdjax.update_matrix(lambda p, tr: agent.example_loss(p, fresh, tr), agent.output_fn, agent.optimizer,
                                  fresh, agent.optimizer.init(fresh), batch, batch.obs)
    return A, A_fresh, batch


def cluster_order(A: np.ndarray, method: str = "average") -> np.ndarray:
    """Leaves order of a hierarchical clustering of the rows of A (non-finite entries as 0): a permutation.

    `scipy.cluster.hierarchy.linkage(rows, method, metric="euclidean", optimal_ordering=True)` is
    deterministic; show the matrix as A[order][:, order].
    """
    from scipy.cluster.hierarchy import leaves_list, linkage

    rows = np.nan_to_num(np.asarray(A, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if rows.shape[0] < 2:
        return np.arange(rows.shape[0])
    return leaves_list(linkage(rows, method=method, metric="euclidean", optimal_ordering=True)).astype(np.int64)


def diagonal_ratio(A: np.ndarray) -> float:
    """mean |Aᵢᵢ| / mean |Aᵢⱼ| (i ≠ j): how much more an update moves its own state than the others
    (∞ for a tabular value function, ~1 when every update moves all states alike)."""
    A = np.asarray(A, np.float64)
    off = ~np.eye(A.shape[0], dtype=bool)
    denom = np.abs(A[off]).mean()
    return float(np.abs(np.diag(A)).mean() / denom) if denom > 0 else float("nan")


def _panels_fn(agent, cfg: Config):
    """Jitted panels of every seed (states stacked [S, ...]): A, A_fresh and their update ranks."""

    def one_panel(learner, replay, key):
        A, A0, _ = panel(agent, learner, replay, key, cfg.k)
        return A, A0, tdjax.update_rank(A, cfg.rank_eps), tdjax.update_rank(A0, cfg.rank_eps)

    return jax.jit(jax.vmap(one_panel))


def run(cfg: Config, show_progress: bool = True) -> dict:
    """Trains every (agent, game) and takes the update matrices; arrays [algos, games, seeds, points, ...]."""
    _validate(cfg)
    a = cfg.agent
    iters = cfg.point_interval // (a.num_envs * a.train_frequency)
    P = (a.total_steps // (a.num_envs * a.train_frequency)) // iters
    L, G, S, k = len(cfg.algos), len(cfg.games), cfg.seeds, cfg.k
    out = dict(A=np.full((L, G, S, P, k, k), np.nan), A_fresh=np.full((L, G, S, P, k, k), np.nan),
               order=np.zeros((L, G, S, P, k), np.int64), update_rank=np.zeros((L, G, S, P), np.int64),
               update_rank_fresh=np.zeros((L, G, S, P), np.int64), diagonal_ratio=np.zeros((L, G, S, P)),
               diagonal_ratio_fresh=np.zeros((L, G, S, P)), point_return=np.full((L, G, S, P), np.nan),
               seconds=np.zeros((L, G)))
    root = jax.random.key(cfg.seed)
    with progress_bar(L * G * P, desc=NAME, enabled=show_progress) as bar:
        for li, algo in enumerate(cfg.algos):
            for gi, game in enumerate(cfg.games):
                t0 = time.time()
                agent_cfg = a.replace(env=game, algo=algo)
                seeds = make_seed_runner(agent_cfg, S)  # vmapped for gymnax, one after another for envpool
                panels = _panels_fn(seeds.agent, cfg)
                k_train, k_panel = jax.random.split(jax.random.fold_in(jax.random.fold_in(root, li), gi))
                state = seeds.init(k_train)
                for p in range(P):
                    state, m = seeds.run(state, p * iters, iters)
                    pkeys = jax.random.split(jax.random.fold_in(k_panel, p), S)
                    A, A0, r, r0 = jax.tree.map(np.asarray, panels(state.learner, state.actor.replay, pkeys))
                    # the mean return of the episodes ending in this chunk
                    out["point_return"][li, gi, :, p] = family_of(agent_cfg).mean_return(m)
                    for s in range(S):
                        out["A"][li, gi, s, p], out["A_fresh"][li, gi, s, p] = A[s], A0[s]
                        out["order"][li, gi, s, p] = cluster_order(A[s], cfg.linkage)
                        out["update_rank"][li, gi, s, p], out["update_rank_fresh"][li, gi, s, p] = r[s], r0[s]
                        out["diagonal_ratio"][li, gi, s, p] = diagonal_ratio(A[s])
                        out["diagonal_ratio_fresh"][li, gi, s, p] = diagonal_ratio(A0[s])
                    bar.update()
                out["seconds"][li, gi] = time.time() - t0
    take = out["order"]  # A_ordered[..., i, j] = A[..., order[i], order[j]]
    out["A_ordered"] = np.take_along_axis(np.take_along_axis(out["A"], take[..., :, None], axis=-2),
                                          take[..., None, :], axis=-1)
    out.update(env_steps=(np.arange(1, P + 1) * cfg.point_interval), games=np.array(cfg.games),
               algos=np.array(cfg.algos), sparse=np.array([g in cfg.sparse_games for g in cfg.games]))
    return out


def check_claims(cfg: Config, res: dict) -> Claims:
    """Which of the paper's Fig. 12 / App. D.2 (and §5.1) claims held, with the numbers (means over seeds)."""
    a = cfg.agent
    steps = res["env_steps"]
    claims = Claims(NAME, settings=dict(
        games=list(cfg.games), sparse=list(cfg.sparse_games), algos=list(cfg.algos), seeds=cfg.seeds,
        network=a.network, total_steps=a.total_steps, num_envs=a.num_envs, batch_size=a.batch_size, lr=a.lr,
        optimizer=a.optimizer, k=cfg.k, rank_eps=cfg.rank_eps, points=[int(s) for s in steps],
        clustering=f"{cfg.linkage} linkage on the rows of A",
        seconds_per_run={f"{al}/{g}": round(float(res["seconds"][li, gi]), 1)
                         for li, al in enumerate(cfg.algos) for gi, g in enumerate(cfg.games)}))
    rank = res["update_rank"].mean(2)  # [L, G, P]
    fresh = res["update_rank_fresh"].mean(2)
    diag = res["diagonal_ratio"].mean(2)
    diag0 = res["diagonal_ratio_fresh"].mean(2)
    for li, algo in enumerate(cfg.algos):
        name = ALGO_NAMES[algo]
        for gi, game in enumerate(cfg.games):
            kind = "sparse" if game in cfg.sparse_games else "dense"
            claims.check(
                f"{name}, {game} ({kind} reward): even early in training (first point, {int(steps[0]):,} env steps) "
                "the update matrix shows overfitting: its update rank is above that of a randomly initialised "
                "network on the same transitions",
                bool(rank[li, gi, 0] > fresh[li, gi, 0]),
                f"update rank {rank[li, gi, 0]:.1f} vs {fresh[li, gi, 0]:.1f} (random init), out of k = {cfg.k}; "
                f"diagonal ratio mean|Aᵢᵢ|/mean|Aᵢⱼ| {diag[li, gi, 0]:.2f} vs {diag0[li, gi, 0]:.2f}")
        dense = [gi for gi, g in enumerate(cfg.games) if g not in cfg.sparse_games]
        if dense and rank.shape[-1] > 1:
            claims.check(
                f"{name}: in the dense-reward games the update rank grows from the first to the last point "
                "(§5.1: 'similar results hold for [...] C51')",
                bool(all(rank[li, gi, -1] > rank[li, gi, 0] for gi in dense)),
                ", ".join(f"{cfg.games[gi]} {rank[li, gi, 0]:.1f} → {rank[li, gi, -1]:.1f}" for gi in dense)
                + f" ({int(steps[0]):,} → {int(steps[-1]):,} env steps)")
    with warnings.catch_warnings():  # a chunk may end no episode (NaN)
        warnings.simplefilter("ignore", RuntimeWarning)
        point_return = np.nanmean(res["point_return"], axis=2)
    claims.note("Returns per point (mean over seeds of the episodes ending in the preceding chunk): "
                + "; ".join(f"{ALGO_NAMES[al]} {g}: " + " → ".join(f"{x:.1f}" for x in point_return[li, gi])
                            for li, al in enumerate(cfg.algos) for gi, g in enumerate(cfg.games)) + ".")
    claims.note("MinAtar stands in for Atari (Freeway for the sparse end of the paper's range, which is Montezuma's "
                "Revenge), and the runs are ~10⁴–10⁵ steps instead of 7M frames. 'Overfitting' is read as a higher "
                "update rank than the random-init network (Fig. 3's baseline); the paper shows pictures only.")
    return claims


def _columns(P: int, max_columns: int) -> np.ndarray:
    return np.unique(np.round(np.linspace(0, P - 1, min(P, max_columns))).astype(int))


def plot(cfg: Config, res: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    L, G = len(cfg.algos), len(cfg.games)
    cols = _columns(len(res["env_steps"]), cfg.max_columns)
    R, C = L * G, len(cols)
    fig, axes = plt.subplots(R, C, figsize=(2.5 * C + 0.6, 2.55 * R), squeeze=False)
    for li, algo in enumerate(cfg.algos):
        for gi, game in enumerate(cfg.games):
            row = li * G + gi
            for ci, p in enumerate(cols):
                ax = axes[row, ci]
                A = res["A_ordered"][li, gi, 0, p]
                lim = np.nanpercentile(np.abs(A), cfg.color_percentile) if np.isfinite(A).any() else 1.0
                lim = lim if lim > 0 else 1.0
                ax.imshow(A, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{res['env_steps'][p] / 1e3:g}k steps · rank {res['update_rank'][li, gi, 0, p]} "
                             f"(init {res['update_rank_fresh'][li, gi, 0, p]})", fontsize=7.5)
            kind = "sparse" if game in cfg.sparse_games else "dense"
            axes[row, 0].set_ylabel(f"{ALGO_NAMES[algo]}\n{game}\n({kind})", fontsize=8)
    fig.suptitle(f"Lyle et al. 2022 Fig. 12 at CPU scale: update matrices Aᵢⱼ = V_θᵢ(xⱼ) − V_θ(xⱼ) on k = {cfg.k} "
                 "replay transitions, ordered by clustering\n(red > 0 > blue; colour scale ± the "
                 f"{cfg.color_percentile:g}th percentile of |A| per panel; 'init': update rank of a random network "
                 "on the same transitions)", fontsize=9)
    fig.tight_layout()
    return fig


def _rows(cfg: Config, res: dict) -> list[dict]:
    rows = []
    for li, algo in enumerate(cfg.algos):
        for gi, game in enumerate(cfg.games):
            for s in range(cfg.seeds):
                for p, step in enumerate(res["env_steps"]):
                    rows.append(dict(algo=algo, game=game, seed=s, point=p, env_steps=int(step),
                                     update_rank=int(res["update_rank"][li, gi, s, p]),
                                     update_rank_fresh=int(res["update_rank_fresh"][li, gi, s, p]),
                                     diagonal_ratio=float(res["diagonal_ratio"][li, gi, s, p]),
                                     diagonal_ratio_fresh=float(res["diagonal_ratio_fresh"][li, gi, s, p]),
                                     max_abs_A=float(np.nanmax(np.abs(res["A"][li, gi, s, p]))),
                                     return_mean=float(res["point_return"][li, gi, s, p])))
    return rows


EXPERIMENT = Experiment(NAME, __doc__, config=config, tiny=tiny, scales=SCALES, run=run, plot=plot,
                        claims=check_claims, rows=_rows)


def main(argv: Sequence[str] | None = None) -> Claims:
    """`python -m experiments.lyle22_fig12 [--scale smoke|cpu|paper|tiny] [--out DIR] [--<any Config field> VALUE ...]`
    (nested fields too: `--agent.total-steps 5000`); see `--help`."""
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    EXPERIMENT.cli()
