"""Bengio et al. 2020, Fig. 7 (§5.3): the terms r1, r2, r3 of ρ′ for regression and for TD, early in training.

The paper: ρ′, the derivative of the interference ρ̄_AB along an update on B, splits into three terms,
ρ′ = −r1 − r2 − r3 "in the same order in which they appear in (16) and (17)":
  ρ′_reg = −δ_B² ρ̄_AB² − δ_A δ_B ρ̄_AB ρ̄_BB − δ_A δ_B² ∇f_B(H̄_A ∇f_B + H̄_B ∇f_A)                (eq. 16)
  ρ′_TD  = −δ_B² ρ̄_AB(ρ̄_AB − γρ̄_A′B) − δ_A δ_B ρ̄_AB(ρ̄_BB − γρ̄_B′B) − δ_A δ_B² ∇f_B(H̄_A ∇f_B + H̄_B ∇f_A)  (eq. 17)
(eq. 16 prints r2 with a factor 2; `tdjax.interference_derivative_terms` explains why it has none.) "We
measure these terms in four scenarios, using a MsPacman expert replay buffer. We regress to Q_θ*
(measuring ρ′_reg), and run policy evaluation with three different targets (measuring ρ′_TD). In DQN,
the target Q_θ̄ is a frozen network updated every 10k iterations; in DDQN the target is updated with an
exponential moving average rule, θ̄ = (1 − τ)θ̄ + τθ, with τ = 0.01; in QL the target is the model
itself Q_θ as assumed in (17)." Fig. 7's caption: dashed, "the mean r_i, averaged over 1024 (32×32)
sample pairs, averaged over 3 runs"; full lines, "the average of the positive and negative samples of
r_i"; "in general, positive samples dominate for r1, r2 varies a lot between positive and negative for
TD, while r3 is mostly negative with some variance for TD." The text: "in regression r1 and r2 are
positive much more often than they are negative, while in TD methods, the positive samples tend to
dominate but the proportion of negative samples is much larger, especially for r2 [...]. r3 tends to
have a smaller magnitude than other terms for TD methods, and is negative on average." App. B.5: the
first 100k steps, minibatches of 32.

What this module does: the DQN teacher of Fig. 3 / Lyle Fig. 5 and its D* (ε = 0.05,
`experiments._distill.dstar`, reused from `teacher_dir`). Four students per seed, vmapped over
`student_seeds` (`tdjax.train.seeds.make_seed_runner`), all from the same initial weights and the same
minibatch sequence (the released code does the same for its regressions):
  * "Reg":  objective "q_regression", (Q_θ(s, a) − Q_θ*(s, a))², the teacher's Q (Fig. 3's L_reg);
  * "DQN":  objective "q_learning", a frozen target θ⁻ copied every `dqn_target_interval` updates;
  * "DDQN": objective "q_learning" with `target_ema=ddqn_tau`: θ⁻ ← (1 − τ)θ⁻ + τθ after every update.
    The paper's "DDQN" is this moving-average target (the text above; the released
    atari_pol_eval.py's 'ddqn' uses its max-bootstrap "td" loss with that update), NOT van Hasselt's
    double DQN (offline objective "double_dqn", argmax by θ): `variants` takes "DoubleDQN" for that;
  * "QL":   objective "q_learning" with `target_update_interval=1`: θ⁻ = θ at every update, the
    released code's 'nfdqn' (semi-gradient Q-learning on the model itself, as eq. 17 assumes).
Every student is given the teacher (the TD losses ignore it), so all variants' states share one
structure and one compiled measurement serves them all. Training runs in chunks of `measure_every`
updates; before the first and after every chunk, per seed,
`tdjax.interference_derivative_terms` gives r1, r2, r3 [32, 32] for pairs (A_i, B_j): B is the
minibatch of the student's NEXT update (the loop's own draw, `student.batch_size` transitions) and A
is `num_other` transitions drawn independently, uniformly from D*, as the released code
(atari_pol_eval.py, `Measures.pre`: `td_interf_grad_terms(other, sample)`) measures them before each
measured update. f = Q_θ(s, a); the target y:
  * Reg: y = Q_θ*(s, a), independent of θ (eq. 16);
  * DQN, DDQN, QL (`td_target="online"`, the released code's `td_interf_grad_terms`, used whatever the
    student's loss): y = r + γ d maxₐ′ Q_θ(s′, a′) with the ONLINE θ, moving with the update (eq. 17;
    ∇y_A = γ d ∇maxₐ′Q_θ(s′_A, a′)). So the three TD variants differ only in what was trained, not in
    what is measured. `td_target="training"` measures instead the target each student trains on: the
    frozen or averaged θ⁻ for DQN/DDQN (∇y = 0, δ from θ⁻), θ itself for QL.
Per variant, measuring point, seed and term: the mean over the pairs, the mean of the positive and of
the negative samples, and the fraction positive (`summaries`).

Where this differs from the paper, on purpose or by necessity:
  * smoke/cpu: MinAtar Asterix stands in for Atari MsPacman: MinAtar has no MsPacman; Asterix is a
    collect-and-avoid game like it, one of the paper's own games (Figs 3, 4), jittable, and its teacher
    and D* are cached by Fig. 3; the MinAtar CNN replaces the Nature CNN;
  * squared losses (the released code trains with smooth-L1; the terms assume ½δ²); no L2 weight decay
    (App. B.2: 1e-4); Adam steps (as in the paper) while r_i describe a plain gradient step;
  * δ uses the terminal discount d (the released code's terms ignore episode ends);
  * the DQN target interval is scaled with the run length at smoke/cpu scale (10 copies per run).

Scales (`--scale`): `smoke` (Asterix-MinAtar, Fig. 5's 40k-step teacher and Fig. 3's 5k-step D* × 4
envs, 2,000 updates measured every 500, 3 seeds, 32 × 32 pairs: a few minutes on 2 cores with the
cached teacher); `cpu` (Fig. 5's 300k-step teacher, 25k-step D*, 20,000 updates measured every 1,000);
`paper` (App. B.5: Atari MsPacman with sticky actions through envpool, Nature CNN, lr 1e-4, batch 32,
γ 0.99, a 500k-transition D*, 100k updates measured every 1,000 as in the released code, 3 runs; a GPU
job).

Run: `python -m experiments.bengio20_fig7 --out outputs/bengio20_fig7 [--scale smoke|cpu|paper]`.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import tdjax
from experiments import lyle22_fig5
from experiments._distill import dstar, teacher_and_data
from experiments._harness import Experiment, progress_bar
from tdjax.report import Claims
from tdjax.train import OfflineConfig, ValueConfig, load_dataset
from tdjax.train import offline as offline_lib
from tdjax.train.seeds import make_seed_runner
from tdjax.train.validation import check_choice, require

NAME = "bengio20_fig7"
SCALES = ("smoke", "cpu", "paper")
VARIANTS = ("Reg", "DQN", "DDQN", "QL")  # the paper's four scenarios
EXTRA_VARIANTS = ("DoubleDQN",)  # van Hasselt's double DQN, for contrast (not in the paper)
TD_VARIANTS = ("DQN", "DDQN", "QL", "DoubleDQN")
TERMS = ("r1", "r2", "r3")
STATS = ("mean", "pos_mean", "neg_mean", "frac_pos")


@dataclasses.dataclass(frozen=True)
class Config:
    game: str = "Asterix-MinAtar"  # MinAtar stand-in for MsPacman (module docstring)
    seed: int = 0  # root of teacher, D*, student and pair-sample randomness
    teacher_dir: str = "outputs/teachers"  # teachers and D* are saved here and reused (Figs 3 and 5's too)
    teacher: ValueConfig = lyle22_fig5.Config().teacher  # Fig. 5's DQN teacher; its env is set to `game`
    data_steps: int = 5_000  # vector steps of D* (× teacher.num_envs transitions)
    data_epsilon: float = 0.05  # ε of the teacher's ε-greedy rollouts (App. B.2: 5%)
    # the students; `objective`, `teacher`, `dataset` and the target schedule are set per variant
    student: OfflineConfig = OfflineConfig(
        network="minatar_cnn", num_updates=2_000, batch_size=32, lr=1e-4, gamma=0.99, max_grad_norm=None,
        probe_interval=0, checkpoint_interval=500)
    variants: tuple[str, ...] = VARIANTS  # "Reg", "DQN", "DDQN", "QL" (and "DoubleDQN") as in the docstring
    dqn_target_interval: int = 200  # DQN: updates between copies of θ into θ⁻ (paper: 10k of 100k updates)
    ddqn_tau: float = 0.01  # DDQN: τ of θ⁻ ← (1 − τ)θ⁻ + τθ after every update (§5.3: 0.01)
    td_target: str = "online"  # "online": y = r + γ d max Q_θ(s′) for every TD variant (released code); "training"
    student_seeds: int = 3  # vmapped runs (Fig. 7: 3); every variant starts from the same initial weights
    measure_every: int = 500  # updates between measuring points (also measured before the first update)
    num_other: int = 32  # |A|: transitions drawn independently of B, the next minibatch (Fig. 7: 32 × 32 pairs)
    chunk_size: Optional[int] = None  # examples (or update examples b_j) per vmapped chunk (None: all)


def config(scale: str = "smoke") -> Config:
    """`smoke`: Asterix-MinAtar, 2,000 updates; `cpu`: 20,000 updates; `paper`: MsPacman, App. B.5 (GPU)."""
    if scale not in SCALES:
        raise ValueError(f"{NAME}: scale must be one of {SCALES}, got {scale!r}.")
    cfg = Config()
    if scale == "cpu":
        cfg = dataclasses.replace(
            cfg, teacher=lyle22_fig5.config("cpu").teacher, data_steps=25_000, measure_every=1_000,
            dqn_target_interval=2_000, student=cfg.student.replace(num_updates=20_000, checkpoint_interval=1_000))
    if scale == "paper":
        teacher = lyle22_fig5.config("paper").teacher
        cfg = dataclasses.replace(
            cfg, game="MsPacman-v5", teacher=teacher, data_steps=500_000 // teacher.num_envs,
            measure_every=1_000, dqn_target_interval=10_000, chunk_size=8,
            student=cfg.student.replace(network="nature_cnn", num_updates=100_000, lr=1e-4, batch_size=32,
                                        checkpoint_interval=1_000))
    return cfg


def tiny() -> Config:
    """Seconds, for tests: CartPole with MLPs, a short teacher, Reg and QL (eq. 16 and 17), 200 updates
    measured every 100, 8 × 8 pairs."""
    return dataclasses.replace(
        Config(), game="CartPole-v1", teacher_dir="", data_steps=400, student_seeds=2, measure_every=100,
        variants=("Reg", "QL"),
        num_other=8, dqn_target_interval=50,
        teacher=lyle22_fig5.tiny().teacher.replace(probe_interval=0),
        student=OfflineConfig(network="mlp", hidden=(32,), num_updates=200, batch_size=8, lr=1e-3,
                              max_grad_norm=None, probe_interval=0, checkpoint_interval=100))


def _validate(cfg: Config) -> None:
    known = VARIANTS + EXTRA_VARIANTS
    require(bool(cfg.variants) and all(v in known for v in cfg.variants), cfg, "variants",
            f"Fig. 7 measures the variants {known}", "use (some of) those names, e.g. ('Reg', 'QL')")
    require(len(set(cfg.variants)) == len(cfg.variants), cfg, "variants", "a variant is repeated", "name each once")
    check_choice(cfg, "td_target", ("online", "training"))
    for name in ("student_seeds", "measure_every", "num_other", "data_steps", "dqn_target_interval"):
        require(getattr(cfg, name) >= 1, cfg, name, "must be >= 1", f"set {name} to a positive integer")
    require(cfg.student.num_updates % cfg.measure_every == 0, cfg, "measure_every",
            f"student.num_updates={cfg.student.num_updates} is not a multiple of it",
            f"e.g. --measure-every {max(1, cfg.student.num_updates // 4)}")
    require(0.0 < cfg.ddqn_tau <= 1.0, cfg, "ddqn_tau", "τ must lie in (0, 1]", "the paper uses 0.01")
    require(0.0 <= cfg.data_epsilon <= 1.0, cfg, "data_epsilon", "ε must lie in [0, 1]", "the paper uses 0.05")
    require(cfg.chunk_size is None or cfg.chunk_size >= 1, cfg, "chunk_size", "must be None or >= 1",
            "use None (everything at once) or a positive chunk size")


def student_config(cfg: Config, variant: str, teacher: str, dataset: str) -> OfflineConfig:
    """The offline config of one variant's students (module docstring). Every variant gets the teacher
    (the TD losses ignore it), so that all variants' states share one structure and one compiled
    measurement."""
    s = cfg.student.replace(dataset=dataset, teacher=teacher, target_ema=0.0)
    if variant == "Reg":
        return s.replace(objective="q_regression")
    if variant == "DQN":
        return s.replace(objective="q_learning", target_update_interval=cfg.dqn_target_interval)
    if variant == "DDQN":
        return s.replace(objective="q_learning", target_ema=cfg.ddqn_tau)
    if variant == "QL":
        return s.replace(objective="q_learning", target_update_interval=1)
    return s.replace(objective="double_dqn", target_update_interval=cfg.dqn_target_interval)  # DoubleDQN


def target_kind(cfg: Config, variant: str) -> int:
    """What y is measured against: 0 the teacher's Q_θ*(s, a); 1 r + γ d maxₐ′ Q_θ(s′, a′), moving with
    θ; 2 r + γ d maxₐ′ Q_θ⁻(s′, a′), the student's own target network."""
    if variant == "Reg":
        return 0
    return 1 if cfg.td_target == "online" or variant == "QL" else 2


def measurer(agent: Any, cfg: Config):
    """One jitted function of (learner [S], keys [S], data, updates, t_a [S, N_A], e_a [S, N_A], kind) ->
    (InterferenceDerivativeTerms with fields [S, N_A, N_B], t_b [S, N_B], e_b [S, N_B], pair weight
    [S, N_A, N_B]), for any variant's learner (`kind`: `target_kind`).

    B is the minibatch the loop draws for iteration `updates` from each seed's data key (the next
    update); A are the slots (t_a, e_a). `data` is one seed's `DataState` (D* and the teacher are the
    same for every seed and variant). f = Q_θ(s, a) and y as `kind` says."""
    gamma = agent.config.gamma

    def value_fn(p, ex):
        return agent.q_values(p, ex.tr.obs)[ex.tr.action]

    def one(learner, key, data, updates, t_a, e_a, kind):
        def target_fn(p, ex):  # where() passes the gradient of the branch it selects only
            q_next = jnp.where(kind == 2, agent.q_values(learner.target_params, ex.tr.next_obs),
                               agent.q_values(p, ex.tr.next_obs))
            bootstrap = ex.tr.reward + gamma * ex.tr.discount * jnp.max(q_next)
            return jnp.where(kind == 0, ex.teacher_out[ex.tr.action], bootstrap)  # teacher_out: gradient stopped

        _, k_sample, _ = jax.random.split(jax.random.fold_in(key, updates), 3)  # as offline.iteration
        t_b, e_b = offline_lib.sample_slots(data._replace(key=key), k_sample, agent.config.batch_size)
        batch_a = agent.make_examples(learner, data, t_a, e_a)
        batch_b = agent.make_examples(learner, data, t_b, e_b)
        terms = tdjax.interference_derivative_terms(value_fn, target_fn, learner.params, batch_a, batch_b,
                                                    chunk_size=cfg.chunk_size)
        return terms, t_b, e_b, batch_a.weight[:, None] * batch_b.weight[None, :]

    return jax.jit(jax.vmap(one, in_axes=(0, 0, None, None, 0, 0, None)))


def run(cfg: Config, show_progress: bool = True) -> dict:
    """Per variant: students trained in chunks, r1, r2, r3 measured on N_A × N_B pairs before and after each.

    Returns `terms` [V variants, P points, S seeds, 3 terms, N_A, N_B], `weight` [V, P, S, N_A, N_B] (1
    for a pair of valid transitions), the slots of A and B, the training loss, and the updates at the P
    measuring points (0, measure_every, ..., num_updates)."""
    _validate(cfg)
    V, S, NA, NB = len(cfg.variants), cfg.student_seeds, cfg.num_other, cfg.student.batch_size
    M = cfg.student.num_updates // cfg.measure_every
    P = M + 1
    terms = np.full((V, P, S, len(TERMS), NA, NB), np.nan, np.float32)
    weight = np.zeros((V, P, S, NA, NB), np.float32)
    slots_a = np.zeros((P, S, NA, 2), np.int32)
    slots_b = np.zeros((V, P, S, NB, 2), np.int32)
    train_loss = np.full((V, M), np.nan, np.float32)
    output_mean = np.full((V, M), np.nan, np.float32)  # mean over each chunk of the batch's mean maxₐ Q_θ(s, a)
    t0 = time.time()
    key = jax.random.key(cfg.seed)
    folder = (Path(cfg.teacher_dir) if cfg.teacher_dir else Path(tempfile.mkdtemp(prefix="tdjax_fig7_"))) / cfg.game
    k_game = jax.random.fold_in(key, 0)  # as Fig. 3's first game
    t_path, _, _ = teacher_and_data(cfg.teacher.replace(env=cfg.game), folder, k_game)
    d_path = dstar(t_path, folder, jax.random.fold_in(k_game, 1), data_steps=cfg.data_steps, epsilon=cfg.data_epsilon)
    ds, _ = load_dataset(d_path)
    num_envs = ds.replay.data.action.shape[1]
    pool = np.flatnonzero(np.asarray(ds.replay.data.valid).reshape(-1))
    require(pool.size >= NA, cfg, "num_other", f"D* of {cfg.game} holds only {pool.size} valid transitions",
            "raise --data-steps or lower --num-other")
    for p in range(P):  # A: the same slots for every variant
        rng = np.random.default_rng([cfg.seed, p])
        pick = np.stack([rng.choice(pool, NA, replace=False) for _ in range(S)])
        slots_a[p] = np.stack([pick // num_envs, pick % num_envs], -1)
    seconds = {}
    bar = progress_bar(V * P, desc=NAME, enabled=show_progress)
    for v, variant in enumerate(cfg.variants):
        tv = time.time()
        runner = make_seed_runner(student_config(cfg, variant, t_path, d_path), S)
        state = runner.init(jax.random.fold_in(k_game, 2))  # the same weights and minibatches for every variant
        if v == 0:
            data = jax.tree.map(lambda a: a[0], state.data)
            measure = measurer(runner.agent, cfg)  # one program for every variant
        kind = jnp.int32(target_kind(cfg, variant))
        for p in range(P):
            if p:
                state, metrics = runner.run(state, (p - 1) * cfg.measure_every, cfg.measure_every)
                train_loss[v, p - 1] = float(np.mean(metrics.loss))
                output_mean[v, p - 1] = float(np.mean(metrics.output_mean))
            out = measure(state.learner, state.data.key, data, jnp.int32(p * cfg.measure_every),
                          jnp.asarray(slots_a[p, ..., 0]), jnp.asarray(slots_a[p, ..., 1]), kind)
            r, t_b, e_b, w = jax.tree.map(np.asarray, out)
            terms[v, p] = np.stack([r.r1, r.r2, r.r3], axis=1)
            weight[v, p] = w
            slots_b[v, p] = np.stack([t_b, e_b], -1)
            bar.update()
        del state
        seconds[variant] = time.time() - tv
    bar.close()
    return dict(variants=np.array(cfg.variants), terms_names=np.array(TERMS),
                updates=cfg.measure_every * np.arange(P), terms=terms, weight=weight, slots_a=slots_a,
                slots_b=slots_b, train_loss=train_loss, output_mean=output_mean, seconds=np.array(time.time() - t0),
                seconds_per_variant=np.array([seconds[v] for v in cfg.variants]))


def summaries(terms: np.ndarray, weight: np.ndarray, axis: tuple[int, ...]) -> dict:
    """Over the axes `axis` of `terms`, per remaining index: the mean of r_i over the pairs with weight
    > 0, the mean of its positive and of its negative samples (NaN where there are none), the fraction
    of positive samples and the mean of |r_i|. `weight` broadcasts against `terms`."""
    w = np.broadcast_to(weight, terms.shape) > 0
    x = np.where(w, terms, 0.0).astype(np.float64)
    pos, neg = w & (terms > 0), w & (terms < 0)
    n, n_pos, n_neg = w.sum(axis), pos.sum(axis), neg.sum(axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return dict(mean=np.where(n > 0, x.sum(axis) / n, np.nan),
                    pos_mean=np.where(n_pos > 0, np.where(pos, x, 0).sum(axis) / n_pos, np.nan),
                    neg_mean=np.where(n_neg > 0, np.where(neg, x, 0).sum(axis) / n_neg, np.nan),
                    frac_pos=np.where(n > 0, n_pos / n, np.nan),
                    abs_mean=np.where(n > 0, np.abs(x).sum(axis) / n, np.nan))


def over_time(res: dict) -> dict:
    """Fig. 7's lines: statistics over the pairs per seed, then averaged over the seeds, each [V, P, 3]."""
    per_seed = summaries(res["terms"], res["weight"][:, :, :, None], axis=(-2, -1))  # [V, P, S, 3]
    out = {}
    for k, a in per_seed.items():
        n = np.isfinite(a).sum(axis=2)
        out[k] = np.where(n > 0, np.nansum(a, axis=2) / np.maximum(n, 1), np.nan)
    return out


def pooled(res: dict) -> dict:
    """Statistics over every pair of every seed and measuring point, each [V, 3]."""
    return summaries(res["terms"], res["weight"][:, :, :, None], axis=(1, 2, 4, 5))


def check_claims(cfg: Config, res: dict) -> Claims:
    """§5.3 on Fig. 7, over all pairs of all seeds and measuring points."""
    variants = [str(v) for v in res["variants"]]
    pool = pooled(res)
    claims = Claims(NAME, settings=dict(
        game=cfg.game, teacher_steps=cfg.teacher.total_steps, data_steps=cfg.data_steps, variants=variants,
        student_updates=cfg.student.num_updates, measure_every=cfg.measure_every, student_seeds=cfg.student_seeds,
        pairs=f"{cfg.num_other}x{cfg.student.batch_size}", td_target=cfg.td_target,
        dqn_target_interval=cfg.dqn_target_interval, ddqn_tau=cfg.ddqn_tau, lr=cfg.student.lr,
        seconds=round(float(res["seconds"]), 1)))

    def row(v: int, i: int) -> str:
        return (f"{variants[v]} {TERMS[i]}: mean {pool['mean'][v, i]:.3g}, positive {pool['pos_mean'][v, i]:.3g}, "
                f"negative {pool['neg_mean'][v, i]:.3g}, {100 * pool['frac_pos'][v, i]:.0f}% positive")

    every = range(len(variants))
    td = [v for v in every if variants[v] in TD_VARIANTS]
    dominate = [v for v in every if pool["mean"][v, 0] > 0 and pool["frac_pos"][v, 0] > 0.5]
    claims.check("positive samples dominate for r1 (mean > 0 and most samples positive) for every variant",
                 len(dominate) == len(variants), "; ".join(row(v, 0) for v in every))
    if "Reg" in variants:
        reg = variants.index("Reg")
        claims.check("in regression r1 and r2 are positive much more often than negative (> 75% positive)",
                     bool(pool["frac_pos"][reg, 0] > 0.75 and pool["frac_pos"][reg, 1] > 0.75),
                     f"{row(reg, 0)}; {row(reg, 1)}")
        if td:
            more = [v for v in td if 1 - pool["frac_pos"][v, 1] > 1 - pool["frac_pos"][reg, 1]]
            claims.check("TD: the proportion of negative r2 samples is larger than in regression, for every TD "
                         "variant", len(more) == len(td), "; ".join(row(v, 1) for v in [reg] + td))
    if td:
        varies = [v for v in td if min(pool["frac_pos"][v, 1], 1 - pool["frac_pos"][v, 1]) >= 0.2]
        claims.check("TD: r2 varies a lot between positive and negative (at least 20% of either sign) for every "
                     "TD variant", len(varies) == len(td), "; ".join(row(v, 1) for v in td))
        negative = [v for v in td if pool["mean"][v, 2] < 0]
        claims.check("TD: r3 is negative on average for every TD variant", len(negative) == len(td),
                     "; ".join(row(v, 2) for v in td))
        small = [v for v in td if pool["abs_mean"][v, 2] < min(pool["abs_mean"][v, 0], pool["abs_mean"][v, 1])]
        claims.check("TD: r3 has a smaller magnitude (mean |r_i|) than r1 and r2 for every TD variant",
                     len(small) == len(td), "; ".join(
                         f"{variants[v]} mean |r1| {pool['abs_mean'][v, 0]:.3g}, |r2| {pool['abs_mean'][v, 1]:.3g}, "
                         f"|r3| {pool['abs_mean'][v, 2]:.3g}" for v in td))
    claims.note("ρ′ = −(r1 + r2 + r3), mean over all pairs: " + "; ".join(
        f"{variants[v]} {-np.sum(pool['mean'][v]):.3g}" for v in every))
    claims.note("Training loss over the chunks: " + "; ".join(
        f"{n} " + "→".join(f"{x:.3g}" for x in res["train_loss"][v]) for v, n in enumerate(variants)))
    claims.note("Mean maxₐ Q_θ(s, a) on the minibatches over the chunks (the teacher's D* returns set its scale): "
                + "; ".join(f"{n} " + "→".join(f"{x:.3g}" for x in res["output_mean"][v])
                            for v, n in enumerate(variants)))
    if cfg.student.network != "nature_cnn":
        claims.note(f"Not the paper's scale: {cfg.game} instead of Atari MsPacman, a "
                    f"{cfg.teacher.total_steps:,}-step teacher, a D* of {cfg.data_steps * cfg.teacher.num_envs:,} "
                    f"transitions, {cfg.student.num_updates:,} updates instead of 100k; squared losses, no L2.")
    return claims


def plot(cfg: Config, res: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = [str(v) for v in res["variants"]]
    s = over_time(res)
    x = res["updates"]
    fig, axes = plt.subplots(len(TERMS), len(variants), figsize=(3.2 * len(variants), 2.6 * len(TERMS)),
                             squeeze=False, sharex=True)
    for i, term in enumerate(TERMS):
        for v, name in enumerate(variants):
            ax = axes[i, v]
            c = f"C{i}"
            ax.plot(x, s["mean"][v, :, i], color=c, ls="--", alpha=0.6, label="mean")
            ax.plot(x, s["pos_mean"][v, :, i], color=c, label="mean of positive")
            ax.plot(x, s["neg_mean"][v, :, i], color=c, lw=0.9, label="mean of negative")
            ax.axhline(0, color="k", lw=0.5)
            ax.set_yscale("symlog", linthresh=max(float(np.nanmax(np.abs(s["mean"][v, :, i]))) * 1e-2, 1e-12))
            frac = float(np.nanmean(s["frac_pos"][v, :, i]))
            ax.set_title(f"{name}: {term} ({100 * frac:.0f}% > 0)", fontsize=9)
            if i == len(TERMS) - 1:
                ax.set_xlabel("updates")
        axes[i, 0].set_ylabel(term)
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(f"Bengio et al. 2020 Fig. 7: r1, r2, r3 of ρ′ on {cfg.game} "
                 f"({cfg.num_other}×{cfg.student.batch_size} pairs, {cfg.student_seeds} seeds)", fontsize=10)
    fig.tight_layout()
    return fig


def _rows(cfg: Config, res: dict) -> list[dict]:
    s = over_time(res)
    return [dict(variant=str(name), updates=int(u), term=term, **{k: float(s[k][v, p, i]) for k in STATS})
            for v, name in enumerate(res["variants"]) for p, u in enumerate(res["updates"])
            for i, term in enumerate(TERMS)]


EXPERIMENT = Experiment(NAME, __doc__, config=config, tiny=tiny, scales=SCALES, run=run, plot=plot,
                        claims=check_claims, rows=_rows)


def main(argv: Sequence[str] | None = None) -> Claims:
    """`python -m experiments.bengio20_fig7 [--scale smoke|cpu|paper|tiny] [--out DIR] [--<field> VALUE ...]`."""
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    EXPERIMENT.cli()
