"""Fixed (frozen-backbone) features of a dataset, saved once and reused by the heads."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mtfap.data.dataset import SPLITS


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

    def __len__(self) -> int:
        return len(self.X)

    def subset(self, index) -> "FeatureSet":
        index = np.asarray(index)
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return FeatureSet(self.X[index], self.labels[index], self.mask[index], self.attributes,
                          [self.keys[i] for i in np.arange(len(self.keys))[index]],
                          pick(self.split), pick(self.identities), dict(self.meta))

    def get_split(self, name: str) -> "FeatureSet":
        if self.split is None:
            raise ValueError("these features carry no train/val/test split")
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; use one of {', '.join(SPLITS)}")
        return self.subset(np.flatnonzero(self.split == SPLITS[name]))

    def save(self, path: str | Path) -> Path:
        """Write an .npz atomically (temporary file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = dict(X=self.X.astype(np.float32), labels=self.labels, mask=self.mask,
                      keys=np.array(self.keys), attributes=np.array(self.attributes),
                      meta=np.array(json.dumps(self.meta)))
        if self.split is not None:
            arrays["split"] = self.split
        if self.identities is not None:
            arrays["identities"] = self.identities
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
        os.close(fd)
        try:
            np.savez(tmp, **arrays)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "FeatureSet":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: features file not found (make one with `mtfap features`)")
        with np.load(path, allow_pickle=False) as z:
            get = lambda k: z[k] if k in z.files else None  # noqa: E731
            return cls(z["X"], z["labels"].astype(np.uint8), z["mask"].astype(bool),
                       [str(a) for a in z["attributes"]], [str(k) for k in z["keys"]],
                       get("split"), get("identities"), json.loads(str(z["meta"])))
