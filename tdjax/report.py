"""Writing experiment results: atomic files, figures, tables, and the record of which claims held.

Used by experiments/ and benchmarks/ (never by the analysis library). Every file is written to a
temporary name in the same folder and renamed into place, so a run killed at any moment leaves
either the old file or the new one, never a truncated one.
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

__all__ = ["atomic_write_bytes", "save_npz", "save_csv", "save_json", "save_figure", "Claims"]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Writes `data` to `path` atomically (temporary file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return atomic_write_bytes(path, buf.getvalue())


def save_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], fieldnames: Sequence[str] | None = None) -> Path:
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
        save_json(out_dir / "claims.json", {"experiment": self.experiment, "settings": self.settings, "claims": self.items})
        atomic_write_bytes(out_dir / "claims.md", self.markdown().encode())
