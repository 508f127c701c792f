"""The one in-memory form of every dataset: image keys, labels with a mask, identities, splits."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import numpy as np

from mtfap.attributes import resolve_attributes
from mtfap.data.images import ImageSource

SPLITS = {"train": 0, "val": 1, "test": 2}


@dataclass
class FaceDataset:
    """Face images with (possibly missing) binary attribute labels.

    labels : (n, k) uint8 in {0, 1}; meaningless where ``mask`` is False.
    mask : (n, k) bool, True where the label is known. A missing label is never a negative.
    identities : (n,) int64 person ids, or None.
    split : (n,) int8, 0/1/2 = train/val/test, or None when the dataset has no split.
    """

    name: str
    source: ImageSource
    keys: list[str]
    attributes: list[str]
    labels: np.ndarray
    mask: np.ndarray
    identities: np.ndarray | None = None
    split: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        n, k = len(self.keys), len(self.attributes)
        self.labels = np.asarray(self.labels, dtype=np.uint8).reshape(n, k)
        self.mask = np.asarray(self.mask, dtype=bool).reshape(n, k)
        if self.identities is not None:
            self.identities = np.asarray(self.identities, dtype=np.int64)
        if self.split is not None:
            self.split = np.asarray(self.split, dtype=np.int8)

    def __len__(self) -> int:
        return len(self.keys)

    def subset(self, index) -> "FaceDataset":
        """Rows ``index`` (an index array or a boolean mask), as a new dataset."""
        index = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index)
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return replace(self, keys=[self.keys[i] for i in index], labels=self.labels[index],
                       mask=self.mask[index], identities=pick(self.identities),
                       split=pick(self.split))

    def split_indices(self, name: str) -> np.ndarray:
        """Row indices of split ``name`` ("train", "val" or "test")."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; use one of {', '.join(SPLITS)}")
        if self.split is None:
            raise ValueError(f"dataset {self.name!r} has no split; add a split column (train, "
                             "val or test per image) to its table, or make one in Python with "
                             "mtfap.data.splits.identity_disjoint_split")
        return np.flatnonzero(self.split == SPLITS[name])

    def get_split(self, name: str) -> "FaceDataset":
        return self.subset(self.split_indices(name))

    def labels_digest(self) -> str:
        """A digest of everything of the dataset but its images: keys, attribute names, labels,
        mask, split and identities. With ``source.fingerprint()`` (the images) it keys what is
        derived from the dataset (features files, training runs)."""
        digest = hashlib.sha1()
        for part in ("\n".join(self.keys), "\n".join(self.attributes)):
            digest.update(part.encode() + b"\0")
        for array in (self.labels, self.mask, self.split, self.identities):
            digest.update(b"none\0" if array is None else f"{array.dtype}{array.shape}".encode()
                          + np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:16]

    def select_attributes(self, names) -> "FaceDataset":
        """Keep only the attributes ``names`` (unknown names raise with a suggestion)."""
        names = resolve_attributes(names, self.attributes)
        cols = [self.attributes.index(a) for a in names]
        return replace(self, attributes=list(names), labels=self.labels[:, cols],
                       mask=self.mask[:, cols])
