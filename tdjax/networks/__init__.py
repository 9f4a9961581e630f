"""Flax networks used by tdjax's training loops, tests and benchmarks.

The analysis library never imports this package: it works on any `apply_fn(params, x)`.
"""

from tdjax.networks._nets import MLP as MLP
from tdjax.networks._nets import NatureCNN as NatureCNN

__all__ = ["MLP", "NatureCNN"]
