"""The value-loop benchmark scripts still run (smallest sizes; no timing assertions), so they do not rot.

`benchmarks/bench_value_based_steps.py` and its baseline `benchmarks/purejaxrl_style_dqn.py` are
loaded from their files (benchmarks/ is not a package). Each run compiles a few whole training
loops, which dominates the cost: the MinAtar test (table A, the baseline's checks) takes ~15-25 s on
2 CPU cores; the probe and Pong tables compile several more loops and are marked `slow`.
"""

import importlib
import os
import sys

import pytest

pytest.importorskip("gymnax")

_BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")

# Smallest MinAtar run: 1 seed, 600 env steps (75 iterations of 8 envs, 25 updates).
_MINATAR = ["--seeds", "1", "--steps", "600", "--learning-starts", "400", "--buffer-size", "800",
            "--target-update-interval", "10", "--batch-size", "32"]


def _load(name):
    if _BENCH not in sys.path:
        sys.path.insert(0, _BENCH)
    return importlib.import_module(name)


# ~60 s of CPU, nearly all compilation of two whole training loops; `make bench` runs the script itself
# (and `make test-paper` this test), so the suite keeps within its 15-minute budget.
@pytest.mark.paper_scale
def test_minatar_table_and_baseline_run(capsys):
    bench = _load("bench_value_based_steps")
    out = bench.main(["--tables", "minatar"] + _MINATAR)
    text = capsys.readouterr().out
    assert "### A." in text and "tdjax ÷ baseline" in text
    assert out["minatar"]["tdjax"][1]["sps"] > 0
    facts = out["minatar"]["baseline"]["tdjax"][1]["facts"]  # check_trained passed inside main
    assert facts["updates"] == 25 and facts["max_param_change"] > 0


# ~70 s (probes every 5 updates on MinAtar, twice); the in-loop probes themselves are tested in
# test_train_probes: run with `make test-paper`.
@pytest.mark.paper_scale
def test_probe_table_runs(capsys):
    bench = _load("bench_value_based_steps")
    out = bench.main(["--tables", "probes", "--probe-interval", "10", "--probe-k", "8",
                      "--probe-dense-interval", "5"] + _MINATAR)
    assert "### B." in capsys.readouterr().out
    assert out["minatar"]["probes"][1]["probes"] == 2 and out["minatar"]["dense"][1]["probes"] == 5


# The Pong and single-update tables compile Nature-CNN updates inside scans (minutes on 2 CPU cores):
# run with `make test-paper`.
@pytest.mark.paper_scale
def test_pong_and_update_tables_run(capsys):
    pytest.importorskip("envpool")
    bench = _load("bench_value_based_steps")
    out = bench.main(["--tables", "pong", "update",
                      "--pong-steps", "96", "--pong-learning-starts", "64", "--pong-buffer", "96",
                      "--pong-backends", "xla", "--pong-chunks", "2", "--pong-env-steps", "64",
                      "--update-calls", "2", "--update-scan-length", "2"] + _MINATAR)
    text = capsys.readouterr().out
    assert "### C." in text and "### D." in text
    assert {r["structure"] for r in out["pong"]["rows"]} >= {"one lax.scan (make_train)",
                                                             "host-driven, update at top level"}
    assert all(r["updates"] == 4 for r in out["pong"]["rows"] if "updates" in r)


# The probe-forward profile (issue 14's k = 256 analysis) at toy sizes; its trace parsing depends on
# jax.profiler's perfetto output, so it is run by `make test-paper`, not timed here.
@pytest.mark.paper_scale
def test_probe_forward_profile_runs(capsys):
    _load("profile_probe_forward").main(["--probes", "8", "--sets", "2", "--reps", "1", "--no-torch"])
    text = capsys.readouterr().out
    assert "1. tdjax probe forward, 8 probes, 2 parameter sets vmapped" in text
    assert "3. one update-matrix row (k = 8 examples, chunk_size = 2)" in text
    dots = [line for line in text.splitlines() if line.strip().startswith("dot fusions")]
    assert len(dots) == 1 and float(dots[0].split()[2]) > 0, text  # the trace was read
