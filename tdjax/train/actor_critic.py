"""One actor-critic training loop for PPO, DAAC and REINFORCE: `tdjax.train.make_train(config) -> train(key)`.

The three agents share everything (rollouts, GAE, minibatch epochs, optimizer, probes, evaluation on
held-out levels) and differ only in what `ALGOS` says: the network layout, the per-example policy
surrogate, and the update schedule.

  ========= ============================ ========================== ======================================
  algo      networks (`tdjax.networks`)  actor loss per example     schedule per iteration
  ========= ============================ ========================== ======================================
  ppo       SharedActorCritic: one trunk ppo_clip − c_H·H + c_V·L_V  num_epochs × num_minibatches steps
            → (logits, V)                (one loss, one optimizer)   on the joint loss
  daac      Actor(advantage_head) →      ppo_clip − c_H·H            E_π epochs on the actor; every N_π
            (logits, A(x,·)); Critic → V + α_A·(A_θ(x,a) − Â)²      iterations E_V epochs on the critic
  reinforce Actor → logits; Critic → V   −log π(a|x)·Â − c_H·H       one step on the whole rollout for
                                         (Â with λ = 1)             each network
  ========= ============================ ========================== ======================================

L_V = ½ max((V − G)², (V_clip − G)²) with V_clip = V_old + clip(V − V_old, ±clip_eps) (or ½(V − G)²
with `clip_value_loss=False`), G = Â + V_old the λ-return. DAAC and REINFORCE have no shared
parameters: the actor and the critic have separate parameters AND separate optimizer states, so no
TD gradient ever reaches the actor (Raileanu & Fergus 2021; Lyle et al. 2022, §5.2). REINFORCE is
REINFORCE with a learned baseline: Âₜ = Gₜ − V(xₜ), Gₜ the Monte-Carlo return inside the rollout,
bootstrapped from V only where the rollout cuts an episode (GAE with λ = 1).

An ITERATION is
  1. a rollout: `num_steps` steps of all `num_envs` environments (`lax.scan`), actions sampled from
     the current policy, recording log μ(a|x) and V_old(x);
  2. advantages by `tdjax.generalized_advantage_estimation` per environment (vmapped), after
     (optionally) scaling rewards by a running std of discounted returns (`normalize_rewards`);
     advantages normalised over the rollout (`normalize_advantages`);
  3. the probes when i % probe_interval == 0, on the rollout, BEFORE the update (`lax.cond`);
  4. the update (the schedule above): each epoch permutes the rollout's time steps and cuts them
     into `num_minibatches` minibatches of `num_steps / num_minibatches` time steps × all
     environments; one optimizer step per minibatch on the weighted mean loss;
  5. evaluation on the test environments when i % eval_interval == 0 (`lax.cond`).

Episode ends: dₜ₊₁ = 0 when an episode terminated OR was truncated, so traces and bootstraps stop;
a truncated step's reward gets γ·V(final observation) added, so time limits do not look like
terminal states. envpool's reset steps (`EnvStep.valid` False) are not transitions: their weight in
every loss, normalisation and probe is 0, and the episode end before them already cut the trace.

Random numbers: iteration i uses `fold_in(actor.key, i)` (acting, environments, probe sample; per
device) and `fold_in(learner.key, i)` (minibatch permutations, fresh probe network; replicated), never
a carried split, so a run cut into chunks (`train_with_checkpoints`) is bit-identical to one that was
not, and any iteration's rollout, update or probe can be recomputed outside the loop (`ActorCriticAgent`
exposes the pieces). The iteration index is scan data that `jax.vmap` over seeds does not batch, so
the probe and evaluation `lax.cond`s stay real branches: `jax.jit(jax.vmap(make_train(config)))(keys)`.

With `num_devices > 1` the run is data-parallel over the mesh axis "data" (`tdjax.train.mesh`): each
device steps `num_envs / num_devices` environments, minibatch m of an epoch is the SAME time steps on
every device (the permutation comes from the replicated learner key), losses are normalised by the
global (psum-ed) weight and gradients psum-ed, and advantage / reward statistics are psum-ed, so every
update equals the single-device update on the union of the devices' data. The learner state is
replicated; actor and evaluator leaves get a leading [num_devices] axis.

Generalisation (Lyle et al. 2022, eq. 6): the training environments are ProcGen levels
[start_level, start_level + num_levels); the test environments, stepped with the current (sampled)
policy for `eval_steps` steps every `eval_interval` iterations, are the disjoint levels
[test_start_level, test_start_level + test_num_levels). For gymnax games the test environments are
the same game with other random keys; for Atari, another envpool seed; for a registered environment
(`tdjax.envs.register_env`), the options `tdjax.envs.test_env_options` derives from `env_options` (the
masked-image tasks: images of the data set's test split, disjoint from the training images). The
metrics hold returns and discounted returns Σₜ γᵗ rₜ of the episodes that ended, on both sides; `summarise` and
`generalization_gap` turn them into the gap of eq. 6.

Here: config, algorithm table, state and metric types, spec, agent. The loop's steps are module-level
functions of an `ActorCriticSpec` in `tdjax.train.actor_critic_update`; what every family shares
(episode bookkeeping, devices, the agent interface) is in `tdjax.train.core`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tdjax import envs as envs_lib
from tdjax._src.losses import ppo_clip_loss, reinforce_loss
from tdjax.networks.actor_critic import Actor, Critic, SharedActorCritic
from tdjax.train import actor_critic_update as update
from tdjax.train import core
from tdjax.train.validation import check_choice, require

__all__ = [
    "ActorCriticConfig",
    "Algo",
    "ALGOS",
    "RunningStats",
    "LearnerState",
    "ActorState",
    "EvalState",
    "RunnerState",
    "Batch",
    "ActorCriticProbes",
    "empty_probes",
    "ActorCriticMetrics",
    "ActorCriticSpec",
    "ActorCriticAgent",
    "build_spec",
    "make_agent",
    "summarise",
    "generalization_gap",
    "ppo_procgen_paper_config",
    "daac_procgen_paper_config",
]

_MAX_LEVEL = 2**31 - 1  # ProcGen level seeds are C ints


# ----------------------------------------------------------------------------------------------------
# Configuration.


@dataclasses.dataclass(frozen=True)
class ActorCriticConfig:
    """Everything an actor-critic run depends on. Frozen: derive variants with `config.replace(...)`.

    Counting units: `total_steps` counts environment steps over all environments; `num_steps` and
    `eval_steps` count vector steps (each steps every environment once); `probe_k` counts transitions
    (per device); `probe_interval`, `eval_interval`, `daac_value_freq` and `checkpoint_interval` count
    iterations (one rollout + one update each, see the module docstring).
    """

    env: str = "CartPole-v1"  # a gymnax or registered name ("MaskedImage-digits") or an envpool id ("BigfishEasy-v0")
    # envpool only (Atari, ProcGen): seed, how it is stepped inside jit, extra envpool.make options
    env_seed: int = 0  # envpool only: the environments' seed (test environments: env_seed + 1)
    env_backend: str = "xla"  # "xla" (envpool's XLA custom call) | "host" (ordered io_callback)
    env_options: Tuple[Tuple[str, Any], ...] = ()  # e.g. (("distribution_mode", "easy"),)
    # ProcGen levels (ignored for other games): train on [start_level, start_level + num_levels),
    # test on [test_start_level, test_start_level + test_num_levels), which must not overlap
    num_levels: int = 200  # ProcGen: training levels [start_level, start_level + num_levels)
    start_level: int = 0  # ProcGen: first training level
    test_start_level: Optional[int] = None  # None: start_level + num_levels (right after the training levels)
    test_num_levels: int = 100_000  # ProcGen: held-out test levels
    algo: str = "ppo"  # "ppo" | "daac" | "reinforce"
    network: str = "auto"  # torso: "auto" | "mlp" | "minatar_cnn" | "nature_cnn" | "impala_cnn" | "bengio_cnn"
    hidden: Tuple[int, ...] = (64, 64)  # MLP torso widths (network="mlp")
    cnn_width: int = 16  # n_h of the Bengio conv net (network="bengio_cnn"; Bengio et al. 2020 App. B.1)
    cnn_extra_layers: int = 0  # n_L: extra 3×3 conv layers of that net (network="bengio_cnn")
    num_envs: int = 8  # training environments stepped together (split over num_devices)
    num_steps: int = 128  # rollout length: vector steps per iteration
    total_steps: int = 100_000  # length of the run
    gamma: float = 0.99  # discount γ
    gae_lambda: float = 0.95  # GAE λ (REINFORCE always uses λ = 1)
    normalize_advantages: bool = True  # Â ← (Â − mean) / (std + 1e-8) over each rollout
    normalize_rewards: bool = False  # r ← clip(r / std(discounted return), ±10), running std (baselines' VecNormalize)
    clip_eps: float = 0.2  # PPO ratio clipping ε, also the value clipping radius
    clip_value_loss: bool = True  # L_V = ½ max((V − G)², (V_clip − G)²) instead of ½ (V − G)²
    entropy_coef: float = 0.01  # c_H
    value_coef: float = 0.5  # c_V (PPO's joint loss; DAAC and REINFORCE train the critic on L_V alone)
    # optimizer: Adam, optional global-norm clipping (per network)
    lr: float = 5e-4  # Adam learning rate
    adam_eps: float = 1e-5  # Adam's ε
    max_grad_norm: Optional[float] = 0.5  # None: no clipping
    # PPO's schedule
    num_epochs: int = 3  # PPO: epochs over each rollout
    num_minibatches: int = 8  # per epoch (PPO and DAAC); must divide num_steps
    # DAAC (Raileanu & Fergus 2021, Algorithm 1)
    daac_policy_epochs: int = 1  # E_π: actor epochs per iteration
    daac_value_epochs: int = 9  # E_V: critic epochs when the critic is trained
    daac_value_freq: int = 1  # N_π: the critic is trained at iterations i with i % N_π == 0
    daac_advantage_coef: float = 0.25  # α_A: weight of the advantage regression in the actor loss
    # probes (Lyle et al. 2022, §5.2, Fig. 4, App. B.1)
    probe_interval: int = 0  # iterations between probes; 0 disables them
    probe_k: int = 32  # transitions of the update matrices (sampled from the rollout, per device)
    probe_rank_eps: float = 0.1  # update rank: singular values kept until 1 − ε of the spectrum (Lyle App. B.1)
    probe_srank_delta: float = 0.01  # srank_δ of the features (Kumar et al. 2021)
    probe_fresh: bool = True  # also probe a freshly initialised network (the paper's baseline)
    probe_chunk_size: Optional[int] = None  # examples per vmapped chunk inside the update matrices
    # evaluation on the test environments (generalisation gap, eq. 6)
    eval_interval: int = 0  # iterations between evaluations; 0 disables them
    eval_num_envs: int = 8  # test environments (split over num_devices)
    eval_steps: int = 128  # vector steps of the test environments per evaluation
    # checkpointing (train_with_checkpoints)
    checkpoint_interval: int = 100  # iterations per jitted chunk / checkpoint
    # devices (tdjax.train.mesh)
    num_devices: int = 1  # devices ONE run is split over (mesh axis "data")
    seed_devices: int = 1  # devices the seeds of tdjax.train.train_seeds are spread over (mesh axis "seeds")
    # loop structure, not maths: "host" (the epochs × minibatches as straight-line code, one jitted
    # iteration per call) is faster for CNN agents on XLA:CPU, "scan" everywhere else
    loop: str = "scan"  # "scan" (one XLA program) | "host" (the CPU loop structure, tdjax.train.host_loop)

    def replace(self, **changes: Any) -> "ActorCriticConfig":
        """A copy with `changes` applied (the config itself is never mutated)."""
        return dataclasses.replace(self, **changes)


def ppo_procgen_paper_config(game: str = "bigfish", **changes: Any) -> ActorCriticConfig:
    """PPO on ProcGen at the scale of Lyle et al. 2022, Fig. 4 (hours on a GPU, not for tests).

    Lyle et al. (App. B.2) use "the same hyperparameters and implementation as Raileanu and Fergus
    (2021)". Those are the defaults of Raileanu & Fergus's code (github.com/rraileanu/idaac,
    `ppo_daac_idaac/arguments.py`; PPO is run with `--ppo_epoch 3`), matching Cobbe et al. 2020's PPO:
    25M environment steps, 64 environments × 256 steps per rollout, γ = 0.999, GAE λ = 0.95,
    Adam (lr 5e-4, ε 1e-5), 3 epochs of 8 minibatches, clip 0.2, entropy 0.01, value coefficient 0.5,
    gradient norm 0.5, clipped value loss, reward normalisation, IMPALA CNN (dense 256), easy mode.
    Training levels: 10, as stated in Lyle et al. §5.2 (Raileanu & Fergus train on 200); the test levels
    are the next 100,000 (disjoint, standing in for "the full distribution").

    Probes: every 50 iterations (≈ 0.8M steps, ~30 points per run) on k = 64 rollout transitions;
    evaluation every 10 iterations, 64 test environments × 256 steps.

    Args:
      game: a ProcGen game ("bigfish", "heist", "miner", ...) or an envpool id ("BigfishEasy-v0").
      **changes: fields to override.
    """
    cfg = ActorCriticConfig(
        env=envs_lib.procgen_id(game), num_levels=10, start_level=0, test_start_level=None, test_num_levels=100_000,
        algo="ppo", network="impala_cnn", num_envs=64, num_steps=256, total_steps=25_000_000,
        gamma=0.999, gae_lambda=0.95, normalize_advantages=True, normalize_rewards=True, clip_eps=0.2,
        clip_value_loss=True, entropy_coef=0.01, value_coef=0.5, lr=5e-4, adam_eps=1e-5, max_grad_norm=0.5,
        num_epochs=3, num_minibatches=8, probe_interval=50, probe_k=64, eval_interval=10, eval_num_envs=64,
        eval_steps=256, checkpoint_interval=50,
    )
    return cfg.replace(**changes)


def daac_procgen_paper_config(game: str = "bigfish", **changes: Any) -> ActorCriticConfig:
    """DAAC on ProcGen at the scale of Lyle et al. 2022, Fig. 4: `ppo_procgen_paper_config` with
    Raileanu & Fergus's DAAC defaults (their `arguments.py`): E_π = 1 policy epoch, E_V = 9 value
    epochs, the critic trained every N_π = 1 iteration, advantage coefficient α_A = 0.25. (Their
    per-game tuned values, `--use_best_hps`, are not reproduced; pass them as `changes`.)"""
    cfg = ppo_procgen_paper_config(game).replace(
        algo="daac", daac_policy_epochs=1, daac_value_epochs=9, daac_value_freq=1, daac_advantage_coef=0.25)
    return cfg.replace(**changes)


# ----------------------------------------------------------------------------------------------------
# The algorithm table.


class Algo(NamedTuple):
    """What distinguishes one actor-critic agent from another."""

    shared: bool  # one trunk and one optimizer for π and V (PPO), else separate Actor / Critic
    advantage_head: bool  # the actor also predicts A(x, ·), regressed on Â (DAAC)
    # surrogate(config, logits [A], a [], log μ(a|x) [], Â []) -> scalar, for ONE example
    surrogate: Callable[..., jax.Array]
    policy_epochs: Callable[[ActorCriticConfig], int]  # epochs on the actor (PPO: on the joint loss)
    value_epochs: Callable[[ActorCriticConfig], int]  # epochs on a separate critic
    value_freq: Callable[[ActorCriticConfig], int]  # a separate critic is trained when i % value_freq == 0
    num_minibatches: Callable[[ActorCriticConfig], int]  # per epoch, both fits
    gae_lambda: Callable[[ActorCriticConfig], float]


def _ppo_surrogate(c, logits, a, logp_old, adv):
    return ppo_clip_loss(logits, a, logp_old, adv, epsilon=float(c.clip_eps))


def _reinforce_surrogate(c, logits, a, logp_old, adv):
    return reinforce_loss(logits, a, adv)


ALGOS: Dict[str, Algo] = {
    "ppo": Algo(True, False, _ppo_surrogate, lambda c: c.num_epochs, lambda c: c.num_epochs, lambda c: 1,
                lambda c: c.num_minibatches, lambda c: c.gae_lambda),
    "daac": Algo(False, True, _ppo_surrogate, lambda c: c.daac_policy_epochs, lambda c: c.daac_value_epochs,
                 lambda c: c.daac_value_freq, lambda c: c.num_minibatches, lambda c: c.gae_lambda),
    "reinforce": Algo(False, False, _reinforce_surrogate, lambda c: 1, lambda c: 1, lambda c: 1, lambda c: 1,
                      lambda c: 1.0),
}
"""algo name → `Algo`. Add an entry to add an agent; the loop does not change."""


# ----------------------------------------------------------------------------------------------------
# State, batches and metrics.


class RunningStats(NamedTuple):
    """Running mean and variance of the discounted return (for `normalize_rewards`). Replicated."""

    count: jax.Array  # type: ignore[assignment]  # shape=(), float32. Samples seen (starts at 1e-4, as baselines' RunningMeanStd).
    mean: jax.Array  # shape=(), float32.
    var: jax.Array  # shape=(), float32.


class LearnerState(NamedTuple):
    """Replicated across devices. `params` and `opt_state` are dicts keyed by network: {"shared"} for
    PPO, {"actor", "critic"} for DAAC and REINFORCE (separate optimizer states)."""

    params: Dict[str, Any]  # network name → flax params.
    opt_state: Dict[str, Any]  # network name → optax state of that network's optimizer.
    key: jax.Array  # shape=(), typed PRNG key. Iteration i: fold_in(key, i) (minibatches, fresh probe net).
    reward_stats: RunningStats


class ActorState(NamedTuple):
    """Per device (a leading [num_devices] axis on every leaf when num_devices > 1)."""

    key: jax.Array  # shape=(), typed PRNG key. Iteration i: fold_in(key, i) (actions, envs, probe sample).
    env_state: Any  # VecEnv state: gymnax leaves [E, ...] (E = num_envs / num_devices); envpool handle.
    obs: jax.Array  # shape=[E, *obs_shape], float32. Current observations.
    episodes: core.EpisodeStats  # [E] running episode statistics (unclipped reward, for logging).
    norm_return: jax.Array  # shape=[E], float32. Discounted return for reward normalisation.


class EvalState(NamedTuple):
    """The test environments (per device, like ActorState)."""

    key: jax.Array  # shape=(), typed PRNG key. Evaluation at iteration i: fold_in(key, i).
    env_state: Any  # VecEnv state of the eval_num_envs / num_devices test environments.
    obs: jax.Array  # shape=[E_test, *obs_shape], float32.
    episodes: core.EpisodeStats  # [E_test] running episode statistics.


class RunnerState(NamedTuple):
    learner: LearnerState
    actor: ActorState
    evaluator: Optional[EvalState]  # None when eval_interval == 0


class Batch(NamedTuple):
    """Training examples of one rollout: leaves [T, E, ...] (or [k, ...] for a probe sample)."""

    obs: jax.Array  # [..., *obs_shape], env.obs_storage_dtype. xₜ.
    action: jax.Array  # [...], int32. aₜ ~ μ(·|xₜ).
    logp: jax.Array  # [...], float32. log μ(aₜ|xₜ), the behaviour policy's log-probability.
    value: jax.Array  # [...], float32. V_old(xₜ), the critic when acting.
    advantage: jax.Array  # [...], float32. Âₜ as the actor sees it (normalised if configured).
    target: jax.Array  # [...], float32. Gₜ = Âₜ(raw) + V_old(xₜ), the critic's λ-return target.
    weight: jax.Array  # [...], float32. 1 for transitions, 0 for envpool's reset steps.


class ActorCriticProbes(NamedTuple):
    """One probe (Lyle et al. 2022, Fig. 4). Float32 scalars; NaN where no probe was taken or a
    quantity was invalid (e.g. a non-finite update matrix). For PPO, actor and critic are the same
    shared network (probed with the policy loss and the value loss respectively)."""

    probed: jax.Array  # shape=(), bool.
    actor_update_rank: jax.Array  # shape=(), float32. Rank of the policy update matrix Aᵢⱼ = ‖p_θ(xⱼ) − p_θᵢ(xⱼ)‖.
    critic_update_rank: jax.Array  # shape=(), float32. Rank of the value update matrix Aᵢⱼ = V_θᵢ(xⱼ) − V_θ(xⱼ).
    actor_update_rank_fresh: jax.Array  # shape=(), float32. Same for a freshly initialised network.
    critic_update_rank_fresh: jax.Array  # shape=(), float32.
    actor_srank: jax.Array  # shape=(), float32. srank_δ of the actor's features φ(xⱼ) (Kumar et al. 2021).
    critic_srank: jax.Array  # shape=(), float32. srank_δ of the critic's features.


class ActorCriticMetrics(NamedTuple):
    """Per iteration (a run returns each field stacked: [num_iterations], or [seeds, num_iterations])."""

    env_steps: jax.Array  # shape=(), int32. Environment steps (all envs) after this iteration.
    learned: jax.Array  # shape=(), bool. An update was made (always True: every iteration updates).
    loss: jax.Array  # shape=(), float32. Mean minimised objective: the joint loss (PPO), or the actor loss
    #                  plus the critic's L_V when the critic was trained (DAAC, REINFORCE).
    policy_loss: jax.Array  # shape=(), float32. Mean surrogate (PPO-clip or REINFORCE) over the updates.
    value_loss: jax.Array  # shape=(), float32. Mean L_V over the critic's updates; NaN if it was not trained.
    entropy: jax.Array  # shape=(), float32. Mean policy entropy H(π(·|x)).
    advantage_loss: jax.Array  # shape=(), float32. Mean (A_θ(x,a) − Â)² (DAAC); NaN for the others.
    approx_kl: jax.Array  # shape=(), float32. Mean (ρ − 1) − log ρ, ρ = π/μ (Schulman's k3 estimator).
    clip_fraction: jax.Array  # shape=(), float32. Fraction of examples with |ρ − 1| > clip_eps.
    critic_updated: jax.Array  # shape=(), bool. The critic was trained this iteration.
    return_sum: jax.Array  # shape=(), float32. Sum of the returns of training episodes ended this iteration.
    discounted_return_sum: jax.Array  # shape=(), float32. Sum of their discounted returns Σ γᵗ rₜ.
    return_count: jax.Array  # shape=(), int32. Number of training episodes ended this iteration.
    evaluated: jax.Array  # shape=(), bool. The test environments were stepped this iteration.
    test_return_sum: jax.Array  # shape=(), float32. Same on the test environments.
    test_discounted_return_sum: jax.Array  # shape=(), float32.
    test_return_count: jax.Array  # shape=(), int32.
    probes: ActorCriticProbes


def empty_probes() -> ActorCriticProbes:
    nan = jnp.full((), jnp.nan, jnp.float32)
    return ActorCriticProbes(jnp.zeros((), bool), *([nan] * (len(ActorCriticProbes._fields) - 1)))


# ----------------------------------------------------------------------------------------------------
# Validation (before any tracing or compilation).


def _is_procgen(name: str) -> bool:
    return envs_lib.is_envpool_name(name) and name.endswith("-v0")


def _validate(c: ActorCriticConfig) -> None:
    if not isinstance(c, ActorCriticConfig):
        raise ValueError(f"actor_critic.make_agent: expected an ActorCriticConfig, got {type(c).__name__}.")
    core.check_common_fields(c, positive=("num_steps", "num_epochs", "num_minibatches", "daac_policy_epochs",
                                          "daac_value_epochs", "daac_value_freq", "eval_num_envs", "eval_steps",
                                          "test_num_levels"))
    for name in ("num_levels", "start_level"):
        require(name not in dict(c.env_options), c, "env_options",
                f"sets {name!r}, which the train and test level ranges are built from",
                f"use the config field ActorCriticConfig.{name} instead")
    check_choice(c, "algo", ALGOS)
    require(0.0 <= c.gae_lambda <= 1.0, c, "gae_lambda", "must lie in [0, 1]", "e.g. gae_lambda=0.95")
    require(c.clip_eps > 0, c, "clip_eps", "the clipping radius must be > 0", "e.g. clip_eps=0.2")
    for name in ("entropy_coef", "value_coef", "daac_advantage_coef"):
        v = getattr(c, name)
        require(v >= 0 and math.isfinite(v), c, name, "must be a finite number >= 0", f"e.g. {name}=0.5")
    for name in ("eval_interval", "num_levels", "start_level"):
        require(getattr(c, name) >= 0, c, name, "must be >= 0", f"set {name} >= 0 (0 disables intervals)")

    m = ALGOS[c.algo].num_minibatches(c)
    require(c.num_steps % m == 0, c, "num_minibatches" if m > 1 else "num_steps",
            f"num_steps={c.num_steps} time steps cannot be cut into {m} equal minibatches",
            "make num_minibatches divide num_steps (minibatches are sets of time steps × all environments)")
    d = c.num_devices
    per_iter = c.num_envs * c.num_steps
    require(c.total_steps >= per_iter, c, "total_steps",
            f"shorter than one iteration (num_envs * num_steps = {per_iter} env steps)",
            f"set total_steps >= {per_iter}")
    if c.eval_interval > 0:
        require(c.eval_num_envs % d == 0, c, "eval_num_envs", f"not divisible by num_devices={d}",
                f"use a multiple of {d}")
    if c.probe_interval > 0:
        per_device = c.num_steps * (c.num_envs // d)
        require(2 <= c.probe_k <= per_device, c, "probe_k",
                f"the update matrices need between 2 and the {per_device} transitions of a rollout (per device)",
                f"set 2 <= probe_k <= {per_device}, or probe_interval=0")
    if _is_procgen(c.env):
        _validate_levels(c)


def _validate_levels(c: ActorCriticConfig) -> None:
    test_start = _test_start_level(c)
    require(c.num_levels >= 1, c, "num_levels", "0 would mean every level, so no test level could be held out",
            "use a finite training set, e.g. num_levels=200")
    require(test_start >= 0, c, "test_start_level", "must be >= 0", "use None (after the training levels)")
    require(max(c.start_level + c.num_levels, test_start + c.test_num_levels) <= _MAX_LEVEL, c,
            "test_num_levels", "the level range passes 2**31 - 1 (ProcGen level seeds are C ints)",
            "lower test_num_levels or test_start_level")
    overlap = test_start < c.start_level + c.num_levels and c.start_level < test_start + c.test_num_levels
    require(not overlap, c, "test_start_level",
            f"test levels [{test_start}, {test_start + c.test_num_levels}) overlap the training levels "
            f"[{c.start_level}, {c.start_level + c.num_levels})",
            "use None (the levels right after the training levels) or a disjoint range")


def _test_start_level(c: ActorCriticConfig) -> int:
    return c.start_level + c.num_levels if c.test_start_level is None else c.test_start_level


def _env_options(c: ActorCriticConfig, test: bool) -> Dict[str, Any]:
    opts = dict(c.env_options)
    if envs_lib.registered_env(c.env) is not None:  # e.g. the masked-image tasks: held-out images
        return envs_lib.test_env_options(c.env, opts) if test else opts
    if _is_procgen(c.env):
        if test:
            opts.update(num_levels=c.test_num_levels, start_level=_test_start_level(c))
        else:
            opts.update(num_levels=c.num_levels, start_level=c.start_level)
    return opts


# ----------------------------------------------------------------------------------------------------
# The spec: the config with what is built from it.


@dataclasses.dataclass(frozen=True, eq=False)
class ActorCriticSpec:
    """What the loop functions of `tdjax.train.actor_critic_update` read besides their data. Sizes are
    per device."""

    config: ActorCriticConfig
    algo: Algo
    env: envs_lib.VecEnv  # this device's num_envs training environments
    test_env: Optional[envs_lib.VecEnv]  # this device's test environments; None without evaluation
    networks: Dict[str, nn.Module]  # {"shared"} (PPO) or {"actor", "critic"}
    optimizer: optax.GradientTransformation  # one transformation; each network has its own state
    actor_name: str  # the key of `params` that acts ("shared" for PPO)
    critic_name: str  # the key of `params` that evaluates states ("shared" for PPO)
    train_env_options: Dict[str, Any]  # envpool options of the training environments (ProcGen levels)
    test_env_options: Dict[str, Any]  # and of the test environments
    num_envs: int  # training environments per device
    num_test_envs: int  # test environments per device
    num_iterations: int
    steps_per_iteration: int  # environment steps over all devices
    policy_epochs: int  # epochs on the actor (PPO: on the joint loss)
    value_epochs: int  # epochs on a separate critic
    value_freq: int  # a separate critic is trained when i % value_freq == 0
    num_minibatches: int  # per epoch
    gae_lambda: float


def _networks(c: ActorCriticConfig, obs_shape: Tuple[int, ...], num_actions: int, algo: Algo) -> Dict[str, nn.Module]:
    torso = core.torso_factory(c, obs_shape)
    nets: Dict[str, nn.Module]
    if algo.shared:
        nets = {"shared": SharedActorCritic(torso(), num_actions)}
    else:
        nets = {"actor": Actor(torso(), num_actions, algo.advantage_head), "critic": Critic(torso())}
    for net in nets.values():
        core.check_network(c, net, obs_shape)  # abstract shapes only: nothing is compiled
    return nets


def build_spec(c: ActorCriticConfig) -> ActorCriticSpec:
    """Validates `c` and builds its environments, networks (checked on abstract shapes) and optimizer."""
    _validate(c)
    algo = ALGOS[c.algo]
    vec = envs_lib.vec_spec(c.env)
    nets = _networks(c, vec.obs_shape, vec.num_actions, algo)
    d = c.num_devices
    train_opts, test_opts = _env_options(c, False), _env_options(c, True)
    env = envs_lib.make_vec(c.env, c.num_envs // d, seed=c.env_seed, backend=c.env_backend, options=train_opts)
    test_env = None
    if c.eval_interval > 0:
        test_env = envs_lib.make_vec(c.env, c.eval_num_envs // d, seed=c.env_seed + 1, backend=c.env_backend,
                                     options=test_opts)
    names = ("shared", "shared") if algo.shared else ("actor", "critic")
    return ActorCriticSpec(
        config=c, algo=algo, env=env, test_env=test_env, networks=nets,
        optimizer=core.make_optimizer("adam", c.lr, max_grad_norm=c.max_grad_norm, adam_eps=c.adam_eps,
                                      lr_in_state=True),
        actor_name=names[0], critic_name=names[1], train_env_options=train_opts, test_env_options=test_opts,
        num_envs=c.num_envs // d, num_test_envs=c.eval_num_envs // d,
        num_iterations=c.total_steps // (c.num_envs * c.num_steps), steps_per_iteration=c.num_envs * c.num_steps,
        policy_epochs=algo.policy_epochs(c), value_epochs=algo.value_epochs(c), value_freq=algo.value_freq(c),
        num_minibatches=algo.num_minibatches(c), gae_lambda=float(algo.gae_lambda(c)),
    )


# ----------------------------------------------------------------------------------------------------
# The agent.


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class ActorCriticAgent(core.Agent):
    """`core.Agent` for the actor-critic loop (`make_agent(ActorCriticConfig(...))`): `init`, `run`,
    `reattach_env`, plus the loop's pieces bound to its spec (`tdjax.train.actor_critic_update`), e.g.
    `collect(state, i)` (iteration i's rollout → Batch [T, E]), `learner_update(learner, batch, i)`,
    `policy_loss(actor_params, example)` (ONE example), and the spec's networks, optimizer, names and
    environments as properties; `set_hyperparams(state, lr=...)` and `init_with(key, n_train, lr)`
    take the learning rate and the training-set size n_T of a masked-image task as data.
    """

    hyperparams_as_data = ("lr",)

    def set_hyperparams(self, state: RunnerState, **values: Any) -> RunnerState:
        """`state` with `lr` (learning rate, > 0, of every network) set as data: the optimizer keeps it
        in its state (`core.make_optimizer(..., lr_in_state=True)`), so a run whose rate is set here
        equals a run configured with that rate, and runs that differ only in it share one program."""
        core._reject_hyperparams(self, values, self.hyperparams_as_data)
        if "lr" not in values:
            return state
        core.check_hyperparam_values("lr", values["lr"], 0.0, np.inf, closed_low=False)
        learner = state.learner
        opt = {k: core.set_learning_rate(v, values["lr"]) for k, v in learner.opt_state.items()}
        return state._replace(learner=learner._replace(opt_state=opt))

    def init_with(self, key: jax.Array, n_train: Any = None, lr: Any = None) -> RunnerState:
        """`init(key)` with the training-set size n_T of a masked-image task and the learning rate as
        data (`tdjax.train.core.init_with`)."""
        return core.init_with(self, update.init_local, key, n_train, lr)

    def reattach_env(self, state: RunnerState) -> RunnerState:
        """`state` with freshly reset environments (train and test) and zeroed running episode and
        reward-normalisation statistics: how a checkpoint of an envpool run is resumed. Identity for
        jitted environments."""
        actor = core.reattach(state.actor, self.spec.env)
        if not self.spec.env.jittable:
            actor = actor._replace(norm_return=jnp.zeros_like(actor.norm_return))
        evaluator = state.evaluator
        if evaluator is not None:
            evaluator = core.reattach(evaluator, self.spec.test_env)
        return state._replace(actor=actor, evaluator=evaluator)

    collect = core.bound(update.collect)
    learner_update = core.bound(update.learner_update)
    probe_sample = core.bound(update.probe_sample)
    update_matrices = core.bound(update.update_matrices)
    probe = core.bound(update.probe)
    policy_loss = core.bound(update.policy_loss)
    value_loss = core.bound(update.value_loss)
    policy_logits = core.bound(update.policy_logits)
    value = core.bound(update.value)
    features = core.bound(update.features)
    evaluate = core.bound(update.evaluate)

    algo = property(lambda self: self.spec.algo)
    networks = property(lambda self: self.spec.networks)
    optimizer = property(lambda self: self.spec.optimizer)
    actor_name = property(lambda self: self.spec.actor_name)
    critic_name = property(lambda self: self.spec.critic_name)
    test_env = property(lambda self: self.spec.test_env)
    train_env_options = property(lambda self: self.spec.train_env_options)
    test_env_options = property(lambda self: self.spec.test_env_options)


def make_agent(config: ActorCriticConfig) -> ActorCriticAgent:
    """Validates `config` (ValueError naming the field and the fix, before any compilation) and
    builds the agent (`tdjax.train.make_agent` and `make_train` dispatch here for an ActorCriticConfig;
    docs/actor_critic.md has a run)."""
    spec = build_spec(config)
    init, run = core.build_loop(spec, update.init_local, update.iteration, per_device=("actor", "evaluator"))
    return ActorCriticAgent(spec, init, run)


# ----------------------------------------------------------------------------------------------------
# Summaries (for logs).


def summarise(metrics: ActorCriticMetrics) -> dict:
    """Scalars summarising a stretch of iterations of ONE seed (fields stacked [T]): means of the
    losses, mean (discounted) returns of the training and test episodes that ended, the generalisation
    gap of Lyle et al. 2022, eq. 6 (train − test mean discounted return; `_undiscounted` beside it),
    and the mean of each probe taken."""
    m = jax.tree.map(np.asarray, metrics)
    out: Dict[str, Any] = {"env_steps": int(m.env_steps[-1]), "updates": int(m.learned.sum())}
    for name in ("loss", "policy_loss", "value_loss", "entropy", "advantage_loss", "approx_kl", "clip_fraction"):
        out[name] = core.nanmean(getattr(m, name))
    for prefix, test in (("", False), ("test_", True)):
        out[f"{prefix}episodes"] = int(getattr(m, f"{prefix}return_count").sum())
        out[f"{prefix}return_mean"] = float(core.mean_return(m, test=test))
        out[f"{prefix}discounted_return_mean"] = float(core.mean_return(m, test=test, discounted=True))
    out["generalization_gap"] = out["discounted_return_mean"] - out["test_discounted_return_mean"]
    out["generalization_gap_undiscounted"] = out["return_mean"] - out["test_return_mean"]
    return dict(out, **core.probe_means(m.probes))


def generalization_gap(metrics: ActorCriticMetrics, last: Optional[int] = None, *,
                       discounted: bool = True) -> np.ndarray:
    """Lyle et al. 2022, eq. 6: E_train[Σ γᵗ rₜ] − E_test[Σ γᵗ rₜ] under the current policy, estimated by
    the mean discounted return of the training and test episodes that ended in the last `last`
    iterations (`discounted=False`: undiscounted returns, as ProcGen results are usually reported)."""
    return (core.mean_return(metrics, last, discounted=discounted)
            - core.mean_return(metrics, last, test=True, discounted=discounted))


core.register_family(ActorCriticConfig, core.Family("actor_critic", make_agent, summarise, core.mean_return))
