"""dlib's face-recognition ResNet: the pure-Python port against dlib itself."""

import importlib.util
import io
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from mtfap.backbones import create_backbone
from mtfap.backbones.dlib_face import (WEIGHTS_PACKAGE, add_prev, packaged_weights_path,
                                       read_dlib_network)
from mtfap.errors import DataError

HAS_WEIGHTS = importlib.util.find_spec(WEIGHTS_PACKAGE) is not None
needs_weights = pytest.mark.skipif(not HAS_WEIGHTS, reason="face-recognition-models not installed")


def _celeba_chips(celeba_dir, count):
    """Centre squares of the first aligned CelebA images, resized to dlib's 150x150 chips."""
    with zipfile.ZipFile(celeba_dir / "img_align_celeba.zip") as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".jpg"))[:count]
        chips = []
        for name in names:
            image = Image.open(io.BytesIO(archive.read(name))).convert("RGB")
            w, h = image.size
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            image = image.crop((left, top, left + side, top + side)).resize((150, 150),
                                                                             Image.BICUBIC)
            chips.append(np.asarray(image))
    return np.stack(chips)


def _normalise(chips, spec):
    x = torch.from_numpy(chips).permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)


@needs_weights
def test_descriptor_equals_dlibs_own_on_real_faces(celeba_dir):
    dlib = pytest.importorskip("dlib", reason="the reference needs dlib: pip install dlib-bin")
    chips = _celeba_chips(celeba_dir, 6)
    dlib_model = dlib.face_recognition_model_v1(str(packaged_weights_path()))
    reference = np.array([np.array(dlib_model.compute_face_descriptor(chip)) for chip in chips])
    model = create_backbone("dlib_face_resnet", pretrained=True).eval()
    with torch.no_grad():
        ours = model.descriptor(_normalise(chips, model.input_spec)).numpy()
    assert np.abs(ours - reference).max() <= 1e-5
    # dlib's descriptors are not unit vectors; ours must not be either.
    assert not np.allclose(np.linalg.norm(reference, axis=1), 1.0, atol=1e-3)


@needs_weights
def test_file_structure_is_read_completely():
    inputs, layers = read_dlib_network(packaged_weights_path())
    assert inputs["size"] == (150, 150)
    np.testing.assert_allclose(inputs["mean"], (122.782, 117.001, 104.298), atol=1e-3)
    convs = [layer for layer in layers if layer.kind == "con"]
    assert len(convs) == 29
    assert [c.attrs["num_filters"] for c in convs] == [32] * 7 + [64] * 8 + [128] * 6 + [256] * 8
    assert [c.attrs["stride"][0] for c in convs].count(2) == 5  # stem and four downsamplings
    assert layers[-1].kind == "fc" and layers[-1].params.shape == (256, 128, 1, 1)
    model = create_backbone("dlib_face_resnet", pretrained=True)
    assert sum(p.numel() for p in model.parameters()) == sum(
        layer.params.size for layer in layers if layer.params is not None)


def test_shapes_of_the_feature_map_and_descriptor():
    model = create_backbone("dlib_face_resnet").eval()
    with torch.no_grad():
        x = torch.randn(2, 3, 150, 150)
        assert model.forward_features(x).shape == (2, 256, 2, 2)
        assert model.descriptor(x).shape == (2, 128)


@needs_weights
def test_fused_affine_layers_compute_the_same_features():
    model = create_backbone("dlib_face_resnet", pretrained=True).eval()
    fused = create_backbone("dlib_face_resnet", pretrained=True, fuse_affine=True).eval()
    assert not any(name.startswith("affine") or ".affine" in name
                   for name, _ in fused.named_parameters())
    assert sum(p.numel() for p in fused.parameters()) < sum(p.numel() for p in model.parameters())
    x = torch.randn(2, 3, 150, 150, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference, ours = model(x), fused(x)
    assert reference.abs().max() > 0.5
    assert torch.allclose(ours, reference, atol=1e-4 * reference.abs().max())


@needs_weights
def test_input_size_and_crop_change_what_the_pipeline_feeds_not_the_weights():
    default = create_backbone("dlib_face_resnet", pretrained=True).eval()
    tight = create_backbone("dlib_face_resnet", pretrained=True, input_size=128,
                            input_crop=0.85).eval()
    assert tight.input_spec.size == (128, 128) and tight.input_spec.crop == 0.85
    assert tight.input_spec.mean == default.input_spec.mean
    assert default.input_spec.size == (150, 150) and default.input_spec.crop == 1.0
    assert type(tight).input_spec.size == (150, 150)  # the class keeps dlib's own geometry
    for name, value in default.state_dict().items():
        assert torch.equal(tight.state_dict()[name], value)
    with torch.no_grad():
        assert tight(torch.zeros(2, 3, 128, 128)).shape == (2, 256)
    for bad, message in (({"input_size": 96}, "input_size must be a whole number of pixels "
                          "from 103 to 512"), ({"input_size": "128"}, "got '128'"),
                         ({"input_crop": 0}, "input_crop must be the kept fraction"),
                         ({"input_crop": 1.2}, "got 1.2")):
        with pytest.raises(ValueError, match=message):
            create_backbone("dlib_face_resnet", **bad)


def test_add_prev_pads_the_smaller_operand_at_the_end():
    block = torch.ones(1, 4, 3, 3)
    shortcut = torch.full((1, 2, 4, 4), 10.0)
    out = add_prev(block, shortcut)
    assert out.shape == (1, 4, 4, 4)
    assert out[0, 0, 0, 0] == 11 and out[0, 0, 3, 3] == 10  # beyond the block's 3x3
    assert out[0, 3, 0, 0] == 1 and out[0, 3, 3, 3] == 0  # beyond the shortcut's 2 channels


def test_a_file_that_is_not_a_dlib_network_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.dat"
    bad.write_bytes(b"\x01\x01\x01\x09loss_mmod")
    with pytest.raises(DataError, match="bad.dat: not a dlib network file: loss layer 'loss_mmod'"):
        create_backbone("dlib_face_resnet", pretrained=str(bad))
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(b"\x01\x01\x01\x0dloss_metric_2\x03")
    with pytest.raises(DataError, match="unexpected end of file"):
        read_dlib_network(truncated)
