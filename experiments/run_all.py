"""Runs every figure reproduction in turn: `python -m experiments.run_all --out outputs [--scale smoke|cpu|paper|tiny]`.

`--scale` goes to the training experiments (smoke, the default and `make reproduce`'s choice, shows the
trend in minutes; cpu is `make reproduce-cpu`, Fig. 3, 8 and 12 each under ~15 min on 2 cores and
Fig. 4 (three ProcGen games, IMPALA CNN) ~50 min; paper is meant for a GPU). The closed-form figures
have one setting and ignore it, except `tiny` (seconds, what the tests run), which every experiment has.

Each experiment writes its PNG, raw data and claims.md under OUT/<experiment name>/; a summary of
which claims held is written to OUT/SUMMARY.md (rewritten after each experiment).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from experiments._harness import TINY, summary_line
from tdjax.report import OutputFolderError, atomic_write_bytes, check_writable

# Ordered: the cheap closed-form figures first.
EXPERIMENTS: list[str] = ["lyle22_fig1", "lyle22_fig9", "lyle22_fig10", "lyle22_fig2", "lyle22_fig3", "lyle22_fig8",
                          "lyle22_fig12", "lyle22_fig4", "lyle22_fig5", "lyle22_fig11", "lyle22_fig6", "bengio20_fig1",
                          "bengio20_fig2", "bengio20_fig3", "bengio20_fig4", "bengio20_fig5", "bengio20_fig6",
                          "bengio20_fig7", "bengio20_fig8", "bengio20_fig9"]
TRAINING_SCALES = ("smoke", "cpu", "paper", TINY)


def describe(name: str) -> str:
    """The first line of experiment `name`'s docstring, read without importing it (no JAX start-up)."""
    spec = importlib.util.find_spec(f"experiments.{name}")
    return summary_line(ast.get_docstring(ast.parse(Path(spec.origin).read_text())))


def _parser() -> argparse.ArgumentParser:
    listing = "\n".join(f"  {n:<14} {describe(n)}" for n in EXPERIMENTS)
    p = argparse.ArgumentParser(
        prog="python -m experiments.run_all", description=summary_line(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"experiments (in the order they run):\n{listing}\n\nOne experiment with all its settings: "
               "python -m experiments.<name> --help")
    p.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME", help="run only these experiments")
    p.add_argument("--scale", default="smoke", choices=TRAINING_SCALES,
                   help="scale of the training experiments (default smoke; tiny: every experiment's test config)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    unknown = [n for n in args.only or () if n not in EXPERIMENTS]
    if unknown:
        p.error(f"unknown experiment(s) {', '.join(map(repr, unknown))}; choose from: {', '.join(EXPERIMENTS)}")
    out = Path(args.out)
    try:
        check_writable(out, what="reproductions")
    except OutputFolderError as err:
        p.error(str(err))
    names = args.only or EXPERIMENTS
    summary = ["# Reproduction summary", "", f"Scale of the training experiments: {args.scale}.", ""]
    for name in names:
        experiment = importlib.import_module(f"experiments.{name}").EXPERIMENT
        t0 = time.time()
        print(f"== {name}", flush=True)
        argv = ["--out", str(out / name)] + (["--no-progress"] if args.no_progress else [])
        if args.scale in experiment.scale_names:
            argv += ["--scale", args.scale]
        tiny = getattr(experiment, "tiny", None)
        if tiny is not None and hasattr(tiny(), "grid_dir"):  # Bengio Figs 1, 2, 8, 9 share one grid
            argv += ["--grid-dir", str(out / "bengio20_grid")]
        claims = experiment.main(argv)
        held = [c for c in claims.items if c["held"] is not None]
        n_ok = sum(c["held"] for c in held)
        summary.append(f"- {name}: {n_ok}/{len(held)} claims held ({time.time() - t0:.0f} s) — see {name}/claims.md")
        atomic_write_bytes(out / "SUMMARY.md", ("\n".join(summary) + "\n").encode())
    print("\n".join(summary))
    print(f"Pictures and data are under {out}/<experiment>/.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
