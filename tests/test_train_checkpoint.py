"""Checkpointed runs through orbax: a run killed at any moment resumes to bit-identical parameters;
retention, sharded arrays, old .npz checkpoints, half-written saves; NaN stops with a clear error."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from tdjax.train import ValueConfig, load_checkpoint, make_agent, make_train, save_checkpoint, train_with_checkpoints

# children import tdjax from this checkout (not from wherever the environment installed it)
_ENV = dict(os.environ, JAX_PLATFORMS="cpu",
            PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                      os.environ.get("PYTHONPATH")])))

CFG = ValueConfig(hidden=(16,), total_steps=800, num_envs=2, buffer_size=200, batch_size=8, learning_starts=32,
                  checkpoint_interval=100)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _steps(run_dir):
    """What is in the orbax root: finished checkpoints are plain iteration numbers."""
    return sorted(os.listdir(run_dir / "checkpoints"))


class _Killed(Exception):
    pass


def _kill_at(n):
    def on_chunk(iteration):
        if iteration == n:
            raise _Killed

    return on_chunk


def _assert_trees_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        if hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _flat_params(state):
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(state.learner.params)])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted checkpointed run of CFG: (directory, final state, metrics)."""
    d = tmp_path_factory.mktemp("reference")
    state, metrics = train_with_checkpoints(CFG, jax.random.key(0), d, progress=False)
    return d, state, metrics


def test_save_load_roundtrip_with_typed_keys(tmp_path):
    tree = {"k": jax.random.split(jax.random.key(3), 2), "x": np.arange(6.0).reshape(2, 3), "n": np.int32(4)}
    save_checkpoint(tmp_path / "c", tree, {"iteration": 5})
    back, meta = load_checkpoint(tmp_path / "c", jax.eval_shape(lambda: tree))
    assert meta["iteration"] == 5
    _assert_trees_equal(tree, back)
    assert jax.dtypes.issubdtype(back["k"].dtype, jax.dtypes.prng_key)
    save_checkpoint(tmp_path / "c", jax.tree.map(lambda x: x, {**tree, "n": np.int32(7)}), {"iteration": 6})
    assert int(load_checkpoint(tmp_path / "c", tree)[0]["n"]) == 7  # replaced
    with pytest.raises(ValueError, match="another config"):
        load_checkpoint(tmp_path / "c", {"x": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="shape"):
        load_checkpoint(tmp_path / "c", {**tree, "x": np.zeros((3, 2))})
    with pytest.raises(ValueError, match="orbax directories.*without .npz"):
        save_checkpoint(tmp_path / "c.npz", tree)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing", tree)


def test_resume_after_kill_is_bit_identical(tmp_path, reference):
    key = jax.random.key(0)
    full_dir, full_state, full_metrics = reference
    with pytest.raises(_Killed):
        train_with_checkpoints(CFG, key, tmp_path / "cut", progress=False, on_chunk=_kill_at(200))
    _, meta = load_checkpoint(tmp_path / "cut", jax.eval_shape(lambda: full_state))
    assert meta["iteration"] == 200
    assert _steps(tmp_path / "cut") == ["100", "200"]
    # a metrics file from beyond the checkpoint (as a kill between the two writes leaves) is dropped
    stale = tmp_path / "cut" / "metrics" / "0000000250.npz"
    stale.write_bytes((tmp_path / "cut" / "metrics" / "0000000100.npz").read_bytes())
    resumed_state, resumed_metrics = train_with_checkpoints(CFG, key, tmp_path / "cut", progress=False)

    _assert_trees_equal(full_state, resumed_state)
    _assert_trees_equal(full_metrics, resumed_metrics)
    assert full_metrics.loss.shape == (400,)
    assert _steps(full_dir) == _steps(tmp_path / "cut") == ["300", "400"]  # keep_last=2 by default

    log = _rows(tmp_path / "cut" / "metrics.csv")
    assert [int(r["iteration"]) for r in log] == [100, 200, 300, 400]
    assert {"return_mean", "loss", "probe_update_rank", "env_steps", "seed"} <= set(log[0])
    assert log == _rows(full_dir / "metrics.csv")
    pd = pytest.importorskip("pandas")  # the log is meant to be read with pandas
    frame = pd.read_csv(tmp_path / "cut" / "metrics.csv")
    assert frame["iteration"].tolist() == [100, 200, 300, 400] and frame["loss"].dtype == float

    # the chunked run and the one-scan run take the same steps (up to float reassociation)
    state, metrics = jax.jit(make_train(CFG))(key)
    np.testing.assert_array_equal(metrics.return_count, full_metrics.return_count)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 state.learner.params, full_state.learner.params)

    # resuming with another config or seed is refused
    with pytest.raises(ValueError, match="different config.*lr"):
        train_with_checkpoints(CFG.replace(lr=0.5), key, tmp_path / "cut", progress=False)
    with pytest.raises(ValueError, match="different key"):
        train_with_checkpoints(CFG, jax.random.key(1), tmp_path / "cut", progress=False)


def test_retention_keeps_the_last_n(tmp_path, reference):
    for keep, want in ((1, ["400"]), (3, ["200", "300", "400"]), (None, ["100", "200", "300", "400"])):
        run, reported = tmp_path / str(keep), []

        def on_chunk(iteration):  # a chunk is reported only once its checkpoint is complete
            assert str(iteration) in _steps(run), (iteration, _steps(run))
            reported.append(iteration)

        state, _ = train_with_checkpoints(CFG, jax.random.key(0), run, progress=False, on_chunk=on_chunk,
                                          keep_last=keep, async_save=keep != 3)
        assert _steps(run) == want and reported == [100, 200, 300, 400]
        _assert_trees_equal(reference[1], state)
    with pytest.raises(ValueError, match="keep_last=0 must be a positive int"):
        train_with_checkpoints(CFG, jax.random.key(0), tmp_path / "zero", progress=False, keep_last=0)


def _write_old_npz(path, state, meta):
    """The single-file format of tdjax before orbax, written independently of the library."""
    leaves = jax.tree.leaves(state)
    arrays, key_leaves = {}, []
    for n, leaf in enumerate(leaves):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            key_leaves.append(n)
            leaf = jax.random.key_data(leaf)
        arrays[f"leaf_{n:05d}"] = np.asarray(leaf)
    arrays["__meta__"] = np.asarray(json.dumps(dict(meta, num_leaves=len(leaves), key_leaves=key_leaves)))
    np.savez(path, **arrays)


def test_old_npz_checkpoint_resumes_then_new_format(tmp_path, reference):
    old = tmp_path / "old"
    with pytest.raises(_Killed):
        train_with_checkpoints(CFG, jax.random.key(0), old, progress=False, on_chunk=_kill_at(100))
    state, meta = load_checkpoint(old, jax.eval_shape(make_agent(CFG).init, jax.random.key(0)))
    shutil.rmtree(old / "checkpoints")  # as a run of the previous version left it
    _write_old_npz(old / "checkpoint.npz", state, {k: meta[k] for k in ("config", "key", "num_iterations",
                                                                          "iteration")})
    resumed, metrics = train_with_checkpoints(CFG, jax.random.key(0), old, progress=False)
    _assert_trees_equal(reference[1], resumed)
    _assert_trees_equal(reference[2], metrics)
    assert _steps(old) == ["300", "400"]
    assert _rows(old / "metrics.csv") == _rows(reference[0] / "metrics.csv")

    # an old file from another state layout: a clear error naming the file and the fix
    bad = tmp_path / "bad"
    bad.mkdir()
    _write_old_npz(bad / "checkpoint.npz", {"x": np.zeros(3)}, {"iteration": 100})
    with pytest.raises(ValueError, match=r"bad/checkpoint\.npz holds 1 arrays.*Use a new directory"):
        train_with_checkpoints(CFG, jax.random.key(0), bad, progress=False)


def test_half_written_save_is_ignored_and_cleaned(tmp_path, reference):
    run = tmp_path / "run"
    with pytest.raises(_Killed):
        train_with_checkpoints(CFG, jax.random.key(0), run, progress=False, on_chunk=_kill_at(200))
    # what a kill in the middle of saving iteration 300 leaves: orbax's temporary directory, partly
    # written (a truncated copy of the previous checkpoint's files), and an interrupted atomic write
    tmp = run / "checkpoints" / "300.orbax-checkpoint-tmp"
    shutil.copytree(run / "checkpoints" / "200", tmp)
    for f in sorted(p for p in tmp.rglob("*") if p.is_file())[::2]:
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    (run / ".metrics.csv.x1y2.tmp").write_text("iteration,seed\n3")
    state, _ = load_checkpoint(run, jax.eval_shape(lambda: reference[1]))  # the complete one, iteration 200
    assert int(load_checkpoint(run, state)[1]["iteration"]) == 200

    resumed, metrics = train_with_checkpoints(CFG, jax.random.key(0), run, progress=False)
    _assert_trees_equal(reference[1], resumed)
    _assert_trees_equal(reference[2], metrics)
    assert _steps(run) == ["300", "400"]  # the temporary directory is gone
    assert not list(run.glob(".*.tmp"))


def test_killed_after_logging_a_chunk_before_saving_it_resumes(tmp_path, reference, monkeypatch):
    import tdjax.train.checkpoint as ck

    save_csv = ck.save_csv

    def dies_after_300(path, rows):  # the chunk ending at 300 is logged; its checkpoint not yet begun
        out = save_csv(path, rows)
        if int(rows[-1]["iteration"]) == 300:
            raise _Killed
        return out

    monkeypatch.setattr(ck, "save_csv", dies_after_300)
    with pytest.raises(_Killed):
        train_with_checkpoints(CFG, jax.random.key(0), tmp_path, progress=False)
    monkeypatch.undo()
    assert _steps(tmp_path) == ["100", "200"]
    assert [int(r["iteration"]) for r in _rows(tmp_path / "metrics.csv")] == [100, 200, 300]
    resumed, metrics = train_with_checkpoints(CFG, jax.random.key(0), tmp_path, progress=False)
    _assert_trees_equal(reference[1], resumed)
    _assert_trees_equal(reference[2], metrics)
    assert _rows(tmp_path / "metrics.csv") == _rows(reference[0] / "metrics.csv")


def test_many_seeds_checkpointed(tmp_path):
    keys = jax.random.split(jax.random.key(0), 2)
    cfg = CFG  # the same config as the single-seed tests, so only the vmapped chunk is compiled here
    state, metrics = train_with_checkpoints(cfg, keys, tmp_path, progress=False)
    assert metrics.loss.shape == (2, 400)
    assert state.actor.obs.shape == (2, 2, 4)
    assert [int(r["seed"]) for r in _rows(tmp_path / "metrics.csv")] == [0, 1] * 4
    # seed 1 of the batch is the run of key 1 alone (same chunk function, vmapped)
    single, _ = train_with_checkpoints(cfg, keys[1], tmp_path / "one", progress=False)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[1], b, rtol=1e-5, atol=1e-6),
                 state.learner.params, single.learner.params)


def test_nan_loss_stops_and_names_step_and_checkpoint(tmp_path):
    # chunk 1 is warm-up only (saved); the absurd step size makes the loss overflow in chunk 2
    cfg = CFG.replace(lr=1e30, max_grad_norm=None, checkpoint_interval=16)
    with pytest.raises(FloatingPointError, match=r"iteration (1[6-9]|2\d).*checkpoints/16 \(iteration 16\)"):
        train_with_checkpoints(cfg, jax.random.key(0), tmp_path, progress=False)
    _, meta = load_checkpoint(tmp_path, jax.eval_shape(make_agent(cfg).init, jax.random.key(0)))
    assert meta["iteration"] == 16
    assert _steps(tmp_path) == ["16"]


_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import jax
    import numpy as np
    import orbax.checkpoint as ocp
    from tdjax.train import ValueConfig, train_with_checkpoints

    directory, moment, at, cfg = sys.argv[1], sys.argv[2], int(sys.argv[3]), eval(sys.argv[4])

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if moment == "before_rename":  # orbax has written every file of checkpoint `at`, not renamed it yet
        cls = ocp.path.atomicity.AtomicRenameTemporaryPath
        finalize = cls.finalize

        async def killing_finalize(self):
            if self.get_final().name == str(at):
                die()
            return await finalize(self)

        cls.finalize = killing_finalize
    state, _ = train_with_checkpoints(cfg, jax.random.key(0), directory, progress=False)
    np.save(os.path.join(directory, "params.npy"),
            np.concatenate([np.ravel(x) for x in jax.tree.leaves(state.learner.params)]))
    """
)


def test_subprocess_killed_with_sigkill_while_saving_resumes(tmp_path, reference):
    env = dict(_ENV, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "xla_cache"),  # the child compiles once
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    run = tmp_path / "cut"

    def child(moment, at):
        return subprocess.run([sys.executable, str(script), str(run), moment, str(at), repr(CFG)], env=env,
                              capture_output=True, text=True, timeout=300)

    out = child("before_rename", 200)
    assert out.returncode == -signal.SIGKILL, out.stderr[-2000:]
    assert _steps(run) == ["100", "200.orbax-checkpoint-tmp"]
    assert (run / "checkpoints" / "200.orbax-checkpoint-tmp" / "state").is_dir()  # fully written, unused
    assert not (run / "params.npy").exists()

    out = child("none", -1)  # resumes from 100
    assert out.returncode == 0, out.stderr[-2000:]
    np.testing.assert_array_equal(np.load(run / "params.npy"), _flat_params(reference[1]))
    assert _rows(run / "metrics.csv") == _rows(reference[0] / "metrics.csv")
    assert _steps(run) == ["300", "400"]


_SHARDED_CHILD = textwrap.dedent(
    """
    import sys
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from tdjax.train import load_checkpoint, save_checkpoint

    assert jax.device_count() == 2, jax.devices()
    mesh = jax.make_mesh((2,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    split, whole = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    tree = {"x": jax.device_put(jnp.arange(12.0).reshape(4, 3), split),
            "keys": jax.device_put(jax.random.split(jax.random.key(5), 4), split),
            "w": jax.device_put(jnp.arange(6, dtype=jnp.bfloat16).reshape(2, 3), whole)}
    assert len(tree["x"].addressable_shards) == 2
    save_checkpoint(sys.argv[1], tree, {"iteration": 1})

    def same(a, b):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))

    # the template's arrays: each comes back with its sharding
    back, meta = load_checkpoint(sys.argv[1], tree)
    for k in tree:
        assert back[k].sharding == tree[k].sharding, (k, back[k].sharding)
        same(back[k], tree[k])
    # structs with another concrete sharding: restored into that placement
    structs = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=whole), tree)
    back, _ = load_checkpoint(sys.argv[1], structs)
    for k in tree:
        assert back[k].sharding.is_equivalent_to(whole, back[k].ndim), (k, back[k].sharding)
        same(back[k], tree[k])
    # shapes only (jax.eval_shape): as saved, or as `shardings` says
    back, _ = load_checkpoint(sys.argv[1], jax.eval_shape(lambda: tree))
    assert back["x"].sharding.is_equivalent_to(split, 2)
    back, _ = load_checkpoint(sys.argv[1], jax.eval_shape(lambda: tree), {"x": whole, "keys": split, "w": split})
    assert back["x"].sharding == whole and back["w"].sharding == split
    same(back["w"], tree["w"])
    print("SHARDED OK")
    """
)


def test_sharded_arrays_save_and_restore_with_their_sharding(tmp_path):
    script = tmp_path / "sharded.py"
    script.write_text(_SHARDED_CHILD)
    env = dict(_ENV, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip())
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "ckpt")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "SHARDED OK" in out.stdout
