"""Exported models: a folder with ``model.json`` and ``weights.safetensors``, checked by hash.

An exported model is what ships inside the package (``mtfap/resources/models/NAME/``) and what
``mtfap export`` writes from a run: the backbone's weights and the heads as their linear map on
the backbone's GAP features (``logits = features @ W + b``; the structure the heads were
trained with, low-rank factors or a task graph, is described in the card but not needed to
predict), stored as safetensors (no pickle) in float16 or float32. ``model.json`` holds the
name, version, the :class:`~mtfap.model.spec.ModelSpec`, the SHA-256 of the weights file and the
model card's figures; loading refuses a weights file whose hash differs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mtfap.errors import DataError
from mtfap.io import atomic_write, write_json
from mtfap.model.network import build_model
from mtfap.model.predictor import Predictor
from mtfap.model.spec import ModelSpec

EXPORT_FORMAT = "mtfap-exported-model"
WEIGHTS_FILE = "weights.safetensors"
DESCRIPTION_FILE = "model.json"


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_exported_model(folder: str | Path) -> bool:
    folder = Path(folder)
    if not (folder / DESCRIPTION_FILE).is_file():
        return False
    try:
        return json.loads((folder / DESCRIPTION_FILE).read_text()).get("format") == EXPORT_FORMAT
    except (OSError, ValueError):
        return False


def export_model(predictor: Predictor, folder: str | Path, *, name: str, version: str,
                 spec: ModelSpec | None = None, card: dict | None = None,
                 dtype: torch.dtype = torch.float16, description: str = "",
                 backbone_weights: str = "file") -> Path:
    """Write ``predictor``'s network into ``folder`` as an exported model (see the module
    docstring); ``spec`` (default the predictor's) may add thresholds, views, the template.

    backbone_weights : "file" stores the backbone's weights; "package" stores only the heads
        and loads the backbone's packaged weights (``create_backbone(pretrained=True)``) when
        the model is opened: for heads fitted on a frozen packaged backbone, a few kB.
    """
    if backbone_weights not in ("file", "package"):
        raise ValueError(f"backbone_weights must be 'file' or 'package', got {backbone_weights!r}")
    folder = Path(folder)
    spec = spec or predictor.spec
    model = predictor.model
    W, b = model.heads.linear_map()
    tensors = {} if backbone_weights == "package" else {
        f"backbone.{k}": v.detach().to(dtype).contiguous().cpu()
        for k, v in model.backbone.state_dict().items() if v.is_floating_point()}
    tensors["heads.weight"] = W.detach().to(dtype).contiguous().cpu()
    tensors["heads.bias"] = b.detach().to(dtype).contiguous().cpu()
    atomic_write(folder / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp))
    stored = ModelSpec.from_dict({**spec.to_dict(), "heads": "linear", "heads_params": {}})
    write_json(folder / DESCRIPTION_FILE, {
        "format": EXPORT_FORMAT, "name": name, "version": version, "description": description,
        "trained_heads": {"method": spec.heads, "params": spec.heads_params},
        "spec": stored.to_dict(),
        "weights": {"file": WEIGHTS_FILE, "sha256": sha256_of(folder / WEIGHTS_FILE),
                    "dtype": str(dtype).removeprefix("torch."), "backbone": backbone_weights},
        "card": card or {}})
    return folder


def read_description(folder: str | Path) -> dict:
    path = Path(folder) / DESCRIPTION_FILE
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("not an exported mtfap model (no model.json)", Path(folder)) from None
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the model description ({exc})", path) from None
    if not isinstance(description, dict) or description.get("format") != EXPORT_FORMAT:
        raise DataError("not an exported mtfap model", path)
    return description


def load_exported(folder: str | Path, device: str | torch.device = "cpu") -> Predictor:
    """The :class:`Predictor` of an exported model; the weights file must match its hash."""
    folder = Path(folder)
    description = read_description(folder)
    spec = ModelSpec.from_dict(description["spec"], str(folder / DESCRIPTION_FILE))
    weights = folder / description["weights"]["file"]
    if not weights.is_file():
        raise DataError("weights file not found", weights, hint="the model folder is incomplete")
    digest = sha256_of(weights)
    if digest != description["weights"]["sha256"]:
        raise DataError(f"weights file does not match its recorded SHA-256 "
                        f"({digest[:12]}... instead of {description['weights']['sha256'][:12]}...)",
                        weights, hint="the file is corrupt or was replaced; reinstall the model")
    try:
        tensors = load_file(weights)
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise DataError(f"cannot read weights ({exc})", weights) from None
    W, b = tensors.pop("heads.weight").float(), tensors.pop("heads.bias").float()
    packaged = description["weights"].get("backbone", "file") == "package"
    model = build_model(spec, pretrained=packaged, linear_map=(W, b))
    if not packaged:
        state = {k.removeprefix("backbone."): v.float() for k, v in tensors.items()}
        missing, unexpected = model.backbone.load_state_dict(state, strict=False)
        missing = [k for k in missing if k in dict(model.backbone.named_parameters())]
        if missing or unexpected:
            raise DataError(f"weights do not fit the {spec.backbone} backbone (missing "
                            f"{missing[:3]}, unexpected {unexpected[:3]})", weights)
    return Predictor(model, spec, name=description["name"], version=description["version"],
                     source=str(folder), card=description.get("card", {}), device=device)


def save_card(folder: str | Path, card: dict) -> Path:
    """Store a card's summary (not its per-attribute rows) in an exported model's model.json."""
    folder = Path(folder)
    description = read_description(folder)
    keep = {k: v for k, v in card.items() if k not in ("per_attribute", "calibration")}
    if "fairface" in keep:
        keep["fairface"] = {k: card["fairface"][k] for k in
                            ("all", "adults_20_plus", "male_accuracy_gap_by_race", "part")
                            if k in card["fairface"]}
    description["card"] = {**description.get("card", {}), **keep}
    return write_json(folder / DESCRIPTION_FILE, description)
