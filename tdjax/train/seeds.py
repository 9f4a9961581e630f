"""Training S seeds of one config: vmapped (and sharded over devices) when the environment is pure
JAX, one after another otherwise.

Every experiment that trains seeds goes through here, so the rule lives in one place:

  * jitted environments (gymnax: `agent.env.jittable`): `jax.vmap` over `jax.random.split(key, S)`,
    one XLA program for all seeds, the seed axis sharded over the mesh's "seeds" axis
    (`config.seed_devices` devices, `tdjax.train.mesh`);
  * envpool environments (Atari, ProcGen), whose emulators live outside JAX and cannot be vmapped: a
    Python loop over seeds, seed s with `env_seed = config.env_seed + s` and key `keys[s]`;
  * either way with the loop structure the config asks for (`config.loop`: one scan, or one jitted
    iteration per call on CPU; `tdjax.train.run_iterations`).

The result is stacked with the seed axis first ([S, ...]): keys in, stacked results out.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from tdjax.train import core
from tdjax.train import mesh as mesh_lib

__all__ = ["SeedRunner", "make_seed_runner", "train_seeds", "sweep_values"]


def _jittable(agent: Any) -> bool:
    """Whether the seeds of `agent` can be vmapped (its environments are pure JAX, or it has none)."""
    return agent.env is None or bool(agent.env.jittable)


@functools.partial(jax.jit, donate_argnums=0)
def _add_seed_axis(tree: Any) -> Any:
    # Donated, so a large replay buffer is aliased, not copied, when a single seed gets its axis.
    return jax.tree.map(lambda x: x[None], tree)


def _stack(trees: list) -> Any:
    if len(trees) == 1:
        return _add_seed_axis(trees[0])
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _unstack(tree: Any, num_seeds: int) -> list:
    return [jax.tree.map(lambda x, s=s: x[s], tree) for s in range(num_seeds)]


@functools.lru_cache(maxsize=32)
def _batched_init(agent: Any):
    return jax.jit(jax.vmap(agent.init))


@functools.lru_cache(maxsize=32)
def _batched_init_with(agent: Any):
    return jax.jit(jax.vmap(lambda k, h: agent.set_hyperparams(agent.init(k), **h)))


@functools.lru_cache(maxsize=32)
def _batched_train(agent: Any):
    return jax.jit(jax.vmap(lambda k: agent.run(agent.init(k), 0, agent.num_iterations)))


@dataclasses.dataclass(frozen=True, eq=False)
class SeedRunner:
    """S seeds of one training config as one batch, the seed axis first in every state and metric.

    Attributes:
      agents: one agent (`batched`: vmapped over seeds) or one per seed (looped; seed s built from
        `config` with `env_seed = config.env_seed + s`).
      num_seeds: S.
      batched: whether the seeds are vmapped (the environment is pure JAX).
    """

    agents: Tuple[Any, ...]
    num_seeds: int
    batched: bool

    @property
    def agent(self) -> Any:
        """The agent of seed 0 (the seeds' agents differ only in `env_seed`)."""
        return self.agents[0]

    @property
    def num_iterations(self) -> int:
        return self.agents[0].num_iterations

    def keys(self, key: jax.Array, seeds_per_value: Optional[int] = None) -> jax.Array:
        """`split(key, S)`, sharded over the "seeds" mesh axis when the seeds are vmapped. With
        `seeds_per_value=R` (a sweep, S = L·R): `split(key, R)` tiled L times, so run s has seed s mod R
        and every setting of the sweep starts from the same R seeds (paired comparisons)."""
        if seeds_per_value is None:
            keys = jax.random.split(core.typed_key(key), self.num_seeds)
        else:
            if seeds_per_value < 1 or self.num_seeds % seeds_per_value:
                raise ValueError(f"SeedRunner: seeds_per_value={seeds_per_value} must divide the number of runs "
                                 f"{self.num_seeds}. Fix: make the runner with len(values) * seeds_per_value runs.")
            base = jax.random.split(core.typed_key(key), seeds_per_value)
            keys = jnp.concatenate([base] * (self.num_seeds // seeds_per_value))
        if not self.batched:
            return keys
        c = self.agent.config
        return mesh_lib.shard_seeds(keys, mesh_lib.make_mesh(c.seed_devices, c.num_devices))

    def init(self, key: jax.Array, *, seeds_per_value: Optional[int] = None, **hyperparams: Any) -> Any:
        """The initial state of every seed, stacked [S, ...]; seed s starts from `split(key, S)[s]`.

        Sweeps: `hyperparams` are per-run values [S] of the names `agent.hyperparams_as_data` accepts
        (e.g. `lr`, `td_lambda`): run s gets `values[s]` as data (`agent.set_hyperparams`), so runs that
        differ only in these values are ONE vmapped program, not one compilation per value. A grid of
        L values × R seeds is S = L·R runs with the values repeated (`sweep_values`); with
        `seeds_per_value=R` every value starts from the same R seeds (`keys`)."""
        keys = self.keys(key, seeds_per_value)
        if hyperparams:
            core._reject_hyperparams(self.agent, hyperparams, self.agent.hyperparams_as_data)
            values = {}
            for name, v in hyperparams.items():
                v = jnp.asarray(v, jnp.float32)
                if v.shape != (self.num_seeds,):
                    raise ValueError(f"SeedRunner.init: {name} must have one value per run, shape "
                                     f"({self.num_seeds},), got {v.shape}. Fix: repeat the values over the "
                                     "seeds (tdjax.train.seeds.sweep_values).")
                core.check_hyperparam_values(name, v, *_RANGES[name])
                values[name] = v
            if self.batched:
                return _batched_init_with(self.agent)(keys, values)
            return _stack([jax.jit(lambda k, h, a=a: a.set_hyperparams(a.init(k), **h))(
                keys[s], {n: v[s] for n, v in values.items()}) for s, a in enumerate(self.agents)])
        if self.batched:
            return _batched_init(self.agent)(keys)
        return _stack([jax.jit(a.init)(keys[s]) for s, a in enumerate(self.agents)])

    def run(self, state: Any, start: int, length: int, *, progress: bool = False) -> Tuple[Any, Any]:
        """Iterations start .. start+length−1 of every seed: (state, metrics stacked [S, length]).
        `state` is donated: do not use it afterwards."""
        if self.batched:
            return jax.block_until_ready(
                core.run_iterations(self.agent, state, start, length, batched=True, progress=progress))
        states, metrics = [], []
        for agent, s in zip(self.agents, _unstack(state, self.num_seeds)):
            s, m = jax.block_until_ready(core.run_iterations(agent, s, start, length, progress=progress))
            states.append(s)
            metrics.append(m)
        return _stack(states), jax.tree.map(lambda *xs: jnp.stack(xs), *metrics)


_RANGES = {"lr": (0.0, float("inf"), False), "td_lambda": (0.0, 1.0, True)}


def sweep_values(values: Any, num_seeds: int) -> jax.Array:
    """The per-run values of a sweep of len(values) settings × `num_seeds` seeds, setting-major:
    run s has `values[s // num_seeds]` (float32 [len(values) · num_seeds]); pass them to
    `SeedRunner.init` of a runner with that many runs, and reshape its results to [L, num_seeds, ...]."""
    v = np.asarray(values, np.float32).reshape(-1)
    return jnp.asarray(np.repeat(v, num_seeds))


def make_seed_runner(config: Any, num_seeds: int) -> SeedRunner:
    """A `SeedRunner` for `num_seeds` seeds of `config` (any family's config), validated (ValueError
    naming the field) before anything compiles."""
    if not isinstance(num_seeds, int) or num_seeds < 1:
        raise ValueError(f"make_seed_runner: num_seeds must be a positive integer, got {num_seeds!r}.")
    agent = core.make_agent(config)
    if _jittable(agent):
        if num_seeds % config.seed_devices:
            raise ValueError(f"make_seed_runner: num_seeds={num_seeds} cannot be split evenly over "
                             f"{type(config).__name__}.seed_devices={config.seed_devices}. Fix: use a multiple "
                             f"of {config.seed_devices} seeds, or seed_devices=1.")
        return SeedRunner((agent,), num_seeds, True)
    agents = tuple(core.make_agent(dataclasses.replace(config, env_seed=config.env_seed + s))
                   for s in range(num_seeds))
    return SeedRunner(agents, num_seeds, False)


def train_seeds(config: Any, key: jax.Array, num_seeds: int, *, keep_state: bool = True,
                progress: bool = False) -> Tuple[Any, Any]:
    """Trains `num_seeds` seeds of `config` from `jax.random.split(key, num_seeds)`: (states, metrics),
    both stacked [S, ...] (metrics [S, num_iterations, ...]).

    Jitted environments with `loop="scan"`: `jax.jit(jax.vmap(make_train(config)))(keys)`, the keys
    sharded over `config.seed_devices` devices. envpool environments: one run per seed, seed s with
    `env_seed = config.env_seed + s`. `loop="host"`: one jitted iteration per call.

    Args:
      config: any family's training config.
      key: the root key.
      num_seeds: S ≥ 1 (a multiple of `config.seed_devices` when the seeds are vmapped).
      keep_state: False returns None for the states, freeing each looped seed's state (its replay
        buffer) as soon as it is done; the vmapped path returns its state either way.
      progress: a tqdm bar over iterations (host-driven) or seeds (looped).
    """
    runner = make_seed_runner(config, num_seeds)
    agent = runner.agent
    if runner.batched:
        if agent.config.loop == "scan":
            return jax.block_until_ready(_batched_train(agent)(runner.keys(key)))
        return runner.run(runner.init(key), 0, runner.num_iterations, progress=progress)
    keys = runner.keys(key)
    states, metrics = [], []
    seeds = range(num_seeds)
    if progress and agent.config.loop == "scan":
        from tqdm.auto import tqdm

        seeds = tqdm(seeds, desc="seeds", dynamic_ncols=True)
    for s in seeds:
        a = runner.agents[s]
        st, m = jax.block_until_ready(
            core.run_iterations(a, jax.jit(a.init)(keys[s]), 0, a.num_iterations, progress=progress))
        if keep_state:
            states.append(st)
        metrics.append(m)
        del st
    return (_stack(states) if keep_state else None), jax.tree.map(lambda *xs: jnp.stack(xs), *metrics)
