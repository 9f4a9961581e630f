"""Bengio et al. 2020, Figs 4, 10, 12, 14 (§5): Q-learning control against policy evaluation, the loss change by offset.

The paper trains "control agents and policy evaluation (or Batch Q) agents with the Q-Learning loss"
L_QL = [Q_θ(S_t, A_t) − (R_t + γ maxₐ Q_θ(S_{t+1}, a))]² (eq. 10; bootstrapping on a frozen copy,
refreshed every 10k updates, App. B.2) and measures, as for Fig. 3, the difference in pointwise TD loss
at the states surrounding the update sample in the replay buffer (offsets ±30). Fig. 4: full lines
control (a DQN agent acting ε-greedily, learning from its own replay buffer), dashed lines policy
evaluation on the teacher's dataset D*, for Adam, RMSProp, SGD and momentum SGD, x = 0 excluded. The
text: "Compared to the regressions in Fig. 3, the pointwise difference is more than an order of
magnitude smaller, and drops off even faster when going away from x = 0 [...] For certain optimizers,
here RMSProp and SGD, this effect is even slightly negative [...] (note the difference with Adam and
Momentum-SGD)"; "while Q-Learning does not have as strong a gain as the regressions from Fig. 3, it has
a larger gain than policy evaluation"; the singular values of the last hidden layer after 100k steps
show "a consistently larger spread in the policy evaluation case than the control case" (App. D.1,
Fig. 12, Adam/RMSProp), an effect that "diminishes as training progresses"; "after a few initial
epochs, function interference remains constant" (App. D.2, Fig. 14: the gain by offset over training,
control with Adam, x = 0 excluded). Fig. 10 is Fig. 4 with x = 0: "RMSprop has a surprisingly large
expected gain at x = 0, but a negative gain around x = 0".

What this module does, per game and optimizer (`optimizers`), `num_seeds` seeds vmapped
(`tdjax.train.seeds.make_seed_runner`; every run of a game starts from the same initial weights):
  * control: a DQN agent (`control`, a `tdjax.train.ValueConfig` with `optimizer` set per run) trained
    in chunks of `measure_every` updates. After each chunk, per seed, `num_samples` update samples are
    drawn uniformly from the agent's own replay buffer, with their neighbours x = −X..X in its stored
    trajectories (`tdjax.train.replay.neighbours`); `tdjax.loss_change_by_offset` takes ONE step of the
    agent's real optimizer (with its state) on each update sample and measures the gain in the agent's
    per-example loss, ½δ² with the frozen target network;
  * policy evaluation: a fresh student (`evaluation`, a `tdjax.train.OfflineConfig` with objective
    "q_learning", the same loss) trained on D*, the ε = 0.05 rollouts of Lyle Fig. 5's DQN teacher
    (the cache of Fig. 3: `experiments._bengio20_offsets.teacher_and_dstar`), measured the same way on
    update samples drawn from D* (the same samples for every optimizer);
  * the Fig. 3 reference (`reference`, default L_TD*): the regression student trained with Adam on the
    same D* and measured in the TD loss L_TD*, for the magnitude claims;
  * after each chunk, `tdjax.singular_value_spread` of the last hidden layer's features
    (`value_based.features`) over `sv_states` states: the control agent's own replay buffer and D* for
    control, D* for policy evaluation.
The figure (one png): Fig. 4 (x ≠ 0), Fig. 10 (with x = 0), Fig. 12 (singular values after the last
update, control vs policy evaluation, Adam and RMSProp) and Fig. 14 (the control/Adam gain by offset
over training as a heat map, x = 0 excluded).

Where this differs from the paper, on purpose or by necessity:
  * smoke/cpu: MinAtar Breakout stands in for Atari MsPacman, Asterix and Seaquest (a jittable gymnax
    game, so the control agents, D* and the vmapped runs fit in minutes on 2 CPU cores; its DQN teacher
    and D* are the ones Fig. 3 caches; `--games Asterix-MinAtar` runs the paper's own game), with the
    MinAtar CNN and far shorter runs than the paper's 10M control steps and 500k policy-evaluation updates;
  * the losses are squared (½δ²; the released code uses smooth-L1); no L2 weight regularisation (the
    paper: 1e-4); the Nature CNN (paper scale) has ReLU, not leaky ReLU; gradients are not clipped;
  * optimizers with PyTorch's defaults as App. B.1 gives them (RMSProp α = 0.99, ε = 1e-8, not centered;
    momentum 0.9), one learning rate for all; optax puts RMSProp's ε inside the square root;
  * `update="per_sample"` steps on s_t alone (the text: "the state used for the update"); the released
    code (atari_control.py, `Measures`) measures around the agent's minibatch step of 32 (`update="batch"`);
  * the magnitude comparison with Fig. 3 doubles the Q-learning gains, since L_QL here is ½δ² and L_TD*
    is a plain square.

Scales (`--scale`): `smoke` (Breakout-MinAtar, Fig. 5's 40k-step teacher, 5k-step D* × 4 envs, 3,000
updates per run measured every 750, 2 seeds, 4 optimizers × {control, policy evaluation} + the Fig. 3
reference: under 8 minutes on 2 cores with the teacher cached); `cpu` (Breakout and Asterix, Fig. 5's
300k-step teachers, 20,000 updates, 4 seeds); `paper` (App. B.2: Atari MsPacman, Asterix, Seaquest with
sticky actions through envpool, Nature CNN, lr 1e-4, γ 0.99, batch 32, 500k buffer, target every 10k
updates, control 10M steps with one update per step, policy evaluation 500k updates, 10 runs: a GPU job).

Run: `python -m experiments.bengio20_fig4 --out outputs/bengio20_fig4 [--scale smoke|cpu|paper]`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import tdjax
from experiments import lyle22_fig5
from experiments._bengio20_offsets import (
    band,
    dstar_positions,
    offline_measurer,
    teacher_and_dstar,
    temporary_folder,
    weighted_profile,
)
from experiments._harness import Experiment, progress_bar
from tdjax.report import Claims
from tdjax.train import OfflineConfig, ValueConfig, load_dataset
from tdjax.train import replay as replay_lib
from tdjax.train.seeds import make_seed_runner
from tdjax.train.validation import require

NAME = "bengio20_fig4"
SCALES = ("smoke", "cpu", "paper")
OPTIMIZERS = ("adam", "rmsprop", "sgd", "momentum")
OPT_LABELS = {"adam": "Adam", "rmsprop": "RMSProp", "sgd": "SGD", "momentum": "momentum SGD"}
MODES = ("control", "pe")
MODE_LABELS = {"control": "control", "pe": "policy evaluation"}
REFERENCES = ("td_star", "q_regression", "mc_regression")
REF_LABELS = {"td_star": "L_TD*", "q_regression": "L_reg", "mc_regression": "L_MC"}
NEAR = (1, 10)  # |x| range of the claims (as for Fig. 3)
FRAME_SKIP = 4

# App. B.1: PyTorch's optimizer defaults; App. B.2: no gradient clipping.
def _pytorch_optimizers(c: Any) -> Any:
    """`c` (a ValueConfig or OfflineConfig) with App. B.1's optimizer settings and no clipping (App. B.2)."""
    return c.replace(adam_eps=1e-8, rmsprop_decay=0.99, rmsprop_eps=1e-8, rmsprop_centered=False, momentum=0.9,
                     max_grad_norm=None)


@dataclasses.dataclass(frozen=True)
class Config:
    games: tuple[str, ...] = ("Breakout-MinAtar",)  # MinAtar stand-in for MsPacman/Asterix/Seaquest (docstring)
    seed: int = 0  # root of teacher, D*, run and update-sample randomness
    teacher_dir: str = "outputs/teachers"  # teachers and D* are saved here and reused (Figs 3 and 5 too)
    teacher: ValueConfig = lyle22_fig5.Config().teacher  # Fig. 5's DQN teacher of D*; its env is set per game
    data_steps: int = 5_000  # vector steps of D* (× teacher.num_envs transitions)
    data_epsilon: float = 0.05  # ε of the teacher's ε-greedy rollouts (App. B.2: 5%)
    optimizers: tuple[str, ...] = OPTIMIZERS  # "adam" | "rmsprop" | "sgd" | "momentum", each run in both settings
    # control: a DQN agent from scratch; `env` and `optimizer` are set per run
    control: ValueConfig = _pytorch_optimizers(ValueConfig(
        algo="dqn", network="minatar_cnn", num_envs=4, total_steps=4 * (250 + 3_000), buffer_size=20_000,
        batch_size=32, learning_starts=1_000, target_update_interval=500, lr=1e-4, gamma=0.99, eps_decay_steps=5_000,
        eps_end=0.05, probe_interval=0, checkpoint_interval=750))
    # policy evaluation on D*; `teacher`, `dataset` and `optimizer` are set per run
    evaluation: OfflineConfig = _pytorch_optimizers(OfflineConfig(
        objective="q_learning", network="minatar_cnn", num_updates=3_000, batch_size=32, lr=1e-4, gamma=0.99,
        target_update_interval=500, probe_interval=0, checkpoint_interval=750))
    reference: str = "td_star"  # Fig. 3 regression trained with Adam on D* for the magnitude claims; "" skips it
    num_seeds: int = 2  # vmapped runs per optimizer and setting
    measure_every: int = 750  # updates between measuring points (both settings' updates are multiples of it)
    num_samples: int = 64  # update samples per measuring point and seed
    max_offset: int = 30  # offsets x = −X..X (§5: ± 30)
    update: str = "per_sample"  # "per_sample": one step on s_t alone; "batch": one step on all samples at once
    chunk_size: Optional[int] = None  # update samples per vmapped chunk (None: all; bounds memory)
    sv_states: int = 512  # states whose last-hidden-layer features give the singular values (Fig. 12)


def config(scale: str = "smoke") -> Config:
    """`smoke`: Breakout-MinAtar, 3,000 updates; `cpu`: 2 MinAtar games, 20,000; `paper`: Atari, App. B.2 (GPU)."""
    if scale not in SCALES:
        raise ValueError(f"{NAME}: scale must be one of {SCALES}, got {scale!r}.")
    cfg = Config()
    if scale == "cpu":
        cfg = dataclasses.replace(
            cfg, games=("Breakout-MinAtar", "Asterix-MinAtar"), teacher=lyle22_fig5.config("cpu").teacher,
            data_steps=25_000, num_seeds=4, measure_every=2_000,
            control=cfg.control.replace(total_steps=4 * (250 + 20_000), buffer_size=100_000, eps_decay_steps=20_000,
                                        target_update_interval=2_000, checkpoint_interval=2_000),
            evaluation=cfg.evaluation.replace(num_updates=20_000, target_update_interval=2_000,
                                              checkpoint_interval=2_000))
    if scale == "paper":
        teacher = lyle22_fig5.config("paper").teacher
        cfg = dataclasses.replace(
            cfg, games=("MsPacman-v5", "Asterix-v5", "Seaquest-v5"), teacher=teacher,
            data_steps=500_000 // teacher.num_envs, num_seeds=10, measure_every=100_000, num_samples=32,
            chunk_size=8,
            # the released code: 200k random steps first, ε 1 → 0.05 over 500k steps, one update per step
            control=_pytorch_optimizers(ValueConfig(
                algo="dqn", network="nature_cnn", num_envs=1, total_steps=200_000 + 10_000_000, buffer_size=500_000,
                batch_size=32, learning_starts=200_000, target_update_interval=10_000, lr=1e-4, gamma=0.99,
                eps_decay_steps=500_000, eps_end=0.05, probe_interval=0, checkpoint_interval=100_000)),
            evaluation=cfg.evaluation.replace(network="nature_cnn", num_updates=500_000, target_update_interval=10_000,
                                              checkpoint_interval=100_000))
    return cfg


def tiny() -> Config:
    """Seconds, for tests: CartPole with MLPs, a short teacher, Adam only, no Fig. 3 reference, 2 measuring
    points, offsets ±8."""
    return dataclasses.replace(
        Config(), games=("CartPole-v1",), teacher_dir="", data_steps=400, num_seeds=2, measure_every=100,
        num_samples=8, max_offset=8, sv_states=64, optimizers=("adam",), reference="",
        teacher=lyle22_fig5.tiny().teacher.replace(probe_interval=0),
        control=_pytorch_optimizers(ValueConfig(
            network="mlp", hidden=(32,), num_envs=4, total_steps=4 * (50 + 200), buffer_size=1_000, batch_size=32,
            learning_starts=200, target_update_interval=100, lr=1e-3, eps_decay_steps=500, probe_interval=0,
            checkpoint_interval=100)),
        evaluation=_pytorch_optimizers(OfflineConfig(
            objective="q_learning", network="mlp", hidden=(32,), num_updates=200, batch_size=32, lr=1e-3,
            target_update_interval=100, probe_interval=0, checkpoint_interval=100)))


def control_updates(cfg: Config) -> int:
    """Gradient updates of one control run: its iterations after the warm-up (one update each)."""
    c = cfg.control
    per_iter = c.num_envs * c.train_frequency
    return c.total_steps // per_iter - -(-c.learning_starts // per_iter)


def _control_steps(cfg: Config, updates: int) -> int:
    """control.total_steps giving `updates` updates after the warm-up."""
    c = cfg.control
    per_iter = c.num_envs * c.train_frequency
    return per_iter * (-(-c.learning_starts // per_iter) + updates)


def _validate(cfg: Config) -> None:
    require(bool(cfg.games), cfg, "games", "no game to run", "name at least one game, e.g. ('Breakout-MinAtar',)")
    require(bool(cfg.optimizers) and all(o in OPTIMIZERS for o in cfg.optimizers), cfg, "optimizers",
            f"Figs 4 and 10 compare {OPTIMIZERS}", "use (some of) those names")
    for name in ("num_seeds", "measure_every", "num_samples", "max_offset", "data_steps", "sv_states"):
        require(getattr(cfg, name) >= 1, cfg, name, "must be >= 1", f"set {name} to a positive integer")
    require(cfg.update in ("per_sample", "batch"), cfg, "update", "unknown update", "use 'per_sample' or 'batch'")
    require(0.0 <= cfg.data_epsilon <= 1.0, cfg, "data_epsilon", "ε must lie in [0, 1]", "the paper uses 0.05")
    require(cfg.reference in ("",) + REFERENCES, cfg, "reference", f"not a Fig. 3 regression {REFERENCES}",
            "use 'td_star' (the default) or '' to skip the comparison")
    require(cfg.control.algo == "dqn", cfg, "control", f"control.algo={cfg.control.algo!r}: Fig. 4 trains Q-learning "
            "(DQN) agents", "--control.algo dqn")
    require(cfg.evaluation.objective == "q_learning", cfg, "evaluation",
            f"evaluation.objective={cfg.evaluation.objective!r}: Fig. 4's policy evaluation uses the Q-learning loss",
            "--evaluation.objective q_learning")
    u = control_updates(cfg)
    require(u >= cfg.measure_every and u % cfg.measure_every == 0, cfg, "control",
            f"control.total_steps={cfg.control.total_steps} gives {u} updates after the warm-up, not a positive "
            f"multiple of measure_every={cfg.measure_every}",
            f"--control.total-steps {_control_steps(cfg, cfg.measure_every * max(1, u // cfg.measure_every))}")
    n = cfg.evaluation.num_updates
    require(n % cfg.measure_every == 0, cfg, "evaluation",
            f"evaluation.num_updates={n} is not a multiple of measure_every={cfg.measure_every}",
            f"--evaluation.num-updates {cfg.measure_every * max(1, n // cfg.measure_every)}")
    slots = cfg.control.buffer_size // cfg.control.num_envs
    require(2 * cfg.max_offset + 1 <= min(slots, cfg.data_steps), cfg, "max_offset",
            f"the window 2X + 1 = {2 * cfg.max_offset + 1} is longer than the control buffer ({slots} slots) or "
            f"D* ({cfg.data_steps} steps)", f"set max_offset <= {(min(slots, cfg.data_steps) - 1) // 2}")
    stored = min(cfg.control.buffer_size, cfg.control.learning_starts + cfg.measure_every * cfg.control.num_envs)
    field = "sv_states" if cfg.sv_states > stored else "num_samples"
    require(max(cfg.num_samples, cfg.sv_states) <= stored, cfg, field,
            f"the control buffer holds only {stored} transitions at the first measuring point",
            "lower num_samples / sv_states or raise control.learning_starts")


# ----------------------------------------------------------------------------------------------------
# Measurements.


def control_measurer(agent: Any, cfg: Config):
    """One jitted function of (learner [S], replay [S], keys [S], dstar_obs [B, ...]) for the control agent:
    (gain `tdjax.OffsetProfile` [S], mask [S, N, W], positions [S, N, 2], singular values [S, R] of the
    features of `sv_states` states of its own buffer, singular values [S, R] on `dstar_obs`).

    The update samples are `num_samples` distinct valid transitions of the seed's buffer, drawn uniformly;
    the gain is that of the agent's per-example loss (½δ², frozen target network θ⁻) after one step of its
    optimizer with its state (`cfg.update`)."""
    X, N = cfg.max_offset, cfg.num_samples

    def spectrum(params, obs):
        phi = agent.features(params, obs)
        return tdjax.singular_value_spread(phi.reshape(phi.shape[0], -1)).singular_values

    def one(learner, replay, key, dstar_obs):
        k_pos, k_sv = jax.random.split(key)
        capacity, num_envs = replay.data.action.shape
        flat = jnp.arange(capacity * num_envs)
        ok = (flat < replay_lib.size(replay)) & replay.data.valid.reshape(-1)
        _, idx = jax.lax.top_k(jnp.where(ok, jax.random.uniform(k_pos, flat.shape), -1.0), N)
        t, e = idx // num_envs, idx % num_envs
        nb, mask = replay_lib.neighbours(replay, t, e, X)
        mask = mask & mask[:, X:X + 1]  # an update sample that is not a transition measures nothing
        own = lambda p, tr: agent.example_loss(p, learner.target_params, tr)  # noqa: E731
        prof = tdjax.loss_change_by_offset(own, learner.params, agent.optimizer, learner.opt_state,
                                           replay_lib.gather(replay, t, e), nb, mask, update=cfg.update,
                                           chunk_size=cfg.chunk_size)
        states = replay_lib.sample_distinct(replay, k_sv, cfg.sv_states).obs
        return (prof, mask, jnp.stack([t, e], -1), spectrum(learner.params, states),
                spectrum(learner.params, dstar_obs.astype(jnp.float32)))

    return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, None)))


def offline_spectrum(agent: Any):
    """jit(vmap over seeds) of (params [S], obs [B, ...]) -> singular values [S, R] of the offline student's
    last-hidden-layer features."""

    def one(params, obs):
        phi = agent.features(params, obs)
        return tdjax.singular_value_spread(phi.reshape(phi.shape[0], -1)).singular_values

    return jax.jit(jax.vmap(one, in_axes=(0, None)))


def run(cfg: Config, show_progress: bool = True) -> dict:
    """Per game and optimizer: control agents and policy-evaluation students trained in chunks, the gain by
    offset and the singular values measured after each, and the Fig. 3 reference regression.

    Returns arrays with axes [G games, K optimizers, M measuring points, S seeds, (N samples,) W offsets]."""
    _validate(cfg)
    G, K, S, N = len(cfg.games), len(cfg.optimizers), cfg.num_seeds, cfg.num_samples
    W, X = 2 * cfg.max_offset + 1, cfg.max_offset
    Mc, Mp = control_updates(cfg) // cfg.measure_every, cfg.evaluation.num_updates // cfg.measure_every
    res: dict[str, Any] = {}
    for mode, M in (("control", Mc), ("pe", Mp)):
        res[f"{mode}_gain"] = np.full((G, K, M, S, W), np.nan, np.float32)
        res[f"{mode}_count"] = np.zeros((G, K, M, S, W), np.int32)
        res[f"{mode}_per_sample"] = np.zeros((G, K, M, S, N, W), np.float32)
        res[f"{mode}_mask"] = np.zeros((G, K, M, S, N, W), bool)
        res[f"{mode}_loss"] = np.full((G, K, M), np.nan, np.float32)
    res["pe_gain_td"] = np.full((G, K, Mp, S, W), np.nan, np.float32)
    res["control_positions"] = np.zeros((G, K, Mc, S, N, 2), np.int32)
    res["control_return"] = np.full((G, K, Mc), np.nan, np.float32)
    res["pe_positions"] = np.zeros((G, Mp, S, N, 2), np.int32)
    res["reference_gain"] = np.full((G, Mp, S, W), np.nan, np.float32)
    res["reference_count"] = np.zeros((G, Mp, S, W), np.int32)
    sv: dict[str, list] = {"control_sv": [], "control_sv_dstar": [], "pe_sv": []}
    seconds = np.zeros(G)
    tmp = temporary_folder("tdjax_bengio_fig4_")
    key = jax.random.key(cfg.seed)
    runs = K * (Mc + Mp) + (Mp if cfg.reference else 0)
    bar = progress_bar(G * runs, desc=NAME, enabled=show_progress)
    for g, game in enumerate(cfg.games):
        t0 = time.time()
        k_game = jax.random.fold_in(key, g)
        t_path, d_path = teacher_and_dstar(cfg.teacher, game, cfg.teacher_dir, tmp, k_game, data_steps=cfg.data_steps,
                                           epsilon=cfg.data_epsilon)
        ds, _ = load_dataset(d_path)
        valid = np.asarray(ds.replay.data.valid)
        res["pe_positions"][g] = dstar_positions(valid, N, S, Mp, cfg.seed, g, game)
        sv_slots = dstar_positions(valid, cfg.sv_states, 1, 1, cfg.seed, g + 1_000, game)[0, 0]
        dstar_obs = replay_lib.gather(jax.tree.map(jnp.asarray, ds.replay), jnp.asarray(sv_slots[:, 0]),
                                      jnp.asarray(sv_slots[:, 1])).obs
        k_init = jax.random.fold_in(k_game, 2)  # every run of the game starts from the same initial weights
        game_sv: dict[str, list] = {k: [] for k in sv}
        for k, opt in enumerate(cfg.optimizers):
            # control: the agent's own replay buffer
            runner = make_seed_runner(cfg.control.replace(env=game, optimizer=opt), S)
            state = runner.init(k_init)
            measure = control_measurer(runner.agent, cfg)
            warm, per_point = runner.agent.warmup_iterations, []
            chunk = math.gcd(warm, cfg.measure_every)  # one chunk length: one compiled program
            for m in range(Mc):
                stop = warm + (m + 1) * cfg.measure_every
                start = 0 if m == 0 else stop - cfg.measure_every
                metrics_list = []
                for i in range(start, stop, chunk):
                    state, mt = runner.run(state, i, chunk)
                    metrics_list.append(mt)
                metrics = jax.tree.map(lambda *a: np.concatenate(a, axis=1), *metrics_list)
                learned = np.asarray(metrics.learned)
                res["control_loss"][g, k, m] = float(np.mean(np.asarray(metrics.loss)[learned]))
                count = float(np.sum(metrics.return_count))
                res["control_return"][g, k, m] = float(np.sum(metrics.return_sum)) / count if count else np.nan
                keys = jax.random.split(jax.random.fold_in(jax.random.fold_in(k_game, 100 + k), m), S)
                prof, mask, pos, s_own, s_dstar = jax.tree.map(
                    np.asarray, measure(state.learner, state.actor.replay, keys, dstar_obs))
                _store(res, "control", (g, k, m), prof, mask)
                res["control_positions"][g, k, m] = pos
                per_point.append((s_own, s_dstar))
                bar.update()
            game_sv["control_sv"].append(np.stack([p[0] for p in per_point]))
            game_sv["control_sv_dstar"].append(np.stack([p[1] for p in per_point]))
            del state
            # policy evaluation on D*
            s_own_pe, gains = _offline_run(cfg, cfg.evaluation.replace(teacher=t_path, dataset=d_path, optimizer=opt),
                                           k_init, res["pe_positions"][g], dstar_obs, bar)
            for m, (gain, gain_td, mask, loss) in enumerate(gains):
                _store(res, "pe", (g, k, m), gain, mask)
                res["pe_gain_td"][g, k, m] = gain_td.mean
                res["pe_loss"][g, k, m] = loss
            game_sv["pe_sv"].append(s_own_pe)
        if cfg.reference:
            ref_cfg = cfg.evaluation.replace(teacher=t_path, dataset=d_path, objective=cfg.reference, optimizer="adam")
            _, gains = _offline_run(cfg, ref_cfg, k_init, res["pe_positions"][g], None, bar)
            for m, (_, gain_td, _, _) in enumerate(gains):
                res["reference_gain"][g, m] = gain_td.mean
                res["reference_count"][g, m] = gain_td.count
        for name, v in game_sv.items():
            sv[name].append(np.stack(v))
        seconds[g] = time.time() - t0
    bar.close()
    res.update({name: np.stack(v) for name, v in sv.items()})  # [G, K, M, S, R]
    return dict(games=np.array(cfg.games), optimizers=np.array(cfg.optimizers),
                offsets=np.arange(-X, X + 1), control_updates=cfg.measure_every * (1 + np.arange(Mc)),
                pe_updates=cfg.measure_every * (1 + np.arange(Mp)), seconds=seconds, **res)


def _store(res: dict, mode: str, where: tuple, prof: Any, mask: np.ndarray) -> None:
    res[f"{mode}_gain"][where] = prof.mean
    res[f"{mode}_count"][where] = prof.count
    res[f"{mode}_per_sample"][where] = prof.per_sample
    res[f"{mode}_mask"][where] = mask


def _offline_run(cfg: Config, s_cfg: OfflineConfig, key: jax.Array, positions: np.ndarray,
                 dstar_obs: Optional[jax.Array], bar: Any) -> tuple[Optional[np.ndarray], list]:
    """An offline student (`num_seeds` vmapped) trained in chunks of `measure_every` updates on D*; after
    each, the gains at `positions` [M, S, N, 2] (`experiments._bengio20_offsets.offline_measurer`) and,
    with `dstar_obs`, the singular values of its features there. Returns (singular values [M, S, R] or
    None, [(gain, gain in L_TD*, mask, mean training loss) per measuring point])."""
    runner = make_seed_runner(s_cfg, cfg.num_seeds)
    state = runner.init(key)
    data = jax.tree.map(lambda a: a[0], state.data)
    measure = offline_measurer(runner.agent, cfg.max_offset, cfg.update, cfg.chunk_size)
    spectrum = offline_spectrum(runner.agent)
    out, svs = [], []
    for m in range(s_cfg.num_updates // cfg.measure_every):
        state, metrics = runner.run(state, m * cfg.measure_every, cfg.measure_every)
        t, e = jnp.asarray(positions[m, ..., 0]), jnp.asarray(positions[m, ..., 1])
        gain, gain_td, mask = jax.tree.map(np.asarray, measure(state.learner, data, t, e))
        out.append((gain, gain_td, mask, float(np.mean(metrics.loss))))
        if dstar_obs is not None:
            svs.append(np.asarray(spectrum(state.learner.params, dstar_obs)))
        bar.update()
    return (np.stack(svs) if svs else None), out


# ----------------------------------------------------------------------------------------------------
# Summaries, claims, plot.


def profiles(res: dict, mode: str) -> np.ndarray:
    """The gain per offset [G, K, W] of `mode` ("control" | "pe"), averaged over every sample of every
    seed and measuring point."""
    return weighted_profile(res[f"{mode}_gain"], res[f"{mode}_count"], axes=(2, 3))


def reference_profile(res: dict) -> np.ndarray:
    """The Fig. 3 reference regression's gain in L_TD* per offset [G, W]."""
    return weighted_profile(res["reference_gain"], res["reference_count"], axes=(1, 2))


def _abs_band(x: np.ndarray, p: np.ndarray) -> float:
    return band(x, np.abs(p), *NEAR)


def check_claims(cfg: Config, res: dict) -> Claims:
    """§5 on Figs 4 and 10, App. D.1 on Fig. 12 and D.2 on Fig. 14, per game."""
    x = res["offsets"]
    X = cfg.max_offset
    opts = [str(o) for o in res["optimizers"]]
    claims = Claims(NAME, settings=dict(
        games=list(cfg.games), optimizers=opts, teacher_steps=cfg.teacher.total_steps, data_steps=cfg.data_steps,
        data_epsilon=cfg.data_epsilon, control_updates=control_updates(cfg), control_steps=cfg.control.total_steps,
        evaluation_updates=cfg.evaluation.num_updates, lr=cfg.control.lr, pe_lr=cfg.evaluation.lr,
        target_update_interval=cfg.control.target_update_interval, measure_every=cfg.measure_every,
        num_seeds=cfg.num_seeds, num_samples=cfg.num_samples, max_offset=X, update=cfg.update, sv_states=cfg.sv_states,
        reference=cfg.reference, seconds_per_game=[round(float(s), 1) for s in res["seconds"]]))
    prof = {mode: profiles(res, mode) for mode in MODES}
    ref = reference_profile(res) if cfg.reference else None
    for g, game in enumerate(cfg.games):
        near = {mode: [band(x, prof[mode][g, k], *NEAR) for k in range(len(opts))] for mode in MODES}
        at0 = {mode: [float(prof[mode][g, k, X]) for k in range(len(opts))] for mode in MODES}
        table = "; ".join(f"{MODE_LABELS[mode]} {OPT_LABELS[o]}: x=0 {at0[mode][k]:.3g}, 1≤|x|≤10 {near[mode][k]:.3g}"
                          for mode in MODES for k, o in enumerate(opts))
        # Fig. 4 against Fig. 3: magnitude and decay (Adam, the reference's optimizer)
        if ref is not None and "adam" in opts:
            a = opts.index("adam")
            r_near, r0 = _abs_band(x, ref[g]), abs(float(ref[g, X]))
            ql_near = {mode: 2 * _abs_band(x, prof[mode][g, a]) for mode in MODES}
            ql0 = {mode: 2 * abs(at0[mode][a]) for mode in MODES}
            ev = (f"mean |gain| over 1≤|x|≤10: {REF_LABELS[cfg.reference]} regression {r_near:.3g} (x=0 {r0:.3g}); "
                  + ", ".join(f"{MODE_LABELS[m]} 2×L_QL {ql_near[m]:.3g} (x=0 {ql0[m]:.3g})" for m in MODES))
            claims.check(f"{game}, Adam: the Q-learning gain around x = 0 is more than an order of magnitude smaller "
                         f"than the regression's (Fig. 3's {REF_LABELS[cfg.reference]}), control and policy evaluation",
                         all(ql_near[m] < 0.1 * r_near for m in MODES), ev)
            claims.check(f"{game}, Adam: the Q-learning gain drops off faster away from x = 0 than the regression's "
                         "(smaller mean |gain| over 1≤|x|≤10 relative to x = 0), control and policy evaluation",
                         all(ql_near[m] / max(ql0[m], 1e-30) < r_near / max(r0, 1e-30) for m in MODES), ev)
        for mode in MODES:
            where = f"{game}, {MODE_LABELS[mode]}"
            neg = [o for o in ("rmsprop", "sgd") if o in opts]
            if neg:
                names = " and ".join(OPT_LABELS[o] for o in neg)
                claims.check(f"{where}: the gain over 1≤|x|≤10 is negative for {names}",
                             all(near[mode][opts.index(o)] < 0 for o in neg), table)
            pos = [o for o in ("adam", "momentum") if o in opts]
            if pos:
                names = " and ".join(OPT_LABELS[o] for o in pos)
                claims.check(f"{where}: the gain over 1≤|x|≤10 is positive for {names} "
                             "(the contrast the text draws with RMSProp and SGD)",
                             all(near[mode][opts.index(o)] > 0 for o in pos), table)
            if "rmsprop" in opts and len(opts) > 1:
                r = opts.index("rmsprop")
                claims.check(f"{where} (Fig. 10): RMSProp has the largest gain at x = 0 of the optimizers, and a "
                             "negative gain over 1≤|x|≤10", bool(at0[mode][r] >= max(at0[mode]) and near[mode][r] < 0),
                             table)
        claims.check(f"{game}: control has a larger gain over 1≤|x|≤10 than policy evaluation, for every optimizer",
                     all(near["control"][k] > near["pe"][k] for k in range(len(opts))), table)
        # Fig. 12: singular values after the last update (mean over seeds)
        for o in ("adam", "rmsprop"):
            if o not in opts:
                continue
            k = opts.index(o)
            spread = {name: np.nansum(res[name][g, k, -1], axis=-1).mean() for name in
                      ("control_sv", "control_sv_dstar", "pe_sv")}
            ev = (f"Σσᵢ/√B after {control_updates(cfg):,} control / {cfg.evaluation.num_updates:,} policy-evaluation "
                  f"updates: control on its own buffer {spread['control_sv']:.3g}, control on D* "
                  f"{spread['control_sv_dstar']:.3g}, policy evaluation on D* {spread['pe_sv']:.3g}; over training "
                  "(control own / policy evaluation): " + ", ".join(
                      f"{a:.3g}/{b:.3g}" for a, b in zip(np.nansum(res['control_sv'][g, k], -1).mean(-1),
                                                         np.nansum(res['pe_sv'][g, k], -1).mean(-1))))
            claims.check(f"{game}, {OPT_LABELS[o]} (Fig. 12): policy evaluation has a larger singular-value spread of "
                         "the last hidden layer than control, each on its own data",
                         bool(spread["pe_sv"] > spread["control_sv"]), ev)
            claims.check(f"{game}, {OPT_LABELS[o]} (Fig. 12): the same on the same states (D*)",
                         bool(spread["pe_sv"] > spread["control_sv_dstar"]), ev)
        # Fig. 14 / App. D.2: the gain over training
        if "adam" in opts:
            a = opts.index("adam")
            over = [band(x, weighted_profile(res["control_gain"][g, a, m], res["control_count"][g, a, m], axes=(0,)),
                         *NEAR) for m in range(res["control_gain"].shape[2])]
            claims.note(f"{game} (Fig. 14), control with Adam: the gain over 1≤|x|≤10 at updates "
                        + ", ".join(f"{u:,}: {v:.3g}" for u, v in zip(res["control_updates"], over))
                        + " (the paper: after a few initial epochs, interference remains constant).")
    claims.note("Training loss at the measuring points (control / policy evaluation): " + "; ".join(
        f"{game} {OPT_LABELS[o]} " + "→".join(f"{v:.3g}" for v in res["control_loss"][g, k]) + " / "
        + "→".join(f"{v:.3g}" for v in res["pe_loss"][g, k])
        for g, game in enumerate(cfg.games) for k, o in enumerate(opts)))
    claims.note("Control agents' mean episode return per chunk: " + "; ".join(
        f"{game} {OPT_LABELS[o]} " + "→".join(f"{v:.3g}" for v in res["control_return"][g, k])
        for g, game in enumerate(cfg.games) for k, o in enumerate(opts)))
    if cfg.control.network != "nature_cnn":
        claims.note(f"Not the paper's scale: {', '.join(cfg.games)} instead of Atari MsPacman, Asterix, Seaquest; "
                    f"{control_updates(cfg):,} control updates instead of 10M, {cfg.evaluation.num_updates:,} "
                    f"policy-evaluation updates instead of 500k, a D* of {cfg.data_steps * cfg.teacher.num_envs:,} "
                    f"transitions, {cfg.num_seeds} seeds instead of 10; squared losses, no L2 regularisation.")
    return claims


def plot(cfg: Config, res: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = res["offsets"]
    X = cfg.max_offset
    opts = [str(o) for o in res["optimizers"]]
    prof = {mode: np.nanmean(profiles(res, mode), axis=0) for mode in MODES}  # mean over games [K, W]
    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8))
    styles = {"control": "-", "pe": "--"}
    for ax, with0 in zip(axes[:2], (False, True)):
        for k, o in enumerate(opts):
            for mode in MODES:
                p = prof[mode][k].copy()
                if not with0:
                    p[X] = np.nan
                ax.plot(x, p, color=f"C{k}", ls=styles[mode], label=f"{OPT_LABELS[o]}, {MODE_LABELS[mode]}")
        ax.axhline(0, color="k", lw=0.5)
        ax.axvline(0, color="k", lw=0.5, ls=":")
        ax.set_xlabel("offset x from the update sample")
        if with0:
            ax.set_yscale("symlog", linthresh=max(np.nanmax(np.abs(np.delete(np.stack(list(prof.values())), X, -1))),
                                                  1e-12))
            ax.set_title("Fig. 10: the same with x = 0 (symlog)", fontsize=9)
        else:
            ax.set_title("Fig. 4: TD gain J_θ − J_θ′ by offset (x ≠ 0)\nfull: control, dashed: policy evaluation",
                         fontsize=9)
            ax.set_ylabel("gain in L_QL")
            ax.legend(fontsize=6)
    ax = axes[2]
    for k, o in enumerate(opts):
        if o not in ("adam", "rmsprop"):
            continue
        for mode, name in (("control", "control_sv"), ("pe", "pe_sv")):
            s = np.nanmean(res[name][:, k, -1], axis=0)  # mean over games [S, R]
            ax.plot(np.arange(1, s.shape[-1] + 1), s.mean(0), color=f"C{k}", ls=styles[mode],
                    label=f"{OPT_LABELS[o]}, {MODE_LABELS[mode]}")
            ax.fill_between(np.arange(1, s.shape[-1] + 1), s.min(0), s.max(0), color=f"C{k}", alpha=0.2)
    ax.set_yscale("log")
    top = ax.get_ylim()[1]
    ax.set_ylim(top * 1e-5, top)  # dead units give σ ≈ 0; the spread is in the top five decades
    ax.set_xlabel("singular value index")
    ax.set_ylabel("σᵢ/√B")
    ax.set_title("Fig. 12: last hidden layer after the last update\n(shaded: min–max over seeds)", fontsize=9)
    ax.legend(fontsize=6)
    ax = axes[3]
    if "adam" in opts:
        a = opts.index("adam")
        heat = np.stack([weighted_profile(res["control_gain"][:, a, m], res["control_count"][:, a, m], axes=(0, 1))
                         for m in range(res["control_gain"].shape[2])], axis=1)  # [W, M]
        heat[X] = np.nan
        lim = np.nanmax(np.abs(heat)) if np.isfinite(heat).any() else 1.0
        u = res["control_updates"]
        im = ax.imshow(heat, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim,
                       extent=(u[0] - cfg.measure_every / 2, u[-1] + cfg.measure_every / 2, -X - 0.5, X + 0.5))
        fig.colorbar(im, ax=ax, label="gain")
        ax.set_title("Fig. 14: control, Adam: gain by offset over training (x = 0 excluded)", fontsize=9)
        ax.set_xlabel("updates")
        ax.set_ylabel("offset x")
    fig.suptitle("Bengio et al. 2020 Figs 4, 10, 12, 14: Q-learning control vs policy evaluation on "
                 + ", ".join(g.replace("-MinAtar", "") for g in cfg.games), fontsize=11)
    fig.tight_layout()
    return fig


def _rows(cfg: Config, res: dict) -> list[dict]:
    rows = []
    prof = {mode: profiles(res, mode) for mode in MODES}
    for g, game in enumerate(cfg.games):
        for k, o in enumerate(res["optimizers"]):
            for mode in MODES:
                for w, off in enumerate(res["offsets"]):
                    rows.append(dict(game=game, optimizer=str(o), setting=mode, offset=int(off),
                                     gain=float(prof[mode][g, k, w]),
                                     count=int(res[f"{mode}_count"][g, k, :, :, w].sum())))
    return rows


EXPERIMENT = Experiment(NAME, __doc__, config=config, tiny=tiny, scales=SCALES, run=run, plot=plot,
                        claims=check_claims, rows=_rows)


def main(argv: Sequence[str] | None = None) -> Claims:
    """`python -m experiments.bengio20_fig4 [--scale smoke|cpu|paper|tiny] [--out DIR] [--<field> VALUE ...]`."""
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    EXPERIMENT.cli()
