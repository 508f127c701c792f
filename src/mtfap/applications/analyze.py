"""Attributes for anyone's photos: find every face, align it into the model's framing, predict.

The path of a photo::

    file --decode (EXIF orientation, any colour mode, pixel limit)--> RGB
         --detect (a reduced copy of large photos), landmarks--> faces, largest first
         --similarity transform onto the model's template--> aligned faces
         --Predictor--> 40 probabilities and decisions per face

:class:`Analyzer` holds the model and the face finder and runs that path on arrays, files and
folders (decoding and face finding in a pool of worker threads, the network on batches);
:func:`analyze` is the one-call form for one photo. Results convert to JSON records
(:meth:`FaceResult.to_record`, the schema of ``mtfap predict --format json``) and to a pandas
DataFrame (:func:`to_frame`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mtfap.data.decode import IMAGE_SUFFIXES, as_rgb_array, read_image_file
from mtfap.data.layout import open_dataset
from mtfap.errors import DataError
from mtfap.faces.align import AlignmentTemplate, align_with_matrix
from mtfap.faces.find import Face, FaceFinder
from mtfap.faces.template import dlib_chip_template
from mtfap.model import Predictor, load_model
from mtfap.model.runs import dataset_part

RECORD_SCHEMA = "mtfap.predict/1"


@dataclass
class FaceResult:
    """One face of one photo and what the model says of it.

    file : the photo (path as given, or "<array>").
    index : 0 for the largest face of the photo, 1 for the next, ...
    box : (left, top, right, bottom) in photo pixels (after EXIF orientation).
    score : the detector's score (NaN when the face was the whole photo, ``detector="crop"``,
        or given aligned, ``detector="aligned"``).
    landmarks : float (P, 2) in photo pixels.
    probabilities : float (k,), in the order of ``attributes``.
    decisions : bool (k,): ``probabilities >= thresholds``.
    aligned : the aligned face (uint8, the model's framing), kept when asked (maps, thumbnails).
    matrix : (2, 3) photo pixels -> aligned pixels.
    descriptor : dlib's 128-D identity descriptor, when asked.
    """

    file: str
    index: int
    box: tuple[float, float, float, float]
    score: float
    detector: str
    landmarks: np.ndarray
    attributes: list[str]
    probabilities: np.ndarray
    decisions: np.ndarray
    thresholds: np.ndarray
    model: str
    model_version: str
    aligned: np.ndarray | None = field(default=None, repr=False)
    matrix: np.ndarray | None = field(default=None, repr=False)
    descriptor: np.ndarray | None = field(default=None, repr=False)

    @property
    def present(self) -> list[str]:
        """The attributes decided present, most probable first."""
        order = np.argsort(-self.probabilities)
        return [self.attributes[j] for j in order if self.decisions[j]]

    def probability(self, attribute: str) -> float:
        return float(self.probabilities[self.attributes.index(attribute)])

    def to_record(self) -> dict:
        """The JSON record of this face (schema ``mtfap.predict/1``, docs/PREDICT.md)."""
        return {
            "schema": RECORD_SCHEMA, "file": self.file, "face": self.index,
            "box": [round(float(v), 2) for v in self.box],
            "score": None if math.isnan(self.score) else round(float(self.score), 4),
            "detector": self.detector,
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
            "probabilities": {a: round(float(p), 5)
                              for a, p in zip(self.attributes, self.probabilities)},
            "decisions": {a: bool(d) for a, d in zip(self.attributes, self.decisions)},
            "model": self.model, "model_version": self.model_version,
        }


@dataclass
class PhotoResult:
    """The faces of one photo, or why it could not be read."""

    file: str
    faces: list[FaceResult]
    error: str | None = None
    size: tuple[int, int] | None = None  # (width, height) after EXIF orientation
    seconds: dict = field(default_factory=dict)  # time per step, for benchmarks

    @property
    def ok(self) -> bool:
        return self.error is None


def model_framing(predictor: Predictor) -> AlignmentTemplate:
    """Where the landmarks go in the face images ``predictor`` takes.

    The model's template lives in its input pixels; the predictor centre-crops (``crop`` of the
    shorter side) and resizes what it is given, so the aligned face is drawn on a canvas whose
    centre crop is the input, the template moved by the crop's margin.
    """
    template = predictor.template
    if template is None:
        raise DataError(f"model {predictor.name!r} has no alignment template, so photos cannot "
                        "be aligned into its framing", predictor.source or None,
                        hint="measure one with `mtfap export RUN --data TRAINING_DATA`, or pass "
                             "--aligned for photos framed like its training images")
    crop = predictor.input_spec.crop
    if crop == 1.0:
        return template
    height, width = template.size
    canvas = (int(round(height / crop)), int(round(width / crop)))
    offset = np.array([(canvas[1] - width) / 2, (canvas[0] - height) / 2])
    return AlignmentTemplate(template.points + offset, canvas, template.landmarks,
                             template.source, template.spread, template.count)


def list_images(paths: Iterable[str | Path], recursive: bool = False) -> list[Path]:
    """The image files named by ``paths`` (files as given; folders: their images, sorted,
    with ``recursive`` also those of sub-folders). A path that does not exist raises."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            pattern = path.rglob("*") if recursive else path.iterdir()
            found += sorted(p for p in pattern if p.is_file() and p.suffix.lower() in
                            IMAGE_SUFFIXES and not p.name.startswith("."))
        elif path.exists():
            found.append(path)
        else:
            raise DataError("no such file or folder", path, hint="check the path")
    return found


class Analyzer:
    """A model and a face finder, ready to describe the faces of photos.

    Parameters
    ----------
    model : a :class:`Predictor`, or a name/path for :func:`mtfap.load_model` (default: the
        default shipped model).
    detector, landmarks, upsample, crop_fallback, turns : the :class:`~mtfap.faces.FaceFinder`.
    largest_only : one face per photo, the largest.
    aligned : the photos are faces framed like the model's training images already: no
        detection, no alignment.
    thresholds : "model" (the thresholds of the model's card) or a number for all attributes.
    keep_aligned : keep each aligned face on its result (maps, thumbnails).
    identity : also compute dlib's 128-D identity descriptor of each face.
    max_pixels : the decoder's pixel limit (None: ``mtfap.data.decode``'s default).
    workers : threads that decode photos and find faces while the network runs.
    """

    def __init__(self, model: Predictor | str | Path | None = None, *, detector: str = "auto",
                 landmarks: int = 5, upsample: int = 1, crop_fallback: bool = True,
                 largest_only: bool = False, aligned: bool = False,
                 thresholds: str | float = "model", keep_aligned: bool = False,
                 identity: bool = False, max_pixels: int | None = None,
                 workers: int | None = None, turns: bool = True):
        self.predictor = model if isinstance(model, Predictor) else (
            load_model() if model is None else load_model(model))
        self.aligned_input = bool(aligned)
        self.finder = None if aligned else FaceFinder(detector, landmarks, upsample, crop_fallback,
                                                      turns)
        self.framing = None if aligned else model_framing(self.predictor)
        self.chip_template = dlib_chip_template() if identity else None
        self.largest_only, self.keep_aligned = bool(largest_only), bool(keep_aligned)
        self.max_pixels = max_pixels
        self.workers = max(1, workers if workers is not None else min(2, os.cpu_count() or 1))
        k = len(self.predictor.attributes)
        if thresholds == "model":
            self.thresholds = self.predictor.thresholds
        else:
            try:
                value = float(thresholds)
            except (TypeError, ValueError):
                value = math.nan
            if not 0.0 < value < 1.0:
                raise ValueError(f"thresholds must be 'model' or a number in (0, 1), got "
                                 f"{thresholds!r}")
            self.thresholds = np.full(k, value)

    # --- one photo, without the network --------------------------------------------------------
    def _locate(self, image: np.ndarray, file: str) -> tuple[list[Face], list[np.ndarray],
                                                             list[np.ndarray], list, dict]:
        """The faces of a decoded photo with their aligned images, matrices and chips."""
        seconds = {}
        started = time.perf_counter()
        if self.aligned_input:
            height, width = image.shape[:2]
            faces = [Face(0, (0.0, 0.0, float(width), float(height)), math.nan, "aligned",
                          np.zeros((0, 2)))]
            seconds["detect"] = time.perf_counter() - started
            return faces, [image], [np.array([[1.0, 0, 0], [0, 1.0, 0]])], [None], seconds
        faces = self.finder.find(image, largest_only=self.largest_only)
        seconds["detect"] = time.perf_counter() - started  # detection and landmarks
        started = time.perf_counter()
        aligned, matrices, chips = [], [], []
        for face in faces:
            face_image, matrix = align_with_matrix(image, face.landmarks, self.framing)
            aligned.append(face_image)
            matrices.append(matrix)
            chips.append(align_with_matrix(image, face.landmarks, self.chip_template)[0]
                         if self.chip_template is not None else None)
        seconds["align"] = time.perf_counter() - started
        return faces, aligned, matrices, chips, seconds

    def _prepare(self, item) -> tuple[str, np.ndarray | None, tuple, str | None, dict]:
        """Decode and locate one photo: (file, image, located, error, seconds)."""
        file, source = item
        started = time.perf_counter()
        try:
            if callable(source):  # a loader, e.g. of a dataset's image
                source = source()
            image = (as_rgb_array(source) if not isinstance(source, (str, Path))
                     else as_rgb_array(read_image_file(source, max_pixels=self.max_pixels)))
        except DataError as exc:
            return file, None, None, str(exc), {}
        except OSError as exc:
            return file, None, None, f"{file}: cannot read ({exc})", {}
        decode_seconds = time.perf_counter() - started
        located = self._locate(image, file)
        located[4]["decode"] = decode_seconds
        return file, image, located, None, located[4]

    # --- many photos ---------------------------------------------------------------------------
    def _results(self, prepared: list) -> list[PhotoResult]:
        """Run the network on the aligned faces of a batch of prepared photos."""
        faces_flat = [face for _, _, located, error, _ in prepared if error is None
                      for face in located[1]]
        started = time.perf_counter()
        probabilities = self.predictor.predict_proba(faces_flat) if faces_flat else \
            np.zeros((0, len(self.predictor.attributes)))
        chips = [chip for _, _, located, error, _ in prepared if error is None
                 for chip in located[3]]
        descriptors = (self.predictor.embed(chips) if self.chip_template is not None and chips
                       else [None] * len(chips))
        network_seconds = (time.perf_counter() - started) / max(len(faces_flat), 1)
        results, position = [], 0
        for file, image, located, error, seconds in prepared:
            if error is not None:
                results.append(PhotoResult(file, [], error))
                continue
            faces, aligned, matrices, _, _ = located
            out = []
            for face, face_image, matrix in zip(faces, aligned, matrices):
                p = probabilities[position]
                out.append(FaceResult(
                    file, face.index, tuple(float(v) for v in face.box), float(face.score),
                    face.detector, face.landmarks, self.predictor.attributes, p,
                    p >= self.thresholds, self.thresholds, self.predictor.name,
                    self.predictor.version, face_image if self.keep_aligned else None, matrix,
                    descriptors[position]))
                position += 1
            seconds = {**seconds, "network": network_seconds * len(faces)}
            results.append(PhotoResult(file, out, None, (image.shape[1], image.shape[0]),
                                       seconds))
        return results

    def analyze_image(self, image, file: str = "<array>") -> PhotoResult:
        """The faces of one photo: a uint8 RGB array, a PIL image, or a path."""
        return self._results([self._prepare((file if not isinstance(image, (str, Path))
                                             else str(image), image))])[0]

    def analyze_paths(self, paths: Iterable[str | Path], batch_size: int = 32,
                      progress: bool = False) -> Iterator[PhotoResult]:
        """The results of each photo of ``paths`` (files; see :func:`list_images` for
        folders), in order. Photos that cannot be read give a result with ``error`` set."""
        return self.analyze_items([(str(p), p) for p in paths], batch_size, progress)

    def analyze_dataset(self, dataset, batch_size: int = 32, progress: bool = False
                        ) -> Iterator[PhotoResult]:
        """The results of each image of a ``FaceDataset`` (read in place), in row order."""
        source = dataset.source
        items = [(key, lambda key=key: source.load(key)) for key in dataset.keys]
        return self.analyze_items(items, batch_size, progress)

    def analyze_items(self, items: list, batch_size: int = 32, progress: bool = False
                      ) -> Iterator[PhotoResult]:
        """The results of ``(name, photo)`` items, where a photo is a path, an array, a PIL
        image or a function returning one, in order."""
        from tqdm.auto import tqdm  # imported here: the one-photo path does not need it
        bar = tqdm(total=len(items), desc="photos", unit="photo", disable=not progress)
        with ThreadPoolExecutor(self.workers) as pool:
            for first in range(0, len(items), batch_size):
                prepared = list(pool.map(self._prepare, items[first:first + batch_size]))
                yield from self._results(prepared)
                bar.update(len(prepared))
        bar.close()


def analyze(image, model: Predictor | str | Path | None = None, **options) -> list[FaceResult]:
    """The faces of one photo (a path, a uint8 RGB array or a PIL image) with their attributes,
    largest first; ``options`` are those of :class:`Analyzer`.

    A photo that cannot be read raises :class:`~mtfap.errors.DataError` naming it; a photo
    without a face gives an empty list.
    """
    result = Analyzer(model, **options).analyze_image(image)
    if result.error is not None:
        raise DataError(result.error)
    return result.faces


def to_frame(faces: Iterable[FaceResult]):
    """A pandas DataFrame with one row per face: file, face, box, score, detector, then the
    probability of each attribute (columns named as the attributes)."""
    import pandas as pd  # here: pandas costs half a second of start-up
    rows = []
    for face in faces:
        row = {"file": face.file, "face": face.index, "left": face.box[0], "top": face.box[1],
               "right": face.box[2], "bottom": face.box[3], "score": face.score,
               "detector": face.detector}
        row.update(zip(face.attributes, map(float, face.probabilities)))
        rows.append(row)
    return pd.DataFrame(rows)


class PhotosRun:
    """A model scored on a labelled dataset of ordinary photos through detection and alignment
    (``mtfap evaluate MODEL --data TABLE --detect``): the largest face of each photo is what
    the model is scored on; a photo without a face has its labels masked and is counted in
    ``missed``. Answers ``predict_split`` like the run classes of ``mtfap.model.runs``."""

    kind = "photos"

    def __init__(self, model: Predictor | str | Path, **options):
        self.analyzer = Analyzer(model, largest_only=True, **options)
        predictor = self.analyzer.predictor
        self.path, self.method = Path(predictor.source or predictor.name), predictor.spec.heads
        self.attributes, self.info, self.missed = predictor.attributes, {}, 0

    def predict_split(self, split, data=None, features=None, batch_size=64, device="cpu",
                      progress=True, scales=None):
        if data is None or features is not None or scales is not None:
            raise ValueError("--detect scores the photos of --data through detection and "
                             "alignment: give --data, and neither --features nor --test-scales")
        names = self.analyzer.predictor.attributes
        available = open_dataset(data).attributes
        common = [a for a in names if a in available]
        if not common:
            raise ValueError(f"{data}: none of its attributes ({', '.join(available[:5])}...) is "
                             f"one of the model's")
        self.attributes = common  # the table is scored on the attributes it labels
        part = dataset_part(data, common, split)
        columns = [names.index(a) for a in common]
        scores = np.full((len(part), len(common)), 0.5)
        mask = part.mask.copy()
        for row, result in enumerate(self.analyzer.analyze_dataset(part, batch_size, progress)):
            if result.faces:
                scores[row] = result.faces[0].probabilities[columns]
            else:
                mask[row] = False
        self.missed = int((~mask.any(axis=1) & part.mask.any(axis=1)).sum())
        return scores, part.labels.astype(np.uint8), mask, part.identities
