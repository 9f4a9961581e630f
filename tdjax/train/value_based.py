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

With `num_devices > 1` the run is data-parallel over the mesh axis "data" (`tdjax.train.mesh`):
each device steps `num_envs / num_devices` environments into its own replay shard, samples
`batch_size / num_devices` transitions, and the gradients are averaged with `lax.pmean`, so every
device applies the same update as one device would on the whole batch. The learner state is
replicated; actor leaves get a leading [num_devices] axis.

The loop steps are module-level functions of a `ValueSpec` (the config with the environments,
network and optimizer built from it) and their data; what the loop shares with the other families
(episode bookkeeping, devices, the agent interface) is in `tdjax.train.core`.
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

from tdjax import envs as envs_lib
from tdjax._src.losses import (
    categorical_q_learning_loss,
    double_q_learning_loss,
    q_learning_loss,
    quantile_q_learning_loss,
)
from tdjax._src.outputs import scalar_output_fn
from tdjax.networks.heads import C51Head, QHead, QRHead, ValueNetwork
from tdjax.train import core
from tdjax.train import probes as probes_lib
from tdjax.train import replay as replay_lib
from tdjax.train.host_loop import branch
from tdjax.train.validation import check_choice, require

__all__ = [
    "ValueConfig",
    "Algo",
    "ALGOS",
    "LearnerState",
    "ActorState",
    "RunnerState",
    "ValueMetrics",
    "ValueSpec",
    "ValueAgent",
    "IterationPhase",
    "build_spec",
    "make_agent",
    "summarise",
]


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

    env: str = "CartPole-v1"  # a gymnax name, a registered one ("MaskedImage-digits") or an envpool id ("Pong-v5")
    # envpool only (Atari, ProcGen): seed, how it is stepped inside jit, extra envpool.make options
    env_seed: int = 0  # envpool only: the environments' seed (gymnax envs are seeded by the run's key)
    env_backend: str = "xla"  # "xla" (envpool's XLA custom call) | "host" (ordered io_callback)
    env_options: Tuple[Tuple[str, Any], ...] = ()  # e.g. (("episodic_life", False),)
    algo: str = "dqn"  # "dqn" | "double_dqn" | "c51" | "qr_dqn"
    network: str = "auto"  # "auto" | "mlp" | "minatar_cnn" | "nature_cnn" | "impala_cnn" | "bengio_cnn"
    hidden: Tuple[int, ...] = (64, 64)  # MLP torso widths (network="mlp")
    cnn_width: int = 16  # n_h of the Bengio conv net (network="bengio_cnn"; Bengio et al. 2020 App. B.1)
    cnn_extra_layers: int = 0  # n_L: extra 3×3 conv layers of that net (network="bengio_cnn")
    torso_width: Optional[int] = None  # n_h: minatar_cnn n_h→8n_h, nature_cnn n_h,2n_h,2n_h→16n_h; None: 16, 32
    num_envs: int = 4  # environments stepped together (split over num_devices)
    total_steps: int = 50_000  # length of the run
    buffer_size: int = 10_000  # replay capacity (a multiple of num_envs)
    batch_size: int = 64  # minibatch of one gradient update (split over num_devices)
    learning_starts: int = 1_000  # steps collected before the first update
    train_frequency: int = 1  # vectorised env steps per gradient update
    target_update_interval: int = 250  # updates between copies of θ into the target network θ⁻
    gamma: float = 0.99  # discount γ
    # optimizer
    optimizer: str = "adam"  # "adam" | "rmsprop" | "sgd" | "momentum" (heavy-ball SGD), after clipping
    lr: float = 1e-3  # learning rate
    adam_eps: float = 1e-8  # Adam's ε
    rmsprop_decay: float = 0.95  # RMSProp's decay of the squared-gradient average
    rmsprop_eps: float = 0.01  # RMSProp's ε
    rmsprop_centered: bool = True  # RMSProp divides by the variance, not the second moment
    momentum: float = 0.9  # momentum of optimizer="momentum"
    max_grad_norm: Optional[float] = 10.0  # None: no clipping
    # ε-greedy: linear from eps_start to eps_end over eps_decay_steps env steps
    eps_start: float = 1.0  # ε-greedy: ε at step 0, falling linearly to eps_end
    eps_end: float = 0.05  # ε after eps_decay_steps
    eps_decay_steps: int = 10_000  # steps over which ε falls from eps_start to eps_end
    # distributional heads
    n_atoms: int = 51  # C51: atoms of the categorical return distribution
    v_min: float = -10.0  # C51: smallest atom
    v_max: float = 10.0  # C51: largest atom
    n_quantiles: int = 200  # QR-DQN: quantiles per action
    qr_kappa: float = 1.0  # QR-DQN: Huber threshold κ of the quantile loss
    # probes (Lyle et al. 2022 §5.1, App. B.1; Bengio et al. 2020 §5)
    probe_interval: int = 0  # updates between probes; 0 disables them
    probe_k: int = 32  # transitions in the update matrix
    probe_rank_eps: float = 0.1  # update rank: singular values kept until 1 − ε of the spectrum (Lyle App. B.1)
    probe_srank_delta: float = 0.01  # srank_δ of the features (Kumar et al. 2021)
    probe_dormant_tau: float = 0.025  # τ of the dormant-neuron fraction (Sokar et al. 2023)
    probe_sign_window: int = 5  # window of the TD-error sign variance (Bengio et al. 2020 §5.2)
    probe_sign_steps: int = 32  # recent steps per environment for the TD-sign variance
    probe_chunk_size: Optional[int] = None  # examples per vmapped chunk inside the probes
    # along-trajectory probes (Bengio et al. 2020 §5, Figs 3-5, 7, 12); off by default
    probe_max_offset: int = 0  # X: loss change and stiffness at offsets −X..X of N update samples; 0 disables them
    probe_offset_samples: int = 8  # N: update samples of the offset probes (distinct valid transitions)
    probe_rho_terms: bool = False  # r1, r2, r3 of ρ′ over the probe_k × probe_k pairs (dqn, double_dqn)
    probe_rho_moving_target: bool = False  # ρ′ with the target r + γ d maxₐ′ Q_θ(x′, a′) moving with θ (eq. 17)
    probe_singular_values: bool = False  # singular values of the last hidden layer over the probe_k states
    probe_set: str = "all"  # "all" | "interference" (only ρ̄ and the TD-sign variance: quicker to compile)
    # checkpointing (train_with_checkpoints)
    checkpoint_interval: int = 1_000  # iterations per jitted chunk / checkpoint
    # devices (tdjax.train.mesh)
    num_devices: int = 1  # devices ONE run is split over (mesh axis "data")
    seed_devices: int = 1  # devices the seeds of tdjax.train.train_seeds are spread over (mesh axis "seeds")
    # loop structure, not maths: "host" is faster for CNN agents on XLA:CPU, "scan" everywhere else
    loop: str = "scan"  # "scan" (one XLA program) | "host" (the CPU loop structure, tdjax.train.host_loop)


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
    episodes: core.EpisodeStats  # [E] running episode statistics.
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
    discounted_return_sum: jax.Array  # shape=(), float32. Sum of their discounted returns Σ γᵗ rₜ.
    return_count: jax.Array  # shape=(), int32. Number of episodes ended this iteration.
    probes: probes_lib.ProbeMetrics  # NaN fields (probed=False) except every probe_interval updates.


# ----------------------------------------------------------------------------------------------------
# Validation (before any tracing or compilation).


def _validate(c: ValueConfig) -> None:
    if not isinstance(c, ValueConfig):
        raise ValueError(f"value_based.make_agent: expected a ValueConfig, got {type(c).__name__}.")
    core.check_common_fields(c, positive=("buffer_size", "batch_size", "train_frequency", "target_update_interval",
                                          "probe_sign_window", "probe_sign_steps", "n_quantiles"))
    check_choice(c, "algo", ALGOS)
    check_choice(c, "optimizer", ("adam", "rmsprop", "sgd", "momentum"))
    check_choice(c, "probe_set", ("all", "interference"))
    require(0.0 <= c.momentum < 1.0, c, "momentum", "must lie in [0, 1)", "e.g. momentum=0.9")
    require(c.learning_starts >= 0, c, "learning_starts", "must be >= 0", "set learning_starts >= 0")
    require(c.eps_decay_steps >= 0, c, "eps_decay_steps", "must be >= 0", "set eps_decay_steps >= 0")
    for name in ("eps_start", "eps_end"):
        require(0.0 <= getattr(c, name) <= 1.0, c, name, "ε must lie in [0, 1]", f"set 0 <= {name} <= 1")
    require(c.rmsprop_eps > 0, c, "rmsprop_eps", "must be > 0", "set rmsprop_eps > 0")
    require(0.0 <= c.rmsprop_decay < 1.0, c, "rmsprop_decay", "must lie in [0, 1)", "e.g. rmsprop_decay=0.95")
    require(c.n_atoms >= 2, c, "n_atoms", "C51 needs at least 2 atoms", "e.g. n_atoms=51")
    require(c.v_min < c.v_max, c, "v_min", f"the support [v_min, v_max] = [{c.v_min}, {c.v_max}] is empty",
            "set v_min < v_max")
    require(c.qr_kappa >= 0, c, "qr_kappa", "the Huber threshold must be >= 0", "e.g. qr_kappa=1.0")
    require(c.probe_dormant_tau >= 0, c, "probe_dormant_tau", "must be >= 0", "Sokar et al. use 0 or 0.025")

    d = c.num_devices
    require(c.batch_size % d == 0, c, "batch_size", f"must be divisible by num_devices={d}", f"use a multiple of {d}")
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

    first_probe = None
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
        first_probe = stored
    probes_lib.check_trajectory_fields(c, steps_per_env=c.buffer_size // c.num_envs,
                                       first_probe_transitions=first_probe)
    if c.probe_rho_terms:
        require(c.algo in ("dqn", "double_dqn"), c, "probe_rho_terms",
                f"r1, r2, r3 are the terms of ρ′ for the squared TD loss, but algo={c.algo!r} has a "
                "distributional loss", "use algo='dqn' or 'double_dqn' with probe_rho_terms=True")


def _warmup_iterations(c: ValueConfig) -> int:
    return -(-c.learning_starts // (c.num_envs * c.train_frequency))


# ----------------------------------------------------------------------------------------------------
# The spec: the config with what is built from it.


@dataclasses.dataclass(frozen=True, eq=False)
class ValueSpec:
    """What the loop functions below read besides their data. Sizes are per device."""

    config: ValueConfig
    env: envs_lib.VecEnv  # this device's num_envs environments
    network: ValueNetwork
    head: nn.Module
    algo: Algo
    optimizer: optax.GradientTransformation
    probe_settings: probes_lib.ProbeSettings
    num_envs: int  # environments per device
    batch_size: int  # minibatch per device
    slots: int  # replay time slots (buffer_size / num_envs)
    num_iterations: int
    warmup_iterations: int
    steps_per_iteration: int  # environment steps over all devices


def build_spec(c: ValueConfig) -> ValueSpec:
    """Validates `c` and builds its environments, network (checked on abstract shapes) and optimizer."""
    _validate(c)
    algo = ALGOS[c.algo]
    vec = envs_lib.vec_spec(c.env)
    head = algo.make_head(c, vec.num_actions)
    network = ValueNetwork(core.torso_factory(c, vec.obs_shape)(), head)
    core.check_network(c, network, vec.obs_shape)  # still nothing compiled
    optimizer = core.make_optimizer(c.optimizer, c.lr, max_grad_norm=c.max_grad_norm, adam_eps=c.adam_eps,
                                    rmsprop_decay=c.rmsprop_decay, rmsprop_eps=c.rmsprop_eps,
                                    rmsprop_centered=c.rmsprop_centered, momentum=c.momentum, lr_in_state=True)
    num_envs = c.num_envs // c.num_devices
    env = envs_lib.make_vec(c.env, num_envs, seed=c.env_seed, backend=c.env_backend, options=dict(c.env_options))
    settings = probes_lib.ProbeSettings(
        rank_eps=float(c.probe_rank_eps), srank_delta=float(c.probe_srank_delta),
        dormant_tau=float(c.probe_dormant_tau), sign_window=c.probe_sign_window, chunk_size=c.probe_chunk_size,
        **probes_lib.trajectory_settings(c, network, vec.obs_shape),
        full=c.probe_set == "all",
    )
    return ValueSpec(
        config=c, env=env, network=network, head=head, algo=algo, optimizer=optimizer, probe_settings=settings,
        num_envs=num_envs, batch_size=c.batch_size // c.num_devices, slots=c.buffer_size // c.num_envs,
        num_iterations=c.total_steps // (c.num_envs * c.train_frequency), warmup_iterations=_warmup_iterations(c),
        steps_per_iteration=c.num_envs * c.train_frequency,
    )


# ----------------------------------------------------------------------------------------------------
# Network outputs and the per-example loss.


def _prep(spec: ValueSpec, x: jax.Array) -> jax.Array:
    """Observations in their stored units → network input (×1/255 for pixels)."""
    return x if spec.env.obs_scale == 1.0 else x * spec.env.obs_scale


def apply(spec: ValueSpec, params: Any, x: jax.Array) -> jax.Array:
    """The head's raw output (Q [.., A], logits or quantiles [.., A, N]) at observations x."""
    return spec.network.apply(params, _prep(spec, x))  # type: ignore[return-value]


def q_values(spec: ValueSpec, params: Any, xs: jax.Array) -> jax.Array:
    """Expected action values [..., A]."""
    return spec.network.apply(params, _prep(spec, xs), method=ValueNetwork.q_values)  # type: ignore[return-value]


def features(spec: ValueSpec, params: Any, xs: jax.Array) -> jax.Array:
    """Penultimate activations [..., d]."""
    return spec.network.apply(params, _prep(spec, xs), method=ValueNetwork.features)  # type: ignore[return-value]


def output_fn(spec: ValueSpec) -> Callable[[Any, jax.Array], jax.Array]:
    """`f(params, x)`: Q reduced by max (expected Q for distributional heads), the papers' scalar output."""
    dist = spec.algo.distribution
    return scalar_output_fn(functools.partial(apply, spec), "max", distribution=dist,  # type: ignore[arg-type]
                            atoms=spec.head.atoms if dist == "categorical" else None)


def example_loss(spec: ValueSpec, params: Any, target_params: Any, tr: replay_lib.Transition) -> jax.Array:
    """The algorithm's loss on ONE transition (batch with `jax.vmap`)."""
    c, algo = spec.config, spec.algo
    out_tm1 = apply(spec, params, tr.obs)
    out_t = apply(spec, target_params, tr.next_obs)
    out_t_online = apply(spec, params, tr.next_obs) if algo.uses_online_next else None
    return algo.loss(c, spec.head, out_tm1, tr.action, tr.reward, c.gamma * tr.discount, out_t, out_t_online)


def learner_update(spec: ValueSpec, learner: LearnerState, batch: replay_lib.Transition,
                   axis_name: Optional[str] = None) -> Tuple[LearnerState, jax.Array]:
    """One gradient step on the mean loss of `batch`; with `axis_name`, gradients and loss are
    `lax.pmean`-ed over it (call inside shard_map). Returns (learner, loss before the step)."""

    def batch_loss(params):
        losses = jax.vmap(example_loss, in_axes=(None, None, None, 0))(spec, params, learner.target_params, batch)
        if spec.env.always_valid:
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
    updates, opt_state = spec.optimizer.update(grads, learner.opt_state, learner.params)
    params = optax.apply_updates(learner.params, updates)
    return learner._replace(params=params, opt_state=opt_state), loss


# ----------------------------------------------------------------------------------------------------
# The loop: init, acting, learning, probing, one iteration.


def _dummy_obs(spec: ValueSpec) -> jax.Array:
    return jnp.zeros(spec.env.obs_shape, jnp.float32)


def init_local(spec: ValueSpec, key: jax.Array, axis_name: Optional[str], *,
               pool: Optional[jax.Array] = None) -> RunnerState:
    """The state of one device (of the "data" axis when `axis_name` is given); `pool`: the training
    environment's episodes draw their seeds from its first `pool` (`VecEnv.reset(key, pool)`)."""
    k_net, k_actor = jax.random.split(key)
    params = spec.network.init(k_net, _dummy_obs(spec))
    learner = LearnerState(params=params, target_params=params, opt_state=spec.optimizer.init(params))
    if axis_name is not None:
        k_actor = jax.random.fold_in(k_actor, jax.lax.axis_index(axis_name))
    k_reset, k_base = jax.random.split(k_actor)
    env_state, obs, episodes = core.reset_envs(spec.env, k_reset, spec.num_envs, pool)
    dummy = _dummy_obs(spec)
    example = replay_lib.Transition(
        obs=dummy, action=jnp.zeros((), jnp.int32), reward=jnp.zeros((), jnp.float32),
        discount=jnp.zeros((), jnp.float32), next_obs=dummy, done=jnp.zeros((), bool), valid=jnp.zeros((), bool),
    )
    # frames stored once for envpool streams, whose next observation is the next slot's (docs/replay.md)
    replay = replay_lib.init(example, spec.slots, spec.num_envs, spec.env.obs_storage_dtype,
                             frame_stack=spec.env.frame_stack, next_obs_follows=not spec.env.always_valid)
    return RunnerState(learner, ActorState(key=k_base, env_state=env_state, obs=obs, episodes=episodes, replay=replay))


def act_and_store(spec: ValueSpec, params: Any, actor: ActorState, i: jax.Array, k_act: jax.Array,
                  k_env: jax.Array) -> Tuple[ActorState, core.EndedEpisodes, jax.Array]:
    """Iteration i's `train_frequency` ε-greedy vector steps, stored in replay.

    Returns (actor, the episodes that ended, ε at the first step)."""
    c, env = spec.config, spec.env
    eps_schedule = optax.linear_schedule(c.eps_start, c.eps_end, max(c.eps_decay_steps, 1))

    def vector_step(actor: ActorState, t):
        eps = eps_schedule((i * c.train_frequency + t) * c.num_envs)
        k_explore, k_random = jax.random.split(jax.random.fold_in(k_act, t))
        greedy = jnp.argmax(q_values(spec, params, actor.obs), axis=-1)
        random = jax.random.randint(k_random, (spec.num_envs,), 0, env.num_actions)
        explore = jax.random.uniform(k_explore, (spec.num_envs,)) < eps
        action = jnp.where(explore, random, greedy).astype(jnp.int32)
        env_state, step = env.step(actor.env_state, jax.random.fold_in(k_env, t), action)
        transition = replay_lib.Transition(
            obs=actor.obs, action=action, reward=step.reward,
            discount=1.0 - step.terminated.astype(jnp.float32), next_obs=step.next_obs,
            done=step.terminated | step.truncated, valid=step.valid,
        )
        episodes, ended = core.track_episodes(actor.episodes, step, c.gamma)
        actor = actor._replace(env_state=env_state, obs=step.obs, episodes=episodes,
                               replay=replay_lib.add(actor.replay, transition))
        return actor, (ended, eps)

    actor, (ended, eps) = jax.lax.scan(vector_step, actor, jnp.arange(c.train_frequency))
    return actor, jax.tree.map(jnp.sum, ended), eps[0]


def learn(spec: ValueSpec, learner: LearnerState, replay: replay_lib.ReplayState, key: jax.Array,
          axis_name: Optional[str]) -> Tuple[LearnerState, jax.Array, jax.Array]:
    """One update on a minibatch sampled from replay: (learner, loss, mean max-Q of the minibatch)."""
    batch = replay_lib.sample(replay, key, spec.batch_size)
    q_mean = jnp.mean(jnp.max(q_values(spec, learner.params, batch.obs), axis=-1))
    if axis_name is not None:
        q_mean = jax.lax.pmean(q_mean, axis_name)
    learner, loss = learner_update(spec, learner, batch, axis_name)
    return learner, loss.astype(jnp.float32), q_mean.astype(jnp.float32)


def td_errors(spec: ValueSpec, learner: LearnerState, seg: replay_lib.Transition) -> jax.Array:
    """δ = r + γ d maxₐ Q̄⁻(x′, a) − Q̄(x, a) on [T, E] consecutive transitions (expected Q)."""
    q_tm1 = q_values(spec, learner.params, seg.obs)
    q_t = q_values(spec, learner.target_params, seg.next_obs)
    q_taken = jnp.take_along_axis(q_tm1, seg.action[..., None], axis=-1)[..., 0]
    return seg.reward + spec.config.gamma * seg.discount * jnp.max(q_t, axis=-1) - q_taken


def rho_fns(spec: ValueSpec, learner: LearnerState) -> Tuple[Callable, Callable]:
    """(value_fn, target_fn) of the ρ′-term probe for ONE transition: f = Q_θ(x, a) and the loop's TD
    target y = r + γ d maxₐ′ Q_θ⁻(x′, a′) (Double DQN: Q_θ⁻(x′, argmaxₐ′ Q_θ(x′, a′))). With the frozen
    target network θ⁻ the target ignores θ (∇y = 0: eq. 16's form with a TD δ), as the loop's loss does;
    `probe_rho_moving_target=True` uses y = r + γ d maxₐ′ Q_θ(x′, a′), moving with θ: Bengio's ρ′_TD
    (eq. 17, "QL" in Fig. 7)."""
    c = spec.config

    def value_fn(p, tr):
        return q_values(spec, p, tr.obs)[tr.action]

    def target_fn(p, tr):
        if c.probe_rho_moving_target:
            nxt = jnp.max(q_values(spec, p, tr.next_obs))
        elif spec.algo.uses_online_next:
            a_star = jnp.argmax(jax.lax.stop_gradient(q_values(spec, p, tr.next_obs)))
            nxt = q_values(spec, learner.target_params, tr.next_obs)[a_star]
        else:
            nxt = jnp.max(q_values(spec, learner.target_params, tr.next_obs))
        return tr.reward + c.gamma * tr.discount * nxt

    return value_fn, target_fn


def probe(spec: ValueSpec, learner: LearnerState, replay: replay_lib.ReplayState, key: jax.Array,
          axis_name: Optional[str]) -> probes_lib.ProbeMetrics:
    """The probes of `tdjax.train.probes` on k transitions of this device's replay (averaged over
    devices when `axis_name` is given).

    Keys: `k_batch, k_fresh = split(key)` draw the k transitions (`replay.sample_distinct`) and the
    fresh network; the offset probes' N update samples are `replay.sample_distinct_slots(replay,
    fold_in(key, 1), N)`, with their neighbours `replay.neighbours(replay, t, e, X)`."""
    c, s = spec.config, spec.probe_settings
    k_batch, k_fresh = jax.random.split(key)
    batch = replay_lib.sample_distinct(replay, k_batch, c.probe_k)
    fresh = spec.network.init(k_fresh, _dummy_obs(spec))
    seg = replay_lib.recent(replay, c.probe_sign_steps)
    loss_fn = lambda p, tr: example_loss(spec, p, learner.target_params, tr)  # noqa: E731
    offsets: dict = {}
    if s.max_offset > 0:
        t, e = replay_lib.sample_distinct_slots(replay, jax.random.fold_in(key, 1), s.offset_samples)
        nb, mask = replay_lib.neighbours(replay, t, e, s.max_offset)
        offsets = dict(offset_batch=jax.tree.map(lambda x: x[:, s.max_offset], nb), offset_neighbours=nb,
                       offset_mask=mask)
    value_fn, target_fn = rho_fns(spec, learner) if s.rho_terms else (None, None)
    m = probes_lib.value_probes(
        s, loss_fn=loss_fn,
        output_fn=output_fn(spec), features_fn=functools.partial(features, spec), optimizer=spec.optimizer,
        params=learner.params, opt_state=learner.opt_state, batch=batch, probe_xs=batch.obs,
        fresh_loss_fn=lambda p, tr: example_loss(spec, p, fresh, tr), fresh_params=fresh,
        td_errors=td_errors(spec, learner, seg), done=seg.done | ~seg.valid,
        value_fn=value_fn, target_fn=target_fn, **offsets,
    )
    if axis_name is None:
        return m
    return probes_lib.ProbeMetrics(m.probed, *jax.lax.pmean(tuple(m[1:]), axis_name))


class IterationPhase(NamedTuple):
    """The static phase of a value-loop iteration (`ValueAgent.phase(i)`), Python bools."""

    learning: bool  # the iteration makes a gradient update (i ≥ warmup_iterations)
    probed: bool  # it also runs the probes


def iteration_phase(spec: ValueSpec, i: int) -> IterationPhase:
    i = int(i)
    learning = i >= spec.warmup_iterations
    c = spec.config
    probed = learning and c.probe_interval > 0 and (i - spec.warmup_iterations + 1) % c.probe_interval == 0
    return IterationPhase(learning, probed)


def iteration(spec: ValueSpec, state: RunnerState, i: jax.Array, axis_name: Optional[str],
              phase: Optional[Tuple[bool, bool]] = None) -> Tuple[RunnerState, ValueMetrics]:
    """Iteration i: act and store, then (after warm-up) one update, the target refresh and the probes.
    `phase` (from `iteration_phase` for a concrete i) makes the conditions static (`host_loop.branch`)."""
    c = spec.config
    learner, actor = state
    k_act, k_env, k_sample, k_probe = jax.random.split(jax.random.fold_in(actor.key, i), 4)
    actor, ended, eps = act_and_store(spec, learner.params, actor, i, k_act, k_env)
    learning_static, probed_static = (None, None) if phase is None else phase
    updates_done = i - spec.warmup_iterations + 1
    learning = jnp.asarray(i >= spec.warmup_iterations) if phase is None else jnp.asarray(learning_static)
    nan = jnp.full((), jnp.nan, jnp.float32)
    learner, loss, q_mean = branch(
        learning_static, learning, lambda l: learn(spec, l, actor.replay, k_sample, axis_name),
        lambda l: (l, nan, nan), learner)
    refresh = learning & (updates_done % c.target_update_interval == 0)
    learner = jax.lax.cond(refresh, lambda l: l._replace(target_params=l.params), lambda l: l, learner)

    empty = functools.partial(probes_lib.empty_probe_metrics, spec.probe_settings)
    probe_metrics = empty()
    if c.probe_interval > 0:
        probed = learning & (updates_done % c.probe_interval == 0)
        probe_metrics = branch(probed_static, probed, lambda: probe(spec, learner, actor.replay, k_probe, axis_name),
                               empty)
    if axis_name is not None:
        ended = jax.lax.psum(ended, axis_name)
    metrics = ValueMetrics(
        env_steps=((i + 1) * spec.steps_per_iteration).astype(jnp.int32), epsilon=jnp.asarray(eps, jnp.float32),
        learned=learning, loss=loss, q_mean=q_mean, return_sum=ended.return_sum,
        discounted_return_sum=ended.discounted_return_sum, return_count=ended.count, probes=probe_metrics,
    )
    return RunnerState(learner, actor), metrics


# ----------------------------------------------------------------------------------------------------
# The agent.


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class ValueAgent(core.Agent):
    """`core.Agent` for the value loop (`make_agent(ValueConfig(...))`): `init`, `run`, `phase`,
    `reattach_env`, plus the value loop's functions bound to its spec:

      example_loss(params, target_params, transition) -> scalar, ONE transition;
      learner_update(learner, batch, axis_name=None) -> (learner, loss);
      output_fn(params, x), q_values(params, xs) -> [..., A], features(params, xs) -> [..., d];
      init_with(key, n_train=None, lr=None): `init` with n_T and the learning rate as data (below).
    """

    def phase(self, i: int) -> IterationPhase:
        """Whether iteration i learns and probes (Python bools): with `run(state, i, 1, phase=...)` the
        update sits under no `lax.cond` (the CPU loop structure, `tdjax.train.host_loop`)."""
        return iteration_phase(self.spec, i)

    example_loss = core.bound(example_loss)
    learner_update = core.bound(learner_update)
    q_values = core.bound(q_values)
    features = core.bound(features)
    hyperparams_as_data = ("lr",)

    def set_hyperparams(self, state: RunnerState, **values: Any) -> RunnerState:
        """`state` with `lr` (learning rate, > 0) set as data: the optimizer keeps it in its state
        (`core.make_optimizer(..., lr_in_state=True)`), so a run whose rate is set here equals a run
        configured with that rate, and runs that differ only in it share one program."""
        core._reject_hyperparams(self, values, self.hyperparams_as_data)
        if "lr" not in values:
            return state
        core.check_hyperparam_values("lr", values["lr"], 0.0, np.inf, closed_low=False)
        learner = state.learner
        return state._replace(learner=learner._replace(opt_state=core.set_learning_rate(learner.opt_state,
                                                                                       values["lr"])))

    def init_with(self, key: jax.Array, n_train: Any = None, lr: Any = None) -> RunnerState:
        """`init(key)` with the training-set size n_T of a masked-image task and the learning rate as
        data (`tdjax.train.core.init_with`)."""
        return core.init_with(self, init_local, key, n_train, lr)

    def output_fn(self, params, x):
        return output_fn(self.spec)(params, x)

    network = property(lambda self: self.spec.network)
    head = property(lambda self: self.spec.head)
    algo = property(lambda self: self.spec.algo)
    optimizer = property(lambda self: self.spec.optimizer)
    probe_settings = property(lambda self: self.spec.probe_settings)
    warmup_iterations = property(lambda self: self.spec.warmup_iterations)


def make_agent(config: ValueConfig) -> ValueAgent:
    """Validates `config` (ValueError naming the field and the fix, before any compilation) and
    builds the agent (`tdjax.train.make_agent` dispatches here for a ValueConfig)."""
    spec = build_spec(config)
    init, run = core.build_loop(spec, init_local, iteration, per_device=("actor",), phase_size=2)
    return ValueAgent(spec, init, run)


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
    return dict(out, **core.probe_means(m.probes))


core.register_family(ValueConfig, core.Family("value_based", make_agent, summarise, core.mean_return))
