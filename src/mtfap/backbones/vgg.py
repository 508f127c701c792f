"""VGG16 with global average pooling in place of the fully connected layers (the paper's choice).

The convolutional layers keep torchvision's parameter names (``features.0.weight`` ...), so a
torchvision ``vgg16`` / ``vgg16_bn`` state_dict a user has locally loads by name; its
``classifier.*`` entries are reported as unexpected and ignored.
"""

from __future__ import annotations

from torch import nn

from mtfap.backbones import register_backbone
from mtfap.backbones.base import Backbone, InputSpec
from mtfap.backbones.weights import apply_pretrained

# Configuration "D" of Simonyan and Zisserman (2015); "M" is a 2x2 max pool.
VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                512, 512, 512)


class VGG16GAP(Backbone):
    """The 13 convolutions of VGG16 up to conv5_3 (+ReLU); pool5 and the classifier are dropped.

    The last map is 512 x 14 x 14 at 224 px (stride 16), which gives class activation maps of
    useful resolution.

    Parameters
    ----------
    input_size : network input size (any multiple of 16 px works); default 224.
    batch_norm : add batch norm after each convolution (torchvision's ``vgg16_bn`` layout).
    """

    feature_dim = 512

    def __init__(self, input_size: int | tuple[int, int] = 224, batch_norm: bool = False):
        super().__init__()
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        self.input_spec = InputSpec(size=size)
        layers, channels = [], 3
        for item in VGG16_LAYERS:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers.append(nn.Conv2d(channels, item, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(item))
            layers.append(nn.ReLU(inplace=True))
            channels = item
        self.features = nn.Sequential(*layers)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward_features(self, x):
        return self.features(x)


@register_backbone("vgg16")
def vgg16(pretrained: bool | str = False, input_size: int | tuple[int, int] = 224,
          batch_norm: bool = False) -> VGG16GAP:
    """VGG16 conv layers + GAP; random init or a local (torchvision-named) weights file."""
    return apply_pretrained(VGG16GAP(input_size, batch_norm), "vgg16", pretrained)
