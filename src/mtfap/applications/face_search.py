"""Searching an attribute index (``mtfap search``, ``mtfap serve``): by a query, by likeness
to a face, by identity; and the thumbnail of a found face.

:class:`FaceSearch` keeps the index's matrices in memory (:meth:`IndexStore.load_matrix`) and
loads them again when the index file changes, so that a server follows a running
``mtfap index``; it opens the SQLite file for each look-up, so that any thread may call it.
Thumbnails are cut from the indexed file with the stored box: a caller names a face by its id,
never a path.
"""

from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mtfap.applications.index import ALIGNED, FRAMING_KEY, ROOT_KEY, file_in_collection
from mtfap.data.decode import decode_image
from mtfap.errors import DataError
from mtfap.search.query import Query, parse_query
from mtfap.search.rank import (
    DLIB_SAME_PERSON,
    Ranking,
    rank_like,
    rank_person,
    rank_query,
    squared_norms,
)
from mtfap.search.store import FaceMatrix, IndexStore

THUMBNAIL_SIZE = 160
THUMBNAIL_MARGIN = 0.3  # of the box's larger side, on each side: some hair and chin


@dataclass(frozen=True)
class Hit:
    """One face found: ``value`` is the joint log-probability of a query (higher is better) or
    a distance (lower is better); ``probabilities`` are all k of the face."""

    rank: int
    face_id: int
    path: str
    face_index: int
    box: tuple[float, float, float, float]
    value: float
    probabilities: np.ndarray

    def record(self, attributes, shown=None) -> dict:
        """A JSON-ready dict; ``shown`` limits the probabilities to those attributes."""
        shown = attributes if shown is None else shown
        return {"rank": self.rank, "face_id": self.face_id, "path": self.path,
                "face": self.face_index, "box": [round(float(v), 1) for v in self.box],
                "value": round(float(self.value), 5),
                "probabilities": {a: round(float(self.probabilities[attributes.index(a)]), 4)
                                  for a in shown}}


class FaceSearch:
    """An index opened for searching.

    Parameters
    ----------
    db : the index file (``mtfap index``).
    root : the folder of the collection, for thumbnails; default the one the index recorded
        (give it when the collection has moved, or for a merged index of shards indexed in
        different places).
    max_pixels : the decoder's pixel limit for the files thumbnails are cut from.
    """

    def __init__(self, db: str | Path, root: str | Path | None = None,
                 max_pixels: int | None = None):
        self.path = Path(db)
        with IndexStore.open(self.path) as store:  # fails early on a missing or foreign file
            self.model_name, self.model_version = store.model_name, store.model_version
            self.attributes = list(store.attributes)
            self.descriptor_dim = store.descriptor_dim
            self.framing = store.meta.get(FRAMING_KEY)
            recorded = store.meta.get(ROOT_KEY)
        self.root = Path(root) if root is not None else (Path(recorded) if recorded else None)
        self.max_pixels = max_pixels
        self._lock = threading.Lock()
        self._loaded: dict[bool, tuple[tuple, FaceMatrix, np.ndarray | None]] = {}

    @property
    def aligned(self) -> bool:
        """Whether the faces were indexed as aligned crops (no detection)."""
        return self.framing == ALIGNED

    @contextmanager
    def store(self):
        """The index, opened for one look-up in the calling thread."""
        with IndexStore.open(self.path) as store:
            yield store

    def counts(self) -> dict[str, int]:
        with self.store() as store:
            return store.counts()

    def analyzer(self, model=None, **options):
        """An :class:`~mtfap.applications.analyze.Analyzer` with the index's model (or
        ``model``, which must be the same name and version: the probabilities of two models
        are not comparable); ``options`` are the analyzer's."""
        # imported here: a search by words needs no network (and no torch, seconds to import)
        from mtfap.applications.analyze import Analyzer
        from mtfap.model import load_model

        try:
            predictor = load_model(model or self.model_name)
        except DataError as exc:
            if model is not None:
                raise
            raise DataError(f"the index was built with the model {self.model_name!r}, which "
                            f"cannot be opened by that name ({exc})", self.path,
                            hint="give the model with --model") from None
        if (predictor.name, predictor.version) != (self.model_name, self.model_version):
            raise ValueError(f"the index {self.path} holds predictions of {self.model_name} "
                             f"{self.model_version}; the model {model} is {predictor.name} "
                             f"{predictor.version}, whose probabilities are not comparable")
        return Analyzer(predictor, **options)

    # -- the matrices ----------------------------------------------------------------------

    def data_version(self) -> tuple:
        """Changes whenever a write reaches the file or its write-ahead log."""
        stats = []
        for path in (self.path, Path(f"{self.path}-wal")):
            try:
                stat = path.stat()
                stats.append((stat.st_size, stat.st_mtime_ns))
            except FileNotFoundError:
                stats.append(None)
        return tuple(stats)

    def matrix(self, descriptors: bool = False) -> tuple[FaceMatrix, np.ndarray | None]:
        """The face matrix (with descriptors and their squared norms when asked), loaded
        again when the index changed since the last call."""
        if descriptors and self.descriptor_dim == 0:
            raise ValueError(f"{self.path} stores no identity descriptors (it was indexed "
                             f"{'with --aligned' if self.aligned else 'without them'}); index "
                             f"the photos with detection to search by person")
        with self._lock:
            version = self.data_version()
            loaded = self._loaded.get(descriptors)
            if loaded is None or loaded[0] != version:
                with self.store() as store:
                    matrix = store.load_matrix(descriptors=descriptors)
                norms = squared_norms(matrix.descriptors) if descriptors else None
                loaded = self._loaded[descriptors] = (version, matrix, norms)
            return loaded[1], loaded[2]

    def _hits(self, matrix: FaceMatrix, ranking: Ranking) -> list[Hit]:
        if len(ranking.rows) == 0:
            return []
        found = []
        with self.store() as store:
            for row, value in zip(ranking.rows, ranking.values):
                try:
                    found.append((row, value, store.face(int(matrix.face_ids[row]))))
                except KeyError:
                    continue  # removed by an indexing run since the matrix was loaded
        return [Hit(rank, face.face_id, face.path, face.face_index, face.box, float(value),
                    matrix.probabilities[row])
                for rank, (row, value, face) in enumerate(found, start=1)]

    # -- the three searches ----------------------------------------------------------------

    def parse(self, text: str) -> Query:
        return parse_query(text, self.attributes)

    def query(self, query: str | Query, limit: int = 20) -> tuple[Query, list[Hit]]:
        """The faces most likely to match ``query`` (text or :class:`Query`), best first."""
        query = self.parse(query) if isinstance(query, str) else query
        matrix, _ = self.matrix()
        if len(matrix) == 0:
            return query, []
        return query, self._hits(matrix, rank_query(query, matrix.probabilities,
                                                    self.attributes, limit))

    def like(self, probabilities, limit: int = 20) -> list[Hit]:
        """The faces whose attributes are closest (L1) to ``probabilities``."""
        matrix, _ = self.matrix()
        if len(matrix) == 0:
            return []
        return self._hits(matrix, rank_like(probabilities, matrix.probabilities, limit))

    def person(self, descriptor, limit: int = 20,
               threshold: float = DLIB_SAME_PERSON) -> list[Hit]:
        """The faces of the same person as ``descriptor`` (dlib's 128-D), closest first."""
        matrix, norms = self.matrix(descriptors=True)
        if len(matrix) == 0:
            return []
        return self._hits(matrix, rank_person(descriptor, matrix.descriptors, limit,
                                              threshold, norms))

    # -- thumbnails ------------------------------------------------------------------------

    def thumbnail(self, face_id: int, size: int = THUMBNAIL_SIZE) -> Image.Image:
        """The face ``face_id`` cut from its file with some margin, at most ``size`` pixels
        on its longer side.

        Raises ``KeyError`` for an id the index does not hold, and ``DataError`` when the
        file is gone, has changed since it was indexed, or the collection root is unknown.
        """
        with self.store() as store:
            face = store.face(face_id)
            stored = store.file(face.path)
        if self.root is None:
            raise DataError("the index does not know where its photos are", self.path,
                            hint="give the collection's folder with --root")
        path = file_in_collection(self.root, face.path)
        try:
            stat = path.stat()
            if (stat.st_size, stat.st_mtime_ns) != (stored.size, stored.mtime_ns):
                raise DataError("changed since it was indexed", path,
                                hint="run mtfap index again")
            data = path.read_bytes()
        except OSError:
            raise DataError("indexed photo not found", path,
                            hint="run mtfap index again, or give --root if it moved") from None
        image = decode_image(data, str(path), max_pixels=self.max_pixels)
        return _cut(image, face.box, size)


def _cut(image: Image.Image, box, size: int) -> Image.Image:
    left, top, right, bottom = box
    margin = THUMBNAIL_MARGIN * max(right - left, bottom - top)
    crop = (max(0, math.floor(left - margin)), max(0, math.floor(top - margin)),
            min(image.width, math.ceil(right + margin)),
            min(image.height, math.ceil(bottom + margin)))
    if crop[2] <= crop[0] or crop[3] <= crop[1]:  # a box outside the image: show all of it
        crop = (0, 0, image.width, image.height)
    face = image.crop(crop)
    face.thumbnail((size, size), Image.Resampling.LANCZOS)
    return face
