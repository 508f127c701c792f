import json

import numpy as np
import pytest

from mtfap.experiments.compare import compare_on_features, with_scarce_labels
from mtfap.cli import main
from mtfap.cli.compare import read_params
from mtfap.data.features import FeatureSet
from mtfap.experiments.sweep import sweep_frozen


def _features(n=300, d=12, k=6, seed=0):
    """Linear-logistic labels of random features, 3 splits by identity (3 images each)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    W = rng.normal(size=(d, k)) * 1.5
    labels = (X @ W + rng.normal(size=(n, k)) > np.linspace(-2, 1, k)).astype(np.uint8)
    identities = np.arange(n) // 3
    split = np.select([identities % 10 < 6, identities % 10 < 8], [0, 1], 2).astype(np.int8)
    return FeatureSet(X, labels, np.ones((n, k), bool), [f"a{j}" for j in range(k)],
                      [f"{i}.jpg" for i in range(n)], split, identities, {"dataset": "toy"})


def test_sweep_keeps_the_value_with_the_best_validation_accuracy(tmp_path):
    features = _features()
    result = sweep_frozen(features, ["independent"], {"independent": {"lam": [1e-3, 1e3]}},
                          progress=False)
    assert result.chosen == {"independent": {"lam": 1e-3}}
    curve = result.curves.set_index("value")["val_mean_accuracy"]
    assert curve[1e-3] > curve[1e3]   # a huge ridge weight flattens every head
    paths = result.save(tmp_path)
    assert json.loads(paths["json"].read_text())["chosen"]["independent"]["lam"] == 1e-3
    assert paths["figure"].stat().st_size > 10_000


def test_deterministic_methods_run_once_seeded_ones_per_seed():
    comparison = compare_on_features(_features(), ["independent", "lowrank_sparse_paper"],
                                     seeds=(0, 1), groups={"g": ["a0", "a1", "a2"],
                                                           "h": ["a3", "a4", "a5"]},
                                     tune=False, n_bootstrap=20, progress=False)
    assert len(comparison.results["independent"]) == 1
    assert len(comparison.results["lowrank_sparse_paper"]) == 2
    table = comparison.accuracy_table()
    runs = comparison.results["lowrank_sparse_paper"]
    assert table.loc["Mean", "lowrank_sparse_paper"] == pytest.approx(
        np.mean([100 * r.mean_accuracy for r in runs]))
    summary = comparison.summary_table()
    assert summary.loc["independent", "mean accuracy"] > 75   # the labels are learnable
    assert summary.loc["lowrank_sparse_paper", "runs"] == 2


def test_scarce_labels_hide_train_and_val_labels_of_the_rarest_attributes():
    features = _features(n=600)
    scarce, rare = with_scarce_labels(features, 0.1, 2, seed=0)
    train_rate = features.labels[features.split == 0].mean(0)
    expected = np.argsort(np.minimum(train_rate, 1 - train_rate), kind="stable")[:2]
    assert rare == [features.attributes[j] for j in expected]
    columns = [features.attributes.index(a) for a in rare]
    for split in (0, 1):
        rows = features.split == split
        kept = scarce.mask[rows][:, columns].mean(0)
        assert np.all(kept < 0.15)
        others = [j for j in range(6) if j not in columns]
        assert scarce.mask[rows][:, others].all()
    test = features.split == 2
    np.testing.assert_array_equal(scarce.mask[test], features.mask[test])
    np.testing.assert_array_equal(scarce.labels, features.labels)


def test_read_params_accepts_a_sweep_file(tmp_path):
    (tmp_path / "sweep.json").write_text(json.dumps({"chosen": {"graph": {"xi": 0.01}}}))
    assert read_params(tmp_path / "sweep.json") == {"graph": {"xi": 0.01}}
    (tmp_path / "bad.json").write_text("{\n  'xi': 1}")
    with pytest.raises(ValueError, match="bad.json:2"):
        read_params(tmp_path / "bad.json")


def test_main_job_runs_end_to_end_on_a_tiny_generated_dataset(tmp_path, capsys):
    out = tmp_path / "compare"
    code = main(["compare", "--synthetic-size", "60", "--out", str(out), "--bootstrap", "50",
                 "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "GENERATED dataset" in printed and "Mean balanced" in printed
    assert "adjusted Rand index vs generating groups (synthetic)" in printed
    table = json.loads((out / "comparison.json").read_text())["table"]
    summary = json.loads((out / "summary.json").read_text())["table"]
    for method in ("independent", "lowrank_sparse_paper", "lowrank_sparse_proximal", "graph"):
        assert table["Mean"][method] == pytest.approx(summary[method]["mean accuracy"])
        assert 0 <= table["Smiling"][method] <= 100
    chosen = json.loads((out / "sweep.json").read_text())["chosen"]
    assert set(chosen["lowrank_sparse_proximal"]) == {"lam", "gamma"}
    clusters = json.loads((out / "clusters.json").read_text())
    assert sum(len(c) for c in clusters["clusters"]) == 40
    for figure in ("graph_heatmap.png", "graph_clusters.png", "sweep.png"):
        assert (out / figure).stat().st_size > 10_000
    assert "| Mean |" in (out / "comparison.md").read_text()


def test_bad_arguments_give_one_line_errors(tmp_path, capsys):
    assert main(["compare", "--scarce", "1.5", "--out", str(tmp_path)]) == 2
    assert "--scarce must be a fraction" in capsys.readouterr().err
    assert main(["compare", "--features", str(tmp_path / "none.npz")]) == 2
    assert "features file not found" in capsys.readouterr().err
