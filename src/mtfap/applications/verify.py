"""Are two photos of one person? The command ``mtfap verify A.jpg B.jpg`` and :func:`verify`.

The largest face of each photo is found and aligned as ``mtfap predict`` does (:class:`Analyzer`:
HOG detector, 5 landmarks; dlib's 150 px chip for the identity descriptor), then compared:

- by default with dlib's 128-D descriptor and the Euclidean distance, the same person when the
  distance is at most :data:`DLIB_THRESHOLD`; nothing beyond the installed packages is needed;
- or with a Siamese verifier written by ``mtfap verification-benchmark`` (``verifiers/NAME``:
  ``NAME.json`` + ``NAME.safetensors``), at the threshold chosen on CelebA's validation pairs
  and stored with it; a verifier with attributes opens the attribute model named in its file.

Every verifier here measures a distance between two embeddings (the score is its negative:
higher = more alike); the decision is "same person" when the distance is at most the threshold.
docs/VERIFICATION.md gives the accuracy of each on LFW and CelebA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mtfap.applications.analyze import Analyzer, FaceResult
from mtfap.applications.verifier import SiameseVerifier, load_verifier, verifier_inputs
from mtfap.errors import DataError
from mtfap.model import Predictor
from mtfap.model.shipped import default_model_name
from mtfap.search.rank import DLIB_SAME_PERSON

# dlib's own rule for its descriptor (mtfap.search.rank, whose person search uses it too).
# Checked through mtfap's detection and alignment by `mtfap verification-benchmark`
# (docs/RESULTS.md, section 5): on LFW View 2 it gives 97.70 %, against 98.02 % for thresholds
# fitted on nine folds (0.615-0.627); the best threshold on CelebA's validation pairs, 0.67,
# gives 96.97 % on LFW: CelebA's 102 x 125 faces spread the descriptors of one person more.
# The trained Siamese verifiers are 5 points below dlib's distance, so dlib is the default.
DLIB_THRESHOLD = DLIB_SAME_PERSON


@dataclass
class Verification:
    """The answer for two photos.

    distance : between the two faces' embeddings (lower = more alike); ``score`` = -distance.
    threshold : the largest distance still declared the same person.
    same : distance <= threshold.
    verifier, threshold_source : what compared the faces, and where its threshold comes from.
    faces : the two faces compared (the largest of each photo).
    """

    file_a: str
    file_b: str
    distance: float
    threshold: float
    same: bool
    verifier: str
    threshold_source: str
    faces: tuple[FaceResult, FaceResult]

    @property
    def score(self) -> float:
        return -self.distance

    def to_record(self) -> dict:
        """The JSON record of ``mtfap verify --format json``."""
        return {"schema": "mtfap.verify/1", "files": [self.file_a, self.file_b],
                "score": round(self.score, 6), "distance": round(self.distance, 6),
                "threshold": round(self.threshold, 6), "same_person": self.same,
                "verifier": self.verifier, "threshold_source": self.threshold_source,
                "faces": [{"box": [round(float(v), 2) for v in face.box],
                           "detector": face.detector} for face in self.faces]}


class FaceVerifier:
    """Two photos in, one person or not.

    Parameters
    ----------
    verifier : None for dlib's descriptor with Euclidean distance, or a Siamese verifier file
        (``NAME``, ``NAME.json`` or ``NAME.safetensors``, see :func:`load_verifier`).
    threshold : the distance threshold; None: the verifier's own (dlib: :data:`DLIB_THRESHOLD`;
        a Siamese verifier: the one chosen on validation pairs and saved with it).
    model : the attribute model whose framing the faces are aligned into (and whose attributes
        a verifier with attributes reads); None: the one a verifier with attributes names,
        else the default shipped model (dlib's descriptor does not read it: its chip has its
        own framing).
    detector, workers : as in :class:`Analyzer`.
    """

    def __init__(self, verifier: str | Path | None = None, *, threshold: float | None = None,
                 model: Predictor | str | Path | None = None, detector: str = "auto",
                 workers: int | None = 1):
        self.siamese: SiameseVerifier | None = None
        self.columns: list[str] | None = None
        if verifier is None:
            self.name = "dlib descriptor, Euclidean distance"
            own, self.threshold_source = DLIB_THRESHOLD, "dlib's rule for its descriptor"
        else:
            self.siamese = load_verifier(verifier)
            inputs = self.siamese.meta.get("inputs") or {}
            self.columns = inputs.get("attribute_columns")
            if self.columns and model is None:
                model = inputs.get("attribute_model")
                if not model:
                    raise DataError("this verifier reads attributes but does not name its "
                                    "attribute model", verifier, hint="give it with --model")
            self.name = f"Siamese verifier {Path(verifier).with_suffix('').name}"
            own = -self.siamese.threshold  # thresholds are stored on the score, -distance
            self.threshold_source = "chosen on CelebA validation pairs"
            if math.isnan(own):
                raise DataError("this verifier has no threshold", verifier,
                                hint="give one with --threshold")
        if threshold is not None:
            if not threshold > 0:
                raise ValueError(f"--threshold must be a positive distance; got {threshold}")
            own, self.threshold_source = float(threshold), "given"
        self.threshold = float(own)
        self.analyzer = Analyzer(model or default_model_name(), detector=detector, identity=True, largest_only=True,
                                 workers=workers)
        if self.columns:
            missing = set(self.columns) - set(self.analyzer.predictor.attributes)
            if missing:
                raise DataError(f"the attribute model {self.analyzer.predictor.name!r} lacks "
                                f"{', '.join(sorted(missing))}, which the verifier reads",
                                verifier)

    def describe(self, photo) -> FaceResult:
        """The largest face of ``photo`` (a path, a uint8 RGB array or a PIL image)."""
        name = str(photo) if isinstance(photo, (str, Path)) else "<array>"
        result = self.analyzer.analyze_image(photo, name)
        if result.error is not None:
            raise DataError(result.error)
        if not result.faces:
            raise DataError("no face found", name,
                            hint="give a photo where the face is at least ~40 pixels across")
        return result.faces[0]

    def embedding_distance(self, a: FaceResult, b: FaceResult) -> float:
        """The verifier's distance between two described faces."""
        descriptors = np.stack([a.descriptor, b.descriptor])
        if self.siamese is None:
            return float(np.linalg.norm(descriptors[0] - descriptors[1]))
        probabilities = None
        if self.columns:
            names = self.analyzer.predictor.attributes
            columns = [names.index(c) for c in self.columns]
            probabilities = np.stack([a.probabilities, b.probabilities])[:, columns]
        x = torch.from_numpy(verifier_inputs(descriptors, probabilities))
        with torch.no_grad():
            return float(-self.siamese.score(x[:1], x[1:])[0])

    def verify(self, a, b) -> Verification:
        """Compare the largest faces of photos ``a`` and ``b``."""
        face_a, face_b = self.describe(a), self.describe(b)
        distance = self.embedding_distance(face_a, face_b)
        return Verification(face_a.file, face_b.file, distance, self.threshold,
                            distance <= self.threshold, self.name, self.threshold_source,
                            (face_a, face_b))


def verify(a, b, verifier: str | Path | None = None, **options) -> Verification:
    """Are the largest faces of photos ``a`` and ``b`` one person? ``options`` are those of
    :class:`FaceVerifier` (``threshold``, ``model``, ``detector``)."""
    return FaceVerifier(verifier, **options).verify(a, b)
