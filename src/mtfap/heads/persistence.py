"""Heads fitted on fixed features, saved and loaded without pickle.

A fitted estimator is two plain files in a folder: ``heads.npz`` (its fitted arrays) and
``heads.json`` (method, hyper-parameters, the other fitted values and the caller's ``meta``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mtfap.errors import DataError
from mtfap.heads.params import ESTIMATOR, check_params
from mtfap.heads.registry import METHODS, make_head_estimator
from mtfap.io import read_npz, write_json, write_npz

FORMAT, VERSION = "mtfap-heads", 1
_REFIT = ("the run folder is damaged or was not written by mtfap; fit it again with "
          "`mtfap fit-heads`")


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
    description = {"format": FORMAT, "version": VERSION, "method": method,
                   "params": estimator.get_params(),
                   "fitted": values, "meta": meta or {}}
    write_npz(folder / "heads.npz", arrays)
    write_json(folder / "heads.json", description)
    return folder


def read_heads_description(folder: str | Path) -> dict:
    """The checked content of ``folder/heads.json``: its method is known and its parameters
    are the method's, with values in range (:mod:`mtfap.heads.params`).

    Raises FileNotFoundError when the file is missing and DataError naming it when it is not
    valid JSON or not an mtfap heads description.
    """
    path = Path(folder) / "heads.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (write it with `mtfap fit-heads`)")
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        reason = " ".join(str(exc).split())
        raise DataError(f"not valid JSON ({reason})", path, hint=_REFIT) from None
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise DataError("not an mtfap heads file", path, hint=_REFIT)
    if description.get("version") != VERSION:
        raise DataError(f"heads file version {description.get('version')!r} is not supported "
                        f"(this mtfap reads version {VERSION})", path, hint=_REFIT)
    method = description.get("method")
    if not isinstance(method, str) or method not in METHODS:
        raise DataError(f"unknown head method {method!r}", path, hint=_REFIT)
    for key, kind in (("params", dict), ("fitted", dict), ("meta", dict)):
        if not isinstance(description.get(key, {}), kind):
            raise DataError(f"{key!r} must be a JSON object", path, hint=_REFIT)
    try:
        description["params"] = check_params(method, description.get("params", {}), ESTIMATOR)
    except ValueError as exc:
        raise DataError(str(exc), path, hint=_REFIT) from None
    return description


def load_fitted_heads(folder: str | Path):
    """The estimator saved by :func:`save_fitted_heads`, ready for ``predict_proba``.

    Only what the estimator declares may be set: its parameters (checked by
    :func:`read_heads_description`) and its fitted attributes (``fitted_attributes()``), whose
    shapes must fit together; anything else in the files is an error naming them.
    """
    folder = Path(folder)
    description = read_heads_description(folder)
    arrays_path = folder / "heads.npz"
    if not arrays_path.is_file():
        raise FileNotFoundError(f"{arrays_path}: not found (write it with `mtfap fit-heads`)")
    arrays = read_npz(arrays_path, "heads file", _REFIT)
    estimator = make_head_estimator(description["method"], description["params"])
    allowed = set(estimator.fitted_attributes())
    fitted = {}
    for name, value in description["fitted"].items():
        if isinstance(value, dict) and set(value) == {"arrays"} \
                and isinstance(value["arrays"], int):
            parts = [f"{name}/{i}" for i in range(max(value["arrays"], 0))]
            missing = [part for part in parts if part not in arrays]
            if missing:
                raise DataError(f"has no array {missing[0]!r}", arrays_path, hint=_REFIT)
            value = [arrays.pop(part) for part in parts]
        fitted[name] = value
    fitted.update(arrays)
    unknown = sorted(name for name in fitted if name not in allowed)
    if unknown:
        raise DataError(f"sets {', '.join(map(repr, unknown[:5]))}, which are not fitted values of "
                        f"{description['method']} heads", folder / "heads.json", hint=_REFIT)
    _check_fitted(fitted, folder)
    for name, value in fitted.items():
        setattr(estimator, name, value)
    return estimator


def _check_fitted(fitted: dict, folder: Path) -> None:
    """The values ``predict_proba`` reads must be there and fit together."""
    def bad(message):
        return DataError(message, folder / "heads.json", hint=_REFIT)

    for name in ("coef_", "intercept_", "attributes_", "n_features_in_"):
        if name not in fitted:
            raise bad(f"has no fitted {name}")
    attributes = fitted["attributes_"]
    if not isinstance(attributes, list) or not attributes or \
            not all(isinstance(a, str) for a in attributes):
        raise bad("attributes_ must be a list of names")
    k, d = len(attributes), fitted["n_features_in_"]
    if not isinstance(d, int) or isinstance(d, bool) or d < 1:
        raise bad(f"n_features_in_ must be a positive whole number, got {d!r}")
    for name, shape in (("coef_", (k, d)), ("intercept_", (k,)), ("mean_", (d,)),
                        ("scale_", (d,)), ("graph_", (k, k))):
        value = fitted.get(name)
        required = name in ("coef_", "intercept_")
        if (required or value is not None) and (
                not isinstance(value, np.ndarray) or value.shape != shape
                or not np.issubdtype(value.dtype, np.number) or not np.isfinite(value).all()):
            raise bad(f"{name} must be finite numbers of shape {shape} ({k} attributes, "
                      f"{d} features), found {getattr(value, 'shape', type(value).__name__)}")
