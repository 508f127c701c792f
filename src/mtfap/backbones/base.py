"""The contract every backbone keeps (block 1 of MTFAP)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class InputSpec:
    """What a backbone needs from the image pipeline.

    size : (height, width) of the network input, in pixels.
    mean, std : per-channel RGB normalisation applied to images scaled to [0, 1]:
        x = (rgb / 255 - mean) / std.
    crop : fraction of the shorter image side kept by the centre crop before resizing
        (1.0 = the largest centred square).
    """

    size: tuple[int, int]
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    crop: float = 1.0


class Backbone(nn.Module):
    """A CNN that gives the last feature map (for class activation maps) and its GAP vector.

    Subclasses implement ``forward_features`` and set ``input_spec`` and ``feature_dim``.
    """

    input_spec: InputSpec
    feature_dim: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised images -> (N, feature_dim, h, w) last feature map."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised images -> (N, feature_dim) global-average-pooled features."""
        return self.forward_features(x).mean(dim=(2, 3))

    def ordered_layers(self) -> list[nn.Module]:
        """The backbone's layers from the input on (the units that training's
        ``frozen_layers`` keeps at their starting weights); a backbone that does not list them
        cannot be partly frozen."""
        raise NotImplementedError(f"backbone {type(self).__name__} does not list its layers")
