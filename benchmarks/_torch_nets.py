"""PyTorch twins of tdjax.networks.MLP and NatureCNN, loaded from flax params, for torch.func baselines.

The twins compute exactly the flax functions: inputs are channels-last like the flax models (the CNN
permutes to NCHW internally and back to NHWC before flattening, so the first Dense sees the same
feature order), and `from_flax` copies the weights (HWIO -> OIHW, [in, out] -> [out, in]).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn


class TorchMLP(nn.Module):
    """Twin of `tdjax.networks.MLP(hidden, out)` for inputs [..., d_in]."""

    def __init__(self, d_in: int, hidden: Sequence[int], out: int):
        super().__init__()
        sizes = [d_in, *hidden, out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x):
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)


class TorchNatureCNN(nn.Module):
    """Twin of `tdjax.networks.NatureCNN(out)` for float inputs [B, 84, 84, C] or [84, 84, C]."""

    def __init__(self, in_channels: int, out: int):
        super().__init__()
        self.convs = nn.ModuleList(
            [
                nn.Conv2d(in_channels, 32, 8, stride=4),
                nn.Conv2d(32, 64, 4, stride=2),
                nn.Conv2d(64, 64, 3, stride=1),
            ]
        )
        self.fc = nn.Linear(7 * 7 * 64, 512)
        self.head = nn.Linear(512, out)

    def forward(self, x):
        single = x.dim() == 3
        if single:
            x = x.unsqueeze(0)
        x = x.permute(0, 3, 1, 2)
        for conv in self.convs:
            x = torch.relu(conv(x))
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
        x = self.head(torch.relu(self.fc(x)))
        return x[0] if single else x


def _t(a) -> torch.Tensor:
    return torch.tensor(np.array(a, dtype=np.float32))


def from_flax(model: nn.Module, params) -> nn.Module:
    """Copies flax `params` (the dict returned by `init`) into the twin `model`; returns `model`."""
    p = params["params"]
    with torch.no_grad():
        if isinstance(model, TorchMLP):
            for i, layer in enumerate(model.layers):
                layer.weight.copy_(_t(p[f"Dense_{i}"]["kernel"]).T)
                layer.bias.copy_(_t(p[f"Dense_{i}"]["bias"]))
        elif isinstance(model, TorchNatureCNN):
            for i, conv in enumerate(model.convs):
                conv.weight.copy_(_t(p[f"Conv_{i}"]["kernel"]).permute(3, 2, 0, 1))
                conv.bias.copy_(_t(p[f"Conv_{i}"]["bias"]))
            for name, layer in (("Dense_0", model.fc), ("Dense_1", model.head)):
                layer.weight.copy_(_t(p[name]["kernel"]).T)
                layer.bias.copy_(_t(p[name]["bias"]))
        else:
            raise TypeError(f"from_flax: unknown twin {type(model).__name__}.")
    return model
