"""A fixture's work done once per test session, even when pytest-xdist runs the suite on 2 workers.

`make test` distributes tests over workers one by one, so the tests of one module can land on both
workers, and a module-scoped fixture (an experiment's tiny run) would then be built twice, once per
worker. `once_per_session` runs it in the first worker that asks, under a file lock in the session's
shared temporary folder, and hands the pickled result to the other; a worker asking while it is
being built waits for it instead of building its own copy.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import shutil
from pathlib import Path
from typing import Any, Callable


def once_per_session(tmp_path_factory: Any, name: str, make: Callable[[Path], Any]) -> Any:
    """`make(root)` run once per session: `root` is a fresh folder shared by the workers, the result
    must be picklable (convert `np.load` files with `dict(...)`)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the workers' folders share this parent
    result_file = base / f"once-{name}.pkl"
    with open(base / f"once-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if result_file.exists():
                return pickle.loads(result_file.read_bytes())
            root = base / f"once-{name}"
            shutil.rmtree(root, ignore_errors=True)  # a failed earlier attempt
            root.mkdir()
            result = make(root)
            tmp = result_file.with_suffix(".tmp")
            tmp.write_bytes(pickle.dumps(result))
            tmp.replace(result_file)
            return result
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
