"""Identity-disjoint splits, scarce-label versions of a dataset, and the rarest attributes."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np

from mtfap.attributes import resolve_attributes
from mtfap.data.dataset import FaceDataset


def identity_disjoint_split(dataset: FaceDataset, ratios=(0.8, 0.1, 0.1), seed: int = 0) -> FaceDataset:
    """A train/val/test split in which no person appears in two parts.

    The identities are shuffled with ``seed``; walking through them, each identity goes to the
    part whose share of the images its middle image falls in: identity j, preceded by c_j
    images and owning n_j, goes to part p with R_{p-1} <= (c_j + n_j / 2) / n < R_p, where R
    are the cumulative ratios. Image shares then match ``ratios`` to within about one
    identity's images.

    Parameters
    ----------
    dataset : must have ``identities``; without them every image counts as its own person
        (a warning says so, since a person's images may then land in two parts).
    ratios : shares of train, val and test; non-negative, summing to 1.
    seed : seed of the shuffle.

    Returns
    -------
    A copy of ``dataset`` with ``split`` replaced (0/1/2 = train/val/test).
    """
    ratios = np.asarray(ratios, dtype=float)
    if ratios.shape != (3,) or (ratios < 0).any() or not np.isclose(ratios.sum(), 1.0):
        raise ValueError(f"ratios must be three non-negative shares of train, val and test that "
                         f"sum to 1, got {tuple(ratios.tolist())}")
    identities = dataset.identities
    if identities is None:
        warnings.warn(f"dataset {dataset.name!r} has no identities: splitting images at random, so "
                      "images of one person may end up in two parts", stacklevel=2)
        identities = np.arange(len(dataset))
    people, inverse, counts = np.unique(identities, return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(people))
    before = np.cumsum(counts[order]) - counts[order]
    middle = (before + counts[order] / 2) / max(len(dataset), 1)
    part_of_shuffled = np.searchsorted(np.cumsum(ratios)[:2], middle, side="right")
    part = np.empty(len(people), dtype=np.int8)
    part[order] = part_of_shuffled
    return replace(dataset, split=part[inverse].astype(np.int8),
                   meta={**dataset.meta, "split": {"rule": "identity-disjoint",
                                                   "ratios": ratios.tolist(), "seed": seed}})


def scarce_labels(dataset: FaceDataset, fraction: float, attributes=None, seed: int = 0,
                  split: str | None = None) -> FaceDataset:
    """Hide labels so that only ``fraction`` of the known labels of some attributes remain.

    For each chosen attribute, the known positives and the known negatives are subsampled
    separately (without replacement), keeping round(fraction * count) of each but at least one
    when there is any; the positive rate is thus preserved and both classes stay present.
    Hidden labels become missing (mask False), never negative. Other attributes are untouched.

    Parameters
    ----------
    dataset : the dataset; it is not modified.
    fraction : share of known labels kept, in [0, 1].
    attributes : names of the attributes made scarce (default: all).
    seed : seed of the subsampling.
    split : only rows of this split ("train", say) lose labels; default all rows.

    Returns
    -------
    A copy with a reduced ``mask`` (``labels`` unchanged).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    names = resolve_attributes(attributes, dataset.attributes) if attributes is not None else dataset.attributes
    rows = np.arange(len(dataset)) if split is None else dataset.split_indices(split)
    rng = np.random.default_rng(seed)
    mask = dataset.mask.copy()
    for name in names:
        col = dataset.attributes.index(name)
        for value in (0, 1):
            known = rows[mask[rows, col] & (dataset.labels[rows, col] == value)]
            if fraction == 0 or len(known) == 0:
                keep = 0
            else:
                keep = max(1, int(round(fraction * len(known))))
            hidden = rng.permutation(known)[keep:]
            mask[hidden, col] = False
    return replace(dataset, mask=mask,
                   meta={**dataset.meta, "scarce_labels": {"fraction": fraction, "seed": seed,
                                                           "attributes": list(names), "split": split}})


def least_frequent_attributes(dataset: FaceDataset, count: int = 30, split: str | None = "train") -> list[str]:
    """The ``count`` attributes with the most unbalanced labels.

    Rule: with p_j the positive rate of attribute j over its known labels (on ``split`` when the
    dataset has one, else on all rows), attributes are ranked by min(p_j, 1 - p_j), smallest
    first; ties keep the dataset's attribute order. Attributes without known labels rank last.

    Returns the names in that order.
    """
    if not 0 < count <= len(dataset.attributes):
        raise ValueError(f"count must be between 1 and {len(dataset.attributes)}, got {count}")
    rows = dataset.split_indices(split) if split is not None and dataset.split is not None \
        else np.arange(len(dataset))
    known = dataset.mask[rows].sum(axis=0)
    positives = (dataset.labels[rows].astype(bool) & dataset.mask[rows]).sum(axis=0)
    rate = np.divide(positives, known, out=np.full(known.shape, 0.5), where=known > 0)
    rarity = np.where(known > 0, np.minimum(rate, 1 - rate), np.inf)
    order = np.argsort(rarity, kind="stable")
    return [dataset.attributes[j] for j in order[:count]]



def scarce_setting(dataset: FaceDataset, fraction: float, count: int = 20, seed: int = 0
                   ) -> tuple[FaceDataset, list[str]]:
    """The paper's motivating case: keep only ``fraction`` of the train and val labels of the
    ``count`` rarest attributes (:func:`least_frequent_attributes` on train; each split
    subsampled by :func:`scarce_labels`, train with ``seed`` and val with ``seed + 1000``); test
    labels stay whole, so that every method is scored on the same complete test labels.

    Returns the dataset with the reduced mask and the names of the scarce attributes.
    """
    rare = least_frequent_attributes(dataset, count, split="train")
    for offset, split in enumerate(("train", "val")):
        dataset = scarce_labels(dataset, fraction, rare, seed=seed + 1000 * offset, split=split)
    dataset = replace(dataset, meta={**dataset.meta, "scarce_labels": {
        "fraction": fraction, "attributes": rare, "seed": seed}})
    return dataset, rare
