"""evaluate, graph and cam on both kinds of run: `mtfap train` and `mtfap fit-heads` folders."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from data_factory import make_celeba
from mtfap.attributes import CELEBA_ATTRIBUTES
from mtfap.backbones import create_backbone
from mtfap.cli import main
from mtfap.data.features import FeatureSet
from mtfap.evaluation.metrics import evaluate_predictions
from mtfap.model.runs import open_run
from mtfap.training.config import TrainConfig
from mtfap.training.trainer import train


@pytest.fixture(scope="module")
def celeba(tmp_path_factory):
    root = tmp_path_factory.mktemp("celeba")
    truth = make_celeba(root, n=30)
    return root, truth


@pytest.fixture(scope="module")
def heads_run(celeba, tmp_path_factory):
    """Frozen features (a compact CNN with saved random weights) of the tiny CelebA, graph heads fitted on them."""
    root, _ = celeba
    folder = tmp_path_factory.mktemp("heads")
    torch.manual_seed(0)  # saved weights: the maps must come from the very same backbone
    torch.save(create_backbone("compact").state_dict(), folder / "compact.pt")
    assert main(["features", str(root), "--backbone", "compact", "--weights",
                 str(folder / "compact.pt"),
                 "--out", str(folder / "features.npz"), "--cache-dir", str(folder / "cache"),
                 "--no-progress"]) == 0
    assert main(["fit-heads", str(folder / "features.npz"), "--method", "graph",
                 "--param", "xi=0.1", "--out", str(folder / "run"), "--bootstrap", "0"]) == 0
    return folder


@pytest.fixture(scope="module")
def train_run(celeba, tmp_path_factory):
    root, _ = celeba
    folder = tmp_path_factory.mktemp("train")
    config = TrainConfig(data=str(root), backbone="compact",
                         backbone_args={"input_size": 32, "widths": [8, 16]}, heads="graph",
                         heads_params={"xi": 0.1}, optimizer="adamw", lr=3e-3, epochs=1,
                         batch_size=5, device="cpu", progress=False, amp="off",  # float32:
                         # the tests compare logits to 1e-5 (bf16, "auto" on some CPUs, is 1e-2)
                         cache_dir=str(folder / "cache"), output_dir=str(folder / "run"))
    train(config)
    return folder / "run"


def test_evaluate_heads_run_matches_a_direct_computation(heads_run, capsys):
    out = heads_run / "eval"
    assert main(["evaluate", str(heads_run / "run"), "--out", str(out), "--bootstrap", "100",
                 "--compare", "paper"]) == 0
    printed = capsys.readouterr().out
    assert "mean accuracy" in printed and "MTFAP with prior (paper)" in printed
    saved = json.loads((out / "metrics.json").read_text())
    opened = open_run(heads_run / "run")
    test = FeatureSet.load(heads_run / "features.npz").get_split("test")
    direct = evaluate_predictions(opened.estimator.predict_proba(test.X), test.labels,
                                  test.mask, n_bootstrap=0)
    assert saved["mean_accuracy"] == pytest.approx(100 * direct.mean_accuracy, abs=1e-3)
    assert saved["bootstrap_unit"] == "identity"
    comparison = json.loads((out / "comparison.json").read_text())["table"]
    assert comparison["Mean"]["MTFAP with prior (paper)"] == pytest.approx(93.52, abs=0.01)


def test_evaluate_with_thresholds_tuned_on_val(heads_run):
    out = heads_run / "eval-val"
    assert main(["evaluate", str(heads_run / "run"), "--thresholds", "val", "--split", "val",
                 "--out", str(out), "--bootstrap", "0"]) == 0
    tuned = json.loads((out / "metrics.json").read_text())
    assert main(["evaluate", str(heads_run / "run"), "--split", "val", "--out",
                 str(out / "default"), "--bootstrap", "0"]) == 0
    default = json.loads((out / "default" / "metrics.json").read_text())
    # Thresholds tuned on val maximise val accuracy, attribute by attribute.
    assert tuned["mean_accuracy"] >= default["mean_accuracy"]
    assert tuned["meta"]["thresholds"] == "val"


def test_graph_of_a_heads_run(heads_run, capsys):
    out = heads_run / "graph"
    assert main(["graph", str(heads_run / "run"), "--out", str(out)]) == 0
    report = json.loads((out / "clusters.json").read_text())
    assert sorted(sum(report["clusters"], [])) == sorted(CELEBA_ATTRIBUTES)
    assert set(report["adjusted_rand_index"]) == {"paper", "regions"}
    assert (out / "graph_heatmap.png").is_file() and (out / "graph_clusters.png").is_file()
    assert "adjusted Rand index vs paper" in capsys.readouterr().out


def test_cam_of_a_heads_run_uses_the_frozen_backbone(heads_run, celeba, capsys):
    root, _ = celeba
    out = heads_run / "cam"
    assert main(["cam", str(heads_run / "run"), "--data", str(root), "--count", "2",
                 "--attr", "Smiling", "Bangs", "--grid", "--out", str(out)]) == 0
    assert (out / "cam_grid.png").is_file()
    lines = [l for l in capsys.readouterr().out.splitlines() if "Smiling" in l]
    assert len(lines) == 2
    # The printed probability is the heads' prediction on the image's GAP features.
    opened = open_run(heads_run / "run")
    features = FeatureSet.load(heads_run / "features.npz")
    name, rest = lines[0].split(": ", 1)
    row = [k.endswith(name) for k in features.keys].index(True)
    expected = opened.estimator.predict_proba(features.X[row:row + 1])[0]
    smiling = CELEBA_ATTRIBUTES.index("Smiling")
    assert float(rest.split(",")[0].split()[-1]) == pytest.approx(expected[smiling], abs=0.006)


def test_train_run_evaluate_graph_and_cam(train_run, tmp_path, capsys):
    assert main(["evaluate", str(train_run), "--out", str(tmp_path / "eval"),
                 "--bootstrap", "50", "--no-progress"]) == 0
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["meta"]["kind"] == "train" and 0 <= saved["mean_accuracy"] <= 100
    assert main(["graph", str(train_run), "--out", str(tmp_path / "graph")]) == 0
    image = tmp_path / "face.png"
    Image.fromarray(np.full((40, 36, 3), 120, np.uint8)).save(image)
    assert main(["cam", str(train_run), str(image), "--attr", "Male", "--out",
                 str(tmp_path / "cam")]) == 0
    assert (tmp_path / "cam" / "cam_face.png").is_file()


def test_test_time_zooms_average_the_logits_of_the_views(train_run, tmp_path, capsys):
    from mtfap.data.transforms import centre_zoom
    opened = open_run(train_run)
    plain = opened.predict_split("val", progress=False)[0]
    assert np.array_equal(opened.predict_split("val", progress=False, scales=[1.0])[0], plain)
    zoomed = opened.predict_split("val", progress=False, scales=[1.0, 0.8])[0]
    # By hand: the model's logits on the zoomed images, averaged with the plain ones.
    from dataclasses import replace

    from mtfap.data.loader import make_loader
    from mtfap.training.config import config_from_dict
    from mtfap.training.trainer import load_dataset
    config = replace(config_from_dict(opened.info), progress=False)  # the run's own config
    loader = make_loader(load_dataset(config).get_split("val"),
                         opened.model.backbone.input_spec, train=False, batch_size=64,
                         cache_dir=config.cache_dir)
    with torch.no_grad():
        logits = torch.cat([(opened.model(b.images) + opened.model(centre_zoom(b.images, 0.8)))
                            / 2 for b in loader])
    np.testing.assert_allclose(zoomed, torch.sigmoid(logits).numpy(), atol=1e-5)
    assert not np.allclose(zoomed, plain, atol=1e-5)
    assert main(["evaluate", str(train_run), "--split", "val", "--test-scales", "1,0.8",
                 "--bootstrap", "0", "--out", str(tmp_path / "zoom"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "views: zooms 1, 0.8;" in printed
    assert "no bootstrap intervals" in printed and "nan" not in printed
    saved = json.loads((tmp_path / "zoom" / "metrics.json").read_text())
    assert saved["meta"]["test_scales"] == [1.0, 0.8]


def test_several_runs_are_evaluated_as_an_ensemble_of_their_probabilities(
        train_run, heads_run, tmp_path, capsys):
    out = tmp_path / "ensemble"
    assert main(["evaluate", str(train_run), str(heads_run / "run"), "--bootstrap", "0",
                 "--out", str(out), "--no-progress"]) == 0
    assert "ensemble of 2 train runs" in capsys.readouterr().out
    saved = json.loads((out / "metrics.json").read_text())
    parts = [open_run(path).predict_split("test", progress=False)
             for path in (train_run, heads_run / "run")]
    scores = (parts[0][0] + parts[1][0]) / 2
    direct = evaluate_predictions(scores, parts[0][1], parts[0][2], n_bootstrap=0)
    assert saved["mean_accuracy"] == pytest.approx(100 * direct.mean_accuracy, abs=1e-3)
    assert saved["meta"]["runs"] == [str(train_run), str(heads_run / "run")]
    alone = [evaluate_predictions(p[0], p[1], p[2], n_bootstrap=0).mean_accuracy for p in parts]
    assert any(abs(100 * a - saved["mean_accuracy"]) > 1e-3 for a in alone)


def test_bad_runs_and_arguments(heads_run, celeba, tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["cam", str(heads_run / "run"), "--attr", "Smilng"]) == 2
    assert "Did you mean 'Smiling'" in capsys.readouterr().err
    assert main(["evaluate", str(heads_run / "run"), "--data", str(tmp_path)]) == 2
    assert "give --features" in capsys.readouterr().err
    assert main(["evaluate", str(heads_run / "run"), "--test-scales", "1,0.9"]) == 2
    assert "test-time zooms need images" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", str(heads_run / "run"), "--test-scales", "1,1.2"])
    assert "--test-scales: '1,1.2': give zoom sides in (0, 1]" in capsys.readouterr().err
    assert main(["fit-heads", str(heads_run / "features.npz"), "--method", "independent",
                 "--out", str(tmp_path / "ind"), "--bootstrap", "0"]) == 0
    assert main(["graph", str(tmp_path / "ind")]) == 2
    assert "has no task graph" in capsys.readouterr().err
    assert main(["features", str(celeba[0]), "--backbone", "compact", "--weights", "none",
                 "--out", str(tmp_path / "random.npz"), "--no-progress",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    assert main(["fit-heads", str(tmp_path / "random.npz"), "--method", "independent",
                 "--out", str(tmp_path / "random"), "--bootstrap", "0"]) == 0
    assert main(["cam", str(tmp_path / "random"), "--data", str(celeba[0]),
                 "--attr", "Male"]) == 2
    assert "randomly initialised" in capsys.readouterr().err


def test_compare_runs_pairs_methods_on_the_same_images_and_caches_scores(
        celeba, train_run, tmp_path, capsys, monkeypatch):
    root, _ = celeba
    config = TrainConfig(data=str(root), backbone="compact",
                         backbone_args={"input_size": 32, "widths": [8, 16]},
                         heads="independent", optimizer="adamw", lr=3e-3, epochs=1, batch_size=5,
                         device="cpu", progress=False, cache_dir=str(tmp_path / "cache"),
                         output_dir=str(tmp_path / "independent"))
    train(config)
    out = tmp_path / "cmp"
    argv = ["compare-runs", f"independent={tmp_path / 'independent'}", f"graph={train_run}",
            "--split", "val", "--focus", "Smiling", "--bootstrap", "50", "--out", str(out),
            "--no-progress"]
    assert main(argv) == 0
    report = json.loads((out / "runs_comparison.json").read_text())
    accuracy = {}
    for name, path in (("independent", tmp_path / "independent"), ("graph", train_run)):
        scores, labels, mask, ids = open_run(path).predict_split("val", progress=False)
        accuracy[name] = evaluate_predictions(scores, labels, mask, n_bootstrap=0)
        row = next(r for r in report["runs"] if r["method"] == name)
        assert row["mean_accuracy"] == pytest.approx(100 * accuracy[name].mean_accuracy, abs=1e-3)
    graph = report["differences"]["graph"]
    assert graph["mean_difference"] == pytest.approx(
        100 * (accuracy["graph"].mean_accuracy - accuracy["independent"].mean_accuracy))
    smiling = CELEBA_ATTRIBUTES.index("Smiling")
    assert graph["focus_mean_difference"] == pytest.approx(
        100 * (accuracy["graph"].accuracy[smiling] - accuracy["independent"].accuracy[smiling]))
    assert "independent" not in report["differences"]
    assert "graph" in capsys.readouterr().out
    assert (out / "per_attribute.csv").is_file() and "| graph |" in \
        (out / "runs_comparison.md").read_text()

    # a second report reads the cached scores: no run is opened again
    def no_open(*args, **kwargs):
        raise AssertionError("the scores should come from the cache")
    monkeypatch.setattr("mtfap.model.runs.open_run", no_open)
    assert main([*argv, "--overwrite"]) == 0
    again = json.loads((out / "runs_comparison.json").read_text())
    assert again["differences"] == report["differences"]


def test_compare_runs_refuses_bad_arguments(train_run, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["compare-runs", str(train_run), "--out", str(tmp_path / "x")])
    assert "METHOD=RUN" in capsys.readouterr().err
    assert main(["compare-runs", f"graph={train_run}", "--baseline", "independent",
                 "--out", str(tmp_path / "y")]) != 0
    assert "--baseline 'independent'" in capsys.readouterr().err
    assert main(["compare-runs", f"graph={tmp_path / 'missing'}", "--out",
                 str(tmp_path / "z")]) != 0
    assert "no such run folder" in capsys.readouterr().err
