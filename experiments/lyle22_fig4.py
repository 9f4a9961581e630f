"""Lyle et al. 2022, Fig. 4 (§5.2, H2): update rank of the actor and the critic, PPO against DAAC, on ProcGen.

PPO (Schulman et al. 2017) trains one trunk with the policy-gradient and the TD (value) losses; DAAC
(Raileanu & Fergus 2021) gives the actor and the critic separate networks, so no TD gradient reaches
the actor. For each agent the probes measure, with that network's own optimizer state,

  * the actor's policy update matrix Aᵢⱼ = ‖p_θ(xⱼ) − p_θᵢ(xⱼ)‖₂ (App. B.1), θᵢ one optimizer step on
    the policy loss of transition i, and its update rank (ε = 0.1);
  * the critic's value update matrix Aᵢⱼ = V_θᵢ(xⱼ) − V_θ(xⱼ) (θᵢ one step on the value loss of i),
    and its update rank;

on k transitions of the current rollout. The paper's claims (Fig. 4 caption, §5.2): the DAAC critic,
trained by TD alone, has the highest update rank early in training, while the actors have the lowest
early rank (and only later overtake the DAAC critic).

Scales (`--scale`):
  * `smoke` (`make reproduce`): MinAtar Breakout and SpaceInvaders stand in for ProcGen (the MinAtar
    CNN, seeds vmapped, a few minutes in all); their "test" environments are the same game with other
    seeds, so the generalisation numbers mean little there;
  * `cpu`: ProcGen BigfishEasy, HeistEasy and MinerEasy through envpool with the IMPALA CNN, 10
    training levels and disjoint test levels, 2 seeds (one after another: envpool cannot be vmapped), a
    short run per game that shows the early part of the curves (the part the claims are about). On CPU
    the updates are unrolled and driven one iteration per call (`loop="host"`), ~20× faster than one
    scan there;
  * `paper`: Raileanu & Fergus's hyperparameters (`tdjax.train.ppo_procgen_paper_config` /
    `daac_procgen_paper_config`: 25M steps, 64 envs × 256 steps, γ = 0.999) on the paper's games,
    4 seeds: a GPU job.

Run: `python -m experiments.lyle22_fig4 --out outputs/lyle22_fig4 [--scale smoke|cpu|paper]`.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Sequence

import jax
import numpy as np

from experiments._harness import Experiment, progress_bar
from tdjax.envs import procgen_id
from tdjax.report import Claims
from tdjax.train import family_of
from tdjax.train.actor_critic import ActorCriticConfig, daac_procgen_paper_config, ppo_procgen_paper_config
from tdjax.train.seeds import train_seeds

NAME = "lyle22_fig4"
SCALES = ("smoke", "cpu", "paper")
ALGOS = ("ppo", "daac")
CURVES = (("ppo", "actor"), ("ppo", "critic"), ("daac", "actor"), ("daac", "critic"))
PAPER_GAMES = ("bigfish", "heist", "miner", "chaser", "climber", "dodgeball", "fruitbot", "leaper",
               "starpilot", "plunder", "ninja", "coinrun", "caveflyer", "jumper", "maze", "bossfight")


@dataclasses.dataclass(frozen=True)
class Config:
    # ProcGen games by name ("bigfish": envpool's easy distribution, `tdjax.envs.procgen_id`) or any
    # environment id ("Breakout-MinAtar", "HeistHard-v0").
    games: tuple[str, ...] = ("Breakout-MinAtar", "SpaceInvaders-MinAtar")
    algos: tuple[str, ...] = ALGOS
    seeds: int = 2
    seed: int = 0
    # PPO settings (DAAC changes what `_agent_config` says). Smoke: MinAtar stand-ins, MinAtar CNN.
    agent: ActorCriticConfig = ActorCriticConfig(
        network="auto", num_envs=16, num_steps=32, total_steps=40_960, gamma=0.99, gae_lambda=0.95, lr=5e-4,
        num_epochs=3, num_minibatches=4, normalize_rewards=True, probe_interval=8, probe_k=32, eval_interval=8,
        eval_num_envs=8, eval_steps=32, checkpoint_interval=10)
    # DAAC (Raileanu & Fergus 2021 defaults): 1 policy epoch, 9 value epochs every iteration, α_A = 0.25
    daac_policy_epochs: int = 1
    daac_value_epochs: int = 9
    daac_value_freq: int = 1
    daac_advantage_coef: float = 0.25
    early_fraction: float = 0.3  # "early in training" = the first 30% of the probes
    paper: bool = False  # use tdjax.train's paper configs per game instead of `agent`


def _agent_config(cfg: Config, game: str, algo: str, seed: int) -> ActorCriticConfig:
    if cfg.paper:
        make = ppo_procgen_paper_config if algo == "ppo" else daac_procgen_paper_config
        return make(game, env_seed=seed)
    a = cfg.agent.replace(env=game if "-" in game else procgen_id(game), algo=algo, env_seed=seed)
    if algo == "daac":
        a = a.replace(daac_policy_epochs=cfg.daac_policy_epochs, daac_value_epochs=cfg.daac_value_epochs,
                      daac_value_freq=cfg.daac_value_freq, daac_advantage_coef=cfg.daac_advantage_coef)
    return a


def config(scale: str = "smoke") -> Config:
    """`smoke`: MinAtar Breakout and SpaceInvaders standing in for ProcGen (seconds per iteration on
    CPU, vmapped seeds); `cpu`: ProcGen bigfish, heist and miner with the IMPALA CNN on 10 training
    levels, a short run per game (the early part of the curves); `paper`: Raileanu & Fergus's settings
    on the paper's games, 4 seeds (GPU)."""
    if scale not in SCALES:
        raise ValueError(f"{NAME}: scale must be one of {SCALES}, got {scale!r}.")
    cfg = Config()
    if scale == "cpu":
        cfg = dataclasses.replace(cfg, games=("bigfish", "heist", "miner"), seeds=2, agent=cfg.agent.replace(
            num_levels=10, start_level=0, network="impala_cnn", num_envs=8, num_steps=32, total_steps=4_096,
            gamma=0.999, num_minibatches=4, probe_interval=2, probe_k=32, eval_interval=4, eval_num_envs=8,
            eval_steps=32, loop="host", probe_fresh=False))  # fresh-network probes: not in the figure
    if scale == "paper":
        cfg = dataclasses.replace(cfg, games=PAPER_GAMES, seeds=4, paper=True)
    return cfg


def tiny() -> Config:
    """Seconds, for tests: CartPole with an MLP (vmapped seeds), a handful of probes."""
    return dataclasses.replace(Config(), games=("CartPole-v1",), seeds=2, agent=ActorCriticConfig(
        env="CartPole-v1", network="mlp", hidden=(32, 32), num_envs=4, num_steps=16, total_steps=1_024,
        num_epochs=2, num_minibatches=2, probe_interval=4, probe_k=8, eval_interval=4, eval_num_envs=4,
        eval_steps=16, checkpoint_interval=16), daac_value_epochs=2)


def _validate(cfg: Config) -> None:
    if not cfg.games:
        raise ValueError(f"{NAME}: Config.games is empty. Fix: name at least one game, e.g. ('bigfish',).")
    if set(cfg.algos) != set(ALGOS):
        raise ValueError(f"{NAME}: Config.algos must be {ALGOS} (the figure compares them), got {cfg.algos}.")
    if cfg.seeds < 1:
        raise ValueError(f"{NAME}: Config.seeds must be >= 1, got {cfg.seeds}.")
    if not cfg.paper and cfg.agent.probe_interval <= 0:
        raise ValueError(f"{NAME}: Config.agent.probe_interval must be > 0 (the figure is made of probes).")
    if not 0 < cfg.early_fraction <= 0.5:
        raise ValueError(f"{NAME}: Config.early_fraction must lie in (0, 0.5], got {cfg.early_fraction}.")


def run(cfg: Config, show_progress: bool = True) -> dict:
    """Trains every (game, agent) with `cfg.seeds` seeds; probe arrays [G, 4 curves, S, P] (curves in
    `CURVES` order), returns [G, 2 agents, S]."""
    _validate(cfg)
    G = len(cfg.games)
    rank = fresh = None
    train_ret = np.full((G, 2, cfg.seeds), np.nan)
    test_ret = np.full((G, 2, cfg.seeds), np.nan)
    seconds = np.zeros((G, 2))
    probe_steps = None
    jobs = [(g, a) for g in range(G) for a in range(2)]
    for g, a in progress_bar(iterable=jobs, desc=NAME, enabled=show_progress):
        algo = ALGOS[a]
        t0 = time.time()
        # Seeds vmapped for jitted games, one run per seed for envpool ones; with loop="host" (CNN agents
        # on CPU) driven one iteration per call: XLA:CPU is slower for convolutions inside loops.
        agent_cfg = _agent_config(cfg, cfg.games[g], algo, cfg.seed)
        _, m = train_seeds(agent_cfg, jax.random.key(cfg.seed), cfg.seeds, keep_state=False)
        m = jax.tree.map(np.asarray, m)
        probed = m.probes.probed[0]  # the schedule depends on the iteration only
        if rank is None:
            P = int(probed.sum())
            rank = np.full((G, 4, cfg.seeds, P), np.nan)
            fresh = np.full((G, 4, cfg.seeds, P), np.nan)
            probe_steps = m.env_steps[0, probed]
        for c, (calgo, part) in enumerate(CURVES):
            if calgo == algo:
                rank[g, c] = getattr(m.probes, f"{part}_update_rank")[:, probed]
                fresh[g, c] = getattr(m.probes, f"{part}_update_rank_fresh")[:, probed]
        family = family_of(agent_cfg)
        train_ret[g, a] = family.mean_return(m, max(1, m.env_steps.shape[1] // 4))  # the last quarter
        test_ret[g, a] = family.mean_return(m, None, test=True)
        seconds[g, a] = time.time() - t0
    return dict(rank=rank, rank_fresh=fresh, probe_env_steps=probe_steps, train_return=train_ret,
                test_return=test_ret, seconds=seconds, games=np.array(cfg.games),
                curves=np.array([f"{a} {p}" for a, p in CURVES]))


def check_claims(cfg: Config, res: dict) -> Claims:
    """The paper's Fig. 4 claims, per game, on the mean over seeds of the early probes."""
    a = _agent_config(cfg, cfg.games[0], "ppo", cfg.seed)
    claims = Claims(NAME, settings=dict(
        games=list(cfg.games), seeds=cfg.seeds, network=a.network, total_steps=a.total_steps, num_envs=a.num_envs,
        num_steps=a.num_steps, num_levels=a.num_levels, probe_interval_iterations=a.probe_interval,
        probe_k=a.probe_k, rank_eps=a.probe_rank_eps, probes=int(res["rank"].shape[-1]),
        daac=dict(policy_epochs=cfg.daac_policy_epochs, value_epochs=cfg.daac_value_epochs,
                  value_freq=cfg.daac_value_freq, advantage_coef=cfg.daac_advantage_coef),
        seconds_per_run={f"{g} {alg}": round(float(res["seconds"][i, k]), 1)
                         for i, g in enumerate(cfg.games) for k, alg in enumerate(ALGOS)}))
    P = res["rank"].shape[-1]
    early = slice(0, max(1, int(round(cfg.early_fraction * P))))
    steps = res["probe_env_steps"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r_early = np.nanmean(res["rank"][..., early], axis=(2, 3))  # [G, 4]
    names = [f"{x} {y}" for x, y in CURVES]
    for g, game in enumerate(cfg.games):
        r = r_early[g]
        order = ", ".join(f"{names[c]} {r[c]:.1f}" for c in np.argsort(-r))
        claims.check(f"{game}: early in training the DAAC critic has the highest update rank of the four networks",
                     bool(np.argmax(r) == 3), f"mean rank over the probes up to {int(steps[early][-1]):,} env steps: "
                     f"{order}")
        claims.check(f"{game}: early in training the actors' update ranks are below both critics'",
                     bool(max(r[0], r[2]) < min(r[1], r[3])), order)
    split = (f"the {a.num_levels} training levels → disjoint test levels" if a.env.endswith("-v0")
             else "training environments → the same game with other seeds (no level split in gymnax games)")
    claims.note(f"Generalisation (mean return over the last quarter of training, {split}): "
                + "; ".join(f"{game} {alg} {np.nanmean(res['train_return'][g, k]):.2f} → "
                            f"{np.nanmean(res['test_return'][g, k]):.2f}"
                            for g, game in enumerate(cfg.games) for k, alg in enumerate(ALGOS)))
    if not cfg.paper:
        claims.note(f"CPU scale: {a.total_steps:,} environment steps per run instead of 25M, {a.num_envs} "
                    f"environments × {a.num_steps} steps per rollout instead of 64 × 256; only the early part of the "
                    "paper's curves is reproduced.")
    return claims


def plot(cfg: Config, res: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    G = len(cfg.games)
    cols = min(G, 4)
    rows = -(-G // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.3 * cols, 3.4 * rows), squeeze=False)
    steps = res["probe_env_steps"] / 1e3
    colors = {"ppo actor": "C0", "ppo critic": "C1", "daac actor": "C2", "daac critic": "#9d7cd8"}  # lilac
    for g, game in enumerate(cfg.games):
        ax = axes[g // cols, g % cols]
        for c, name in enumerate(res["curves"]):
            r = res["rank"][g, c]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, lo, hi = np.nanmean(r, 0), np.nanmin(r, 0), np.nanmax(r, 0)
            ax.plot(steps, mean, color=colors[str(name)], lw=1.6, label=str(name).upper().replace("ACTOR", "actor")
                    .replace("CRITIC", "critic"))
            ax.fill_between(steps, lo, hi, color=colors[str(name)], alpha=0.2, lw=0)
        ax.set_title(game, fontsize=10)
        ax.set_xlabel("environment steps (thousands)")
        if g % cols == 0:
            ax.set_ylabel(f"update rank (k = {cfg.agent.probe_k})")
        if g == 0:
            ax.legend(fontsize=7)
    for g in range(G, rows * cols):
        axes[g // cols, g % cols].axis("off")
    fig.suptitle(f"Lyle et al. 2022 Fig. 4: update rank of actor and critic, PPO vs DAAC ({cfg.seeds} seeds; "
                 "shading: min–max)", fontsize=11)
    fig.tight_layout()
    return fig


def _rows(cfg: Config, res: dict) -> list[dict]:
    rows = []
    for g, game in enumerate(cfg.games):
        for c, name in enumerate(res["curves"]):
            for s in range(cfg.seeds):
                for p, step in enumerate(res["probe_env_steps"]):
                    rows.append(dict(game=game, network=str(name), seed=s, env_steps=int(step),
                                     update_rank=float(res["rank"][g, c, s, p]),
                                     update_rank_fresh=float(res["rank_fresh"][g, c, s, p])))
    return rows


EXPERIMENT = Experiment(NAME, __doc__, config=config, tiny=tiny, scales=SCALES, run=run, plot=plot,
                        claims=check_claims, rows=_rows)


def main(argv: Sequence[str] | None = None) -> Claims:
    """`python -m experiments.lyle22_fig4 [--scale smoke|cpu|paper|tiny] [--out DIR] [--<any Config field> VALUE ...]`
    (nested fields too: `--agent.total-steps 5000`); see `--help`."""
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    EXPERIMENT.cli()
