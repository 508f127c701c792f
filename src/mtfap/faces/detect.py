"""Face detection with dlib: the HOG detector (fast, near-frontal faces) or the MMOD CNN
(also turned faces, ~50x slower on a CPU).

Coordinates here and in the whole ``faces`` package are image pixels with the centre of pixel
(column i, row j) at (i, j), as in numpy and dlib. A box is (left, top, right, bottom) of the
face's rectangle in those coordinates, so a box covering pixels 0..9 is (-0.5, ..., 9.5, ...).

Large photos are detected on a reduced copy and the boxes scaled back: detection cost grows
with the pixel count (HOG, measured on this project's 2-core machine: 0.02 s at 512 px, 0.08 s
at 1024 px, 0.33 s at 1024 px upsampled once; the CNN 1.2 s at 512 px), while a face needs only
~30 pixels across to be found (real LFW faces scaled down, HOG with ``upsample=1``). With the
default ``max_side`` a face down to ~3% (HOG) or ~7% (CNN) of the photo's longer side is
found in well under a second (HOG), and the landmarks are still fitted at full resolution.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image

from mtfap.data.decode import as_rgb_array
from mtfap.errors import unknown_name_error
from mtfap.faces.models import import_dlib, model_file


# Photos with a shorter side below this are doubled more than ``upsample`` times
# (FaceDetector's min_side); from 100 px up, ``upsample=1`` already doubles them past it.
SMALL_PHOTO_SIDE = 200
# The turns of a sideways photo that CascadeDetector tries, as np.rot90's k (counter-clockwise
# quarter turns): 1 stands up a face whose head points right, 3 one whose head points left, 2
# one upside down.
TURNS = (1, 3, 2)
# The HOG score a face found in a turned photo needs. HOG sometimes fires weakly on an upright
# face turned upside down (score 0.06 on an LFW photo) or sideways (0.38: one of the 213 photos
# of the first 800 FairFace crops where it finds no upright face); true faces found in a turned
# photo score like upright ones (0.7-3.2 on LFW). A weaker face is left to the CNN.
TURNED_MIN_SCORE = 0.5


@dataclass(frozen=True)
class Detection:
    """One face found by a detector.

    box : (left, top, right, bottom) in image pixels (see the module docstring).
    score : the detector's confidence (HOG: SVM margin, > 0 when found; CNN: MMOD confidence).
    detector : the detector's name ("hog", "cnn").
    turn : the quarter turns counter-clockwise (``np.rot90``'s k) that stood the face upright
        where it was found (:class:`CascadeDetector`'s search of sideways photos); 0 for a
        face found in the photo as it is. The box is in the photo's own pixels either way.
    """

    box: tuple[float, float, float, float]
    score: float
    detector: str
    turn: int = 0

    @property
    def area(self) -> float:
        left, top, right, bottom = self.box
        return max(0.0, right - left) * max(0.0, bottom - top)


class FaceDetector:
    """The shared part of the dlib detectors: reduced copies, sorting, lazy per-thread models.

    A dlib detector keeps per-call scratch state, so one instance must not run in two threads
    at once; each thread gets its own model, loaded on its first call (dlib releases the GIL
    while detecting, so threads do run in parallel). Pickling keeps the settings only: a worker
    process loads its own model.

    Parameters
    ----------
    upsample : how many times dlib doubles the image before detecting; each doubling finds
        faces half as large, at about 4x the cost.
    max_side : the longer side of the reduced copy that large images are detected on; None
        detects at full size.
    min_side : small photos are doubled more than ``upsample`` times, until their shorter
        side reaches this (0: never): a 62 px photo, whose face is ~28 px across, is doubled
        twice. The default, 200, leaves photos of 100 px and more at ``upsample=1``.
    """

    name = ""
    default_max_side = 1024

    def __init__(self, upsample: int = 1, max_side: int | None = None,
                 min_side: int = SMALL_PHOTO_SIDE):
        if int(upsample) != upsample or upsample < 0:
            raise ValueError(f"upsample must be a whole number >= 0, got {upsample!r}")
        max_side = self.default_max_side if max_side is None else max_side
        if int(max_side) != max_side or max_side < 64:
            raise ValueError(f"max_side must be a whole number of pixels >= 64, got {max_side!r}")
        if int(min_side) != min_side or min_side < 0:
            raise ValueError(f"min_side must be a whole number of pixels >= 0 (0: never double "
                             f"small photos more), got {min_side!r}")
        self.upsample, self.max_side, self.min_side = int(upsample), int(max_side), int(min_side)
        self._local = threading.local()

    def upsample_for(self, image: np.ndarray) -> int:
        """The doublings for ``image``: ``upsample``, more for a photo smaller than
        ``min_side``."""
        shorter = max(1, min(image.shape[:2]))
        needed = math.ceil(math.log2(self.min_side / shorter)) if shorter < self.min_side else 0
        return max(self.upsample, needed)

    def detect(self, image) -> list[Detection]:
        """The faces in ``image`` (uint8 RGB array or PIL image), largest box first.

        Examples
        --------
        >>> HogDetector().detect(np.zeros((120, 160, 3), np.uint8))
        []
        """
        image = as_rgb_array(image)
        reduced, factor = reduced_copy(image, self.max_side)
        found = []
        upsample = self.upsample_for(reduced)
        for (left, top, right, bottom), score in self._find(self._model(), reduced, upsample):
            # dlib's rectangles include their right and bottom pixels; the reduced pixel i
            # covers the full-size pixels factor * i .. factor * i + factor - 1.
            box = (factor * left - 0.5, factor * top - 0.5,
                   factor * (right + 1) - 0.5, factor * (bottom + 1) - 0.5)
            found.append(Detection(tuple(float(v) for v in box), float(score), self.name))
        return sorted(found, key=lambda d: (-d.area, -d.score))

    def _model(self):
        model = getattr(self._local, "model", None)
        if model is None:
            model = self._local.model = self._load(import_dlib())
        return model

    def _load(self, dlib):
        raise NotImplementedError

    def _find(self, model, image: np.ndarray, upsample: int):
        """(dlib rectangle as (left, top, right, bottom), score) of each face in ``image``,
        doubled ``upsample`` times."""
        raise NotImplementedError

    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_local"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(upsample={self.upsample}, max_side={self.max_side}, "
                f"min_side={self.min_side})")


class HogDetector(FaceDetector):
    """dlib's HOG + linear SVM frontal face detector (``get_frontal_face_detector``).

    Finds faces whose box is about 60 pixels across, 30 with ``upsample=1`` (measured on real
    faces scaled down); faces turned more than ~30 degrees or rolled more than ~20 degrees are
    mostly missed. ``threshold`` shifts the SVM decision threshold (dlib's ``adjust_threshold``):
    below 0 finds more faces and more false ones.
    """

    name = "hog"

    def __init__(self, upsample: int = 1, max_side: int | None = None, threshold: float = 0.0,
                 min_side: int = SMALL_PHOTO_SIDE):
        super().__init__(upsample, max_side, min_side)
        self.threshold = float(threshold)

    def _load(self, dlib):
        return dlib.get_frontal_face_detector()

    def __repr__(self) -> str:
        return (f"HogDetector(upsample={self.upsample}, max_side={self.max_side}, "
                f"min_side={self.min_side}, threshold={self.threshold})")

    def _find(self, model, image, upsample):
        rects, scores, _ = model.run(image, upsample, self.threshold)
        return [((r.left(), r.top(), r.right(), r.bottom()), s) for r, s in zip(rects, scores)]


class CnnDetector(FaceDetector):
    """dlib's MMOD CNN face detector (``mmod_human_face_detector.dat``).

    Finds turned and partly hidden faces the HOG detector misses, from about 70 pixels across
    (35 with ``upsample=1``), but costs about 1.2 s per 512 x 384 image on a CPU (4x that
    upsampled once), hence a smaller default ``max_side`` (512).
    """

    name = "cnn"
    default_max_side = 512

    def _load(self, dlib):
        return dlib.cnn_face_detection_model_v1(str(model_file("mmod_human_face_detector.dat")))

    def _find(self, model, image, upsample):
        return [((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), d.confidence)
                for d in model(image, upsample)]


class CascadeDetector(FaceDetector):
    """The HOG detector first, then, on the photos where it finds nothing, the HOG detector on
    the photo turned sideways and upside down, then dlib's CNN.

    On photos where faces are large and frontal (LFW, most snapshots) this costs what the HOG
    detector costs; on tight crops and turned heads, where HOG misses about a quarter of the
    faces (FairFace), the CNN finds most of the rest, at its price for those photos only
    (docs/MODELS.md, "Which detector finds the faces"). Each face says which detector found it.
    ``max_side`` and ``min_side`` are the HOG detector's; the CNN keeps its own ``max_side``
    (512).

    ``turns``: photos whose EXIF orientation was lost (stripped by a messaging app, or a scan)
    stand on their side or upside down, where both detectors find faces poorly and the
    landmark model, which expects an upright face, misplaces the points on those it finds.
    Before the CNN, the HOG detector tries the photo turned a quarter each way and upside
    down (:data:`TURNS`), and keeps the turn with the highest-scoring face if it scores at
    least :data:`TURNED_MIN_SCORE`; such a face has ``turn`` set, its landmarks are fitted on
    the turned photo, and the alignment stands it upright. Three HOG passes, only on photos
    without an upright face. False: no such search.
    """

    name = "auto"

    def __init__(self, upsample: int = 1, max_side: int | None = None,
                 min_side: int = SMALL_PHOTO_SIDE, turns: bool = True):
        super().__init__(upsample, max_side, min_side)
        self.hog = HogDetector(upsample, max_side, min_side=min_side)
        self.cnn = CnnDetector(upsample, min_side=min_side)
        self.turns = bool(turns)

    def detect(self, image) -> list[Detection]:
        image = as_rgb_array(image)
        found = self.hog.detect(image)
        if not found and self.turns:
            found = self.detect_turned(image)
        return found or self.cnn.detect(image)

    def detect_turned(self, image: np.ndarray) -> list[Detection]:
        """The HOG detector's faces in the turned photo (of :data:`TURNS`) where it finds the
        highest-scoring face, if that score reaches :data:`TURNED_MIN_SCORE`; boxed in
        ``image``'s pixels, with their ``turn``. [] if no turn has such a face."""
        height, width = image.shape[:2]
        best, best_score = [], TURNED_MIN_SCORE
        for turn in TURNS:
            found = self.hog.detect(np.ascontiguousarray(np.rot90(image, turn)))
            score = max((d.score for d in found), default=-math.inf)
            if score >= best_score:
                best_score = score
                best = [Detection(turn_box(d.box, -turn, width, height), d.score, d.detector,
                                  turn) for d in found]
        return best

    def __repr__(self) -> str:
        return (f"CascadeDetector({self.hog!r}, then turned photos{'' if self.turns else ' (off)'}"
                f", then {self.cnn!r})")


def turn_points(points, turns: int, width: int, height: int) -> np.ndarray:
    """Points (x, y) of a ``width`` x ``height`` photo carried into the photo turned ``turns``
    quarter turns counter-clockwise (``np.rot90(photo, turns)``; negative turns undo them, so
    ``turn_points(turn_points(p, k, w, h), -k, w, h) == p``)."""
    points = np.array(points, dtype=float).reshape(-1, 2)
    if turns < 0 and turns % 2:  # undo: the rest of the circle, from the turned photo's size
        width, height = height, width
    for _ in range(turns % 4):  # one quarter counter-clockwise: (x, y) -> (y, W - 1 - x)
        points = np.stack([points[:, 1], width - 1 - points[:, 0]], axis=1)
        width, height = height, width
    return points


def turn_box(box, turns: int, width: int, height: int) -> tuple[float, float, float, float]:
    """A box (left, top, right, bottom) carried like :func:`turn_points`; a quarter turn keeps
    boxes upright, so its corners carry it."""
    corners = turn_points([box[:2], box[2:]], turns, width, height)
    (left, top), (right, bottom) = corners.min(axis=0), corners.max(axis=0)
    return (float(left), float(top), float(right), float(bottom))


DETECTORS = {"auto": CascadeDetector, "hog": HogDetector, "cnn": CnnDetector}


def make_detector(name: str | FaceDetector, **options) -> FaceDetector:
    """A detector by name ("auto", "hog" or "cnn"), with ``upsample`` and ``max_side`` options.

    >>> make_detector("hog", upsample=0)
    HogDetector(upsample=0, max_side=1024, min_side=200, threshold=0.0)
    """
    if isinstance(name, FaceDetector):
        return name
    if name not in DETECTORS:
        raise unknown_name_error("face detector", name, DETECTORS)
    return DETECTORS[name](**options)


def reduced_copy(image: np.ndarray, max_side: int) -> tuple[np.ndarray, int]:
    """``image`` reduced by the smallest whole factor that brings its longer side to at most
    ``max_side``, and that factor (1: the image itself).

    A whole factor keeps the mapping back exact; the box filter of ``Image.reduce`` averages
    each factor x factor block, which also keeps fine texture from aliasing into false edges.
    """
    factor = math.ceil(max(image.shape[:2]) / max_side)
    if factor <= 1:
        return image, 1
    return np.asarray(Image.fromarray(image).reduce(factor)), factor
