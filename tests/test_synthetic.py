"""The embedded generated face dataset."""

import numpy as np
import pytest

from mtfap.attributes import CELEBA_ATTRIBUTES
from mtfap.data.synthetic import SYNTHETIC_GROUPS, load_synthetic, render_face, sample_faces


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return load_synthetic(n=300, size=32, seed=0, cache_dir=tmp_path_factory.mktemp("cache"))


def test_groups_partition_the_forty_attributes():
    names = [a for group in SYNTHETIC_GROUPS.values() for a in group]
    assert sorted(names) == sorted(CELEBA_ATTRIBUTES) and len(names) == 40


def test_dataset_shape_splits_and_identities(faces):
    assert faces.attributes == list(CELEBA_ATTRIBUTES)
    assert faces.labels.shape == (300, 40) and faces.mask.all()
    assert faces.meta["groups"] is SYNTHETIC_GROUPS
    assert set(np.unique(faces.split)) == {0, 1, 2}
    for a, b in [(0, 1), (0, 2), (1, 2)]:  # identity-disjoint
        assert not set(faces.identities[faces.split == a]) & set(faces.identities[faces.split == b])
    image = faces.source.load(faces.keys[0])
    assert image.size == (32, 32) and image.mode == "RGB"


def test_generation_is_deterministic(faces, tmp_path):
    again = load_synthetic(n=300, size=32, seed=0, cache_dir=tmp_path)
    assert faces.source.root != again.source.root
    assert faces.source.root.read_bytes() == again.source.root.read_bytes()
    np.testing.assert_array_equal(faces.labels, again.labels)
    np.testing.assert_array_equal(faces.split, again.split)
    other = load_synthetic(n=300, size=32, seed=1, cache_dir=tmp_path)
    assert not np.array_equal(other.labels, faces.labels)
    first = np.asarray(faces.source.load(faces.keys[7]))
    assert not np.array_equal(first, np.asarray(other.source.load(other.keys[7])))


def test_person_level_attributes_agree_across_a_persons_images(faces):
    person_level = SYNTHETIC_GROUPS["masculinity"] + SYNTHETIC_GROUPS["hair_colour"]
    cols = [faces.attributes.index(a) for a in person_level]
    for person in np.unique(faces.identities)[:20]:
        rows = faces.labels[faces.identities == person][:, cols]
        assert (rows == rows[0]).all()


def test_labels_follow_the_group_structure():
    labels, _, _ = sample_faces(3000, seed=0)
    matrix = np.stack([labels[a] for a in CELEBA_ATTRIBUTES], axis=1).astype(float)
    rate = matrix.mean(axis=0)
    assert rate.min() > 0.03 and rate.max() < 0.97, "every attribute has both classes"
    corr = np.abs(np.corrcoef(matrix.T))
    group = {a: g for g, names in SYNTHETIC_GROUPS.items() for a in names}
    same = np.array([[group[a] == group[b] for b in CELEBA_ATTRIBUTES] for a in CELEBA_ATTRIBUTES])
    within = corr[same & ~np.eye(40, dtype=bool)].mean()
    between = corr[~same].mean()
    assert within > 0.25 and between < 0.06 and within > 5 * between
    for name, members in SYNTHETIC_GROUPS.items():
        idx = [CELEBA_ATTRIBUTES.index(a) for a in members]
        block = corr[np.ix_(idx, idx)][~np.eye(len(idx), dtype=bool)]
        assert block.mean() > 0.2, f"group {name} is not correlated within"
    assert corr[same & ~np.eye(40, dtype=bool)].max() < 0.99, "correlated, not identical"


def test_each_attribute_is_drawn():
    # Render the same face with and without each attribute: it must change a visible patch
    # (at least 6 pixels by more than 45 grey levels summed over RGB) in most faces, so that a
    # CNN can learn it. Occlusion may hide one now and then (a moustache under a goatee's
    # shadow, hair texture on a bald head). No_Beard is drawn as the absence of facial hair.
    labels, look, _ = sample_faces(36, seed=3)
    faces = range(0, 36, 3)
    for name in CELEBA_ATTRIBUTES:
        if name == "No_Beard":
            continue
        visible = 0
        for i in faces:
            face = {k: bool(v[i]) for k, v in labels.items()}
            style = {k: v[i] for k, v in look.items()}
            with_it = dict(face, **{name: True, "Blurry": name == "Blurry"})
            if name in ("Bangs", "Receding_Hairline"):  # a bald head shows neither
                with_it["Bald"] = False
            if name == "Receding_Hairline":  # a fringe hides the hairline
                with_it["Bangs"] = False
            for exclusive in ("hair_colour", "hair_style"):  # one colour, one texture at a time
                if name in SYNTHETIC_GROUPS[exclusive] and name != "Bangs":
                    with_it.update({other: other == name for other in SYNTHETIC_GROUPS[exclusive]
                                    if other != "Bangs"})
            without = dict(with_it, **{name: False})
            a = np.asarray(render_face(with_it, style, 64), dtype=int)
            b = np.asarray(render_face(without, style, 64), dtype=int)
            visible += (np.abs(a - b).sum(axis=2) > 45).sum() >= 6
        assert visible >= 0.75 * len(faces), f"{name} is visible in only {visible} of {len(faces)} faces"
    hair = labels["5_o_Clock_Shadow"] | labels["Goatee"] | labels["Mustache"]
    assert np.array_equal(labels["No_Beard"], ~hair)


def test_the_smallest_dataset_has_all_three_splits(tmp_path):
    tiny = load_synthetic(n=15, size=16, cache_dir=tmp_path)
    assert np.bincount(tiny.split, minlength=3).tolist() == [5, 5, 5]


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="n must be"):
        load_synthetic(n=3, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="size"):
        load_synthetic(n=100, size=4, cache_dir=tmp_path)
