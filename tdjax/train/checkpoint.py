"""Chunked, checkpointed, resumable training runs driven from Python.

`train_with_checkpoints(config, key, directory)` runs the same iterations as `make_train(config)`,
cut into chunks of `config.checkpoint_interval` iterations, each ONE jitted `lax.scan`. After every
chunk it writes, each file atomically (temporary file + `os.replace`, via `tdjax.report`):

  directory/metrics/<start>.npz   the chunk's per-iteration metrics (all fields),
  directory/metrics.csv           one summary row per chunk (and seed), readable by pandas,
  directory/checkpoint.npz        the whole runner state (params, optimizer, target network,
                                  replay buffer, environments, PRNG keys) and the iteration reached.

A run that is killed at any moment restarts from the last checkpoint when called again with the
same directory, config and key, and ends with bit-identical parameters: the state holds every
random key, and iteration i draws its randomness from `fold_in(key, i)`, never from how the run
was chunked. A non-finite loss stops the run with FloatingPointError naming the iteration and the
last good checkpoint, which is left untouched.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
from pathlib import Path
from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from tdjax.report import atomic_write_bytes, save_csv

__all__ = ["save_checkpoint", "load_checkpoint", "train_with_checkpoints"]

_META = "__meta__"


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def save_checkpoint(path: str | Path, state: Any, meta: Optional[dict] = None) -> Path:
    """Saves a pytree of arrays (typed PRNG keys included) and a JSON-able `meta` dict to one .npz,
    atomically: a reader sees the previous file or the new one, never a partial one."""
    leaves = jax.tree_util.tree_leaves(state)
    arrays, key_leaves = {}, []
    for n, leaf in enumerate(leaves):
        if _is_key(leaf):
            key_leaves.append(n)
            leaf = jax.random.key_data(leaf)
        arrays[f"leaf_{n:05d}"] = np.asarray(leaf)
    meta = dict(meta or {}, num_leaves=len(leaves), key_leaves=key_leaves)
    arrays[_META] = np.asarray(json.dumps(meta))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path, template: Any) -> Tuple[Any, dict]:
    """Loads what `save_checkpoint` wrote into the structure of `template` (arrays or
    `jax.eval_shape` structs of the same pytree). Returns (state, meta).

    Raises:
      ValueError: the file holds a different number of leaves or other shapes than `template`.
    """
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f[_META]))
        leaves_t, treedef = jax.tree_util.tree_flatten(template)
        if meta["num_leaves"] != len(leaves_t):
            raise ValueError(
                f"load_checkpoint: {path} holds {meta['num_leaves']} arrays but the state has {len(leaves_t)}: "
                "it was written by another config or version. Use a new directory."
            )
        out = []
        for n, t in enumerate(leaves_t):
            a = f[f"leaf_{n:05d}"]
            if n in meta["key_leaves"]:
                a = jax.random.wrap_key_data(a)
            if tuple(a.shape) != tuple(t.shape):
                raise ValueError(
                    f"load_checkpoint: array {n} of {path} has shape {a.shape}, the state expects {t.shape}: "
                    "it was written by another config. Use a new directory."
                )
            out.append(jnp.asarray(a) if not _is_key(a) else a)
    return jax.tree_util.tree_unflatten(treedef, out), meta


# ----------------------------------------------------------------------------------------------------
# The chunked driver.


def _config_dict(config: Any) -> dict:
    d = dataclasses.asdict(config)
    d.pop("checkpoint_interval", None)  # chunking does not change the numbers
    return json.loads(json.dumps(d))  # tuples → lists, as they come back from JSON


def _read_rows(path: Path, upto: int) -> list:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if int(r["iteration"]) <= upto]


def _family(config: Any) -> Any:
    """The loop family of `config`: it provides `make_agent(config)` and `summarise(metrics)`."""
    from tdjax.train.core import family_of

    return family_of(config)


@functools.lru_cache(maxsize=8)
def _agent(config: Any) -> Any:
    return _family(config).make_agent(config)


@functools.lru_cache(maxsize=16)
def _jitted_init(agent: Any, batched: bool) -> Callable:
    return jax.jit(jax.vmap(agent.init) if batched else agent.init)


@functools.lru_cache(maxsize=32)
def _chunk_runner(agent: Any, batched: bool, length: int) -> Callable:
    """jit(run iterations start..start+length−1), cached so repeated or resumed runs compile once."""

    def run(state, start):
        if batched:
            return jax.vmap(lambda s: agent.run(s, start, length))(state)
        return agent.run(state, start, length)

    return jax.jit(run)


def _progress(total: int, initial: int, enabled: bool):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional (the 'experiments'/'dev' extras)
        return None
    return tqdm(total=total, initial=initial, unit="chunk", disable=not enabled, dynamic_ncols=True)


def train_with_checkpoints(
    config: Any,
    key: jax.Array,
    directory: str | Path,
    *,
    progress: bool = True,
    on_chunk: Optional[Callable[[int], None]] = None,
) -> Tuple[Any, Any]:
    """Runs `make_train(config)(key)` in checkpointed chunks, resuming from `directory` if it holds one.

    Args:
      config: a training config, e.g. `tdjax.train.ValueConfig` (chunk length:
        `config.checkpoint_interval` iterations). Runs on envpool environments resume with freshly reset
        environments (the emulators' state is not in the checkpoint), so only runs on jitted
        environments resume bit-identically.
      key: a PRNG key, or a batch of keys [S] for S seeds run together (vmapped).
      directory: where checkpoint.npz, metrics.csv and metrics/ live.
      progress: show a tqdm bar over chunks.
      on_chunk: called with the iteration reached after each chunk has been saved (e.g. to stop
        early by raising).

    Returns:
      (final state, metrics stacked over all iterations: [num_iterations] or [S, num_iterations]),
      the same as `jax.vmap`-ed `make_train(config)(key)` up to floating-point reassociation across
      differently sized scans (bit-identical to any other chunked run of the same config and key).

    Raises:
      ValueError: the directory's checkpoint was written with another config or key.
      FloatingPointError: the loss became non-finite; names the iteration and the last checkpoint.
    """
    family = _family(config)
    directory = Path(directory)
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    keys = key if _is_key(key) else jax.random.wrap_key_data(key)
    batched = keys.ndim == 1
    agent = _agent(config.replace(checkpoint_interval=1))  # one agent (and compilation) per run config
    init = jax.vmap(agent.init) if batched else agent.init
    num_iterations, chunk = agent.num_iterations, config.checkpoint_interval

    def run_chunk(state, start, length):
        return _chunk_runner(agent, batched, length)(state, jnp.asarray(start, jnp.int32))

    ckpt = directory / "checkpoint.npz"
    csv_path = directory / "metrics.csv"
    metrics_dir = directory / "metrics"
    identity = {"config": _config_dict(config), "key": np.asarray(jax.random.key_data(keys)).tolist(),
                "num_iterations": num_iterations}
    if ckpt.exists():
        state, meta = load_checkpoint(ckpt, jax.eval_shape(init, keys))
        for what in ("config", "key"):
            if meta[what] != identity[what]:
                diff = ""
                if what == "config":
                    diff = ", ".join(f"{k}: {meta['config'].get(k)!r} there vs {v!r} now"
                                     for k, v in identity["config"].items() if meta["config"].get(k) != v)
                raise ValueError(
                    f"train_with_checkpoints: {ckpt} was written with a different {what} ({diff or 'other seed'}). "
                    "Resume with the same config and key, or use a new directory."
                )
        start = int(meta["iteration"])
        if not agent.env.jittable:  # the checkpoint's environment handles belong to another process
            state = jax.jit(jax.vmap(agent.reattach_env) if batched else agent.reattach_env)(state)
    else:
        state, start = _jitted_init(agent, batched)(keys), 0
    rows = _read_rows(csv_path, start)
    for stale in metrics_dir.glob("*.npz"):  # written after the last checkpoint by a run that died
        if int(stale.stem) >= start:
            stale.unlink()

    bar = _progress(-(-num_iterations // chunk), -(-start // chunk), progress)
    new_treedef = None
    try:
        for lo in range(start, num_iterations, chunk):
            length = min(chunk, num_iterations - lo)
            new_state, metrics = run_chunk(state, lo, length)
            metrics = jax.device_get(metrics)
            new_treedef = jax.tree_util.tree_structure(metrics)
            bad = np.asarray(metrics.learned, bool) & ~np.isfinite(np.asarray(metrics.loss))
            if bad.any():
                where = np.argwhere(bad)[0]
                it = lo + int(where[-1])
                seed = f" (seed index {int(where[0])})" if batched else ""
                last = (f"{ckpt} (iteration {start})" if ckpt.exists() and start > 0 else
                        "none: no checkpoint had been written yet")
                raise FloatingPointError(
                    f"train_with_checkpoints: the loss became non-finite at iteration {it}, env step "
                    f"{(it + 1) * agent.steps_per_iteration}{seed}. The run stopped; the last good "
                    f"checkpoint is {last}. Lower {type(config).__name__}.lr, set max_grad_norm, or check "
                    "rewards (and v_min/v_max for C51)."
                )
            state = new_state
            leaves = jax.tree_util.tree_leaves(metrics)
            buf = io.BytesIO()
            np.savez(buf, **{f"leaf_{n:03d}": np.asarray(l) for n, l in enumerate(leaves)})
            atomic_write_bytes(metrics_dir / f"{lo:010d}.npz", buf.getvalue())
            per_seed = [jax.tree.map(lambda x: x[s], metrics) for s in range(keys.shape[0])] if batched else [metrics]
            for s, m in enumerate(per_seed):
                rows.append({"iteration": lo + length, "seed": s, **family.summarise(m)})
            save_csv(csv_path, rows)
            save_checkpoint(ckpt, state, dict(identity, iteration=lo + length))
            start = lo + length
            if bar is not None:
                bar.update(1)
                last_row = rows[-1]
                bar.set_postfix(ret=f"{float(last_row['return_mean']):.1f}", loss=f"{float(last_row['loss']):.3g}")
            if on_chunk is not None:
                on_chunk(start)
    finally:
        if bar is not None:
            bar.close()

    if new_treedef is None:
        shapes = jax.eval_shape(_chunk_runner(agent, batched, 1), state, jnp.zeros((), jnp.int32))[1]
        new_treedef = jax.tree_util.tree_structure(shapes)
    files = sorted(metrics_dir.glob("*.npz"))
    parts = []
    for f in files:
        with np.load(f) as z:
            parts.append([z[k] for k in sorted(z.files)])
    leaves = [np.concatenate([p[n] for p in parts], axis=-1) for n in range(len(parts[0]))]
    return state, jax.tree_util.tree_unflatten(new_treedef, leaves)
