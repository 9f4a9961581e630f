"""Chunked, checkpointed, resumable training runs driven from Python, stored with orbax-checkpoint.

`train_with_checkpoints(config, key, directory)` runs the same iterations as `make_train(config)`,
cut into chunks of `config.checkpoint_interval` iterations, each ONE jitted `lax.scan`. After every
chunk it writes:

  directory/metrics/<start>.npz       the chunk's per-iteration metrics (all fields), atomically,
  directory/metrics.csv               one summary row per chunk (and seed), readable by pandas,
  directory/checkpoints/<iteration>/  the whole runner state (params, optimizer, target network,
                                      replay buffer, environments, PRNG keys) as an orbax checkpoint:
                                      one entry per array (sharded arrays written shard by shard),
                                      and the run's identity (config, key, iteration) as JSON.

Checkpoints are written asynchronously: orbax copies the state off the devices, then writes it in a
background thread while the next chunk computes; the run waits for that write to finish before it
reports the chunk as saved (`on_chunk`, the progress bar) and before the next save. orbax writes
into `<iteration>.orbax-checkpoint-tmp` and renames it only when complete, so a killed run never
leaves a checkpoint that is used half-written; the next run deletes such temporary directories. Only
the last `keep_last` checkpoints are kept.

A run that is killed at any moment restarts from the last complete checkpoint when called again
with the same directory, config and key, and ends with bit-identical parameters: the state holds
every random key, and iteration i draws its randomness from `fold_in(key, i)`, never from how the
run was chunked. A non-finite loss stops the run with FloatingPointError naming the iteration and
the last good checkpoint, which is left untouched. docs/checkpoints.md describes the layout.
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
from tdjax.train.core import batched_run, family_of, make_agent, run_iterations

__all__ = ["save_checkpoint", "load_checkpoint", "train_with_checkpoints", "CHECKPOINTS", "LEGACY_CHECKPOINT"]

CHECKPOINTS = "checkpoints"  # the run directory's orbax CheckpointManager root: checkpoints/<iteration>/
LEGACY_CHECKPOINT = "checkpoint.npz"  # the single-file checkpoint written before orbax (still loaded)
_FORMAT = "tdjax-orbax-1"
_STATE, _META = "state", "meta"  # the two items of every checkpoint directory


def _ocp():
    try:
        import orbax.checkpoint as ocp
    except ImportError as e:  # a dependency of tdjax; missing only in hand-made environments
        raise ImportError(
            "tdjax.train checkpoints need orbax-checkpoint: pip install 'orbax-checkpoint>=0.12'"
        ) from e
    return ocp


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _layout(state: Any) -> dict:
    """What `load_checkpoint` checks before restoring: leaf count, shapes and dtypes."""
    leaves = jax.tree_util.tree_leaves(state)
    return {"format": _FORMAT, "num_leaves": len(leaves),
            "shapes": [list(np.shape(x)) for x in leaves], "dtypes": [str(_dtype(x)) for x in leaves]}


def _dtype(x: Any) -> Any:
    return x.dtype if hasattr(x, "dtype") else jnp.asarray(x).dtype


def _composite_save(state: Any, meta: dict):
    ocp = _ocp()
    return ocp.args.Composite(**{_STATE: ocp.args.StandardSave(state), _META: ocp.args.JsonSave(meta)})


def save_checkpoint(path: str | Path, state: Any, meta: Optional[dict] = None) -> Path:
    """Saves a pytree of arrays (typed PRNG keys and sharded `jax.Array`s included) and a JSON-able
    `meta` dict as an orbax checkpoint directory at `path`, and returns when it is on disk.

    orbax writes into a temporary directory and renames it to `path` when complete, so a reader
    never sees a partial checkpoint. An existing checkpoint at `path` is replaced (removed first).
    Every process of a multi-host run must call this with the same `path` (a shared file system).

    Raises:
      ValueError: `path` ends in .npz (the single-file format is no longer written).
    """
    path = Path(path).absolute()
    if path.suffix == ".npz":
        raise ValueError(
            f"save_checkpoint: path {path} ends in .npz, but checkpoints are now orbax directories "
            "(one entry per array, sharded arrays supported). Pass a directory path without .npz, e.g. "
            f"{path.with_suffix('')}."
        )
    ocp = _ocp()
    meta = dict(meta or {}, **_layout(state))
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        ckptr.save(path, args=_composite_save(state, meta), force=True)
    return path


def _target(template: Any, shardings: Any = None) -> Any:
    """`template` as `jax.ShapeDtypeStruct`s carrying where each restored array should live: the
    leaf's own sharding (a `jax.Array`, or a struct with a concrete sharding), else `shardings`'
    leaf, else none (orbax then uses the sharding the array was saved with)."""

    def one(t, s):
        s = s if s is not None else getattr(t, "sharding", None)
        if isinstance(s, jax.sharding.NamedSharding) and isinstance(s.mesh, jax.sharding.AbstractMesh):
            s = None  # from jax.eval_shape: no devices attached
        return jax.ShapeDtypeStruct(np.shape(t), _dtype(t), sharding=s)

    if shardings is None:
        return jax.tree.map(lambda t: one(t, None), template)
    return jax.tree.map(one, template, shardings)


def _find_checkpoint(path: Path) -> Tuple[Path, str]:
    """(file or step directory, "npz" | "orbax") for what `load_checkpoint` was given."""
    if path.is_file():
        return path, "npz"
    if (path / _STATE).is_dir() and (path / _META).is_dir():
        return path, "orbax"
    root = path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path
    steps = _finished_steps(root) if root.is_dir() else []
    if steps:
        return root / str(steps[-1]), "orbax"
    if (path / LEGACY_CHECKPOINT).is_file():
        return path / LEGACY_CHECKPOINT, "npz"
    hint = ""
    if path.name == LEGACY_CHECKPOINT and _finished_steps(path.parent / CHECKPOINTS):
        hint = (f" Runs now keep orbax checkpoints in {path.parent / CHECKPOINTS}/<iteration>/: pass the run "
                f"directory {path.parent} to load the latest one.")
    raise FileNotFoundError(
        f"load_checkpoint: no checkpoint at {path}: expected a directory written by save_checkpoint, a run "
        f"directory holding {CHECKPOINTS}/, or an old {LEGACY_CHECKPOINT} file.{hint}"
    )


def _finished_steps(root: Path) -> list:
    """Iterations of the complete checkpoints under a CheckpointManager root (temporary ones skipped)."""
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir()
                  if p.name.isdigit() and p.is_dir() and (p / _STATE).is_dir() and (p / _META).is_dir())


def load_checkpoint(path: str | Path, template: Any, shardings: Any = None) -> Tuple[Any, dict]:
    """Loads a checkpoint into the structure of `template`. Returns (state, meta).

    Args:
      path: a checkpoint directory written by `save_checkpoint`; a run directory of
        `train_with_checkpoints` (its latest checkpoint is loaded); or a `checkpoint.npz` written by
        tdjax before checkpoints moved to orbax.
      template: arrays or `jax.ShapeDtypeStruct`s of the same pytree (e.g. `jax.eval_shape(init, key)`).
        Arrays come back with each leaf's sharding where it has a concrete one.
      shardings: optional pytree of `jax.sharding.Sharding` like `template`, used for leaves
        without one (e.g. `jax.jit(init).lower(key).compile().output_shardings`). Leaves with
        neither come back as they were saved (orbax's record of the sharding).

    Raises:
      FileNotFoundError: nothing loadable at `path` (the message says what was expected).
      ValueError: the checkpoint holds a different number of arrays or other shapes than `template`.
    """
    found, kind = _find_checkpoint(Path(path).absolute())
    if kind == "npz":
        state, meta = _load_npz(found, template)
        target = _target(template, shardings)
        return jax.tree.map(lambda x, t: x if t.sharding is None else jax.device_put(x, t.sharding),
                            state, target), meta
    ocp = _ocp()
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        meta = ckptr.restore(found, args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()}))[_META]
        want = _layout(template)
        if meta.get("num_leaves") != want["num_leaves"]:
            raise ValueError(
                f"load_checkpoint: {found} holds {meta.get('num_leaves')} arrays but the state has "
                f"{want['num_leaves']}: it was written by another config or version. Use a new directory."
            )
        for n, (a, b) in enumerate(zip(meta["shapes"], want["shapes"])):
            if a != b:
                raise ValueError(
                    f"load_checkpoint: array {n} of {found} has shape {tuple(a)}, the state expects {tuple(b)}: "
                    "it was written by another config. Use a new directory."
                )
        state = ckptr.restore(found, args=ocp.args.Composite(
            **{_STATE: ocp.args.StandardRestore(_target(template, shardings))}))[_STATE]
    return state, meta


def _load_npz(path: Path, template: Any) -> Tuple[Any, dict]:
    """Reads the single-file format tdjax wrote before orbax (typed keys stored as key data)."""
    with np.load(path, allow_pickle=False) as f:
        if "__meta__" not in f.files:
            raise ValueError(f"load_checkpoint: {path} is not a tdjax checkpoint (no __meta__ entry).")
        meta = json.loads(str(f["__meta__"]))
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
            if tuple(a.shape) != tuple(np.shape(t)):
                raise ValueError(
                    f"load_checkpoint: array {n} of {path} has shape {a.shape}, the state expects {np.shape(t)}: "
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


@functools.lru_cache(maxsize=8)
def _agent(config: Any) -> Any:
    return make_agent(config)


@functools.lru_cache(maxsize=16)
def _jitted_init(agent: Any, batched: bool) -> Callable:
    return jax.jit(jax.vmap(agent.init) if batched else agent.init)


def _progress(total: int, initial: int, enabled: bool):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional (the 'experiments'/'dev' extras)
        return None
    return tqdm(total=total, initial=initial, unit="chunk", disable=not enabled, dynamic_ncols=True)


def _drop_stale_files(directory: Path, metrics_dir: Path, start: int) -> None:
    """Deletes what a killed run wrote after its last checkpoint: metrics of later chunks and the
    temporary files of interrupted atomic writes."""
    for stale in metrics_dir.glob("*.npz"):
        if int(stale.stem) >= start:
            stale.unlink()
    # tdjax.report.atomic_write_bytes' temporary files: .<name>.<random>.tmp
    for tmp in [*directory.glob(".metrics.csv.*.tmp"), *metrics_dir.glob(".*.npz.*.tmp")]:
        tmp.unlink(missing_ok=True)


def _check_identity(meta: dict, identity: dict, where: Path) -> None:
    for what in ("config", "key"):
        if meta.get(what) != identity[what]:
            diff = ""
            if what == "config":
                there = meta.get("config") or {}
                diff = ", ".join(f"{k}: {there.get(k)!r} there vs {v!r} now"
                                 for k, v in identity["config"].items() if there.get(k) != v)
            raise ValueError(
                f"train_with_checkpoints: {where} was written with a different {what} ({diff or 'other seed'}). "
                "Resume with the same config and key, or use a new directory."
            )


def train_with_checkpoints(
    config: Any,
    key: jax.Array,
    directory: str | Path,
    *,
    progress: bool = True,
    on_chunk: Optional[Callable[[int], None]] = None,
    keep_last: Optional[int] = 2,
    async_save: bool = True,
) -> Tuple[Any, Any]:
    """Runs `make_train(config)(key)` in checkpointed chunks, resuming from `directory` if it holds one.

    Args:
      config: a training config, e.g. `tdjax.train.ValueConfig` (chunk length:
        `config.checkpoint_interval` iterations). Runs on envpool environments resume with freshly reset
        environments (the emulators' state is not in the checkpoint), so only runs on jitted
        environments resume bit-identically.
      key: a PRNG key, or a batch of keys [S] for S seeds run together (vmapped).
      directory: where checkpoints/, metrics.csv and metrics/ live (docs/checkpoints.md). A
        `checkpoint.npz` left there by an older tdjax is resumed from; later checkpoints go to
        checkpoints/.
      progress: show a tqdm bar over chunks.
      on_chunk: called with the iteration reached after each chunk's checkpoint is complete on disk
        (e.g. to stop early by raising).
      keep_last: how many of the latest checkpoints to keep (older ones are deleted once a newer one
        is complete); None keeps all.
      async_save: write each checkpoint in the background while the next chunk runs (the run still
        waits for it before reporting the chunk saved or saving again); False writes synchronously.

    Returns:
      (final state, metrics stacked over all iterations: [num_iterations] or [S, num_iterations]),
      the same as `jax.vmap`-ed `make_train(config)(key)` up to floating-point reassociation across
      differently sized scans (bit-identical to any other chunked run of the same config and key).

    Raises:
      ValueError: the directory's checkpoint was written with another config or key; or keep_last < 1.
      FloatingPointError: the loss became non-finite; names the iteration and the last checkpoint.
    """
    if keep_last is not None and (not isinstance(keep_last, int) or keep_last < 1):
        raise ValueError(f"train_with_checkpoints: keep_last={keep_last!r} must be a positive int (or None to keep "
                         "every checkpoint); the default keeps the last 2.")
    ocp = _ocp()
    family = family_of(config)
    directory = Path(directory).absolute()
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    keys = key if _is_key(key) else jax.random.wrap_key_data(key)
    batched = keys.ndim == 1
    agent = _agent(config.replace(checkpoint_interval=1))  # one agent (and compilation) per run config
    num_iterations, chunk = agent.num_iterations, config.checkpoint_interval

    def run_chunk(state, start, length):
        # no buffer donation: an asynchronous save may still be reading the previous state's arrays
        return run_iterations(agent, state, start, length, batched=batched, donate=False)

    root = directory / CHECKPOINTS
    legacy = directory / LEGACY_CHECKPOINT
    csv_path = directory / "metrics.csv"
    metrics_dir = directory / "metrics"
    identity = {"config": _config_dict(config), "key": np.asarray(jax.random.key_data(keys)).tolist(),
                "num_iterations": num_iterations}
    manager = ocp.CheckpointManager(root, options=ocp.CheckpointManagerOptions(
        max_to_keep=keep_last, create=True, cleanup_tmp_directories=True,
        enable_async_checkpointing=async_save))
    try:
        latest = manager.latest_step()
        if latest is not None or legacy.exists():
            init = _jitted_init(agent, batched)
            template = jax.eval_shape(init, keys)
            where = root / str(latest) if latest is not None else legacy
            # restore straight into the placement a fresh init would have (e.g. sharded over a mesh)
            shardings = init.lower(keys).compile().output_shardings  # type: ignore[attr-defined]
            state, meta = load_checkpoint(where, template, shardings)
            _check_identity(meta, identity, where)
            start, last_good = int(meta["iteration"]), where
            # the checkpoint's environment handles belong to another process
            if agent.env is not None and not agent.env.jittable:
                state = jax.jit(jax.vmap(agent.reattach_env) if batched else agent.reattach_env)(state)
        else:
            state, start, last_good = _jitted_init(agent, batched)(keys), 0, None
        rows = _read_rows(csv_path, start)
        _drop_stale_files(directory, metrics_dir, start)
        return _run_chunks(agent, family, config, keys, batched, manager, run_chunk, state, start, last_good,
                           rows, root, csv_path, metrics_dir, identity, num_iterations, chunk, progress, on_chunk)
    finally:
        manager.close()  # waits for a save in flight, so it completes even when the run is interrupted


def _run_chunks(agent, family, config, keys, batched, manager, run_chunk, state, start, last_good, rows, root,
                csv_path, metrics_dir, identity, num_iterations, chunk, progress, on_chunk):
    bar = _progress(-(-num_iterations // chunk), -(-start // chunk), progress)
    pending = None  # (iteration, csv row) of the checkpoint being written in the background
    new_treedef = None

    def report(done):
        iteration, row = done
        if bar is not None:
            bar.update(1)
            bar.set_postfix(ret=f"{float(row['return_mean']):.1f}", loss=f"{float(row['loss']):.3g}")
        if on_chunk is not None:
            on_chunk(iteration)

    try:
        for lo in range(start, num_iterations, chunk):
            length = min(chunk, num_iterations - lo)
            new_state, metrics = run_chunk(state, lo, length)  # dispatched: computes while we wait below
            if pending is not None:
                manager.wait_until_finished()
                report(pending)
                pending = None
            metrics = jax.device_get(metrics)
            new_treedef = jax.tree_util.tree_structure(metrics)
            bad = np.asarray(metrics.learned, bool) & ~np.isfinite(np.asarray(metrics.loss))
            if bad.any():
                where = np.argwhere(bad)[0]
                it = lo + int(where[-1])
                seed = f" (seed index {int(where[0])})" if batched else ""
                last = f"{last_good} (iteration {start})" if last_good is not None else \
                    "none: no checkpoint had been written yet"
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
            if batched:
                per_seed = [jax.tree.map(lambda x, s=s: x[s], metrics) for s in range(keys.shape[0])]
            else:
                per_seed = [metrics]
            for s, m in enumerate(per_seed):
                rows.append({"iteration": lo + length, "seed": s, **family.summarise(m)})
            save_csv(csv_path, rows)
            start = lo + length
            manager.save(start, args=_composite_save(state, dict(identity, iteration=start, **_layout(state))),
                         force=True)
            last_good, pending = root / str(start), (start, rows[-1])
        if pending is not None:
            manager.wait_until_finished()
            report(pending)
    finally:
        if bar is not None:
            bar.close()

    if new_treedef is None:
        shapes = jax.eval_shape(batched_run(agent, batched, 1), state, jnp.zeros((), jnp.int32))[1]
        new_treedef = jax.tree_util.tree_structure(shapes)
    files = sorted(metrics_dir.glob("*.npz"))
    parts = []
    for f in files:
        with np.load(f) as z:
            parts.append([z[k] for k in sorted(z.files)])
    leaves = [np.concatenate([p[n] for p in parts], axis=-1) for n in range(len(parts[0]))]
    return state, jax.tree_util.tree_unflatten(new_treedef, leaves)
