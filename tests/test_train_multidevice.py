"""Data-parallel training with jax.shard_map, checked on 4 fake CPU devices in a subprocess.

XLA_FLAGS must be set before jax is imported, so the checks live in tests/_multidevice_value_based.py
and run in a fresh interpreter."""

import os
import subprocess
import sys
from pathlib import Path


def test_sharded_update_equals_single_device_update():
    flags = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    script = Path(__file__).with_name("_multidevice_value_based.py")
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    assert "MULTIDEVICE OK" in out.stdout
