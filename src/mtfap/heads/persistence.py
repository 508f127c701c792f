"""Heads fitted on fixed features, saved and loaded without pickle.

A fitted estimator is two plain files in a folder: ``heads.npz`` (its fitted arrays) and
``heads.json`` (method, hyper-parameters, the other fitted values and the caller's ``meta``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mtfap.heads.registry import make_head_estimator
from mtfap.io import atomic_write, write_json


def _fitted_attributes(estimator) -> tuple[dict, dict]:
    """Split the fitted attributes (``name_``) into arrays (for .npz) and the rest (for JSON)."""
    arrays, values = {}, {}
    for name, value in vars(estimator).items():
        if not name.endswith("_") or name.startswith("_"):
            continue
        if isinstance(value, np.ndarray):
            arrays[name] = value
        elif isinstance(value, list) and value and all(isinstance(v, np.ndarray) for v in value):
            for i, part in enumerate(value):  # per-group factors such as L_ and S_
                arrays[f"{name}/{i}"] = part
            values[name] = {"arrays": len(value)}
        else:
            values[name] = value
    return arrays, values


def save_fitted_heads(estimator, method: str, folder: str | Path, meta: dict | None = None) -> Path:
    """Write ``heads.npz`` (fitted arrays) and ``heads.json`` (method, parameters, the other
    fitted values, ``meta``) into ``folder``, atomically. No pickle: both are plain data."""
    folder = Path(folder)
    arrays, values = _fitted_attributes(estimator)
    description = {"format": "mtfap-heads", "version": 1, "method": method,
                   "params": estimator.get_params(),
                   "fitted": values, "meta": meta or {}}
    def write_arrays(tmp):
        with open(tmp, "wb") as handle:  # a file object: np.savez would append .npz to a name
            np.savez(handle, **arrays)

    atomic_write(folder / "heads.npz", write_arrays)
    write_json(folder / "heads.json", description)
    return folder


def load_fitted_heads(folder: str | Path):
    """The estimator saved by :func:`save_fitted_heads`, ready for ``predict_proba``."""
    folder = Path(folder)
    for name in ("heads.json", "heads.npz"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name}: not found (write it with `mtfap fit-heads`)")
    description = json.loads((folder / "heads.json").read_text())
    if description.get("format") != "mtfap-heads":
        raise ValueError(f"{folder / 'heads.json'}: not an mtfap heads file")
    estimator = make_head_estimator(description["method"])
    estimator.set_params(**description["params"])
    with np.load(folder / "heads.npz", allow_pickle=False) as stored:
        arrays = {key: stored[key] for key in stored.files}
    for name, value in description["fitted"].items():
        if isinstance(value, dict) and set(value) == {"arrays"}:
            value = [arrays.pop(f"{name}/{i}") for i in range(value["arrays"])]
        setattr(estimator, name, value)
    for name, value in arrays.items():
        setattr(estimator, name, value)
    return estimator
