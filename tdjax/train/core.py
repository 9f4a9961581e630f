"""What every training-loop family shares: one `make_agent` / `make_train` for any family's config.

A loop family (value-based, actor-critic, ...) is a module that defines a frozen config dataclass and
a `make_agent(config)` building an agent with this interface (all functions pure and jittable):

  agent.config, agent.env, agent.num_iterations, agent.steps_per_iteration
  agent.init(key) -> state
  agent.run(state, start, length, phase=None) -> (state, metrics stacked [length])
  agent.phase(i) -> static phase of iteration i (a tuple of Python bools) or None
  agent.reattach_env(state) -> state with freshly reset environments (envpool resumes)

The family registers itself with `register_family(ConfigClass, Family(...))` when imported;
`make_agent(config)` and `make_train(config)` then dispatch on `type(config)`, so every family is
reached through one entry point (and grep finds the registration next to the config class).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, ClassVar, Dict, NamedTuple, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tdjax import envs as envs_lib
from tdjax.networks.heads import TORSOS
from tdjax.train import mesh as mesh_lib
from tdjax.train.host_loop import run_host_driven
from tdjax.train.validation import check_choice, check_types, require

__all__ = ["Family", "register_family", "family_of", "make_agent", "make_train", "summarise", "mean_return",
           "set_learning_rate", "check_hyperparam_values", "train_pool", "init_with",
           "typed_key", "make_optimizer", "auto_network", "torso_factory", "check_network", "EpisodeStats",
           "EndedEpisodes", "new_episode_stats", "track_episodes", "sum_ended", "reset_envs", "reattach",
           "rank_or_nan", "nanmean", "probe_means", "check_common_fields", "Agent",
           "bound", "scan_iterations", "build_loop", "batched_run", "run_iterations"]


class Family(NamedTuple):
    """One loop family: how to build its agent and how to summarise its metrics."""

    name: str  # e.g. "value_based"
    make_agent: Callable[[Any], Any]  # config -> agent (validates the config first)
    summarise: Callable[[Any], dict]  # metrics of ONE seed, stacked [T] -> scalars for logs
    mean_return: Callable[..., np.ndarray]  # (metrics, last=None) -> mean return per seed


_FAMILIES: Dict[type, Family] = {}


def register_family(config_cls: type, family: Family) -> None:
    """Makes `make_agent` / `make_train` accept configs of `config_cls`."""
    _FAMILIES[config_cls] = family


def family_of(config: Any) -> Family:
    """The family whose config `config` is; ValueError listing the known config classes otherwise."""
    family = _FAMILIES.get(type(config))
    if family is None:
        known = ", ".join(f"tdjax.train.{c.__name__}" for c in _FAMILIES) or "none registered"
        raise ValueError(
            f"expected a training config ({known}), got {type(config).__name__}. Fix: build one of those "
            "config dataclasses (e.g. tdjax.train.ValueConfig(env='CartPole-v1'))."
        )
    return family


def make_agent(config: Any) -> Any:
    """Validates `config` (ValueError naming the field and the fix, before any compilation) and builds
    the agent of its family."""
    return family_of(config).make_agent(config)


def make_train(config: Any) -> Callable[[jax.Array], Tuple[Any, Any]]:
    """`train(key) -> (final state, metrics stacked [num_iterations])`, one jittable function, for
    the config of any loop family.

    The config is validated here, before anything is traced. Run many seeds at once with
    `jax.jit(jax.vmap(train))(jax.random.split(key, n))` (jitted environments only).

    Example (CartPole, a few seconds):
      >>> import jax
      >>> from tdjax.train import ValueConfig
      >>> cfg = ValueConfig(env="CartPole-v1", total_steps=2_000, learning_starts=200, batch_size=32,
      ...                   buffer_size=1_000)
      >>> state, metrics = jax.jit(make_train(cfg))(jax.random.key(0))
      >>> metrics.loss.shape                 # one entry per iteration (4 env steps + 1 update)
      (500,)
    """
    agent = make_agent(config)

    def train(key: jax.Array) -> Tuple[Any, Any]:
        return agent.run(agent.init(key), 0, agent.num_iterations)

    return train


def summarise(config: Any, metrics: Any) -> dict:
    """The family's scalar summary of one seed's metrics (stacked [T])."""
    return family_of(config).summarise(metrics)


def typed_key(key: jax.Array) -> jax.Array:
    """`key` as a typed PRNG key (raw uint32 key data is wrapped)."""
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(key)


# ----------------------------------------------------------------------------------------------------
# Building blocks every family uses: optimizer, networks, episode bookkeeping.


def make_optimizer(name: str, lr: float, *, max_grad_norm: Optional[float], adam_eps: float = 1e-8,
                   rmsprop_decay: float = 0.95, rmsprop_eps: float = 0.01,
                   rmsprop_centered: bool = True, momentum: float = 0.9,
                   lr_in_state: bool = False) -> optax.GradientTransformation:
    """Adam, RMSProp, SGD or momentum SGD (`momentum`, heavy-ball), after global-norm gradient
    clipping unless `max_grad_norm` is None.

    `lr_in_state=True` keeps the learning rate in the optimizer's state (`optax.inject_hyperparams`,
    `opt_state.hyperparams["learning_rate"]`; the inner optimizer's state is `opt_state.inner_state`),
    so runs that differ only in their learning rate share one program and can be vmapped with the
    rate as data (`set_learning_rate`). The updates are the same as with the rate as a constant."""
    if lr_in_state:
        def inner(learning_rate):
            return make_optimizer(name, learning_rate, max_grad_norm=max_grad_norm, adam_eps=adam_eps,
                                  rmsprop_decay=rmsprop_decay, rmsprop_eps=rmsprop_eps,
                                  rmsprop_centered=rmsprop_centered, momentum=momentum)

        return optax.inject_hyperparams(inner)(learning_rate=lr)
    if name == "adam":
        tx = optax.adam(lr, eps=adam_eps)
    elif name == "rmsprop":
        tx = optax.rmsprop(lr, decay=rmsprop_decay, eps=rmsprop_eps, centered=rmsprop_centered)
    elif name == "sgd":
        tx = optax.sgd(lr)
    elif name == "momentum":
        tx = optax.sgd(lr, momentum=momentum)
    else:
        raise ValueError(f"make_optimizer: name must be 'adam', 'rmsprop', 'sgd' or 'momentum', got {name!r}.")
    if max_grad_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(max_grad_norm), tx)
    return tx


def set_learning_rate(opt_state: Any, lr: Any) -> Any:
    """`opt_state` of a `make_optimizer(..., lr_in_state=True)` optimizer with its learning rate set to
    `lr` (a scalar, traced or not; float32)."""
    if not hasattr(opt_state, "hyperparams") or "learning_rate" not in opt_state.hyperparams:
        raise ValueError("set_learning_rate: opt_state does not hold its learning rate. Fix: build the "
                         "optimizer with make_optimizer(..., lr_in_state=True).")
    hyper = dict(opt_state.hyperparams, learning_rate=jnp.asarray(lr, jnp.float32))
    return opt_state._replace(hyperparams=hyper)


def auto_network(env_name: str, obs_shape: Tuple[int, ...]) -> str:
    """The torso `network="auto"` picks: the one a registered environment names (Bengio's conv net for
    the masked-image tasks), else MLP for vectors, the MinAtar CNN for small maps, the IMPALA CNN for
    ProcGen, the Nature CNN for Atari frames."""
    reg = envs_lib.registered_env(env_name)
    if reg is not None and reg.network != "auto":
        return reg.network
    if len(obs_shape) == 1:
        return "mlp"
    if obs_shape[0] <= 16:
        return "minatar_cnn"
    return "impala_cnn" if env_name.endswith("-v0") else "nature_cnn"


def torso_factory(config: Any, obs_shape: Tuple[int, ...]) -> Callable[[], nn.Module]:
    """A function making the torso that `config.network` ("auto" or a `TORSOS` name, with
    `config.hidden` for the MLP, `config.cnn_width`/`cnn_extra_layers` for the Bengio conv net and
    `config.torso_width`, where the config has it, for the MinAtar and Nature CNNs) names for
    observations of `obs_shape`; ValueError naming the field if the torso cannot take them."""
    name = auto_network(config.env, obs_shape) if config.network == "auto" else config.network
    width = getattr(config, "torso_width", None)
    require(width is None or name in ("minatar_cnn", "nature_cnn"), config, "torso_width",
            f"only the minatar_cnn and nature_cnn torsos have a width n_h, not {name!r}",
            "use torso_width=None (hidden sets the MLP's widths, cnn_width the Bengio conv net's)")
    if name == "mlp":
        require(len(obs_shape) == 1, config, "network",
                f"an MLP torso needs vector observations but {config.env} gives {obs_shape}",
                "use network='minatar_cnn' (MinAtar), 'impala_cnn' (ProcGen), 'bengio_cnn' (masked images) or 'auto'")
        return lambda: TORSOS["mlp"](tuple(config.hidden))
    require(len(obs_shape) == 3, config, "network",
            f"a convolutional torso needs [H, W, C] observations but {config.env} gives {obs_shape}",
            "use network='mlp' or 'auto'")
    if name == "bengio_cnn":  # Bengio et al. 2020 App. B.1: n_h, n_L from the config
        return lambda: TORSOS["bengio_cnn"](int(config.cnn_width), int(config.cnn_extra_layers))
    if width is not None:
        # Bengio et al. 2020's released Atari net (nhid): every layer scales with n_h
        if name == "minatar_cnn":
            return lambda: TORSOS["minatar_cnn"](channels=int(width), dense=8 * int(width))
        return lambda: TORSOS["nature_cnn"](width=int(width))
    return TORSOS[name]


def check_network(config: Any, net: nn.Module, obs_shape: Tuple[int, ...]) -> None:
    """Initialises `net` on abstract shapes only (nothing is compiled); a failure is a ValueError
    naming `config.network`."""
    try:
        jax.eval_shape(lambda x: net.init(jax.random.key(0), x), jax.ShapeDtypeStruct(obs_shape, jnp.float32))
    except Exception as err:  # noqa: BLE001 - reported with the field that caused it
        raise ValueError(
            f"{type(config).__name__}.network={config.network!r}: this torso cannot take {config.env}'s "
            f"observations of shape {obs_shape} ({type(err).__name__}: {err}). Fix: use network='auto', or "
            "'nature_cnn' only for 84×84 frames."
        ) from None


class EpisodeStats(NamedTuple):
    """Running statistics of the episodes of E environments, in unclipped reward (for logging)."""

    episode_return: jax.Array  # shape=[E], float32. Undiscounted return of the running episodes.
    discounted_return: jax.Array  # shape=[E], float32. Σ γᵗ rₜ of the running episodes.
    discount_power: jax.Array  # shape=[E], float32. γᵗ at the running episodes' current step.
    episode_length: jax.Array  # shape=[E], int32. Steps (transitions) of the running episodes.


class EndedEpisodes(NamedTuple):
    """Totals over the episodes that ended in a stretch of steps."""

    return_sum: jax.Array  # shape=(), float32. Sum of their returns.
    discounted_return_sum: jax.Array  # shape=(), float32. Sum of their discounted returns.
    count: jax.Array  # type: ignore[assignment]  # shape=(), int32. How many ended.


def new_episode_stats(num_envs: int) -> EpisodeStats:
    z = jnp.zeros((num_envs,), jnp.float32)
    return EpisodeStats(z, z, jnp.ones_like(z), jnp.zeros((num_envs,), jnp.int32))


def track_episodes(stats: EpisodeStats, step: Any, gamma: float) -> Tuple[EpisodeStats, EndedEpisodes]:
    """Adds one vectorised env step (`tdjax.envs.EnvStep`, fields [E]) to the running episodes; the
    episodes that end there (`step.episode_end`: a real game end, not an Atari life) are totalled and
    restarted."""
    ep_return = stats.episode_return + step.raw_reward
    disc_return = stats.discounted_return + stats.discount_power * step.raw_reward
    power = stats.discount_power * jnp.where(step.valid, gamma, 1.0)
    length = stats.episode_length + step.valid.astype(jnp.int32)
    end = step.episode_end
    ended = EndedEpisodes(jnp.sum(jnp.where(end, ep_return, 0.0)), jnp.sum(jnp.where(end, disc_return, 0.0)),
                          jnp.sum(end.astype(jnp.int32)))
    stats = EpisodeStats(jnp.where(end, 0.0, ep_return), jnp.where(end, 0.0, disc_return),
                         jnp.where(end, 1.0, power), jnp.where(end, 0, length))
    return stats, ended


def sum_ended(ended: EndedEpisodes, axis_name: Optional[str] = None) -> EndedEpisodes:
    """Totals over a leading (time) axis, and over devices when `axis_name` is given."""
    ended = jax.tree.map(jnp.sum, ended)
    return ended if axis_name is None else jax.lax.psum(ended, axis_name)


def reset_envs(env: Any, key: jax.Array, num_envs: int, pool: Any = None) -> Tuple[Any, jax.Array, EpisodeStats]:
    """(env_state, obs, fresh EpisodeStats) of `env` reset with `key` (episodes drawn from the first
    `pool` seeds of a masked-image task when `pool` is given; `VecEnv.reset`)."""
    env_state, obs = env.reset(key) if pool is None else env.reset(key, pool=pool)
    return env_state, obs, new_episode_stats(num_envs)


def reattach(actor: Any, env: Any) -> Any:
    """`actor` (a NamedTuple with key, env_state, obs, episodes) with freshly reset environments and
    zeroed episode statistics: how a checkpoint of an envpool run (whose emulators live outside JAX)
    is resumed. Identity for jitted environments."""
    if env.jittable:
        return actor
    env_state, obs, episodes = reset_envs(env, actor.key, env.num_envs)
    return actor._replace(env_state=env_state, obs=obs, episodes=episodes)


def rank_or_nan(rank: jax.Array) -> jax.Array:
    """A rank from `tdjax.update_rank`/`srank` as float32, NaN where it was invalid (negative)."""
    return jnp.where(rank >= 0, rank.astype(jnp.float32), jnp.nan)


# ----------------------------------------------------------------------------------------------------
# Summaries of metrics (host side, NumPy). Every family's metrics have return_sum,
# discounted_return_sum and return_count per iteration.


def nanmean(x: Any) -> float:
    x = np.asarray(x, np.float64)
    return float(np.nanmean(x)) if x.size and np.isfinite(x).any() else float("nan")


def mean_return(metrics: Any, last: Optional[int] = None, *, test: bool = False,
                discounted: bool = False) -> np.ndarray:
    """Mean (discounted) return of the training (or `test`) episodes that ended in the last `last`
    iterations (all if None); [...] per seed, NaN where none ended. Any family's metrics."""
    prefix = "test_" if test else ""
    s = np.asarray(getattr(metrics, f"{prefix}{'discounted_' if discounted else ''}return_sum"), np.float64)
    n = np.asarray(getattr(metrics, f"{prefix}return_count"))
    if last is not None:
        s, n = s[..., -last:], n[..., -last:]
    total = n.sum(-1)
    return np.where(total > 0, s.sum(-1) / np.maximum(total, 1), np.nan)


def probe_means(probes: Any) -> dict:
    """`probe_<field>`: the mean of each probe field over the probes taken (`probes.probed`, [T]).

    A field with a per-probe shape (e.g. the loss change by offset, [T, W]) is averaged per entry into
    one key per entry, `probe_<field>[i]` (`[i,j]` for two axes, flat index order); a zero-size
    field (a probe that is off) gives no key."""
    probed = np.asarray(probes.probed).astype(bool)
    out = {}
    for name in probes._fields[1:]:
        taken = np.asarray(getattr(probes, name))[probed]
        shape = taken.shape[1:]
        if not shape:
            out[f"probe_{name}"] = nanmean(taken)
            continue
        for idx in np.ndindex(*shape):
            out[f"probe_{name}[{','.join(map(str, idx))}]"] = nanmean(taken[(slice(None),) + idx])
    return out


# ----------------------------------------------------------------------------------------------------
# Config checks every family shares (run before anything is traced or compiled).


def check_common_fields(c: Any, positive: Tuple[str, ...]) -> None:
    """The fields every training config has: environment, network, optimizer, probes, devices, loop.
    `positive` names the family's integer fields that must be >= 1."""
    check_types(c)
    envs_lib.check_env_name(c.env, field=f"{type(c).__name__}.env")
    check_choice(c, "env_backend", ("xla", "host"))
    require(all(isinstance(o, tuple) and len(o) == 2 and isinstance(o[0], str) for o in c.env_options), c,
            "env_options", "must be a tuple of (name, value) pairs", "e.g. env_options=(('episodic_life', False),)")
    check_choice(c, "network", ("auto",) + tuple(TORSOS))
    check_choice(c, "loop", ("scan", "host"))
    for name in positive + ("num_envs", "total_steps", "checkpoint_interval", "num_devices", "seed_devices",
                            "probe_k"):
        require(getattr(c, name) >= 1, c, name, "must be a positive integer", f"set {name} >= 1")
    if getattr(c, "torso_width", None) is not None:
        require(c.torso_width >= 1, c, "torso_width", "the torso's width n_h must be >= 1",
                "e.g. torso_width=16, or None for the standard torso")
    if hasattr(c, "cnn_width"):
        require(c.cnn_width >= 1, c, "cnn_width", "n_h of the Bengio conv net must be >= 1", "e.g. cnn_width=16")
        require(c.cnn_extra_layers >= 0, c, "cnn_extra_layers", "n_L must be >= 0", "e.g. cnn_extra_layers=0")
    require(len(c.hidden) >= 1 and all(h >= 1 for h in c.hidden), c, "hidden",
            "the MLP torso needs at least one positive width", "e.g. hidden=(64, 64)")
    require(c.lr > 0 and math.isfinite(c.lr), c, "lr", "the learning rate must be a positive number", "e.g. lr=1e-3")
    require(c.adam_eps > 0, c, "adam_eps", "must be > 0", "e.g. adam_eps=1e-8")
    require(c.max_grad_norm is None or c.max_grad_norm > 0, c, "max_grad_norm", "must be > 0 or None",
            "use None to disable clipping")
    require(0.0 <= c.gamma <= 1.0, c, "gamma", "the discount must lie in [0, 1]", "e.g. gamma=0.99")
    require(c.probe_interval >= 0, c, "probe_interval", "must be >= 0", "use 0 to disable probes")
    require(c.probe_chunk_size is None or c.probe_chunk_size >= 1, c, "probe_chunk_size",
            "must be None or >= 1", "use None (the default chunking) or a positive chunk size")
    require(0.0 < c.probe_rank_eps < 1.0, c, "probe_rank_eps", "must lie in (0, 1)", "the paper uses 0.1")
    require(0.0 < c.probe_srank_delta < 1.0, c, "probe_srank_delta", "must lie in (0, 1)", "Kumar et al. use 0.01")
    d = c.num_devices
    if not envs_lib.vec_spec(c.env).jittable:
        require(d == 1, c, "num_devices", f"{c.env} is an envpool environment, stepped by one host process",
                "use num_devices=1 for envpool games (data-parallel runs need jitted gymnax environments)")
        require(c.seed_devices == 1, c, "seed_devices",
                f"{c.env} is an envpool environment: its seeds run one after another, not vmapped",
                "use seed_devices=1 for envpool games")
    n_dev = jax.device_count()
    need = d * c.seed_devices
    require(need <= n_dev, c, "num_devices",
            f"seed_devices × num_devices = {c.seed_devices} × {d} devices are needed but only {n_dev} are visible",
            f"use at most {n_dev} devices, or on CPU start Python with "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={need}")
    require(c.num_envs % d == 0, c, "num_envs", f"must be divisible by num_devices={d}",
            f"use a multiple of {d} (each device steps num_envs / num_devices environments)")


# ----------------------------------------------------------------------------------------------------
# The agent every family returns, and the loop around its iteration.


@dataclasses.dataclass(frozen=True, eq=False)
class Agent:
    """What `make_agent(config)` returns, for any family; all functions are pure and jittable.

    Attributes:
      spec: the family's frozen spec (config, environments, networks, optimizer, sizes): the one
        argument of the family's module-level loop functions besides their data.
      init: `init(key) -> state` (typed or raw key).
      run: `run(state, start, length, phase=None) -> (state, metrics stacked [length])`: iterations
        start .. start+length−1 (`length` static; `start` may be traced but must not be batched).
        `phase`, only with `length == 1`: the static `phase(start)` (see `tdjax.train.host_loop`).
    Properties and methods: `config`, `env`, `num_iterations`, `steps_per_iteration`, `phase(i)`
    (None for families without static phases), `reattach_env(state)`.
    """

    spec: Any
    init: Callable[[jax.Array], Any]
    run: Callable[..., Tuple[Any, Any]]

    @property
    def config(self) -> Any:
        return self.spec.config

    @property
    def env(self) -> Any:
        return self.spec.env

    @property
    def num_iterations(self) -> int:
        return self.spec.num_iterations

    @property
    def steps_per_iteration(self) -> int:
        return self.spec.steps_per_iteration

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec.config!r})"

    def phase(self, i: int) -> Optional[Tuple[bool, ...]]:
        """The static phase of iteration i (Python bools), or None: nothing to make static."""
        del i
        return None

    def reattach_env(self, state: Any) -> Any:
        """`state` with freshly reset environments and zeroed episode statistics (envpool resumes)."""
        return state._replace(actor=reattach(state.actor, self.spec.env))

    def set_hyperparams(self, state: Any, **values: Any) -> Any:
        """`state` (from `init`, not batched) with hyperparameters set as data rather than from the
        config, so runs that differ only in them share one compiled program (vmapped sweeps,
        `tdjax.train.seeds.SeedRunner.init(key, **values)`). Which names a family accepts:
        `hyperparams_as_data`; this family accepts none."""
        return _reject_hyperparams(self, values, ())

    hyperparams_as_data: ClassVar[Tuple[str, ...]] = ()


def _reject_hyperparams(agent: Any, values: dict, accepted: Tuple[str, ...]) -> Any:
    unknown = sorted(set(values) - set(accepted))
    if unknown:
        raise ValueError(f"set_hyperparams: {type(agent.config).__name__} cannot take {unknown} as data "
                         f"(accepted: {list(accepted) or 'none'}). Fix: set them in the config (one program per "
                         "value), or sweep only over the accepted names.")
    return None


def check_hyperparam_values(name: str, values: Any, low: float, high: float, closed_low: bool) -> None:
    """ValueError naming `name` if a concrete `values` leaves [low, high] ((low, high] if not closed_low)
    or is not finite; traced values are not checked (check them before tracing)."""
    if isinstance(values, jax.core.Tracer):
        return
    v = np.asarray(values, np.float64)
    bad = ~np.isfinite(v) | (v > high) | ((v < low) if closed_low else (v <= low))
    if np.any(bad):
        interval = f"{'[' if closed_low else '('}{low}, {high}]"
        raise ValueError(f"set_hyperparams: {name} must lie in {interval}, got {v[bad].ravel()[:4].tolist()}. "
                         f"Fix: pass values of {name} in {interval}.")


def train_pool(config: Any, env: Any, n_train: Any) -> jax.Array:
    """`n_train` (n_T: the training environment's episodes draw their seeds from its first n_T, traced
    or not) as the int32 pool of `env.reset(key, pool=...)` (`VecEnv.pool_size`), for agents' `init_with`.

    ValueError, before anything compiles, when the environment has no pool (not a masked-image task),
    when the run is split over devices, or when a concrete n_train is not an integer in [1, pool_size]."""
    name = type(config).__name__
    size = env.pool_size
    if size is None:
        raise ValueError(f"init_with: n_train={n_train!r} given, but {name}.env={config.env!r} has no pool of "
                         "episode seeds (training-set size as data needs a masked-image task, e.g. "
                         "'MaskedImage-digits'). Fix: pass n_train=None, or use a masked-image env.")
    if config.num_devices != 1:
        raise ValueError(f"init_with: n_train as data needs {name}.num_devices=1 (got {config.num_devices}). "
                         "Fix: use num_devices=1 (vmap runs over seeds instead), or set env_options num_images.")
    if not isinstance(n_train, jax.core.Tracer):
        v = np.asarray(n_train)
        if v.shape != () or not np.issubdtype(v.dtype, np.integer) or not 1 <= int(v) <= size:
            raise ValueError(f"init_with: n_train={n_train!r} must be an integer in [1, {size}]: the training "
                             f"environment of {name}.env={config.env!r} holds {size} images. Fix: pass "
                             f"1 <= n_train <= {size}, or raise env_options num_images to at least n_train.")
    return jnp.asarray(n_train, jnp.int32)


def init_with(agent: Any, init_local: Callable, key: jax.Array, n_train: Any = None, lr: Any = None) -> Any:
    """`agent.init(key)` with overrides as data (traced scalars, so runs that differ only in them share
    one vmapped program), for the families whose module-level `init_local(spec, key, axis_name, *, pool)`
    takes a pool: `n_train`, the training-set size n_T of a masked-image task (the training
    environments hold ≥ n_T images; episodes draw their seeds from the first n_T,
    `MaskedImageEnv.reset(key, pool)`; test environments unchanged), and `lr` (`agent.set_hyperparams`).
    A run started so equals, given the same key, a run configured with env_options num_images = n_T
    and that lr. ValueError (`train_pool`) for a concrete n_train outside [1, num_images], or an
    environment without images."""
    if n_train is None:
        state = agent.init(key)
    else:
        pool = train_pool(agent.config, agent.spec.env, n_train)
        state = init_local(agent.spec, typed_key(key), None, pool=pool)
    return state if lr is None else agent.set_hyperparams(state, lr=lr)


def bound(fn: Callable) -> Callable:
    """A family's module-level `fn(spec, *args)` as an agent method `agent.fn(*args)` (its spec bound)."""

    @functools.wraps(fn)
    def method(self, *args, **kwargs):
        return fn(self.spec, *args, **kwargs)

    return method


def scan_iterations(iteration: Callable[..., Tuple[Any, Any]], state: Any, start: Any, length: int,
                    axis_name: Optional[str], phase: Any) -> Tuple[Any, Any]:
    """Iterations start .. start+length−1 of `iteration(state, i, axis_name, phase)`: a `lax.scan`, or
    for one iteration the bare call (no loop around it; metrics still get a leading [1] axis)."""
    if length == 1:
        state, m = iteration(state, jnp.asarray(start, jnp.int32), axis_name, phase)
        return state, jax.tree.map(lambda x: x[None], m)
    idx = jnp.asarray(start, jnp.int32) + jnp.arange(length, dtype=jnp.int32)
    return jax.lax.scan(lambda s, i: iteration(s, i, axis_name, None), state, idx)


def build_loop(spec: Any, init_local: Callable, iteration: Callable, per_device: Tuple[str, ...],
               phase_size: int = 0) -> Tuple[Callable, Callable]:
    """`(init, run)` of a family's loop from its module-level `init_local(spec, key, axis_name)` and
    `iteration(spec, state, i, axis_name, phase)`, on one device or over the mesh's "data" axis."""
    c = spec.config
    m = mesh_lib.make_mesh(c.seed_devices, c.num_devices)

    def init_fn(key, axis_name):
        return init_local(spec, typed_key(key), axis_name)

    def run_fn(state, start, length, axis_name, phase):
        return scan_iterations(functools.partial(iteration, spec), state, start, length, axis_name, phase)

    init, run = mesh_lib.distribute(init_fn, run_fn, per_device, m, phase_size, type(c).__name__)
    return (lambda key: init(typed_key(key))), run


def batched_run(agent: Any, batched: bool, length: int) -> Callable[[Any, Any], Tuple[Any, Any]]:
    """`run(state, start)`: `length` iterations of `agent.run`, vmapped over seeds if `batched`."""

    def run(state, start):
        if batched:
            return jax.vmap(lambda s: agent.run(s, start, length))(state)
        return agent.run(state, start, length)

    return run


@functools.lru_cache(maxsize=32)
def _jitted_run(agent: Any, batched: bool, length: int, donate: bool) -> Callable:
    return jax.jit(batched_run(agent, batched, length), donate_argnums=0 if donate else ())


def run_iterations(agent: Any, state: Any, start: int, length: int, *, batched: bool = False,
                   progress: bool = False, donate: bool = True) -> Tuple[Any, Any]:
    """Iterations start .. start+length−1 of `agent`, with the loop structure its config asks for:
    one jitted scan (`loop="scan"`, the accelerator path), or one jitted iteration per call with
    static phases (`loop="host"`, `tdjax.train.run_host_driven`).

    Args:
      agent, state: from `make_agent(config)` and `agent.init` (vmapped over seeds if `batched`).
      start, length: the iterations to run.
      batched: `state` holds several seeds.
      progress: a progress bar over the iterations of a host-driven run.
      donate: let XLA reuse `state`'s buffers (do not use the state passed in afterwards); False
        while something else (an asynchronous checkpoint) may still read it.

    Returns (state, metrics stacked [length], or [S, length] when `batched`)."""
    if agent.config.loop == "host":
        return run_host_driven(agent, state, start, length, batched=batched, progress=progress, donate=donate)
    return _jitted_run(agent, batched, length, donate)(state, jnp.asarray(start, jnp.int32))
