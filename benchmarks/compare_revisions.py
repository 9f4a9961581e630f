"""Before/after speed of the training loops across a code change, side by side in one run.

Runs the same measurement rows against two source trees — BEFORE (e.g. a `git worktree` of the
commit before a change) and AFTER (this checkout) — each row in a fresh Python process whose
`PYTHONPATH` puts that tree first, interleaved (row 1 before, row 1 after, row 2 before, ...) and
repeated, so both columns see the same machine load. Prints env steps/s per row for both trees (the
best and all runs), the after ÷ before ratio, and the run-to-run spread of each column (the noise a
ratio must be read against).

Rows (env steps per second, compilation excluded):
  minatar-1 / -8 / -32   DQN on MinAtar Breakout, the settings of table A in RESULTS.md, seeds vmapped
                         (`jax.jit(jax.vmap(make_train(cfg)))`), 10,000 / 10,000 / 3,000 steps per seed
  cartpole-1             DQN on CartPole, MLP (64, 64), 20,000 steps, one seed
  pong-dqn-host          DQN on Atari Pong-v5 through envpool, Nature CNN, host-driven
                         (`bench_value_based_steps.pong_host_driven`, the row of table C″)
  pong-ppo-host          PPO on Pong-v5, CleanRL's Atari settings, host-driven + unrolled update
  bigfish-ppo-host       PPO on BigfishEasy-v0, scaled-down procgen settings, the same structure
                         (both: each tree's own `bench_actor_critic_steps.row_tdjax_host`)
  pong-ppo-cleanrl       the CleanRL-style baseline (`--update-unroll`) at the Pong settings, and
  bigfish-ppo-cleanrl    at the Bigfish settings: the same code in both trees, so it runs once per
                         repeat (from AFTER) and the PPO rows are also given as tdjax ÷ baseline

Usage:
  python benchmarks/compare_revisions.py [--before-rev 8464ca5 | --before TREE] [--repeats 2] [--rows ...]

Without `--before`, a `git worktree` of `--before-rev` (default: 8464ca5, the last commit before the
training core was rewritten) is made in a temporary folder and removed afterwards. A full run takes
~25 minutes on 2 cores. It is a comparison across a change, not a standing claim, so `make bench`
(which runs `benchmarks/bench_*.py`) does not run it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
ROWS = ["minatar-1", "minatar-8", "minatar-32", "cartpole-1", "pong-dqn-host", "pong-ppo-host", "bigfish-ppo-host",
        "pong-ppo-cleanrl", "bigfish-ppo-cleanrl"]


# ----------------------------------------------------------------------------------------------------
# The child: one row, in one tree (this file's code must run against the old and the new tdjax API).


def _value_sps(cfg, seeds: int) -> float:
    import jax

    from tdjax.train import make_train

    keys = jax.random.split(jax.random.key(0), seeds)
    fn = jax.jit(jax.vmap(make_train(cfg)))
    compiled = fn.lower(keys).compile()
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(keys))
    return seeds * cfg.total_steps / (time.perf_counter() - t0)


def child(row: str, quick: bool) -> float:
    import types

    from tdjax.train import ValueConfig

    sys.path.insert(0, str(Path.cwd() / "benchmarks"))  # the tree's own benchmark modules
    if row.startswith("minatar"):
        seeds = int(row.split("-")[1])
        steps = (3_000 if seeds == 32 else 10_000) // (5 if quick else 1)
        cfg = ValueConfig(env="Breakout-MinAtar", algo="dqn", network="minatar_cnn", num_envs=8, total_steps=steps,
                          buffer_size=10_000, batch_size=64, learning_starts=1_000 // (5 if quick else 1),
                          target_update_interval=250, lr=2.5e-4, max_grad_norm=None, eps_decay_steps=10_000,
                          probe_interval=0)
        return _value_sps(cfg, seeds)
    if row == "cartpole-1":
        cfg = ValueConfig(env="CartPole-v1", hidden=(64, 64), total_steps=20_000 // (5 if quick else 1))
        return _value_sps(cfg, 1)
    if row == "pong-dqn-host":
        import bench_value_based_steps as bv

        a = types.SimpleNamespace(pong_steps=600 if quick else 2_400, pong_learning_starts=200 if quick else 800,
                                  pong_buffer=1_000 if quick else 4_000, pong_envs=8, pong_threads=2)
        return float(bv.pong_host_driven(a, 1)["sps"])
    import bench_actor_critic_steps as bac

    g = bac.games(types.SimpleNamespace(quick=quick, iters=None, scan_iters=None, scan_epochs=None))[row.split("-")[0]]
    if row.endswith("-host"):
        return float(bac.row_tdjax_host(g, 0)["steps_per_s"])
    return float(bac.row_baseline(g, 0, unroll=True)["steps_per_s"])


# ----------------------------------------------------------------------------------------------------
# The driver.


def run_row(tree: Path, row: str, quick: bool, timeout: int) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree), OPENBLAS_NUM_THREADS=os.environ.get("OPENBLAS_NUM_THREADS", "1"))
    cmd = [sys.executable, str(HERE / "compare_revisions.py"), "--child", row] + (["--quick"] if quick else [])
    r = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            return float(json.loads(line[7:])["sps"])
    raise RuntimeError(f"{row} in {tree} failed:\n{(r.stdout + r.stderr)[-3000:]}")


def spread(xs: List[float]) -> float:
    """(max − min) / max of a column's runs: the run-to-run noise."""
    return (max(xs) - min(xs)) / max(xs) if len(xs) > 1 else float("nan")


def main(argv=None) -> Dict[str, Dict[str, List[float]]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--before", type=Path, help="source tree of the BEFORE column (default: a worktree of --before-rev)")
    p.add_argument("--before-rev", default="8464ca5", help="git revision of the BEFORE column (default: the commit "
                   "before the training-core rewrite)")
    p.add_argument("--after", type=Path, default=HERE.parent, help="source tree of the AFTER column (this one)")
    p.add_argument("--rows", nargs="*", default=ROWS, choices=ROWS)
    p.add_argument("--repeats", type=int, default=2, help="runs of every row in each tree (interleaved)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (a check that every row runs)")
    p.add_argument("--timeout", type=int, default=1_200, help="seconds per row process")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print("RESULT " + json.dumps({"sps": child(a.child, a.quick)}), flush=True)
        return {}
    if a.before is None:
        with tempfile.TemporaryDirectory() as tmp:
            tree = Path(tmp) / "before"
            subprocess.run(["git", "worktree", "add", "--detach", str(tree), a.before_rev], cwd=HERE.parent, check=True,
                           capture_output=True)
            try:
                return compare(a, {"before": tree, "after": a.after.resolve()})
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=HERE.parent,
                               capture_output=True)
    return compare(a, {"before": a.before.resolve(), "after": a.after.resolve()})


def compare(a: argparse.Namespace, trees: Dict[str, Path]) -> Dict[str, Dict[str, List[float]]]:
    """Runs every row in both trees, interleaved, and prints the table."""
    res: Dict[str, Dict[str, List[float]]] = {r: {"before": [], "after": []} for r in a.rows}
    t0 = time.time()
    for rep in range(a.repeats):
        for row in a.rows:
            names = ("before", "after") if rep % 2 == 0 else ("after", "before")
            for name in (("after",) if row.endswith("-cleanrl") else names):
                res[row][name].append(run_row(trees[name], row, a.quick, a.timeout))
                print(f"[{time.time() - t0:6.0f} s] {row:20s} {name:6s} {res[row][name][-1]:9.1f} env steps/s",
                      flush=True)
    print(f"\nMachine: {platform.machine()}, {os.cpu_count()} cores; MALLOC_ARENA_MAX="
          f"{os.environ.get('MALLOC_ARENA_MAX', 'unset')}, MALLOC_MMAP_THRESHOLD_="
          f"{os.environ.get('MALLOC_MMAP_THRESHOLD_', 'unset')}; load average at the end "
          f"{os.getloadavg()[0]:.1f}; {a.repeats} runs per column, interleaved.\n")
    print("| row | before, env steps/s (best; runs) | after, env steps/s (best; runs) | after ÷ before (best) "
          "| spread before | spread after |")
    print("|---|---|---|---|---|---|")
    runs = lambda xs: ", ".join(f"{x:,.0f}" for x in xs)  # noqa: E731
    for row, r in res.items():
        b, f = r["before"], r["after"]
        if not b:  # a baseline row: one column
            print(f"| {row} (baseline, same code in both) | – | {max(f):,.0f} ({runs(f)}) | – | – | {spread(f):.0%} |")
            continue
        print(f"| {row} | {max(b):,.0f} ({runs(b)}) | {max(f):,.0f} ({runs(f)}) | {max(f) / max(b):.2f} | "
              f"{spread(b):.0%} | {spread(f):.0%} |")
    for game in ("pong", "bigfish"):
        host, base = res.get(f"{game}-ppo-host"), res.get(f"{game}-ppo-cleanrl")
        if host and base:
            print(f"{game} PPO ÷ CleanRL-style baseline (best runs): "
                  f"before {max(host['before']) / max(base['after']):.2f}, "
                  f"after {max(host['after']) / max(base['after']):.2f}")
    ratios = [max(r["after"]) / max(r["before"]) for r in res.values() if r["before"]]
    print(f"\nmedian of the per-row after ÷ before ratios: {statistics.median(ratios):.2f}")
    return res


if __name__ == "__main__":
    main()
