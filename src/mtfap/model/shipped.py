"""The models that ship inside the package, by name (``mtfap models`` lists them).

Each lives in ``mtfap/resources/models/NAME/`` as an exported model (``mtfap.model.store``):
nothing is downloaded; the weights are checked against their recorded SHA-256 when loaded.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from mtfap.model.store import is_exported_model, read_description

DEFAULT_MODEL = "celeba-dlib-finetuned"


def models_folder() -> Path:
    return Path(str(resources.files("mtfap").joinpath("resources/models")))


def shipped_models() -> dict[str, Path]:
    """Name -> folder of every model inside the package."""
    folder = models_folder()
    if not folder.is_dir():
        return {}
    return {path.name: path for path in sorted(folder.iterdir()) if is_exported_model(path)}


def describe_shipped() -> list[dict]:
    """The name, version, description and card summary of each shipped model."""
    rows = []
    for name, folder in shipped_models().items():
        description = read_description(folder)
        rows.append({"name": name, "version": description["version"],
                     "default": name == DEFAULT_MODEL,
                     "description": description.get("description", ""),
                     "card": description.get("card", {}),
                     "size_mb": round(sum(p.stat().st_size for p in folder.iterdir()) / 2**20, 2)})
    return rows
