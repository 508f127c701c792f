"""Finding faces in a photo: detection, landmarks and, for tight face crops that the detector
misses, a fallback that fits the landmarks on the frame itself."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from mtfap.data.decode import as_rgb_array
from mtfap.faces.detect import (Detection, FaceDetector, HogDetector, make_detector, turn_box,
                                turn_points)
from mtfap.faces.landmarks import LandmarkModel, to_five_points

# Where the HOG detector boxes a face that fills the frame: on the 358 of the first 500
# FairFace crops (128 px, the face filling the frame) it finds, the box is (8, 8, 112, 112) in
# dlib's pixels for most, i.e. a square of 0.82 of the side whose centre lies at 0.473 of it.
CROP_BOX_SIDE = 0.82
CROP_BOX_CENTRE = 0.473
# Plausible 5-point geometry of a face filling the frame, from the same 358 faces (1st-99th
# percentiles, widened): inter-ocular distance (eye centres) 0.29-0.41 of the shorter side;
# nose 0.48-1.09 inter-ocular distances below the eye line; nose 0.26-0.77 of the way from the
# left eye to the right one; eye line within 11 degrees of level.
CROP_EYE_DISTANCE = (0.22, 0.5)
CROP_NOSE_DROP = (0.4, 1.3)
CROP_NOSE_BETWEEN_EYES = (0.15, 0.85)
CROP_MAX_ROLL_DEGREES = 30.0
# The shape predictor always returns a face-like shape, so geometry alone also passes turned
# heads and profiles with misplaced points. The fallback face must also be confirmed by the
# HOG detector at a lowered threshold, on the photo scaled to 128 px (where this was measured)
# with a quarter of the side of replicated edge around it (the room HOG's window needs).
# Measured on the 137 of the first 500 FairFace crops that HOG (upsample 1) misses, against
# landmarks fitted on the CNN detector's box (on detected faces these agree with the HOG-box
# ones to a median 0.9% of the eye distance): geometry alone accepts 112, 62% of them within 0.1
# eye distance of the reference; with this check 39, 90% of them within it.
CROP_CHECK_SIDE = 128
CROP_CHECK_PADDING = 0.25
CROP_CHECK_THRESHOLD = -0.5
CROP_CHECK_OVERLAP = 0.5


@dataclass
class Face:
    """A face found in a photo.

    index : rank by size, 0 for the largest.
    box : (left, top, right, bottom) in photo pixels.
    score : the detector's score (NaN for the crop fallback).
    detector : "hog", "cnn" (which detector found it), or "crop" (the photo is the face; see
        :class:`FaceFinder`).
    landmarks : float (P, 2), (x, y) in photo pixels.
    """

    index: int
    box: tuple[float, float, float, float]
    score: float
    detector: str
    landmarks: np.ndarray


class FaceFinder:
    """Detects faces and fits their landmarks, largest face first.

    Parameters
    ----------
    detector : "auto" (default: HOG, then HOG on the photo turned sideways and upside down,
        then the CNN, each only where the one before found nothing), "hog"
        (fast; misses about a quarter of tight crops and turned heads), "cnn" (turned faces;
        ~50x slower than HOG), or a detector.
    landmarks : 5 (default; CC0 model) or 68 points.
    upsample : the detector's upsampling (1 finds faces down to ~30 pixels across); used
        when ``detector`` is a name.
    turns : with ``detector="auto"``, look for faces in sideways and upside-down photos
        (:class:`~mtfap.faces.detect.CascadeDetector`) before running the CNN.
    crop_fallback : when nothing is detected, try the whole photo as one face crop. Many
        photos are crops already (ID photos, the output of another detector, FairFace): the
        face fills the frame, and the HOG detector, whose window needs some margin around a
        face, misses about a quarter of them (137 of the first 500 FairFace crops). The
        landmarks are then fitted on the rectangle where the HOG detector puts such faces and
        kept only if they are plausible for a face filling the frame (:func:`plausible_crop`)
        and the HOG detector confirms a face there at a lowered threshold (39 of the 137);
        such faces have ``detector="crop"`` and a NaN score.

    Threads and processes: one finder can serve several threads (each thread gets its own
    dlib detector, loaded on first use; the landmark model is shared, as dlib allows) and can
    be pickled to worker processes, which load their own models.

    Examples
    --------
    >>> FaceFinder().find(np.zeros((100, 100, 3), np.uint8))
    []
    """

    def __init__(self, detector: str | FaceDetector = "auto", landmarks: int = 5,
                 upsample: int = 1, crop_fallback: bool = True, turns: bool = True):
        options = {"upsample": upsample, **({"turns": turns} if detector == "auto" else {})}
        self.detector = (make_detector(detector, **options)
                         if isinstance(detector, str) else detector)
        self.landmark_model = LandmarkModel(landmarks)
        self.crop_fallback = bool(crop_fallback)
        self._crop_checker = HogDetector(upsample=0, threshold=CROP_CHECK_THRESHOLD, min_side=0)

    def find(self, image, *, largest_only: bool = False) -> list[Face]:
        """The faces in ``image`` (uint8 RGB array or PIL image), largest first."""
        image = as_rgb_array(image)
        detections = self.detector.detect(image)
        if largest_only:
            detections = detections[:1]
        faces = [Face(index, d.box, d.score, d.detector, self._landmarks(image, d))
                 for index, d in enumerate(detections)]
        if not faces and self.crop_fallback:
            crop = self._crop_face(image)
            faces = [crop] if crop is not None else []
        return faces

    def _landmarks(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        """The landmarks of a detected face, in ``image``'s pixels; a face found in the photo
        turned (``detection.turn``) has them fitted there, where it stands upright."""
        if not detection.turn:
            return self.landmark_model(image, detection.box)
        height, width = image.shape[:2]
        turned = np.ascontiguousarray(np.rot90(image, detection.turn))
        points = self.landmark_model(turned, turn_box(detection.box, detection.turn, width,
                                                      height))
        return turn_points(points, -detection.turn, width, height)

    def _crop_face(self, image: np.ndarray) -> Face | None:
        height, width = image.shape[:2]
        box = crop_box(width, height)
        points = self.landmark_model(image, box)
        if not (plausible_crop(points, width, height) and self._hog_confirms_crop(image)):
            return None
        return Face(0, box, math.nan, "crop", points)

    def _hog_confirms_crop(self, image: np.ndarray) -> bool:
        """Whether the HOG detector, at a lowered threshold and with room around the photo,
        finds a face where :func:`crop_box` puts it (see :data:`CROP_CHECK_THRESHOLD`)."""
        height, width = image.shape[:2]
        scale = CROP_CHECK_SIDE / min(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
        pad = round(CROP_CHECK_PADDING * CROP_CHECK_SIDE)
        padded = np.pad(small, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        expected = np.array(crop_box(*size)) + pad
        return any(box_overlap(found.box, expected) >= CROP_CHECK_OVERLAP
                   for found in self._crop_checker.detect(padded))

    def __repr__(self) -> str:
        return (f"FaceFinder(detector={self.detector!r}, landmarks={self.landmark_model.points}, "
                f"crop_fallback={self.crop_fallback})")


def crop_box(width: int, height: int) -> tuple[float, float, float, float]:
    """The box (left, top, right, bottom) of a face filling a ``width`` x ``height`` photo, as
    the HOG detector would put it (see :data:`CROP_BOX_SIDE`)."""
    side = CROP_BOX_SIDE * min(width, height)
    # in pixel-edge units the centre is at CROP_BOX_CENTRE of the side; pixel centres: - 0.5
    centre_x, centre_y = CROP_BOX_CENTRE * width - 0.5, CROP_BOX_CENTRE * height - 0.5
    return (centre_x - side / 2, centre_y - side / 2, centre_x + side / 2, centre_y + side / 2)


def plausible_crop(points, width: int, height: int) -> bool:
    """Whether landmarks fitted on :func:`crop_box` look like a face filling the frame.

    Every point inside the photo; the eye corners in order from left to right; the eyes a
    sensible distance apart for a face of this size; the nose below the eyes and between them;
    the eye line not steeper than :data:`CROP_MAX_ROLL_DEGREES`.
    """
    five = to_five_points(points)
    inside = ((five >= -0.5) & (five <= np.array([width - 0.5, height - 0.5]))).all()
    right_eye, left_eye, nose = five[:2].mean(axis=0), five[2:4].mean(axis=0), five[4]
    ordered = five[2, 0] < five[3, 0] < five[1, 0] < five[0, 0]
    eye_line = right_eye - left_eye
    distance = float(np.hypot(*eye_line))
    if not (inside and ordered and distance > 0):
        return False
    unit = eye_line / distance
    along = float(np.dot(nose - left_eye, unit)) / distance
    drop = float(unit[0] * (nose - left_eye)[1] - unit[1] * (nose - left_eye)[0]) / distance
    roll = math.degrees(math.atan2(eye_line[1], eye_line[0]))
    return (CROP_EYE_DISTANCE[0] <= distance / min(width, height) <= CROP_EYE_DISTANCE[1]
            and CROP_NOSE_DROP[0] <= drop <= CROP_NOSE_DROP[1]
            and CROP_NOSE_BETWEEN_EYES[0] <= along <= CROP_NOSE_BETWEEN_EYES[1]
            and abs(roll) <= CROP_MAX_ROLL_DEGREES)


def box_overlap(first, second) -> float:
    """Intersection over union of two boxes (left, top, right, bottom)."""
    left, top = max(first[0], second[0]), max(first[1], second[1])
    right, bottom = min(first[2], second[2]), min(first[3], second[3])
    inter = max(0.0, right - left) * max(0.0, bottom - top)
    union = ((first[2] - first[0]) * (first[3] - first[1])
             + (second[2] - second[0]) * (second[3] - second[1]) - inter)
    return inter / union if union > 0 else 0.0
