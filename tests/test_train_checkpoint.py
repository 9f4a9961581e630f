"""Checkpointed runs: a killed run resumes to bit-identical parameters; NaN stops with a clear error."""

import csv
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import jax
import pytest

from tdjax.train import ValueConfig, load_checkpoint, make_agent, make_train, save_checkpoint, train_with_checkpoints

CFG = ValueConfig(hidden=(16,), total_steps=800, num_envs=2, buffer_size=200, batch_size=8, learning_starts=32,
                  checkpoint_interval=100)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class _Killed(Exception):
    pass


def _assert_trees_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        if hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_save_load_roundtrip_with_typed_keys(tmp_path):
    tree = {"k": jax.random.split(jax.random.key(3), 2), "x": np.arange(6.0).reshape(2, 3), "n": np.int32(4)}
    save_checkpoint(tmp_path / "c", tree, {"iteration": 5})
    back, meta = load_checkpoint(tmp_path / "c", jax.eval_shape(lambda: tree))
    assert meta["iteration"] == 5
    _assert_trees_equal(tree, back)
    assert jax.dtypes.issubdtype(back["k"].dtype, jax.dtypes.prng_key)
    with pytest.raises(ValueError, match="another config"):
        load_checkpoint(tmp_path / "c", {"x": np.zeros((2, 3))})


def test_resume_after_kill_is_bit_identical(tmp_path):
    key = jax.random.key(0)
    full_state, full_metrics = train_with_checkpoints(CFG, key, tmp_path / "full", progress=False)

    def kill_after_two(iteration):
        if iteration == 200:
            raise _Killed

    with pytest.raises(_Killed):
        train_with_checkpoints(CFG, key, tmp_path / "cut", progress=False, on_chunk=kill_after_two)
    _, meta = load_checkpoint(tmp_path / "cut", jax.eval_shape(lambda: full_state))
    assert meta["iteration"] == 200
    # a metrics file from beyond the checkpoint (as a kill between the two writes leaves) is dropped
    stale = tmp_path / "cut" / "metrics" / "0000000250.npz"
    stale.write_bytes((tmp_path / "cut" / "metrics" / "0000000100.npz").read_bytes())
    resumed_state, resumed_metrics = train_with_checkpoints(CFG, key, tmp_path / "cut", progress=False)

    _assert_trees_equal(full_state, resumed_state)
    _assert_trees_equal(full_metrics, resumed_metrics)
    assert full_metrics.loss.shape == (400,)

    log = _rows(tmp_path / "cut" / "metrics.csv")
    assert [int(r["iteration"]) for r in log] == [100, 200, 300, 400]
    assert {"return_mean", "loss", "probe_update_rank", "env_steps", "seed"} <= set(log[0])
    assert log == _rows(tmp_path / "full" / "metrics.csv")
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


_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import jax
    import numpy as np
    from tdjax.train import ValueConfig, train_with_checkpoints
    cfg = eval(sys.argv[3])
    kill_at = int(sys.argv[2])
    def on_chunk(it):
        if it == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    state, _ = train_with_checkpoints(cfg, jax.random.key(0), sys.argv[1], progress=False, on_chunk=on_chunk)
    np.save(os.path.join(sys.argv[1], "params.npy"),
            np.concatenate([np.ravel(x) for x in jax.tree.leaves(state.learner.params)]))
    """
)


def test_subprocess_killed_with_sigkill_resumes(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    args = [sys.executable, str(script), str(tmp_path / "cut")]
    cut = subprocess.run(args + ["200", repr(CFG)], env=env, capture_output=True, text=True, timeout=300)
    assert cut.returncode == -signal.SIGKILL, cut.stderr[-2000:]
    assert not (tmp_path / "cut" / "params.npy").exists()
    done = subprocess.run(args + ["-1", repr(CFG)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    ref, _ = train_with_checkpoints(CFG, jax.random.key(0), tmp_path / "ref", progress=False)
    want = np.concatenate([np.ravel(x) for x in jax.tree.leaves(ref.learner.params)])
    np.testing.assert_array_equal(np.load(tmp_path / "cut" / "params.npy"), want)
    assert len(_rows(tmp_path / "cut" / "metrics.csv")) == 4
