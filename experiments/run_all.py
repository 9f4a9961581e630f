"""Runs every figure reproduction in turn: `python -m experiments.run_all --out outputs [--scale smoke|cpu|paper]`.

`--scale` goes to the training experiments (those with a `SCALES` attribute: smoke, the default and
`make reproduce`'s choice, shows the trend in minutes; cpu is `make reproduce-cpu`, Fig. 3, 8 and 12
each under ~15 min on 2 cores and Fig. 4 (three ProcGen games, IMPALA CNN) ~50 min; paper is meant
for a GPU). The closed-form figures have one setting and ignore it.

Each experiment writes its PNG, raw data and claims.md under OUT/<experiment name>/; a summary of
which claims held is written to OUT/SUMMARY.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from tdjax.report import atomic_write_bytes

# Ordered: the cheap closed-form figures first.
EXPERIMENTS: list[str] = ["lyle22_fig1", "lyle22_fig9", "lyle22_fig10", "lyle22_fig2", "lyle22_fig3", "lyle22_fig8",
                           "lyle22_fig12", "lyle22_fig4"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    p.add_argument("--only", nargs="*", default=None, help="run only these experiment modules")
    p.add_argument("--scale", default="smoke", choices=("smoke", "cpu", "paper"),
                   help="scale of the training experiments (default smoke)")
    args = p.parse_args(argv)
    out = Path(args.out)
    names = args.only or EXPERIMENTS
    summary = ["# Reproduction summary", "", f"Scale of the training experiments: {args.scale}.", ""]
    for name in names:
        mod = importlib.import_module(f"experiments.{name}")
        t0 = time.time()
        print(f"== {name}", flush=True)
        argv = ["--out", str(out / name)]
        if hasattr(mod, "SCALES"):
            argv += ["--scale", args.scale]
        mod.main(argv)
        claims = json.loads((out / name / "claims.json").read_text())
        held = [c for c in claims["claims"] if c["held"] is not None]
        n_ok = sum(c["held"] for c in held)
        summary.append(f"- {name}: {n_ok}/{len(held)} claims held ({time.time() - t0:.0f} s) — see {name}/claims.md")
    atomic_write_bytes(out / "SUMMARY.md", ("\n".join(summary) + "\n").encode())
    print("\n".join(summary))
    print(f"Pictures and data are under {out}/<experiment>/.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
