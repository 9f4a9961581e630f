"""benchmarks/bench_actor_critic_steps.py (tdjax's PPO vs the CleanRL-style baseline) still runs: its
`--quick` path on tiny settings prints a table with the four rows per game and finite numbers. No
timing assertions. Each game compiles four PPO programs with CNN gradients, which dominates the cost
(Pong ≈ 30-40 s on 2 idle cores; the IMPALA programs of Bigfish take longer, so that test runs only with
`make test-paper`).
"""

import importlib
import math
import os
import sys

# Flax's orthogonal initialiser runs LAPACK QR; a multi-threaded OpenBLAS on a loaded 2-core machine
# stalls on it. Only effective when this module loads numpy first (run alone).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest  # noqa: E402

pytest.importorskip("envpool", reason="envpool is part of `make test`'s install ('tdjax[envs]')")

_BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def _load():
    if _BENCH not in sys.path:
        sys.path.insert(0, _BENCH)
    return importlib.import_module("bench_actor_critic_steps")


def _table_rows(text, title):
    """The markdown rows (cells) of the table printed under `### {title}`."""
    section = text.split(f"### {title}", 1)[1].split("### ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("| ") and not ln.startswith("| row ")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


def _check(bench, out, text, game, title):
    rows = out["games"][game]["rows"]
    assert sorted(r["row"] for r in rows) == sorted(bench.ROWS)
    g = out["games"][game]["game"]
    for r in rows:
        assert r["finite"], r["row"]  # every iteration's loss finite
        assert math.isfinite(r["steps_per_s"]) and r["steps_per_s"] > 0
        assert math.isfinite(r["compile_s"]) and r["compile_s"] >= 0
        scanned = r["row"] in bench.SCANNED
        assert r["epochs"] == (g["scan_epochs"] if scanned else g["num_epochs"])
        if r["row"].startswith("tdjax"):
            assert math.isfinite(r["ratio"]) and r["ratio"] > 0  # against the matching CleanRL-style row
    assert math.isfinite(out["games"][game]["best"]["ratio"])
    table = _table_rows(text, title)
    assert [c[0] for c in table] == list(bench.ROWS)
    for cells in table:
        assert float(cells[5].replace(",", "")) > 0  # env steps/s
        if cells[0].startswith("tdjax"):
            assert float(cells[6]) > 0  # tdjax ÷ CleanRL-style
    assert "best vs best" in text


# ~90 s of Nature-CNN compilations (scanned and host-driven rows, twice); the row machinery is
# checked by test_isolated_row_runs_in_a_child_process: run with `make test-paper`.
@pytest.mark.paper_scale
def test_quick_pong_table(capsys):
    bench = _load()
    out = bench.main(["--quick", "--games", "pong", "--repeats", "2"])
    text = capsys.readouterr().out
    _check(bench, out, text, "pong", "Pong-v5")
    for r in out["games"]["pong"]["rows"]:  # host-driven rows run twice (best kept), scanned rows once
        runs = r["all_steps_per_s"]
        assert len(runs) == (1 if r["row"] in bench.SCANNED else 2)
        assert r["steps_per_s"] == max(runs)
    assert out["games"]["pong"]["game"]["num_envs"] == 2  # the tiny settings


# ~2 minutes of IMPALA compilations; the same code path as Pong, and the Bigfish pieces are tested
# elsewhere (test_cleanrl_style_baseline, test_train_actor_critic): run with `make test-paper`.
@pytest.mark.paper_scale
def test_quick_bigfish_table(capsys):
    bench = _load()
    out = bench.main(["--quick", "--games", "bigfish"])
    text = capsys.readouterr().out
    _check(bench, out, text, "bigfish", "BigfishEasy-v0")


def test_settings_match_the_baseline():
    """tdjax's config and the baseline's Args agree on every hyperparameter both have (no compilation)."""
    bench = _load()
    for quick in (True, False):
        a = type("A", (), dict(quick=quick, iters=None, scan_iters=None, scan_epochs=None))()
        for g in bench.games(a).values():
            for epochs in (g.num_epochs, g.scan_epochs):
                bench.check_settings(g, bench.tdjax_config(g, epochs, g.iters, 1), epochs)
            assert g.num_epochs >= 2 and g.num_minibatches >= 2  # unroll=True over one element does not unroll


# ~30 s of CPU (a child process compiling a Pong loop); run by `make test-paper`.
@pytest.mark.paper_scale
def test_isolated_row_runs_in_a_child_process(capsys):
    """--isolate: the row is measured by a child process of the script and comes back as JSON."""
    bench = _load()
    out = bench.main(["--quick", "--games", "pong", "--skip-scan", "--rows", "tdjax-host", "--isolate"])
    rows = out["games"]["pong"]["rows"]
    assert [r["row"] for r in rows] == [bench.ROWS[1]]
    assert rows[0]["finite"] and rows[0]["steps_per_s"] > 0 and rows[0]["epochs"] == 2
    assert bench.ROWS[1] in capsys.readouterr().out
