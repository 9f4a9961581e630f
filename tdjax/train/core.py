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

from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Family", "register_family", "family_of", "make_agent", "make_train", "summarise", "mean_return",
           "typed_key"]


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


def mean_return(config: Any, metrics: Any, last: Optional[int] = None, **kw: Any) -> np.ndarray:
    """The family's mean return of the episodes ended in the last `last` iterations, per seed."""
    return family_of(config).mean_return(metrics, last, **kw)


def typed_key(key: jax.Array) -> jax.Array:
    """`key` as a typed PRNG key (raw uint32 key data is wrapped)."""
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(key)
