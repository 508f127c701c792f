"""LFW reader: identities from folders, gender as a masked attribute, View 2 pairs."""

import numpy as np
import pytest
from data_factory import LFW_PEOPLE, make_lfw, replace_line

from mtfap.data import DataError, ProblemLog, identity_disjoint_split, read_lfw, read_lfw_pairs


@pytest.mark.parametrize("as_zip", [True, False])
def test_reads_identities_and_gender(tmp_path, as_zip):
    make_lfw(tmp_path, as_zip=as_zip)
    with pytest.warns(UserWarning, match="1 images are in both gender lists"):
        data = read_lfw(tmp_path)
    assert len(data) == sum(LFW_PEOPLE.values()) == 8
    assert data.keys[0] == "lfw-deepfunneled/Ann_Lee/Ann_Lee_0001.jpg"
    assert data.meta["identity_names"] == sorted(LFW_PEOPLE)
    people = [data.meta["identity_names"][i] for i in data.identities]
    assert people == [k.split("/")[1] for k in data.keys]
    assert data.attributes == ["Male"]
    by_file = {k.rsplit("/", 1)[1]: (int(l), bool(m)) for k, l, m in zip(data.keys, data.labels[:, 0], data.mask[:, 0])}
    assert by_file["Ann_Lee_0002.jpg"] == (0, True)  # listed without its extension
    assert by_file["Bob_Stone_0001.jpg"] == (1, True)
    assert by_file["Dee_Ray_0002.jpg"] == (1, True)
    assert not by_file["Cy_Young_0001.jpg"][1]  # in neither list: missing, not negative
    assert not by_file["Dee_Ray_0001.jpg"][1]  # in both lists: missing
    assert data.split is None


def test_image_folder_or_zip_given_directly(tmp_path):
    make_lfw(tmp_path / "z", as_zip=True)
    make_lfw(tmp_path / "f", as_zip=False)
    with pytest.warns(UserWarning):
        from_zip = read_lfw(tmp_path / "z" / "lfw-deepfunneled.zip")
        from_folder = read_lfw(tmp_path / "f" / "lfw-deepfunneled")
    assert from_zip.keys == from_folder.keys
    assert from_zip.mask.sum() == from_folder.mask.sum() == 6


def test_without_gender_lists_every_label_is_missing(tmp_path):
    make_lfw(tmp_path)
    (tmp_path / "male_names.txt").unlink()
    (tmp_path / "female_names.txt").unlink()
    with pytest.warns(UserWarning, match="Male is missing for every image"):
        data = read_lfw(tmp_path)
    assert not data.mask.any()


def test_missing_images(tmp_path):
    with pytest.raises(DataError, match="LFW folder not found"):
        read_lfw(tmp_path / "none")
    with pytest.raises(DataError, match="no LFW images found"):
        read_lfw(tmp_path)


def test_pairs_folds_and_keys(tmp_path):
    make_lfw(tmp_path)
    pairs = read_lfw_pairs(tmp_path)
    assert pairs["fold"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert pairs["same"].tolist() == [True, True, False, False] * 2
    assert pairs[2]["key1"] == "lfw-deepfunneled/Ann_Lee/Ann_Lee_0001.jpg"
    assert pairs[2]["key2"] == "lfw-deepfunneled/Bob_Stone/Bob_Stone_0001.jpg"
    with pytest.warns(UserWarning):
        keys = set(read_lfw(tmp_path).keys)
    assert set(pairs["key1"]) | set(pairs["key2"]) <= keys


def test_pairs_file_alone_gives_person_relative_keys(tmp_path):
    make_lfw(tmp_path)
    (tmp_path / "lfw-deepfunneled.zip").unlink()
    pairs = read_lfw_pairs(tmp_path / "pairs.txt")
    assert pairs[0]["key1"] == "Ann_Lee/Ann_Lee_0001.jpg"


@pytest.mark.parametrize("line, text, message", [
    (3, "Bob_Stone\t1\tCy_Young\t1", "expected a matched pair 'Name i j' \\(3 fields\\), found 4"),
    (4, "Ann_Lee\t2\t3", "expected a mismatched pair 'Name1 i Name2 j' \\(4 fields\\), found 3"),
    (2, "Ann_Lee\t1\t9", "pair names an image that does not exist: Ann_Lee/Ann_Lee_0009.jpg"),
    (2, "Ann_Lee\tone\t2", "image numbers must be integers"),
    (1, "ten 300", "line 1 should be 'FOLDS PAIRS_PER_FOLD'"),
])
def test_pairs_bad_lines(tmp_path, line, text, message):
    make_lfw(tmp_path)
    path = tmp_path / "pairs.txt"
    replace_line(path, line, text)
    with pytest.raises(DataError, match=message) as err:
        read_lfw_pairs(path)
    assert (err.value.path, err.value.line) == (path, line)


def test_pairs_truncated_file(tmp_path):
    make_lfw(tmp_path)
    path = tmp_path / "pairs.txt"
    replace_line(path, 9, None)
    log = ProblemLog(strict=False)
    assert len(read_lfw_pairs(path, log=log)) == 7
    assert "2 folds of 2 matched and 2 mismatched pairs (8 lines), found 7" in str(log.problems[0])


@pytest.mark.data
def test_shared_lfw(lfw_dir):
    with pytest.warns(UserWarning, match="5 images are in both gender lists"):
        data = read_lfw(lfw_dir)
    assert len(data) == 13233
    assert len(np.unique(data.identities)) == len(data.meta["identity_names"]) == 5749
    # 13,233 images minus 5 in both lists and 4 in neither.
    assert data.mask.sum() == 13224
    pairs = read_lfw_pairs(lfw_dir)
    assert len(pairs) == 6000
    assert np.bincount(pairs["fold"]).tolist() == [600] * 10
    assert [int(pairs["same"][pairs["fold"] == f].sum()) for f in range(10)] == [300] * 10
    assert set(pairs["key1"]) | set(pairs["key2"]) <= set(data.keys)
    split = identity_disjoint_split(data, (0.8, 0.1, 0.1), seed=0).split
    parts_per_person = np.zeros((5749, 3), dtype=bool)
    parts_per_person[data.identities, split] = True
    assert parts_per_person.sum(axis=1).max() == 1
    # A share can miss by at most half of each of the two identities at its ends; the largest,
    # George_W_Bush, has 530 images (4 %).
    assert np.bincount(data.identities).max() == 530
    np.testing.assert_allclose(np.bincount(split) / len(data), [0.8, 0.1, 0.1], atol=0.02)


def test_images_outside_person_folders(tmp_path):
    from data_factory import jpeg_bytes, write_images
    write_images(tmp_path / "faces.zip", {"Ann_Lee/Ann_Lee_0001.jpg": jpeg_bytes(), "stray.jpg": jpeg_bytes()},
                 as_zip=True)
    with pytest.raises(DataError, match="1 images are not in a person folder: stray.jpg"):
        read_lfw(tmp_path / "faces.zip")
    log = ProblemLog(strict=False)
    assert read_lfw(tmp_path / "faces.zip", log=log).keys == ["Ann_Lee/Ann_Lee_0001.jpg"]
