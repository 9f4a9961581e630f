"""`benchmarks/bench_offline.py` still runs (smallest sizes; no timing assertions), so it does not rot.

The script is loaded from its file (benchmarks/ is not a package). CartPole only, one objective, 100
updates: the cost is compiling 3 small loops (tdjax, the floor, tdjax with probes) and training the
tiny teacher (~25-40 s on 2 loaded CPU cores). Inside `main` the script itself checks that tdjax's update and
the floor's step agree on one batch, that both runs make `--updates` updates, and that the floor's
loss decreases.
"""

import importlib
import os
import sys

import pytest

pytest.importorskip("gymnax")

_BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def _load(name):
    if _BENCH not in sys.path:
        sys.path.insert(0, _BENCH)
    return importlib.import_module(name)


@pytest.mark.slow
def test_offline_bench_runs_and_reports(capsys):
    bench = _load("bench_offline")
    out = bench.main(["--settings", "cartpole", "--objectives", "value_distillation",
                      "--updates", "100", "--repeats", "1", "--lr", "1e-2", "--teacher-steps", "400",
                      "--dataset-size", "200", "--probe-interval", "50", "--probe-k", "8"])
    text = capsys.readouterr().out
    assert "### A." in text and "### B." in text and "tdjax ÷ floor" in text and "target ≥ 0.9" in text
    res = out["cartpole"]
    assert set(res["tdjax"]) == set(res["floor"]) == {"value_distillation"}
    for obj in ("value_distillation",):
        assert res["tdjax"][obj]["updates"] == res["floor"][obj]["updates"] == 100
        assert res["tdjax"][obj]["ups"] > 0 and res["floor"][obj]["ups"] > 0 and res["ratio"][obj] > 0
        assert res["floor"][obj]["loss_last"] < res["floor"][obj]["loss_first"]
        assert res["checks"][obj]["check_max_param_diff"] < 1e-5
    assert res["probes"]["value_distillation"]["probes"] == 2
