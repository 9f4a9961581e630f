"""The CPU loop structure, in one place: host-driven iterations, static phases, unrolled updates.

Every training loop is written for the accelerator: `agent.run(state, start, length)` is a
`lax.scan` over iterations, so a whole run is one XLA program (`make_train(config)(key)`), and the
conditional parts of an iteration (whether it learns, probes, evaluates) are `lax.cond`s. That is
the fast structure on GPU and TPU, and what the loop code reads as.

On XLA:CPU, convolutions (above all their gradients) inside any control flow (`lax.scan`,
`lax.cond`) run several times slower than the same computation at top level (jax-ml/jax#12868;
measured in benchmarks/RESULTS.md, tables C″ and D′). One switch, the config field
`loop="host"`, turns on three things that remove that control flow without changing the maths:

  1. `run_host_driven`: one jitted iteration per call from Python (`agent.run(state, i, 1)`), so no
     loop surrounds the iteration;
  2. static phases: an agent whose `phase(i)` returns Python bools for iteration i (the value loop:
     whether it learns and whether it probes) gets them passed in, and `branch` turns each
     `lax.cond` into a plain Python branch (one program compiled per phase met);
  3. unrolled update loops: `steps` runs the epochs × minibatches of an update as straight-line
     code with an optimization barrier between steps instead of a `lax.scan`.

`tdjax.train.run_iterations` (and `train_with_checkpoints`) pick the host-driven driver when
`config.loop == "host"`. Iteration i draws its random numbers from `fold_in(key, i)`, so a
host-driven run computes the same iterations as the scanned one (equal up to floating-point
differences between the two compiled programs; tested).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp

__all__ = ["run_host_driven", "branch", "steps", "check_static_phase"]


def branch(static: Optional[bool], pred: Any, true_fn: Callable, false_fn: Callable, *operands: Any) -> Any:
    """`lax.cond(pred, true_fn, false_fn, *operands)`, or, when the phase is static (`static` a
    Python bool from `agent.phase(i)`), the chosen branch called directly."""
    if static is None:
        return jax.lax.cond(pred, true_fn, false_fn, *operands)
    return (true_fn if static else false_fn)(*operands)


def steps(step: Callable[[Any, Any], Tuple[Any, Any]], carry: Any, xs: Any, unroll: bool) -> Tuple[Any, Any]:
    """`lax.scan(step, carry, xs)`; with `unroll`, the same steps as straight-line code.

    The optimization barrier after each unrolled step keeps XLA from interleaving the steps' buffers
    (with 36 unrolled IMPALA steps, as in DAAC's critic phase, the flat program otherwise held ~11 GB
    and ran ~3× slower per step).
    """
    if not unroll:
        return jax.lax.scan(step, carry, xs)
    n = jax.tree.leaves(xs)[0].shape[0]
    outs = []
    for t in range(n):
        carry, out = step(carry, jax.tree.map(lambda x, t=t: x[t], xs))
        carry, out = jax.lax.optimization_barrier((carry, out))
        outs.append(out)
    return carry, jax.tree.map(lambda *ys: jnp.stack(ys), *outs)


def check_static_phase(phase: Any, length: int, size: int, who: str) -> None:
    """`agent.run(..., phase=...)`: a static phase (a tuple of `size` Python bools, from `agent.phase(i)`)
    applies to one iteration only."""
    if phase is None:
        return
    if length != 1:
        raise ValueError(f"{who}.run: a static phase applies to one iteration; got length={length}. "
                         "Pass phase=None for a scan over several iterations.")
    if not (isinstance(phase, tuple) and len(phase) == size and all(isinstance(p, bool) for p in phase)):
        raise ValueError(f"{who}.run: phase must be agent.phase(i), a tuple of {size} bools; got {phase!r}.")


@functools.lru_cache(maxsize=32)
def _one_iteration(agent: Any, batched: bool, phase: Any, donate: bool) -> Callable:
    kw = {} if phase is None else {"phase": phase}

    def one(state, i):
        if batched:
            return jax.vmap(lambda s: agent.run(s, i, 1, **kw))(state)
        return agent.run(state, i, 1, **kw)

    # the state (a replay buffer, say) is updated in place unless something else still reads it
    return jax.jit(one, donate_argnums=0 if donate else ())


def run_host_driven(agent: Any, state: Any, start: int, length: int, *, batched: bool = False,
                    progress: bool = False, donate: bool = True) -> Tuple[Any, Any]:
    """Iterations start .. start+length−1 of `agent` (from `make_agent`), one jitted call each.

    Args:
      agent: from `tdjax.train.make_agent` (any family).
      state: its RunnerState (batched over seeds with a leading axis if `batched`); donated unless
        `donate=False`: do not use the array passed in afterwards.
      start, length: the iterations to run.
      batched: `state` holds several seeds (vmapped).
      progress: show a tqdm bar over iterations.
      donate: let XLA update the state's buffers in place.

    Returns:
      (state, metrics stacked [length] or [S, length]), like `agent.run(state, start, length)`.
    """
    if length < 1:
        raise ValueError(f"run_host_driven: length must be >= 1, got {length}.")
    phase = agent.phase
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=length, unit="it", dynamic_ncols=True)
    # On XLA:CPU, wait for each iteration before dispatching the next: with asynchronous dispatch the
    # queued next program contends with the running one (measured: PPO on BigfishEasy with the IMPALA
    # CNN, 10.2 s per iteration unsynchronised against 5.8 s synchronised).
    sync = jax.default_backend() == "cpu"
    parts = []
    for i in range(start, start + length):
        step = _one_iteration(agent, batched, phase(i), donate)
        state, m = step(state, jnp.asarray(i, jnp.int32))
        if sync:
            state = jax.block_until_ready(state)
        parts.append(m)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    axis = 1 if batched else 0
    return state, jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=axis), *parts)
