"""MkDocs hook: the API reference pages, generated from the packages' `__all__` at build time.

One page per public package (`tdjax` and each `tdjax.<name>` not starting with "_"), listing every
name in its `__all__` with mkdocstrings (`::: tdjax.td_loss`). The top-level names are grouped by the
module that defines them, under that module's one-line summary; a module named in a package's
`__all__` (e.g. `tdjax.train.replay`) gets its own section with the members of its own `__all__`
that the package does not re-export already. Nothing here lists names by hand: a name added to an
`__all__` appears in the reference at the next build, and tests/test_docs_site.py checks that
every one of them was rendered.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types
from pathlib import Path

from mkdocs.structure.files import File

ROOT = "tdjax"
API_DIR = "api"
NAV_TITLE = "API reference"  # the nav section whose children are the generated pages
DOCS = Path(__file__).resolve().parents[1]
EXPERIMENTS_TITLE = "Experiments"  # filled with docs/experiments/*.md, the harness page first


def public_packages() -> list[str]:
    """`tdjax` and its public subpackages/modules that declare `__all__`, in a stable order."""
    root = importlib.import_module(ROOT)
    names = [ROOT]
    for info in sorted(pkgutil.iter_modules(root.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{ROOT}.{info.name}")
        if hasattr(mod, "__all__"):
            names.append(mod.__name__)
    return names


def _summary(obj) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().split("\n\n")[0].replace("\n", " ")


def _defining_module(obj) -> str | None:
    name = getattr(obj, "__module__", None)
    return name if isinstance(name, str) else None


def public_names(package: str) -> list[str]:
    """Every documented identifier of `package`: `pkg.name` for its `__all__`, `pkg.mod.name` for the
    members of the modules its `__all__` names (those the package does not re-export)."""
    return [ident for _, _, idents in _sections(package) for ident in idents]


def _sections(package: str) -> list[tuple[str, bool, list[str]]]:
    """[(module name, is a module named in `__all__`, [identifiers])] for one package's page."""
    pkg = importlib.import_module(package)
    names = list(pkg.__all__)
    objects = [getattr(pkg, n) for n in names]
    reexported = {id(o) for o in objects if not isinstance(o, types.ModuleType)}
    groups: dict[str, list[str]] = {}
    modules: list[tuple[str, bool, list[str]]] = []
    for name, obj in zip(names, objects, strict=True):
        if isinstance(obj, types.ModuleType):
            members = [m for m in getattr(obj, "__all__", []) if id(getattr(obj, m)) not in reexported]
            modules.append((obj.__name__, True, [f"{obj.__name__}.{m}" for m in members]))
            continue
        where = _defining_module(obj)
        key = where if where and where.startswith(ROOT) else package
        groups.setdefault(key, []).append(f"{package}.{name}")
    return [(k, False, v) for k, v in groups.items()] + modules


def render(package: str) -> str:
    """The Markdown of one package's reference page."""
    pkg = importlib.import_module(package)
    lines = [f"# `{package}`", "", _summary(pkg), ""]
    sections = _sections(package)
    for module, is_member, idents in sections:
        if len(sections) > 1:
            short = module.rsplit(".", 1)[1]
            title = module if is_member else short
            guide = f" Guide: [{short}](../{short}.md)." if (DOCS / f"{short}.md").exists() else ""
            lines += [f"## `{title}`", "", _summary(importlib.import_module(module)) + guide, ""]
        if is_member:
            # The module's docstring, then only the members that the package does not re-export.
            short = [ident.rsplit(".", 1)[1] for ident in idents]
            members = f"      members: {short!r}" if short else "      members: false"
            lines += [f"::: {module}", "    options:", "      show_root_heading: false", "      heading_level: 3",
                      members, ""]
            continue
        for ident in idents:
            lines += [f"::: {ident}", "    options:", "      heading_level: 3", ""]
    return "\n".join(lines)


def _uri(package: str) -> str:
    return f"{API_DIR}/{package}.md"


def _fill(nav: list, title: str, entries: list) -> None:
    """Sets the children of the top-level nav section `title` (appended when absent)."""
    for item in nav:
        if isinstance(item, dict) and title in item:
            item[title] = entries
            return
    nav.append({title: entries})


def on_config(config):
    """Generated nav sections: the API reference pages, and every page under docs/experiments/."""
    nav = config["nav"]
    _fill(nav, NAV_TITLE, [{p: _uri(p)} for p in public_packages()])
    docs = Path(config["docs_dir"])
    pages = sorted(docs.glob("experiments/*.md"), key=lambda f: (f.stem != "harness", f.stem))
    _fill(nav, EXPERIMENTS_TITLE, [f.relative_to(docs).as_posix() for f in pages])
    return config


def on_files(files, config):
    for package in public_packages():
        files.append(File.generated(config, _uri(package), content=render(package)))
    return files
