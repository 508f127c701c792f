"""Image decoding checks, check_dataset, and the ``mtfap data info`` / ``check`` commands."""

import json

import numpy as np
import pytest
from data_factory import jpeg_bytes, make_celeba, make_lfw, make_table_dataset, replace_line

from mtfap.cli import main
from mtfap.data import DataError, check_dataset, check_images, open_dataset

BAD_IMAGES = {"truncated": jpeg_bytes(1)[: len(jpeg_bytes(1)) // 2], "garbage": b"not a jpeg at all"}


def _celeba_with_bad_images(tmp_path):
    make_celeba(tmp_path, as_zip=False)
    (tmp_path / "img_align_celeba" / "000003.jpg").write_bytes(BAD_IMAGES["truncated"])
    (tmp_path / "img_align_celeba" / "000009.jpg").write_bytes(BAD_IMAGES["garbage"])
    return open_dataset(tmp_path)


def test_check_images_fails_with_the_path(tmp_path):
    data = _celeba_with_bad_images(tmp_path)
    with pytest.raises(DataError, match="cannot decode image 'img_align_celeba/000003.jpg'") as err:
        check_images(data, progress=False)
    assert err.value.path == tmp_path and "--skip-bad-images" in str(err.value)


def test_check_images_can_skip_with_a_counted_warning(tmp_path):
    data = _celeba_with_bad_images(tmp_path)
    with pytest.warns(UserWarning, match="skipped 2 of 12 images that cannot be decoded: "
                                         "img_align_celeba/000003.jpg, img_align_celeba/000009.jpg"):
        kept = check_images(data, skip_bad_images=True, progress=False)
    assert len(kept) == 10 and "img_align_celeba/000009.jpg" not in kept.keys
    assert kept.labels.shape == (10, 40)


def test_check_dataset_lists_every_problem(tmp_path):
    make_celeba(tmp_path)
    replace_line(tmp_path / "list_attr_celeba.txt", 4, "000003.jpg" + " 1" * 39 + " 2")
    replace_line(tmp_path / "list_eval_partition.txt", 5, "000009.jpg train")
    report = check_dataset(tmp_path)
    assert not report.ok
    assert [(p.path.name, p.line) for p in report.problems] == [
        ("list_attr_celeba.txt", 4), ("list_eval_partition.txt", 5)]


def test_check_dataset_warns_about_people_in_two_splits(tmp_path):
    make_celeba(tmp_path)
    replace_line(tmp_path / "list_eval_partition.txt", 1, "000001.jpg 2")  # its twin is in train
    report = check_dataset(tmp_path)
    assert report.ok
    assert any("1 identities appear in more than one of train, val, test" in w for w in report.warnings)


def test_check_dataset_decode(tmp_path):
    _celeba_with_bad_images(tmp_path)
    report = check_dataset(tmp_path, decode=True, progress=False)
    assert [p.message.split(":")[0] for p in report.problems] == [
        "cannot decode image 'img_align_celeba/000003.jpg'", "cannot decode image 'img_align_celeba/000009.jpg'"]
    report = check_dataset(tmp_path, decode=True, skip_bad_images=True, progress=False)
    assert report.ok and len(report.dataset) == 10
    assert any("skipped 2 of 12 images" in w for w in report.warnings)


def test_cli_info_table_and_json(tmp_path, capsys):
    images, table = make_table_dataset(tmp_path, ["a.jpg,ann,1,0", "b.jpg,ann,,0", "c.jpg,bob,0,"])
    assert main(["data", "info", str(table)]) == 0
    out = capsys.readouterr().out
    assert "images      3 from" in out and "identities  2" in out and "splits      none" in out
    assert "Smiling      50.0 %         2         1" in out
    assert main(["data", "info", str(tmp_path), "--attributes", "Male", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["images"] == 3 and info["identities"] == 2
    assert info["attributes"] == [{"name": "Male", "positive_rate": 0.0, "positives": 0, "known": 2, "missing": 1}]


def test_cli_info_lfw_pairs(tmp_path, capsys):
    make_lfw(tmp_path)
    assert main(["data", "info", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "pairs       8 in 2 folds (4 matched)" in captured.out
    assert "warning: " in captured.err and "in both gender lists" in captured.err


def test_cli_check_exit_codes(tmp_path, capsys):
    make_celeba(tmp_path, as_zip=False)
    assert main(["data", "check", str(tmp_path), "--decode"]) == 0
    assert "OK: no problems found (images decoded)" in capsys.readouterr().out
    (tmp_path / "img_align_celeba" / "000005.jpg").write_bytes(BAD_IMAGES["truncated"])
    replace_line(tmp_path / "list_attr_celeba.txt", 3, "000001.jpg" + " 1" * 40 + " 1")
    assert main(["data", "check", str(tmp_path), "--decode"]) == 1
    out = capsys.readouterr().out
    assert "list_attr_celeba.txt:3: expected 41 fields" in out
    assert "cannot decode image 'img_align_celeba/000005.jpg'" in out
    assert "FAILED: 2 problems" in out
    assert main(["data", "check", str(tmp_path), "--decode", "--skip-bad-images", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [p["line"] for p in report["problems"]] == [3]
    assert any("skipped 1 of 11 images" in w for w in report["warnings"])


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"mtfap data: error: {tmp_path / 'missing'}: dataset not found (check the path)"
    make_celeba(tmp_path)
    assert main(["data", "info", str(tmp_path), "--attributes", "Smilling"]) == 2
    assert "Did you mean 'Smiling'?" in capsys.readouterr().err


@pytest.mark.data
def test_cli_info_on_shared_celeba(celeba_dir, capsys):
    assert main(["data", "info", str(celeba_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["images"] == 46715
    assert info["splits"] == {"train": 37540, "val": 4535, "test": 4640}
    assert info["identities"] == 9343
    assert len(info["attributes"]) == 40 and all(a["missing"] == 0 for a in info["attributes"])
    assert np.isclose(sum(a["positives"] for a in info["attributes"] if a["name"] == "Male") / 46715, 0.445, atol=1e-3)


def test_cli_check_caps_the_listing_but_counts_everything(tmp_path, capsys):
    make_celeba(tmp_path)
    for line in (3, 4, 5):
        replace_line(tmp_path / "list_attr_celeba.txt", line, "000001.jpg 1")
    assert main(["data", "check", str(tmp_path), "--max-problems", "1"]) == 1
    out = capsys.readouterr().out
    assert out.count("problem: ") == 1
    # Three bad lines, and the images of lines 4 and 5 (000003, 000005) now have no row.
    assert "... and 3 more problems (see --max-problems)" in out and "FAILED: 4 problems" in out
