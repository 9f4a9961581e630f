"""The one runner every figure module shares: its CLI, output folder, progress bar, files and claims.

A figure module keeps its config, its computation, its plot and its claims, and declares itself:

    EXPERIMENT = Experiment(NAME, __doc__, config=config, tiny=tiny, scales=SCALES, run=run,
                            plot=plot, claims=check_claims, rows=_rows)

    def main(argv=None) -> Claims:
        return EXPERIMENT.main(argv)

`EXPERIMENT.main(argv)` then

  1. parses the command line with tyro: `--scale` picks the base config (`config(scale)` for a
     training figure, `smoke` by default; `full`, i.e. `config()`, for a closed-form one; `tiny` for
     tests, also spelt `--tiny`), then every field of the config dataclass can be overridden, nested
     ones too (`--seeds 3 --agent.total-steps 5000`); `--out` (default outputs/<name>) and
     `--no-progress`; `--help` lists every field with its default at the chosen scale;
  2. checks that the output folder can be written BEFORE computing anything, and removes the
     temporary files (`.*.tmp`) a killed run left there;
  3. runs `run(config, show_progress)`, then writes <name>.npz (the arrays `run` returned),
     <name>.csv (`rows`), <name>.png (`plot`), claims.json and claims.md (`claims`, with the scale
     and the runtime added to its settings), each atomically and with mode 0644;
  4. prints and returns the claims.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import sys
import time
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, NamedTuple, Optional, Sequence

from tdjax.report import (
    Claims,
    OutputFolderError,
    check_writable,
    remove_stale_temporaries,
    save_csv,
    save_figure,
    save_npz,
)

__all__ = ["Experiment", "Invocation", "progress_bar", "summary_line"]

FULL = "full"  # the scale name of a closed-form figure's one setting
TINY = "tiny"  # the seconds-long configuration the tests run
_OWN_FLAGS = ("scale", "out", "progress")


def progress_bar(total: Optional[int] = None, *, desc: str, enabled: bool = True, iterable: Any = None):
    """The experiments' tqdm bar (one style for all); a silent stand-in when not `enabled`."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=not enabled, dynamic_ncols=True)


def summary_line(doc: Optional[str]) -> str:
    """The first line of a module docstring (its one-line description)."""
    return (doc or "").strip().splitlines()[0].strip() if (doc or "").strip() else ""


class Invocation(NamedTuple):
    """What the command line asked for."""

    config: Any  # the figure's Config, the scale's base with the command-line overrides applied
    scale: str
    out: Path
    progress: bool


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One figure reproduction, as the harness runs it.

    Attributes:
      name: module and output name ("lyle22_fig3"): files are out/<name>.npz, .csv, .png.
      doc: the module docstring (its first line describes the experiment in --help and run_all).
      config: `config(scale)` for each name in `scales`, or `config()` when `scales` is empty.
      tiny: `tiny()`, the configuration the tests run (seconds).
      run: `run(config, show_progress) -> dict` of arrays (saved as the .npz).
      plot: `plot(config, result) -> matplotlib Figure`.
      claims: `claims(config, result) -> tdjax.report.Claims`.
      rows: `rows(config, result) -> list of dict` (the .csv).
      scales: the scales `config` accepts, the default first (training figures: smoke, cpu, paper);
        empty for a closed-form figure with one setting.
    """

    name: str
    doc: str
    config: Callable[..., Any]
    tiny: Callable[[], Any]
    run: Callable[[Any, bool], dict]
    plot: Callable[[Any, dict], Any]
    claims: Callable[[Any, dict], Claims]
    rows: Callable[[Any, dict], list]
    scales: tuple[str, ...] = ()

    @property
    def description(self) -> str:
        return summary_line(self.doc)

    @property
    def trains(self) -> bool:
        """Whether the figure trains agents at several scales (run_all forwards --scale to these)."""
        return bool(self.scales)

    @property
    def scale_names(self) -> tuple[str, ...]:
        """What --scale accepts, the default first."""
        return (*(self.scales or (FULL,)), TINY)

    def base_config(self, scale: str) -> Any:
        """The config of `scale` before any command-line override."""
        if scale == TINY:
            return self.tiny()
        if scale not in self.scale_names:
            raise ValueError(f"{self.name}: scale must be one of {self.scale_names}, got {scale!r}.")
        return self.config(scale) if self.scales else self.config()

    def parse(self, argv: Optional[Sequence[str]] = None) -> Invocation:
        """Parses `argv` (sys.argv[1:] if None); exits with a usage message on a bad flag or --help."""
        import tyro

        argv = list(sys.argv[1:] if argv is None else argv)
        argv = [a for b in (["--scale", TINY] if a == "--tiny" else [a] for a in argv) for a in b]
        pre = argparse.ArgumentParser(prog=self._prog, add_help=False, allow_abbrev=False)
        pre.add_argument("--scale", choices=self.scale_names, default=self.scale_names[0])
        scale = pre.parse_known_args(argv)[0].scale
        base = self.base_config(scale)
        cli_type = _cli_type(type(base), self.scale_names)
        default = cli_type(config=base, scale=scale, out=Path("outputs") / self.name, progress=True)
        args = tyro.cli(cli_type, default=default, args=argv, prog=self._prog, description=self._help,
                        registry=_registry())
        return Invocation(args.config, args.scale, Path(args.out), bool(args.progress))

    def main(self, argv: Optional[Sequence[str]] = None) -> Claims:
        """Parses `argv`, checks the output folder, runs, writes every file, prints and returns the claims."""
        inv = self.parse(argv)
        out = check_writable(inv.out, what=f"{self.name} results")
        stale = remove_stale_temporaries(out)
        if stale:
            print(f"{self.name}: removed {len(stale)} temporary file(s) a killed run left in {out}.", flush=True)
        cfg = inv.config
        t0 = time.time()
        res = self.run(cfg, inv.progress)
        save_npz(out / f"{self.name}.npz", **res)
        save_csv(out / f"{self.name}.csv", self.rows(cfg, res))
        save_figure(self.plot(cfg, res), out / f"{self.name}.png")
        claims = self.claims(cfg, res)
        claims.settings["scale"] = inv.scale
        claims.settings["runtime_s"] = round(time.time() - t0, 1)
        claims.save(out)
        print(claims.markdown())
        return claims

    def cli(self) -> None:
        """`python -m experiments.<name>`: `main(sys.argv[1:])`, an unusable output folder as a message."""
        try:
            self.main(sys.argv[1:])
        except OutputFolderError as err:
            sys.exit(f"{self.name}: error: {err}")

    @property
    def _prog(self) -> str:
        return f"python -m experiments.{self.name}"

    @property
    def _help(self) -> str:
        scales = ", ".join(self.scale_names)
        return (f"{self.description}\n\n--scale ({scales}; default {self.scale_names[0]}) picks the base config; "
                "every config field below overrides it, nested ones too (e.g. --agent.total-steps 5000). "
                f"Writes <out>/{self.name}.png, .npz, .csv, claims.md and claims.json. --tiny is --scale tiny.")


@functools.lru_cache(maxsize=None)
def _cli_type(config_type: type, scale_names: tuple[str, ...]) -> type:
    """The dataclass tyro parses: the figure's config (its flags unprefixed) beside the harness's own."""
    import tyro

    clash = [f.name for f in dataclasses.fields(config_type) if f.name in _OWN_FLAGS]
    if clash:
        raise TypeError(f"{config_type.__qualname__} has fields {clash} that clash with the harness's own flags "
                        f"{_OWN_FLAGS}; rename them.")
    return dataclasses.make_dataclass("Cli", [
        ("config", Annotated[config_type, tyro.conf.arg(name="")]),
        ("scale", Annotated[Literal[scale_names], tyro.conf.arg(help="base config, before the overrides")]),
        ("out", Annotated[Path, tyro.conf.arg(help="output folder (checked writable before computing)")]),
        ("progress", Annotated[bool, tyro.conf.arg(help="show a progress bar")]),
    ], frozen=True)


def _named_values(strings: list[str]) -> tuple:
    out = []
    for text in strings:
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise ValueError(f"expected NAME=VALUE, got {text!r}")
        try:
            out.append((name, ast.literal_eval(value)))
        except (ValueError, SyntaxError):  # a bare word is a string: distribution_mode=hard
            out.append((name, value))
    return tuple(out)


@functools.lru_cache(maxsize=None)
def _registry():
    """tyro's parsers plus one for `tuple[tuple[str, Any], ...]` fields (e.g. `env_options`), which tyro
    cannot parse alone: `--agent.env-options distribution_mode=hard use_backgrounds=False`."""
    from tyro import constructors

    registry = constructors.ConstructorRegistry()

    @registry.primitive_rule
    def named_values(info):
        args = typing.get_args(info.type)
        if (typing.get_origin(info.type) is not tuple or len(args) != 2 or args[1] is not Ellipsis
                or typing.get_origin(args[0]) is not tuple or typing.get_args(args[0]) != (str, typing.Any)):
            return None
        return constructors.PrimitiveConstructorSpec(
            nargs="*", metavar="NAME=VALUE", instance_from_str=_named_values,
            is_instance=lambda x: isinstance(x, tuple),
            str_from_instance=lambda x: [f"{k}={v!r}" for k, v in x])

    return registry
