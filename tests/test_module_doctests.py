"""The `>>>` examples in tdjax's docstrings run as tests (the Markdown pages' run via --doctest-glob=*.md).

Modules are found by reading the files, so collection imports nothing; a module whose import needs an
optional package that is not installed (envpool, torch) is skipped, naming the package.
"""

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = {"envpool", "torch"}
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules_with_examples():
    names = []
    for path in sorted((ROOT / "tdjax").rglob("*.py")):
        if ">>>" in path.read_text(encoding="utf-8"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = _modules_with_examples()


def test_examples_were_found():
    assert len(MODULES) >= 5, MODULES


@pytest.mark.parametrize("name", MODULES)
def test_module_examples(name):
    try:
        module = importlib.import_module(name)
    except ImportError as err:
        if (err.name or "").split(".")[0] in OPTIONAL:
            pytest.skip(f"{name} needs the optional package {err.name}")
        raise
    tests = [t for t in doctest.DocTestFinder(exclude_empty=True).find(module, name) if t.examples]
    assert tests, f"{name} has '>>>' in its source but doctest found no example (not in a docstring?)"
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report = []
    for test in tests:
        runner.run(test, out=report.append)
    failed, attempted = runner.summarize(verbose=False)
    assert failed == 0, f"{failed} of {attempted} examples failed in {name}:\n" + "".join(report)
