"""Host-driven runs: one jitted iteration per call from Python, the same maths as one `lax.scan`.

The training loops are written as `agent.run(state, start, length)`, a `lax.scan` over iterations, so
a whole run is one XLA program (`make_train(config)(key)`). On GPU that is the fast structure. On
XLA:CPU, convolutions (and above all their gradients) inside a loop run several times slower than the
same computation outside one (jax-ml/jax#12868; measured in benchmarks/RESULTS.md), so for CNN agents
on CPU it is faster to call one iteration at a time from Python: `agent.run(state, i, 1)` contains no
loop around the iteration (and `ActorCriticConfig.update_unroll=True` removes the loops inside it).
An agent with a `phase(i)` method (the value loop: whether iteration i updates and probes) gets that
static phase too, so its update does not sit under a `lax.cond` either: a taken `lax.cond` costs a
convolution gradient on XLA:CPU as much as a loop does. One program is compiled per phase met (the
value loop: warm-up, update, update + probe).

Iteration i draws its random numbers from `fold_in(key, i)`, so a host-driven run computes the same
iterations as the scanned one (equal up to floating-point differences between the two compiled
programs; tested).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Tuple

import jax
import jax.numpy as jnp

__all__ = ["run_host_driven"]


@functools.lru_cache(maxsize=32)
def _one_iteration(agent: Any, batched: bool, phase: Any = None) -> Callable:
    kw = {} if phase is None else {"phase": phase}

    def one(state, i):
        if batched:
            return jax.vmap(lambda s: agent.run(s, i, 1, **kw))(state)
        return agent.run(state, i, 1, **kw)

    return jax.jit(one, donate_argnums=0)  # the state (a replay buffer, say) is updated in place


def run_host_driven(agent: Any, state: Any, start: int, length: int, *, batched: bool = False,
                    progress: bool = False) -> Tuple[Any, Any]:
    """Iterations start .. start+length−1 of `agent` (from `make_agent`), one jitted call each.

    Args:
      agent: a `ValueAgent` or `ActorCriticAgent`.
      state: its RunnerState (batched over seeds with a leading axis if `batched`); donated: do not
        use the array passed in afterwards.
      start, length: the iterations to run.
      batched: `state` holds several seeds (vmapped).
      progress: show a tqdm bar over iterations.

    Returns:
      (state, metrics stacked [length] or [S, length]), like `agent.run(state, start, length)`.
    """
    if length < 1:
        raise ValueError(f"run_host_driven: length must be >= 1, got {length}.")
    phase = getattr(agent, "phase", None)
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
        step = _one_iteration(agent, batched, None if phase is None else phase(i))
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
