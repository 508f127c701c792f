"""The models that ship inside the package, by name (``mtfap models`` lists them).

Each lives in ``mtfap/resources/models/NAME/`` as an exported model (``mtfap.model.store``):
nothing is downloaded; the weights are checked against their recorded SHA-256 when loaded.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from mtfap.model.store import is_exported_model, read_description

DEFAULT_MODEL = "celeba-fairface-dlib-finetuned"


def models_folder() -> Path:
    return Path(str(resources.files("mtfap").joinpath("resources/models")))


def shipped_models() -> dict[str, Path]:
    """Name -> folder of every model inside the package."""
    folder = models_folder()
    if not folder.is_dir():
        return {}
    return {path.name: path for path in sorted(folder.iterdir()) if is_exported_model(path)}


def default_model_name() -> str:
    """:data:`DEFAULT_MODEL` when it ships, else the first shipped model (by name), so that an
    installation works with whichever models it has."""
    shipped = shipped_models()
    if DEFAULT_MODEL in shipped or not shipped:
        return DEFAULT_MODEL
    return next(iter(shipped))


def describe_shipped() -> list[dict]:
    """The name, version, description and card summary of each shipped model."""
    rows = []
    for name, folder in shipped_models().items():
        description = read_description(folder)
        rows.append({"name": name, "version": description["version"],
                     "default": name == default_model_name(),
                     "description": description.get("description", ""),
                     "card": description.get("card", {}),
                     "size_mb": round(sum(p.stat().st_size for p in folder.iterdir()) / 2**20, 3)})
    return rows
