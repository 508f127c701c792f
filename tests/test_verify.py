"""``mtfap verify``: two photos in, one person or not, on real LFW photos."""

import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from mtfap.applications.verifier import SiameseVerifier, save_verifier
from mtfap.applications.verify import DLIB_THRESHOLD, FaceVerifier
from mtfap.cli import main
from mtfap.errors import DataError

SAME = ("Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "Aaron_Peirsol/Aaron_Peirsol_0002.jpg")
OTHER = "Abdullah_Gul/Abdullah_Gul_0001.jpg"


@pytest.fixture(scope="module")
def photos(lfw_dir, tmp_path_factory):
    """The LFW photos of the tests as files, as a user would give them."""
    folder = tmp_path_factory.mktemp("photos")
    out = {}
    with zipfile.ZipFile(lfw_dir / "lfw-deepfunneled.zip") as archive:
        for key in (*SAME, OTHER):
            out[key] = folder / key.split("/")[1]
            out[key].write_bytes(archive.read(f"lfw-deepfunneled/{key}"))
    return out


@pytest.fixture(scope="module")
def dlib_verifier():
    return FaceVerifier()


def test_mtfap_verify_says_two_photos_of_one_lfw_person_are_one_person(photos, capsys):
    assert main(["verify", str(photos[SAME[0]]), str(photos[SAME[1]])]) == 0
    out = capsys.readouterr().out
    assert "decision   same person" in out
    assert f"threshold  {DLIB_THRESHOLD:.4f}  (dlib's rule for its descriptor)" in out
    line = next(line for line in out.splitlines() if line.startswith("distance"))
    distance = float(line.split()[1])
    assert 0 < distance < DLIB_THRESHOLD


def test_mtfap_verify_says_two_lfw_people_are_different_people(photos, capsys):
    assert main(["verify", str(photos[SAME[0]]), str(photos[OTHER]), "--format", "json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["same_person"] is False
    assert record["distance"] > record["threshold"] == DLIB_THRESHOLD
    assert record["score"] == -record["distance"]
    assert [f["detector"] for f in record["faces"]] == ["hog", "hog"]


def test_the_distance_is_that_of_dlibs_descriptors_and_a_given_threshold_decides(
        photos, dlib_verifier):
    a, b = (dlib_verifier.describe(photos[k]) for k in SAME)
    distance = dlib_verifier.embedding_distance(a, b)
    assert distance == pytest.approx(np.linalg.norm(a.descriptor - b.descriptor), abs=1e-6)
    strict = FaceVerifier(threshold=distance / 2, model=dlib_verifier.analyzer.predictor)
    answer = strict.verify(photos[SAME[0]], photos[SAME[1]])
    assert answer.distance == pytest.approx(distance, abs=1e-6)
    assert not answer.same and answer.threshold_source == "given"


def test_a_siamese_verifier_file_scores_with_its_embedding_and_its_stored_threshold(
        photos, dlib_verifier, tmp_path):
    torch.manual_seed(0)
    model = SiameseVerifier(128, embedding_dim=16, hidden_dim=0)
    model.threshold = -0.5   # stored on the score, -distance
    model.meta = {"inputs": {"descriptor": "dlib", "attribute_model": None,
                             "attribute_columns": None}}
    save_verifier(model, tmp_path / "siamese")
    verifier = FaceVerifier(tmp_path / "siamese")
    assert verifier.threshold == 0.5
    assert verifier.threshold_source == "chosen on CelebA validation pairs"
    a, b = (dlib_verifier.describe(photos[k]) for k in (SAME[0], OTHER))
    x = torch.from_numpy(np.stack([a.descriptor, b.descriptor]))
    expected = torch.linalg.vector_norm(model.embed(x[:1]) - model.embed(x[1:])).item()
    assert verifier.embedding_distance(a, b) == pytest.approx(expected, abs=1e-5)


def test_a_verifier_that_reads_attributes_must_name_its_attribute_model(tmp_path):
    model = SiameseVerifier(128 + 2, embedding_dim=8, hidden_dim=0)
    model.threshold = -0.5
    model.meta = {"inputs": {"descriptor": "dlib", "attribute_model": None,
                             "attribute_columns": ["Male", "Big_Nose"]}}
    save_verifier(model, tmp_path / "with_attributes")
    with pytest.raises(DataError, match="does not name its attribute model"):
        FaceVerifier(tmp_path / "with_attributes")


def test_a_photo_without_a_face_is_a_one_line_error(photos, tmp_path, capsys):
    blank = tmp_path / "wall.png"
    Image.new("RGB", (120, 120), (128, 128, 128)).save(blank)
    assert main(["verify", str(photos[SAME[0]]), str(blank)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mtfap verify: error: ") and "no face found" in err
    assert "\n" not in err
    assert main(["verify", str(tmp_path / "missing.jpg"), str(blank)]) == 2
    assert "missing.jpg: no such photo" in capsys.readouterr().err
