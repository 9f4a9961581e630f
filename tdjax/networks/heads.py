"""Torsos and value heads for tdjax's value-based training loops (flax linen).

A value network is a torso (observation → feature vector φ(x)) followed by a head (φ(x) → outputs):

  * `QHead`:   [..., A] action values (DQN, Double DQN).
  * `C51Head`: [..., A, n_atoms] logits over a fixed support z (Bellemare et al. 2017).
  * `QRHead`:  [..., A, n_quantiles] quantile locations at levels τᵢ = (2i + 1) / 2N (Dabney et al. 2018).

`ValueNetwork(torso, head)` composes them and exposes `features(x)` (the penultimate activations
φ(x) whose srank and dormant fraction the probes measure, Lyle et al. 2022 §5.1) and `q_values(x)`
(the expected action values used to act). The heads' layout, [A, N], is the one of
`tdjax.expected_q` and the distributional losses of `tdjax.losses`.

Torsos:

  * `MLPTorso(hidden)`: ReLU dense layers, for vector observations (CartPole).
  * `MinAtarTorso(channels=16, dense=128)`: conv 3×3/1 (16 ch, VALID) → dense 128, the network of
    MinAtar's reference DQN (Young & Tian 2019); its convolution is a `PatchConv` (im2col + matmul), because XLA:CPU
    convolutions inside `lax.scan` are ~10× slower than the same maths as a matmul.
  * `NatureTorso(width=32)`: conv 8×8/4 (32) → 4×4/2 (64) → 3×3/1 (64) → dense 512 (Mnih et al. 2015);
    the layers of `tdjax.networks.NatureCNN` without its output layer; `width` n_h scales them all
    (n_h, 2n_h, 2n_h, 16n_h), as Bengio et al. 2020's released code does.
  * `BengioCNNTorso(n_h, n_L)`: the conv net of Bengio et al. 2020 App. B.1 (`tdjax.networks.bengio`),
    for the masked-image tasks; n_h, n_L from a config's `cnn_width`, `cnn_extra_layers`.
  * `ImpalaTorso()`: three stacks of [conv 3×3 → max-pool 3×3/2 → 2 residual blocks] with 16, 32, 32
    channels, then dense 256 (Espeholt et al. 2018), for ProcGen.

Every module takes one observation or any number of leading batch axes; uint8 images are scaled to
[0, 1].
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from tdjax.networks._conv import PatchConv
from tdjax.networks.bengio import BengioCNNTorso

__all__ = [
    "MLPTorso",
    "MinAtarTorso",
    "PatchConv",
    "NatureTorso",
    "ImpalaTorso",
    "QHead",
    "C51Head",
    "QRHead",
    "ValueNetwork",
    "TORSOS",
]


def _as_float_image(x: jax.Array) -> jax.Array:
    if x.dtype == jnp.uint8:
        return x.astype(jnp.float32) / 255.0
    return x.astype(jnp.float32) if not jnp.issubdtype(x.dtype, jnp.floating) else x


def _flatten_image(x: jax.Array) -> jax.Array:
    """[..., H, W, C] → [..., H·W·C]."""
    return x.reshape(x.shape[:-3] + (-1,))


class MLPTorso(nn.Module):
    """ReLU dense layers; φ(x) is the last hidden layer. Input [..., d]."""

    hidden: Sequence[int] = (64, 64)

    @nn.compact
    def __call__(self, x):
        x = x.astype(jnp.float32)
        for h in self.hidden:
            x = nn.relu(nn.Dense(h)(x))
        return x


class MinAtarTorso(nn.Module):
    """MinAtar reference torso (Young & Tian 2019): conv 3×3 stride 1, 16 channels → dense 128.

    Input [..., 10, 10, C]; output [..., 128]. The convolution is a `PatchConv` (same maths and
    parameters as `nn.Conv`, fast inside `lax.scan` on CPU).
    """

    channels: int = 16
    dense: int = 128

    @nn.compact
    def __call__(self, x):
        x = _as_float_image(x)
        x = nn.relu(PatchConv(self.channels, (3, 3), name="Conv_0")(x))
        return nn.relu(nn.Dense(self.dense)(_flatten_image(x)))


class NatureTorso(nn.Module):
    """Nature-DQN torso (Mnih et al. 2015). Input [..., 84, 84, C]; output [..., 16 · width].

    `width` n_h scales every layer as `nhid` does in Bengio et al. 2020's released Atari code: conv
    n_h → 2n_h → 2n_h channels, dense 16 n_h; the default 32 is the Nature network (32, 64, 64, 512).
    """

    width: int = 32

    @nn.compact
    def __call__(self, x):
        w = self.width
        x = _as_float_image(x)
        x = nn.relu(nn.Conv(w, (8, 8), strides=(4, 4), padding="VALID")(x))
        x = nn.relu(nn.Conv(2 * w, (4, 4), strides=(2, 2), padding="VALID")(x))
        x = nn.relu(nn.Conv(2 * w, (3, 3), strides=(1, 1), padding="VALID")(x))
        return nn.relu(nn.Dense(16 * w)(_flatten_image(x)))


class _ResidualBlock(nn.Module):
    channels: int

    @nn.compact
    def __call__(self, x):
        y = nn.Conv(self.channels, (3, 3), padding="SAME")(nn.relu(x))
        y = nn.Conv(self.channels, (3, 3), padding="SAME")(nn.relu(y))
        return x + y


class ImpalaTorso(nn.Module):
    """IMPALA CNN (Espeholt et al. 2018): per stack conv 3×3 → max-pool 3×3/2 → 2 residual blocks.

    Channels (16, 32, 32), then ReLU → dense 256 → ReLU. Input [..., 64, 64, 3] for ProcGen;
    output [..., 256].
    """

    channels: Sequence[int] = (16, 32, 32)
    dense: int = 256

    @nn.compact
    def __call__(self, x):
        x = _as_float_image(x)
        single = x.ndim == 3
        if single:  # max_pool wants a batch axis
            x = x[None]
        lead = x.shape[:-3]
        x = x.reshape((-1,) + x.shape[-3:])
        for c in self.channels:
            x = nn.Conv(c, (3, 3), padding="SAME")(x)
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
            x = _ResidualBlock(c)(x)
            x = _ResidualBlock(c)(x)
        x = nn.relu(x).reshape(lead + (-1,))
        x = nn.relu(nn.Dense(self.dense)(x))
        return x[0] if single else x


class QHead(nn.Module):
    """Linear action values: φ [..., d] → Q [..., A]."""

    num_actions: int

    @nn.compact
    def __call__(self, features):
        return nn.Dense(self.num_actions)(features)

    def expected(self, out):
        return out


class C51Head(nn.Module):
    """Categorical head (Bellemare et al. 2017): φ [..., d] → logits [..., A, n_atoms].

    The support is fixed, `atoms` = linspace(v_min, v_max, n_atoms) (not a parameter).
    """

    num_actions: int
    n_atoms: int = 51
    v_min: float = -10.0
    v_max: float = 10.0

    @property
    def atoms(self) -> jax.Array:
        """[n_atoms] support z₁ < … < z_N."""
        return jnp.linspace(self.v_min, self.v_max, self.n_atoms)

    @nn.compact
    def __call__(self, features):
        logits = nn.Dense(self.num_actions * self.n_atoms)(features)
        return logits.reshape(logits.shape[:-1] + (self.num_actions, self.n_atoms))

    def expected(self, out):
        """Q [..., A] = Σⱼ softmax(logits)ⱼ zⱼ."""
        return jnp.sum(jax.nn.softmax(out, axis=-1) * self.atoms, axis=-1)


class QRHead(nn.Module):
    """Quantile head (Dabney et al. 2018): φ [..., d] → quantiles [..., A, n_quantiles]."""

    num_actions: int
    n_quantiles: int = 200

    @property
    def taus(self) -> jax.Array:
        """[n_quantiles] quantile levels τᵢ = (2i + 1) / 2N, i = 0..N−1."""
        return (2.0 * jnp.arange(self.n_quantiles) + 1.0) / (2.0 * self.n_quantiles)

    @nn.compact
    def __call__(self, features):
        out = nn.Dense(self.num_actions * self.n_quantiles)(features)
        return out.reshape(out.shape[:-1] + (self.num_actions, self.n_quantiles))

    def expected(self, out):
        """Q [..., A] = mean quantile."""
        return jnp.mean(out, axis=-1)


class ValueNetwork(nn.Module):
    """`head(torso(x))`, with `features` (penultimate activations) and `q_values` methods.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> net = ValueNetwork(MLPTorso((32,)), C51Head(num_actions=2, n_atoms=11))
      >>> params = net.init(jax.random.key(0), jnp.zeros((4,)))
      >>> net.apply(params, jnp.zeros((5, 4))).shape          # logits [B, A, n_atoms]
      (5, 2, 11)
      >>> net.apply(params, jnp.zeros((5, 4)), method=ValueNetwork.features).shape
      (5, 32)
      >>> net.apply(params, jnp.zeros((5, 4)), method=ValueNetwork.q_values).shape
      (5, 2)
    """

    torso: nn.Module
    head: nn.Module

    def __call__(self, x):
        return self.head(self.torso(x))

    def features(self, x):
        """φ(x): the torso's output, the input of the last (linear) layer."""
        return self.torso(x)

    def q_values(self, x):
        """Expected action values [..., A] (the mean of a distributional head)."""
        return self.head.expected(self.head(self.torso(x)))


TORSOS = {
    "mlp": MLPTorso,
    "minatar_cnn": MinAtarTorso,
    "nature_cnn": NatureTorso,
    "impala_cnn": ImpalaTorso,
    "bengio_cnn": BengioCNNTorso,
}
"""Torso constructors by the name used in `tdjax.train.ValueConfig.network`."""
