"""One value-based training loop for DQN, Double DQN, C51 and QR-DQN: `make_train(config) -> train(key)`.

The four agents share everything (acting, replay, target network, optimizer, probes) and differ
only in their head and per-example loss, looked up in `ALGOS`:

  =========== =========================== =====================================================
  algo        head (`tdjax.networks`)     per-example loss (`tdjax.losses`)
  =========== =========================== =====================================================
  dqn         QHead → Q [A]               q_learning_loss(q_tm1, a, r, γd, q_t⁻)
  double_dqn  QHead → Q [A]               double_q_learning_loss(q_tm1, a, r, γd, q_t⁻, q_t)
  c51         C51Head → logits [A, N]     categorical_q_learning_loss(z, l_tm1, a, r, γd, z, l_t⁻)
  qr_dqn      QRHead → quantiles [A, N]   quantile_q_learning_loss(θ_tm1, τ, a, r, γd, θ_t⁻, θ_t⁻, κ)
  =========== =========================== =====================================================

(⁻: target network; d = 0 at termination, 1 otherwise, so truncated episodes bootstrap from their
final observation.)

A run is `num_iterations = total_steps // (num_envs · train_frequency)` ITERATIONS, scanned with
`jax.lax.scan`. One iteration = `train_frequency` ε-greedy steps of all `num_envs` environments
(stored in replay) followed by ONE gradient update on `batch_size` transitions sampled uniformly
from replay. The first `warmup_iterations = ⌈learning_starts / (num_envs · train_frequency)⌉`
iterations only collect data. After u gradient updates the target network is refreshed when u is a
multiple of `target_update_interval`, and the probes of `tdjax.train.probes` run when u is a
multiple of `probe_interval` (inside jit, via `lax.cond`).

Random numbers: iteration i uses `fold_in(actor.key, i)`, never a carried split, so a run cut into
chunks (`train_with_checkpoints`) gives bit-identical results to one that was not, and the probes
or minibatch of any iteration can be recomputed outside the loop.

The iteration index is passed to the scan as data that `jax.vmap` over seeds does not batch, so
the `lax.cond`s on it stay real branches (not both-sides `select`s) when many seeds run at once:
`jax.jit(jax.vmap(make_train(config)))(keys)`.

With `num_devices > 1` the run is data-parallel with `jax.shard_map` over a 1-D mesh axis "data":
each device steps `num_envs / num_devices` environments into its own replay shard, samples
`batch_size / num_devices` transitions, and the gradients are averaged with `lax.pmean`, so every
device applies the same update as one device would on the whole batch. The learner state is
replicated; actor leaves get a leading [num_devices] axis.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from tdjax import envs as envs_lib
from tdjax._src.losses import (
    categorical_q_learning_loss,
    double_q_learning_loss,
    q_learning_loss,
    quantile_q_learning_loss,
)
from tdjax._src.outputs import scalar_output_fn
from tdjax.networks.heads import TORSOS, C51Head, QHead, QRHead, ValueNetwork
from tdjax.train import core
from tdjax.train import probes as probes_lib
from tdjax.train import replay as replay_lib
from tdjax.train.validation import check_choice, check_static_phase, check_types, require

__all__ = [
    "ValueConfig",
    "Algo",
    "ALGOS",
    "LearnerState",
    "ActorState",
    "RunnerState",
    "ValueMetrics",
    "ValueAgent",
    "make_agent",
    "make_train",
    "summarise",
    "mean_return",
]

AXIS = "data"


# ----------------------------------------------------------------------------------------------------
# Configuration.


@dataclasses.dataclass(frozen=True)
class ValueConfig:
    """Everything a value-based run depends on. Frozen: derive variants with `config.replace(...)`.

    Counting units: `total_steps`, `learning_starts`, `eps_decay_steps` count environment steps over
    all environments; `buffer_size`, `batch_size`, `probe_k` count transitions;
    `target_update_interval` and `probe_interval` count gradient updates; `checkpoint_interval`
    counts iterations (see the module docstring).
    """

    env: str = "CartPole-v1"  # a gymnax name (tdjax.envs.ENV_NAMES) or an envpool id ("Pong-v5")
    # envpool only (Atari, ProcGen): seed, how it is stepped inside jit, extra envpool.make options
    env_seed: int = 0
    env_backend: str = "xla"  # "xla" (envpool's XLA custom call) | "host" (ordered io_callback)
    env_options: Tuple[Tuple[str, Any], ...] = ()  # e.g. (("episodic_life", False),)
    algo: str = "dqn"  # "dqn" | "double_dqn" | "c51" | "qr_dqn"
    network: str = "auto"  # "auto" | "mlp" | "minatar_cnn" | "nature_cnn" | "impala_cnn"
    hidden: Tuple[int, ...] = (64, 64)  # MLP torso widths (network="mlp")
    num_envs: int = 4
    total_steps: int = 50_000
    buffer_size: int = 10_000
    batch_size: int = 64
    learning_starts: int = 1_000
    train_frequency: int = 1  # vectorised env steps per gradient update
    target_update_interval: int = 250
    gamma: float = 0.99
    # optimizer
    optimizer: str = "adam"  # "adam" | "rmsprop"
    lr: float = 1e-3
    adam_eps: float = 1e-8
    rmsprop_decay: float = 0.95
    rmsprop_eps: float = 0.01
    rmsprop_centered: bool = True
    max_grad_norm: Optional[float] = 10.0  # None: no clipping
    # ε-greedy: linear from eps_start to eps_end over eps_decay_steps env steps
    eps_start: float = 1.0
    eps_end: float = 0.05
    eps_decay_steps: int = 10_000
    # distributional heads
    n_atoms: int = 51
    v_min: float = -10.0
    v_max: float = 10.0
    n_quantiles: int = 200
    qr_kappa: float = 1.0
    # probes (Lyle et al. 2022 §5.1, App. B.1; Bengio et al. 2020 §5)
    probe_interval: int = 0  # updates between probes; 0 disables them
    probe_k: int = 32  # transitions in the update matrix
    probe_rank_eps: float = 0.1
    probe_srank_delta: float = 0.01
    probe_dormant_tau: float = 0.025
    probe_sign_window: int = 5
    probe_sign_steps: int = 32  # recent steps per environment for the TD-sign variance
    probe_chunk_size: Optional[int] = None  # examples per vmapped chunk inside the probes
    # checkpointing (train_with_checkpoints)
    checkpoint_interval: int = 1_000  # iterations per jitted chunk / checkpoint
    num_devices: int = 1


    def replace(self, **changes: Any) -> "ValueConfig":
        """A copy with `changes` applied (the config itself is never mutated)."""
        return dataclasses.replace(self, **changes)


# ----------------------------------------------------------------------------------------------------
# The algorithm table: head + per-example loss adapter.


class Algo(NamedTuple):
    """What distinguishes one value-based agent from another."""

    make_head: Callable[[ValueConfig, int], nn.Module]  # (config, num_actions) -> head module
    # loss(config, head, out_tm1, a_tm1, r_t, discount_t, out_t_target, out_t_online) -> scalar
    loss: Callable[..., jax.Array]
    distribution: Optional[str]  # for tdjax.scalar_output_fn / expected_q
    uses_online_next: bool  # whether the loss needs the online network at xₜ (Double DQN)


def _dqn_loss(config, head, q_tm1, a_tm1, r_t, discount_t, q_t, q_t_online):
    return q_learning_loss(q_tm1, a_tm1, r_t, discount_t, q_t)


def _double_dqn_loss(config, head, q_tm1, a_tm1, r_t, discount_t, q_t, q_t_online):
    return double_q_learning_loss(q_tm1, a_tm1, r_t, discount_t, q_t, q_t_online)


def _c51_loss(config, head, logits_tm1, a_tm1, r_t, discount_t, logits_t, logits_t_online):
    return categorical_q_learning_loss(head.atoms, logits_tm1, a_tm1, r_t, discount_t, head.atoms, logits_t)


def _qr_dqn_loss(config, head, dist_tm1, a_tm1, r_t, discount_t, dist_t, dist_t_online):
    # QR-DQN picks a* with the target network too (Dabney et al. 2018, Algorithm 1).
    return quantile_q_learning_loss(dist_tm1, head.taus, a_tm1, r_t, discount_t, dist_t, dist_t,
                                    kappa=float(config.qr_kappa))


ALGOS = {
    "dqn": Algo(lambda c, a: QHead(a), _dqn_loss, None, False),
    "double_dqn": Algo(lambda c, a: QHead(a), _double_dqn_loss, None, True),
    "c51": Algo(lambda c, a: C51Head(a, c.n_atoms, c.v_min, c.v_max), _c51_loss, "categorical", False),
    "qr_dqn": Algo(lambda c, a: QRHead(a, c.n_quantiles), _qr_dqn_loss, "quantile", False),
}
"""algo name → `Algo`. Add an entry to add an agent; the loop does not change."""


# ----------------------------------------------------------------------------------------------------
# State and metrics.


class LearnerState(NamedTuple):
    """Replicated across devices."""

    params: Any  # pytree of the network parameters θ.
    target_params: Any  # pytree like params: θ⁻, refreshed every target_update_interval updates.
    opt_state: Any  # optax state of the optimizer at θ.


class ActorState(NamedTuple):
    """Per device (a leading [num_devices] axis on every leaf when num_devices > 1)."""

    key: jax.Array  # shape=(), typed PRNG key. Iteration i draws from fold_in(key, i).
    env_state: Any  # VecEnv state: gymnax leaves [E, ...] (E = num_envs / num_devices); envpool handle.
    obs: jax.Array  # shape=[E, *obs_shape], float32. Current observations.
    episode_return: jax.Array  # shape=[E], float32. Undiscounted return of the running episodes.
    episode_length: jax.Array  # shape=[E], int32.
    replay: replay_lib.ReplayState  # [buffer_size / num_envs slots, E] transitions.


class RunnerState(NamedTuple):
    learner: LearnerState
    actor: ActorState


class ValueMetrics(NamedTuple):
    """Per iteration (a run returns each field stacked: [num_iterations], or [seeds, num_iterations])."""

    env_steps: jax.Array  # shape=(), int32. Environment steps (all envs) after this iteration.
    epsilon: jax.Array  # shape=(), float32. ε at the iteration's first step.
    learned: jax.Array  # shape=(), bool. A gradient update was made (False during warm-up).
    loss: jax.Array  # shape=(), float32. Mean minibatch loss before the update; NaN if not learned.
    q_mean: jax.Array  # shape=(), float32. Mean of maxₐ Q over the minibatch; NaN if not learned.
    return_sum: jax.Array  # shape=(), float32. Sum of the returns of episodes ended this iteration.
    return_count: jax.Array  # shape=(), int32. Number of episodes ended this iteration.
    probes: probes_lib.ProbeMetrics  # NaN fields (probed=False) except every probe_interval updates.


# ----------------------------------------------------------------------------------------------------
# Validation (before any tracing or compilation).


def _validate(c: ValueConfig) -> None:
    if not isinstance(c, ValueConfig):
        raise ValueError(f"make_train: expected a ValueConfig, got {type(c).__name__}.")
    check_types(c)
    envs_lib.check_env_name(c.env, field="ValueConfig.env")
    check_choice(c, "env_backend", ("xla", "host"))
    require(all(isinstance(o, tuple) and len(o) == 2 and isinstance(o[0], str) for o in c.env_options), c,
            "env_options", "must be a tuple of (name, value) pairs", "e.g. env_options=(('num_levels', 200),)")
    if not envs_lib.vec_spec(c.env).jittable:
        require(c.num_devices == 1, c, "num_devices",
                f"{c.env} is an envpool environment, stepped by one host process",
                "use num_devices=1 for envpool games (data-parallel runs need jitted gymnax environments)")
    check_choice(c, "algo", ALGOS)
    check_choice(c, "network", ("auto",) + tuple(TORSOS))
    check_choice(c, "optimizer", ("adam", "rmsprop"))
    positive = ("num_envs", "total_steps", "buffer_size", "batch_size", "train_frequency",
                "target_update_interval", "probe_k", "probe_sign_window", "probe_sign_steps",
                "checkpoint_interval", "num_devices", "n_quantiles")
    for name in positive:
        require(getattr(c, name) >= 1, c, name, "must be a positive integer", f"set {name} >= 1")
    require(len(c.hidden) >= 1 and all(h >= 1 for h in c.hidden), c, "hidden",
            "the MLP torso needs at least one positive width", "e.g. hidden=(64, 64)")
    require(c.learning_starts >= 0, c, "learning_starts", "must be >= 0", "set learning_starts >= 0")
    require(c.eps_decay_steps >= 0, c, "eps_decay_steps", "must be >= 0", "set eps_decay_steps >= 0")
    require(c.probe_interval >= 0, c, "probe_interval", "must be >= 0", "use 0 to disable probes")
    require(c.probe_chunk_size is None or c.probe_chunk_size >= 1, c, "probe_chunk_size",
            "must be None or >= 1", "use None (all at once) or a positive chunk size")
    require(c.lr > 0 and math.isfinite(c.lr), c, "lr", "the learning rate must be a positive number", "e.g. lr=1e-3")
    require(0.0 <= c.gamma <= 1.0, c, "gamma", "the discount must lie in [0, 1]", "e.g. gamma=0.99")
    for name in ("eps_start", "eps_end"):
        require(0.0 <= getattr(c, name) <= 1.0, c, name, "ε must lie in [0, 1]", f"set 0 <= {name} <= 1")
    for name in ("adam_eps", "rmsprop_eps"):
        require(getattr(c, name) > 0, c, name, "must be > 0", f"set {name} > 0")
    require(0.0 <= c.rmsprop_decay < 1.0, c, "rmsprop_decay", "must lie in [0, 1)", "e.g. rmsprop_decay=0.95")
    require(c.max_grad_norm is None or c.max_grad_norm > 0, c, "max_grad_norm", "must be > 0 or None",
            "use None to disable clipping")
    require(c.n_atoms >= 2, c, "n_atoms", "C51 needs at least 2 atoms", "e.g. n_atoms=51")
    require(c.v_min < c.v_max, c, "v_min", f"the support [v_min, v_max] = [{c.v_min}, {c.v_max}] is empty",
            "set v_min < v_max")
    require(c.qr_kappa >= 0, c, "qr_kappa", "the Huber threshold must be >= 0", "e.g. qr_kappa=1.0")
    require(0.0 < c.probe_rank_eps < 1.0, c, "probe_rank_eps", "must lie in (0, 1)", "the paper uses 0.1")
    require(0.0 < c.probe_srank_delta < 1.0, c, "probe_srank_delta", "must lie in (0, 1)", "Kumar et al. use 0.01")
    require(c.probe_dormant_tau >= 0, c, "probe_dormant_tau", "must be >= 0", "Sokar et al. use 0 or 0.025")

    d = c.num_devices
    n_dev = jax.device_count()
    require(d <= n_dev, c, "num_devices", f"only {n_dev} device(s) are visible",
            f"set num_devices <= {n_dev}, or on CPU start Python with "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={d}")
    for name in ("num_envs", "batch_size"):
        require(getattr(c, name) % d == 0, c, name, f"must be divisible by num_devices={d}",
                f"use a multiple of {d}")
    require(c.buffer_size % c.num_envs == 0, c, "buffer_size",
            f"the buffer holds whole vectorised steps, so it must be a multiple of num_envs={c.num_envs}",
            f"e.g. buffer_size={max(1, c.buffer_size // c.num_envs) * c.num_envs}")
    require(c.batch_size <= c.buffer_size, c, "batch_size",
            f"larger than buffer_size={c.buffer_size}, so a minibatch cannot come from the replay buffer",
            "set batch_size <= buffer_size (or raise buffer_size)")
    require(c.learning_starts >= c.batch_size, c, "learning_starts",
            f"updates would start before the buffer holds one minibatch (batch_size={c.batch_size})",
            "set learning_starts >= batch_size")
    per_iter = c.num_envs * c.train_frequency
    require(c.total_steps >= per_iter, c, "total_steps",
            f"shorter than one iteration (num_envs * train_frequency = {per_iter} env steps)",
            f"set total_steps >= {per_iter}")
    require(c.learning_starts < c.total_steps, c, "learning_starts",
            f"no update would happen within total_steps={c.total_steps}", "set learning_starts < total_steps")

    if c.probe_interval > 0:
        require(c.probe_k >= 2, c, "probe_k", "the update matrix needs at least 2 transitions",
                "set probe_k >= 2 (the paper samples k transitions from replay), or probe_interval=0")
        slots = min(c.buffer_size // c.num_envs, _warmup_iterations(c) * c.train_frequency + c.train_frequency)
        stored = slots * (c.num_envs // d)
        require(c.probe_k <= stored, c, "probe_k",
                f"the first probe sees only {stored} stored transitions per device (set by learning_starts, "
                "buffer_size, num_envs)", f"set probe_k <= {stored} or raise learning_starts")
        require(c.probe_sign_steps <= slots, c, "probe_sign_steps",
                f"the buffer holds only {slots} steps per environment at the first probe",
                f"set probe_sign_steps <= {slots} or raise learning_starts/buffer_size")
        require(c.probe_sign_window <= c.probe_sign_steps, c, "probe_sign_window",
                f"longer than probe_sign_steps={c.probe_sign_steps}", "set probe_sign_window <= probe_sign_steps")


def _warmup_iterations(c: ValueConfig) -> int:
    return -(-c.learning_starts // (c.num_envs * c.train_frequency))


# ----------------------------------------------------------------------------------------------------
# Building the agent.


def _optimizer(c: ValueConfig) -> optax.GradientTransformation:
    if c.optimizer == "adam":
        tx = optax.adam(c.lr, eps=c.adam_eps)
    else:
        tx = optax.rmsprop(c.lr, decay=c.rmsprop_decay, eps=c.rmsprop_eps, centered=c.rmsprop_centered)
    if c.max_grad_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(c.max_grad_norm), tx)
    return tx


def auto_network(env_name: str, obs_shape: Tuple[int, ...]) -> str:
    """The torso `network="auto"` picks: MLP for vectors, the MinAtar CNN for small maps, the IMPALA CNN
    for ProcGen, the Nature CNN for Atari frames."""
    if len(obs_shape) == 1:
        return "mlp"
    if obs_shape[0] <= 16:
        return "minatar_cnn"
    return "impala_cnn" if env_name.endswith("-v0") else "nature_cnn"


def _network(c: ValueConfig, env: Any, head: nn.Module) -> ValueNetwork:
    name = c.network
    if name == "auto":
        name = auto_network(c.env, env.obs_shape)
    if name == "mlp":
        require(len(env.obs_shape) == 1, c, "network",
                f"an MLP torso needs vector observations but {c.env} gives {env.obs_shape}",
                "use network='minatar_cnn' (MinAtar) or 'auto'")
        torso = TORSOS["mlp"](tuple(c.hidden))
    else:
        require(len(env.obs_shape) == 3, c, "network",
                f"a convolutional torso needs [H, W, C] observations but {c.env} gives {env.obs_shape}",
                "use network='mlp' or 'auto'")
        torso = TORSOS[name]()
    net = ValueNetwork(torso, head)
    try:  # abstract shapes only: nothing is compiled
        jax.eval_shape(lambda x: net.init(jax.random.key(0), x), jax.ShapeDtypeStruct(env.obs_shape, jnp.float32))
    except Exception as err:  # noqa: BLE001 - reported with the field that caused it
        raise ValueError(
            f"ValueConfig.network={c.network!r}: this torso cannot take {c.env}'s observations of shape "
            f"{env.obs_shape} ({type(err).__name__}: {err}). Fix: use network='auto', or 'nature_cnn' "
            "only for 84×84 frames."
        ) from None
    return net


def _typed_key(key: jax.Array) -> jax.Array:
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(key)


@dataclasses.dataclass(frozen=True, eq=False)
class ValueAgent:
    """The pieces `make_train` composes; all functions are pure and jittable.

    Attributes:
      config, env, network, head, algo, optimizer: what the agent is built from.
      num_iterations, warmup_iterations: see the module docstring.
      init: `init(key) -> RunnerState`.
      run: `run(state, start, length, phase=None) -> (state, ValueMetrics stacked [length])`:
        iterations start .. start+length−1 (`length` static; `start` may be traced but must not be
        batched). `phase`, only with `length == 1`: the static `phase(start)`, which replaces the
        `lax.cond`s around the update and the probes by plain Python branches (see `phase`).
      phase: `phase(i) -> (learning, probed)`, Python bools for iteration i (an int): whether it
        makes a gradient update (i ≥ warmup_iterations) and whether it probes. `run_host_driven`
        passes it, so a host-driven iteration has no conditional around its update: XLA:CPU runs a
        convolution gradient inside a taken `lax.cond` ~10× slower than at top level
        (benchmarks/RESULTS.md, table D′). The maths is the same as the traced conditions'.
      example_loss: `example_loss(params, target_params, transition) -> scalar`, ONE transition.
      learner_update: `learner_update(learner, batch, axis_name=None) -> (learner, loss)`: one
        gradient step on the mean loss of `batch`; with `axis_name`, gradients and loss are
        `lax.pmean`-ed over it (call inside shard_map).
      output_fn: `output_fn(params, x)`: Q reduced by max (expected Q for distributional heads).
      q_values: `q_values(params, xs) -> [..., A]` expected action values.
      features: `features(params, xs) -> [..., d]` penultimate activations.
      steps_per_iteration: environment steps (all environments) per iteration.
      reattach_env: `reattach_env(state) -> state` with freshly reset environments and zeroed running
        episode statistics, the rest unchanged: how a checkpoint of a run on envpool (whose emulator
        state lives outside JAX) is resumed. Identity for jitted environments.
    """

    config: ValueConfig
    env: envs_lib.VecEnv
    network: ValueNetwork
    head: nn.Module
    algo: Algo
    optimizer: optax.GradientTransformation
    num_iterations: int
    warmup_iterations: int
    init: Callable[[jax.Array], RunnerState]
    run: Callable[..., Tuple[RunnerState, ValueMetrics]]
    phase: Callable[[int], Tuple[bool, bool]]
    example_loss: Callable[[Any, Any, replay_lib.Transition], jax.Array]
    learner_update: Callable[..., Tuple[LearnerState, jax.Array]]
    output_fn: Callable[[Any, Any], jax.Array]
    q_values: Callable[[Any, Any], jax.Array]
    features: Callable[[Any, Any], jax.Array]
    probe_settings: probes_lib.ProbeSettings
    steps_per_iteration: int
    reattach_env: Callable[[RunnerState], RunnerState]


def make_agent(config: ValueConfig) -> ValueAgent:
    """Validates `config` (ValueError naming the field and the fix, before any compilation) and
    builds the agent's pure functions."""
    _validate(config)
    c = config
    algo = ALGOS[c.algo]
    spec = envs_lib.vec_spec(c.env)
    head = algo.make_head(c, spec.num_actions)
    network = _network(c, spec, head)  # checked on abstract shapes: still nothing compiled
    optimizer = _optimizer(c)
    d = c.num_devices
    num_envs = c.num_envs // d
    env = envs_lib.make_vec(c.env, num_envs, seed=c.env_seed, backend=c.env_backend, options=dict(c.env_options))
    batch_size = c.batch_size // d
    slots = c.buffer_size // c.num_envs
    num_iterations = c.total_steps // (c.num_envs * c.train_frequency)
    warmup = _warmup_iterations(c)
    steps_per_iter = c.num_envs * c.train_frequency
    eps_schedule = optax.linear_schedule(c.eps_start, c.eps_end, max(c.eps_decay_steps, 1))
    probe_settings = probes_lib.ProbeSettings(
        rank_eps=float(c.probe_rank_eps), srank_delta=float(c.probe_srank_delta),
        dormant_tau=float(c.probe_dormant_tau), sign_window=c.probe_sign_window, chunk_size=c.probe_chunk_size,
    )
    dummy_obs = jnp.zeros(env.obs_shape, jnp.float32)

    scale = env.obs_scale  # 1/255 for pixels: observations are stored in their own units

    def prep(x):
        return x if scale == 1.0 else x * scale

    def apply(params, x):
        return network.apply(params, prep(x))

    def q_values(params, xs):
        return network.apply(params, prep(xs), method=ValueNetwork.q_values)

    def features(params, xs):
        return network.apply(params, prep(xs), method=ValueNetwork.features)

    output_fn = scalar_output_fn(apply, "max", distribution=algo.distribution,
                                 atoms=head.atoms if algo.distribution == "categorical" else None)

    def example_loss(params, target_params, tr: replay_lib.Transition) -> jax.Array:
        out_tm1 = apply(params, tr.obs)
        out_t = apply(target_params, tr.next_obs)
        out_t_online = apply(params, tr.next_obs) if algo.uses_online_next else None
        return algo.loss(c, head, out_tm1, tr.action, tr.reward, c.gamma * tr.discount, out_t, out_t_online)

    def learner_update(learner: LearnerState, batch: replay_lib.Transition, axis_name: Optional[str] = None):
        def batch_loss(params):
            losses = jax.vmap(example_loss, in_axes=(None, None, 0))(params, learner.target_params, batch)
            if env.always_valid:
                return jnp.mean(losses)
            # envpool's reset steps are stored but are not transitions: they get no weight
            w = batch.valid.astype(losses.dtype)
            return jnp.sum(losses * w) / jnp.maximum(jnp.sum(w), 1.0)

        params = learner.params
        if axis_name is not None:
            # Mark the replicated params as device-varying, so that each device's gradient is its own
            # shard's (without this, shard_map's AD would already psum the cotangents), then average.
            params = jax.lax.pcast(params, axis_name, to="varying")
        loss, grads = jax.value_and_grad(batch_loss)(params)
        if axis_name is not None:
            grads, loss = jax.lax.pmean((grads, loss), axis_name)
        updates, opt_state = optimizer.update(grads, learner.opt_state, learner.params)
        params = optax.apply_updates(learner.params, updates)
        return learner._replace(params=params, opt_state=opt_state), loss

    # ---- init --------------------------------------------------------------------------------
    def init_local(key, axis_name):
        key = _typed_key(key)
        k_net, k_actor = jax.random.split(key)
        params = network.init(k_net, dummy_obs)
        learner = LearnerState(params=params, target_params=params, opt_state=optimizer.init(params))
        if axis_name is not None:
            k_actor = jax.random.fold_in(k_actor, jax.lax.axis_index(axis_name))
        k_reset, k_base = jax.random.split(k_actor)
        env_state, obs = env.reset(k_reset)
        example = replay_lib.Transition(
            obs=dummy_obs, action=jnp.zeros((), jnp.int32), reward=jnp.zeros((), jnp.float32),
            discount=jnp.zeros((), jnp.float32), next_obs=dummy_obs, done=jnp.zeros((), bool),
            valid=jnp.zeros((), bool),
        )
        actor = ActorState(
            key=k_base, env_state=env_state, obs=obs,
            episode_return=jnp.zeros((num_envs,), jnp.float32),
            episode_length=jnp.zeros((num_envs,), jnp.int32),
            replay=replay_lib.init(example, slots, num_envs, env.obs_storage_dtype),
        )
        return RunnerState(learner, actor)

    # ---- one iteration ---------------------------------------------------------------------------
    def act_and_store(params, actor: ActorState, i, k_act, k_env):
        def vector_step(actor: ActorState, t):
            eps = eps_schedule((i * c.train_frequency + t) * c.num_envs)
            k_explore, k_random = jax.random.split(jax.random.fold_in(k_act, t))
            greedy = jnp.argmax(q_values(params, actor.obs), axis=-1)
            random = jax.random.randint(k_random, (num_envs,), 0, env.num_actions)
            explore = jax.random.uniform(k_explore, (num_envs,)) < eps
            action = jnp.where(explore, random, greedy).astype(jnp.int32)
            env_state, step = env.step(actor.env_state, jax.random.fold_in(k_env, t), action)
            done = step.terminated | step.truncated
            transition = replay_lib.Transition(
                obs=actor.obs, action=action, reward=step.reward,
                discount=1.0 - step.terminated.astype(jnp.float32), next_obs=step.next_obs, done=done,
                valid=step.valid,
            )
            # returns are logged per real episode (a game, not an Atari life) in unclipped reward
            end = step.episode_end
            ep_return = actor.episode_return + step.raw_reward
            ep_length = actor.episode_length + step.valid.astype(jnp.int32)
            ended = (jnp.sum(jnp.where(end, ep_return, 0.0)), jnp.sum(end.astype(jnp.int32)))
            actor = actor._replace(
                env_state=env_state, obs=step.obs,
                episode_return=jnp.where(end, 0.0, ep_return),
                episode_length=jnp.where(end, 0, ep_length),
                replay=replay_lib.add(actor.replay, transition),
            )
            return actor, (ended, eps)

        actor, ((ret_sum, ret_count), eps) = jax.lax.scan(vector_step, actor, jnp.arange(c.train_frequency))
        return actor, jnp.sum(ret_sum), jnp.sum(ret_count), eps[0]

    def td_errors(learner: LearnerState, seg: replay_lib.Transition) -> jax.Array:
        """δ = r + γ d maxₐ Q̄⁻(x′, a) − Q̄(x, a) on [T, E] consecutive transitions (expected Q)."""
        q_tm1 = q_values(learner.params, seg.obs)
        q_t = q_values(learner.target_params, seg.next_obs)
        q_taken = jnp.take_along_axis(q_tm1, seg.action[..., None], axis=-1)[..., 0]
        return seg.reward + c.gamma * seg.discount * jnp.max(q_t, axis=-1) - q_taken

    def probe(learner: LearnerState, actor: ActorState, key) -> probes_lib.ProbeMetrics:
        k_batch, k_fresh = jax.random.split(key)
        batch = replay_lib.sample_distinct(actor.replay, k_batch, c.probe_k)
        fresh = network.init(k_fresh, dummy_obs)
        seg = replay_lib.recent(actor.replay, c.probe_sign_steps)
        return probes_lib.value_probes(
            probe_settings,
            loss_fn=lambda p, tr: example_loss(p, learner.target_params, tr),
            output_fn=output_fn, features_fn=features, optimizer=optimizer,
            params=learner.params, opt_state=learner.opt_state, batch=batch, probe_xs=batch.obs,
            fresh_loss_fn=lambda p, tr: example_loss(p, fresh, tr), fresh_params=fresh,
            td_errors=td_errors(learner, seg), done=seg.done | ~seg.valid,
        )

    def phase(i: int) -> Tuple[bool, bool]:
        i = int(i)
        learning = i >= warmup
        probed = learning and c.probe_interval > 0 and (i - warmup + 1) % c.probe_interval == 0
        return learning, probed

    def iteration(state: RunnerState, i, axis_name, static_phase: Optional[Tuple[bool, bool]] = None):
        """One iteration. `static_phase` (from `phase(i)` for a concrete i) turns the update's and the
        probe's `lax.cond`s into Python branches; None keeps them traced (inside a scan)."""
        learner, actor = state
        k_act, k_env, k_sample, k_probe = jax.random.split(jax.random.fold_in(actor.key, i), 4)
        actor, ret_sum, ret_count, eps = act_and_store(learner.params, actor, i, k_act, k_env)
        learning = i >= warmup
        nan = jnp.full((), jnp.nan, jnp.float32)

        def learn(learner):
            batch = replay_lib.sample(actor.replay, k_sample, batch_size)
            q_mean = jnp.mean(jnp.max(q_values(learner.params, batch.obs), axis=-1))
            if axis_name is not None:
                q_mean = jax.lax.pmean(q_mean, axis_name)
            learner, loss = learner_update(learner, batch, axis_name)
            return learner, loss.astype(jnp.float32), q_mean.astype(jnp.float32)

        def skip(learner):
            return learner, nan, nan

        if static_phase is None:
            learner, loss, q_mean = jax.lax.cond(learning, learn, skip, learner)
        else:
            learning = jnp.asarray(static_phase[0])
            learner, loss, q_mean = (learn if static_phase[0] else skip)(learner)
        updates_done = i - warmup + 1
        refresh = learning & (updates_done % c.target_update_interval == 0)
        learner = jax.lax.cond(refresh, lambda l: l._replace(target_params=l.params), lambda l: l, learner)

        if c.probe_interval > 0:
            def do_probe():
                m = probe(learner, actor, k_probe)
                if axis_name is None:
                    return m
                # each device probes its own replay shard; report the mean over devices
                return probes_lib.ProbeMetrics(m.probed, *jax.lax.pmean(tuple(m[1:]), axis_name))

            if static_phase is None:
                probed = learning & (updates_done % c.probe_interval == 0)
                probe_metrics = jax.lax.cond(probed, do_probe, probes_lib.empty_probe_metrics)
            else:
                probe_metrics = do_probe() if static_phase[1] else probes_lib.empty_probe_metrics()
        else:
            probe_metrics = probes_lib.empty_probe_metrics()

        if axis_name is not None:
            ret_sum, ret_count = jax.lax.psum((ret_sum, ret_count), axis_name)
        metrics = ValueMetrics(
            env_steps=((i + 1) * steps_per_iter).astype(jnp.int32), epsilon=jnp.asarray(eps, jnp.float32),
            learned=learning, loss=loss, q_mean=q_mean, return_sum=ret_sum, return_count=ret_count,
            probes=probe_metrics,
        )
        return RunnerState(learner, actor), metrics

    def run_local(state, start, length, axis_name, static_phase=None):
        if length == 1:  # no loop around the iteration: XLA:CPU runs convolutions in loops slowly
            state, m = iteration(state, jnp.asarray(start, jnp.int32), axis_name, static_phase)
            return state, jax.tree.map(lambda x: x[None], m)
        idx = jnp.asarray(start, jnp.int32) + jnp.arange(length, dtype=jnp.int32)
        return jax.lax.scan(lambda s, i: iteration(s, i, axis_name), state, idx)

    # ---- single device or shard_map ---------------------------------------------------------------
    if d == 1:
        def init(key):
            return init_local(key, None)

        def run(state, start, length, phase=None):
            check_static_phase(phase, length, 2, "ValueAgent")
            return run_local(state, start, length, None, phase)
    else:
        mesh = jax.make_mesh((d,), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,))
        spec = RunnerState(learner=P(), actor=P(AXIS))

        def add_axis(s):
            return s._replace(actor=jax.tree.map(lambda x: x[None], s.actor))

        def drop_axis(s):
            return s._replace(actor=jax.tree.map(lambda x: x[0], s.actor))

        def init(key):
            return jax.shard_map(lambda k: add_axis(init_local(k, AXIS)), mesh=mesh, in_specs=P(),
                                 out_specs=spec)(_typed_key(key))

        def run(state, start, length, phase=None):
            check_static_phase(phase, length, 2, "ValueAgent")

            def body(s, st):
                s, m = run_local(drop_axis(s), st, length, AXIS, phase)
                return add_axis(s), m

            return jax.shard_map(body, mesh=mesh, in_specs=(spec, P()), out_specs=(spec, P()))(
                state, jnp.asarray(start, jnp.int32))

    def reattach_env(state: RunnerState) -> RunnerState:
        if env.jittable:
            return state
        env_state, obs = env.reset(state.actor.key)
        zeros = jnp.zeros((num_envs,), jnp.float32)
        return state._replace(actor=state.actor._replace(
            env_state=env_state, obs=obs, episode_return=zeros, episode_length=zeros.astype(jnp.int32)))

    return ValueAgent(
        config=c, env=env, network=network, head=head, algo=algo, optimizer=optimizer,
        num_iterations=num_iterations, warmup_iterations=warmup, init=init, run=run, phase=phase,
        example_loss=example_loss, learner_update=learner_update, output_fn=output_fn,
        q_values=q_values, features=features, probe_settings=probe_settings,
        steps_per_iteration=steps_per_iter, reattach_env=reattach_env,
    )


def make_train(config: ValueConfig) -> Callable[[jax.Array], Tuple[RunnerState, ValueMetrics]]:
    """`train(key) -> (final RunnerState, ValueMetrics stacked [num_iterations])`, one jittable function.

    The config is validated here, before anything is traced: a bad field raises ValueError naming it
    and the fix. Run many seeds at once with `jax.jit(jax.vmap(train))(jax.random.split(key, n))`.

    Example (CartPole, a few seconds):
      >>> import jax
      >>> cfg = ValueConfig(env="CartPole-v1", total_steps=2_000, learning_starts=200, batch_size=32,
      ...                   buffer_size=1_000)
      >>> state, metrics = jax.jit(make_train(cfg))(jax.random.key(0))
      >>> metrics.loss.shape                 # one entry per iteration (4 env steps + 1 update)
      (500,)
    """
    agent = make_agent(config)

    def train(key: jax.Array) -> Tuple[RunnerState, ValueMetrics]:
        return agent.run(agent.init(key), 0, agent.num_iterations)

    return train


# ----------------------------------------------------------------------------------------------------
# Summaries (for logs).


def summarise(metrics: ValueMetrics) -> dict:
    """Scalars summarising a stretch of iterations of ONE seed (fields stacked [T]): means over the
    learned iterations, the mean return of the episodes that ended, the mean of each probe taken."""
    m = jax.tree.map(np.asarray, metrics)
    learned = m.learned.astype(bool)
    count = int(m.return_count.sum())
    out = {
        "env_steps": int(m.env_steps[-1]),
        "epsilon": float(m.epsilon[-1]),
        "updates": int(learned.sum()),
        "loss": float(m.loss[learned].mean()) if learned.any() else float("nan"),
        "q_mean": float(m.q_mean[learned].mean()) if learned.any() else float("nan"),
        "episodes": count,
        "return_mean": float(m.return_sum.sum() / count) if count else float("nan"),
    }
    probed = m.probes.probed.astype(bool)
    for name in probes_lib.ProbeMetrics._fields[1:]:
        vals = getattr(m.probes, name)[probed]
        out[f"probe_{name}"] = float(np.nanmean(vals)) if vals.size and np.isfinite(vals).any() else float("nan")
    return out


def mean_return(metrics: ValueMetrics, last: Optional[int] = None) -> np.ndarray:
    """Mean return of the episodes that ended in the last `last` iterations (all if None); [...] per seed."""
    s = np.asarray(metrics.return_sum)
    n = np.asarray(metrics.return_count)
    if last is not None:
        s, n = s[..., -last:], n[..., -last:]
    return s.sum(-1) / np.maximum(n.sum(-1), 1)


core.register_family(ValueConfig, core.Family("value_based", make_agent, summarise, mean_return))
