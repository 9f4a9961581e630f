"""The ("seeds", "data") mesh: seeds sharded over devices give the same runs as unsharded seeds."""

import subprocess
import sys
from pathlib import Path

import jax
import pytest

from tdjax.train import ValueConfig, make_agent, mesh


def test_seeds_sharded_equal_unsharded_and_both_axes():
    r = subprocess.run([sys.executable, str(Path(__file__).parent / "_mesh_seeds.py")], capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), (r.stdout + r.stderr)[-4000:]


def test_mesh_errors_name_the_fix():
    with pytest.raises(ValueError, match="seed_devices.*XLA_FLAGS"):
        mesh.make_mesh(seed_devices=jax.device_count() + 1)
    with pytest.raises(ValueError, match="seed_devices × num_devices.*XLA_FLAGS"):
        make_agent(ValueConfig(seed_devices=jax.device_count() + 1))
    m = mesh.make_mesh(1, 1)
    assert m.axis_names == (mesh.SEEDS, mesh.DATA)
