"""Bengio et al. 2020, Figs 5, 11, 13 (§5.1): TD(λ) policy evaluation on D*, stiffness, gain and singular values by λ.

The paper (§5.1): "we perform policy evaluation on D* with TD(λ) [...] TD(λ) allows us to diminish
reliance on bootstrapping. This tradeoff is especially manifest when measuring the stiffness of
gradients (cosine similarity) as a function of temporal offset, as shown in Fig. 5. There we see that
the closer λ is to 1, the more gradients are similar around an update sample [...] this increase in
similarity between gradients is also accompanied by an increase in pointwise loss difference (see
appendix Fig. 11), surpassing that of Q-Learning (Fig. 4) in magnitude." Fig. 11: "Evolution of TD
pointwise loss difference, as a function of λ in TD(λ). Notice the asymmetry around 0." App. D.1,
Fig. 13: "the spread of singular values after 500k minibatch updates for TD(λ). Interestingly, larger λ
values yield larger singular values and a wider distribution." App. B.3: 500k updates on MsPacman, "λ-targets
are computed with the forward view, using the frozen network to compute the target values [...] once
every 10k steps when we update the frozen network. Each setting is run with 5 random seeds."

What this module does (one module writes Fig. 5 and the appendix Figs 11 and 13): the DQN teacher of Lyle
Fig. 5 and its D* (ε = 0.05), cached and shared with Fig. 3 (`experiments._distill.teacher_and_data`,
`experiments._distill.dstar`). Students `OfflineConfig(objective="td_lambda")` evaluate the teacher's
ε-greedy policy on D* with (q(s, a) − G^λ)², G^λ the forward-view λ-return of the frozen network θ⁻,
recomputed for the whole of D* at every target refresh. THE SWEEP IS DATA: every λ of `lambdas` × every
seed is ONE vmapped program (`make_seed_runner(cfg, L·R)`, `init(key, seeds_per_value=R,
td_lambda=sweep_values(lambdas, R))`), run s having λ = lambdas[s // R] and seed s mod R, so every λ starts
from the same R initial weights; λ = 1 is Monte Carlo (MC) through the same program. Students train in
chunks of `measure_every` updates; after each chunk, per run (vmapped over runs), `num_samples` update
samples s_t drawn from the complete episodes of D* (the same for every λ) and their neighbours s_{t+x},
x = −X..X, within the episode (`tdjax.train.replay.neighbours`) give
  * Fig. 5: `tdjax.stiffness_by_offset`, the cosine between ∇θ of the student's own loss at s_t and at
    s_{t+x}; and the cosine between ∇θ maxₐ Q_θ(s, a) at the two states, which is what the released code's
    gradient script computes (atari_grads.py, its default `loss_func='td'` is `Qf(s).max(1)`);
  * Fig. 11: `tdjax.loss_change_by_offset`, ONE step of the student's real optimizer (Adam, with its
    moments) on s_t alone, and the gain J_θ(s_{t+x}) − J_θ′(s_{t+x}) of the TD loss to the frozen
    network, (Q_θ(s, a) − (r + γ d maxₐ′ Q_θ⁻(s′, a′)))² (the released atari_lambda.py's "td" gain),
    and of the student's own λ-return loss;
  * Fig. 13: `tdjax.singular_value_spread` of the last hidden layer's features (`agent.features`) over
    `num_feature_states` fixed states of D*.
Results: stiffness and gain per offset, count-weighted over samples, seeds and measuring points; the
singular values after the last chunk (and at every measuring point).

Where this differs from the paper, on purpose or by necessity:
  * smoke/cpu: MinAtar Asterix stands in for Atari MsPacman (there is no MinAtar MsPacman; Asterix is one
    of the paper's three §5 games, a jittable gymnax game whose teacher and D* Fig. 3 already caches, so
    the whole λ sweep is one vmapped CPU program), with the MinAtar CNN (128 hidden units, so at most 128
    singular values instead of the Nature CNN's 512);
  * λ = 0 stands in for Fig. 4's Q-learning when comparing magnitudes: with λ = 0 the λ-return is
    r + γ d maxₐ Q_θ⁻(s′, a), i.e. Q-learning policy evaluation on D*; control runs (Fig. 4's full lines)
    are not trained here;
  * squared losses (the released code uses smooth-L1), no L2 regularisation (`OfflineConfig` has no
    weight decay), ReLU in the Nature CNN (the paper: leaky ReLU);
  * `update="per_sample"` steps on s_t alone (the text); the released code measures around its minibatch
    step of 32 (`update="batch"`);
  * the paper does not say which loss its Fig. 5 cosine differentiates; both candidates are measured.

Scales (`--scale`): `smoke` (Asterix-MinAtar, Fig. 5's 40k-step teacher, D* of 5k steps × 4 envs,
λ ∈ {0, 0.5, 0.9, 0.95, 1}, 2 seeds = 10 vmapped runs, 6,000 updates, target refresh every 500, measured
every 1,500 on 32 samples, offsets ±30: 200 s of CPU time, minutes on 2 cores with the cached teacher);
`cpu` (Fig. 5's 300k-step teacher, D* of 25k steps, 20,000 updates, refresh every 1,000, 5 seeds);
`paper` (App. B.3: MsPacman with sticky actions through envpool, Nature CNN, lr 1e-4, batch 32, D* of 500k
transitions, 500k updates, refresh every 10k, 5 seeds; a GPU job, spread the runs over devices with
`--student.seed-devices`).

Run: `python -m experiments.bengio20_fig5 --out outputs/bengio20_fig5 [--scale smoke|cpu|paper]`.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt

import tdjax
from experiments import lyle22_fig5
from experiments._bengio20_offsets import teacher_and_dstar, temporary_folder
from experiments._harness import Experiment, progress_bar
from tdjax.report import Claims
from tdjax.train import OfflineConfig, ValueConfig, load_dataset
from tdjax.train import replay as replay_lib
from tdjax.train.seeds import make_seed_runner, sweep_values
from tdjax.train.validation import require

NAME = "bengio20_fig5"
SCALES = ("smoke", "cpu", "paper")
# the measurements by offset: Fig. 5's two cosines, Fig. 11's gain in the TD loss and in the own loss
MEASURES = ("stiffness", "stiffness_value", "gain_td", "gain")
MEASURE_NAMES = {"stiffness": "stiffness of the student's own loss (λ-return)",
                 "stiffness_value": "stiffness of maxₐ Q (released code)",
                 "gain_td": "gain in the TD loss to θ⁻", "gain": "gain in the own loss (λ-return)"}
NEAR, FAR = (1, 10), (20, 30)  # |x| ranges of the claims
MIN_SPEARMAN = 0.9  # "increases with λ": rank correlation between λ and the measure (5 λ: one swap allowed)


@dataclasses.dataclass(frozen=True)
class Config:
    game: str = "Asterix-MinAtar"  # MinAtar stand-in for MsPacman (module docstring)
    seed: int = 0  # root of teacher, D*, student and update-sample randomness
    teacher_dir: str = "outputs/teachers"  # teachers and D* are saved here and reused (Figs 3 and Lyle 5's too)
    teacher: ValueConfig = lyle22_fig5.Config().teacher  # Fig. 5's DQN teacher; its env is set to `game`
    data_steps: int = 5_000  # vector steps of D* (× teacher.num_envs transitions)
    data_epsilon: float = 0.05  # ε of the teacher's ε-greedy rollouts (App. B.2: 5%)
    # the students; `objective` is set to "td_lambda", `td_lambda` per run (the sweep), `dataset` to D*
    student: OfflineConfig = OfflineConfig(
        objective="td_lambda", network="minatar_cnn", num_updates=6_000, batch_size=32, lr=1e-4, gamma=0.99,
        target_update_interval=500, max_grad_norm=None, probe_interval=0, checkpoint_interval=1_500)
    lambdas: tuple[float, ...] = (0.0, 0.5, 0.9, 0.95, 1.0)  # λ of the sweep, ascending (1: Monte Carlo)
    student_seeds: int = 2  # seeds per λ; all λ × seeds are one vmapped program
    measure_every: int = 1_500  # updates between measuring points (num_updates is a multiple of it)
    num_samples: int = 32  # update samples per measuring point and seed
    max_offset: int = 30  # offsets x = −X..X (§5: ± 30)
    update: str = "per_sample"  # "per_sample": one step on s_t alone; "batch": one step on all samples at once
    chunk_size: Optional[int] = 2  # update samples per vmapped chunk and run (None: all; bounds memory)
    num_feature_states: int = 512  # D* states whose last-hidden-layer features give the singular values
    sv_tol: float = 0.01  # a singular value counts towards the width if > sv_tol × the largest


def config(scale: str = "smoke") -> Config:
    """`smoke`: Asterix-MinAtar, 6,000 updates; `cpu`: 20,000 updates, 5 seeds; `paper`: App. B.3 (GPU)."""
    if scale not in SCALES:
        raise ValueError(f"{NAME}: scale must be one of {SCALES}, got {scale!r}.")
    cfg = Config()
    if scale == "cpu":
        cfg = dataclasses.replace(
            cfg, teacher=lyle22_fig5.config("cpu").teacher, data_steps=25_000, student_seeds=5,
            measure_every=2_000, student=cfg.student.replace(num_updates=20_000, target_update_interval=1_000,
                                                             checkpoint_interval=2_000))
    if scale == "paper":
        teacher = lyle22_fig5.config("paper").teacher
        cfg = dataclasses.replace(
            cfg, game="MsPacman-v5", teacher=teacher, data_steps=500_000 // teacher.num_envs, student_seeds=5,
            measure_every=25_000, chunk_size=8,
            student=cfg.student.replace(network="nature_cnn", num_updates=500_000, lr=1e-4, batch_size=32,
                                        target_update_interval=10_000, checkpoint_interval=25_000))
    return cfg


def tiny() -> Config:
    """Seconds, for tests: CartPole with MLPs, a short teacher, λ ∈ {0, 0.9, 1}, 2 measuring points, ±6."""
    return dataclasses.replace(
        Config(), game="CartPole-v1", teacher_dir="", data_steps=400, lambdas=(0.0, 0.9, 1.0), student_seeds=2,
        measure_every=100, num_samples=6, max_offset=6, chunk_size=None, num_feature_states=64,
        teacher=lyle22_fig5.tiny().teacher.replace(probe_interval=0),
        student=OfflineConfig(objective="td_lambda", network="mlp", hidden=(32,), num_updates=200, batch_size=32,
                              lr=1e-3, target_update_interval=50, max_grad_norm=None, probe_interval=0,
                              checkpoint_interval=100))


def _validate(cfg: Config) -> None:
    require(bool(cfg.game), cfg, "game", "no game", "name one, e.g. 'Asterix-MinAtar'")
    require(len(cfg.lambdas) >= 2, cfg, "lambdas", "a sweep needs at least two λ", "e.g. (0.0, 0.9, 1.0)")
    require(all(0.0 <= lam <= 1.0 for lam in cfg.lambdas), cfg, "lambdas", "every λ must lie in [0, 1]",
            "use values in [0, 1] (1: Monte Carlo)")
    require(list(cfg.lambdas) == sorted(set(cfg.lambdas)), cfg, "lambdas", "must be distinct and ascending",
            f"e.g. {tuple(sorted(set(cfg.lambdas)))}")
    require(cfg.student.objective == "td_lambda", cfg, "student", f"the students' objective is "
            f"{cfg.student.objective!r}, but Figs 5, 11, 13 train TD(λ)", "--student.objective td_lambda")
    for name in ("student_seeds", "measure_every", "num_samples", "max_offset", "data_steps", "num_feature_states"):
        require(getattr(cfg, name) >= 1, cfg, name, "must be >= 1", f"set {name} to a positive integer")
    require(cfg.chunk_size is None or cfg.chunk_size >= 1, cfg, "chunk_size", "must be None or >= 1",
            "use None (all samples at once) or a positive chunk size")
    fixed = cfg.measure_every * max(1, cfg.student.num_updates // cfg.measure_every)
    require(cfg.student.num_updates % cfg.measure_every == 0, cfg, "measure_every",
            f"student.num_updates={cfg.student.num_updates} is not a multiple of it",
            f"make it one, e.g. --student.num-updates {fixed}")
    require(cfg.update in ("per_sample", "batch"), cfg, "update", "unknown update", "use 'per_sample' or 'batch'")
    require(0.0 <= cfg.data_epsilon <= 1.0, cfg, "data_epsilon", "ε must lie in [0, 1]", "the paper uses 0.05")
    require(0.0 < cfg.sv_tol < 1.0, cfg, "sv_tol", "must lie in (0, 1)", "e.g. 0.01")


def student_key(cfg: Config) -> jax.Array:
    """The key the sweep's runner starts from: run s has `split(student_key, R)[s mod R]`."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(cfg.seed), 0), 2)


def measurer(agent: Any, cfg: Config):
    """One jitted function of (learner [S], data, t [S, N], e [S, N]) -> (profiles, mask): a dict of
    `tdjax.OffsetProfile`s with a leading run axis for each of `MEASURES`, and the neighbour mask
    [S, N, W] they used.

    Per run: the stiffness (gradient cosine) of its own λ-return loss and of maxₐ Q between s_t and
    s_{t+x}, and the gain in the TD loss to its frozen network θ⁻ and in its own loss after one step
    of its optimizer on s_t (`cfg.update`). `data` is one run's `DataState` (D* is the same for every
    run); (t, e) are slots of D*, whose neighbours are masked outside the update sample's episode."""
    gamma = agent.config.gamma
    x = jnp.arange(-cfg.max_offset, cfg.max_offset + 1)

    def value(p, ex):
        return jnp.max(agent.q_values(p, ex.tr.obs))

    def one(learner, data, t, e):
        def own(p, ex):
            return agent.example_loss(p, learner.target_params, ex)

        def td_loss(p, ex):  # (Q_θ(s, a) − (r + γ d maxₐ′ Q_θ⁻(s′, a′)))²; θ⁻ is not differentiated
            target = ex.tr.reward + gamma * ex.tr.discount * jnp.max(agent.q_values(learner.target_params,
                                                                                    ex.tr.next_obs))
            return jnp.square(agent.q_values(p, ex.tr.obs)[ex.tr.action] - target)

        capacity = data.dataset.replay.data.action.shape[0]
        _, mask = replay_lib.neighbours(data.dataset.replay, t, e, cfg.max_offset)
        nb = agent.make_examples(learner, data, (t[:, None] + x[None, :]) % capacity,
                                 jnp.broadcast_to(e[:, None], mask.shape))
        mask = mask & (nb.weight > 0)
        batch = agent.make_examples(learner, data, t, e)
        step = (agent.optimizer, learner.opt_state)
        kw = dict(update=cfg.update, chunk_size=cfg.chunk_size)
        return dict(
            stiffness=tdjax.stiffness_by_offset(own, learner.params, batch, nb, mask, chunk_size=cfg.chunk_size),
            stiffness_value=tdjax.stiffness_by_offset(value, learner.params, batch, nb, mask,
                                                      chunk_size=cfg.chunk_size),
            gain_td=tdjax.loss_change_by_offset(own, learner.params, *step, batch, nb, mask, eval_loss_fn=td_loss,
                                                **kw),
            gain=tdjax.loss_change_by_offset(own, learner.params, *step, batch, nb, mask, **kw)), mask

    return jax.jit(jax.vmap(one, in_axes=(0, None, 0, 0)))


def spectrum(agent: Any, cfg: Config):
    """One jitted function of (params [S], data, t [K], e [K]) -> `tdjax.SingularValueSpread` [S, ...] of
    the last hidden layer's features at the K states (t, e) of D*."""
    def one(params, data, t, e):
        obs = replay_lib.gather(data.dataset.replay, t, e).obs
        return tdjax.singular_value_spread(agent.features(params, obs).reshape(t.shape[0], -1), tol=cfg.sv_tol)

    return jax.jit(jax.vmap(one, in_axes=(0, None, None, None)))


def data_paths(cfg: Config) -> tuple[str, str]:
    """(teacher folder, D* folder): trained and collected once, reused from `cfg.teacher_dir` (Fig. 3's)."""
    k_game = jax.random.fold_in(jax.random.key(cfg.seed), 0)
    return teacher_and_dstar(cfg.teacher, cfg.game, cfg.teacher_dir, temporary_folder("tdjax_bengio_fig5_"), k_game,
                             data_steps=cfg.data_steps, epsilon=cfg.data_epsilon)


def sweep(cfg: Config, d_path: str):
    """(runner, state): every λ × seed of `cfg` as one vmapped program, λ as data (`set_hyperparams`)."""
    L, R = len(cfg.lambdas), cfg.student_seeds
    runner = make_seed_runner(cfg.student.replace(dataset=d_path, teacher=""), L * R)
    return runner, runner.init(student_key(cfg), seeds_per_value=R, td_lambda=sweep_values(cfg.lambdas, R))


def run(cfg: Config, show_progress: bool = True) -> dict:
    """All λ × seeds trained in chunks, measured after each.

    Returns arrays with axes [L λ values, M measuring points, R seeds, (N samples,) W offsets]."""
    _validate(cfg)
    L, R, N, K = len(cfg.lambdas), cfg.student_seeds, cfg.num_samples, cfg.num_feature_states
    M, W = cfg.student.num_updates // cfg.measure_every, 2 * cfg.max_offset + 1
    t0 = time.time()
    _, d_path = data_paths(cfg)
    ds, _ = load_dataset(d_path)
    num_envs = ds.replay.data.action.shape[1]
    # update samples: slots of complete episodes, the same for every λ (paired comparisons)
    pool = np.flatnonzero(np.asarray(ds.replay.data.valid & ds.mc_complete).reshape(-1))
    require(pool.size >= N, cfg, "num_samples", f"D* of {cfg.game} has only {pool.size} transitions in complete "
            "episodes", "raise --data-steps or lower --num-samples")
    valid = np.flatnonzero(np.asarray(ds.replay.data.valid).reshape(-1))
    require(valid.size >= K, cfg, "num_feature_states", f"D* has only {valid.size} valid transitions",
            "lower --num-feature-states")
    rng = np.random.default_rng([cfg.seed, 5])
    positions = np.stack([np.stack([rng.choice(pool, N, replace=False) for _ in range(R)]) for _ in range(M)])
    positions = np.stack([positions // num_envs, positions % num_envs], -1)  # [M, R, N, 2]
    feat = rng.choice(valid, K, replace=False)
    feat_t, feat_e = jnp.asarray(feat // num_envs), jnp.asarray(feat % num_envs)

    runner, state = sweep(cfg, d_path)
    data = jax.tree.map(lambda a: a[0], state.data)
    measure, spec = measurer(runner.agent, cfg), spectrum(runner.agent, cfg)
    res = {k: np.zeros((L, M, R, N, W), np.float32) for k in MEASURES}
    mask = np.zeros((L, M, R, N, W), bool)
    D = jax.eval_shape(spec, state.learner.params, data, feat_t, feat_e).singular_values.shape[-1]
    sv = np.zeros((L, M, R, D), np.float32)
    spread = np.zeros((L, M, R), np.float32)
    num_above = np.zeros((L, M, R), np.int32)
    train_loss = np.full((L, M), np.nan, np.float32)
    bar = progress_bar(M, desc=NAME, enabled=show_progress)
    for m in range(M):
        state, metrics = runner.run(state, m * cfg.measure_every, cfg.measure_every)
        train_loss[:, m] = np.asarray(metrics.loss).reshape(L, R, -1).mean(axis=(1, 2))
        pos = np.tile(positions[m], (L, 1, 1))  # run s uses seed s mod R's samples
        profs, msk = measure(state.learner, data, jnp.asarray(pos[..., 0]), jnp.asarray(pos[..., 1]))
        for k in MEASURES:
            res[k][:, m] = np.asarray(profs[k].per_sample).reshape(L, R, N, W)
        mask[:, m] = np.asarray(msk).reshape(L, R, N, W)
        s = jax.tree.map(np.asarray, spec(state.learner.params, data, feat_t, feat_e))
        sv[:, m] = s.singular_values.reshape(L, R, D)
        spread[:, m] = s.spread.reshape(L, R)
        num_above[:, m] = s.num_above.reshape(L, R)
        bar.update()
    bar.close()
    return dict(lambdas=np.array(cfg.lambdas, np.float32), offsets=np.arange(-cfg.max_offset, cfg.max_offset + 1),
                updates=cfg.measure_every * (1 + np.arange(M)), mask=mask, positions=positions,
                feature_slots=np.stack([np.asarray(feat_t), np.asarray(feat_e)], -1), singular_values=sv,
                spread=spread, num_above=num_above, train_loss=train_loss, seconds=np.array(time.time() - t0),
                **{k: res[k] for k in MEASURES})


def profiles(res: dict, key: str) -> np.ndarray:
    """The measure per offset [L, W], averaged over every unmasked finite sample of every seed and point."""
    v = res[key]
    ok = res["mask"] & np.isfinite(v)
    n = ok.sum(axis=(1, 2, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(ok, v, 0).sum(axis=(1, 2, 3)) / n, np.nan)


def _band(offsets: np.ndarray, prof: np.ndarray, lo: int, hi: int) -> np.ndarray:
    sel = (np.abs(offsets) >= lo) & (np.abs(offsets) <= hi)
    if not sel.any():
        return np.full(prof.shape[:-1], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN offsets: NaN, as intended
        return np.nanmean(prof[..., sel], axis=-1)


def spearman(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Spearman's rank correlation (NaN if either has a NaN or is constant)."""
    from scipy.stats import spearmanr

    u, v = np.asarray(a, float), np.asarray(b, float)
    if not (np.all(np.isfinite(u)) and np.all(np.isfinite(v))) or np.ptp(u) == 0 or np.ptp(v) == 0:
        return float("nan")
    return float(spearmanr(u, v)[0])


def asymmetry(res: dict, key: str = "gain_td", band: tuple[int, int] = NEAR) -> tuple[np.ndarray, np.ndarray]:
    """Per λ: the mean over update samples of d = mean over x in `band` of gain(−x) − gain(+x) (offsets
    where both exist), and its t statistic (mean / standard error over the samples) [L], [L]."""
    X = res["offsets"].shape[0] // 2
    xs = np.arange(band[0], min(band[1], X) + 1)
    v, ok = res[key], res["mask"] & np.isfinite(res[key])
    both = ok[..., X - xs] & ok[..., X + xs]
    diff = np.where(both, v[..., X - xs] - v[..., X + xs], 0.0)
    n = both.sum(-1)
    d = np.where(n > 0, diff.sum(-1) / np.maximum(n, 1), np.nan).reshape(v.shape[0], -1)  # [L, M·R·N]
    mean, t = np.full(d.shape[0], np.nan), np.full(d.shape[0], np.nan)
    for i, row in enumerate(d):
        row = row[np.isfinite(row)]
        if row.size > 1:
            mean[i] = row.mean()
            t[i] = mean[i] / max(row.std(ddof=1) / np.sqrt(row.size), 1e-30)
    return mean, t


def check_claims(cfg: Config, res: dict) -> Claims:
    """§5.1 and App. D on Figs 5, 11, 13: the measures against λ."""
    x, lams = res["offsets"], [float(v) for v in res["lambdas"]]
    X = cfg.max_offset
    claims = Claims(NAME, settings=dict(
        game=cfg.game, teacher_steps=cfg.teacher.total_steps, data_steps=cfg.data_steps, lambdas=list(cfg.lambdas),
        student_updates=cfg.student.num_updates, target_update_interval=cfg.student.target_update_interval,
        measure_every=cfg.measure_every, student_seeds=cfg.student_seeds, num_samples=cfg.num_samples,
        max_offset=X, update=cfg.update, lr=cfg.student.lr, seconds=round(float(res["seconds"]), 1)))
    lab = ["MC" if lam == 1.0 else f"λ={lam:g}" for lam in lams]
    near_label = f"{NEAR[0]} ≤ |x| ≤ {min(NEAR[1], X)}"

    # Fig. 5: "the closer λ is to 1, the more gradients are similar around an update sample"
    for key in ("stiffness", "stiffness_value"):
        near = _band(x, profiles(res, key), *NEAR)
        rho = spearman(lams, near)
        claims.check(f"Fig. 5, {MEASURE_NAMES[key]}: the mean cosine over {near_label} increases with λ "
                     f"(Spearman ρ(λ, cosine) ≥ {MIN_SPEARMAN})", bool(rho >= MIN_SPEARMAN),
                     f"ρ = {rho:.2f}; " + ", ".join(f"{n}: {v:.3g}" for n, v in zip(lab, near)))

    # Fig. 11: the TD gain increases with λ, surpasses Q-learning (λ = 0 here) and is asymmetric around 0
    prof = profiles(res, "gain_td")
    near = _band(x, prof, *NEAR)
    table = ", ".join(f"{n}: x=0 {p[X]:.3g}, {near_label} {v:.3g}" for n, p, v in zip(lab, prof, near))
    rho = spearman(lams, near)
    claims.check(f"Fig. 11: the TD gain over {near_label} increases with λ (Spearman ρ ≥ {MIN_SPEARMAN})",
                 bool(rho >= MIN_SPEARMAN), f"ρ = {rho:.2f}; {table}")
    high = [i for i, lam in enumerate(lams) if lam >= 0.9]
    if 0.0 in lams and high:
        mag = _band(x, np.abs(prof), 1, X)
        q = mag[lams.index(0.0)]
        claims.check("Fig. 11: for every λ ≥ 0.9 the TD gain's magnitude (mean |gain| over 1 ≤ |x| ≤ X) surpasses "
                     "that of λ = 0, i.e. of Q-learning policy evaluation on D* (Fig. 4's dashed lines)",
                     bool(all(mag[i] > q for i in high)),
                     ", ".join(f"{lab[i]}: {mag[i]:.3g}" for i in range(len(lams))))
    else:
        claims.note("Fig. 11 against Q-learning: needs λ = 0 and some λ ≥ 0.9 in the sweep.")
    mean, t = asymmetry(res)
    if high:
        claims.check(f"Fig. 11: the TD gain is asymmetric around x = 0 for every λ ≥ 0.9 (per update sample, "
                     f"d = mean over {near_label} of gain(−x) − gain(+x); |t| > 2 over the samples)",
                     bool(all(abs(t[i]) > 2 for i in high)),
                     ", ".join(f"{n}: mean d {d:.3g} (t = {tv:.1f}, "
                               f"{'behind' if d > 0 else 'ahead'} larger)" for n, d, tv in zip(lab, mean, t)))

    # Fig. 13: "larger λ values yield larger singular values and a wider distribution"
    spread = res["spread"][:, -1].mean(axis=1)
    width = res["num_above"][:, -1].mean(axis=1)
    top = res["singular_values"][:, -1, :, 0].mean(axis=1)
    rho = spearman(lams, spread)
    claims.check(f"Fig. 13: larger λ, larger singular values (Spearman ρ(λ, Σᵢσᵢ/√B) ≥ {MIN_SPEARMAN}, after "
                 f"{cfg.student.num_updates:,} updates)", bool(rho >= MIN_SPEARMAN),
                 f"ρ = {rho:.2f}; " + ", ".join(f"{n}: Σσ {s:.3g}, σ₁ {v:.3g}" for n, s, v in zip(lab, spread, top)))
    # the count saturates at the D hidden units, so ties are expected: non-decreasing, and wider at MC than at λ = 0
    claims.check(f"Fig. 13: larger λ, a wider distribution (#{{σᵢ > {cfg.sv_tol:g}·σ₁}} non-decreasing in λ, ties "
                 "allowed, and larger at the largest λ than at the smallest)",
                 bool(np.all(np.diff(width) >= 0) and width[-1] > width[0]),
                 ", ".join(f"{n}: {w:.1f}" for n, w in zip(lab, width)) + f" (of {res['singular_values'].shape[-1]})")
    claims.note("Training loss (own objective) at the measuring points: " + "; ".join(
        f"{n} " + "→".join(f"{v:.3g}" for v in res["train_loss"][i]) for i, n in enumerate(lab)))
    if cfg.student.network != "nature_cnn":
        claims.note(f"Not the paper's scale: {cfg.game} instead of Atari MsPacman, a {cfg.teacher.total_steps:,}-step "
                    f"teacher, a D* of {cfg.data_steps * cfg.teacher.num_envs:,} transitions instead of 500k, "
                    f"{cfg.student.num_updates:,} updates instead of 500k (target refresh every "
                    f"{cfg.student.target_update_interval:,} instead of 10k), {cfg.student_seeds} seeds instead "
                    "of 5; squared losses, no L2 regularisation.")
    return claims


def plot(cfg: Config, res: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, lams = res["offsets"], [float(v) for v in res["lambdas"]]
    X = cfg.max_offset
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, len(lams)))
    lab = ["MC (λ=1)" if lam == 1.0 else f"λ={lam:g}" for lam in lams]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    for ax, key, title in ((axes[0], "stiffness", "Fig. 5: cosine of ∇(own loss)"),
                           (axes[1], "stiffness_value", "Fig. 5: cosine of ∇maxₐQ (released code)"),
                           (axes[2], "gain_td", "Fig. 11: TD gain J_θ − J_θ′")):
        prof = profiles(res, key)
        for i in range(len(lams)):
            ax.plot(x[x != 0], np.where(x != 0, prof[i], np.nan)[x != 0], color=colors[i], label=lab[i])
            ax.plot(x[X - 1:X + 2], prof[i, X - 1:X + 2], color=colors[i], ls=":")  # x = 0: the update sample
        if key == "gain_td":  # the neighbours set the scale; x = 0 is far larger
            lim = np.nanmax(np.abs(prof[:, x != 0])) * 1.3 if np.isfinite(prof[:, x != 0]).any() else 1.0
            ax.set_ylim(-lim, lim)
        ax.axhline(0, color="k", lw=0.5)
        ax.axvline(0, color="k", lw=0.5, ls=":")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("offset x from the update sample")
        ax.legend(fontsize=6)
    ax = axes[3]
    sv = res["singular_values"][:, -1]  # [L, R, D]
    idx = 1 + np.arange(sv.shape[-1])
    for i in range(len(lams)):
        ax.plot(idx, sv[i].mean(0), color=colors[i], label=lab[i])
        ax.fill_between(idx, sv[i].min(0), sv[i].max(0), color=colors[i], alpha=0.2)
    ax.set_yscale("log")
    ax.set_xlabel("singular value index i")
    ax.set_ylabel("σᵢ / √B")
    ax.set_title(f"Fig. 13: last hidden layer after {cfg.student.num_updates:,} updates\n(band: min–max over seeds)",
                 fontsize=9)
    ax.legend(fontsize=6)
    fig.suptitle(f"Bengio et al. 2020 Figs 5, 11, 13: TD(λ) policy evaluation on D* ({cfg.game})", fontsize=11)
    fig.tight_layout()
    return fig


def _rows(cfg: Config, res: dict) -> list[dict]:
    profs = {k: profiles(res, k) for k in MEASURES}
    count = res["mask"].sum(axis=(1, 2, 3))
    return [dict(td_lambda=float(lam), offset=int(off), count=int(count[i, w]),
                 **{k: float(profs[k][i, w]) for k in MEASURES},
                 spread=float(res["spread"][i, -1].mean()), num_above=float(res["num_above"][i, -1].mean()))
            for i, lam in enumerate(res["lambdas"]) for w, off in enumerate(res["offsets"])]


EXPERIMENT = Experiment(NAME, __doc__, config=config, tiny=tiny, scales=SCALES, run=run, plot=plot,
                        claims=check_claims, rows=_rows)


def main(argv: Sequence[str] | None = None) -> Claims:
    """`python -m experiments.bengio20_fig5 [--scale smoke|cpu|paper|tiny] [--out DIR] [--<field> VALUE ...]`."""
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    EXPERIMENT.cli()
