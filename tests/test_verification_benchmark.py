"""The verification benchmark's pipeline (mtfap.experiments.verification) on a few real images:
face codes, attributes from cached features, training on CelebA train / val, scoring pairs."""

import json
import warnings
import zipfile

import numpy as np
import pytest

from mtfap import load_model
from mtfap.applications.analyze import Analyzer
from mtfap.applications.verifier import load_verifier
from mtfap.data import ImageSource, read_celeba, read_lfw
from mtfap.data.dataset import FaceDataset
from mtfap.evaluation.verification import (
    VerificationPairs,
    celeba_test_pairs,
    load_pairs,
)
from mtfap.experiments import verification as bench
from mtfap.experiments.verification import (
    COMPARISONS,
    FaceCodes,
    VerifierSettings,
    attribute_probabilities,
    celeba_test_pair_list,
    encode_faces,
    ensure_face_codes,
    run_benchmark,
)

MODEL = "celeba-dlib-frozen"   # heads on dlib's packaged backbone: cheap to load


@pytest.fixture(scope="module")
def predictor():
    return load_model(MODEL)


@pytest.fixture(scope="module")
def lfw(lfw_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return read_lfw(lfw_dir)


@pytest.fixture(scope="module")
def mini_lfw(lfw, lfw_dir):
    """8 View 2 pairs (2 genuine + 2 impostor in each of 2 folds) and their images."""
    pairs = load_pairs(lfw_dir)
    keep = np.concatenate([np.flatnonzero((pairs.fold == f) & (pairs.same == s))[:2]
                           for f in (0, 1) for s in (True, False)])
    pairs = VerificationPairs(pairs.key1[keep], pairs.key2[keep], pairs.same[keep],
                              pairs.fold[keep], "lfw-mini")
    images = set(pairs.key1) | set(pairs.key2)
    return lfw.subset([i for i, k in enumerate(lfw.keys) if k in images]), pairs


@pytest.fixture(scope="module")
def mini_celeba(celeba_dir):
    """4 training, 3 validation and 4 test people of CelebA (5 images each) and 8 test pairs."""
    celeba = read_celeba(celeba_dir)
    rows = []
    for split, n_people in ((0, 4), (1, 3), (2, 4)):
        people = np.unique(celeba.identities[celeba.split == split])[:n_people]
        rows += np.flatnonzero(np.isin(celeba.identities, people)).tolist()
    mini = celeba.subset(np.sort(rows))
    return mini, celeba_test_pairs(mini, n_pairs=8, n_folds=2)


def test_face_codes_are_the_analyzers_descriptors_and_the_backbones_features(
        predictor, mini_lfw, tmp_path, monkeypatch):
    dataset = mini_lfw[0].subset(np.arange(4))
    codes = ensure_face_codes(dataset, predictor, tmp_path / "lfw.npz")
    analyzer = Analyzer(predictor, identity=True, largest_only=True, keep_aligned=True,
                        workers=1)
    faces = [r.faces[0] for r in analyzer.analyze_dataset(dataset)]
    np.testing.assert_allclose(codes.descriptors, [f.descriptor for f in faces], atol=1e-5)
    np.testing.assert_allclose(codes.features, predictor.features([f.aligned for f in faces]),
                               atol=1e-4)
    np.testing.assert_allclose(attribute_probabilities(codes, predictor),
                               [f.probabilities for f in faces], atol=1e-5)
    assert list(codes.detector) == ["hog"] * 4

    # The cache answers the second time; another image list is computed again.
    back = FaceCodes.load(tmp_path / "lfw.npz")
    np.testing.assert_array_equal(back.features, codes.features)
    assert back.meta["backbone_fingerprint"] == bench.backbone_fingerprint(predictor)
    with monkeypatch.context() as patch:
        patch.setattr(bench, "encode_faces",
                      lambda *a, **k: pytest.fail("the cached codes were not reused"))
        ensure_face_codes(dataset, predictor, tmp_path / "lfw.npz")
    assert len(ensure_face_codes(dataset.subset([0, 1]), predictor, tmp_path / "lfw.npz")) == 2


def test_an_image_without_a_face_gets_the_datasets_median_landmarks(
        predictor, lfw, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    keys = [k for k in lfw.keys if "/Aaron_Peirsol/" in k][:3]
    with zipfile.ZipFile(lfw.source.root) as archive:
        for key in keys:
            (folder / key.split("/")[-1]).write_bytes(archive.read(key))
    from PIL import Image
    Image.new("RGB", (125, 125), (90, 90, 90)).save(folder / "wall.jpg")
    names = [k.split("/")[-1] for k in keys] + ["wall.jpg"]
    dataset = FaceDataset("mini", ImageSource(folder), names, [], np.zeros((4, 0)),
                          np.zeros((4, 0)), identities=np.array([0, 0, 0, 1]))
    codes = encode_faces(dataset, predictor)
    assert list(codes.detector) == ["hog", "hog", "hog", "fallback"]
    np.testing.assert_allclose(codes.landmarks[3], np.median(codes.landmarks[:3], axis=0),
                               atol=1e-4)   # all photos are 125 x 125
    assert np.isfinite(codes.descriptors).all() and np.abs(codes.features[3]).sum() > 0
    assert codes.meta["detectors"] == {"fallback": 1, "hog": 3}


def test_the_shipped_celeba_pairs_are_those_celeba_test_pairs_makes(celeba_dir):
    shipped = celeba_test_pair_list()
    made = celeba_test_pairs(read_celeba(celeba_dir))
    for name in ("key1", "key2", "same", "fold"):
        np.testing.assert_array_equal(getattr(shipped, name), getattr(made, name))


def test_the_benchmark_runs_end_to_end_on_a_few_pairs(predictor, mini_lfw, mini_celeba,
                                                      tmp_path):
    settings = VerifierSettings(epochs=2, pairs_per_epoch=256, val_pairs=100, margins=(1.0,),
                                hidden_dims=(0,), attribute_weights=(0.3,),
                                attribute_inputs=("invariant",), seeds=(0, 1))
    models = {"independent": predictor, "prior_groups": predictor}
    summary = run_benchmark(*mini_lfw, *mini_celeba, models, framing=predictor,
                            codes_dir=tmp_path / "codes", out=tmp_path / "out",
                            settings=settings, n_bootstrap=20,
                            model_sources={"independent": MODEL, "prior_groups": MODEL})
    out = tmp_path / "out"
    for name in ("lfw", "celeba"):
        metrics = summary["results"][name]["metrics"]
        assert len(metrics) == 6
        dlib = metrics["dlib descriptor, Euclidean (reference)"]
        assert dlib["accuracy"] >= 75 and dlib["seeds"] == 1
        assert metrics["Siamese, no attributes"]["seeds"] == 2
        assert (out / f"{name}_metrics.md").is_file()
        assert (out / f"verification_roc_{name}.png").stat().st_size > 1000
        differences = summary["results"][name]["differences"]
        assert {d["comparison"] for d in differences} == {f"{a} - {b}" for a, b in COMPARISONS}
        # One attribute model under two names: the verifiers that read it are the same.
        same_model = [d for d in differences if d["comparison"] in (
            "siamese_prior_groups - siamese_independent", "dlib_prior_groups - dlib_independent")]
        assert len(same_model) == 8 and all(d["difference"] == 0 for d in same_model)
    assert summary["results"]["lfw"]["pairs"]["n_pairs"] == 8
    saved = json.loads((out / "results.json").read_text())
    assert saved["chosen"]["siamese_independent"]["attribute_inputs"] == "invariant"
    assert saved["fused"]["dlib_independent"]["attribute_weight"] in bench.FUSION_WEIGHTS
    verifier = load_verifier(out / "verifiers" / "siamese_prior_groups")
    assert verifier.meta["inputs"]["attribute_model"] == MODEL
    assert verifier.meta["inputs"]["attribute_columns"][0] == "Male"
    scores = np.load(out / "scores.npz")
    assert scores["lfw/dlib"].shape == (8,)


def test_celeba_pairs_of_training_people_are_refused(predictor, mini_lfw, mini_celeba,
                                                     tmp_path):
    celeba = mini_celeba[0]
    train_keys = np.asarray(celeba.keys)[celeba.split == 0]
    leaky = VerificationPairs(train_keys[:2], train_keys[2:4], [True, False], [0, 1])
    with pytest.raises(ValueError, match="outside CelebA's test split"):
        run_benchmark(*mini_lfw, celeba, leaky, {}, framing=predictor,
                      codes_dir=tmp_path / "codes", out=tmp_path / "out")


def test_the_fused_score_is_dlibs_distance_plus_the_weighted_attribute_disagreement():
    descriptors = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    p = np.array([[0.9, 0.1], [0.1, 0.1], [0.9, 0.3]])
    scores = bench.fused_scores(descriptors, p, [0, 0], [1, 2], weight=0.5)
    np.testing.assert_allclose(scores, [-(5 + 0.5 * 0.4), -(1 + 0.5 * 0.1)])


def test_fusion_keeps_weight_zero_when_attributes_do_not_help():
    rng = np.random.default_rng(0)
    same = np.r_[np.ones(200, bool), np.zeros(200, bool)]
    # Pair i is (2i, 2i+1); descriptors separate the people, the attributes are noise.
    descriptors = rng.normal(0, 0.05, (800, 4))
    descriptors[1::2] += np.where(same, 0.0, 1.0)[:, None]
    noise = rng.uniform(0, 1, (800, 3))
    fused = bench.tune_fusion("x", descriptors, noise, np.arange(0, 800, 2),
                              np.arange(1, 800, 2), same)
    assert fused.weight == 0.0 and fused.val_accuracy == 1.0
    assert [t["attribute_weight"] for t in fused.tried] == list(bench.FUSION_WEIGHTS)
