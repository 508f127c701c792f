"""ResNet-18 and ResNet-50 (He et al., 2016) without the classifier.

Parameter names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1`` ...,
``layer2.0.downsample.0``), so a torchvision state_dict a user has locally loads by name; its
``fc.weight`` / ``fc.bias`` are reported as unexpected and ignored. The bottleneck puts the
stride on its 3x3 convolution, as torchvision does ("ResNet v1.5").
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from mtfap.backbones import register_backbone
from mtfap.backbones.base import Backbone, InputSpec
from mtfap.backbones.weights import apply_pretrained


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2,
                     bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int):
        super().__init__()
        self.conv1 = _conv(in_channels, width, 3, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv(width, width, 3)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = _projection(in_channels, width, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, with an identity (or projection) shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = _conv(in_channels, width, 1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv(width, width, 3, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv(width, out_channels, 1)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample = _projection(in_channels, out_channels, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    """The 1x1 convolution + batch norm shortcut where the shape changes, else None."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(_conv(in_channels, out_channels, 1, stride), nn.BatchNorm2d(out_channels))


class ResNet(Backbone):
    """A ResNet trunk: 7x7/2 stem, 3x3/2 max pool, four stages (stride 32 in all).

    Parameters
    ----------
    block : BasicBlock (ResNet-18/34) or Bottleneck (ResNet-50 and deeper).
    depths : number of blocks in each of the four stages.
    input_size : network input size; default 224 (7x7 last map).
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], depths: tuple[int, ...],
                 input_size: int | tuple[int, int] = 224):
        super().__init__()
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        self.input_spec = InputSpec(size=size)
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = 64
        for stage, depth in enumerate(depths):
            width = 64 * 2 ** stage
            blocks = []
            for index in range(depth):
                blocks.append(block(channels, width, 2 if index == 0 and stage > 0 else 1))
                channels = width * block.expansion
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.feature_dim = channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


@register_backbone("resnet18")
def resnet18(pretrained: bool | str = False, input_size: int | tuple[int, int] = 224) -> ResNet:
    """ResNet-18 trunk (512-D features); random init or a local (torchvision-named) file."""
    return apply_pretrained(ResNet(BasicBlock, (2, 2, 2, 2), input_size), "resnet18", pretrained)


@register_backbone("resnet50")
def resnet50(pretrained: bool | str = False, input_size: int | tuple[int, int] = 224) -> ResNet:
    """ResNet-50 trunk (2048-D features); random init or a local (torchvision-named) file."""
    return apply_pretrained(ResNet(Bottleneck, (3, 4, 6, 3), input_size), "resnet50", pretrained)
