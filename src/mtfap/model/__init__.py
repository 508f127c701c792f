"""A trained model as its own part: description, network, files, and one door to open any of
them, :func:`load_model`.

- :class:`ModelSpec` (``spec``): what a model is without its weights, saved as ``model.json``;
- :class:`AttributeModel`, :func:`build_model` (``network``): backbone + heads from a spec;
- :class:`Predictor` (``predictor``): face images in, probabilities, decisions, features and
  identity descriptors out;
- ``runs``: train runs and fit-heads runs opened from their folders;
- ``store``, ``shipped``: exported models (safetensors + hash) and those inside the package.
"""

from __future__ import annotations

from pathlib import Path

from mtfap.errors import DataError, did_you_mean
from mtfap.model.network import AttributeModel, build_model
from mtfap.model.predictor import Predictor
from mtfap.model.runs import open_run
from mtfap.model.shipped import DEFAULT_MODEL, default_model_name, shipped_models
from mtfap.model.spec import ModelSpec
from mtfap.model.store import is_exported_model, load_exported


def load_model(name_or_path: str | Path | None = None, *, device: str = "cpu",
               checkpoint: str = "best") -> Predictor:
    """Open any trained model as a :class:`Predictor`.

    name_or_path : the name of a model shipped inside the package (``mtfap models``; None: the
        default one), the folder of an exported model, or a run folder of ``mtfap train``
        (``checkpoint`` "best" or "last") or ``mtfap fit-heads``.
    """
    if name_or_path is None:
        name_or_path = default_model_name()
    shipped = shipped_models()
    if str(name_or_path) in shipped:
        return load_exported(shipped[str(name_or_path)], device=device)
    path = Path(name_or_path)
    if not path.exists():
        raise DataError(f"no shipped model or folder called {str(name_or_path)!r}."
                        f"{did_you_mean(str(name_or_path), shipped)}", None,
                        hint=f"shipped models: {', '.join(shipped) or 'none'}; or give a run "
                             "folder")
    if is_exported_model(path):
        return load_exported(path, device=device)
    return open_run(path, checkpoint).predictor(device=device)


__all__ = ["AttributeModel", "ModelSpec", "Predictor", "build_model", "load_model", "open_run",
           "DEFAULT_MODEL"]
