"""Aligning a face: the similarity transform that puts its landmarks on a template's points,
and one resampling of the photo through it.

A model sees faces framed the way its training images were: CelebA's aligned images put the
eyes and the nose at nearly fixed pixels. An :class:`AlignmentTemplate` holds those pixels (in
the model's input coordinates, measured by :func:`mtfap.faces.template.measure_template`);
:func:`align` rotates, scales and shifts a photo so that the photo's landmarks land on them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mtfap.data.decode import as_rgb_array
from mtfap.errors import DataError
from mtfap.faces.landmarks import (
    DLIB5_FROM_68,
    LANDMARK_NAMES,
    landmark_count,
    to_five_points,
)
from mtfap.io import write_json

TEMPLATE_FORMAT = "mtfap.alignment_template"
TEMPLATE_VERSION = 1


@dataclass(frozen=True, eq=False)
class AlignmentTemplate:
    """Where the landmarks of an aligned face lie, in output pixels.

    points : float (P, 2), (x, y) of each landmark in the output image (pixel centres at
        whole numbers).
    size : (height, width) of the output image.
    landmarks : the landmark layout of ``points``: "dlib5" or "dlib68".
    source : where the points were measured (free text, e.g. "CelebA train, 2000 images").
    spread : float (P,) or None: how far single faces lay from each point (RMS, pixels).
    count : how many faces the points were measured on (0 for a geometric definition).

    Two templates are equal when their :meth:`to_dict` are.
    """

    points: np.ndarray
    size: tuple[int, int]
    landmarks: str = "dlib5"
    source: str = ""
    spread: np.ndarray | None = None
    count: int = 0

    def __post_init__(self):
        if self.landmarks not in LANDMARK_NAMES.values():
            raise ValueError(f"template landmarks must be one of "
                             f"{', '.join(LANDMARK_NAMES.values())}, got {self.landmarks!r}")
        expected = landmark_count(self.landmarks)
        points = np.array(self.points, dtype=np.float64)
        if points.shape != (expected, 2) or not np.isfinite(points).all():
            raise ValueError(f"template points must be {expected} finite (x, y) pairs for "
                             f"{self.landmarks}, got shape {points.shape}")
        size = tuple(int(v) for v in self.size)
        if len(size) != 2 or min(size) < 1 or tuple(self.size) != size:
            raise ValueError(f"template size must be (height, width) in whole pixels, got "
                             f"{self.size!r}")
        spread = None
        if self.spread is not None:
            spread = np.array(self.spread, dtype=np.float64)
            if spread.shape != (expected,) or not (np.isfinite(spread) & (spread >= 0)).all():
                raise ValueError(f"template spread must be {expected} distances >= 0, got "
                                 f"{spread!r}")
            spread.flags.writeable = False
        if int(self.count) != self.count or self.count < 0:
            raise ValueError(f"template count must be a whole number >= 0, got {self.count!r}")
        points.flags.writeable = False
        for name, value in (("points", points), ("size", size), ("spread", spread),
                            ("count", int(self.count)), ("source", str(self.source))):
            object.__setattr__(self, name, value)

    def five_points(self) -> AlignmentTemplate:
        """The same template in dlib's 5-point layout (itself if already so)."""
        if self.landmarks == "dlib5":
            return self
        spread = None if self.spread is None else self.spread[list(DLIB5_FROM_68)]
        return AlignmentTemplate(to_five_points(self.points), self.size, "dlib5", self.source,
                                 spread, self.count)

    def to_dict(self) -> dict:
        """A JSON-safe dict; :meth:`from_dict` reads it back."""
        return {"format": TEMPLATE_FORMAT, "version": TEMPLATE_VERSION,
                "landmarks": self.landmarks, "size": list(self.size),
                "points": self.points.tolist(),
                "spread": None if self.spread is None else self.spread.tolist(),
                "count": self.count, "source": self.source}

    @classmethod
    def from_dict(cls, data: dict, path: str | Path | None = None) -> AlignmentTemplate:
        """Read :meth:`to_dict` output; a malformed dict raises DataError naming ``path``."""
        if not isinstance(data, dict) or data.get("format") != TEMPLATE_FORMAT:
            raise DataError("not an alignment template", path,
                            hint=f"expected a JSON object with \"format\": \"{TEMPLATE_FORMAT}\"")
        if data.get("version") != TEMPLATE_VERSION:
            raise DataError(f"alignment template version {data.get('version')!r} is not "
                            f"supported (this mtfap reads version {TEMPLATE_VERSION})", path,
                            hint="measure the template again with this version")
        missing = [key for key in ("landmarks", "size", "points") if key not in data]
        if missing:
            raise DataError(f"alignment template lacks {', '.join(missing)}", path)
        try:
            return cls(points=data["points"], size=tuple(data["size"]),
                       landmarks=data["landmarks"], source=data.get("source", ""),
                       spread=data.get("spread"), count=data.get("count", 0))
        except (ValueError, TypeError) as exc:
            raise DataError(f"invalid alignment template: {exc}", path) from None

    def save(self, path: str | Path) -> Path:
        """Write the template as JSON (atomically)."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> AlignmentTemplate:
        """Read a template written by :meth:`save`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError("alignment template not found", path, hint="check the path") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"cannot read the alignment template: {exc}", path) from None
        return cls.from_dict(data, path)

    def __eq__(self, other):
        if not isinstance(other, AlignmentTemplate):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None


def similarity_transform(src, dst) -> np.ndarray:
    """The rotation, uniform scale and translation that best maps ``src`` onto ``dst``.

    Least squares (Umeyama, 1991): minimises sum_i |s R src_i + t - dst_i|^2 over rotations R
    (no reflection), scales s > 0 and translations t.

    Parameters
    ----------
    src, dst : float (P, 2) corresponding points, P >= 2.

    Returns
    -------
    (2, 3) matrix M with dst ~ M @ [x, y, 1].

    Examples
    --------
    >>> square = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    >>> similarity_transform(square, 2 * square + 5).round(6)
    array([[2., 0., 5.],
           [0., 2., 5.]])
    """
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need two arrays of the same (P, 2) shape with P >= 2, got {src.shape} "
                         f"and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("landmark points must be finite")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c ** 2).sum() / len(src)
    if src_var <= 1e-12:
        raise ValueError("the source points all coincide: no transform maps them")
    u, sigma, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    sign = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(sigma) @ sign) / src_var
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def align_with_matrix(image, landmarks,
                      template: AlignmentTemplate) -> tuple[np.ndarray, np.ndarray]:
    """:func:`align`, and the (2, 3) matrix that maps photo pixels to aligned pixels.

    The matrix maps anything measured on the photo (a box, a landmark) into the aligned face;
    ``invert_affine(matrix)`` maps what is found on the aligned face (a class activation map)
    back onto the photo.
    """
    image = as_rgb_array(image)
    landmarks = np.asarray(landmarks, dtype=np.float64)
    target = template.points
    if template.landmarks == "dlib5" and landmarks.shape == (68, 2):
        landmarks = to_five_points(landmarks)
    elif landmarks.shape != target.shape:
        raise ValueError(f"the template has {len(target)} points ({template.landmarks}) but "
                         f"{landmarks.shape[0] if landmarks.ndim else 0} landmarks were given; "
                         f"fit the landmarks with LandmarkModel({len(target)})")
    # Fitted from the template to the photo (residuals in photo pixels), as dlib's
    # get_face_chip does, so that its chips are reproduced. The two directions differ when the
    # points fit imperfectly: the other one drew an LFW test face 2.4% smaller than dlib.
    matrix = invert_affine(similarity_transform(target, landmarks))
    return warp_affine(image, matrix, template.size), matrix


def align(image, landmarks, template: AlignmentTemplate) -> np.ndarray:
    """The face of ``image`` warped so that its ``landmarks`` land on ``template.points``.

    Parameters
    ----------
    image : uint8 RGB array (H, W, 3) or PIL image.
    landmarks : float (P, 2) in the image's pixels, in the template's layout (68 points are
        reduced to 5 for a 5-point template).
    template : where the points go, and the output size.

    Returns
    -------
    uint8 (height, width, 3) of ``template.size``; outside the photo is black.
    """
    return align_with_matrix(image, landmarks, template)[0]


def warp_affine(image, matrix, size: tuple[int, int]) -> np.ndarray:
    """Resample ``image`` through ``matrix`` (photo pixels -> output pixels) into an output of
    ``size`` (height, width), with one bilinear interpolation; outside the photo is black.

    Bilinear interpolation reads 2 x 2 pixels, so it aliases when the output is more than 2x
    smaller than the photo (hair and fabric turn into moire). Then the photo is first reduced
    by a whole factor with a box filter (``Image.reduce``), leaving a shrink of at most 2x for
    the bilinear step. Only the part of the photo that the output reads is converted and
    reduced, so a face in a 6000 px photo costs about what it costs in a small one.
    """
    image = as_rgb_array(image)
    matrix = np.asarray(matrix, dtype=np.float64).reshape(2, 3)
    height, width = (int(v) for v in size)
    shrink = 1.0 / math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    factor = math.floor(shrink + 1e-9) if shrink > 2 else 1  # 1 / sqrt(0.01) is 9.999...
    corners = np.array([[-0.5, -0.5], [width - 0.5, -0.5], [-0.5, height - 0.5],
                        [width - 0.5, height - 0.5]])
    seen = apply_affine(invert_affine(matrix), corners)
    margin = factor + 1  # the bilinear neighbours of the outermost samples
    x0, y0 = (max(0, math.floor(v) - margin) for v in seen.min(axis=0))
    x1 = min(image.shape[1], math.ceil(seen[:, 0].max()) + margin + 1)
    y1 = min(image.shape[0], math.ceil(seen[:, 1].max()) + margin + 1)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((height, width, 3), np.uint8)
    source = Image.fromarray(image[y0:y1, x0:x1])
    if factor > 1:
        source = source.reduce(factor)
    # source pixel i covers photo pixels x0 + factor * i .. x0 + factor * i + factor - 1
    to_photo = np.array([[factor, 0, x0 + (factor - 1) / 2],
                         [0, factor, y0 + (factor - 1) / 2]], dtype=np.float64)
    inverse = invert_affine(compose_affine(matrix, to_photo))
    # PIL samples the input at inverse(output + 0.5) - 0.5 in our pixel-centre coordinates.
    linear = inverse[:, :2]
    offset = inverse[:, 2] + 0.5 - linear @ np.array([0.5, 0.5])
    coefficients = (linear[0, 0], linear[0, 1], offset[0], linear[1, 0], linear[1, 1], offset[1])
    warped = source.transform((width, height), Image.Transform.AFFINE, coefficients,
                              resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
    return np.array(warped)


def invert_affine(matrix) -> np.ndarray:
    """The inverse of a (2, 3) affine matrix."""
    full = np.vstack([np.asarray(matrix, dtype=np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def compose_affine(outer, inner) -> np.ndarray:
    """The (2, 3) matrix of ``outer`` applied after ``inner``."""
    outer = np.vstack([np.asarray(outer, dtype=np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])
    inner = np.vstack([np.asarray(inner, dtype=np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])
    return (outer @ inner)[:2]


def apply_affine(matrix, points) -> np.ndarray:
    """(P, 2) points mapped through a (2, 3) affine matrix."""
    matrix = np.asarray(matrix, dtype=np.float64).reshape(2, 3)
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]
