"""The offline loop: a fresh student trained on a teacher's data (Lyle et al. 2022 §6; Bengio et al. 2020 §5).

`make_train(OfflineConfig(teacher=..., dataset=..., objective=...)) -> train(key)` (through the one
`tdjax.train.make_train`). Each iteration samples `batch_size` transitions uniformly from the dataset
(`tdjax.train.offline_data`: the teacher's final replay or Bengio's D*), computes the objective's
per-example loss (vmapped), and makes ONE optimizer step; bootstrapped objectives keep a frozen target
copy θ⁻ of the student, refreshed every `target_update_interval` updates (or, with `target_ema` = τ > 0,
moved after every update by θ⁻ ← (1 − τ)θ⁻ + τθ, Bengio et al. 2020 §5.3's "DDQN"); the probes of the online
loops run every `probe_interval` updates. With `collect=True` the teacher keeps acting ε-greedily
(`collect_epsilon`, 0.1 in Lyle App. B.3) in its environments during distillation, `collect_frequency`
vector steps per update, and its transitions overwrite the oldest of the buffer.

  ==================== ======= ============================================================ =========
  objective            head    per-example loss (q: student, q_T: teacher, ⁻: frozen target)  teacher
  ==================== ======= ============================================================ =========
  value_distillation   Q       Σₐ (q(x,a) − q_T(x,a))²                   Lyle eq. 22           value
  qa_regression        Q       (q(x,a) − q_T(x,a))², a the stored action  Lyle App. D.1        value
  advantage_regression Q       Σₐ (adv(x,a) − adv_T(x,a))², adv = q − meanₐ q  Lyle App. D.1   value
  behaviour_cloning    logits  −log π(a_T|x) − λ H(π(x)), a_T = argmax of the teacher  eq. 23/57  any
  policy_distillation  logits  KL(π(x) ‖ π_T(x)) + λ H(π(x))             Lyle eq. 24     actor-critic
  qr_dqn               QR      quantile regression to r + γ d θ⁻(x′, a*)  Lyle App. D.1          —
  double_dqn           Q       ½(r + γ d q⁻(x′, argmax q(x′)) − q(x,a))²  Lyle App. D.1          —
  mc_regression        Q       (q(x,a) − G)², G the Monte-Carlo return   Bengio L_MC             —
  q_regression         Q       (q(x,a) − q_T(x,a))²                       Bengio L_reg         value
  td_star              Q       (q(x,a) − (r + γ d maxₐ′ q_T(x′,a′)))²     Bengio L_TD*         value
  q_learning           Q       ½(r + γ d maxₐ′ q⁻(x′,a′) − q(x,a))²       Bengio eq. 10          —
  td_lambda            Q       (q(x,a) − G^λ)², forward-view λ-return of q⁻  Bengio eq. 5, B.3   —
  ==================== ======= ============================================================ =========

(d = 0 at termination, 1 otherwise; "teacher" is the teacher kind the objective needs, "—" none.)
qa_regression and q_regression are the same regression on the taken action; both names exist because
the two papers name it differently. TD(λ): G^λ_t = r_t + γ d_t [(1 − λ_t) maxₐ q⁻(x_{t+1}, a) + λ_t G^λ_{t+1}]
with λ_t = λ within an episode and 0 at its last transition, computed for the WHOLE dataset from θ⁻
and recomputed at each target refresh (Bengio App. B.3: "λ-targets are computed with the forward view,
using the frozen network to compute the target values").

The student is a `ValueNetwork` (any torso of the online loops: "auto", "mlp", "minatar_cnn",
"nature_cnn", "impala_cnn"; a Q, QR or — read as logits, Lyle App. B.3 — Q head). Everything that
can be wrong is checked in `make_agent` before anything is compiled.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import rlax

from tdjax import envs as envs_lib
from tdjax._src.gradients import gram_matrix
from tdjax._src.losses import (
    advantage_regression_loss,
    behaviour_cloning_loss,
    double_q_learning_loss,
    policy_distillation_loss,
    q_learning_loss,
    qa_regression_loss,
    quantile_q_learning_loss,
    value_distillation_loss,
)
from tdjax._src.update_matrix import (
    dormant_fraction,
    policy_update_matrix,
    srank,
    update_matrix,
    update_rank,
)
from tdjax.networks.heads import TORSOS, QHead, QRHead, ValueNetwork
from tdjax.train import core
from tdjax.train import offline_data as data_lib
from tdjax.train import probes as probes_lib
from tdjax.train import replay as replay_lib
from tdjax.train import teacher as teacher_lib
from tdjax.train.validation import check_choice, check_types, require

__all__ = ["OfflineConfig", "Objective", "OBJECTIVES", "OfflineSpec", "OfflineAgent", "LearnerState",
           "DataState", "RunnerState", "OfflineMetrics", "Example", "RHO_TARGETS", "build_spec", "make_agent",
           "summarise", "evaluate_policy", "init_local", "iteration", "example_loss", "rho_fns", "offset_samples"]


@dataclasses.dataclass(frozen=True)
class OfflineConfig:
    """Everything an offline run depends on. Frozen: derive variants with `config.replace(...)`.

    Counting units: `num_updates`, `target_update_interval`, `probe_interval` count gradient updates;
    `batch_size`, `probe_k` count transitions; `collect_frequency` counts vector environment steps
    per update; `checkpoint_interval` counts iterations (one update each).
    """

    teacher: str = ""  # folder of a saved teacher (tdjax.train.save_teacher); "" for objectives without one
    dataset: str = ""  # folder of a saved dataset (tdjax.train.save_dataset): the teacher's replay or D*
    objective: str = "value_distillation"  # the per-example loss (table in tdjax.train.offline)
    network: str = "auto"  # student torso: "auto" | "mlp" | "minatar_cnn" | "nature_cnn" | "impala_cnn"
    hidden: Tuple[int, ...] = (64, 64)  # MLP torso widths (network="mlp")
    num_updates: int = 10_000  # length of the run
    batch_size: int = 64  # minibatch of one update (split over num_devices)
    gamma: float = 0.99  # discount γ of the bootstrapped objectives and of td_star
    target_update_interval: int = 1_000  # updates between copies of θ into θ⁻ (and λ-return refreshes)
    target_ema: float = 0.0  # τ > 0: θ⁻ ← (1 − τ)θ⁻ + τθ after every update instead of the copies (Bengio §5.3: 0.01)
    td_lambda: float = 0.9  # λ of td_lambda (Bengio et al. 2020 §5.1)
    bc_entropy_coef: float = 1e-2  # λ of behaviour cloning, eq. 23 (Lyle §6.1: 1e-2; App. B.3 eq. 57: 0.1)
    pd_entropy_coef: float = 0.0  # λ of policy distillation, eq. 24 (as printed: λ > 0 penalises entropy)
    n_quantiles: int = 200  # qr_dqn: quantiles per action
    qr_kappa: float = 1.0  # qr_dqn: Huber threshold κ of the quantile loss
    # optimizer
    optimizer: str = "adam"  # "adam" | "rmsprop" | "sgd" | "momentum" (heavy-ball SGD), after clipping
    lr: float = 1e-4  # learning rate
    adam_eps: float = 1e-8  # Adam's ε
    rmsprop_decay: float = 0.95  # RMSProp's decay of the squared-gradient average
    rmsprop_eps: float = 0.01  # RMSProp's ε
    rmsprop_centered: bool = True  # RMSProp divides by the variance, not the second moment
    momentum: float = 0.9  # momentum of optimizer="momentum"
    max_grad_norm: Optional[float] = 10.0  # None: no clipping
    # the teacher keeps collecting during distillation (Lyle App. B.3)
    collect: bool = False  # the teacher acts in its environments and its transitions enter the buffer
    collect_epsilon: float = 0.1  # ε of the teacher's ε-greedy collection (Lyle App. B.3: 0.1)
    collect_frequency: int = 1  # vector environment steps of the teacher per update
    env_seed: int = 0  # envpool only: the collecting environments' seed
    # probes (as the online loops)
    probe_interval: int = 0  # updates between probes; 0 disables them
    probe_k: int = 32  # transitions in the update matrix
    probe_rank_eps: float = 0.1  # update rank: singular values kept until 1 − ε of the spectrum (Lyle App. B.1)
    probe_srank_delta: float = 0.01  # srank_δ of the features (Kumar et al. 2021)
    probe_dormant_tau: float = 0.025  # τ of the dormant-neuron fraction (Sokar et al. 2023)
    probe_sign_window: int = 5  # window of the TD-error sign variance (Bengio et al. 2020 §5.2)
    probe_sign_steps: int = 32  # consecutive dataset steps per environment for the TD-sign variance
    probe_chunk_size: Optional[int] = None  # examples per vmapped chunk inside the probes
    # along-trajectory probes (Bengio et al. 2020 §5, Figs 3-5, 7, 12); off by default
    probe_max_offset: int = 0  # X: loss change and stiffness at offsets −X..X of N update samples; 0 disables them
    probe_offset_samples: int = 8  # N: update samples of the offset probes (distinct usable examples)
    probe_rho_terms: bool = False  # r1, r2, r3 of ρ′ over the probe_k × probe_k pairs (squared-loss objectives)
    probe_rho_moving_target: bool = False  # ρ′ with the target r + γ d maxₐ′ q_θ(x′, a′) moving with θ (eq. 17)
    probe_singular_values: bool = False  # singular values of the last hidden layer over the probe_k states
    # checkpointing, devices, loop structure
    checkpoint_interval: int = 1_000  # iterations per jitted chunk / checkpoint
    num_devices: int = 1  # devices ONE run is split over (mesh axis "data"; the dataset is replicated)
    seed_devices: int = 1  # devices the seeds of tdjax.train.train_seeds are spread over (mesh axis "seeds")
    loop: str = "scan"  # "scan" (one XLA program) | "host" (the CPU loop structure, tdjax.train.host_loop)

    def replace(self, **changes: Any) -> "OfflineConfig":
        """A copy with `changes` applied (the config itself is never mutated)."""
        return dataclasses.replace(self, **changes)


# ----------------------------------------------------------------------------------------------------
# Objectives.


class Example(NamedTuple):
    """One training example: a transition with its returns and the teacher's outputs."""

    tr: replay_lib.Transition  # the transition (obs, action, reward, discount, next_obs, done, valid)
    mc_return: jax.Array  # shape=(). Monte-Carlo return G from xₜ (0 where incomplete).
    lambda_return: jax.Array  # shape=(). G^λ of θ⁻ (td_lambda; 0 otherwise).
    teacher_out: jax.Array  # shape=[A]. Teacher's Q-values or logits at xₜ (zeros without a teacher).
    teacher_next: jax.Array  # shape=[A]. Teacher's outputs at xₜ₊₁ (td_star; zeros otherwise).
    weight: jax.Array  # shape=(). 1 for a usable example, 0 otherwise (invalid slot, incomplete G).


class Objective(NamedTuple):
    """What distinguishes one offline objective from another."""

    head: str  # "q" | "qr" | "logits"
    teacher: Optional[str]  # the teacher kind it needs: "value", "actor_critic", "any", or None
    bootstrap: bool  # uses the frozen target network θ⁻
    needs_mc: bool  # uses the Monte-Carlo returns (a fixed dataset)
    teacher_next: bool  # needs the teacher's outputs at xₜ₊₁
    # loss(config, spec, out_tm1, out_t_target, out_t_online, example) -> scalar
    loss: Callable[..., jax.Array]


def _taken(q, a):
    return q[a]


OBJECTIVES = {
    "value_distillation": Objective("q", "value", False, False, False,
                                    lambda c, h, q, qt, qo, ex: value_distillation_loss(q, ex.teacher_out)),
    "qa_regression": Objective("q", "value", False, False, False,
                               lambda c, h, q, qt, qo, ex: qa_regression_loss(q, ex.teacher_out, ex.tr.action)),
    "advantage_regression": Objective("q", "value", False, False, False,
                                      lambda c, h, q, qt, qo, ex: advantage_regression_loss(q, ex.teacher_out)),
    "behaviour_cloning": Objective(
        "logits", "any", False, False, False,
        lambda c, h, l, lt, lo, ex: behaviour_cloning_loss(l, jnp.argmax(ex.teacher_out).astype(jnp.int32),
                                                           c.bc_entropy_coef)),
    "policy_distillation": Objective(
        "logits", "actor_critic", False, False, False,
        lambda c, h, l, lt, lo, ex: policy_distillation_loss(l, ex.teacher_out, c.pd_entropy_coef)),
    "qr_dqn": Objective(
        "qr", None, True, False, False,
        lambda c, h, d, dt, do, ex: quantile_q_learning_loss(
            d, h.taus, ex.tr.action, ex.tr.reward, c.gamma * ex.tr.discount, dt, dt, kappa=float(c.qr_kappa))),
    "double_dqn": Objective(
        "q", None, True, False, False,
        lambda c, h, q, qt, qo, ex: double_q_learning_loss(q, ex.tr.action, ex.tr.reward, c.gamma * ex.tr.discount,
                                                           qt, qo)),
    "mc_regression": Objective("q", None, False, True, False,
                               lambda c, h, q, qt, qo, ex: jnp.square(_taken(q, ex.tr.action) - ex.mc_return)),
    "q_regression": Objective(
        "q", "value", False, False, False,
        lambda c, h, q, qt, qo, ex: jnp.square(_taken(q, ex.tr.action)
                                               - jax.lax.stop_gradient(_taken(ex.teacher_out, ex.tr.action)))),
    "td_star": Objective(
        "q", "value", False, False, True,
        lambda c, h, q, qt, qo, ex: jnp.square(
            _taken(q, ex.tr.action) - jax.lax.stop_gradient(
                ex.tr.reward + c.gamma * ex.tr.discount * jnp.max(ex.teacher_next)))),
    "q_learning": Objective(
        "q", None, True, False, False,
        lambda c, h, q, qt, qo, ex: q_learning_loss(q, ex.tr.action, ex.tr.reward, c.gamma * ex.tr.discount, qt)),
    "td_lambda": Objective(
        "q", None, True, True, False,
        lambda c, h, q, qt, qo, ex: jnp.square(_taken(q, ex.tr.action) - jax.lax.stop_gradient(ex.lambda_return))),
}
"""objective name → `Objective` (the table in the module docstring)."""

RHO_TARGETS: dict = {
    "q_regression": lambda c, ex: _taken(ex.teacher_out, ex.tr.action),
    "qa_regression": lambda c, ex: _taken(ex.teacher_out, ex.tr.action),
    "mc_regression": lambda c, ex: ex.mc_return,
    "td_star": lambda c, ex: ex.tr.reward + c.gamma * ex.tr.discount * jnp.max(ex.teacher_next),
    "td_lambda": lambda c, ex: ex.lambda_return,
    "q_learning": None,
    "double_dqn": None,
}
"""The objectives with a ρ′-term probe (a squared loss of f = q(x, a)) → their regression target
y(config, example), which ignores θ; None: the bootstrapped TD target of `rho_fns`."""


def _usable(c: OfflineConfig, dataset: data_lib.OfflineDataset) -> Any:
    """[C, E] bool: the dataset slots the loop trains on (weight 1: valid, and for mc_regression with
    a complete Monte-Carlo return). NumPy or JAX arrays, as the dataset holds."""
    ok = dataset.replay.data.valid
    return ok & dataset.mc_complete if c.objective == "mc_regression" else ok


# ----------------------------------------------------------------------------------------------------
# State and metrics.


class LearnerState(NamedTuple):
    """The student (replicated across devices)."""

    params: Any  # pytree of the student's parameters θ.
    target_params: Any  # pytree like params: θ⁻ (bootstrapped objectives; = params otherwise).
    opt_state: Any  # optax state at θ.
    lambda_return: Optional[jax.Array]  # [C, E] float32 G^λ of θ⁻ (td_lambda only, else None).
    td_lambda: Optional[jax.Array] = None  # shape=(), float32. λ of G^λ (td_lambda only, else None).


class DataState(NamedTuple):
    """The data and the teacher (replicated; the teacher's environments when collecting)."""

    key: jax.Array  # shape=(), typed PRNG key. Iteration i draws from fold_in(key, i).
    dataset: data_lib.OfflineDataset  # [C, E] transitions in time order, with Monte-Carlo returns.
    teacher_params: Any  # the frozen teacher's parameters (None without a teacher).
    env_state: Any  # the collecting environments' state (None unless collect).
    obs: Optional[jax.Array]  # [E, *obs_shape] their current observations (None unless collect).
    episodes: Optional[core.EpisodeStats]  # [E] the teacher's running episodes (None unless collect).


class RunnerState(NamedTuple):
    learner: LearnerState
    data: DataState


class OfflineMetrics(NamedTuple):
    """Per iteration (stacked [num_iterations], or [seeds, num_iterations])."""

    updates: jax.Array  # shape=(), int32. Updates made after this iteration.
    loss: jax.Array  # shape=(), float32. Mean minibatch loss before the update.
    output_mean: jax.Array  # shape=(), float32. Mean of the student's max output (Q or logit) on the batch.
    agreement: jax.Array  # shape=(), float32. argmax student = argmax teacher, batch fraction (NaN: no teacher).
    return_sum: jax.Array  # shape=(), float32. Sum of the returns of the teacher's episodes ended (collect).
    discounted_return_sum: jax.Array  # shape=(), float32. Their discounted returns.
    return_count: jax.Array  # shape=(), int32. Number of the teacher's episodes ended this iteration.
    probes: probes_lib.ProbeMetrics  # NaN fields (probed=False) except every probe_interval updates.


# ----------------------------------------------------------------------------------------------------
# Validation and the spec.


def _validate(c: OfflineConfig) -> None:
    if not isinstance(c, OfflineConfig):
        raise ValueError(f"offline.make_agent: expected an OfflineConfig, got {type(c).__name__}.")
    check_types(c)
    check_choice(c, "objective", OBJECTIVES)
    check_choice(c, "network", ("auto",) + tuple(TORSOS))
    check_choice(c, "optimizer", ("adam", "rmsprop", "sgd", "momentum"))
    check_choice(c, "loop", ("scan", "host"))
    for name in ("num_updates", "batch_size", "target_update_interval", "n_quantiles", "collect_frequency",
                 "probe_k", "probe_sign_window", "probe_sign_steps", "checkpoint_interval", "num_devices",
                 "seed_devices"):
        require(getattr(c, name) >= 1, c, name, "must be a positive integer", f"set {name} >= 1")
    require(len(c.hidden) >= 1 and all(h >= 1 for h in c.hidden), c, "hidden",
            "the MLP torso needs at least one positive width", "e.g. hidden=(64, 64)")
    require(c.lr > 0 and np.isfinite(c.lr), c, "lr", "the learning rate must be a positive number", "e.g. lr=1e-4")
    require(c.adam_eps > 0, c, "adam_eps", "must be > 0", "e.g. adam_eps=1e-8")
    require(c.rmsprop_eps > 0, c, "rmsprop_eps", "must be > 0", "e.g. rmsprop_eps=0.01")
    require(0.0 <= c.rmsprop_decay < 1.0, c, "rmsprop_decay", "must lie in [0, 1)", "e.g. rmsprop_decay=0.95")
    require(0.0 <= c.momentum < 1.0, c, "momentum", "must lie in [0, 1)", "e.g. momentum=0.9")
    require(c.max_grad_norm is None or c.max_grad_norm > 0, c, "max_grad_norm", "must be > 0 or None",
            "use None to disable clipping")
    require(0.0 <= c.gamma <= 1.0, c, "gamma", "the discount must lie in [0, 1]", "e.g. gamma=0.99")
    require(0.0 <= c.target_ema <= 1.0, c, "target_ema", "τ must lie in [0, 1]",
            "use 0 for copies every target_update_interval, e.g. 0.01 for Bengio et al.'s moving average")
    require(c.target_ema == 0.0 or c.objective != "td_lambda", c, "target_ema",
            "td_lambda recomputes its λ-returns at the copies of θ into θ⁻", "use target_ema=0 with td_lambda")
    require(0.0 <= c.td_lambda <= 1.0, c, "td_lambda", "λ must lie in [0, 1]", "e.g. td_lambda=0.9 (1: Monte Carlo)")
    require(0.0 <= c.collect_epsilon <= 1.0, c, "collect_epsilon", "ε must lie in [0, 1]", "Lyle et al. use 0.1")
    require(c.qr_kappa >= 0, c, "qr_kappa", "the Huber threshold must be >= 0", "e.g. qr_kappa=1.0")
    require(c.probe_interval >= 0, c, "probe_interval", "must be >= 0", "use 0 to disable probes")
    require(c.probe_chunk_size is None or c.probe_chunk_size >= 1, c, "probe_chunk_size",
            "must be None or >= 1", "use None or a positive chunk size")
    require(0.0 < c.probe_rank_eps < 1.0, c, "probe_rank_eps", "must lie in (0, 1)", "the paper uses 0.1")
    require(0.0 < c.probe_srank_delta < 1.0, c, "probe_srank_delta", "must lie in (0, 1)", "Kumar et al. use 0.01")
    require(c.probe_sign_window <= c.probe_sign_steps, c, "probe_sign_window",
            f"longer than probe_sign_steps={c.probe_sign_steps}", "set probe_sign_window <= probe_sign_steps")
    require(c.batch_size % c.num_devices == 0, c, "batch_size", f"must be divisible by num_devices={c.num_devices}",
            f"use a multiple of {c.num_devices}")
    require(c.num_devices * c.seed_devices <= jax.device_count(), c, "num_devices",
            f"seed_devices × num_devices = {c.seed_devices} × {c.num_devices} devices are needed but only "
            f"{jax.device_count()} are visible", "use fewer devices, or on CPU start Python with "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={c.num_devices * c.seed_devices}")
    require(bool(c.dataset), c, "dataset", "an offline run needs data",
            "save one with tdjax.train.save_dataset (collect_dataset or dataset_from_replay) and pass its folder")
    obj = OBJECTIVES[c.objective]
    if obj.teacher is not None or c.collect:
        why = "needs a teacher's outputs" if obj.teacher is not None else "runs with collect=True (the teacher acts)"
        require(bool(c.teacher), c, "teacher", f"objective {c.objective!r} {why}",
                "pass the folder of a teacher saved with tdjax.train.save_teacher")
    if c.probe_rho_terms:
        require(c.objective in RHO_TARGETS, c, "probe_rho_terms",
                f"r1, r2, r3 are the terms of ρ′ for a squared loss ½(f − y)² of one prediction f, which "
                f"objective {c.objective!r} is not", f"use one of {sorted(RHO_TARGETS)}")
    if c.probe_rho_moving_target:
        require(c.objective in ("q_learning", "double_dqn"), c, "probe_rho_moving_target",
                f"only a bootstrapped TD target can move with θ; objective {c.objective!r} regresses on a fixed target",
                "use objective='q_learning' or 'double_dqn', or probe_rho_moving_target=False")
    if c.collect:
        require(not obj.needs_mc, c, "collect", f"objective {c.objective!r} needs the Monte-Carlo/λ-returns of a "
                "FIXED dataset, but collect=True keeps overwriting it", "set collect=False")
        require(c.num_devices == 1, c, "collect", "the teacher's collection runs on one device",
                "set num_devices=1 with collect=True")


def _check_teacher(c: OfflineConfig, teacher: Optional[teacher_lib.Teacher], info: data_lib.DatasetInfo) -> None:
    obj = OBJECTIVES[c.objective]
    if teacher is None:
        return
    if obj.teacher == "value":
        require(teacher.kind == "value", c, "objective",
                f"{c.objective!r} regresses on a value teacher's Q-values but the teacher at {c.teacher!r} is an "
                "actor-critic agent (it has policy logits, no Q-values)",
                "use objective='policy_distillation' or 'behaviour_cloning' for actor-critic teachers")
    if obj.teacher == "actor_critic":
        require(teacher.kind == "actor_critic", c, "objective",
                f"{c.objective!r} distils a policy, but the teacher at {c.teacher!r} is a value-based agent "
                "without a policy network", "use 'value_distillation' or 'behaviour_cloning' (its greedy policy)")
    require(tuple(teacher.obs_shape) == tuple(info.obs_shape), c, "dataset",
            f"the dataset's observations are {tuple(info.obs_shape)} but the teacher at {c.teacher!r} takes "
            f"{tuple(teacher.obs_shape)}", "use a dataset collected in the teacher's environment")
    require(teacher.num_actions == info.num_actions, c, "dataset",
            f"the dataset has {info.num_actions} actions but the teacher has {teacher.num_actions}",
            "use a dataset collected in the teacher's environment")


@dataclasses.dataclass(frozen=True, eq=False)
class OfflineSpec:
    """What the loop functions below read besides their data. Sizes are per device."""

    config: OfflineConfig
    objective: Objective
    network: ValueNetwork
    head: nn.Module
    optimizer: optax.GradientTransformation
    probe_settings: probes_lib.ProbeSettings
    dataset: data_lib.OfflineDataset  # as loaded (host arrays)
    info: data_lib.DatasetInfo
    teacher: Optional[teacher_lib.Teacher]
    env: Optional[envs_lib.VecEnv]  # the collecting environments (collect=True), else None
    obs_scale: float  # 1/255 for pixels
    num_actions: int
    batch_size: int  # per device
    num_iterations: int
    steps_per_iteration: int  # teacher environment steps per iteration (0 unless collect)


def _torso(c: OfflineConfig, env: str, obs_shape: Tuple[int, ...]) -> nn.Module:
    name = core.auto_network(env, obs_shape) if c.network == "auto" else c.network
    if name == "mlp":
        require(len(obs_shape) == 1, c, "network", f"an MLP torso needs vector observations but the dataset's are "
                f"{obs_shape}", "use network='minatar_cnn', 'nature_cnn', 'impala_cnn' or 'auto'")
        return TORSOS["mlp"](tuple(c.hidden))
    require(len(obs_shape) == 3, c, "network", f"a convolutional torso needs [H, W, C] observations but the "
            f"dataset's are {obs_shape}", "use network='mlp' or 'auto'")
    return TORSOS[name]()


def build_spec(c: OfflineConfig) -> OfflineSpec:
    """Validates `c`, loads the dataset and the teacher, builds the student and its optimizer."""
    _validate(c)
    obj = OBJECTIVES[c.objective]
    dataset, info = data_lib.load_dataset(c.dataset)
    teacher = teacher_lib.load_teacher(c.teacher) if c.teacher else None
    _check_teacher(c, teacher, info)
    cap, num_envs = dataset.replay.data.action.shape
    require(c.batch_size <= cap * num_envs, c, "batch_size", f"larger than the dataset ({cap * num_envs} transitions)",
            "use a smaller batch_size")
    if c.probe_interval > 0:
        require(c.probe_k <= cap * num_envs, c, "probe_k", f"larger than the dataset ({cap * num_envs})",
                "use a smaller probe_k")
        require(c.probe_sign_steps <= cap, c, "probe_sign_steps", f"the dataset has only {cap} steps per environment",
                f"set probe_sign_steps <= {cap}")
    usable = int(np.sum(_usable(c, dataset)))
    probes_lib.check_trajectory_fields(c, steps_per_env=cap, first_probe_transitions=usable if c.probe_interval > 0
                                       else None)
    obs_shape = tuple(info.obs_shape)
    vec = envs_lib.vec_spec(info.env) if envs_lib.is_envpool_name(info.env) or info.env in envs_lib.ENV_NAMES else None
    obs_scale = vec.obs_scale if vec is not None else 1.0
    head = QRHead(info.num_actions, c.n_quantiles) if obj.head == "qr" else QHead(info.num_actions)
    network = ValueNetwork(_torso(c, info.env, obs_shape), head)
    optimizer = core.make_optimizer(c.optimizer, c.lr, max_grad_norm=c.max_grad_norm, adam_eps=c.adam_eps,
                                    rmsprop_decay=c.rmsprop_decay, rmsprop_eps=c.rmsprop_eps,
                                    rmsprop_centered=c.rmsprop_centered, momentum=c.momentum, lr_in_state=True)
    env = None
    if c.collect:
        assert teacher is not None  # checked by _validate
        env = envs_lib.make_vec(info.env, num_envs, seed=c.env_seed, backend=teacher.config.env_backend,
                                options=dict(info.env_options))
    settings = probes_lib.ProbeSettings(
        rank_eps=float(c.probe_rank_eps), srank_delta=float(c.probe_srank_delta),
        dormant_tau=float(c.probe_dormant_tau), sign_window=c.probe_sign_window, chunk_size=c.probe_chunk_size,
        **probes_lib.trajectory_settings(c, network, obs_shape))
    return OfflineSpec(
        config=c, objective=obj, network=network, head=head, optimizer=optimizer, probe_settings=settings,
        dataset=dataset, info=info, teacher=teacher, env=env, obs_scale=float(obs_scale),
        num_actions=int(info.num_actions), batch_size=c.batch_size // c.num_devices, num_iterations=c.num_updates,
        steps_per_iteration=num_envs * c.collect_frequency if c.collect else 0)


# ----------------------------------------------------------------------------------------------------
# Network outputs, the per-example loss, one update.


def apply(spec: OfflineSpec, params: Any, x: jax.Array) -> jax.Array:
    """The head's raw output (Q [.., A], logits [.., A] or quantiles [.., A, N]) at stored observations x."""
    x = x.astype(jnp.float32)
    return spec.network.apply(params, x if spec.obs_scale == 1.0 else x * spec.obs_scale)  # type: ignore[return-value]


def q_values(spec: OfflineSpec, params: Any, x: jax.Array) -> jax.Array:
    """Q-values (expected Q for QR), or logits for policy objectives, [..., A]."""
    out = apply(spec, params, x)
    return jnp.mean(out, axis=-1) if spec.objective.head == "qr" else out


def features(spec: OfflineSpec, params: Any, x: jax.Array) -> jax.Array:
    """Penultimate activations [..., d]."""
    x = x.astype(jnp.float32)
    return spec.network.apply(params, x if spec.obs_scale == 1.0 else x * spec.obs_scale,
                              method=ValueNetwork.features)  # type: ignore[return-value]


def teacher_outputs(spec: OfflineSpec, teacher_params: Any, x: jax.Array) -> jax.Array:
    """The frozen teacher's Q-values or logits [..., A] (zeros without a teacher)."""
    if spec.teacher is None:
        return jnp.zeros(x.shape[:x.ndim - len(spec.info.obs_shape)] + (spec.num_actions,), jnp.float32)
    return jax.lax.stop_gradient(spec.teacher.output_fn()(teacher_params, x.astype(jnp.float32)))


def example_loss(spec: OfflineSpec, params: Any, target_params: Any, ex: Example) -> jax.Array:
    """The objective's loss on ONE example (batch with `jax.vmap`)."""
    obj = spec.objective
    out = apply(spec, params, ex.tr.obs)
    out_t = apply(spec, target_params, ex.tr.next_obs) if obj.bootstrap else None
    out_online = apply(spec, params, ex.tr.next_obs) if spec.config.objective == "double_dqn" else None
    return obj.loss(spec.config, spec.head, out, out_t, out_online, ex)


def make_examples(spec: OfflineSpec, learner: LearnerState, data: DataState, t: jax.Array,
                  e: jax.Array) -> Example:
    """The examples at slots (t, e) of the dataset (any batch shape)."""
    ds, obj = data.dataset, spec.objective
    tr = replay_lib.gather(ds.replay, t, e)
    t_out = teacher_outputs(spec, data.teacher_params, tr.obs)
    t_next = teacher_outputs(spec, data.teacher_params, tr.next_obs) if obj.teacher_next else jnp.zeros_like(t_out)
    lam = learner.lambda_return[t, e] if learner.lambda_return is not None else jnp.zeros(t.shape, jnp.float32)
    weight = tr.valid & (ds.mc_complete[t, e] if obj.needs_mc and spec.config.objective == "mc_regression" else True)
    return Example(tr=tr, mc_return=ds.mc_return[t, e], lambda_return=lam, teacher_out=t_out, teacher_next=t_next,
                   weight=weight.astype(jnp.float32))


def sample_slots(data: DataState, key: jax.Array, n: int) -> Tuple[jax.Array, jax.Array]:
    """n (t, e) slots drawn uniformly with replacement from the stored transitions."""
    num_envs = data.dataset.replay.data.action.shape[1]
    idx = jax.random.randint(key, (n,), 0, jnp.maximum(replay_lib.size(data.dataset.replay), 1))
    return idx // num_envs, idx % num_envs


def learner_update(spec: OfflineSpec, learner: LearnerState, batch: Example,
                   axis_name: Optional[str] = None) -> Tuple[LearnerState, jax.Array]:
    """One optimizer step on the weighted mean loss of `batch`: (learner, loss before the step)."""

    def batch_loss(params):
        losses = jax.vmap(example_loss, in_axes=(None, None, None, 0))(spec, params, learner.target_params, batch)
        w = batch.weight
        return jnp.sum(losses * w) / jnp.maximum(jnp.sum(w), 1.0)

    params = learner.params
    if axis_name is not None:
        params = jax.lax.pcast(params, axis_name, to="varying")
    loss, grads = jax.value_and_grad(batch_loss)(params)
    if axis_name is not None:
        grads, loss = jax.lax.pmean((grads, loss), axis_name)
    updates, opt_state = spec.optimizer.update(grads, learner.opt_state, learner.params)
    return learner._replace(params=optax.apply_updates(learner.params, updates), opt_state=opt_state), loss


def lambda_returns(spec: OfflineSpec, target_params: Any, dataset: data_lib.OfflineDataset,
                   td_lambda: Optional[jax.Array] = None) -> jax.Array:
    """G^λ [C, E] of the whole dataset from θ⁻ (module docstring), time slot by time slot; λ is
    `td_lambda` (a scalar, traced in λ sweeps) or, if None, the config's."""
    c = spec.config
    lam_value = c.td_lambda if td_lambda is None else td_lambda
    cap, num_envs = dataset.replay.data.action.shape
    env_idx = jnp.arange(num_envs)

    def bootstrap(t):
        tr = replay_lib.gather(dataset.replay, jnp.full((num_envs,), t), env_idx)
        return jnp.max(q_values(spec, target_params, tr.next_obs), axis=-1)

    v = jax.lax.map(bootstrap, jnp.arange(cap), batch_size=min(cap, 64))  # [C, E]
    d = dataset.replay.data
    end = d.done | ~d.valid
    discount = c.gamma * d.discount.astype(jnp.float32) * d.valid
    lam = jnp.where(end, 0.0, lam_value).astype(jnp.float32)
    per_env = jax.vmap(lambda r, g, v_, l: rlax.lambda_returns(r, g, v_, l, stop_target_gradients=True),
                       in_axes=(1, 1, 1, 1), out_axes=1)
    return per_env(d.reward.astype(jnp.float32), discount, v, lam)


# ----------------------------------------------------------------------------------------------------
# The loop.


def init_local(spec: OfflineSpec, key: jax.Array, axis_name: Optional[str]) -> RunnerState:
    """The state of one device: a fresh student, the dataset and the teacher."""
    k_net, k_data = jax.random.split(key)
    dummy = jnp.zeros(spec.info.obs_shape, jnp.float32)
    params = spec.network.init(k_net, dummy)
    dataset = jax.tree.map(jnp.asarray, spec.dataset)
    lam, td_lambda = None, None
    if spec.config.objective == "td_lambda":
        td_lambda = jnp.asarray(spec.config.td_lambda, jnp.float32)
        lam = lambda_returns(spec, params, dataset, td_lambda)
    learner = LearnerState(params=params, target_params=params, opt_state=spec.optimizer.init(params),
                           lambda_return=lam, td_lambda=td_lambda)
    teacher_params = None if spec.teacher is None else jax.tree.map(jnp.asarray, spec.teacher.params)
    if axis_name is not None:
        k_data = jax.random.fold_in(k_data, jax.lax.axis_index(axis_name))
    k_reset, k_base = jax.random.split(k_data)
    env_state = obs = episodes = None
    if spec.env is not None:
        env_state, obs, episodes = core.reset_envs(spec.env, k_reset, spec.env.num_envs)
    return RunnerState(learner, DataState(key=k_base, dataset=dataset, teacher_params=teacher_params,
                                          env_state=env_state, obs=obs, episodes=episodes))


def collect(spec: OfflineSpec, data: DataState, k_act: jax.Array) -> Tuple[DataState, core.EndedEpisodes]:
    """`collect_frequency` ε-greedy vector steps of the teacher, stored in the dataset's buffer."""
    c, env = spec.config, spec.env
    assert env is not None and data.obs is not None and data.episodes is not None  # collect=True
    n = env.num_envs

    def vector_step(data: DataState, t):
        k_eps, k_rand, k_env = jax.random.split(jax.random.fold_in(k_act, t), 3)
        greedy = jnp.argmax(teacher_outputs(spec, data.teacher_params, data.obs), axis=-1)  # type: ignore[arg-type]
        explore = jax.random.uniform(k_eps, (n,)) < c.collect_epsilon
        action = jnp.where(explore, jax.random.randint(k_rand, (n,), 0, env.num_actions), greedy).astype(jnp.int32)
        env_state, step = env.step(data.env_state, k_env, action)
        tr = replay_lib.Transition(obs=data.obs, action=action, reward=step.reward,  # type: ignore[arg-type]
                                   discount=1.0 - step.terminated.astype(jnp.float32), next_obs=step.next_obs,
                                   done=step.terminated | step.truncated, valid=step.valid)
        episodes, ended = core.track_episodes(data.episodes, step, c.gamma)  # type: ignore[arg-type]
        ds = data.dataset._replace(replay=replay_lib.add(data.dataset.replay, tr))
        return data._replace(env_state=env_state, obs=step.obs, episodes=episodes, dataset=ds), ended

    data, ended = jax.lax.scan(vector_step, data, jnp.arange(c.collect_frequency))
    return data, jax.tree.map(jnp.sum, ended)


def td_errors(spec: OfflineSpec, learner: LearnerState, seg: replay_lib.Transition) -> jax.Array:
    """δ = r + γ d maxₐ q⁻(x′, a) − q(x, a) of the student on [T, E] consecutive transitions."""
    q = q_values(spec, learner.params, seg.obs)
    q_next = q_values(spec, learner.target_params, seg.next_obs)
    taken = jnp.take_along_axis(q, seg.action[..., None], axis=-1)[..., 0]
    return seg.reward + spec.config.gamma * seg.discount * jnp.max(q_next, axis=-1) - taken


def rho_fns(spec: OfflineSpec, learner: LearnerState) -> Tuple[Callable, Callable]:
    """(value_fn, target_fn) of the ρ′-term probe for ONE example: f = q_θ(x, a) and the objective's
    target. Regression objectives (q_regression, qa_regression, mc_regression, td_star, td_lambda): the
    regression target, which ignores θ (ρ′_reg, eq. 16). q_learning / double_dqn: the loss's TD target of
    the frozen θ⁻, r + γ d maxₐ′ q⁻(x′, a′) (Double DQN: q⁻(x′, argmaxₐ′ q_θ(x′, a′))), which ignores θ
    too; with `probe_rho_moving_target` the target r + γ d maxₐ′ q_θ(x′, a′) moves with θ (Bengio's
    ρ′_TD, eq. 17). The terms are those of J = ½(f − y)² whatever the objective's own scale."""
    c = spec.config
    regression = RHO_TARGETS[c.objective]

    def value_fn(p, ex):
        return q_values(spec, p, ex.tr.obs)[ex.tr.action]

    def target_fn(p, ex):
        if regression is not None:
            return jax.lax.stop_gradient(regression(c, ex))
        if c.probe_rho_moving_target:
            nxt = jnp.max(q_values(spec, p, ex.tr.next_obs))
        elif c.objective == "double_dqn":
            a_star = jnp.argmax(jax.lax.stop_gradient(q_values(spec, p, ex.tr.next_obs)))
            nxt = q_values(spec, learner.target_params, ex.tr.next_obs)[a_star]
        else:
            nxt = jnp.max(q_values(spec, learner.target_params, ex.tr.next_obs))
        return ex.tr.reward + c.gamma * ex.tr.discount * nxt

    return value_fn, target_fn


def offset_samples(spec: OfflineSpec, learner: LearnerState, data: DataState,
                   key: jax.Array) -> Tuple[Example, Example, jax.Array]:
    """The offset probes' inputs: N update examples drawn among the usable slots
    (`replay.sample_distinct_slots(dataset.replay, key, N, where=usable)`), their neighbours at offsets
    −X..X ([N, 2X+1]) and the mask of `replay.neighbours`, also False where a neighbour has weight 0
    (mc_regression without a complete return)."""
    c, s = spec.config, spec.probe_settings
    replay = data.dataset.replay
    usable = _usable(c, data.dataset)
    t, e = replay_lib.sample_distinct_slots(replay, key, s.offset_samples, where=usable)
    _, mask = replay_lib.neighbours(replay, t, e, s.max_offset)
    cap = replay.data.action.shape[0]
    slots = (t[:, None] + jnp.arange(-s.max_offset, s.max_offset + 1)[None, :]) % cap
    ee = jnp.broadcast_to(e[:, None], slots.shape)
    mask = mask & usable[slots, ee]
    return make_examples(spec, learner, data, t, e), make_examples(spec, learner, data, slots, ee), mask


def probe(spec: OfflineSpec, learner: LearnerState, data: DataState, key: jax.Array,
          axis_name: Optional[str]) -> probes_lib.ProbeMetrics:
    """The online loops' probes for the student, with its own optimizer state (Lyle App. B.1): update
    rank (value update matrix of maxₐ q for value heads; the policy update matrix for logits heads),
    the same for a fresh student, srank and dormant fraction of the features, interference of the
    scalar output, and (value heads) the TD-error sign variance on consecutive dataset steps; and the
    along-trajectory probes that are on (`probes.trajectory_probes`: the per-example loss with the
    current θ⁻, the update samples of `offset_samples(..., fold_in(key, 1))`, `rho_fns`)."""
    c, s = spec.config, spec.probe_settings
    k_batch, k_fresh = jax.random.split(key)
    cap, num_envs = data.dataset.replay.data.action.shape
    valid = data.dataset.replay.data.valid.reshape(-1)
    u = jax.random.uniform(k_batch, (cap * num_envs,))
    _, idx = jax.lax.top_k(jnp.where(valid, u, u - 2.0), c.probe_k)  # k distinct transitions, valid ones first
    batch = make_examples(spec, learner, data, idx // num_envs, idx % num_envs)
    fresh = spec.network.init(k_fresh, jnp.zeros(spec.info.obs_shape, jnp.float32))
    xs = batch.tr.obs

    def loss_with(target):
        return lambda p, ex: example_loss(spec, p, target, ex)

    policy = spec.objective.head == "logits"

    def scalar(p, x):
        return jnp.max(q_values(spec, p, x))

    def matrix(loss_fn, params, opt_state):
        if policy:
            return policy_update_matrix(loss_fn, functools.partial(q_values, spec), spec.optimizer, params, opt_state,
                                        batch, xs, chunk_size=s.chunk_size)
        return update_matrix(loss_fn, scalar, spec.optimizer, params, opt_state, batch, xs, chunk_size=s.chunk_size)

    a = matrix(loss_with(learner.target_params), learner.params, learner.opt_state)
    a0 = matrix(loss_with(fresh), fresh, spec.optimizer.init(fresh))
    phi = features(spec, learner.params, xs).reshape(c.probe_k, -1)
    g = gram_matrix(scalar, learner.params, xs, chunk_size=s.chunk_size)
    diag = jnp.sqrt(jnp.clip(jnp.diag(g), 1e-30))
    nan = jnp.full((), jnp.nan, jnp.float32)
    if policy:
        sign_var = nan
    else:
        seg = replay_lib.recent(data.dataset.replay, c.probe_sign_steps)
        sign_var = probes_lib.masked_sign_variance(td_errors(spec, learner, seg), seg.done | ~seg.valid,
                                                   s.sign_window)
    offsets: dict = {}
    if s.max_offset > 0:
        update_batch, nb, mask = offset_samples(spec, learner, data, jax.random.fold_in(key, 1))
        offsets = dict(offset_batch=update_batch, offset_neighbours=nb, offset_mask=mask)
    value_fn, target_fn = rho_fns(spec, learner) if s.rho_terms else (None, None)
    traj = probes_lib.trajectory_probes(s, loss_fn=loss_with(learner.target_params), optimizer=spec.optimizer,
                                        params=learner.params, opt_state=learner.opt_state, phi=phi,
                                        value_fn=value_fn, target_fn=target_fn, rho_batch=batch, **offsets)
    m = probes_lib.ProbeMetrics(
        probed=jnp.ones((), bool), update_rank=core.rank_or_nan(update_rank(a, s.rank_eps)),
        update_rank_fresh=core.rank_or_nan(update_rank(a0, s.rank_eps)),
        srank=core.rank_or_nan(srank(phi, s.srank_delta)),
        dormant_fraction=jnp.asarray(dormant_fraction(phi, s.dormant_tau), jnp.float32),
        interference=probes_lib.mean_off_diagonal(g).astype(jnp.float32),
        interference_cos=probes_lib.mean_off_diagonal(g / (diag[:, None] * diag[None, :])).astype(jnp.float32),
        td_sign_variance=jnp.asarray(sign_var, jnp.float32), **traj._asdict())
    if axis_name is None:
        return m
    return probes_lib.ProbeMetrics(m.probed, *jax.lax.pmean(tuple(m[1:]), axis_name))


def iteration(spec: OfflineSpec, state: RunnerState, i: jax.Array, axis_name: Optional[str],
              phase: Optional[Tuple[bool, ...]] = None) -> Tuple[RunnerState, OfflineMetrics]:
    """Iteration i: (collect), sample, one update, target (and λ-return) refresh, probes."""
    del phase
    c = spec.config
    learner, data = state
    k_act, k_sample, k_probe = jax.random.split(jax.random.fold_in(data.key, i), 3)
    ended = core.EndedEpisodes(*(jnp.zeros((), x) for x in (jnp.float32, jnp.float32, jnp.int32)))
    if spec.env is not None:
        data, ended = collect(spec, data, k_act)
    t, e = sample_slots(data, k_sample, spec.batch_size)
    batch = make_examples(spec, learner, data, t, e)
    out = q_values(spec, learner.params, batch.tr.obs)
    output_mean = jnp.mean(jnp.max(out, axis=-1))
    agreement = (jnp.mean(jnp.argmax(out, -1) == jnp.argmax(batch.teacher_out, -1)).astype(jnp.float32)
                 if spec.teacher is not None else jnp.full((), jnp.nan, jnp.float32))
    if axis_name is not None:
        output_mean, agreement = jax.lax.pmean((output_mean, agreement), axis_name)
    learner, loss = learner_update(spec, learner, batch, axis_name)
    updates = i + 1
    if spec.objective.bootstrap and c.target_ema > 0:
        learner = learner._replace(
            target_params=optax.incremental_update(learner.params, learner.target_params, c.target_ema))
    elif spec.objective.bootstrap:
        refresh = updates % c.target_update_interval == 0

        def do_refresh(l: LearnerState) -> LearnerState:
            lam = (lambda_returns(spec, l.params, data.dataset, l.td_lambda) if l.lambda_return is not None
                   else None)
            return l._replace(target_params=l.params, lambda_return=lam)

        learner = jax.lax.cond(refresh, do_refresh, lambda l: l, learner)
    empty = functools.partial(probes_lib.empty_probe_metrics, spec.probe_settings)
    probe_metrics = empty()
    if c.probe_interval > 0:
        probe_metrics = jax.lax.cond(updates % c.probe_interval == 0,
                                     lambda: probe(spec, learner, data, k_probe, axis_name), empty)
    metrics = OfflineMetrics(
        updates=updates.astype(jnp.int32), loss=loss.astype(jnp.float32),
        output_mean=output_mean.astype(jnp.float32), agreement=agreement, return_sum=ended.return_sum,
        discounted_return_sum=ended.discounted_return_sum, return_count=ended.count, probes=probe_metrics)
    return RunnerState(learner, data), metrics


# ----------------------------------------------------------------------------------------------------
# The agent; evaluation.


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class OfflineAgent(core.Agent):
    """`core.Agent` for the offline loop (`make_agent(OfflineConfig(...))`): `init`, `run`, plus

      example_loss(params, target_params, example) -> scalar, ONE example;
      make_examples(learner, data, t, e), learner_update(learner, batch, axis_name=None);
      q_values(params, xs) -> [..., A] (logits for policy objectives), features(params, xs);
      teacher, dataset, info, network, optimizer as properties.
    """

    def reattach_env(self, state: RunnerState) -> RunnerState:
        if self.spec.env is None or self.spec.env.jittable:
            return state
        return state._replace(data=core.reattach(state.data, self.spec.env))

    @property
    def env(self) -> Any:
        return self.spec.env

    example_loss = core.bound(example_loss)
    make_examples = core.bound(make_examples)
    learner_update = core.bound(learner_update)
    q_values = core.bound(q_values)
    features = core.bound(features)
    hyperparams_as_data = ("lr", "td_lambda")

    def set_hyperparams(self, state: RunnerState, **values: Any) -> RunnerState:
        """`state` (from `init`) with `lr` (> 0) and, for objective="td_lambda", `td_lambda` (λ ∈ [0, 1])
        set as data: the learning rate lives in the optimizer's state, λ in the learner's, and the
        initial G^λ are recomputed with it, so the run equals one configured with these values while
        runs that differ only in them share one program (vmapped λ and learning-rate sweeps)."""
        core._reject_hyperparams(self, values, self.hyperparams_as_data)
        if "td_lambda" in values and self.config.objective != "td_lambda":
            raise ValueError(f"set_hyperparams: td_lambda is only data for objective='td_lambda', not "
                             f"{self.config.objective!r}. Fix: set OfflineConfig.objective='td_lambda'.")
        learner = state.learner
        if "lr" in values:
            core.check_hyperparam_values("lr", values["lr"], 0.0, np.inf, closed_low=False)
            learner = learner._replace(opt_state=core.set_learning_rate(learner.opt_state, values["lr"]))
        if "td_lambda" in values:
            core.check_hyperparam_values("td_lambda", values["td_lambda"], 0.0, 1.0, closed_low=True)
            lam = jnp.asarray(values["td_lambda"], jnp.float32)
            learner = learner._replace(td_lambda=lam, lambda_return=lambda_returns(
                self.spec, learner.target_params, state.data.dataset, lam))
        return state._replace(learner=learner)

    teacher = property(lambda self: self.spec.teacher)
    dataset = property(lambda self: self.spec.dataset)
    info = property(lambda self: self.spec.info)
    network = property(lambda self: self.spec.network)
    optimizer = property(lambda self: self.spec.optimizer)
    objective = property(lambda self: self.spec.objective)


def _constant_metrics(spec: OfflineSpec) -> Tuple[str, ...]:
    """The metric fields that are the same constant at every iteration of this config."""
    fields: Tuple[str, ...] = () if spec.config.probe_interval > 0 else ("probes",)
    if spec.env is None:  # the teacher does not collect
        fields += ("return_sum", "discounted_return_sum", "return_count")
    if spec.teacher is None:
        fields += ("agreement",)
    return fields


def _iteration_without_constants(spec: OfflineSpec, state: RunnerState, i: jax.Array, axis_name: Optional[str],
                                 phase: Optional[Tuple[bool, ...]] = None) -> Tuple[RunnerState, OfflineMetrics]:
    """`iteration` with its constant metric fields set to None, so the loop does not stack them (on
    XLA:CPU each stacked scalar costs a buffer write per iteration, ~3 % of a small MLP's update)."""
    state, metrics = iteration(spec, state, i, axis_name, phase)
    dropped: dict[str, Any] = {f: None for f in _constant_metrics(spec)}
    return state, metrics._replace(**dropped)


def _with_constant_metrics(spec: OfflineSpec, metrics: OfflineMetrics, length: int) -> OfflineMetrics:
    """The fields `_iteration_without_constants` dropped, stacked [length] after the loop."""
    nan, zero = jnp.full((length,), jnp.nan, jnp.float32), jnp.zeros((length,), jnp.float32)
    values = {"probes": jax.tree.map(lambda x: jnp.broadcast_to(x, (length,) + x.shape),
                                     probes_lib.empty_probe_metrics(spec.probe_settings)),
              "return_sum": zero, "discounted_return_sum": zero, "return_count": jnp.zeros((length,), jnp.int32),
              "agreement": nan}
    return metrics._replace(**{f: values[f] for f in _constant_metrics(spec)})


def make_agent(config: OfflineConfig) -> OfflineAgent:
    """Validates `config` (ValueError naming the field and the fix), loads the dataset and the teacher,
    and builds the agent (`tdjax.train.make_agent` dispatches here for an OfflineConfig)."""
    spec = build_spec(config)
    init, run_lean = core.build_loop(spec, init_local, _iteration_without_constants, per_device=(), phase_size=0)

    def run(state: RunnerState, start: Any, length: int,
            phase: Optional[Tuple[bool, ...]] = None) -> Tuple[RunnerState, OfflineMetrics]:
        state, metrics = run_lean(state, start, length, phase)
        return state, _with_constant_metrics(spec, metrics, length)

    return OfflineAgent(spec, init, run)


def summarise(metrics: OfflineMetrics) -> dict:
    """Scalars summarising a stretch of iterations of ONE seed (fields stacked [T])."""
    m = jax.tree.map(np.asarray, metrics)
    count = int(m.return_count.sum())
    out = {"updates": int(m.updates[-1]), "loss": float(m.loss.mean()), "output_mean": float(m.output_mean.mean()),
           "agreement": float(np.nanmean(m.agreement)) if np.isfinite(m.agreement).any() else float("nan"),
           "teacher_episodes": count,
           "teacher_return_mean": float(m.return_sum.sum() / count) if count else float("nan")}
    return dict(out, **core.probe_means(m.probes))


def evaluate_policy(policy_fn: Callable[[Any, jax.Array], jax.Array], params: Any, env: envs_lib.VecEnv,
                    key: jax.Array, *, num_steps: int, epsilon: float = 0.01, sample: bool = False,
                    gamma: float = 0.99) -> Tuple[jax.Array, jax.Array]:
    """Mean return of the episodes that end within `num_steps` vector steps of `env`, acting ε-greedily
    on `policy_fn(params, obs) -> [E, A]` (argmax, or a sample of the softmax if `sample`).

    Lyle et al. 2022 §6.1: "performance is measured by following an ε-greedy policy in the training
    environment, with ε = 0.01". Returns (mean return, number of episodes); NaN when none ended.
    Jittable for gymnax environments."""
    if not 0.0 <= float(epsilon) <= 1.0:
        raise ValueError(f"evaluate_policy: epsilon={epsilon} must lie in [0, 1] (Lyle et al. use 0.01).")
    n = env.num_envs
    k_reset, k_run = jax.random.split(key)
    env_state, obs, episodes = core.reset_envs(env, k_reset, n)

    def step(carry, t):
        env_state, obs, episodes, total = carry
        k_pol, k_eps, k_rand, k_env = jax.random.split(jax.random.fold_in(k_run, t), 4)
        out = policy_fn(params, obs)
        action = jax.random.categorical(k_pol, out) if sample else jnp.argmax(out, -1)
        explore = jax.random.uniform(k_eps, (n,)) < epsilon
        action = jnp.where(explore, jax.random.randint(k_rand, (n,), 0, env.num_actions), action).astype(jnp.int32)
        env_state, s = env.step(env_state, k_env, action)
        episodes, ended = core.track_episodes(episodes, s, gamma)
        ended = jax.tree.map(jnp.sum, ended)
        total = jax.tree.map(jnp.add, total, ended)
        return (env_state, s.obs, episodes, total), None

    zero = core.EndedEpisodes(*(jnp.zeros((), x) for x in (jnp.float32, jnp.float32, jnp.int32)))
    (_, _, _, total), _ = jax.lax.scan(step, (env_state, obs, episodes, zero), jnp.arange(num_steps))
    mean = jnp.where(total.count > 0, total.return_sum / jnp.maximum(total.count, 1), jnp.nan)
    return mean, total.count


core.register_family(OfflineConfig, core.Family("offline", make_agent, summarise, core.mean_return))
