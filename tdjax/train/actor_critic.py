"""One actor-critic training loop for PPO, DAAC and REINFORCE: `make_train(config) -> train(key)`.

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
terminal states. envpool's reset steps (`VecStep.valid` False) are not transitions: their weight in
every loss, normalisation and probe is 0, and the episode end before them already cut the trace.

Random numbers: iteration i uses `fold_in(actor.key, i)` (acting, environments, probe sample; per
device) and `fold_in(learner.key, i)` (minibatch permutations, fresh probe network; replicated), never
a carried split, so a run cut into chunks (`train_with_checkpoints`) is bit-identical to one that was
not, and any iteration's rollout, update or probe can be recomputed outside the loop (`ActorCriticAgent`
exposes the pieces). The iteration index is scan data that `jax.vmap` over seeds does not batch, so
the probe and evaluation `lax.cond`s stay real branches: `jax.jit(jax.vmap(make_train(config)))(keys)`.

With `num_devices > 1` the run is data-parallel with `jax.shard_map` over a 1-D mesh axis "data":
each device steps `num_envs / num_devices` environments, minibatch m of an epoch is the SAME time
steps on every device (the permutation comes from the replicated learner key), losses are normalised
by the global (psum-ed) weight and gradients psum-ed, and advantage / reward statistics are psum-ed,
so every update equals the single-device update on the union of the devices' data. The learner state
is replicated; actor and evaluator leaves get a leading [num_devices] axis.

Generalisation (Lyle et al. 2022, eq. 6): the training environments are ProcGen levels
[start_level, start_level + num_levels); the test environments, stepped with the current (sampled)
policy for `eval_steps` steps every `eval_interval` iterations, are the disjoint levels
[test_start_level, test_start_level + test_num_levels). For gymnax games the test environments are
the same game with other random keys; for Atari, another envpool seed. The metrics hold returns and
discounted returns Σₜ γᵗ rₜ of the episodes that ended, on both sides; `summarise` and
`generalization_gap` turn them into the gap of eq. 6.
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
from jax.sharding import PartitionSpec as P

from tdjax import envs as envs_lib
from tdjax._src.losses import ppo_clip_loss, reinforce_loss
from tdjax._src.returns import generalized_advantage_estimation
from tdjax._src.update_matrix import policy_update_matrix, srank, update_matrix, update_rank
from tdjax.networks.actor_critic import Actor, Critic, SharedActorCritic
from tdjax.networks.heads import TORSOS
from tdjax.train import core
from tdjax.train.validation import check_choice, check_types, require
from tdjax.train.core import auto_network

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
    "ActorCriticAgent",
    "make_agent",
    "make_train",
    "summarise",
    "mean_return",
    "generalization_gap",
    "ppo_procgen_paper_config",
    "daac_procgen_paper_config",
]

AXIS = "data"
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

    env: str = "CartPole-v1"  # a gymnax name (tdjax.envs.ENV_NAMES) or an envpool id ("BigfishEasy-v0")
    # envpool only (Atari, ProcGen): seed, how it is stepped inside jit, extra envpool.make options
    env_seed: int = 0
    env_backend: str = "xla"  # "xla" (envpool's XLA custom call) | "host" (ordered io_callback)
    env_options: Tuple[Tuple[str, Any], ...] = ()  # e.g. (("distribution_mode", "easy"),)
    # ProcGen levels (ignored for other games): train on [start_level, start_level + num_levels),
    # test on [test_start_level, test_start_level + test_num_levels), which must not overlap
    num_levels: int = 200
    start_level: int = 0
    test_start_level: Optional[int] = None  # None: start_level + num_levels (right after the training levels)
    test_num_levels: int = 100_000
    algo: str = "ppo"  # "ppo" | "daac" | "reinforce"
    network: str = "auto"  # "auto" | "mlp" | "minatar_cnn" | "nature_cnn" | "impala_cnn" (torso of each network)
    hidden: Tuple[int, ...] = (64, 64)  # MLP torso widths (network="mlp")
    num_envs: int = 8
    num_steps: int = 128  # rollout length: vector steps per iteration
    total_steps: int = 100_000
    gamma: float = 0.99
    gae_lambda: float = 0.95  # GAE λ (REINFORCE always uses λ = 1)
    normalize_advantages: bool = True  # Â ← (Â − mean) / (std + 1e-8) over each rollout
    normalize_rewards: bool = False  # r ← clip(r / std(discounted return), ±10), running std (baselines' VecNormalize)
    clip_eps: float = 0.2  # PPO ratio clipping ε, also the value clipping radius
    clip_value_loss: bool = True
    entropy_coef: float = 0.01  # c_H
    value_coef: float = 0.5  # c_V (PPO's joint loss; DAAC and REINFORCE train the critic on L_V alone)
    # optimizer: Adam, optional global-norm clipping (per network)
    lr: float = 5e-4
    adam_eps: float = 1e-5
    max_grad_norm: Optional[float] = 0.5  # None: no clipping
    # PPO's schedule
    num_epochs: int = 3
    num_minibatches: int = 8  # per epoch (PPO and DAAC); must divide num_steps
    # DAAC (Raileanu & Fergus 2021, Algorithm 1)
    daac_policy_epochs: int = 1  # E_π: actor epochs per iteration
    daac_value_epochs: int = 9  # E_V: critic epochs when the critic is trained
    daac_value_freq: int = 1  # N_π: the critic is trained at iterations i with i % N_π == 0
    daac_advantage_coef: float = 0.25  # α_A: weight of the advantage regression in the actor loss
    # probes (Lyle et al. 2022, §5.2, Fig. 4, App. B.1)
    probe_interval: int = 0  # iterations between probes; 0 disables them
    probe_k: int = 32  # transitions of the update matrices (sampled from the rollout, per device)
    probe_rank_eps: float = 0.1
    probe_srank_delta: float = 0.01
    probe_fresh: bool = True  # also probe a freshly initialised network (the paper's baseline)
    probe_chunk_size: Optional[int] = None  # examples per vmapped chunk inside the update matrices
    # evaluation on the test environments (generalisation gap, eq. 6)
    eval_interval: int = 0  # iterations between evaluations; 0 disables them
    eval_num_envs: int = 8
    eval_steps: int = 128  # vector steps of the test environments per evaluation
    # checkpointing (train_with_checkpoints)
    checkpoint_interval: int = 100  # iterations per jitted chunk / checkpoint
    num_devices: int = 1
    # Loop structure, not maths: the epoch × minibatch steps as straight-line code (a Python loop with an
    # optimization barrier between steps) instead of two scans. XLA:CPU runs convolution gradients
    # inside loops several times slower than outside (jax-ml/jax#12868), so on CPU a CNN agent is faster
    # with `update_unroll=True` driven one iteration per call (`tdjax.train.run_host_driven`); on GPU
    # keep the default (shorter compilation, the whole run in one scan).
    update_unroll: bool = False


    def replace(self, **changes: Any) -> "ActorCriticConfig":
        """A copy with `changes` applied (the config itself is never mutated)."""
        return dataclasses.replace(self, **changes)


def _procgen_env(game: str) -> str:
    if game.endswith("-v0"):
        return game
    return f"{game[:1].upper()}{game[1:].lower()}Easy-v0"


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
        env=_procgen_env(game), num_levels=10, start_level=0, test_start_level=None, test_num_levels=100_000,
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
    num_minibatches: Callable[[ActorCriticConfig], int]  # per epoch, both phases
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

    count: jax.Array  # shape=(), float32. Samples seen (starts at 1e-4, as baselines' RunningMeanStd).
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
    episode_return: jax.Array  # shape=[E], float32. Undiscounted return of the running episodes.
    discounted_return: jax.Array  # shape=[E], float32. Σ γᵗ rₜ of the running episodes.
    discount_power: jax.Array  # shape=[E], float32. γᵗ at the running episodes' current step.
    norm_return: jax.Array  # shape=[E], float32. Discounted return for reward normalisation.


class EvalState(NamedTuple):
    """The test environments (per device, like ActorState)."""

    key: jax.Array  # shape=(), typed PRNG key. Evaluation at iteration i: fold_in(key, i).
    env_state: Any  # VecEnv state of the eval_num_envs / num_devices test environments.
    obs: jax.Array  # shape=[E_test, *obs_shape], float32.
    episode_return: jax.Array  # shape=[E_test], float32.
    discounted_return: jax.Array  # shape=[E_test], float32.
    discount_power: jax.Array  # shape=[E_test], float32.


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
        raise ValueError(f"make_train: expected an ActorCriticConfig, got {type(c).__name__}.")
    check_types(c)
    envs_lib.check_env_name(c.env, field="ActorCriticConfig.env")
    check_choice(c, "env_backend", ("xla", "host"))
    require(all(isinstance(o, tuple) and len(o) == 2 and isinstance(o[0], str) for o in c.env_options), c,
            "env_options", "must be a tuple of (name, value) pairs", "e.g. env_options=(('distribution_mode', 'hard'),)")
    for name in ("num_levels", "start_level"):
        require(name not in dict(c.env_options), c, "env_options",
                f"sets {name!r}, which the train and test level ranges are built from",
                f"use the config field ActorCriticConfig.{name} instead")
    if not envs_lib.vec_spec(c.env).jittable:
        require(c.num_devices == 1, c, "num_devices",
                f"{c.env} is an envpool environment, stepped by one host process",
                "use num_devices=1 for envpool games (data-parallel runs need jitted gymnax environments)")
    check_choice(c, "algo", ALGOS)
    check_choice(c, "network", ("auto",) + tuple(TORSOS))
    positive = ("num_envs", "num_steps", "total_steps", "num_epochs", "num_minibatches", "daac_policy_epochs",
                "daac_value_epochs", "daac_value_freq", "probe_k", "eval_num_envs", "eval_steps",
                "checkpoint_interval", "num_devices", "test_num_levels")
    for name in positive:
        require(getattr(c, name) >= 1, c, name, "must be a positive integer", f"set {name} >= 1")
    require(len(c.hidden) >= 1 and all(h >= 1 for h in c.hidden), c, "hidden",
            "the MLP torso needs at least one positive width", "e.g. hidden=(64, 64)")
    for name in ("gamma", "gae_lambda"):
        require(0.0 <= getattr(c, name) <= 1.0, c, name, "must lie in [0, 1]", f"e.g. {name}=0.99")
    require(c.clip_eps > 0, c, "clip_eps", "the clipping radius must be > 0", "e.g. clip_eps=0.2")
    for name in ("entropy_coef", "value_coef", "daac_advantage_coef"):
        v = getattr(c, name)
        require(v >= 0 and math.isfinite(v), c, name, "must be a finite number >= 0", f"e.g. {name}=0.5")
    require(c.lr > 0 and math.isfinite(c.lr), c, "lr", "the learning rate must be a positive number", "e.g. lr=5e-4")
    require(c.adam_eps > 0, c, "adam_eps", "must be > 0", "e.g. adam_eps=1e-5")
    require(c.max_grad_norm is None or c.max_grad_norm > 0, c, "max_grad_norm", "must be > 0 or None",
            "use None to disable clipping")
    for name in ("probe_interval", "eval_interval", "num_levels", "start_level"):
        require(getattr(c, name) >= 0, c, name, "must be >= 0", f"set {name} >= 0 (0 disables intervals)")
    require(c.probe_chunk_size is None or c.probe_chunk_size >= 1, c, "probe_chunk_size",
            "must be None or >= 1", "use None (4 at a time) or a positive chunk size")
    require(0.0 < c.probe_rank_eps < 1.0, c, "probe_rank_eps", "must lie in (0, 1)", "the paper uses 0.1")
    require(0.0 < c.probe_srank_delta < 1.0, c, "probe_srank_delta", "must lie in (0, 1)", "Kumar et al. use 0.01")

    algo = ALGOS[c.algo]
    m = algo.num_minibatches(c)
    require(c.num_steps % m == 0, c, "num_minibatches" if m > 1 else "num_steps",
            f"num_steps={c.num_steps} time steps cannot be cut into {m} equal minibatches",
            "make num_minibatches divide num_steps (minibatches are sets of time steps × all environments)")
    d = c.num_devices
    n_dev = jax.device_count()
    require(d <= n_dev, c, "num_devices", f"only {n_dev} device(s) are visible",
            f"use num_devices <= {n_dev} (on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N)")
    require(c.num_envs % d == 0, c, "num_envs", f"not divisible by num_devices={d}",
            f"use a multiple of {d} (each device steps num_envs / num_devices environments)")
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
        test_start = _test_start_level(c)
        require(c.num_levels >= 1, c, "num_levels",
                "0 would mean every level, so no test level could be held out",
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
    if _is_procgen(c.env):
        if test:
            opts.update(num_levels=c.test_num_levels, start_level=_test_start_level(c))
        else:
            opts.update(num_levels=c.num_levels, start_level=c.start_level)
    return opts


# ----------------------------------------------------------------------------------------------------
# Building the agent.


def _typed_key(key: jax.Array) -> jax.Array:
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(key)


def _optimizer(c: ActorCriticConfig) -> optax.GradientTransformation:
    tx = optax.adam(c.lr, eps=c.adam_eps)
    if c.max_grad_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(c.max_grad_norm), tx)
    return tx


def _networks(c: ActorCriticConfig, spec: Any, algo: Algo) -> Dict[str, nn.Module]:
    name = auto_network(c.env, spec.obs_shape) if c.network == "auto" else c.network
    if name == "mlp":
        require(len(spec.obs_shape) == 1, c, "network",
                f"an MLP torso needs vector observations but {c.env} gives {spec.obs_shape}",
                "use network='minatar_cnn' (MinAtar), 'impala_cnn' (ProcGen) or 'auto'")
        torso = lambda: TORSOS["mlp"](tuple(c.hidden))  # noqa: E731
    else:
        require(len(spec.obs_shape) == 3, c, "network",
                f"a convolutional torso needs [H, W, C] observations but {c.env} gives {spec.obs_shape}",
                "use network='mlp' or 'auto'")
        torso = TORSOS[name]
    a = spec.num_actions
    if algo.shared:
        nets = {"shared": SharedActorCritic(torso(), a)}
    else:
        nets = {"actor": Actor(torso(), a, algo.advantage_head), "critic": Critic(torso())}
    x = jax.ShapeDtypeStruct(spec.obs_shape, jnp.float32)
    for net in nets.values():
        try:  # abstract shapes only: nothing is compiled
            jax.eval_shape(lambda x, net=net: net.init(jax.random.key(0), x), x)
        except Exception as err:  # noqa: BLE001 - reported with the field that caused it
            raise ValueError(
                f"ActorCriticConfig.network={c.network!r}: this torso cannot take {c.env}'s observations of "
                f"shape {spec.obs_shape} ({type(err).__name__}: {err}). Fix: use network='auto', or "
                "'nature_cnn' only for 84×84 frames."
            ) from None
    return nets


def _weighted_mean(x, w, axis_name):
    s, n = jnp.sum(x * w), jnp.sum(w)
    if axis_name is not None:
        s, n = jax.lax.psum((s, n), axis_name)
    return s / jnp.maximum(n, 1.0)


@dataclasses.dataclass(frozen=True, eq=False)
class ActorCriticAgent:
    """The pieces `make_train` composes; all functions are pure and jittable.

    Attributes:
      config, algo, env, test_env (None without evaluation), networks ({"shared"} or {"actor",
        "critic"}), optimizer (one optax transformation; each network has its own state).
      actor_name, critic_name: the keys of `params` that act and that evaluate states ("shared" twice
        for PPO).
      train_env_options, test_env_options: the envpool options of the two environment sets (ProcGen:
        `num_levels`, `start_level`), as passed to `tdjax.envs.make_vec`.
      num_iterations, steps_per_iteration: see the module docstring.
      init: `init(key) -> RunnerState`.
      run: `run(state, start, length) -> (state, ActorCriticMetrics stacked [length])`: iterations
        start .. start+length−1 (`length` static; `start` may be traced but must not be batched).
      collect: `collect(state, i, axis_name=None) -> (state, Batch [T, E], stats)`: iteration i's rollout,
        advantages and targets (state: environments advanced, reward statistics updated).
      learner_update: `learner_update(learner, batch, i, axis_name=None) -> (learner, metrics dict)`:
        iteration i's whole update (all epochs and minibatches, both networks).
      probe_sample: `probe_sample(batch, key) -> Batch [k]`: k distinct transitions of a rollout.
      update_matrices: `update_matrices(learner, examples, fresh_key) -> dict` of the [k, k] policy and
        value update matrices ("actor", "critic", and with probe_fresh "actor_fresh", "critic_fresh").
      probe: `probe(learner, batch, i, actor_key) -> ActorCriticProbes` (what the loop records).
      policy_loss: `policy_loss(actor_params, example) -> scalar`, the actor's loss on ONE example
        without the value term (the loss of the policy update matrix).
      value_loss: `value_loss(critic_params, example) -> scalar`, L_V on ONE example.
      policy_logits: `policy_logits(actor_params, x) -> [..., A]`.
      value: `value(critic_params, x) -> [...]`.
      features: `features(name, params[name], x) -> [..., d]` penultimate activations of a network.
      evaluate: `evaluate(learner, evaluator, i) -> (evaluator, (return_sum, disc_sum, count))`.
      reattach_env: `reattach_env(state) -> state` with freshly reset environments (train and test) and
        zeroed running episode statistics: how a checkpoint of an envpool run is resumed. Identity for
        jitted environments.
    """

    config: ActorCriticConfig
    algo: Algo
    env: envs_lib.VecEnv
    test_env: Optional[envs_lib.VecEnv]
    networks: Dict[str, nn.Module]
    optimizer: optax.GradientTransformation
    actor_name: str
    critic_name: str
    train_env_options: Dict[str, Any]
    test_env_options: Dict[str, Any]
    num_iterations: int
    steps_per_iteration: int
    init: Callable[[jax.Array], RunnerState]
    run: Callable[[RunnerState, Any, int], Tuple[RunnerState, ActorCriticMetrics]]
    collect: Callable[..., Tuple[RunnerState, Batch, Any]]
    learner_update: Callable[..., Tuple[LearnerState, Dict[str, jax.Array]]]
    probe_sample: Callable[[Batch, jax.Array], Batch]
    update_matrices: Callable[..., Dict[str, jax.Array]]
    probe: Callable[..., ActorCriticProbes]
    policy_loss: Callable[[Any, Batch], jax.Array]
    value_loss: Callable[[Any, Batch], jax.Array]
    policy_logits: Callable[[Any, Any], jax.Array]
    value: Callable[[Any, Any], jax.Array]
    features: Callable[[str, Any, Any], jax.Array]
    evaluate: Callable[..., Tuple[EvalState, Any]]
    reattach_env: Callable[[RunnerState], RunnerState]


def make_agent(config: ActorCriticConfig) -> ActorCriticAgent:
    """Validates `config` (ValueError naming the field and the fix, before any compilation) and
    builds the agent's pure functions."""
    _validate(config)
    c = config
    algo = ALGOS[c.algo]
    spec = envs_lib.vec_spec(c.env)
    nets = _networks(c, spec, algo)  # checked on abstract shapes: still nothing compiled
    actor_name, critic_name = ("shared", "shared") if algo.shared else ("actor", "critic")
    optimizer = _optimizer(c)
    d = c.num_devices
    num_envs = c.num_envs // d
    train_opts, test_opts = _env_options(c, False), _env_options(c, True)
    env = envs_lib.make_vec(c.env, num_envs, seed=c.env_seed, backend=c.env_backend, options=train_opts)
    evaluating = c.eval_interval > 0
    num_test = c.eval_num_envs // d
    test_env = None
    if evaluating:
        test_env = envs_lib.make_vec(c.env, num_test, seed=c.env_seed + 1, backend=c.env_backend, options=test_opts)
    num_iterations = c.total_steps // (c.num_envs * c.num_steps)
    steps_per_iter = c.num_envs * c.num_steps
    policy_epochs, value_epochs = algo.policy_epochs(c), algo.value_epochs(c)
    value_freq, num_mb, lam = algo.value_freq(c), algo.num_minibatches(c), float(algo.gae_lambda(c))
    gamma = float(c.gamma)
    dummy_obs = jnp.zeros(env.obs_shape, jnp.float32)
    scale = env.obs_scale
    storage = env.obs_storage_dtype

    def prep(x):
        x = jnp.asarray(x, jnp.float32)
        return x if scale == 1.0 else x * scale

    # ---- network outputs -------------------------------------------------------------------------
    def actor_out(p, x):
        """(logits, advantages or None) of the acting network at (already prepared) x."""
        if algo.shared:
            return nets["shared"].apply(p, x)[0], None
        out = nets["actor"].apply(p, x)
        return out if algo.advantage_head else (out, None)

    def critic_out(p, x):
        if algo.shared:
            return nets["shared"].apply(p, x)[1]
        return nets["critic"].apply(p, x)

    def logits_and_value(params, x):
        if algo.shared:
            return nets["shared"].apply(params["shared"], x)
        return actor_out(params["actor"], x)[0], critic_out(params["critic"], x)

    def policy_logits(p, x):
        return actor_out(p, prep(x))[0]

    def value(p, x):
        return critic_out(p, prep(x))

    def features(name, p, x):
        return nets[name].apply(p, prep(x), method=type(nets[name]).features)

    # ---- per-example losses (batched with vmap) -------------------------------------------------------
    nan = jnp.full((), jnp.nan, jnp.float32)

    def policy_terms(logits, adv_pred, ex: Batch):
        surrogate = algo.surrogate(c, logits, ex.action, ex.logp, ex.advantage)
        log_p = jax.nn.log_softmax(logits)
        probs = jnp.exp(log_p)
        entropy = -jnp.sum(probs * jnp.where(probs > 0, log_p, 0.0))  # finite if a logit is −∞
        loss = surrogate - c.entropy_coef * entropy
        log_ratio = log_p[ex.action] - ex.logp
        aux = dict(policy_loss=surrogate, entropy=entropy,
                   approx_kl=jnp.expm1(log_ratio) - log_ratio,
                   clip_fraction=(jnp.abs(jnp.expm1(log_ratio)) > c.clip_eps).astype(jnp.float32))
        if adv_pred is not None:  # DAAC: the advantage head regresses the (normalised) GAE
            adv_loss = jnp.square(adv_pred[ex.action] - jax.lax.stop_gradient(ex.advantage))
            loss = loss + c.daac_advantage_coef * adv_loss
            aux["advantage_loss"] = adv_loss
        return loss, aux

    def value_term(v, ex: Batch):
        if c.clip_value_loss:
            v_clipped = ex.value + jnp.clip(v - ex.value, -c.clip_eps, c.clip_eps)
            return 0.5 * jnp.maximum(jnp.square(v - ex.target), jnp.square(v_clipped - ex.target))
        return 0.5 * jnp.square(v - ex.target)

    def policy_objective(p, ex: Batch):
        logits, adv_pred = actor_out(p, prep(ex.obs))
        return policy_terms(logits, adv_pred, ex)

    def value_objective(p, ex: Batch):
        loss = value_term(critic_out(p, prep(ex.obs)), ex)
        return loss, dict(value_loss=loss)

    # The same objectives on a minibatch: the network runs ONCE on the batch of observations and only
    # the per-example terms are vmapped (vmapping the network's forward as well gives the same numbers
    # but costs ~9% more per IMPALA-CNN gradient step on XLA:CPU, where max-pool gradients batch poorly).
    def policy_objective_batch(p, mb: Batch):
        logits, adv_pred = actor_out(p, prep(mb.obs))
        return jax.vmap(policy_terms)(logits, adv_pred, mb)

    def value_objective_batch(p, mb: Batch):
        loss = jax.vmap(value_term)(critic_out(p, prep(mb.obs)), mb)
        return loss, dict(value_loss=loss)

    def joint_objective_batch(p, mb: Batch):  # PPO: one network, one loss
        logits, v = nets["shared"].apply(p, prep(mb.obs))

        def terms(lg, vi, ex):
            loss, aux = policy_terms(lg, None, ex)
            vl = value_term(vi, ex)
            return loss + c.value_coef * vl, dict(aux, value_loss=vl)

        return jax.vmap(terms)(logits, v, mb)

    def policy_loss(p, ex):
        return policy_objective(p, ex)[0]

    def value_loss(p, ex):
        return value_objective(p, ex)[0]

    # ---- one phase: epochs × minibatches of optimizer steps on one network --------------------------
    def phase(params, opt_state, objective, epochs, batch: Batch, key, axis_name):
        t_mb = c.num_steps // num_mb

        def minibatch_step(carry, idx):
            params, opt_state = carry
            mb = jax.tree.map(lambda x: x[idx].reshape((-1,) + x.shape[2:]), batch)  # [t_mb · E, ...]
            n = jnp.sum(mb.weight)
            if axis_name is not None:
                n = jax.lax.psum(n, axis_name)
            n = jnp.maximum(n, 1.0)

            def total(p):
                losses, aux = objective(p, mb)  # per-example [t_mb · E] losses and aux
                aux = {k: jnp.sum(v * mb.weight) / n for k, v in aux.items()}
                return jnp.sum(losses * mb.weight) / n, aux

            p = params
            if axis_name is not None:
                # each device differentiates its own shard's share of the global mean; psum adds them up
                p = jax.lax.pcast(params, axis_name, to="varying")
            (loss, aux), grads = jax.value_and_grad(total, has_aux=True)(p)
            if axis_name is not None:
                grads, loss, aux = jax.lax.psum((grads, loss, aux), axis_name)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), (loss, aux)

        def epoch(carry, e):
            perm = jax.random.permutation(jax.random.fold_in(key, e), c.num_steps)
            return jax.lax.scan(minibatch_step, carry, perm.reshape(num_mb, t_mb))

        if c.update_unroll:
            # Straight-line code, one optimizer step after another. The optimization barrier after each
            # step keeps XLA from interleaving the steps' buffers (with 36 unrolled IMPALA steps, as in
            # DAAC's critic phase, the flat program otherwise held ~11 GB and ran ~3× slower per step).
            carry, outs = (params, opt_state), []
            for e in range(epochs):
                perm = jax.random.permutation(jax.random.fold_in(key, e), c.num_steps).reshape(num_mb, t_mb)
                for b in range(num_mb):
                    carry, out = minibatch_step(carry, perm[b])
                    carry, out = jax.lax.optimization_barrier((carry, out))
                    outs.append(out)
            (params, opt_state) = carry
            loss, aux = jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
        else:
            (params, opt_state), (loss, aux) = jax.lax.scan(epoch, (params, opt_state), jnp.arange(epochs))
        return params, opt_state, jnp.mean(loss), jax.tree.map(jnp.mean, aux)

    def learner_update(learner: LearnerState, batch: Batch, i, axis_name: Optional[str] = None):
        k_update = jax.random.fold_in(jax.random.fold_in(learner.key, i), 0)
        params, opt = dict(learner.params), dict(learner.opt_state)
        out = dict(advantage_loss=nan)
        if algo.shared:
            params["shared"], opt["shared"], loss, aux = phase(
                params["shared"], opt["shared"], joint_objective_batch, policy_epochs, batch, k_update, axis_name)
            out.update(aux, loss=loss, critic_updated=jnp.ones((), bool))
        else:
            params["actor"], opt["actor"], loss_a, aux = phase(
                params["actor"], opt["actor"], policy_objective_batch, policy_epochs, batch,
                jax.random.fold_in(k_update, 0), axis_name)
            out.update(aux)

            def critic_phase(p_o):
                p, o, loss, aux = phase(*p_o, value_objective_batch, value_epochs, batch,
                                        jax.random.fold_in(k_update, 1), axis_name)
                return p, o, loss, aux["value_loss"]

            trained = (i % value_freq == 0) if value_freq > 1 else jnp.ones((), bool)
            if value_freq > 1:
                params["critic"], opt["critic"], loss_c, vl = jax.lax.cond(
                    trained, critic_phase, lambda p_o: (*p_o, nan, nan), (params["critic"], opt["critic"]))
            else:
                params["critic"], opt["critic"], loss_c, vl = critic_phase((params["critic"], opt["critic"]))
            out.update(loss=loss_a + jnp.where(trained, loss_c, 0.0), value_loss=vl, critic_updated=trained)
        out = {k: (v if k == "critic_updated" else jnp.asarray(v, jnp.float32)) for k, v in out.items()}
        return learner._replace(params=params, opt_state=opt), out

    # ---- acting ------------------------------------------------------------------------------------
    def step_returns(state, s: envs_lib.VecStep):
        """Episode bookkeeping in unclipped reward: (state fields updated, (sum, discounted sum, count))."""
        ep_return = state.episode_return + s.raw_reward
        disc_return = state.discounted_return + state.discount_power * s.raw_reward
        power = state.discount_power * jnp.where(s.valid, gamma, 1.0)
        end = s.episode_end
        ended = (jnp.sum(jnp.where(end, ep_return, 0.0)), jnp.sum(jnp.where(end, disc_return, 0.0)),
                 jnp.sum(end.astype(jnp.int32)))
        return dict(episode_return=jnp.where(end, 0.0, ep_return),
                    discounted_return=jnp.where(end, 0.0, disc_return),
                    discount_power=jnp.where(end, 1.0, power)), ended

    class _Step(NamedTuple):
        obs: jax.Array
        action: jax.Array
        logp: jax.Array
        value: jax.Array
        reward: jax.Array
        done: jax.Array
        truncated: jax.Array
        valid: jax.Array
        final_value: jax.Array  # V(final observation) where an episode ended (gymnax); 0 otherwise

    def rollout(params, actor: ActorState, i):
        k_act, k_env, _ = jax.random.split(jax.random.fold_in(actor.key, i), 3)

        def vector_step(actor: ActorState, t):
            logits, v = logits_and_value(params, prep(actor.obs))
            a = jax.random.categorical(jax.random.fold_in(k_act, t), logits).astype(jnp.int32)
            logp = jnp.take_along_axis(jax.nn.log_softmax(logits), a[:, None], axis=-1)[:, 0]
            env_state, s = env.step(actor.env_state, jax.random.fold_in(k_env, t), a)
            done = s.terminated | s.truncated
            if env.always_valid:
                # gymnax resets inside the step: the final observation is only in next_obs
                final_value = jnp.where(done, critic_out(params[critic_name], prep(s.next_obs)), 0.0)
            else:
                # envpool resets on the NEXT call: the final observation is the next step's obs, whose
                # value the next step (or the bootstrap) computes anyway
                final_value = jnp.zeros_like(v)
            fields, ended = step_returns(actor, s)
            out = _Step(obs=actor.obs.astype(storage), action=a, logp=logp, value=v, reward=s.reward, done=done,
                        truncated=s.truncated, valid=s.valid, final_value=final_value)
            return actor._replace(env_state=env_state, obs=s.obs, **fields), (out, ended)

        actor, (traj, ended) = jax.lax.scan(vector_step, actor, jnp.arange(c.num_steps))
        last_value = critic_out(params[critic_name], prep(actor.obs))
        return actor, traj, last_value, jax.tree.map(jnp.sum, ended)

    def normalise_rewards(learner: LearnerState, actor: ActorState, traj: _Step, axis_name):
        """Scale rewards by the running std of the discounted return (baselines' VecNormalize, updated
        once per rollout with all its returns rather than once per step)."""
        def acc(ret, x):
            r, done, valid = x
            ret = jnp.where(valid, ret * gamma + r, ret)
            return jnp.where(done, 0.0, ret), ret

        norm_return, rets = jax.lax.scan(acc, actor.norm_return, (traj.reward, traj.done, traj.valid))
        w = traj.valid.astype(jnp.float32)
        n, s = jnp.sum(w), jnp.sum(rets * w)
        if axis_name is not None:
            n, s = jax.lax.psum((n, s), axis_name)
        mean_b = s / jnp.maximum(n, 1.0)
        m2_b = jnp.sum(jnp.square(rets - mean_b) * w)
        if axis_name is not None:
            m2_b = jax.lax.psum(m2_b, axis_name)
        st = learner.reward_stats
        tot = st.count + n
        delta = mean_b - st.mean
        mean = st.mean + delta * n / tot
        var = (st.var * st.count + m2_b + jnp.square(delta) * st.count * n / tot) / tot
        stats = RunningStats(tot, mean, var)
        reward = jnp.clip(traj.reward / jnp.sqrt(var + 1e-8), -10.0, 10.0)
        return learner._replace(reward_stats=stats), actor._replace(norm_return=norm_return), reward

    def make_batch(learner, actor, traj: _Step, last_value, axis_name):
        reward = traj.reward
        if c.normalize_rewards:
            learner, actor, reward = normalise_rewards(learner, actor, traj, axis_name)
        if env.always_valid:
            boot = traj.final_value
        else:
            boot = jnp.concatenate([traj.value[1:], last_value[None]])
        # a truncated episode still has a value after its last step: fold it into the reward
        reward = reward + gamma * traj.truncated.astype(jnp.float32) * boot
        discount = gamma * (1.0 - traj.done.astype(jnp.float32))
        adv = jax.vmap(generalized_advantage_estimation, in_axes=(1, 1, 1, 0, None), out_axes=1)(
            reward, discount, traj.value, last_value, lam)
        w = traj.valid.astype(jnp.float32)
        target = adv + traj.value
        if c.normalize_advantages:
            mean = _weighted_mean(adv, w, axis_name)
            std = jnp.sqrt(_weighted_mean(jnp.square(adv - mean), w, axis_name))
            adv = (adv - mean) / (std + 1e-8)
        batch = Batch(obs=traj.obs, action=traj.action, logp=traj.logp, value=traj.value, advantage=adv,
                      target=target, weight=w)
        return learner, actor, batch

    def collect(state: RunnerState, i, axis_name: Optional[str] = None):
        learner, actor, evaluator = state
        actor, traj, last_value, ended = rollout(learner.params, actor, i)
        learner, actor, batch = make_batch(learner, actor, traj, last_value, axis_name)
        return RunnerState(learner, actor, evaluator), batch, ended

    # ---- probes ------------------------------------------------------------------------------------
    def probe_sample(batch: Batch, key) -> Batch:
        flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), batch)
        u = jax.random.uniform(key, flat.weight.shape)
        _, idx = jax.lax.top_k(jnp.where(flat.weight > 0, u, u - 2.0), c.probe_k)  # valid transitions first
        return jax.tree.map(lambda x: x[idx], flat)

    def init_params(key):
        keys = jax.random.split(key, len(nets))
        return {name: net.init(k, dummy_obs) for (name, net), k in zip(sorted(nets.items()), keys)}

    def update_matrices(learner: LearnerState, examples: Batch, fresh_key) -> Dict[str, jax.Array]:
        kw = dict(chunk_size=c.probe_chunk_size)
        sets = [("", learner.params, learner.opt_state)]
        if c.probe_fresh:
            fresh = init_params(fresh_key)
            sets.append(("_fresh", fresh, {k: optimizer.init(v) for k, v in fresh.items()}))
        out = {}
        for suffix, params, opt in sets:
            out["actor" + suffix] = policy_update_matrix(
                policy_loss, policy_logits, optimizer, params[actor_name], opt[actor_name], examples, examples.obs, **kw)
            out["critic" + suffix] = update_matrix(
                value_loss, value, optimizer, params[critic_name], opt[critic_name], examples, examples.obs, **kw)
        return out

    def _rank(a):
        r = update_rank(a, float(c.probe_rank_eps))
        return jnp.where(r >= 0, r.astype(jnp.float32), jnp.nan)

    def _srank(phi):
        r = srank(phi.reshape(phi.shape[0], -1), float(c.probe_srank_delta))
        return jnp.where(r >= 0, r.astype(jnp.float32), jnp.nan)

    def probe(learner: LearnerState, batch: Batch, i, actor_key) -> ActorCriticProbes:
        k_sample = jax.random.split(jax.random.fold_in(actor_key, i), 3)[2]
        k_fresh = jax.random.fold_in(jax.random.fold_in(learner.key, i), 1)
        examples = probe_sample(batch, k_sample)
        mats = update_matrices(learner, examples, k_fresh)
        return ActorCriticProbes(
            probed=jnp.ones((), bool),
            actor_update_rank=_rank(mats["actor"]),
            critic_update_rank=_rank(mats["critic"]),
            actor_update_rank_fresh=_rank(mats["actor_fresh"]) if c.probe_fresh else nan,
            critic_update_rank_fresh=_rank(mats["critic_fresh"]) if c.probe_fresh else nan,
            actor_srank=_srank(features(actor_name, learner.params[actor_name], examples.obs)),
            critic_srank=_srank(features(critic_name, learner.params[critic_name], examples.obs)),
        )

    # ---- evaluation on the test environments -----------------------------------------------------------
    def evaluate(learner: LearnerState, ev: EvalState, i):
        k_act, k_env = jax.random.split(jax.random.fold_in(ev.key, i))
        p = learner.params[actor_name]

        def vector_step(ev: EvalState, t):
            logits = policy_logits(p, ev.obs)
            a = jax.random.categorical(jax.random.fold_in(k_act, t), logits).astype(jnp.int32)
            env_state, s = test_env.step(ev.env_state, jax.random.fold_in(k_env, t), a)
            fields, ended = step_returns(ev, s)
            return ev._replace(env_state=env_state, obs=s.obs, **fields), ended

        ev, ended = jax.lax.scan(vector_step, ev, jnp.arange(c.eval_steps))
        return ev, jax.tree.map(jnp.sum, ended)

    # ---- init ----------------------------------------------------------------------------------------
    def init_local(key, axis_name):
        key = _typed_key(key)
        k_net, k_learn, k_actor, k_eval = jax.random.split(key, 4)
        params = init_params(k_net)
        learner = LearnerState(
            params=params, opt_state={k: optimizer.init(v) for k, v in params.items()}, key=k_learn,
            reward_stats=RunningStats(jnp.full((), 1e-4, jnp.float32), jnp.zeros((), jnp.float32),
                                      jnp.ones((), jnp.float32)),
        )
        if axis_name is not None:
            k_actor = jax.random.fold_in(k_actor, jax.lax.axis_index(axis_name))
            k_eval = jax.random.fold_in(k_eval, jax.lax.axis_index(axis_name))
        k_reset, k_base = jax.random.split(k_actor)
        env_state, obs = env.reset(k_reset)
        zeros = jnp.zeros((num_envs,), jnp.float32)
        actor = ActorState(key=k_base, env_state=env_state, obs=obs, episode_return=zeros,
                           discounted_return=zeros, discount_power=jnp.ones_like(zeros), norm_return=zeros)
        evaluator = None
        if evaluating:
            k_reset, k_base = jax.random.split(k_eval)
            env_state, obs = test_env.reset(k_reset)
            z = jnp.zeros((num_test,), jnp.float32)
            evaluator = EvalState(key=k_base, env_state=env_state, obs=obs, episode_return=z, discounted_return=z,
                                  discount_power=jnp.ones_like(z))
        return RunnerState(learner, actor, evaluator)

    # ---- one iteration ---------------------------------------------------------------------------
    def iteration(state: RunnerState, i, axis_name):
        state, batch, (ret_sum, disc_sum, ret_count) = collect(state, i, axis_name)
        learner, actor, evaluator = state

        if c.probe_interval > 0:
            def do_probe():
                m = probe(learner, batch, i, actor.key)
                if axis_name is None:
                    return m
                # each device probes its own rollout shard; report the mean over devices
                return ActorCriticProbes(m.probed, *jax.lax.pmean(tuple(m[1:]), axis_name))

            probes = jax.lax.cond(i % c.probe_interval == 0, do_probe, empty_probes)
        else:
            probes = empty_probes()

        learner, upd = learner_update(learner, batch, i, axis_name)

        zero = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))
        evaluated = jnp.zeros((), bool)
        test = zero
        if evaluating:
            evaluated = i % c.eval_interval == 0

            def do_eval(ev):
                ev, ended = evaluate(learner, ev, i)
                return ev, (ended if axis_name is None else jax.lax.psum(ended, axis_name))

            evaluator, test = jax.lax.cond(evaluated, do_eval, lambda ev: (ev, zero), evaluator)
        if axis_name is not None:
            ret_sum, disc_sum, ret_count = jax.lax.psum((ret_sum, disc_sum, ret_count), axis_name)
        metrics = ActorCriticMetrics(
            env_steps=((i + 1) * steps_per_iter).astype(jnp.int32), learned=jnp.ones((), bool), loss=upd["loss"],
            policy_loss=upd["policy_loss"], value_loss=upd["value_loss"], entropy=upd["entropy"],
            advantage_loss=upd["advantage_loss"], approx_kl=upd["approx_kl"], clip_fraction=upd["clip_fraction"],
            critic_updated=upd["critic_updated"], return_sum=ret_sum, discounted_return_sum=disc_sum,
            return_count=ret_count, evaluated=evaluated, test_return_sum=test[0], test_discounted_return_sum=test[1],
            test_return_count=test[2], probes=probes,
        )
        return RunnerState(learner, actor, evaluator), metrics

    def run_local(state, start, length, axis_name):
        if length == 1:  # no loop around the iteration (see `update_unroll`); metrics still get a [1] axis
            state, m = iteration(state, jnp.asarray(start, jnp.int32), axis_name)
            return state, jax.tree.map(lambda x: x[None], m)
        idx = jnp.asarray(start, jnp.int32) + jnp.arange(length, dtype=jnp.int32)
        return jax.lax.scan(lambda s, i: iteration(s, i, axis_name), state, idx)

    # ---- single device or shard_map ---------------------------------------------------------------
    if d == 1:
        def init(key):
            return init_local(key, None)

        def run(state, start, length):
            return run_local(state, start, length, None)
    else:
        mesh = jax.make_mesh((d,), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,))
        spec = RunnerState(learner=P(), actor=P(AXIS), evaluator=P(AXIS) if evaluating else None)

        def add_axis(s):
            return s._replace(actor=jax.tree.map(lambda x: x[None], s.actor),
                              evaluator=jax.tree.map(lambda x: x[None], s.evaluator))

        def drop_axis(s):
            return s._replace(actor=jax.tree.map(lambda x: x[0], s.actor),
                              evaluator=jax.tree.map(lambda x: x[0], s.evaluator))

        def init(key):
            return jax.shard_map(lambda k: add_axis(init_local(k, AXIS)), mesh=mesh, in_specs=P(),
                                 out_specs=spec)(_typed_key(key))

        def run(state, start, length):
            def body(s, st):
                s, m = run_local(drop_axis(s), st, length, AXIS)
                return add_axis(s), m

            return jax.shard_map(body, mesh=mesh, in_specs=(spec, P()), out_specs=(spec, P()))(
                state, jnp.asarray(start, jnp.int32))

    def reattach_env(state: RunnerState) -> RunnerState:
        if env.jittable:
            return state
        env_state, obs = env.reset(state.actor.key)
        z = jnp.zeros((num_envs,), jnp.float32)
        actor = state.actor._replace(env_state=env_state, obs=obs, episode_return=z, discounted_return=z,
                                     discount_power=jnp.ones_like(z), norm_return=z)
        evaluator = state.evaluator
        if evaluator is not None:
            env_state, obs = test_env.reset(evaluator.key)
            z = jnp.zeros((num_test,), jnp.float32)
            evaluator = evaluator._replace(env_state=env_state, obs=obs, episode_return=z, discounted_return=z,
                                           discount_power=jnp.ones_like(z))
        return state._replace(actor=actor, evaluator=evaluator)

    return ActorCriticAgent(
        config=c, algo=algo, env=env, test_env=test_env, networks=nets, optimizer=optimizer,
        actor_name=actor_name, critic_name=critic_name, train_env_options=train_opts, test_env_options=test_opts,
        num_iterations=num_iterations, steps_per_iteration=steps_per_iter, init=init, run=run, collect=collect,
        learner_update=learner_update, probe_sample=probe_sample, update_matrices=update_matrices, probe=probe,
        policy_loss=policy_loss, value_loss=value_loss, policy_logits=policy_logits, value=value,
        features=features, evaluate=evaluate, reattach_env=reattach_env,
    )


def make_train(config: ActorCriticConfig) -> Callable[[jax.Array], Tuple[RunnerState, ActorCriticMetrics]]:
    """`train(key) -> (final RunnerState, ActorCriticMetrics stacked [num_iterations])`, one jittable function.

    The config is validated here, before anything is traced: a bad field raises ValueError naming it
    and the fix. Run many seeds at once with `jax.jit(jax.vmap(train))(jax.random.split(key, n))`
    (jitted gymnax environments only).

    Example (CartPole, a few seconds):
      >>> import jax
      >>> cfg = ActorCriticConfig(env="CartPole-v1", hidden=(16,), num_envs=4, num_steps=32,
      ...                         num_minibatches=4, total_steps=256)
      >>> state, metrics = jax.jit(make_train(cfg))(jax.random.key(0))
      >>> metrics.loss.shape                 # one entry per iteration (4 × 32 env steps + 3 × 4 updates)
      (2,)
    """
    agent = make_agent(config)

    def train(key: jax.Array) -> Tuple[RunnerState, ActorCriticMetrics]:
        return agent.run(agent.init(key), 0, agent.num_iterations)

    return train


# ----------------------------------------------------------------------------------------------------
# Summaries (for logs).


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, np.float64)
    return float(np.nanmean(x)) if x.size and np.isfinite(x).any() else float("nan")


def summarise(metrics: ActorCriticMetrics) -> dict:
    """Scalars summarising a stretch of iterations of ONE seed (fields stacked [T]): means of the
    losses, mean (discounted) returns of the training and test episodes that ended, the generalisation
    gap of Lyle et al. 2022, eq. 6 (train − test mean discounted return; `_undiscounted` beside it),
    and the mean of each probe taken."""
    m = jax.tree.map(np.asarray, metrics)
    n, nt = int(m.return_count.sum()), int(m.test_return_count.sum())

    def ratio(s, k):
        return float(s.sum() / k) if k else float("nan")

    out = {
        "env_steps": int(m.env_steps[-1]),
        "updates": int(m.learned.sum()),
        "loss": _nanmean(m.loss),
        "policy_loss": _nanmean(m.policy_loss),
        "value_loss": _nanmean(m.value_loss),
        "entropy": _nanmean(m.entropy),
        "advantage_loss": _nanmean(m.advantage_loss),
        "approx_kl": _nanmean(m.approx_kl),
        "clip_fraction": _nanmean(m.clip_fraction),
        "episodes": n,
        "return_mean": ratio(m.return_sum, n),
        "discounted_return_mean": ratio(m.discounted_return_sum, n),
        "test_episodes": nt,
        "test_return_mean": ratio(m.test_return_sum, nt),
        "test_discounted_return_mean": ratio(m.test_discounted_return_sum, nt),
    }
    out["generalization_gap"] = out["discounted_return_mean"] - out["test_discounted_return_mean"]
    out["generalization_gap_undiscounted"] = out["return_mean"] - out["test_return_mean"]
    probed = m.probes.probed.astype(bool)
    for name in ActorCriticProbes._fields[1:]:
        out[f"probe_{name}"] = _nanmean(getattr(m.probes, name)[probed])
    return out


def mean_return(metrics: ActorCriticMetrics, last: Optional[int] = None, *, test: bool = False,
                discounted: bool = False) -> np.ndarray:
    """Mean (discounted) return of the training (or `test`) episodes that ended in the last `last`
    iterations (all if None); [...] per seed, NaN where none ended."""
    prefix = "test_" if test else ""
    s = np.asarray(getattr(metrics, f"{prefix}{'discounted_' if discounted else ''}return_sum"), np.float64)
    n = np.asarray(getattr(metrics, f"{prefix}return_count"))
    if last is not None:
        s, n = s[..., -last:], n[..., -last:]
    total = n.sum(-1)
    return np.where(total > 0, s.sum(-1) / np.maximum(total, 1), np.nan)


def generalization_gap(metrics: ActorCriticMetrics, last: Optional[int] = None, *,
                       discounted: bool = True) -> np.ndarray:
    """Lyle et al. 2022, eq. 6: E_train[Σ γᵗ rₜ] − E_test[Σ γᵗ rₜ] under the current policy, estimated by
    the mean discounted return of the training and test episodes that ended in the last `last`
    iterations (`discounted=False`: undiscounted returns, as ProcGen results are usually reported)."""
    return (mean_return(metrics, last, discounted=discounted)
            - mean_return(metrics, last, test=True, discounted=discounted))


core.register_family(ActorCriticConfig, core.Family("actor_critic", make_agent, summarise, mean_return))
