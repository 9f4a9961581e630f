"""Training S seeds of one config: vmapped when the environment is pure JAX, one after another otherwise.

Every experiment that trains seeds goes through here, so the rule lives in one place:

  * jitted environments (gymnax: `agent.env.jittable`): `jax.jit(jax.vmap(train))` over
    `jax.random.split(key, S)`, one XLA program for all seeds;
  * envpool environments (Atari, ProCGen), whose emulators live outside JAX and cannot be vmapped: a
    Python loop over seeds, seed s with `env_seed = config.env_seed + s` and key `keys[s]`;
  * host-driven runs (`host_driven=True`, by default when the config asks for `update_unroll`): one
    jitted iteration per call (`tdjax.train.run_host_driven`), faster for CNN agents on XLA:CPU.

Either way the result is stacked with the seed axis first ([S, ...]), so a later change can shard that
axis over devices here without touching a caller: keys in, stacked results out.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional, Tuple

import jax
import jax.numpy as jnp

from tdjax.train import core
from tdjax.train.driver import run_host_driven

__all__ = ["SeedRunner", "make_seed_runner", "train_seeds"]


def _jittable(agent: Any) -> bool:
    return bool(agent.env.jittable)


def _wants_host_driven(config: Any, host_driven: Optional[bool]) -> bool:
    # `update_unroll` (actor-critic) unrolls the update so that it can be driven one iteration per call.
    return bool(getattr(config, "update_unroll", False)) if host_driven is None else bool(host_driven)


@functools.partial(jax.jit, donate_argnums=0)
def _add_seed_axis(tree: Any) -> Any:
    # Donated, so a large replay buffer is aliased, not copied, when a single seed gets its axis.
    return jax.tree.map(lambda x: x[None], tree)


@functools.partial(jax.jit, donate_argnums=0)
def _drop_seed_axis(tree: Any) -> Any:
    return jax.tree.map(lambda x: x[0], tree)


def _stack(trees: list) -> Any:
    if len(trees) == 1:
        return _add_seed_axis(trees[0])
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _unstack(tree: Any, num_seeds: int) -> list:
    if num_seeds == 1:
        return [_drop_seed_axis(tree)]
    return [jax.tree.map(lambda x: x[s], tree) for s in range(num_seeds)]


@functools.lru_cache(maxsize=32)
def _batched_init(agent: Any):
    return jax.jit(jax.vmap(agent.init))


@functools.lru_cache(maxsize=32)
def _batched_run(agent: Any, length: int):
    return jax.jit(lambda state, start: jax.vmap(lambda s: agent.run(s, start, length))(state))


@functools.lru_cache(maxsize=64)
def _single_run(agent: Any, length: int):
    return jax.jit(lambda state, start: agent.run(state, start, length))


@dataclasses.dataclass(frozen=True, eq=False)
class SeedRunner:
    """S seeds of one training config as one batch, the seed axis first in every state and metric.

    Attributes:
      agents: one agent (`batched`: vmapped over seeds) or one per seed (looped; seed s built from
        `config` with `env_seed = config.env_seed + s`).
      num_seeds: S.
      batched: whether the seeds are vmapped (the environment is pure JAX).
      host_driven: whether `run` calls one jitted iteration at a time (`run_host_driven`).
    """

    agents: Tuple[Any, ...]
    num_seeds: int
    batched: bool
    host_driven: bool

    @property
    def agent(self) -> Any:
        """The agent of seed 0 (the seeds' agents differ only in `env_seed`)."""
        return self.agents[0]

    @property
    def num_iterations(self) -> int:
        return self.agents[0].num_iterations

    def init(self, key: jax.Array) -> Any:
        """The initial state of every seed, stacked [S, ...]; seed s starts from `split(key, S)[s]`."""
        keys = jax.random.split(core.typed_key(key), self.num_seeds)
        if self.batched:
            return _batched_init(self.agent)(keys)
        return _stack([jax.jit(a.init)(keys[s]) for s, a in enumerate(self.agents)])

    def run(self, state: Any, start: int, length: int, *, progress: bool = False) -> Tuple[Any, Any]:
        """Iterations start .. start+length−1 of every seed: (state, metrics stacked [S, length]).

        `state` is donated in the host-driven and looped paths: do not use it afterwards."""
        if self.batched:
            if self.host_driven:
                return run_host_driven(self.agent, state, start, length, batched=True, progress=progress)
            return jax.block_until_ready(_batched_run(self.agent, length)(state, start))
        states, metrics = [], []
        for agent, s in zip(self.agents, _unstack(state, self.num_seeds)):
            if self.host_driven:
                s, m = run_host_driven(agent, s, start, length, progress=progress)
            else:
                s, m = jax.block_until_ready(_single_run(agent, length)(s, start))
            states.append(s)
            metrics.append(m)
        return _stack(states), jax.tree.map(lambda *xs: jnp.stack(xs), *metrics)


def make_seed_runner(config: Any, num_seeds: int, *, host_driven: Optional[bool] = None) -> SeedRunner:
    """A `SeedRunner` for `num_seeds` seeds of `config` (a `ValueConfig` or `ActorCriticConfig`).

    Args:
      config: a training config; validated (ValueError naming the field) before anything compiles.
      num_seeds: S ≥ 1.
      host_driven: drive the run one jitted iteration per call; None: as `config.update_unroll` says
        (False for configs without that field).
    """
    if num_seeds < 1:
        raise ValueError(f"make_seed_runner: num_seeds must be >= 1, got {num_seeds}.")
    agent = core.make_agent(config)
    if _jittable(agent):
        agents = (agent,)
    else:
        agents = tuple(core.make_agent(dataclasses.replace(config, env_seed=config.env_seed + s))
                       for s in range(num_seeds))
    return SeedRunner(agents, num_seeds, _jittable(agent), _wants_host_driven(config, host_driven))


def train_seeds(config: Any, key: jax.Array, num_seeds: int, *, host_driven: Optional[bool] = None,
                keep_state: bool = True, progress: bool = False) -> Tuple[Any, Any]:
    """Trains `num_seeds` seeds of `config` from `jax.random.split(key, num_seeds)`: (states, metrics),
    both stacked [S, ...] (metrics [S, num_iterations, ...]).

    Jitted environments: `jax.jit(jax.vmap(make_train(config)))(keys)`, unless host-driven. envpool
    environments: one run per seed, seed s with `env_seed = config.env_seed + s`.

    Args:
      config: a `ValueConfig` or `ActorCriticConfig`.
      key: the root key.
      num_seeds: S ≥ 1.
      host_driven: one jitted iteration per call (`run_host_driven`); None: `config.update_unroll`.
      keep_state: False returns None for the states, freeing each looped seed's state (its replay
        buffer) as soon as it is done; the vmapped path returns its state either way.
      progress: a tqdm bar over iterations (host-driven) or seeds (looped).
    """
    runner = make_seed_runner(config, num_seeds, host_driven=host_driven)
    keys = jax.random.split(core.typed_key(key), num_seeds)
    agent = runner.agent
    if runner.batched and not runner.host_driven:
        train = jax.jit(jax.vmap(lambda k: agent.run(agent.init(k), 0, agent.num_iterations)))
        return jax.block_until_ready(train(keys))
    if runner.batched:
        return runner.run(runner.init(key), 0, runner.num_iterations, progress=progress)
    states, metrics = [], []
    seeds = range(num_seeds)
    if progress and not runner.host_driven:
        from tqdm.auto import tqdm

        seeds = tqdm(seeds, desc="seeds", dynamic_ncols=True)
    for s in seeds:
        a = runner.agents[s]
        if runner.host_driven:
            st, m = run_host_driven(a, jax.jit(a.init)(keys[s]), 0, a.num_iterations, progress=progress)
        else:
            st, m = jax.block_until_ready(jax.jit(lambda k, a=a: a.run(a.init(k), 0, a.num_iterations))(keys[s]))
        if keep_state:
            states.append(st)
        metrics.append(m)
        del st
    return (_stack(states) if keep_state else None), jax.tree.map(lambda *xs: jnp.stack(xs), *metrics)
