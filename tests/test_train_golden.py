"""The training-core rewrite left every loop family's results unchanged.

tests/data/golden_loops.npz holds the final parameters and per-iteration losses and returns of tiny
runs made with the loops as they were before the rewrite (tests/data/make_golden_loops.py, commit
8464ca5). The same configs run now must give the same numbers: same seed, same parameters.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from tdjax.train import make_train

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))
from make_golden_loops import CONFIGS, METRIC_FIELDS, flat  # noqa: E402

GOLDEN = np.load(DATA / "golden_loops.npz")
# Same program structure, same ops: the numbers agree to float32 rounding (XLA may fuse differently).
RTOL, ATOL = 2e-5, 2e-6


def _check(name, arrays):
    keys = sorted(k for k in GOLDEN.files if k.startswith(name + "/"))
    assert keys, name
    assert sorted(arrays) == keys
    for k in keys:
        np.testing.assert_allclose(arrays[k], GOLDEN[k], rtol=RTOL, atol=ATOL, err_msg=k)


def _run(name):
    cfg = CONFIGS[name]
    state, metrics = jax.jit(make_train(cfg))(jax.random.key(7))
    out = flat(state.learner.params, f"{name}/params")
    for f in METRIC_FIELDS:
        out[f"{name}/metrics/{f}"] = np.asarray(getattr(metrics, f))
    return out


@pytest.mark.parametrize("name", [n for n in CONFIGS if not n.endswith("_2dev")])
def test_family_unchanged_by_rewrite(name):
    _check(name, _run(name))


def test_data_parallel_runs_unchanged_by_rewrite(tmp_path):
    code = textwrap.dedent(f"""
        import sys, numpy as np
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_train_golden import _run
        out = {{}}
        for name in ("dqn_2dev", "ppo_2dev"):
            out.update(_run(name))
        np.savez({str(tmp_path / "out.npz")!r}, **out)
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=600)
    got = np.load(tmp_path / "out.npz")
    for name in ("dqn_2dev", "ppo_2dev"):
        _check(name, {k: got[k] for k in got.files if k.startswith(name + "/")})
