"""Whole-grid throughput of Bengio et al. 2020's grid: training runs per minute, vmapped vs one by one.

Claim measured (issue 13): the runs of the grid that share shapes (n_T, lr, seeds of one capacity)
trained as ONE vmapped XLA program (`tdjax.train.sweep.run_grid(..., vmapped=True)`) against the same
runs one by one in a Python loop (`vmapped=False`: the same jitted program, called with one run at a
time), target ≥ 5× more runs per minute on this CPU. Two figures each way: "cold", compilation
included (one program per capacity either way: what finishing a small grid costs), and "warm", the
same grid again with the programs compiled (what a large grid, whose compile time is negligible
against its training, costs per run). The grid is the one of
`experiments/_bengio20_grid.py` at `--scale` (default cpu) for the `--tasks` given (default the
supervised ones; the agents (ddqn, reinforce) also run one program per capacity, see tdjax/train/sweep.py).

Usage: python benchmarks/bench_sweep.py [--scale smoke|cpu] [--tasks classification regression]
       [--max-programs N]   (only the first N capacities of each task: a brief run) [--repeats 3]
Timings on a shared machine are noisy; the ratio is printed with the absolute figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Optional, Sequence

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import _bengio20_grid as bgrid  # noqa: E402
from tdjax.train.sweep import run_grid  # noqa: E402


def main(argv: Optional[Sequence[str]] = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="cpu", choices=("tiny", "smoke", "cpu"))
    p.add_argument("--tasks", nargs="+", default=["classification", "regression"], choices=bgrid.TASKS)
    p.add_argument("--repeats", type=int, default=3, help="warm timings: best of this many")
    p.add_argument("--max-programs", type=int, default=None, help="first N capacities of each task only")
    args = p.parse_args(argv)
    cfg = bgrid.tiny() if args.scale == "tiny" else bgrid.config(args.scale)
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    print("| task | capacities | runs | vmapped cold s | warm s | warm runs/min | one by one cold s | warm s | "
          "warm runs/min | ratio cold | ratio warm |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    out = {}
    for task in args.tasks:
        base, grid = bgrid.task_base(cfg, task)
        if args.max_programs is not None:  # the first capacities: the smallest n_h with every n_L
            grid = grid.replace(n_hidden=grid.n_hidden[: max(1, args.max_programs // len(grid.n_layers))])
        times = {}
        for vmapped in (True, False):
            for warm in (False, True):
                best = float("inf")
                for _ in range(args.repeats if warm else 1):  # warm: best of `repeats` (a shared machine)
                    t0 = time.perf_counter()
                    rows = run_grid(base, grid, jax.random.key(0), None, vmapped=vmapped,
                                    eval_images=cfg.eval_images)
                    best = min(best, time.perf_counter() - t0)
                times[vmapped, warm] = best
        n = len(rows)
        cold, warm = times[False, False] / times[True, False], times[False, True] / times[True, True]
        caps = len(grid.n_hidden) * len(grid.n_layers)
        print(f"| {task} | {caps} | {n} | {times[True, False]:.1f} | {times[True, True]:.1f} | "
              f"{60 * n / times[True, True]:.0f} | {times[False, False]:.1f} | {times[False, True]:.1f} | "
              f"{60 * n / times[False, True]:.0f} | {cold:.1f}× | {warm:.1f}× |", flush=True)
        out[task] = dict(runs=n, times={f"{'vmapped' if v else 'looped'}_{'warm' if w else 'cold'}": t
                                        for (v, w), t in times.items()}, ratio_cold=cold, ratio_warm=warm)
    return out


if __name__ == "__main__":
    main()
