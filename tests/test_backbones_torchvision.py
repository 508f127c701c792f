"""VGG16 and ResNet keep torchvision's parameter names, so torchvision files load by name.

The entry and parameter counts are torchvision's own (its vgg16 / vgg16_bn / resnet18 / resnet50
state_dicts without the classifier), computed by hand from the architectures.
"""

import warnings

import pytest
import torch

from mtfap.backbones import create_backbone

TORCHVISION_LAYOUT = [
    # name, kwargs, state_dict entries, parameters, a few of torchvision's names
    ("resnet18", {}, 120, 11_176_512,
     ["conv1.weight", "bn1.num_batches_tracked", "layer2.0.downsample.0.weight",
      "layer4.1.bn2.running_var"]),
    ("resnet50", {}, 318, 23_508_032,
     ["layer1.0.downsample.1.weight", "layer3.5.conv3.weight", "layer4.2.bn3.bias"]),
    ("vgg16", {}, 26, 14_714_688, ["features.0.weight", "features.28.bias"]),
    ("vgg16", {"batch_norm": True}, 91, 14_723_136,
     ["features.1.running_mean", "features.40.weight", "features.41.bias"]),
]


@pytest.mark.parametrize("name, kwargs, entries, parameters, names", TORCHVISION_LAYOUT)
def test_parameter_names_and_counts_are_torchvisions(name, kwargs, entries, parameters, names):
    model = create_backbone(name, input_size=32, **kwargs)
    state = model.state_dict()
    assert len(state) == entries
    assert sum(p.numel() for p in model.parameters()) == parameters
    assert set(names) <= set(state)


@pytest.mark.parametrize("name, classifier", [
    ("resnet18", {"fc.weight": (1000, 512), "fc.bias": (1000,)}),
    ("vgg16", {"classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,)}),
])
def test_a_torchvision_file_loads_and_its_classifier_is_ignored(tmp_path, name, classifier):
    torch.manual_seed(1)
    source = create_backbone(name, input_size=32)
    state = dict(source.state_dict())
    state.update({key: torch.zeros(shape) for key, shape in classifier.items()})
    path = tmp_path / f"{name}-torchvision.pth"
    torch.save(state, path)
    torch.manual_seed(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete match must not warn
        loaded = create_backbone(name, pretrained=str(path), input_size=32)
    report = loaded.weights_report
    assert report.complete and sorted(report.unexpected) == sorted(classifier)
    mine = loaded.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in source.state_dict().items())


def test_resnet_stride_and_feature_sizes():
    model = create_backbone("resnet18", input_size=64).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 512, 2, 2)
    assert create_backbone("resnet50", input_size=64).feature_dim == 2048
