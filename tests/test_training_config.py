"""The training config (files, overrides, checking) and the checkpoint format."""

import json

import numpy as np
import pytest
import torch

from mtfap.model.checkpoint import load_checkpoint, load_model_state
from mtfap.training.checkpoint import (
    atomic_torch_save,
    capture_rng_state,
    check_same_config,
    restore_rng_state,
)
from mtfap.training.config import TrainConfig, load_config, parse_override


def test_toml_and_yaml_give_the_same_config(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('data = "celeba"\nheads = "graph"\nlr = 1\nattributes = ["Male", "Young"]\n'
                    "[heads_params]\nxi = 0.75\n")
    yaml = tmp_path / "run.yaml"
    yaml.write_text("data: celeba\nheads: graph\nlr: 1\nattributes: [Male, Young]\n"
                    "heads_params: {xi: 0.75}\n")
    a, b = load_config(toml), load_config(yaml)
    assert a == b
    assert a.lr == 1.0 and isinstance(a.lr, float)  # int accepted where a float is meant
    assert a.heads_params == {"xi": 0.75} and a.attributes == ["Male", "Young"]


def test_overrides_apply_in_order_and_reach_into_tables(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('data = "x"\nepochs = 3\n')
    config = load_config(path, [parse_override("epochs=5"), parse_override("heads_params.lam=0.1"),
                                parse_override("attributes=Male,Smiling"),
                                parse_override("max_steps=null")])
    assert config.epochs == 5 and config.heads_params == {"lam": 0.1}
    assert config.attributes == ["Male", "Smiling"] and config.max_steps is None


@pytest.mark.parametrize("text, message", [
    ("epoch=3", "did you mean 'epochs'"),
    ("optimizer=adam", "did you mean 'adamw'"),
    ("epochs=2.5", "epochs must be an integer"),
    ("lr=-1", "lr must be > 0"),
    ("flip_test=maybe", "flip_test must be true or false"),
    ("lr", "expected key=value"),
    ("head_lr_scale=0", "head_lr_scale must be > 0"),
    ("augmentation={flip=0.5}", "augmentation.*known settings are flip_prob"),
    ("augmentation={scale: [0.5, 2]}", "invalid augmentation settings"),
])
def test_bad_overrides_name_the_key_and_a_fix(text, message):
    with pytest.raises(ValueError, match=f"(?i){message}"):
        load_config(None, [parse_override(text)])


def test_unknown_key_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data: x\nbatchsize: 8\n")
    with pytest.raises(ValueError, match=r"run\.yaml.*'batchsize'.*'batch_size'"):
        load_config(path)


def test_saved_config_round_trips(tmp_path):
    config = TrainConfig(data="d", heads="graph", heads_params={"xi": 0.5}, pretrained="w.pt")
    config.save(tmp_path / "config.json")
    assert TrainConfig(**json.loads((tmp_path / "config.json").read_text())) == config


def test_checkpoint_from_another_config_is_refused_with_the_differences(tmp_path):
    saved = TrainConfig(data="d", lr=0.1, heads="graph", output_dir="a", num_workers=0)
    checkpoint = {"config": saved.to_dict()}
    # Execution settings may change on resume ...
    check_same_config(checkpoint, TrainConfig(data="d", lr=0.1, heads="graph", output_dir="b",
                                              num_workers=4, max_steps=7), "last.pt")
    # ... what the run computes may not.
    with pytest.raises(ValueError, match=r"heads: checkpoint 'graph', now 'independent'.*"
                                         r"lr: checkpoint 0.1, now 0.2"):
        check_same_config(checkpoint, TrainConfig(data="d", lr=0.2, heads="independent"), "last.pt")


def test_checkpoint_files_are_checked_when_read(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    atomic_torch_save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not an mtfap checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "broken.pt")
    model = torch.nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"shape differs: weight.*another backbone"):
        load_model_state(model, {"weight": torch.zeros(4, 3), "bias": torch.zeros(2)}, "x.pt")
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporary files


def test_random_states_survive_a_weights_only_round_trip(tmp_path):
    import random

    import numpy as np
    atomic_torch_save(capture_rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_the_scarce_setting_thins_train_and_val_labels_of_the_rarest_and_keeps_test_whole():
    from mtfap.data.synthetic import load_synthetic
    from mtfap.training.trainer import load_dataset
    faces = load_synthetic(n=300, size=16, seed=0)
    full = load_dataset(TrainConfig(data="synthetic"), faces)
    scarce = load_dataset(TrainConfig(data="synthetic", scarce_fraction=0.2, scarce_count=5),
                          faces)
    rare = scarce.meta["scarce_labels"]["attributes"]
    assert len(rare) == 5
    columns = [faces.attributes.index(a) for a in rare]
    others = [j for j in range(len(faces.attributes)) if j not in columns]
    for split in ("train", "val"):
        rows = faces.split_indices(split)
        kept = scarce.mask[np.ix_(rows, columns)].sum() / full.mask[np.ix_(rows, columns)].sum()
        assert 0.1 < kept < 0.35  # about a fifth, at least one of each class per attribute
        assert (scarce.mask[np.ix_(rows, others)] == full.mask[np.ix_(rows, others)]).all()
    test = faces.split_indices("test")
    assert (scarce.mask[test] == full.mask[test]).all()
    with pytest.raises(ValueError, match="scarce_fraction"):
        TrainConfig(scarce_fraction=1.5)


def test_text_or_null_keys_keep_their_text_and_read_null_as_none():
    # init and cache_dir take a name or a path, or nothing: "2024" stays a folder name.
    assert parse_override("init=runs/2024") == ("init", "runs/2024")
    assert parse_override("cache_dir=2024") == ("cache_dir", "2024")
    assert parse_override("init=celeba-dlib-finetuned") == ("init", "celeba-dlib-finetuned")
    assert parse_override("init=null") == ("init", None)
    assert load_config(None, [parse_override("heads=independent"),
                              parse_override("init=2024")]).init == "2024"
