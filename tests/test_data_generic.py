"""Image folder or zip + CSV/TSV table: missing labels, identities, splits and bad input."""

import numpy as np
import pytest
from data_factory import jpeg_bytes, make_table_dataset, write_images, write_lines

from mtfap.data import DataError, ProblemLog, open_dataset, read_table_dataset

ROWS = ["a.jpg,ann,1,0", "b.jpg,ann,,0", "c.jpg,bob,0,1", "d.jpg,cy,1,"]


def test_labels_mask_and_identities(tmp_path):
    images, table = make_table_dataset(tmp_path, ROWS)
    data = read_table_dataset(images, table)
    assert data.keys == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert data.attributes == ["Smiling", "Male"]
    np.testing.assert_array_equal(data.mask, [[1, 1], [0, 1], [1, 1], [1, 0]])
    np.testing.assert_array_equal(data.labels[data.mask], [1, 0, 0, 0, 1, 1])
    assert data.meta["identity_names"] == ["ann", "bob", "cy"]
    assert data.identities.tolist() == [0, 0, 1, 2]
    assert data.split is None


def test_minus_one_negatives_tabs_and_split_column(tmp_path):
    rows = ["a.jpg\t-1\ttrain", "b.jpg\t1\tval", "c.jpg\t\ttest", "d.jpg\t-1\t2"]
    images, table = make_table_dataset(tmp_path, rows, header="image\tSmiling\tsplit",
                                       table_name="labels.tsv")
    data = read_table_dataset(images, table)
    assert data.identities is None
    assert data.split.tolist() == [0, 1, 2, 2]
    assert data.labels[:, 0].tolist()[:2] == [0, 1] and data.mask[:, 0].tolist() == [True, True, False, True]


def test_zip_with_top_folder_and_attribute_choice(tmp_path):
    images, table = make_table_dataset(tmp_path, ROWS, as_zip=True,
                                       image_names=[f"photos/{c}.jpg" for c in "abcd"])
    data = read_table_dataset(images, table, attributes=["Male"])
    assert data.keys == [f"photos/{c}.jpg" for c in "abcd"]
    assert data.attributes == ["Male"]
    with pytest.raises(ValueError, match="Did you mean 'Smiling'"):
        read_table_dataset(images, table, attributes=["smilling"])


def test_open_dataset_finds_the_table(tmp_path):
    write_images(tmp_path, {f"photos/{c}.jpg": jpeg_bytes() for c in "abcd"}, as_zip=False)
    table = write_lines(tmp_path / "labels.csv", ["image,Smiling", *[f"photos/{c}.jpg,1" for c in "abcd"]])
    # Names in the table are relative to its folder, which is where the images default to.
    assert open_dataset(table).keys == [f"photos/{c}.jpg" for c in "abcd"]
    assert len(open_dataset(tmp_path)) == 4  # the one table in the folder
    assert open_dataset(tmp_path / "photos", table=table, images=tmp_path).attributes == ["Smiling"]


def test_bad_label_values_name_line_and_column(tmp_path):
    images, table = make_table_dataset(tmp_path, ["a.jpg,ann,1,0", "b.jpg,ann,yes,0", "c.jpg,bob,2,1"])
    with pytest.raises(DataError, match="bad label 'yes' in column 'Smiling'") as err:
        read_table_dataset(images, table)
    assert (err.value.path, err.value.line) == (table, 3)
    log = ProblemLog(strict=False)
    read_table_dataset(images, table, log=log)
    assert [(p.line, p.message.split(";")[0]) for p in log.problems] == [
        (3, "bad label 'yes' in column 'Smiling'"), (4, "bad label '2' in column 'Smiling'")]


def test_zero_and_minus_one_together_are_ambiguous(tmp_path):
    images, table = make_table_dataset(tmp_path, ["a.jpg,ann,1,0", "b.jpg,ann,-1,0"])
    with pytest.raises(DataError, match="uses both 0 and -1"):
        read_table_dataset(images, table)


def test_wrong_cell_count_names_the_line(tmp_path):
    images, table = make_table_dataset(tmp_path, ["a.jpg,ann,1,0", "b.jpg,ann,1", "c.jpg,bob,1,0,1"])
    log = ProblemLog(strict=False)
    data = read_table_dataset(images, table, log=log)
    assert [(p.line, p.message) for p in log.problems] == [
        (3, "expected 4 cells (one per header column), found 3"),
        (4, "expected 4 cells (one per header column), found 5")]
    assert data.keys == ["a.jpg"]  # b and c are not reported again as images without rows


def test_rows_and_images_must_match(tmp_path):
    images, table = make_table_dataset(tmp_path, ROWS, image_names=["a.jpg", "b.jpg", "c.jpg", "e.jpg"])
    log = ProblemLog(strict=False)
    read_table_dataset(images, table, log=log)
    assert [str(p) for p in log.problems] == [
        f"{table}:5: 1 rows name images that are not in {images}: d.jpg (line 5) "
        "(check the image folder or zip and the names in the table)",
        f"{images}: 1 images have no row in labels.csv: e.jpg (add a row for each image "
        "(leave the cells empty when labels are unknown) or remove the images)"]


def test_duplicate_rows(tmp_path):
    images, table = make_table_dataset(tmp_path, [*ROWS, "b.jpg,ann,1,1"])
    with pytest.raises(DataError, match=r"1 duplicate rows: b.jpg \(lines 3 and 6\)"):
        read_table_dataset(images, table)


def test_header_and_column_problems(tmp_path):
    images, table = make_table_dataset(tmp_path, ["a.jpg,1"], header="file,Smiling")
    with pytest.raises(DataError, match="the first column is 'file', expected the image column 'image'"):
        read_table_dataset(images, table)
    assert len(read_table_dataset(images, table, image_column="file")) == 1
    with pytest.raises(DataError, match="no identity column 'person'"):
        read_table_dataset(images, table, identity_column="person", image_column="file")
    images, table = make_table_dataset(tmp_path, ["a.jpg,1,1"], header="image,Smiling,Smiling")
    with pytest.raises(DataError, match="column names repeated in the header: Smiling"):
        read_table_dataset(images, table)


def test_bad_split_and_empty_identity(tmp_path):
    images, table = make_table_dataset(tmp_path, ["a.jpg,ann,train,1", "b.jpg,,holdout,0"],
                                       header="image,identity,split,Smiling")
    log = ProblemLog(strict=False)
    read_table_dataset(images, table, log=log)
    assert [(p.line, p.message.split(";")[0]) for p in log.problems] == [
        (3, "empty identity in column 'identity'"), (3, "bad split 'holdout' in column 'split'")]


def test_missing_files(tmp_path):
    images, table = make_table_dataset(tmp_path, ROWS)
    with pytest.raises(DataError, match="file not found"):
        read_table_dataset(images, tmp_path / "nope.csv")
    with pytest.raises(DataError, match="image folder or zip not found"):
        read_table_dataset(tmp_path / "nope", table)
    with pytest.raises(DataError, match="cannot tell which dataset this is"):
        open_dataset(images)


def test_open_dataset_without_path_is_the_synthetic_data(monkeypatch, tmp_path):
    import mtfap.data.synthetic as synthetic
    calls = []
    monkeypatch.setattr(synthetic, "load_synthetic", lambda **kw: calls.append(kw) or "faces")
    assert open_dataset(None, n=10) == "faces"
    assert open_dataset("synthetic", seed=3) == "faces"
    assert calls == [{"n": 10}, {"seed": 3}]
    with pytest.raises(ValueError, match="no dataset path given"):
        open_dataset("")
