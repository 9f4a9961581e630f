"""MLP and the Nature-DQN CNN (Mnih et al. 2015) as flax linen modules."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
    """Fully connected network with ReLU hidden layers; e.g. 2→256→256→3 is `MLP((256, 256), 3)`."""

    hidden: Sequence[int]
    out: int

    @nn.compact
    def __call__(self, x):
        for h in self.hidden:
            x = nn.relu(nn.Dense(h)(x))
        return nn.Dense(self.out)(x)


class NatureCNN(nn.Module):
    """Nature-DQN torso and head: conv 8×8/4 (32) → 4×4/2 (64) → 3×3/1 (64) → dense 512 → `out`.

    Takes one [84, 84, C] observation or a batch [B, 84, 84, C]; uint8 inputs are scaled to [0, 1].
    """

    out: int

    @nn.compact
    def __call__(self, x):
        if x.dtype == jnp.uint8:
            x = x.astype(jnp.float32) / 255.0
        x = nn.relu(nn.Conv(32, (8, 8), strides=(4, 4), padding="VALID")(x))
        x = nn.relu(nn.Conv(64, (4, 4), strides=(2, 2), padding="VALID")(x))
        x = nn.relu(nn.Conv(64, (3, 3), strides=(1, 1), padding="VALID")(x))
        x = x.reshape(x.shape[:-3] + (-1,))
        x = nn.relu(nn.Dense(512)(x))
        return nn.Dense(self.out)(x)
