"""Prints pyproject's requirements without version bounds, for `make test-latest` (the newest releases).

Usage: python .ci/latest_requirements.py [EXTRA ...]   (core dependencies plus the named extras)
"""

import re
import sys
import tomllib
from pathlib import Path

LINTERS = {"ruff", "mypy"}  # pinned on purpose and not needed to run the tests


def main(extras: list[str]) -> None:
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        if extra not in project["optional-dependencies"]:
            raise SystemExit(f"unknown extra {extra!r}; pyproject.toml has {sorted(project['optional-dependencies'])}")
        reqs += project["optional-dependencies"][extra]
    names = []
    for req in reqs:
        name = re.match(r"[A-Za-z0-9_.\-]+(\[[^\]]*\])?", req.split(";")[0].strip()).group(0)
        if name.split("[")[0].lower() not in LINTERS and name not in names:
            names.append(name)
    print("\n".join(names))


if __name__ == "__main__":
    main(sys.argv[1:])
