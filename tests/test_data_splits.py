"""Identity-disjoint splits, scarce labels and the rarest-attribute rule."""

import numpy as np
import pytest

from mtfap.data import FaceDataset, ImageSource, identity_disjoint_split, least_frequent_attributes, scarce_labels


def make_dataset(tmp_path, n=2000, k=4, people=300, seed=0, split=True):
    rng = np.random.default_rng(seed)
    identities = rng.integers(0, people, n)
    rates = np.array([0.5, 0.1, 0.97, 0.3])[:k]
    labels = (rng.random((n, k)) < rates).astype(np.uint8)
    mask = rng.random((n, k)) < 0.9
    return FaceDataset(name="toy", source=ImageSource(tmp_path), keys=[f"{i}.jpg" for i in range(n)],
                       attributes=["Even", "Rare", "Common", "Some"][:k], labels=labels, mask=mask,
                       identities=identities,
                       split=(np.arange(n) % 10 >= 8).astype(np.int8) if split else None)


def test_identity_disjoint_split(tmp_path):
    data = make_dataset(tmp_path, split=False)
    split = identity_disjoint_split(data, (0.7, 0.2, 0.1), seed=1).split
    for person in np.unique(data.identities):
        assert len(np.unique(split[data.identities == person])) == 1
    shares = np.bincount(split, minlength=3) / len(data)
    # Within a few identities' worth of images (about 7 images each here).
    np.testing.assert_allclose(shares, [0.7, 0.2, 0.1], atol=0.02)
    assert identity_disjoint_split(data, (0.7, 0.2, 0.1), seed=1).split.tolist() == split.tolist()
    assert identity_disjoint_split(data, (0.7, 0.2, 0.1), seed=2).split.tolist() != split.tolist()
    assert data.split is None  # the input is not modified


def test_split_ratios_are_checked_and_zero_shares_work(tmp_path):
    data = make_dataset(tmp_path, split=False)
    with pytest.raises(ValueError, match="sum to 1"):
        identity_disjoint_split(data, (0.8, 0.1))
    with pytest.raises(ValueError, match="sum to 1"):
        identity_disjoint_split(data, (0.8, 0.3, -0.1))
    split = identity_disjoint_split(data, (0.8, 0.0, 0.2)).split
    assert set(np.unique(split)) == {0, 2}


def test_split_without_identities_warns(tmp_path):
    data = make_dataset(tmp_path, split=False)
    data.identities = None
    with pytest.warns(UserWarning, match="no identities"):
        split = identity_disjoint_split(data, (0.5, 0.25, 0.25)).split
    np.testing.assert_allclose(np.bincount(split) / len(data), [0.5, 0.25, 0.25], atol=0.001)


def test_scarce_labels_keeps_the_fraction_per_class(tmp_path):
    data = make_dataset(tmp_path)
    scarce = scarce_labels(data, 0.1, attributes=["Even", "Rare"], seed=0)
    for j in (0, 1):
        for value in (0, 1):
            before = (data.mask[:, j] & (data.labels[:, j] == value)).sum()
            after = (scarce.mask[:, j] & (scarce.labels[:, j] == value)).sum()
            assert after == max(1, round(0.1 * before))
    np.testing.assert_array_equal(scarce.mask[:, 2:], data.mask[:, 2:])  # others untouched
    assert not (scarce.mask & ~data.mask).any()  # never reveals a missing label
    np.testing.assert_array_equal(scarce.labels, data.labels)  # hidden, not turned negative
    assert scarce.meta["scarce_labels"]["fraction"] == 0.1
    again = scarce_labels(data, 0.1, attributes=["Even", "Rare"], seed=0)
    np.testing.assert_array_equal(again.mask, scarce.mask)


def test_scarce_labels_on_one_split_and_bad_fraction(tmp_path):
    data = make_dataset(tmp_path)
    scarce = scarce_labels(data, 0.0, split="train")
    train = data.split == 0
    assert not scarce.mask[train].any()
    np.testing.assert_array_equal(scarce.mask[~train], data.mask[~train])
    with pytest.raises(ValueError, match="fraction must be in"):
        scarce_labels(data, 1.5)
    with pytest.raises(ValueError, match="Did you mean 'Rare'"):
        scarce_labels(data, 0.5, attributes=["rar"])


def test_least_frequent_attributes(tmp_path):
    data = make_dataset(tmp_path)
    # Positive rates about 0.5, 0.1, 0.97, 0.3: by min(p, 1 - p), Common (0.03) is the rarest.
    assert least_frequent_attributes(data, 4) == ["Common", "Rare", "Some", "Even"]
    assert least_frequent_attributes(data, 2) == ["Common", "Rare"]
    # The rule uses the train split only: make Even rare there and frequent elsewhere.
    train = data.split == 0
    data.labels[train, 0] = 0
    data.labels[~train, 0] = 1
    assert least_frequent_attributes(data, 1) == ["Even"]
    assert least_frequent_attributes(data, 1, split=None) != ["Even"]
    with pytest.raises(ValueError, match="count must be between 1 and 4"):
        least_frequent_attributes(data, 5)


def test_fairface_halves_split_every_cell_in_two_and_hold_out_the_demo_photos(fairface_dir):
    from collections import Counter

    from mtfap.data.fairface import DEMO_PHOTOS, fairface_halves, read_fairface

    photos = read_fairface(fairface_dir)
    halves = fairface_halves(photos)
    assert set(np.unique(halves.split)) == {0, 2}
    def cell(key):
        return tuple(photos.meta["groups"][key][g] for g in ("race", "gender", "age"))

    everyone = Counter(cell(k) for k in photos.keys)
    trained = Counter(cell(k) for k, s in zip(photos.keys, halves.split) if s == 0)
    for name, count in everyone.items():  # half of each cell (rounded), demo photos aside
        assert abs(trained[name] - count / 2) <= 1 + sum(cell(k) == name for k in DEMO_PHOTOS)
    assert all(halves.split[photos.keys.index(k)] == 2 for k in DEMO_PHOTOS)
    assert fairface_halves(photos).split.tolist() == halves.split.tolist()  # the same draw
    assert fairface_halves(photos, seed=1).split.tolist() != halves.split.tolist()
    test = halves.get_split("test")
    assert set(test.keys) <= set(test.meta["groups"])  # the groups follow the photos
    with pytest.raises(ValueError, match="train_fraction"):
        fairface_halves(photos, train_fraction=1.0)
