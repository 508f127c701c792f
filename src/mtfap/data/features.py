"""Fixed (frozen-backbone) features of a dataset, saved once and reused by the heads.

A features file is an ``.npz`` of plain arrays (no pickle): ``X`` (n, d), ``labels`` and
``mask`` (n, k), ``keys`` (n,), ``attributes`` (k,), optional ``split`` and ``identities`` (n,),
and ``meta`` (a JSON object). :meth:`FeatureSet.load` checks all of it and names the file in
every error, so a truncated or foreign file never reaches the heads.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mtfap.data.dataset import SPLITS
from mtfap.errors import DataError
from mtfap.io import read_npz, write_npz

_REMAKE = "make it again with `mtfap features`"


@dataclass
class FeatureSet:
    """X (n, d) float32 features with the labels, mask, split and identities of their images."""

    X: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    attributes: list[str]
    keys: list[str]
    split: np.ndarray | None = None
    identities: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    path: Path | None = field(default=None, repr=False, compare=False)  # the file it came from

    def __len__(self) -> int:
        return len(self.X)

    def subset(self, index) -> "FeatureSet":
        index = np.asarray(index)
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return FeatureSet(self.X[index], self.labels[index], self.mask[index], self.attributes,
                          [self.keys[i] for i in np.arange(len(self.keys))[index]],
                          pick(self.split), pick(self.identities), dict(self.meta), self.path)

    def get_split(self, name: str) -> "FeatureSet":
        if self.split is None:
            raise DataError("these features carry no train/val/test split", self.path,
                            hint="extract features of a dataset with a split")
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; use one of {', '.join(SPLITS)}")
        return self.subset(np.flatnonzero(self.split == SPLITS[name]))

    def save(self, path: str | Path) -> Path:
        """Write an .npz atomically (a temporary file beside it, then a rename)."""
        arrays = dict(X=self.X.astype(np.float32), labels=self.labels, mask=self.mask,
                      keys=np.array(self.keys, dtype=str),
                      attributes=np.array(self.attributes, dtype=str),
                      meta=np.array(json.dumps(self.meta)))
        if self.split is not None:
            arrays["split"] = self.split
        if self.identities is not None:
            arrays["identities"] = self.identities
        return write_npz(path, arrays)

    @classmethod
    def load(cls, path: str | Path) -> "FeatureSet":
        """Read a features file written by :meth:`save`.

        Raises
        ------
        DataError
            Naming the file: missing, a folder, not an .npz, damaged or truncated, holding
            arrays that need pickle, or arrays that do not fit together (a missing ``X``,
            fewer rows than labels, non-finite features, labels other than 0/1, ...).
        """
        path = Path(path)
        if not path.exists():
            raise DataError("features file not found", path,
                            hint="make one with `mtfap features DATA --out FILE.npz`")
        if path.is_dir():
            raise DataError("is a folder, not a features file", path,
                            hint="give the .npz written by `mtfap features`")
        return cls(**_checked_arrays(read_npz(path, "features file", _REMAKE), path), path=path)


def _checked_arrays(arrays: dict, path: Path) -> dict:
    """The FeatureSet fields of ``arrays`` read from ``path``, after checking that they fit."""
    def bad(message):
        return DataError(message, path, hint=f"the file is damaged or was not written by "
                                             f"mtfap; {_REMAKE}")

    for name in ("X", "labels", "mask", "keys", "attributes"):
        if name not in arrays:
            raise bad(f"has no array {name!r}")
    X = arrays["X"]
    numeric = np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)
    if X.ndim != 2 or not numeric:
        raise bad(f"X must be a 2-D array of numbers, found shape {X.shape} of {X.dtype}")
    n = len(X)
    if not np.isfinite(X).all():
        rows = np.flatnonzero(~np.isfinite(X).all(axis=1))
        raise bad(f"X has non-finite values (NaN or infinite) in {rows.size} rows, first row "
                  f"{rows[0]}")
    attributes, keys = arrays["attributes"], arrays["keys"]
    if attributes.ndim != 1 or keys.ndim != 1:
        raise bad("keys and attributes must be 1-D arrays of names")
    k = len(attributes)
    for name in ("labels", "mask"):
        if arrays[name].shape != (n, k):
            raise bad(f"{name} has shape {arrays[name].shape}, expected ({n}, {k}): one row per "
                      f"row of X ({n}) and one column per attribute ({k})")
    labels, mask = arrays["labels"], arrays["mask"]
    if not np.isin(labels, (0, 1)).all() or not np.isin(mask, (0, 1)).all():
        raise bad("labels and mask must hold 0/1 values")
    if len(keys) != n:
        raise bad(f"{len(keys)} image keys for {n} rows of X")
    names = [str(a) for a in attributes]
    if len(set(names)) != k:
        raise bad("attribute names are repeated")
    optional = {}
    for name in ("split", "identities"):
        value = arrays.get(name)
        if value is not None and (value.shape != (n,)
                                  or not np.issubdtype(value.dtype, np.integer)):
            raise bad(f"{name} must be {n} whole numbers (one per row of X), found shape "
                      f"{value.shape} of {value.dtype}")
        optional[name] = value
    split = optional["split"]
    if split is not None and not np.isin(split, list(SPLITS.values())).all():
        raise bad("split must hold 0, 1 or 2 (train, val, test)")
    try:
        meta = json.loads(str(arrays["meta"])) if "meta" in arrays else {}
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise bad("meta is not a JSON object")
    return dict(X=X, labels=labels.astype(np.uint8), mask=mask.astype(bool), attributes=names,
                keys=[str(key) for key in keys], meta=meta, **optional)


def file_fingerprint(path: str | Path) -> str:
    """SHA-256 of a file's bytes (first 16 hex digits): what identifies a features file that a
    run was fitted on (75 ms for 24 MB, the size of the CelebA subset's dlib features)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
