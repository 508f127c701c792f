"""Facial landmarks with dlib's shape predictors: 5 points (default, CC0) or 68 (iBUG 300-W,
non-commercial).

dlib's 5-point layout, in order: the outer and inner corner of the eye on the image's right,
the outer and inner corner of the eye on the image's left, the bottom of the nose between the
nostrils. These are points 45, 42, 36, 39 and 33 of the 68-point layout (measured on 358
FairFace faces: the two models agree on them within 2.9 pixels RMS at 128 px, mean offset
under 0.4 px), so :func:`to_five_points` makes any template comparable with a 5-point one.
"""

from __future__ import annotations

import math
import threading

import numpy as np
from PIL import Image

from mtfap.data.decode import as_rgb_array
from mtfap.faces.models import import_dlib, model_file

LANDMARK_NAMES = {5: "dlib5", 68: "dlib68"}
MODEL_NAMES = {5: "shape_predictor_5_face_landmarks.dat",
               68: "shape_predictor_68_face_landmarks.dat"}
DLIB5_FROM_68 = (45, 42, 36, 39, 33)
# dlib returns whole-pixel points; the face is read with a box side of at least this (small
# faces enlarged by a whole factor) so that a 50-pixel CelebA face gets quarter-pixel points.
# Measured on 287 CelebA faces: no bias (mean shift < 0.1 px), a lower spread than at 1x.
FIT_SIDE = 200
# The predictor reads pixels around its current estimate of each point; the crop it sees keeps
# this fraction of the box side on every side, so a face in a large photo costs the same as in
# a small one and no pixel it reads is cut off.
FIT_MARGIN = 0.5


class LandmarkModel:
    """dlib's shape predictor: a face box in, (P, 2) landmark points (x, y) out.

    One instance can be used from several threads at once (dlib documents the predictor as
    needing no synchronisation); it loads its model on the first call. Pickling keeps the
    setting only, so worker processes load their own.

    Parameters
    ----------
    points : 5 (eye corners and nose; CC0) or 68 (face outline, brows, eyes, nose, mouth).

    Examples
    --------
    >>> model = LandmarkModel(5)
    >>> model.landmark_name
    'dlib5'
    """

    def __init__(self, points: int = 5):
        if points not in LANDMARK_NAMES:
            raise ValueError(f"points must be 5 or 68 (dlib's two landmark models), "
                             f"got {points!r}")
        self.points = int(points)
        self._predictor = None
        self._lock = threading.Lock()

    @property
    def landmark_name(self) -> str:
        return LANDMARK_NAMES[self.points]

    def __call__(self, image, box) -> np.ndarray:
        """The landmarks of the face in ``box`` (left, top, right, bottom), float64 (P, 2) in
        image pixels (centre of the top-left pixel at (0, 0))."""
        image = as_rgb_array(image)
        left, top, right, bottom = (float(v) for v in box)
        if not (right > left and bottom > top):
            raise ValueError(f"the face box must have a positive size, got {tuple(box)}")
        crop, origin, scale = _face_crop(image, (left, top, right, bottom))

        def to_crop(value, start):
            # image pixel coordinate -> crop pixel coordinate, pixel centres kept
            return scale * (value - start + 0.5) - 0.5

        dlib = import_dlib()
        # dlib rectangles include their right and bottom pixels: an edge at e is pixel e + 0.5.
        rect = dlib.rectangle(
            round(to_crop(left, origin[0]) + 0.5), round(to_crop(top, origin[1]) + 0.5),
            round(to_crop(right, origin[0]) - 0.5), round(to_crop(bottom, origin[1]) - 0.5))
        shape = self._model()(crop, rect)
        found = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        return (found + 0.5) / scale - 0.5 + np.asarray(origin, dtype=np.float64)

    def _model(self):
        with self._lock:
            if self._predictor is None:
                self._predictor = import_dlib().shape_predictor(
                    str(model_file(MODEL_NAMES[self.points])))
            return self._predictor

    def __getstate__(self):
        return {"points": self.points}

    def __setstate__(self, state):
        self.__init__(state["points"])

    def __repr__(self) -> str:
        return f"LandmarkModel(points={self.points})"


def _face_crop(image: np.ndarray, box) -> tuple[np.ndarray, tuple[int, int], float]:
    """The part of ``image`` the predictor reads, scaled so that the box side is between
    FIT_SIDE and twice that: (crop, its top-left pixel in the image, crop pixels per image
    pixel). Small faces are enlarged bilinearly; large ones reduced with a box filter, which
    also spares copying a 3000-pixel face for a model that reads a few hundred pixels."""
    left, top, right, bottom = box
    side = max(right - left, bottom - top)
    height, width = image.shape[:2]
    x0 = min(max(0, math.floor(left - FIT_MARGIN * side)), width - 1)
    y0 = min(max(0, math.floor(top - FIT_MARGIN * side)), height - 1)
    x1 = max(min(width, math.ceil(right + FIT_MARGIN * side)), x0 + 1)
    y1 = max(min(height, math.ceil(bottom + FIT_MARGIN * side)), y0 + 1)
    crop = image[y0:y1, x0:x1]
    if side < FIT_SIDE:
        factor = math.ceil(FIT_SIDE / side)
        crop = Image.fromarray(crop).resize(((x1 - x0) * factor, (y1 - y0) * factor),
                                            Image.Resampling.BILINEAR)
        return np.asarray(crop), (x0, y0), float(factor)
    if side >= 2 * FIT_SIDE:
        factor = math.floor(side / FIT_SIDE)
        return np.asarray(Image.fromarray(crop).reduce(factor)), (x0, y0), 1.0 / factor
    return np.ascontiguousarray(crop), (x0, y0), 1.0


def to_five_points(points) -> np.ndarray:
    """(5, 2) points in dlib's 5-point layout from 68 or 5 points (returned as a copy).

    >>> to_five_points(np.arange(136.0).reshape(68, 2))[:, 0]
    array([90., 84., 72., 78., 66.])
    """
    points = np.asarray(points, dtype=np.float64)
    if points.shape == (68, 2):
        return points[list(DLIB5_FROM_68)].copy()
    if points.shape == (5, 2):
        return points.copy()
    raise ValueError(f"expected 5 or 68 landmark points of shape (P, 2), got {points.shape}")


def landmark_count(name: str) -> int:
    """The number of points of a landmark layout name ("dlib5" -> 5, "dlib68" -> 68)."""
    for count, known in LANDMARK_NAMES.items():
        if known == name:
            return count
    raise ValueError(f"unknown landmark layout {name!r}; known: "
                     f"{', '.join(LANDMARK_NAMES.values())}")
