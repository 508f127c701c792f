import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from mtfap.applications.cam import (class_activation_maps, normalise_map, overlay, plot_cam_grid,
                                    upsample_maps)
from mtfap.backbones import Backbone, InputSpec, create_backbone, list_backbones


class TinyBackbone(Backbone):
    """One 3x3 convolution with stride 2 and a ReLU: 4 channels on a (H/2, W/2) map."""

    def __init__(self):
        super().__init__()
        self.input_spec = InputSpec(size=(8, 8))
        self.feature_dim = 4
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)

    def forward_features(self, x):
        return torch.relu(self.conv(x))


def test_cam_is_the_weighted_sum_of_the_feature_maps_by_hand():
    torch.manual_seed(0)
    backbone = TinyBackbone()
    images = torch.randn(2, 3, 8, 8)
    W = torch.randn(4, 3)
    maps = class_activation_maps(backbone, W, images)
    g = backbone.forward_features(images).detach()
    assert maps.shape == (2, 3, 4, 4)
    for n in range(2):
        for c in range(3):
            for y in range(4):
                for x in range(4):
                    expected = sum(W[k, c] * g[n, k, y, x] for k in range(4))
                    assert maps[n, c, y, x] == pytest.approx(float(expected), abs=1e-5)


def test_global_average_of_the_cam_is_the_logit_minus_bias():
    torch.manual_seed(1)
    backbone = TinyBackbone()
    head = nn.Linear(4, 5)
    images = torch.randn(3, 3, 8, 8)
    maps = class_activation_maps(backbone, head.weight.detach().T, images)
    with torch.no_grad():
        logits = head(backbone(images))
    torch.testing.assert_close(maps.mean(dim=(2, 3)), logits - head.bias, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list_backbones())
def test_every_registered_backbone_gives_maps_whose_mean_is_the_logit(name):
    torch.manual_seed(0)
    backbone = create_backbone(name, pretrained=False).eval()
    height, width = backbone.input_spec.size
    images = torch.randn(1, 3, height, width)
    W = torch.randn(backbone.feature_dim, 2)
    maps = class_activation_maps(backbone, W, images)
    with torch.no_grad():
        pooled = backbone(images)
    torch.testing.assert_close(maps.mean(dim=(2, 3)), pooled @ W, atol=1e-3, rtol=1e-4)
    assert upsample_maps(maps, (height, width)).shape == (1, 2, height, width)


def test_wrong_head_width_is_reported():
    with pytest.raises(ValueError, match="4-channel feature maps"):
        class_activation_maps(TinyBackbone(), torch.zeros(7, 2), torch.zeros(1, 3, 8, 8))


def test_upsampling_keeps_a_constant_map_and_overlay_blends(tmp_path):
    maps = torch.full((1, 1, 3, 3), 2.0)
    np.testing.assert_allclose(upsample_maps(maps, (12, 12)).numpy(), 2.0)
    ramp = np.tile(np.arange(8.0), (8, 1))
    assert normalise_map(ramp).min() == 0 and normalise_map(ramp).max() == 1
    assert not normalise_map(np.ones((3, 3))).any()
    image = np.zeros((8, 8, 3), np.uint8)
    blended = overlay(image, ramp, alpha=1.0)
    assert blended.shape == (8, 8, 3)
    # jet: low values blue, high values red
    assert blended[0, 0, 2] > blended[0, 0, 0] and blended[0, -1, 0] > blended[0, -1, 2]
    np.testing.assert_allclose(overlay(image, ramp, alpha=0.0), 0.0)
    with pytest.raises(ValueError, match="upsample"):
        overlay(image, np.zeros((4, 4)))


def test_grid_figure_has_a_panel_per_image_and_attribute(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(2)]
    maps = rng.random((2, 3, 32, 32))
    paths = plot_cam_grid(images, maps, ["Smiling", "Bangs", "Eyeglasses"], tmp_path / "grid",
                          probabilities=rng.random((2, 3)), image_names=["a.jpg", "b.jpg"])
    with Image.open(paths[0]) as grid:
        width, height = grid.size
    assert width > height  # 4 columns (input + 3 attributes) by 2 rows
