import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from mtfap.evaluation.metrics import evaluate_predictions, tune_thresholds
from mtfap.io import markdown_table, write_json, write_table


def _random_problem(n=600, k=5, seed=0, missing=0.3):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, k)) < np.linspace(0.05, 0.6, k)).astype(np.uint8)
    noise = rng.normal(0, 0.25, (n, k))
    scores = np.clip(0.5 * labels + 0.25 + noise, 0, 1)
    mask = rng.random((n, k)) > missing
    return scores, labels, mask


def test_point_estimates_match_sklearn_on_known_labels():
    scores, labels, mask = _random_problem()
    result = evaluate_predictions(scores, labels, mask, n_bootstrap=0)
    for j in range(labels.shape[1]):
        y, p = labels[mask[:, j], j], scores[mask[:, j], j] >= 0.5
        assert result.accuracy[j] == pytest.approx(accuracy_score(y, p))
        assert result.balanced_accuracy[j] == pytest.approx(balanced_accuracy_score(y, p))
        assert result.positive_rate_true[j] == pytest.approx(y.mean())
        assert result.positive_rate_predicted[j] == pytest.approx(p.mean())
        assert result.n_known[j] == mask[:, j].sum()
    assert result.mean_accuracy == pytest.approx(result.accuracy.mean())


def test_missing_labels_count_for_nothing():
    scores, labels, mask = _random_problem(seed=1)
    flipped = np.where(mask, labels, 1 - labels)   # change only the unknown labels
    a = evaluate_predictions(scores, labels, mask, n_bootstrap=50, seed=3)
    b = evaluate_predictions(scores, flipped, mask, n_bootstrap=50, seed=3)
    np.testing.assert_array_equal(a.accuracy, b.accuracy)
    np.testing.assert_array_equal(a.ci_accuracy, b.ci_accuracy)


def test_attribute_without_known_labels_is_nan_and_left_out_of_the_mean():
    scores, labels, mask = _random_problem(k=3)
    mask[:, 1] = False
    result = evaluate_predictions(scores, labels, mask, n_bootstrap=20)
    assert np.isnan(result.accuracy[1]) and np.isnan(result.ci_accuracy[1]).all()
    assert result.mean_accuracy == pytest.approx(np.mean(result.accuracy[[0, 2]]))
    json.dumps(result.to_dict())  # NaN must become null, not break JSON


def test_image_bootstrap_interval_matches_the_binomial_width():
    rng = np.random.default_rng(0)
    n, p = 2000, 0.8
    labels = np.ones((n, 1), np.uint8)
    scores = (rng.random((n, 1)) < p).astype(float)  # correct with probability p
    result = evaluate_predictions(scores, labels, n_bootstrap=2000, seed=0)
    acc = result.accuracy[0]
    expected_width = 2 * 1.96 * np.sqrt(acc * (1 - acc) / n)
    width = np.diff(result.ci_accuracy[0])[0]
    assert width == pytest.approx(expected_width, rel=0.15)
    assert result.ci_accuracy[0, 0] < acc < result.ci_accuracy[0, 1]
    assert result.bootstrap_unit == "image" and result.n_units == n


def test_identity_bootstrap_widens_for_correlated_images():
    # 400 identities x 5 images; an identity is either all right or all wrong, so the
    # effective sample size is 400, not 2000, and the interval is about sqrt(5) wider.
    rng = np.random.default_rng(1)
    identities = np.repeat(np.arange(400), 5)
    right = np.repeat(rng.random(400) < 0.7, 5)
    labels = np.ones((2000, 2), np.uint8)
    scores = np.c_[right, right].astype(float)
    by_image = evaluate_predictions(scores, labels, n_bootstrap=2000, seed=0)
    by_identity = evaluate_predictions(scores, labels, identities=identities, n_bootstrap=2000,
                                       seed=0)
    ratio = np.diff(by_identity.ci_mean_accuracy)[0] / np.diff(by_image.ci_mean_accuracy)[0]
    assert 1.8 < ratio < 2.8
    assert by_identity.bootstrap_unit == "identity" and by_identity.n_units == 400
    np.testing.assert_array_equal(by_image.accuracy, by_identity.accuracy)


def test_bootstrap_is_seeded():
    scores, labels, mask = _random_problem(seed=2)
    ids = np.arange(len(scores)) // 3
    a = evaluate_predictions(scores, labels, mask, identities=ids, n_bootstrap=100, seed=7)
    b = evaluate_predictions(scores, labels, mask, identities=ids, n_bootstrap=100, seed=7)
    c = evaluate_predictions(scores, labels, mask, identities=ids, n_bootstrap=100, seed=8)
    np.testing.assert_array_equal(a.ci_balanced_accuracy, b.ci_balanced_accuracy)
    assert not np.array_equal(a.ci_accuracy, c.ci_accuracy)


def test_tuned_thresholds_reach_the_best_accuracy_of_any_threshold():
    scores, labels, mask = _random_problem(n=300, seed=4)
    scores = scores * 0.6  # miscalibrated: 0.5 is a poor cut
    thresholds = tune_thresholds(scores, labels, mask)
    tuned = evaluate_predictions(scores, labels, mask, thresholds=thresholds, n_bootstrap=0)
    default = evaluate_predictions(scores, labels, mask, n_bootstrap=0)
    for j in range(labels.shape[1]):
        s, y = scores[mask[:, j], j], labels[mask[:, j], j].astype(bool)
        brute = max(np.mean((s >= t) == y) for t in np.r_[s, np.inf])
        assert tuned.accuracy[j] == pytest.approx(brute)
        assert tuned.accuracy[j] >= default.accuracy[j]
    assert tuned.mean_accuracy > default.mean_accuracy


def test_threshold_of_an_attribute_without_labels_stays_half():
    scores, labels, mask = _random_problem(k=2)
    mask[:, 0] = False
    assert tune_thresholds(scores, labels, mask)[0] == 0.5


def test_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match="labels shape"):
        evaluate_predictions(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="identities"):
        evaluate_predictions(np.zeros((4, 2)), np.zeros((4, 2)), identities=np.arange(3))


def test_tables_are_written_in_three_formats(tmp_path):
    scores, labels, mask = _random_problem(k=3)
    result = evaluate_predictions(scores, labels, mask, attributes=["a", "b", "c"],
                                  n_bootstrap=10)
    paths = write_table(tmp_path / "metrics", result.to_frame(), extra=result.summary())
    assert json.loads(paths["json"].read_text())["table"]["b"]["n_known"] == mask[:, 1].sum()
    assert paths["csv"].read_text().splitlines()[0].startswith("attribute,accuracy")
    markdown = paths["md"].read_text()
    assert markdown.splitlines()[1].startswith("| --- | ---:")
    assert f"{100 * result.accuracy[2]:.2f}" in markdown
    assert markdown_table(result.to_frame().iloc[:0]).count("\n") == 2
    write_json(tmp_path / "x.json", {"v": np.float32(1.5), "nan": float("nan")})
    assert json.loads((tmp_path / "x.json").read_text()) == {"v": 1.5, "nan": None}
    assert not list(tmp_path.glob(".*tmp"))


def test_paired_difference_is_the_difference_of_accuracies_with_an_interval_of_the_pairs():
    from mtfap.evaluation.metrics import paired_accuracy_difference
    scores, labels, mask = _random_problem(n=800, k=4, seed=3)
    rng = np.random.default_rng(4)
    identities = rng.integers(0, 120, len(scores))
    # b: a's scores with a tenth of the rows spoiled (flipped): a is better, b shares a's errors
    spoiled = scores.copy()
    rows = rng.random(len(scores)) < 0.1
    spoiled[rows] = 1 - spoiled[rows]
    diff = paired_accuracy_difference(scores, spoiled, labels, mask, identities=identities,
                                      n_bootstrap=400, seed=1)
    a = evaluate_predictions(scores, labels, mask, identities=identities, n_bootstrap=400)
    b = evaluate_predictions(spoiled, labels, mask, identities=identities, n_bootstrap=400)
    np.testing.assert_allclose(diff.difference, a.accuracy - b.accuracy)
    assert diff.mean_difference == pytest.approx(a.mean_accuracy - b.mean_accuracy)
    assert diff.bootstrap_unit == "identity" and diff.n_units == len(np.unique(identities))
    low, high = diff.ci_mean_difference
    assert 0 < low < diff.mean_difference < high
    # pairing: the interval of the difference is narrower than the two intervals side by side
    assert high - low < (a.ci_mean_accuracy[1] - a.ci_mean_accuracy[0]) + \
        (b.ci_mean_accuracy[1] - b.ci_mean_accuracy[0])
    # the same model against itself: no difference, in every replicate
    same = paired_accuracy_difference(scores, scores, labels, mask, identities=identities,
                                      n_bootstrap=50)
    assert same.mean_difference == 0 and np.all(same.ci_mean_difference == 0)


def test_paired_difference_replicates_are_explicit_identity_resamples():
    """Each replicate equals scoring both models on the images of the drawn identities, every
    identity as often as it was drawn."""
    from mtfap.evaluation.metrics import paired_accuracy_difference
    scores, labels, mask = _random_problem(n=120, k=3, seed=5, missing=0.2)
    other, _, _ = _random_problem(n=120, k=3, seed=6, missing=0.2)
    identities = np.repeat(np.arange(30), 4)
    diff = paired_accuracy_difference(scores, other, labels, mask, identities=identities,
                                      n_bootstrap=200, seed=9)
    weights = np.random.default_rng(9).multinomial(30, np.full(30, 1 / 30), size=200)
    replicates = []
    for w in weights:
        rows = np.concatenate([np.flatnonzero(identities == u) for u in np.repeat(np.arange(30), w)])
        acc = [evaluate_predictions(s[rows], labels[rows], mask[rows], n_bootstrap=0).accuracy
               for s in (scores, other)]
        replicates.append(np.nanmean(acc[0] - acc[1]))
    np.testing.assert_allclose(diff.ci_mean_difference, np.percentile(replicates, [2.5, 97.5]))
