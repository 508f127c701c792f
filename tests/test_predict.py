"""`mtfap predict` and `mtfap.analyze` on real photos, through detection and alignment, with the
models shipped inside the package."""

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from mtfap.cli import main

FROZEN = "celeba-dlib-frozen"


@pytest.fixture(scope="module")
def lfw_photos(shared_data):
    """Three LFW photos of two people (one face each), as uint8 arrays."""
    with zipfile.ZipFile(shared_data / "lfw" / "lfw-deepfunneled.zip") as archive:
        names = ["lfw-deepfunneled/Colin_Powell/Colin_Powell_0001.jpg",
                 "lfw-deepfunneled/Colin_Powell/Colin_Powell_0002.jpg",
                 "lfw-deepfunneled/Serena_Williams/Serena_Williams_0001.jpg"]
        return [np.asarray(Image.open(io.BytesIO(archive.read(n))).convert("RGB")) for n in names]


@pytest.fixture(scope="module")
def analyzer():
    from mtfap.applications.analyze import Analyzer
    return Analyzer(FROZEN, keep_aligned=True, workers=1)


def _save(array, path, **options):
    Image.fromarray(array).save(path, **options)
    return path


def test_a_photo_of_two_faces_gives_two_records_largest_first(lfw_photos, tmp_path, capsys):
    big = np.asarray(Image.fromarray(lfw_photos[0]).resize((250, 250)))
    pair = np.zeros((250, 400, 3), np.uint8)
    pair[:, :250] = big
    pair[62:187, 275:400] = lfw_photos[2]
    photo = _save(pair, tmp_path / "two.png")
    assert main(["predict", str(photo), "--model", FROZEN, "--format", "json",
                 "--out", str(tmp_path / "out.json"), "--no-progress"]) == 0
    records = json.loads((tmp_path / "out.json").read_text())["faces"]
    assert [r["face"] for r in records] == [0, 1]
    width = [r["box"][2] - r["box"][0] for r in records]
    assert width[0] > width[1]
    assert records[0]["box"][2] < 260 and records[1]["box"][0] > 240  # left face, then right


def test_json_records_keep_the_documented_schema(lfw_photos, tmp_path):
    photo = _save(lfw_photos[2], tmp_path / "serena.jpg")
    assert main(["predict", str(photo), "--model", FROZEN, "--format", "jsonl",
                 "--out", str(tmp_path / "out.jsonl")]) == 0
    (record,) = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert set(record) == {"schema", "file", "face", "box", "score", "detector", "landmarks",
                           "probabilities", "decisions", "model", "model_version"}
    assert record["schema"] == "mtfap.predict/1" and record["model"] == FROZEN
    assert len(record["probabilities"]) == len(record["decisions"]) == 40
    assert len(record["landmarks"]) == 5 and len(record["box"]) == 4
    assert all(0 <= p <= 1 for p in record["probabilities"].values())
    assert record["decisions"]["Male"] == (record["probabilities"]["Male"] >= 0.5)
    assert record["probabilities"]["Male"] < 0.5  # Serena Williams


def test_a_photo_without_a_face_gives_none_and_says_so(tmp_path, capsys):
    blank = _save(np.full((120, 160, 3), 200, np.uint8), tmp_path / "wall.png")
    assert main(["predict", str(blank), "--model", FROZEN]) == 0
    assert "wall.png: no face found" in capsys.readouterr().out


def test_an_exif_rotated_photo_gives_the_upright_result(lfw_photos, tmp_path, analyzer):
    upright = analyzer.analyze_image(lfw_photos[0]).faces[0]
    # Stored turned a quarter to the left, with the EXIF tag that tells viewers to turn it a
    # quarter to the right; lossless, so only the orientation differs.
    turned = Image.fromarray(lfw_photos[0]).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    path = tmp_path / "turned.png"
    turned.save(path, exif=exif)
    again = analyzer.analyze_image(path).faces[0]
    np.testing.assert_allclose(again.landmarks, upright.landmarks, atol=0.5)
    np.testing.assert_allclose(again.probabilities, upright.probabilities, atol=1e-4)
    # Without the tag the same pixels are a turned face: the tag is what makes them agree.
    turned.save(tmp_path / "untagged.png")
    sideways = analyzer.analyze_image(tmp_path / "untagged.png").faces
    assert not sideways or np.abs(sideways[0].landmarks - upright.landmarks).max() > 10


def test_a_sideways_photo_without_exif_gives_the_upright_result(lfw_photos, tmp_path, analyzer,
                                                                capsys):
    upright = analyzer.analyze_image(lfw_photos[0]).faces[0]
    path = _save(np.ascontiguousarray(np.rot90(lfw_photos[0], 1)), tmp_path / "sideways.png")
    face = analyzer.analyze_image(path).faces[0]
    assert face.detector == "hog"  # found in the photo turned back
    np.testing.assert_allclose(face.probabilities, upright.probabilities, atol=1e-3)
    # --upright skips that search: the CNN's face, if any, is upright in the photo's frame.
    assert main(["predict", str(path), "--model", FROZEN, "--upright", "--format", "json",
                 "--out", str(tmp_path / "out.json"), "--no-progress"]) == 0
    records = json.loads((tmp_path / "out.json").read_text())["faces"]
    assert all(r["detector"] != "hog" for r in records)


def test_bad_files_get_one_line_each_and_the_rest_are_predicted(lfw_photos, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    _save(lfw_photos[1], folder / "good.jpg")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.png").write_text("not an image")
    good = (folder / "good.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    assert main(["predict", str(folder), "--model", FROZEN, "--format", "csv",
                 "--out", str(tmp_path / "out.csv")]) == 0
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    named = {name for name in ("empty.jpg", "notes.png", "truncated.jpg")
             if any(name in line for line in errors)}
    assert named == {"empty.jpg", "notes.png", "truncated.jpg"} and len(errors) == 3
    assert "Traceback" not in "".join(errors)
    rows = (tmp_path / "out.csv").read_text().splitlines()
    good_rows = [r for r in rows if r.startswith(str(folder / "good.jpg"))]
    assert len(good_rows) == 1 and len(good_rows[0].split(",")) == 9 + 40
    # Nothing readable at all: a non-zero exit.
    assert main(["predict", str(folder / "empty.jpg"), "--model", FROZEN]) == 1


def test_aligned_input_skips_detection(celeba_dir, tmp_path):
    with zipfile.ZipFile(celeba_dir / "img_align_celeba.zip") as archive:
        data = archive.read("img_align_celeba/000001.jpg")
    path = tmp_path / "000001.jpg"
    path.write_bytes(data)
    from mtfap.applications.analyze import analyze
    (face,) = analyze(path, FROZEN, aligned=True)
    assert face.detector == "aligned" and face.index == 0
    assert face.probability("Male") < 0.5  # CelebA's image 1 is a woman


def test_results_convert_to_a_dataframe(lfw_photos):
    from mtfap.applications.analyze import analyze, to_frame
    faces = analyze(lfw_photos[0], FROZEN)
    frame = to_frame(faces)
    assert len(frame) == 1 and "Smiling" in frame.columns and frame.loc[0, "face"] == 0


def test_annotate_and_maps_are_written(lfw_photos, tmp_path):
    photo = _save(lfw_photos[0], tmp_path / "colin.jpg")
    assert main(["predict", str(photo), "--model", FROZEN, "--annotate", str(tmp_path / "ann"),
                 "--cam", "Smiling", "--format", "json", "--out", str(tmp_path / "o.json")]) == 0
    written = sorted(p.name for p in (tmp_path / "ann").iterdir())
    assert written == ["colin.annotated.jpg", "colin.hirescam.Smiling.jpg"]
    assert Image.open(tmp_path / "ann" / "colin.annotated.jpg").size[0] >= 125


def test_shipped_models_load_match_their_hash_and_reproduce_their_card(celeba_dir):
    from mtfap.experiments.card import check_sample
    from mtfap.model import load_model
    from mtfap.model.shipped import describe_shipped
    rows = describe_shipped()
    assert FROZEN in {row["name"] for row in rows}
    for row in rows:
        predictor = load_model(row["name"])
        assert predictor.template is not None and len(predictor.attributes) == 40
        expected = row["card"].get("sample_mean_accuracy")
        assert expected is not None, f"{row['name']}: run `mtfap card --save` to record its card"
        check_sample(predictor, celeba_dir, expected)


def test_a_weights_file_that_does_not_match_its_hash_is_refused(tmp_path):
    import shutil

    from mtfap.errors import DataError
    from mtfap.model import load_model
    from mtfap.model.shipped import shipped_models
    copy = tmp_path / "model"
    shutil.copytree(shipped_models()[FROZEN], copy)
    weights = copy / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(DataError, match="SHA-256"):
        load_model(copy)


def test_evaluate_scores_a_model_on_labelled_photos_through_detection(lfw_photos, tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    rows = ["image,Male"]
    for i, (photo, male) in enumerate(zip(lfw_photos, (1, 1, 0))):
        _save(photo, folder / f"p{i}.jpg")
        rows.append(f"p{i}.jpg,{male}")
    _save(np.full((90, 90, 3), 128, np.uint8), folder / "wall.jpg")  # no face: left out
    rows.append("wall.jpg,0")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    assert main(["evaluate", FROZEN, "--data", str(folder / "labels.csv"), "--detect",
                 "--bootstrap", "0", "--out", str(tmp_path / "eval"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "no face in 1 photos" in out and "4 images" in out
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["table"]["Male"]["n_known"] == 3
    assert metrics["table"]["Male"]["accuracy"] == pytest.approx(100.0)


def test_models_lists_each_shipped_model_with_its_card(capsys):
    from mtfap.model.shipped import describe_shipped, shipped_models
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for row in describe_shipped():
        line = next(line for line in lines if line.startswith(row["name"]))
        card = row["card"]
        assert f"CelebA test mean accuracy {card['test_mean_accuracy']:.2f} %" in line
        fairface = card.get("fairface")
        if fairface:
            assert f"FairFace Male {100 * fairface['all']['male_accuracy']:.1f} %" in line
            assert ("held-out half" in line) == (fairface.get("part") == "test")
    assert sum("(default)" in line for line in lines) == 1
    assert main(["models", "--json"]) == 0
    assert {row["name"] for row in json.loads(capsys.readouterr().out)} == set(shipped_models())
