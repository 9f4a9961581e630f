"""Devices and hosts: one mesh with two named axes, "seeds" and "data".

  * "data": ONE run split over devices (`config.num_devices`). Each device steps
    num_envs / num_devices environments (and keeps its own replay shard), the gradients of the
    global minibatch are averaged with `lax.pmean`/`psum` over "data", so every device applies the
    update one device would on the whole batch. Written with `jax.shard_map`, manual over "data".
  * "seeds": independent runs (`jax.vmap(train)` over keys) spread over devices
    (`config.seed_devices`). The seed axis of the keys is sharded over "seeds"; XLA partitions the
    vmapped program along it with no communication.

Both at once use seed_devices × num_devices devices. Over several hosts, start every process with
`jax.distributed.initialize(...)` first (on CPU with `jax.config.update(
"jax_cpu_collectives_implementation", "gloo")`): `jax.devices()` then lists the devices of all
hosts, the mesh spans them, and the same program runs on every process (tests/test_train_multihost.py
shows a two-process run equal to a one-process run).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from tdjax.train.host_loop import check_static_phase

__all__ = ["SEEDS", "DATA", "make_mesh", "distribute", "shard_seeds"]

SEEDS = "seeds"
DATA = "data"


def make_mesh(seed_devices: int = 1, data_devices: int = 1) -> Mesh:
    """A [seed_devices, data_devices] mesh of the first devices of `jax.devices()` (all hosts)."""
    n = seed_devices * data_devices
    devices = jax.devices()
    if n > len(devices):
        raise ValueError(
            f"make_mesh: seed_devices × num_devices = {seed_devices} × {data_devices} = {n} devices, but only "
            f"{len(devices)} are visible. Fix: lower seed_devices or num_devices, or on CPU start Python with "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={n}."
        )
    grid = np.asarray(devices[:n], dtype=object).reshape(seed_devices, data_devices)
    return Mesh(grid, (SEEDS, DATA), axis_types=(jax.sharding.AxisType.Auto,) * 2)


def _add_axis(state: Any, fields: Tuple[str, ...]) -> Any:
    return state._replace(**{f: jax.tree.map(lambda x: x[None], getattr(state, f)) for f in fields})


def _drop_axis(state: Any, fields: Tuple[str, ...]) -> Any:
    return state._replace(**{f: jax.tree.map(lambda x: x[0], getattr(state, f)) for f in fields})


def distribute(init_local: Callable[[jax.Array, Optional[str]], Any],
               run_local: Callable[..., Tuple[Any, Any]],
               per_device: Tuple[str, ...], mesh: Mesh, phase_size: int,
               who: str) -> Tuple[Callable, Callable]:
    """`init(key)` and `run(state, start, length, phase=None)` of a loop, on one device or split over
    the mesh's "data" axis.

    Args:
      init_local: `(key, axis_name) -> state` on one device (axis_name None) or one shard.
      run_local: `(state, start, length, axis_name, phase) -> (state, metrics)`.
      per_device: the fields of the state NamedTuple that each device holds its own of (its
        environments, replay); they get a leading [num_devices] axis. The other fields are
        replicated.
      mesh: from `make_mesh`; its "data" size is the number of devices of one run.
      phase_size: length of a static phase tuple (`agent.phase(i)`), checked when one is given.
      who: the agent's name, for errors.
    """
    d = mesh.shape[DATA]

    def check(phase, length):
        check_static_phase(phase, length, phase_size, who)

    if d == 1:
        def init(key):
            return init_local(key, None)

        def run(state, start, length, phase=None):
            check(phase, length)
            return run_local(state, start, length, None, phase)

        return init, run

    def spec(state_like):
        return type(state_like)(**{f: (P(DATA) if f in per_device and getattr(state_like, f) is not None else
                                       (None if getattr(state_like, f) is None else P()))
                                   for f in state_like._fields})

    shard = dict(mesh=mesh, axis_names=frozenset({DATA}))

    def init(key):  # type: ignore[no-redef]
        shapes = jax.eval_shape(lambda k: init_local(k, None), key)
        return jax.shard_map(lambda k: _add_axis(init_local(k, DATA), per_device), in_specs=P(),
                             out_specs=spec(shapes), **shard)(key)

    def run(state, start, length, phase=None):  # type: ignore[no-redef]
        check(phase, length)
        s_spec = spec(state)

        def body(s, st):
            s, m = run_local(_drop_axis(s, per_device), st, length, DATA, phase)
            return _add_axis(s, per_device), m

        return jax.shard_map(body, in_specs=(s_spec, P()), out_specs=(s_spec, P()), **shard)(
            state, jnp.asarray(start, jnp.int32))

    return init, run


def shard_seeds(keys: jax.Array, mesh: Mesh) -> jax.Array:
    """`keys` [S] placed with their seed axis sharded over the mesh's "seeds" axis."""
    n = mesh.shape[SEEDS]
    if keys.shape[0] % n:
        raise ValueError(f"shard_seeds: {keys.shape[0]} seeds cannot be split evenly over seed_devices={n}. "
                         f"Fix: use a multiple of {n} seeds.")
    return jax.device_put(keys, NamedSharding(mesh, P(SEEDS)))
