"""Local weight files (state_dict / safetensors) and weights shipped in installed packages."""

import pickle

import pytest
import torch
from safetensors.torch import save_file

from mtfap.backbones import create_backbone
from mtfap.backbones.weights import (WeightsPackageMissing, load_local_weights, package_file,
                                     read_state_dict)
from mtfap.errors import DataError


def _small(seed):
    torch.manual_seed(seed)
    return create_backbone("compact", input_size=32, widths=(8, 16))


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_round_trip_through_a_file(tmp_path, suffix):
    source, path = _small(1), tmp_path / f"w{suffix}"
    state = source.state_dict()
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    other = _small(2)
    assert not _same_weights(source, other)
    loaded = create_backbone("compact", pretrained=str(path), input_size=32, widths=(8, 16))
    assert _same_weights(source, loaded)
    assert loaded.weights_report.complete
    assert len(loaded.weights_report.loaded) == len(state)


def test_checkpoint_wrapper_and_dataparallel_prefix_are_unwrapped(tmp_path):
    source = _small(1)
    path = tmp_path / "ckpt.pt"
    wrapped = {"module." + k: v for k, v in source.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": wrapped}, path)
    target = _small(2)
    report = load_local_weights(target, path)
    assert report.complete and _same_weights(source, target)


def test_missing_unexpected_and_mismatched_names_are_reported(tmp_path):
    source = _small(1)
    state = source.state_dict()
    dropped = "features.0.1.running_mean"
    del state[dropped]
    state["fc.weight"] = torch.zeros(10, 16)
    state["features.2.0.weight"] = torch.zeros(16, 8, 5, 5)  # wrong kernel size
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    target = _small(2)
    before = target.state_dict()["features.2.0.weight"].clone()
    with pytest.warns(UserWarning, match="1 missing, 1 unexpected, 1 shape-mismatched"):
        report = load_local_weights(target, path)
    assert report.missing == [dropped]
    assert report.unexpected == ["fc.weight"]
    assert report.mismatched == [("features.2.0.weight", (16, 8, 5, 5), (16, 8, 3, 3))]
    # The mismatched tensor is left alone, the matched ones are loaded.
    assert torch.equal(target.state_dict()["features.2.0.weight"], before)
    first = "features.0.0.weight"
    assert torch.equal(target.state_dict()[first], source.state_dict()[first])
    assert "features.2.0.weight file (16, 8, 5, 5) vs model (16, 8, 3, 3)" in report.summary()
    with pytest.raises(DataError, match="does not cover the whole model"):
        load_local_weights(_small(3), path, strict=True)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="weights file not found.*state_dict"):
        create_backbone("compact", pretrained=str(tmp_path / "nope.pth"))


def test_file_that_is_not_weights_is_a_clear_error(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights")
    with pytest.raises(DataError, match="notes.pth: not a PyTorch weights file"):
        read_state_dict(text)
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"\x00" * 20)
    with pytest.raises(DataError, match="not a readable safetensors file"):
        read_state_dict(fake)
    # A pickle with arbitrary objects is refused by weights_only loading: nothing runs.
    evil = tmp_path / "object.pth"
    evil.write_bytes(pickle.dumps(pickle.Pickler, protocol=2))
    with pytest.raises(DataError, match="not a PyTorch weights file"):
        read_state_dict(evil)


def test_file_of_another_model_is_a_clear_error(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"encoder.layer1.weight": torch.zeros(3)}, path)
    with pytest.raises(DataError, match="none of its 1 tensor names match the CompactCNN"):
        create_backbone("compact", pretrained=str(path))
    listing = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], listing)
    with pytest.raises(DataError, match="not a mapping of names to tensors"):
        read_state_dict(listing)


def test_installed_package_without_its_file_says_to_reinstall(tmp_path, monkeypatch):
    import importlib.machinery
    import importlib.util
    spec = importlib.machinery.ModuleSpec("some_weights", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec)
    with pytest.raises(WeightsPackageMissing, match="lacks 'models/w.dat'.*--force-reinstall"):
        package_file("some_weights", "models/w.dat", "some-weights", "mine")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "w.dat").write_bytes(b"x")
    assert package_file("some_weights", "models/w.dat", "some-weights", "mine") == \
        tmp_path / "models" / "w.dat"
