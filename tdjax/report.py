"""Writing experiment results: atomic files, figures, tables, and the record of which claims held.

Used by experiments/ and benchmarks/ (never by the analysis library). Every file is written to a
temporary name in the same folder (`.<name>.<random>.tmp`) and renamed into place, so a run killed at
any moment leaves either the old file or the new one, never a truncated one; what it may leave is a
temporary file, which `remove_stale_temporaries` deletes at the start of the next run. Files are made
readable by everyone (mode 0644), as `open` would under the usual umask, not 0600 as `mkstemp` makes
them. `check_writable` tells, before hours of computation, whether the results could be saved.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = ["atomic_write_bytes", "save_npz", "save_csv", "save_json", "save_figure", "Claims", "FILE_MODE",
           "check_writable", "remove_stale_temporaries", "OutputFolderError"]

FILE_MODE = 0o644  # results are shared: readable by everyone, writable by the owner
_TMP_SUFFIX = ".tmp"


class OutputFolderError(OSError):
    """The output folder cannot be created or written to (raised before any computation)."""


def check_writable(folder: str | os.PathLike, what: str = "results") -> Path:
    """Creates `folder` if needed and checks a file can be written and removed there.

    Raises:
      OutputFolderError: naming the folder, the reason, and the fix.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check.", suffix=_TMP_SUFFIX)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputFolderError(
            f"cannot write the {what} to {str(folder)!r}: {err.strerror or err}. Fix: choose another folder "
            f"(e.g. --out /tmp/{folder.name or 'outputs'}) or make this one writable "
            f"(mkdir -p {folder} && chmod u+w {folder})."
        ) from err
    return folder


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Deletes the temporary files (`.<name>.<random>.tmp`) a killed run left in `folder`; returns them.

    Call it before a run starts writing into `folder`, never while another run writes there.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(f".*{_TMP_SUFFIX}") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int = FILE_MODE) -> Path:
    """Writes `data` to `path` atomically (temporary file in the same folder, fsync, rename), with
    permissions `mode` (default 0644)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TMP_SUFFIX)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_npz(path: str | os.PathLike, **arrays: Any) -> Path:
    """Saves arrays (anything np.asarray accepts) to a compressed .npz, atomically."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]
    return atomic_write_bytes(path, buf.getvalue())


def save_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]],
             fieldnames: Sequence[str] | None = None) -> Path:
    """Saves a list of dict rows as CSV (readable by pandas.read_csv), atomically."""
    rows = list(rows)
    if fieldnames is None:
        fieldnames = list(rows[0].keys()) if rows else []
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fieldnames)
    w.writeheader()
    for r in rows:
        w.writerow({k: (float(v) if isinstance(v, (np.floating, np.integer)) else v) for k, v in r.items()})
    return atomic_write_bytes(path, buf.getvalue().encode())


def save_json(path: str | os.PathLike, obj: Any) -> Path:
    """Saves JSON (NumPy scalars/arrays converted), atomically."""

    def default(o):
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, (np.floating, np.integer, np.bool_)):
            return o.item()
        raise TypeError(f"not JSON serialisable: {type(o)}")

    return atomic_write_bytes(path, json.dumps(obj, indent=2, default=default).encode())


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Saves a matplotlib figure as PNG atomically and closes it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


@dataclass
class Claims:
    """The paper's claims an experiment checks, and whether each held at the settings used.

    Example:
      >>> c = Claims("lyle22_fig9")
      >>> c.check("TD error falls", 0.1 < 1.0, "final 0.1 vs initial 1.0")
      True
      >>> c.all_held
      True
    """

    experiment: str
    settings: dict = field(default_factory=dict)
    items: list = field(default_factory=list)

    def check(self, claim: str, held: bool, evidence: str = "") -> bool:
        self.items.append({"claim": claim, "held": bool(held), "evidence": evidence})
        return bool(held)

    def note(self, text: str) -> None:
        """A statement that is not a pass/fail claim (e.g. a setting the paper does not give)."""
        self.items.append({"claim": text, "held": None, "evidence": ""})

    @property
    def all_held(self) -> bool:
        return all(i["held"] for i in self.items if i["held"] is not None)

    def markdown(self) -> str:
        lines = [f"# {self.experiment}: which of the paper's claims held", ""]
        if self.settings:
            lines += ["Settings: " + ", ".join(f"{k}={v}" for k, v in self.settings.items()), ""]
        for i in self.items:
            mark = {True: "HELD", False: "DID NOT HOLD", None: "NOTE"}[i["held"]]
            lines.append(f"- **{mark}**: {i['claim']}" + (f" ({i['evidence']})" if i["evidence"] else ""))
        return "\n".join(lines) + "\n"

    def save(self, out_dir: str | os.PathLike) -> None:
        out_dir = Path(out_dir)
        save_json(out_dir / "claims.json",
                  {"experiment": self.experiment, "settings": self.settings, "claims": self.items})
        atomic_write_bytes(out_dir / "claims.md", self.markdown().encode())
