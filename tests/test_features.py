"""Frozen mode: feature extraction, `mtfap features` and `mtfap fit-heads`."""

import json

import numpy as np
import pytest
import torch

from mtfap.backbones import create_backbone
from mtfap.cli import main
from mtfap.data.features import FeatureSet
from mtfap.data.loader import make_loader
from mtfap.data.synthetic import load_synthetic
from mtfap.experiments.features import extract_features
from mtfap.heads.persistence import load_fitted_heads, save_fitted_heads
from mtfap.heads.registry import make_head_estimator


@pytest.fixture(scope="module")
def faces():
    return load_synthetic(n=60, size=32, seed=0)


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return create_backbone("compact", input_size=32, widths=(8, 16))


def test_features_follow_the_dataset_rows_and_flip_averages(faces, backbone, tmp_path):
    plain = extract_features(faces, backbone, batch_size=16, cache_dir=tmp_path, progress=False)
    assert plain.X.shape == (60, 16) and plain.keys == faces.keys
    np.testing.assert_array_equal(plain.split, faces.split)
    np.testing.assert_array_equal(plain.labels, faces.labels)
    # Row i is image i: recompute a few rows straight from the pipeline.
    batch = next(iter(make_loader(faces.subset([5, 17, 42]), backbone.input_spec, train=False,
                                  batch_size=3, cache_dir=tmp_path)))
    with torch.no_grad():
        direct = backbone.eval()(batch.images).numpy()
        mirrored = backbone(batch.images.flip(-1)).numpy()
    np.testing.assert_allclose(plain.X[[5, 17, 42]], direct, rtol=1e-5, atol=1e-6)
    flipped = extract_features(faces, backbone, batch_size=16, flip=True, cache_dir=tmp_path,
                               progress=False)
    np.testing.assert_allclose(flipped.X[[5, 17, 42]], (direct + mirrored) / 2, rtol=1e-5,
                               atol=1e-6)
    assert flipped.meta["flip"] and not plain.meta["flip"]


@pytest.fixture(scope="module")
def feature_file(tmp_path_factory):
    """Features with a planted signal: two groups of two attributes, each group the sign of a
    noisy projection of X on its own direction (rank one per group, as eq. 3 assumes)."""
    rng = np.random.default_rng(0)
    n, d = 300, 12
    X = rng.normal(size=(n, d)).astype(np.float32)
    directions = np.repeat(rng.normal(size=(d, 2)), 2, axis=1)  # columns: a, a, b, b
    labels = (X @ directions + 0.3 * rng.normal(size=(n, 4)) > 0).astype(np.uint8)
    mask = rng.random((n, 4)) > 0.1
    features = FeatureSet(X, labels, mask, ["Male", "Smiling", "Young", "Bangs"],
                          [f"{i}.jpg" for i in range(n)], np.repeat([0, 1, 2], 100).astype(np.int8),
                          np.arange(n) // 3, {"backbone": "generated"})
    return features.save(tmp_path_factory.mktemp("features") / "features.npz")


@pytest.mark.parametrize("method, extra", [
    ("independent", ["--param", "lam=0.001"]),
    ("lowrank_sparse", ["--solver", "proximal", "--groups", "groups.json", "--param", "lam=0.001",
                        "--param", "gamma=0.01"]),
    ("graph", ["--param", "xi=0.1", "--tune-thresholds"]),
])
def test_fit_heads_fits_reports_and_saves(feature_file, tmp_path, method, extra, capsys):
    (tmp_path / "groups.json").write_text(json.dumps({"a": ["Male", "Smiling"],
                                                      "b": ["Young", "Bangs"]}))
    extra = [str(tmp_path / e) if e == "groups.json" else e for e in extra]
    out = tmp_path / "heads"
    assert main(["fit-heads", str(feature_file), "--method", method, "--out", str(out),
                 "--bootstrap", "50", *extra]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == method
    assert metrics["val"]["mean_accuracy"] > 80 and metrics["test"]["mean_accuracy"] > 80
    low, high = metrics["test"]["mean_accuracy_ci95"]
    assert low <= metrics["test"]["mean_accuracy"] <= high
    assert "mean accuracy" in capsys.readouterr().out
    tuned = "--tune-thresholds" in extra
    assert (np.asarray(metrics["thresholds"]) != 0.5).any() == tuned
    # The saved heads predict what the fitted ones did.
    features = FeatureSet.load(feature_file)
    heads = load_fitted_heads(out)
    test = features.get_split("test")
    predicted = heads.predict_proba(test.X) >= np.asarray(metrics["thresholds"])
    correct = ((predicted == test.labels) & test.mask).sum(0) / test.mask.sum(0)
    assert abs(100 * correct.mean() - metrics["test"]["mean_accuracy"]) < 1e-3  # the report rounds


def test_saved_heads_round_trip_without_pickle(feature_file, tmp_path):
    features = FeatureSet.load(feature_file).get_split("train")
    estimator = make_head_estimator("lowrank_sparse", {"groups": {"g": features.attributes}},
                                    features.attributes)
    estimator.fit(features.X, features.labels, features.mask)
    save_fitted_heads(estimator, "lowrank_sparse", tmp_path)
    with np.load(tmp_path / "heads.npz", allow_pickle=False) as stored:
        assert {"coef_", "intercept_", "L_/0", "S_/0"} <= set(stored.files)
    again = load_fitted_heads(tmp_path)
    np.testing.assert_array_equal(again.predict_proba(features.X),
                                  estimator.predict_proba(features.X))
    np.testing.assert_array_equal(again.L_[0], estimator.L_[0])


@pytest.mark.parametrize("args, message", [
    (["--method", "graph", "--solver", "paper"], "lowrank_sparse only"),
    (["--param", "lamda=0.1"], "Did you mean 'lam'"),
    (["--param", "lam"], "expected KEY=VALUE"),
    (["--attributes", "Smilling"], "Did you mean 'Smiling'"),
])
def test_fit_heads_bad_arguments_are_one_line_errors(feature_file, tmp_path, args, message, capsys):
    assert main(["fit-heads", str(feature_file), "--out", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err


def test_features_command_writes_once_then_is_up_to_date(tmp_path, capsys):
    from data_factory import make_celeba
    make_celeba(tmp_path / "celeba", n=12)
    out = tmp_path / "f.npz"
    args = ["features", str(tmp_path / "celeba"), "--backbone", "compact", "--weights", "none",
            "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert main(args) == 0
    written = FeatureSet.load(out)
    assert written.X.shape == (12, 256) and written.meta["backbone"] == "compact"
    assert sorted(set(written.split.tolist())) == [0, 1, 2]
    stamp = out.stat().st_mtime_ns
    assert main(args) == 0 and "up to date" in capsys.readouterr().out
    assert out.stat().st_mtime_ns == stamp
    assert main([*args, "--flip"]) == 0 and FeatureSet.load(out).meta["flip"]
