"""The training-core rewrite left every loop family's results unchanged.

tests/data/golden_loops.npz holds the final parameters and per-iteration losses and returns of tiny
runs made with the loops as they were before the rewrite (tests/data/make_golden_loops.py, commit
8464ca5). The same configs run now must give the same numbers: same seed, same parameters.
"""

import sys
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


# Checked in the suite: one config per family, head kind and torso. The golden file also holds
# double_dqn, qr_dqn and dqn_rmsprop (all matched when the rewrite landed; add them to CHECKED for a
# longer check) and the 2-device runs, which tests/test_train_multihost.py compares against.
CHECKED = ("dqn", "c51", "dqn_minatar", "ppo", "daac", "reinforce")


@pytest.mark.parametrize("name", CHECKED)
def test_family_unchanged_by_rewrite(name):
    _check(name, _run(name))
