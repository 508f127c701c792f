"""Alignment templates: where a model expects the eyes and the nose.

:func:`measure_template` measures it on the training images themselves, so that a photo
aligned onto it looks like a training image after the training pipeline's own preprocessing.
:func:`dlib_chip_template` is the framing of dlib's ``get_face_chip``, which dlib's identity
network was trained on.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable

import numpy as np

from mtfap.backbones.base import InputSpec
from mtfap.data.decode import as_rgb_array
from mtfap.data.transforms import centre_crop_box
from mtfap.errors import DataError
from mtfap.faces.align import AlignmentTemplate, apply_affine
from mtfap.faces.detect import FaceDetector, make_detector
from mtfap.faces.landmarks import LandmarkModel
from mtfap.faces.models import import_dlib


def measure_template(images: Iterable, spec: InputSpec, landmark_model: LandmarkModel,
                     detector: FaceDetector | str = "hog", *, limit: int | None = None,
                     source: str = "training images") -> AlignmentTemplate:
    """The landmark positions of a training set, in the model's input pixels.

    Each image (as stored, e.g. CelebA's aligned 178 x 218 or 102 x 125 images) goes through
    detection (largest face) and landmarks; the points are mapped through the training
    preprocessing (the centre square of ``spec.crop`` of the shorter side, resized to
    ``spec.size``, as :func:`mtfap.data.transforms.preprocess` does) and the per-point median
    over the images is the template. The median, not the mean: a landmark fit that failed on a
    few images moves it by at most a fraction of a pixel.

    Parameters
    ----------
    images : uint8 RGB arrays (or PIL images) of training images.
    spec : the backbone's input spec.
    landmark_model, detector : what finds the points (a detector instance or name).
    limit : use at most this many images (the first ones).
    source : recorded in the template.

    Returns
    -------
    AlignmentTemplate with ``count`` the number of faces measured and ``spread`` the RMS
    distance of single faces from each point. Images without a face are skipped and reported
    with a warning.

    Raises
    ------
    DataError
        No face was found in any image.
    """
    # Training images stand upright: "auto" need not search turned copies of them.
    detector = make_detector(detector, **({"turns": False} if detector == "auto" else {}))
    height, width = (int(v) for v in spec.size)
    measured, seen = [], 0
    for image in images:
        if limit is not None and seen >= limit:
            break
        seen += 1
        image = as_rgb_array(image)
        # A detector given ready-made may still search turned copies: such faces are not measured.
        faces = [face for face in detector.detect(image) if not face.turn]
        if not faces:
            continue
        points = landmark_model(image, faces[0].box)
        measured.append(apply_affine(_preprocess_matrix(image.shape, spec, width, height),
                                     points))
    if seen == 0:
        raise ValueError("no images were given to measure the template on")
    if not measured:
        raise DataError(f"no face found in any of the {seen} images, so no template can be "
                        f"measured ({source})", hint="check that the images show faces; small "
                        "faces need the detector's upsample option or the 'cnn' detector")
    if len(measured) < seen:
        warnings.warn(f"no face found in {seen - len(measured)} of {seen} images; the alignment "
                      f"template is measured on the other {len(measured)}", stacklevel=2)
    stack = np.stack(measured)
    median = np.median(stack, axis=0)
    spread = np.sqrt(((stack - median) ** 2).sum(axis=2).mean(axis=0))
    return AlignmentTemplate(points=median, size=(height, width),
                             landmarks=landmark_model.landmark_name,
                             source=f"{source} ({len(measured)} of {seen} images had a face)",
                             spread=spread, count=len(measured))


def _preprocess_matrix(shape, spec: InputSpec, width: int, height: int) -> np.ndarray:
    """The (2, 3) map from a stored image's pixels to the model's input pixels under the
    training preprocessing (centre square crop, resized to ``spec.size``)."""
    left, top, right, bottom = centre_crop_box(shape[1], shape[0], spec.crop)
    # PIL's resize with ``box`` samples output pixel u at box edge + (u + 0.5) * box / size in
    # pixel-edge coordinates; in pixel-centre coordinates that is the map below.
    scale_x, scale_y = width / (right - left), height / (bottom - top)
    return np.array([[scale_x, 0.0, (0.5 - left) * scale_x - 0.5],
                     [0.0, scale_y, (0.5 - top) * scale_y - 0.5]])


def dlib_chip_template(size: int = 150, padding: float = 0.25) -> AlignmentTemplate:
    """The 5-point template of dlib's ``get_face_chip(image, face, size, padding)``.

    dlib's identity network (``dlib_face_recognition_resnet_model_v1``) was trained on such
    150 x 150 chips with padding 0.25; :func:`~mtfap.faces.align.align` onto this template
    reproduces them.

    The points are read from dlib itself rather than copied from its source. For a face,
    ``get_face_chip_details`` returns the extraction rectangle and angle of a least-squares
    similarity from dlib's template to the landmarks (residuals in photo pixels). That fit is
    linear in the landmark coordinates, so moving one coordinate at a time gives its matrix,
    the pseudo-inverse of the fit's design matrix, whose first column is the template (to
    float rounding). dlib then spreads ``size`` chip pixels over a rectangle one photo pixel
    narrower than ``size`` template units, a shift of half a chip pixel at scale 1 (one chip
    pixel per photo pixel), which is where the returned points are taken; at other scales
    dlib's own chips differ from them by 1 / (size * scale) of the size (0.7% for a face of
    150 photo pixels, less for larger ones).

    >>> dlib_chip_template().points[4].round(2)   # the bottom of the nose
    array([73.51, 87.28])
    """
    if int(size) != size or size < 8:
        raise ValueError(f"size must be a whole number of pixels >= 8, got {size!r}")
    if not padding >= 0:
        raise ValueError(f"padding must be >= 0, got {padding!r}")
    dlib = import_dlib()
    size = int(size)

    def fitted_similarity(points):
        """(a, b, tx, ty) of dlib's fit: photo = [[a, -b], [b, a]] template + t."""
        shape = dlib.full_object_detection(
            dlib.rectangle(0, 0, 4 * size, 4 * size),
            [dlib.point(int(x), int(y)) for x, y in points])
        details = dlib.get_face_chip_details(shape, size, padding)
        rect = details.rect  # centred on the fit's image of the template centre; width() is
        scale = rect.width() / size  # size * scale, counted like dlib's pixel rectangles
        a, b = scale * math.cos(details.angle), scale * math.sin(details.angle)
        centre = ((rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2)
        return np.array([a, b, centre[0] - (a - b) * size / 2, centre[1] - (a + b) * size / 2])

    # Any face-like landmarks will do: the fit is linear, so the result does not depend on them.
    base = np.array([[4, 2], [3, 2], [1, 2], [2, 2], [2.5, 3.5]]) * size / 2
    base = np.rint(base).astype(np.int64)
    reference = fitted_similarity(base)
    columns = []
    for index in range(base.size):
        moved = base.ravel().copy()
        moved[index] += size
        columns.append((fitted_similarity(moved.reshape(-1, 2)) - reference) / size)
    # pinv of the columns is the design matrix, rows [x, -y, 1, 0] and [y, x, 0, 1] per point.
    design = np.linalg.pinv(np.column_stack(columns))
    template = np.column_stack([design[0::2, 0], design[1::2, 0]])
    return AlignmentTemplate(points=template - 0.5, size=(size, size), landmarks="dlib5",
                             source=f"dlib get_face_chip(size={size}, padding={padding})",
                             count=0)
