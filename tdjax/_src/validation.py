"""Trace-time argument checks shared by the analysis modules. Errors name the argument."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def leading_dim(tree: Any, name: str) -> int:
    """The common leading-axis size k of every leaf of `tree`, or a ValueError naming `name`."""
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        raise ValueError(f"`{name}` is empty: expected a pytree of arrays with a leading example axis.")
    sizes = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        shape = jnp.shape(leaf)
        if len(shape) == 0:
            raise ValueError(
                f"`{name}` leaf {jax.tree_util.keystr(path) or '<root>'} is a scalar: every leaf needs a "
                "leading example axis of size k."
            )
        sizes.append((jax.tree_util.keystr(path) or "<root>", shape[0]))
    ks = {k for _, k in sizes}
    if len(ks) != 1:
        detail = ", ".join(f"{p}: {k}" for p, k in sizes)
        raise ValueError(f"`{name}` leaves disagree on the number of examples k (leading axis): {detail}.")
    return ks.pop()


def check_scalar(value: Any, fn_name: str, what: str = "loss_fn") -> None:
    """Raises if `value` (a traced output for one example) is not a scalar."""
    shape = jnp.shape(value)
    if shape != ():
        raise ValueError(
            f"{fn_name}: `{what}` must return a scalar for one example, got shape {shape}. "
            "Write it for a single example and let tdjax batch it (reduce vector outputs first)."
        )


def check_same_structure(a: Any, b: Any, name_a: str, name_b: str) -> None:
    """Raises if two pytrees differ in structure or leaf shapes."""
    sa, sb = jax.tree_util.tree_structure(a), jax.tree_util.tree_structure(b)
    if sa != sb:  # type: ignore[operator]
        raise ValueError(f"`{name_a}` and `{name_b}` have different pytree structures:\n{sa}\nvs\n{sb}")
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_leaves(b)):
        if jnp.shape(x) != jnp.shape(y):
            raise ValueError(
                f"`{name_a}` and `{name_b}` differ at {jax.tree_util.keystr(path)}: "
                f"shape {jnp.shape(x)} vs {jnp.shape(y)}."
            )
