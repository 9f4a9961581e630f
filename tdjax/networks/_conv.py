"""Convolutions as shifted slices (im2col) and one matmul: fast inside loops on XLA:CPU, and vmapped
over seeds as a batched matmul rather than a grouped convolution."""

from __future__ import annotations

from typing import Any, Tuple, Union

import flax.linen as nn
import jax.numpy as jnp

__all__ = ["PatchConv"]


class PatchConv(nn.Module):
    """A convolution computed as shifted (strided) slices (im2col) and ONE matmul.

    Computes exactly what `nn.Conv(features, kernel_size, strides, padding)` computes (padding "VALID"
    or p zeros on every side), with the same parameters (kernel [kh, kw, C, features], bias
    [features]). It exists because XLA:CPU runs convolutions inside loop bodies (`lax.scan`, i.e.
    every training loop) about 10× slower than at top level (jax-ml/jax#12868), while slices and
    matmuls are unaffected, and because a convolution vmapped over per-seed parameters becomes a
    grouped convolution, slow to compile and to run on CPU, where a matmul stays a batched matmul.
    """

    features: int
    kernel_size: Tuple[int, int] = (3, 3)
    strides: Tuple[int, int] = (1, 1)
    padding: Union[str, int] = "VALID"  # "VALID" or p: p zeros on each side of both spatial axes
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x):
        kh, kw = self.kernel_size
        sh, sw = self.strides
        c = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (kh, kw, c, self.features))
        bias = self.param("bias", self.bias_init, (self.features,))
        if self.padding != "VALID":
            p = int(self.padding)
            x = jnp.pad(x, [(0, 0)] * (x.ndim - 3) + [(p, p), (p, p), (0, 0)])
        h, w = (x.shape[-3] - kh) // sh + 1, (x.shape[-2] - kw) // sw + 1
        # patch channels ordered (i, j, c), matching kernel.reshape(kh * kw * c, features)
        patches = jnp.concatenate([x[..., i : i + sh * (h - 1) + 1 : sh, j : j + sw * (w - 1) + 1 : sw, :]
                                   for i in range(kh) for j in range(kw)], axis=-1)
        return patches @ kernel.reshape(kh * kw * c, self.features) + bias
