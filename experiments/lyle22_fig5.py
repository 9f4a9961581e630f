"""Lyle et al. 2022, Fig. 5 (§6.1): value distillation and behaviour cloning against the TD-trained teacher.

The paper: a DQN teacher is trained online; a freshly initialised network is then distilled from it on
the teacher's replay buffer, which the teacher keeps filling with its ε = 0.1 greedy policy during
distillation (App. B.3), by value distillation on all actions (eq. 22) or by behaviour cloning with
an entropy bonus (eq. 23 / eq. 57). Three quantities are tracked: the return of the ε-greedy
(ε = 0.01) policy in the training environment; robustness to Gaussian perturbations of the input
("whether the network takes the same action under a Gaussian perturbation to its input as in the
unperturbed observation"), with the ℓ1 distance between the policies on the clean and perturbed
batch; and interpolation consistency ("given a convex combination of observations o₁ and o₂, the
network takes the same action under the combination as it does in either of the original
observations").

What this module does: per game, a DQN teacher (`tdjax.train.ValueConfig`, trained once, saved under
`teacher_dir` and reused by Fig. 11, `experiments._distill`); its final replay buffer is the dataset;
students (`tdjax.train.OfflineConfig`, `collect=True`, ε = 0.1) for each objective, `student_seeds`
seeds vmapped; then on `robust_states` states drawn from the dataset `tdjax.perturbation_robustness`
(greedy actions; ℓ1 of each network's own policy: greedy for Q-networks, softmax for the BC network)
and `tdjax.interpolation_consistency` on random pairs, and returns with `tdjax.train.evaluate_policy`.

Scales (`--scale`): `smoke` (MinAtar Breakout, SpaceInvaders, Asterix: 40k-step teachers, 3k-update
students; a few minutes on 2 cores); `cpu` (the same games, 300k-step teachers, 30k-update students,
2 student seeds); `paper` (Atari Pong, Boxing, Seaquest, Breakout through envpool with the Nature CNN,
50M-frame teachers, a 10M-frame distillation budget: a GPU job). MinAtar observations are binary
images, so `noise_scales` are in those units; pixels (paper scale) are scaled to [0, 1] first.

Run: `python -m experiments.lyle22_fig5 --out outputs/lyle22_fig5 [--scale smoke|cpu|paper]`.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

import tdjax
from experiments._distill import teacher_and_data
from experiments._harness import Experiment, progress_bar
from tdjax.report import Claims
from tdjax.train import OfflineConfig, ValueConfig, load_dataset, load_teacher, make_agent
from tdjax.train.seeds import train_seeds

NAME = "lyle22_fig5"
SCALES = ("smoke", "cpu", "paper")
NETWORKS = ("teacher", "value_distillation", "behaviour_cloning")
FRAME_SKIP = 4


@dataclasses.dataclass(frozen=True)
class Config:
    games: tuple[str, ...] = ("Breakout-MinAtar", "SpaceInvaders-MinAtar", "Asterix-MinAtar")
    seed: int = 0
    teacher_dir: str = "outputs/teachers"  # teachers and their data are saved here and reused (also by Fig. 11)
    teacher: ValueConfig = ValueConfig(
        algo="dqn", network="minatar_cnn", num_envs=4, total_steps=40_000, buffer_size=20_000, batch_size=32,
        learning_starts=1_000, target_update_interval=500, lr=1e-3, eps_decay_steps=20_000, eps_end=0.05,
        probe_interval=1_000, probe_k=32)
    student: OfflineConfig = OfflineConfig(
        network="minatar_cnn", num_updates=3_000, batch_size=32, lr=1e-3, collect=True, collect_epsilon=0.1,
        bc_entropy_coef=1e-2, probe_interval=0)
    student_seeds: int = 2
    objectives: tuple[str, ...] = ("value_distillation", "behaviour_cloning")
    noise_scales: tuple[float, ...] = (0.1, 0.3, 0.5)  # σ of the Gaussian input perturbation
    noise_samples: int = 4  # draws per state
    robust_states: int = 256  # states from the dataset for robustness and interpolation
    interpolation_points: int = 8  # interior points per pair
    eval_envs: int = 16  # environments of the return evaluation
    eval_steps: int = 1_000  # vector steps of the return evaluation
    eval_epsilon: float = 0.01  # ε of the evaluation policy (Lyle §6.1)


def config(scale: str = "smoke") -> Config:
    """`smoke`: MinAtar, 40k-step teachers and 3k-update students; `cpu`: 300k/30k; `paper`: Atari (GPU)."""
    if scale not in SCALES:
        raise ValueError(f"{NAME}: scale must be one of {SCALES}, got {scale!r}.")
    cfg = Config()
    if scale == "cpu":
        cfg = dataclasses.replace(
            cfg, teacher=cfg.teacher.replace(total_steps=300_000, buffer_size=100_000, eps_decay_steps=100_000,
                                             probe_interval=5_000),
            student=cfg.student.replace(num_updates=30_000), eval_steps=2_000)
    if scale == "paper":
        cfg = dataclasses.replace(
            cfg, games=("Pong-v5", "Boxing-v5", "Seaquest-v5", "Breakout-v5"), student_seeds=3, eval_steps=27_000,
            noise_scales=(0.02, 0.05, 0.1),
            teacher=ValueConfig(algo="dqn", network="nature_cnn", num_envs=8, total_steps=50_000_000 // FRAME_SKIP,
                                buffer_size=1_000_000, batch_size=32, learning_starts=50_000,
                                target_update_interval=2_000, lr=6.25e-5, adam_eps=1.5e-4, eps_end=0.1,
                                eps_decay_steps=250_000, probe_interval=50_000, checkpoint_interval=10_000),
            student=cfg.student.replace(network="nature_cnn", num_updates=10_000_000 // FRAME_SKIP // 4, lr=6.25e-5,
                                        adam_eps=1.5e-4, batch_size=32))
    return cfg


def tiny() -> Config:
    """Seconds, for tests: CartPole with MLPs, a short teacher and a BC student."""
    return dataclasses.replace(
        Config(), games=("CartPole-v1",), teacher_dir="", student_seeds=2, robust_states=32, noise_samples=2,
        objectives=("behaviour_cloning",),
        noise_scales=(0.1, 0.5), eval_envs=4, eval_steps=200,
        teacher=ValueConfig(network="mlp", hidden=(32,), num_envs=4, total_steps=2_000, buffer_size=1_000,
                            batch_size=32, learning_starts=200, target_update_interval=100, probe_interval=200,
                            probe_k=8),
        student=OfflineConfig(network="mlp", hidden=(32,), num_updates=200, batch_size=32, lr=1e-3, collect=True))


def _validate(cfg: Config) -> None:
    if not cfg.games:
        raise ValueError(f"{NAME}: Config.games is empty. Fix: name at least one game, e.g. ('Breakout-MinAtar',).")
    unknown = [o for o in cfg.objectives if o not in ("value_distillation", "behaviour_cloning")]
    if unknown or not cfg.objectives:
        raise ValueError(f"{NAME}: Config.objectives={cfg.objectives}: Fig. 5 compares 'value_distillation' and "
                         "'behaviour_cloning'. Fix: use those names.")
    for name in ("student_seeds", "noise_samples", "robust_states", "interpolation_points", "eval_envs", "eval_steps"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{NAME}: Config.{name} must be >= 1, got {getattr(cfg, name)}.")
    if not cfg.noise_scales or min(cfg.noise_scales) < 0:
        raise ValueError(f"{NAME}: Config.noise_scales must be non-empty and >= 0, got {cfg.noise_scales}.")


def _teacher_folder(cfg: Config, game: str, tmp: Path) -> Path:
    return (Path(cfg.teacher_dir) if cfg.teacher_dir else tmp) / game


def _measurer(apply_fn, cfg: Config, policy: str, env_name: str):
    """One jitted function of (params stacked over seeds [S], obs, pair indices, key) measuring, per seed:
    agreement and ℓ1 per noise scale, interpolation consistency and its ℓ1, and the ε-greedy return."""
    from tdjax.envs import make_vec
    from tdjax.train import evaluate_policy

    env = make_vec(env_name, cfg.eval_envs)

    def one(params, obs, ia, ib, key):
        agree, l1 = [], []
        for i, sigma in enumerate(cfg.noise_scales):
            k = jax.random.fold_in(key, i)
            r = tdjax.perturbation_robustness(apply_fn, params, obs, k, noise_scale=sigma,
                                              num_samples=cfg.noise_samples)
            r_pol = r if policy == "greedy" else tdjax.perturbation_robustness(
                apply_fn, params, obs, k, noise_scale=sigma, num_samples=cfg.noise_samples, policy=policy)
            agree.append(r.agreement)
            l1.append(r_pol.policy_l1)
        ic = tdjax.interpolation_consistency(apply_fn, params, obs[ia], obs[ib], num_points=cfg.interpolation_points)
        ic_pol = ic if policy == "greedy" else tdjax.interpolation_consistency(
            apply_fn, params, obs[ia], obs[ib], num_points=cfg.interpolation_points, policy=policy)
        ret, _ = evaluate_policy(lambda p, x: apply_fn(p, x), params, env, jax.random.fold_in(key, 99),
                                 num_steps=cfg.eval_steps, epsilon=cfg.eval_epsilon)
        return dict(agreement=jnp.stack(agree), l1=jnp.stack(l1), consistency=ic.consistency,
                    interp_l1=ic_pol.policy_l1, ret=ret)

    return jax.jit(jax.vmap(one, in_axes=(0, None, None, None, 0)))


def run(cfg: Config, show_progress: bool = True) -> dict:
    """Per game: teacher (trained or reused), students per objective and seed; measurements [G, N, ...]
    with N = 1 + number of objectives (the teacher first; students averaged over seeds)."""
    import tempfile

    _validate(cfg)
    G, N, K = len(cfg.games), 1 + len(cfg.objectives), len(cfg.noise_scales)
    ret = np.full((G, N), np.nan)
    agree = np.full((G, N, K), np.nan)
    l1 = np.full((G, N, K), np.nan)
    consist = np.full((G, N), np.nan)
    interp_l1 = np.full((G, N), np.nan)
    seconds = np.zeros(G)
    tmp = Path(tempfile.mkdtemp(prefix="tdjax_fig5_"))
    key = jax.random.key(cfg.seed)
    for g, game in enumerate(progress_bar(iterable=cfg.games, desc=NAME, enabled=show_progress)):
        t0 = time.time()
        k_game = jax.random.fold_in(key, g)
        t_path, d_path, _ = teacher_and_data(cfg.teacher.replace(env=game), _teacher_folder(cfg, game, tmp), k_game)
        teacher = load_teacher(t_path)
        ds, _ = load_dataset(d_path)
        valid = np.flatnonzero(np.asarray(ds.replay.data.valid).reshape(-1))
        rng = np.random.default_rng(cfg.seed + g)
        pick = rng.choice(valid, size=min(cfg.robust_states, valid.size), replace=False)
        num_envs = ds.replay.data.action.shape[1]
        obs = np.asarray(tdjax.train.replay.gather(ds.replay, jnp.asarray(pick // num_envs),
                                                    jnp.asarray(pick % num_envs)).obs, np.float32)
        pairs = (rng.permutation(len(obs)), rng.permutation(len(obs)))
        k_measure = jax.random.fold_in(k_game, 1)
        # the networks are measured on observations in their own units (pixels scaled inside)
        nets = [("teacher", teacher.output_fn(), jax.tree.map(lambda x: x[None], teacher.params), "greedy")]
        for obj in cfg.objectives:
            s_cfg = cfg.student.replace(teacher=t_path, dataset=d_path, objective=obj)
            agent = make_agent(s_cfg)
            state, _ = train_seeds(s_cfg, jax.random.fold_in(k_game, 2), cfg.student_seeds, keep_state=True)
            policy = "softmax" if obj == "behaviour_cloning" else "greedy"
            nets.append((obj, agent.q_values, state.learner.params, policy))
        for n, (_, fn, params, policy) in enumerate(nets):
            num = jax.tree.leaves(params)[0].shape[0]
            m = jax.tree.map(np.asarray, _measurer(fn, cfg, policy, game)(
                params, jnp.asarray(obs), jnp.asarray(pairs[0]), jnp.asarray(pairs[1]),
                jax.random.split(k_measure, num)))
            agree[g, n], l1[g, n] = m["agreement"].mean(0), m["l1"].mean(0)
            consist[g, n], interp_l1[g, n] = m["consistency"].mean(), m["interp_l1"].mean()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                ret[g, n] = np.nanmean(m["ret"])
        seconds[g] = time.time() - t0
    return dict(games=np.array(cfg.games), networks=np.array(("teacher",) + tuple(cfg.objectives)),
                noise_scales=np.array(cfg.noise_scales), returns=ret, agreement=agree, policy_l1=l1,
                consistency=consist, interp_l1=interp_l1, seconds=seconds)


def check_claims(cfg: Config, res: dict) -> Claims:
    """Lyle §6.1 / Fig. 5, per game, at the middle noise scale."""
    nets = [str(n) for n in res["networks"]]
    k = len(cfg.noise_scales) // 2
    claims = Claims(NAME, settings=dict(
        games=list(cfg.games), teacher_steps=cfg.teacher.total_steps, teacher_algo=cfg.teacher.algo,
        student_updates=cfg.student.num_updates, student_seeds=cfg.student_seeds,
        collect_epsilon=cfg.student.collect_epsilon,
        bc_entropy_coef=cfg.student.bc_entropy_coef, noise_scales=list(cfg.noise_scales),
        robust_states=cfg.robust_states, eval_epsilon=cfg.eval_epsilon, eval_steps=cfg.eval_steps,
        seconds_per_game=[round(float(s), 1) for s in res["seconds"]]))
    a, c, r = res["agreement"][:, :, k], res["consistency"], res["returns"]
    sigma = cfg.noise_scales[k]
    for g, game in enumerate(cfg.games):
        table = ", ".join(f"{n} {a[g, i]:.3f}" for i, n in enumerate(nets))
        for i, n in enumerate(nets[1:], 1):
            claims.check(f"{game}: the {n} student is more robust to input perturbations than the teacher "
                         f"(same action under N(0, {sigma}²) noise more often)", bool(a[g, i] > a[g, 0]),
                         f"agreement: {table}")
            claims.check(f"{game}: the {n} student is more consistent under interpolation than the teacher",
                         bool(c[g, i] > c[g, 0]),
                         "interpolation consistency: " + ", ".join(f"{m} {c[g, j]:.3f}" for j, m in enumerate(nets)))
        if "behaviour_cloning" in nets:
            b = nets.index("behaviour_cloning")
            claims.check(f"{game}: behaviour cloning obtains the best robustness", bool(a[g, b] >= np.max(a[g])),
                         f"agreement: {table}")
    if "behaviour_cloning" in nets:
        b = nets.index("behaviour_cloning")
        ok = [bool(r[g, b] >= 0.8 * r[g, 0]) if r[g, 0] > 0 else bool(r[g, b] >= r[g, 0])
              for g in range(len(cfg.games))]
        claims.check("behaviour cloning matches or nearly matches (≥ 80% of) the teacher's return in most games "
                     "(the paper: three of four)", bool(np.mean(ok) >= 0.75 * (len(ok) >= 1)),
                     "; ".join(f"{game}: teacher {r[g, 0]:.2f}, BC {r[g, b]:.2f}" for g, game in enumerate(cfg.games)))
    claims.note("Returns under the ε = 0.01 policy: " + "; ".join(
        f"{game}: " + ", ".join(f"{n} {r[g, i]:.2f}" for i, n in enumerate(nets)) for g, game in enumerate(cfg.games)))
    if cfg.teacher.total_steps < 1_000_000:
        claims.note(f"CPU scale: MinAtar instead of Atari, {cfg.teacher.total_steps:,}-step teachers instead of 50M "
                    f"frames, {cfg.student.num_updates:,} distillation updates instead of a 10M-frame budget.")
    return claims


def plot(cfg: Config, res: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = [str(n) for n in res["networks"]]
    G = len(cfg.games)
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    width = 0.8 / len(nets)
    x = np.arange(G)
    for i, n in enumerate(nets):
        axes[0].bar(x + i * width, res["returns"][:, i], width, label=n)
        axes[2].bar(x + i * width, res["consistency"][:, i], width, label=n)
        for g in range(G):
            axes[1].plot(res["policy_l1"][g, i], res["agreement"][g, i], marker="os^"[i % 3], color=f"C{i}",
                         label=n if g == 0 else None, alpha=0.8)
        axes[3].bar(x + i * width, res["interp_l1"][:, i], width, label=n)
    for ax, title in zip(axes[[0, 2, 3]], ("return (ε = 0.01)", "interpolation consistency",
                                           "ℓ1 to the nearer endpoint's policy")):
        ax.set_xticks(x + 0.4 - width / 2, [gm.replace("-MinAtar", "") for gm in cfg.games], fontsize=8)
        ax.set_title(title, fontsize=10)
    axes[1].set_xlabel("ℓ1 between policies on clean and perturbed inputs")
    axes[1].set_ylabel("same action under noise")
    axes[1].set_title(f"perturbation robustness (σ ∈ {list(cfg.noise_scales)})", fontsize=10)
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.suptitle("Lyle et al. 2022 Fig. 5: teacher vs distilled students", fontsize=11)
    fig.tight_layout()
    return fig


def _rows(cfg: Config, res: dict) -> list[dict]:
    rows = []
    for g, game in enumerate(cfg.games):
        for i, n in enumerate(res["networks"]):
            row = dict(game=game, network=str(n), eval_return=float(res["returns"][g, i]),
                       interpolation_consistency=float(res["consistency"][g, i]),
                       interpolation_l1=float(res["interp_l1"][g, i]))
            for k, s in enumerate(cfg.noise_scales):
                row[f"agreement_sigma_{s}"] = float(res["agreement"][g, i, k])
                row[f"policy_l1_sigma_{s}"] = float(res["policy_l1"][g, i, k])
            rows.append(row)
    return rows


EXPERIMENT = Experiment(NAME, __doc__, config=config, tiny=tiny, scales=SCALES, run=run, plot=plot,
                        claims=check_claims, rows=_rows)


def main(argv: Sequence[str] | None = None) -> Claims:
    """`python -m experiments.lyle22_fig5 [--scale smoke|cpu|paper|tiny] [--out DIR] [--<field> VALUE ...]`."""
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    EXPERIMENT.cli()
