"""CelebA reader: official layout from a folder or a zip, and every kind of bad input."""

import numpy as np
import pytest
from data_factory import make_celeba, replace_line

from mtfap.attributes import CELEBA_ATTRIBUTES
from mtfap.data import DataError, ProblemLog, least_frequent_attributes, read_celeba, scarce_labels
from mtfap.data.tables import _scan_whitespace_table, read_whitespace_table


@pytest.mark.parametrize("as_zip", [True, False])
def test_reads_labels_splits_and_identities(tmp_path, as_zip):
    truth = make_celeba(tmp_path, as_zip=as_zip)
    data = read_celeba(tmp_path)
    assert data.keys == [f"img_align_celeba/{n}" for n in truth["names"]]
    assert data.attributes == list(CELEBA_ATTRIBUTES)
    np.testing.assert_array_equal(data.labels, truth["labels"])  # -1/1 became 0/1
    assert data.mask.all()
    np.testing.assert_array_equal(data.identities, truth["identities"])
    np.testing.assert_array_equal(data.split, truth["split"])
    assert data.source.is_zip == as_zip
    assert data.source.load(data.keys[0]).size == (12, 14)


def test_zip_and_folder_give_the_same_keys(tmp_path):
    make_celeba(tmp_path / "z", as_zip=True)
    make_celeba(tmp_path / "f", as_zip=False)
    assert read_celeba(tmp_path / "z").keys == read_celeba(tmp_path / "f").keys


def test_official_subfolders(tmp_path):
    make_celeba(tmp_path)
    for name, sub in [("list_attr_celeba.txt", "Anno"), ("identity_CelebA.txt", "Anno"),
                      ("list_eval_partition.txt", "Eval"), ("img_align_celeba.zip", "Img")]:
        (tmp_path / sub).mkdir(exist_ok=True)
        (tmp_path / name).rename(tmp_path / sub / name)
    assert len(read_celeba(tmp_path)) == 12


def test_attribute_subset_by_name(tmp_path):
    truth = make_celeba(tmp_path)
    data = read_celeba(tmp_path, attributes=["Smiling", "Male"])
    assert data.attributes == ["Smiling", "Male"]
    cols = [CELEBA_ATTRIBUTES.index("Smiling"), CELEBA_ATTRIBUTES.index("Male")]
    np.testing.assert_array_equal(data.labels, truth["labels"][:, cols])


def test_unknown_attribute_suggests_the_closest(tmp_path):
    make_celeba(tmp_path)
    with pytest.raises(ValueError, match="Did you mean 'Eyeglasses'"):
        read_celeba(tmp_path, attributes=["Eyeglases"])


def test_unofficial_attribute_names_are_read_with_a_warning(tmp_path):
    make_celeba(tmp_path)
    names = list(CELEBA_ATTRIBUTES)
    names[31] = "Smilling"
    replace_line(tmp_path / "list_attr_celeba.txt", 2, " ".join(names))
    with pytest.warns(UserWarning, match=r":2: 1 attribute names are not CelebA's official ones: "
                                         r"Smilling \(did you mean Smiling\?\)"):
        assert read_celeba(tmp_path).attributes[31] == "Smilling"


def test_optional_partition_and_identity_files(tmp_path):
    make_celeba(tmp_path)
    (tmp_path / "list_eval_partition.txt").unlink()
    (tmp_path / "identity_CelebA.txt").unlink()
    with pytest.warns(UserWarning) as caught:
        data = read_celeba(tmp_path)
    assert sorted(str(w.message).split(": ")[1] for w in caught) == [
        "no identity_CelebA.txt; the dataset will have no identity",
        "no list_eval_partition.txt; the dataset will have no split"]
    assert data.split is None and data.identities is None


def test_missing_files(tmp_path):
    with pytest.raises(DataError, match="CelebA folder not found"):
        read_celeba(tmp_path / "nowhere")
    with pytest.raises(DataError, match="no list_attr_celeba.txt") as err:
        read_celeba(tmp_path)
    assert err.value.path == tmp_path
    make_celeba(tmp_path)
    (tmp_path / "img_align_celeba.zip").unlink()
    with pytest.raises(DataError, match="no img_align_celeba/ folder or img_align_celeba.zip"):
        read_celeba(tmp_path)


def test_label_row_without_image(tmp_path):
    make_celeba(tmp_path)
    attr = tmp_path / "list_attr_celeba.txt"
    replace_line(attr, 5, "999999.jpg" + " -1" * 40)
    with pytest.raises(DataError, match=r"1 rows name images that are not in .*999999.jpg \(line 5\)") as err:
        read_celeba(tmp_path)
    assert err.value.path == attr and err.value.line == 5


def test_image_without_label_row(tmp_path):
    make_celeba(tmp_path)
    replace_line(tmp_path / "list_attr_celeba.txt", 1, "11")
    replace_line(tmp_path / "list_attr_celeba.txt", 4, None)  # the row of 000003.jpg
    with pytest.raises(DataError, match=r"1 images have no row in list_attr_celeba.txt: "
                                        r"img_align_celeba/000003.jpg") as err:
        read_celeba(tmp_path)
    assert err.value.path == tmp_path / "img_align_celeba.zip"


def test_duplicate_rows_name_both_lines(tmp_path):
    make_celeba(tmp_path)
    attr = tmp_path / "list_attr_celeba.txt"
    replace_line(attr, 6, "000001.jpg" + " -1" * 40)
    with pytest.raises(DataError, match=r"1 duplicate rows: 000001.jpg \(lines 3 and 6\)"):
        read_celeba(tmp_path)


@pytest.mark.parametrize("fields", [39, 41])
def test_wrong_column_count_names_the_line(tmp_path, fields):
    make_celeba(tmp_path)
    attr = tmp_path / "list_attr_celeba.txt"
    replace_line(attr, 7, "000009.jpg" + " 1" * fields)
    with pytest.raises(DataError, match=f"expected 41 fields .*found {fields + 1}") as err:
        read_celeba(tmp_path)
    assert (err.value.path, err.value.line) == (attr, 7)


@pytest.mark.parametrize("bad", ["2", "yes", "0"])
def test_bad_value_names_file_line_and_column(tmp_path, bad):
    make_celeba(tmp_path)
    attr = tmp_path / "list_attr_celeba.txt"
    replace_line(attr, 4, "000003.jpg" + " 1" * 31 + f" {bad}" + " 1" * 8)
    with pytest.raises(DataError, match=f"bad value '{bad}' in column 33 \\(Smiling\\); expected -1 or 1") as err:
        read_celeba(tmp_path)
    assert (err.value.path, err.value.line) == (attr, 4)
    assert str(err.value).startswith(f"{attr}:4: ")


def test_header_problems(tmp_path):
    make_celeba(tmp_path)
    attr = tmp_path / "list_attr_celeba.txt"
    replace_line(attr, 1, "13")
    with pytest.raises(DataError, match="line 1 says 13 images but the file has 12"):
        read_celeba(tmp_path)
    replace_line(attr, 1, "many")
    with pytest.raises(DataError, match="line 1 should be the number of images"):
        read_celeba(tmp_path)
    replace_line(attr, 1, "12")
    replace_line(attr, 2, "Smiling Smiling" + " Male" * 38)
    with pytest.raises(DataError, match="attribute names repeated: Male, Smiling"):
        read_celeba(tmp_path)


def test_partition_must_cover_the_same_images(tmp_path):
    make_celeba(tmp_path)
    part = tmp_path / "list_eval_partition.txt"
    replace_line(part, 2, None)
    with pytest.raises(DataError, match="1 images of list_attr_celeba.txt have no split: 000003.jpg"):
        read_celeba(tmp_path)
    make_celeba(tmp_path)
    replace_line(part, 2, "000003.jpg 5")
    with pytest.raises(DataError, match="bad value '5' in column 2 \\(split\\); expected 0 or 1 or 2"):
        read_celeba(tmp_path)


def test_collecting_log_reports_every_problem_and_keeps_good_rows(tmp_path):
    make_celeba(tmp_path)
    attr = tmp_path / "list_attr_celeba.txt"
    replace_line(attr, 4, "000003.jpg" + " 1" * 39 + " yes")
    replace_line(attr, 6, "000007.jpg" + " 1" * 12)
    replace_line(attr, 8, "777777.jpg" + " 1" * 40)
    log = ProblemLog(strict=False)
    data = read_celeba(tmp_path, log=log)
    text = [str(p) for p in log.problems]
    assert any(":4: bad value 'yes' in column 41 (Young)" in t for t in text)
    assert any(":6: expected 41 fields" in t for t in text)
    assert any("777777.jpg (line 8)" in t for t in text)
    # Line 8 was the row of 000011.jpg; the images of the bad lines 4 and 6 are not reported again.
    assert any("1 images have no row in list_attr_celeba.txt: img_align_celeba/000011.jpg" in t for t in text)
    assert len(log.problems) == 4
    assert len(data) == 9 and "img_align_celeba/000003.jpg" not in data.keys


def test_fast_and_line_by_line_parsers_agree(tmp_path):
    make_celeba(tmp_path, n=30, seed=3)
    path = tmp_path / "list_attr_celeba.txt"
    fast = read_whitespace_table(path, list(CELEBA_ATTRIBUTES), skip_lines=2, allowed=(-1, 1))
    slow = _scan_whitespace_table(path, list(CELEBA_ATTRIBUTES), 2, (-1, 1), ProblemLog())
    assert fast.names == slow.names
    np.testing.assert_array_equal(fast.values, slow.values)
    np.testing.assert_array_equal(fast.lines, slow.lines)


@pytest.fixture(scope="module")
def shared_celeba(celeba_dir):
    return read_celeba(celeba_dir)


@pytest.mark.data
def test_shared_celeba_subset(shared_celeba):
    data = shared_celeba
    assert len(data) == 46715
    assert np.bincount(data.split).tolist() == [37540, 4535, 4640]
    assert len(np.unique(data.identities)) == 9343
    assert data.attributes == list(CELEBA_ATTRIBUTES)
    assert data.keys[0] == "img_align_celeba/000001.jpg"
    # The official partition is identity-disjoint.
    parts = {}
    for person, part in zip(data.identities, data.split):
        parts.setdefault(person, set()).add(part)
    assert max(len(p) for p in parts.values()) == 1
    # Male is 44.5 % of this subset (counted from the label file: -1/1 became 0/1).
    assert abs(data.labels[:, CELEBA_ATTRIBUTES.index("Male")].mean() - 0.445) < 0.001


@pytest.mark.data
def test_shared_celeba_rare_attributes_and_scarce_labels(shared_celeba):
    data = shared_celeba
    rare = least_frequent_attributes(data, 30)
    train = data.get_split("train")
    rate = train.labels.mean(axis=0)
    rarity = np.minimum(rate, 1 - rate)
    # The ten left out are the most balanced ones on the train split.
    left_out = set(CELEBA_ATTRIBUTES) - set(rare)
    assert len(left_out) == 10
    assert min(rarity[CELEBA_ATTRIBUTES.index(a)] for a in left_out) >= max(
        rarity[CELEBA_ATTRIBUTES.index(a)] for a in rare)
    assert {"Bald", "Mustache", "Gray_Hair"} <= set(rare) and "Attractive" in left_out
    scarce = scarce_labels(data, 0.05, attributes=rare, seed=0, split="train")
    for name in rare:
        j = CELEBA_ATTRIBUTES.index(name)
        kept = scarce.mask[data.split == 0, j].sum()
        assert abs(kept - 0.05 * 37540) <= 2  # rounding per class
    assert scarce.mask[data.split != 0].all()


def test_zip_without_the_top_folder_or_with_other_files(tmp_path):
    import zipfile
    truth = make_celeba(tmp_path)
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("list_attr_celeba.txt", "list_eval_partition.txt", "identity_CelebA.txt"):
        (flat / name).write_bytes((tmp_path / name).read_bytes())
    with zipfile.ZipFile(tmp_path / "img_align_celeba.zip") as src, \
            zipfile.ZipFile(flat / "img_align_celeba.zip", "w") as dst:
        for member in src.namelist():
            dst.writestr(member.split("/")[-1], src.read(member))
    assert read_celeba(flat).keys == truth["names"]
    with zipfile.ZipFile(tmp_path / "img_align_celeba.zip", "a") as archive:
        archive.writestr("img_celeba/000001.jpg", b"in-the-wild image")
        archive.writestr("__MACOSX/img_align_celeba/._000001.jpg", b"metadata")
    assert read_celeba(tmp_path).keys == [f"img_align_celeba/{n}" for n in truth["names"]]
