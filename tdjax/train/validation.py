"""Config checks run by the `make_train` factories BEFORE anything is traced or compiled.

Every error is a ValueError that names the config class and field, the bad value, and the fix.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Iterable

__all__ = ["check_types", "require", "check_choice"]


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, t) for t in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:  # an int is an acceptable float
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_type_ok(v, args[0]) for v in value)
        return len(args) == len(value) and all(_type_ok(v, t) for v, t in zip(value, args))
    return isinstance(value, tp)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def check_types(config: Any) -> None:
    """Every field of a dataclass config has its annotated type (int is not bool; tuples elementwise)."""
    cls = type(config).__name__
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        tp = hints[f.name]
        if not _type_ok(value, tp):
            hint = ""
            if typing.get_origin(tp) is tuple and isinstance(value, list):
                hint = f" (use a tuple, e.g. {tuple(value)!r}: configs are frozen and hashable)"
            raise ValueError(
                f"{cls}.{f.name}={value!r} has type {type(value).__name__}, expected {_type_name(tp)}{hint}."
            )


def require(ok: bool, config: Any, field: str, problem: str, fix: str) -> None:
    """Raises `ValueError("Cfg.field=value: problem. Fix: fix")` unless `ok`."""
    if not ok:
        value = getattr(config, field)
        raise ValueError(f"{type(config).__name__}.{field}={value!r}: {problem}. Fix: {fix}.")


def check_choice(config: Any, field: str, choices: Iterable[str]) -> None:
    choices = list(choices)
    require(
        getattr(config, field) in choices, config, field, "unknown value",
        f"use one of {', '.join(repr(c) for c in choices)}",
    )
