"""The networks of Bengio et al. 2020, App. B.1 (flax linen), with the authors' initialisation.

  * `BengioCNNTorso(n_h, n_L)`: conv 5×5/2 (n_h) → conv 3×3 (2n_h) → conv 3×3 (4n_h) → n_L × conv 3×3
    padding 1 (4n_h) → flatten (4n_h × 10 × 10 for 32×32 inputs) → dense 4n_h; Leaky ReLU (slope
    0.01) after every layer. The torso of the value and actor-critic loops (`network="bengio_cnn"`,
    n_h = `cnn_width`, n_L = `cnn_extra_layers`).
  * `BengioCNN(n_h, n_L, out)`: the torso and a linear layer of `out` outputs: 10 for the classifiers,
    10 + 4 for the authors' factored agents (the loops here use a joint head of 40 actions instead).
  * `BengioMLP(width, num_hidden, out)`: `num_hidden` Leaky-ReLU dense layers of `width`, then a linear
    layer: California Housing is `BengioMLP(n_h, 3, 1)` (8 inputs), SARCOS `BengioMLP(n_h, 1 + n_L, 7)`
    (21 inputs; the paper says 8 outputs, the data and the authors' script have 7 torques).

Weights are Glorot/Xavier-uniform, U(±√(6 / (fan_in + fan_out))) with the receptive field counted in
both fans for convolutions, and biases zero: the `init_weights` of the authors' scripts. Every module
takes one example or any number of leading batch axes; uint8 images are scaled to [0, 1].
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from tdjax.networks._conv import PatchConv

__all__ = ["BengioCNNTorso", "BengioCNN", "BengioMLP", "LEAKY_SLOPE", "bengio_cnn_param_count",
           "bengio_mlp_param_count"]

LEAKY_SLOPE = 0.01
"""Slope of the Leaky ReLU for negative inputs (PyTorch's default, the paper's App. B.1)."""

_W = nn.initializers.xavier_uniform()
_B = nn.initializers.zeros_init()


def _act(x: jax.Array) -> jax.Array:
    return nn.leaky_relu(x, negative_slope=LEAKY_SLOPE)


def _as_float(x: jax.Array) -> jax.Array:
    if x.dtype == jnp.uint8:
        return x.astype(jnp.float32) / 255.0
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


class BengioCNNTorso(nn.Module):
    """Bengio et al. 2020 App. B.1 conv net without its output layer: [..., 32, 32, C] → [..., 4 n_h].

    Attributes:
      n_h: channels of the first convolution (the paper's "number of hiddens").
      n_L: extra 3×3 convolutions of 4 n_h channels with padding 1 (the paper's "extra layers").
    """

    n_h: int = 16
    n_L: int = 0

    @nn.compact
    def __call__(self, x):
        x = _as_float(x)
        # PatchConv: nn.Conv's maths and parameters, as slices + one matmul (fast in loops on XLA:CPU)
        x = _act(PatchConv(self.n_h, (5, 5), (2, 2), "VALID", _W, _B, name="Conv_0")(x))
        x = _act(PatchConv(2 * self.n_h, (3, 3), (1, 1), "VALID", _W, _B, name="Conv_1")(x))
        x = _act(PatchConv(4 * self.n_h, (3, 3), (1, 1), "VALID", _W, _B, name="Conv_2")(x))
        for i in range(self.n_L):
            x = _act(PatchConv(4 * self.n_h, (3, 3), (1, 1), 1, _W, _B, name=f"Conv_{3 + i}")(x))
        # Flattened in (H, W, C) order; the authors' PyTorch flattens (C, H, W): the same function class.
        x = x.reshape(x.shape[:-3] + (-1,))
        return _act(nn.Dense(4 * self.n_h, kernel_init=_W, bias_init=_B)(x))


class BengioCNN(nn.Module):
    """`BengioCNNTorso(n_h, n_L)` followed by a linear layer of `out` outputs (10 for the classifiers).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> net = BengioCNN(n_h=8, n_L=1, out=10)
      >>> params = net.init(jax.random.key(0), jnp.zeros((32, 32, 3)))
      >>> net.apply(params, jnp.zeros((5, 32, 32, 3))).shape
      (5, 10)
      >>> bengio_cnn_param_count(8, 1, 3, 10) == sum(p.size for p in jax.tree.leaves(params))
      True
    """

    n_h: int = 16
    n_L: int = 0
    out: int = 10

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.out, kernel_init=_W, bias_init=_B)(BengioCNNTorso(self.n_h, self.n_L)(x))


class BengioMLP(nn.Module):
    """`num_hidden` dense layers of `width` with Leaky ReLU, then a linear layer of `out` outputs.

    California Housing: `BengioMLP(n_h, 3, 1)`; SARCOS: `BengioMLP(n_h, 1 + n_L, 7)` (App. B.1).
    """

    width: int = 64
    num_hidden: int = 3
    out: int = 1

    @nn.compact
    def __call__(self, x):
        x = _as_float(x)
        for _ in range(self.num_hidden):
            x = _act(nn.Dense(self.width, kernel_init=_W, bias_init=_B)(x))
        return nn.Dense(self.out, kernel_init=_W, bias_init=_B)(x)


def bengio_cnn_param_count(n_h: int, n_L: int, in_channels: int, out: int = 0, size: int = 32) -> int:
    """Parameters of `BengioCNN(n_h, n_L, out)` on [size, size, in_channels] inputs (`out=0`: the torso)."""
    s = ((size - 5) // 2 + 1) - 4  # after the 5×5/2 and two 3×3 VALID convolutions (10 for 32)
    c1, c2, c4 = n_h, 2 * n_h, 4 * n_h
    n = 25 * in_channels * c1 + c1 + 9 * c1 * c2 + c2 + 9 * c2 * c4 + c4 + n_L * (9 * c4 * c4 + c4)
    n += s * s * c4 * c4 + c4
    return n + (c4 * out + out if out else 0)


def bengio_mlp_param_count(in_dim: int, width: int, num_hidden: int, out: int) -> int:
    """Parameters of `BengioMLP(width, num_hidden, out)` on [in_dim] inputs."""
    dims = [in_dim] + [width] * num_hidden + [out]
    return sum(a * b + b for a, b in zip(dims[:-1], dims[1:]))
