"""A compact CNN meant for training from scratch on a CPU at 64-128 px."""

from __future__ import annotations

from torch import nn

from mtfap.backbones import register_backbone
from mtfap.backbones.base import Backbone, InputSpec
from mtfap.backbones.weights import apply_pretrained


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution (padding 1, no bias), batch norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class CompactCNN(Backbone):
    """Stages of two 3x3 conv-BN-ReLU layers, the first of each with stride 2.

    With the default four stages of (32, 64, 128, 256) channels the total stride is 16: a 96 px
    input gives a 6x6 map of 256 channels (about 1.2 M parameters, 0.14 GMAC per image).

    Parameters
    ----------
    input_size : int or (height, width)
        The network input size; any size divisible by the total stride works.
    widths : channels of each stage; the last one is ``feature_dim``.
    """

    def __init__(self, input_size: int | tuple[int, int] = 96,
                 widths: tuple[int, ...] = (32, 64, 128, 256)):
        super().__init__()
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        if len(size) != 2 or min(size) < 2 ** len(widths):
            raise ValueError(f"input_size must be at least {2 ** len(widths)} px for "
                             f"{len(widths)} stages, got {input_size!r}")
        if not widths or min(widths) < 1:
            raise ValueError(f"widths must be positive channel counts, got {widths!r}")
        self.input_spec = InputSpec(size=size)
        self.feature_dim = widths[-1]
        layers, channels = [], 3
        for width in widths:
            layers += [conv_bn_relu(channels, width, stride=2), conv_bn_relu(width, width)]
            channels = width
        self.features = nn.Sequential(*layers)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x):
        return self.features(x)


@register_backbone("compact")
def compact(pretrained: bool | str = False, input_size: int | tuple[int, int] = 96,
            widths: tuple[int, ...] = (32, 64, 128, 256)) -> CompactCNN:
    """The compact CNN; random init or a local weights file (no packaged weights)."""
    return apply_pretrained(CompactCNN(input_size, tuple(widths)), "compact", pretrained)
