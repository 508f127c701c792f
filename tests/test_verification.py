"""Face verification (Sec. 5.6): pair lists, 10-fold protocol, ROC metrics, Siamese verifier."""

import json
import math

import numpy as np
import pytest
import torch

from mtfap.applications.verifier import (
    INVARIANT_ATTRIBUTES,
    SiameseVerifier,
    attribute_matching_loss,
    contrastive_loss,
    invariant_attributes,
    load_verifier,
    sample_pairs,
    save_verifier,
    score_pairs,
    train_verifier,
    verifier_inputs,
)
from mtfap.attributes import CELEBA_ATTRIBUTES
from mtfap.data import read_celeba, read_lfw_pairs
from mtfap.data.dataset import FaceDataset
from mtfap.errors import DataError
from mtfap.evaluation.verification import (
    VerificationPairs,
    best_threshold,
    celeba_test_pairs,
    equal_error_rate,
    load_pairs,
    paired_difference,
    plot_roc,
    roc,
    save_pairs,
    tar_at_far,
    ten_fold_accuracy,
)


def _protocol_scores(n_folds=10, per_class=60, separation=1.0, seed=0):
    """Scores of a View 2-like design: each fold has ``per_class`` genuine and impostor pairs."""
    rng = np.random.default_rng(seed)
    folds = np.repeat(np.arange(n_folds), 2 * per_class)
    same = np.tile(np.r_[np.ones(per_class, bool), np.zeros(per_class, bool)], n_folds)
    return separation * same + rng.normal(0, 1, len(same)), same, folds


# --- pair lists -------------------------------------------------------------------------------

def test_lfw_view2_pairs_have_the_official_counts_and_survive_a_round_trip(lfw_dir, tmp_path):
    pairs = VerificationPairs.from_lfw(read_lfw_pairs(lfw_dir / "pairs.txt"))
    assert len(pairs) == 6000
    assert pairs.folds.tolist() == list(range(10))
    for f in range(10):
        in_fold = pairs.fold == f
        assert (pairs.same & in_fold).sum() == 300 and (~pairs.same & in_fold).sum() == 300
    person = lambda keys: np.array([k.split("/")[-2] for k in keys])
    np.testing.assert_array_equal(person(pairs.key1) == person(pairs.key2), pairs.same)
    assert (pairs.key1 != pairs.key2).all()

    assert load_pairs(lfw_dir).summary() == pairs.summary()   # the folder is enough
    back = load_pairs(save_pairs(pairs, tmp_path / "lfw.csv"))
    for field in ("key1", "key2", "same", "fold"):
        np.testing.assert_array_equal(getattr(back, field), getattr(pairs, field))


@pytest.fixture(scope="module")
def celeba(celeba_dir):
    return read_celeba(celeba_dir)


def test_celeba_test_pairs_are_6000_identity_disjoint_pairs_of_test_people(celeba, tmp_path):
    pairs = celeba_test_pairs(celeba)
    assert len(pairs) == 6000 and pairs.folds.tolist() == list(range(10))
    for f in range(10):
        in_fold = pairs.fold == f
        assert (pairs.same & in_fold).sum() == 300 and (~pairs.same & in_fold).sum() == 300

    row = {key: i for i, key in enumerate(celeba.keys)}
    first = np.array([row[k] for k in pairs.key1])
    second = np.array([row[k] for k in pairs.key2])
    assert (celeba.split[first] == 2).all() and (celeba.split[second] == 2).all()
    assert (first != second).all()
    np.testing.assert_array_equal(celeba.identities[first] == celeba.identities[second], pairs.same)
    rows, fold_of_row = np.r_[first, second], np.r_[pairs.fold, pairs.fold]
    people_of_fold = [set(celeba.identities[rows[fold_of_row == f]]) for f in range(10)]
    assert sum(len(p) for p in people_of_fold) == len(set().union(*people_of_fold))  # disjoint
    assert len(set(zip(pairs.key1, pairs.key2))) == 6000                             # no repeats

    again = celeba_test_pairs(celeba.subset(np.arange(len(celeba))[::-1]))   # row order is moot
    for field in ("key1", "key2", "same", "fold"):
        np.testing.assert_array_equal(getattr(again, field), getattr(pairs, field))
    other = celeba_test_pairs(celeba, seed=1)
    assert set(zip(other.key1, other.key2)) != set(zip(pairs.key1, pairs.key2))
    back = load_pairs(save_pairs(pairs, tmp_path / "celeba-test-pairs.csv"))
    assert back.name == "celeba-test-pairs"
    np.testing.assert_array_equal(back.key2, pairs.key2)
    np.testing.assert_array_equal(back.same, pairs.same)


def test_celeba_pairs_refuse_data_without_split_or_an_uneven_count():
    data = FaceDataset("toy", None, [f"{i}.jpg" for i in range(4)], ["Male"], np.zeros((4, 1)),
                       np.ones((4, 1)), identities=np.array([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="identities and a train/val/test split"):
        celeba_test_pairs(data)
    data.split = np.full(4, 2)
    with pytest.raises(ValueError, match="multiple of 2 \\* n_folds"):
        celeba_test_pairs(data, n_pairs=6001)
    with pytest.raises(ValueError, match="fold 0 has 1 test people"):
        celeba_test_pairs(data, n_pairs=4, n_folds=2)


def test_a_malformed_pairs_csv_names_its_line(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("fold,same,key1,key2\n0,1,a.jpg,b.jpg\n0,yes,a.jpg,c.jpg\n")
    with pytest.raises(DataError, match=r"pairs.csv:3: expected 'fold,same,key1,key2'"):
        load_pairs(path)
    with pytest.raises(DataError, match="pairs file not found"):
        load_pairs(tmp_path / "none.csv")


def test_pair_positions_in_a_key_list_and_missing_keys():
    pairs = VerificationPairs(["b", "a"], ["c", "c"], [False, False], [0, 1])
    first, second = pairs.index(["a", "b", "c"])
    assert first.tolist() == [1, 0] and second.tolist() == [2, 2]
    with pytest.raises(ValueError, match="1 pair images are not among the 2 keys given: c"):
        pairs.index(["a", "b"])


# --- the 10-fold protocol ---------------------------------------------------------------------

def test_fold_thresholds_are_the_best_cuts_of_the_other_folds_by_brute_force():
    scores, same, folds = _protocol_scores(seed=3)
    result = ten_fold_accuracy(scores, same, folds)
    for f in range(10):
        train, test = folds != f, folds == f
        values = np.unique(scores[train])
        cuts = np.r_[-np.inf, (values[1:] + values[:-1]) / 2, np.inf]
        correct = [np.sum((scores[train] >= c) == same[train]) for c in cuts]
        assert result.thresholds[f] == cuts[int(np.argmax(correct))]   # the lowest best cut
        assert result.accuracies[f] == np.mean((scores[test] >= result.thresholds[f]) == same[test])
    assert result.mean == pytest.approx(result.accuracies.mean())
    assert result.std == pytest.approx(np.std(result.accuracies, ddof=1))


def test_the_held_out_fold_never_moves_its_own_threshold():
    scores, same, folds = _protocol_scores(seed=4)
    clean = ten_fold_accuracy(scores, same, folds)
    rng = np.random.default_rng(0)
    others_moved = 0
    for f in range(10):
        test = folds == f
        # Fold f's labels inverted, or its scores replaced by others.
        inverted = ten_fold_accuracy(scores, np.where(test, ~same, same), folds)
        moved = ten_fold_accuracy(np.where(test, rng.normal(5, 3, len(scores)), scores), same,
                                  folds)
        for poisoned in (inverted, moved):
            assert poisoned.thresholds[f] == clean.thresholds[f]
            others_moved += not np.array_equal(np.delete(poisoned.thresholds, f),
                                               np.delete(clean.thresholds, f))
    assert others_moved == 20   # the same poison reaches every fold that trains on fold f


def test_a_shifted_held_out_fold_is_not_rescued_by_peeking():
    # Fold 0's scores are shifted by +10: its own best threshold would still separate it
    # perfectly, but the threshold learnt on folds 1-9 accepts all of it: half are impostors.
    scores, same, folds = _protocol_scores(separation=8.0, seed=5)
    scores[folds == 0] += 10
    result = ten_fold_accuracy(scores, same, folds)
    assert result.accuracies[0] == 0.5
    assert best_threshold(scores[folds == 0], same[folds == 0])[1] == 1.0   # what peeking gets
    assert (result.accuracies[1:] > 0.99).all()


# --- ROC, TAR at FAR, EER ---------------------------------------------------------------------

def test_tar_at_far_on_hand_made_scores():
    impostor = np.arange(1000) / 1000                     # 0.000 ... 0.999
    genuine = np.array([0.9995, 0.9985, 0.995, 0.9895, 0.989, 0.5])
    scores = np.r_[genuine, impostor]
    same = np.r_[np.ones(6, bool), np.zeros(1000, bool)]
    at_1e2 = tar_at_far(scores, same, 1e-2)   # 10 impostors may pass: 0.990 ... 0.999
    assert at_1e2.far == 0.01 and at_1e2.tar == 4 / 6
    assert 0.989 < at_1e2.threshold <= 0.990
    at_1e3 = tar_at_far(scores, same, 1e-3)   # 1 impostor may pass: 0.999
    assert at_1e3.far == 0.001 and at_1e3.tar == 2 / 6


def test_tar_at_far_keeps_far_under_the_target_when_impostors_tie():
    scores = np.r_[[2.0, 1.0, 0.5], [1.0, 1.0, 1.0], np.zeros(97)]
    same = np.r_[np.ones(3, bool), np.zeros(100, bool)]
    point = tar_at_far(scores, same, 0.02)   # 2 may pass, but 3 tie at 1.0: none can pass
    assert point.far == 0.0 and point.tar == 1 / 3


def test_equal_error_rate_on_hand_made_scores():
    same = np.r_[np.ones(5, bool), np.zeros(5, bool)]
    genuine = [0.6, 0.7, 0.8, 0.9, 1.0]
    assert equal_error_rate(np.r_[genuine, [0.0, 0.1, 0.2, 0.3, 0.4]], same) == 0.0
    # One impostor (0.65) above one genuine pair (0.6): at t = 0.65 FAR = FRR = 1/5.
    assert equal_error_rate(np.r_[genuine, [0.0, 0.1, 0.2, 0.3, 0.65]], same) == pytest.approx(0.2)
    assert equal_error_rate(np.zeros(10), same) == pytest.approx(0.5)   # no information


def test_roc_points_are_acceptance_rates_at_each_threshold():
    scores, same, _ = _protocol_scores(n_folds=2, seed=6)
    curve = roc(scores, same)
    for t, far, tar in zip(curve.thresholds[1:], curve.far[1:], curve.tar[1:]):
        assert far == np.mean(scores[~same] >= t) and tar == np.mean(scores[same] >= t)
    assert roc(np.r_[1.0, 0.0], [True, False]).auc == 1.0


def test_paired_difference_of_a_better_verifier_and_of_a_verifier_with_itself():
    scores, same, folds = _protocol_scores(per_class=100, separation=2.5, seed=7)
    worse = scores + np.random.default_rng(8).normal(0, 1.5, len(scores))
    result = paired_difference(scores, worse, same, folds, n_bootstrap=60, seed=1)
    assert result.metrics == ["accuracy", "tar@far=0.01", "tar@far=0.001", "eer"]
    accuracy, eer = result.difference[0], result.difference[3]
    assert accuracy > 0 and result.ci[0, 0] > 0 and eer < 0 and result.ci[3, 1] < 0
    assert accuracy == pytest.approx(ten_fold_accuracy(scores, same, folds).mean
                                     - ten_fold_accuracy(worse, same, folds).mean)
    assert result.fold_mean == pytest.approx(accuracy)   # equal-sized folds
    again = paired_difference(scores, worse, same, folds, n_bootstrap=60, seed=1)
    np.testing.assert_array_equal(again.ci, result.ci)

    itself = paired_difference(scores, scores, same, folds, n_bootstrap=20)
    assert not itself.difference.any() and not itself.ci.any() and itself.fold_std == 0


def test_roc_figure_is_written(tmp_path):
    scores, same, _ = _protocol_scores(n_folds=2, seed=9)
    written = plot_roc({"with attributes": (scores, same), "without": (scores / 2 + 0.3, same)},
                       tmp_path / "fig11_lfw", title="toy")
    assert [p.name for p in written] == ["fig11_lfw.png"] and written[0].stat().st_size > 5000


# --- the verifier: losses ---------------------------------------------------------------------

def test_contrastive_loss_is_eq_17_to_19_by_hand():
    z1 = torch.zeros(3, 2, requires_grad=True)
    z2 = torch.tensor([[3.0, 4.0], [0.3, 0.4], [3.0, 4.0]])   # distances 5, 0.5, 5
    same = torch.tensor([True, False, False])
    loss = contrastive_loss(z1, z2, same, margin=1.0)
    # genuine: 1/2 * 5^2 = 12.5; near impostor: 1/2 * (1 - 0.5)^2 = 0.125; far impostor: 0.
    assert loss.item() == pytest.approx((12.5 + 0.125 + 0.0) / 3)
    loss.backward()
    # d/dz1 of 1/2 ||z1 - z2||^2 / 3 = (z1 - z2) / 3; the far impostor gets no gradient.
    assert torch.allclose(z1.grad[0], torch.tensor([-1.0, -4 / 3]))
    assert torch.allclose(z1.grad[1], torch.tensor([0.5 * 0.6, 0.5 * 0.8]) / 3)   # (m - D) * u / 3
    assert not z1.grad[2].any()


def test_attribute_matching_loss_by_hand():
    logits1 = torch.tensor([[0.0], [2.0]])
    logits2 = torch.tensor([[math.log(3.0)], [-2.0]])        # sigma = 0.75
    p1, p2 = torch.tensor([[1.0], [0.9]]), torch.tensor([[0.5], [0.1]])
    same = torch.tensor([True, False])
    # Pair 1: q = 0.75; BCE(0, .75) = ln 2 = 0.6931472, BCE(ln 3, .75) = 0.5623351; mean 0.6277412.
    # Pair 2 is an impostor pair: nothing. Averaged over the batch of 2.
    loss = attribute_matching_loss(logits1, logits2, p1, p2, same)
    assert loss.item() == pytest.approx(0.6277412 / 2, abs=1e-6)


def test_the_attribute_term_reaches_the_model_only_through_genuine_pairs():
    torch.manual_seed(0)
    model = SiameseVerifier(6, embedding_dim=4, hidden_dim=8, n_attributes=3)
    x1, x2 = torch.randn(4, 6), torch.randn(4, 6)
    p1, p2 = torch.rand(4, 3), torch.rand(4, 3)

    def attribute_gradients(same, p2):
        model.zero_grad()
        z1, z2 = model(x1, x2)
        attribute_matching_loss(model.attribute_logits(z1), model.attribute_logits(z2),
                                p1, p2, same).backward()
        return [p.grad.clone() for p in model.projection.parameters()]

    impostors = torch.zeros(4, dtype=torch.bool)
    assert all(not g.any() for g in attribute_gradients(impostors, p2))
    mixed = torch.tensor([True, False, True, False])
    changed_impostor_targets = p2.clone()
    changed_impostor_targets[~mixed] = 1 - changed_impostor_targets[~mixed]
    with_genuine = attribute_gradients(mixed, p2)
    assert any(g.abs().sum() > 0 for g in with_genuine)      # it shapes the shared embedding
    for a, b in zip(with_genuine, attribute_gradients(mixed, changed_impostor_targets)):
        assert torch.equal(a, b)


# --- the verifier: pairs, training, files -----------------------------------------------------

def test_sampled_pairs_are_genuine_or_impostor_as_labelled():
    identities = np.repeat(np.arange(30), [1, 2, 3] * 10)[::-1]
    first, second, same = sample_pairs(identities, 1000, seed=3, genuine_fraction=0.3)
    assert same.sum() == 300
    np.testing.assert_array_equal(identities[first] == identities[second], same)
    assert (first != second).all()
    assert set(identities[first[same]]) <= set(np.flatnonzero(np.bincount(identities) >= 2))
    again = sample_pairs(identities, 1000, seed=3, genuine_fraction=0.3)
    assert all(np.array_equal(a, b) for a, b in zip(again, (first, second, same)))
    with pytest.raises(ValueError, match="at least two images"):
        sample_pairs(np.arange(5), 10, seed=0)


def _people(n_people, per_person=5, d=32, seed=0):
    """Image vectors of generated people: an 8-d identity, mixed into d dimensions, plus noise
    and a strong nuisance in 4 dimensions (pose, light) that raw distances cannot ignore."""
    rng = np.random.default_rng(seed)
    identity = rng.normal(0, 1, (n_people, 8))
    mixing = np.random.default_rng(99).normal(0, 1, (8, d)) / np.sqrt(8)
    people = np.repeat(np.arange(n_people), per_person)
    x = identity[people] @ mixing + rng.normal(0, 0.5, (len(people), d))
    x[:, :4] += rng.normal(0, 3.0, (len(people), 4))
    traits = 1 / (1 + np.exp(-3 * identity[people][:, :3]))       # per-person attributes
    attributes = np.clip(traits + rng.normal(0, 0.05, traits.shape), 0, 1)
    return x.astype(np.float32), people, attributes.astype(np.float32)


def test_the_verifier_learns_to_tell_generated_people_apart():
    x, people, _ = _people(200, seed=0)
    val_x, val_people, _ = _people(60, seed=1)
    test_x, test_people, _ = _people(100, seed=2)
    settings = {"val_inputs": val_x, "val_identities": val_people, "epochs": 3,
                "pairs_per_epoch": 6000, "val_pairs": 1000, "embedding_dim": 16, "hidden_dim": 64,
                "seed": 0}
    model, history = train_verifier(x, people, **settings)

    first, second, same = sample_pairs(test_people, 2000, seed=5)
    folds = np.arange(2000) % 10
    raw = -np.linalg.norm(test_x[first] - test_x[second], axis=1)
    scores = score_pairs(model, test_x, first, second)
    assert ten_fold_accuracy(scores, same, folds).mean > 0.9
    assert roc(scores, same).auc > roc(raw, same).auc + 0.1
    assert [h["epoch"] for h in history] == [1, 2, 3] and model.attribute_head is None
    best = max(history, key=lambda h: h["val_accuracy"])
    assert model.meta["best_epoch"] == best["epoch"] and model.threshold == best["val_threshold"]

    again, again_history = train_verifier(x, people, **settings)
    assert again_history == history
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 again.state_dict().values()))


def test_a_verifier_with_attributes_round_trips_through_safetensors(tmp_path):
    x, people, attributes = _people(80, seed=3)
    inputs = verifier_inputs(x, attributes)
    assert inputs.shape == (400, 35)
    model, history = train_verifier(inputs, people, attributes, attribute_weight=1.0,
                                    attribute_names=["Male", "Big_Nose", "Chubby"], epochs=2,
                                    pairs_per_epoch=2000, embedding_dim=8, hidden_dim=0, seed=1)
    assert all(h["attribute_loss"] > 0 for h in history) and model.attribute_head.out_features == 3
    assert math.isnan(model.threshold)          # no validation pairs: no threshold chosen

    weights, settings = save_verifier(model, tmp_path / "verifier")
    assert (weights.name, settings.name) == ("verifier.safetensors", "verifier.json")
    saved = json.loads(settings.read_text())
    assert saved["settings"] == {"input_dim": 35, "embedding_dim": 8, "hidden_dim": 0,
                                 "n_attributes": 3}
    assert saved["meta"]["attribute_names"] == ["Male", "Big_Nose", "Chubby"]
    loaded = load_verifier(weights)
    first, second, _ = sample_pairs(people, 200, seed=0)
    np.testing.assert_array_equal(score_pairs(loaded, inputs, first, second),
                                  score_pairs(model, inputs, first, second))
    assert loaded.meta == saved["meta"]


def test_verifier_files_that_do_not_fit_are_refused(tmp_path):
    model = SiameseVerifier(5, embedding_dim=3, hidden_dim=0)
    _, settings = save_verifier(model, tmp_path / "v.safetensors")
    saved = json.loads(settings.read_text())
    saved["settings"]["input_dim"] = 6
    settings.write_text(json.dumps(saved))
    with pytest.raises(DataError, match="weights do not fit the settings"):
        load_verifier(tmp_path / "v")
    settings.write_text("{}")
    with pytest.raises(DataError, match="not a verifier's settings"):
        load_verifier(settings)
    with pytest.raises(DataError, match="verifier file not found"):
        load_verifier(tmp_path / "other")
    with pytest.raises(ValueError, match="attribute_weight > 0 needs the attributes"):
        train_verifier(np.zeros((4, 5)), [0, 0, 1, 1], attribute_weight=1.0)


def test_invariant_attributes_are_celeba_names_without_expression_or_accessories():
    assert set(INVARIANT_ATTRIBUTES) <= set(CELEBA_ATTRIBUTES)
    photo_dependent = {"Smiling", "Mouth_Slightly_Open", "Eyeglasses", "Wearing_Hat"}
    assert not photo_dependent & set(INVARIANT_ATTRIBUTES)
    probabilities = np.arange(2 * 40).reshape(2, 40) / 100
    picked = invariant_attributes(probabilities, CELEBA_ATTRIBUTES, keep=["Male", "Big_Nose"])
    np.testing.assert_array_equal(picked, probabilities[:, [20, 7]])
    with pytest.raises(ValueError, match="Did you mean 'Big_Nose'"):
        invariant_attributes(probabilities, CELEBA_ATTRIBUTES, keep=["Big_Nos"])
