"""Ranking the faces of an index: by a query, by likeness of attributes, by identity.

All three work on the matrices of :meth:`mtfap.search.store.IndexStore.load_matrix` with one
vectorised pass over the rows and a partial sort (``argpartition``) of the best ``limit``: a
query or a person search over a million faces takes about 60 ms (benchmarks/bench_search.py,
docs/SEARCH.md).
Ties are broken by row order, so results are reproducible.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mtfap.search.query import Query

# dlib's face_recognition_model_v1: two descriptors closer than 0.6 (Euclidean) are the same
# person (99.38 % on LFW, dlib's documentation).
DLIB_SAME_PERSON = 0.6

_BLOCK_ROWS = 4096  # rows per block of rank_like: 4096 x 40 float32 is 640 KB


class Ranking(NamedTuple):
    """The best rows, best first.

    ``values`` is the log-probability for :func:`rank_query` (higher is better) and the distance
    for :func:`rank_like` and :func:`rank_person` (lower is better).
    """

    rows: np.ndarray
    values: np.ndarray


def _best(values: np.ndarray, limit: int, largest: bool, candidates=None) -> Ranking:
    """The ``limit`` best of ``values`` (over the ascending ``candidates`` rows when given),
    sorted by value, then by row."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    keys = -values if largest else values
    if candidates is not None:
        keys = keys[candidates]
    if limit < len(keys):
        top = np.argpartition(keys, limit - 1)[:limit]
        # argpartition picks arbitrarily among values equal to the last one kept: take the
        # first rows with that value instead, so results do not depend on numpy's algorithm
        boundary = keys[top].max()
        tied = np.flatnonzero(keys == boundary)
        top = top[keys[top] < boundary]
        top = np.concatenate([top, tied[:limit - len(top)]])
    else:
        top = np.arange(len(keys))
    top = top[np.lexsort((top, keys[top]))]
    rows = top if candidates is None else candidates[top]
    return Ranking(rows, values[rows])


def rank_query(query: Query, probabilities, attributes, limit: int = 20) -> Ranking:
    """Faces most likely to satisfy ``query``: the top ``limit`` of :meth:`Query.log_score`.

    Parameters
    ----------
    query : Query
    probabilities : array of shape (N, k)
    attributes : sequence of str
        Names of the k columns.
    limit : int, default 20

    Returns
    -------
    Ranking
        Rows and their joint log-probabilities, highest first.
    """
    return _best(query.log_score(probabilities, attributes), limit, largest=True)


def rank_like(target_probabilities, probabilities, limit: int = 20, exclude=None) -> Ranking:
    """Faces whose predicted attributes are closest to a target face's.

    The distance is the L1 distance between probability vectors, ``sum_j |p_j - q_j|``: it reads
    as a number of attributes (0 to k) and a confident attribute weighs at most 1. Euclidean
    distance between logits was rejected because it is dominated by saturated predictions:
    0.999 against 0.9999 is 2.3 logits apart, more than 0.3 against 0.7, though no one would see
    the first difference in a photo.

    Parameters
    ----------
    target_probabilities : array of shape (k,)
    probabilities : array of shape (N, k)
    limit : int, default 20
    exclude : int or array of int, optional
        Rows left out, typically the target face itself (which is at distance 0).

    Returns
    -------
    Ranking
        Rows and their L1 distances, closest first.
    """
    probabilities = np.asarray(probabilities)
    dtype = probabilities.dtype if probabilities.dtype in (np.float32, np.float64) \
        else np.float64
    target = np.asarray(target_probabilities, dtype=dtype)
    if probabilities.ndim != 2 or target.shape != probabilities.shape[1:]:
        raise ValueError(f"target_probabilities of shape {target.shape} does not match the "
                         f"rows of probabilities {probabilities.shape}")
    # in blocks that stay in the CPU cache: 86 ms for a million rows of 40 float32, against
    # 203 ms for one pass through an (N, k) temporary (2 shared cores, load average 5)
    distances = np.empty(len(probabilities), dtype=dtype)
    block = np.empty((_BLOCK_ROWS, len(target)), dtype=dtype)
    for start in range(0, len(probabilities), _BLOCK_ROWS):
        rows = probabilities[start:start + _BLOCK_ROWS]
        difference = block[:len(rows)]
        np.subtract(rows, target, out=difference)
        np.abs(difference, out=difference)
        difference.sum(axis=1, out=distances[start:start + len(rows)])
    if exclude is None:
        return _best(distances, limit, largest=False)
    distances[np.asarray(exclude)] = np.inf  # L1 distances of probabilities are finite
    best = _best(distances, limit, largest=False)
    keep = np.isfinite(best.values)
    return Ranking(best.rows[keep], best.values[keep])


def squared_norms(descriptors) -> np.ndarray:
    """``||b_i||^2`` of each row: compute once per loaded index and pass to :func:`rank_person`,
    which then reads the descriptor matrix once per search instead of twice."""
    descriptors = np.asarray(descriptors)
    return np.einsum("ij,ij->i", descriptors, descriptors)


def rank_person(target_descriptor, descriptors, limit: int = 20,
                threshold: float = DLIB_SAME_PERSON, norms=None) -> Ranking:
    """Faces of the same person as the target: exact search by Euclidean distance between dlib's
    128-D face descriptors, keeping those closer than ``threshold``.

    The distances come from one matrix-vector product,
    ``||a - b||^2 = ||a||^2 - 2 a.b + ||b||^2``, in float32: a million faces are one pass over
    512 MB (66 ms median with ``norms``, 169 ms without, on two shared cores;
    benchmarks/bench_search.py).
    Rows of NaN (faces stored without a descriptor) never match.

    Parameters
    ----------
    target_descriptor : array of shape (d,)
    descriptors : array of shape (N, d), float32
    limit : int, default 20
    threshold : float, default 0.6
        dlib's threshold for "same person"; faces at a larger distance are left out, so fewer
        than ``limit`` rows (or none) may come back.
    norms : array of shape (N,), optional
        :func:`squared_norms` of ``descriptors``, precomputed.

    Returns
    -------
    Ranking
        Rows and their Euclidean distances, closest first.
    """
    descriptors = np.asarray(descriptors)
    target = np.asarray(target_descriptor, dtype=descriptors.dtype)
    if descriptors.ndim != 2 or target.shape != descriptors.shape[1:]:
        raise ValueError(f"target_descriptor of shape {target.shape} does not match the rows "
                         f"of descriptors {descriptors.shape}")
    if norms is None:
        norms = squared_norms(descriptors)
    squared = descriptors @ target
    squared *= -2
    squared += norms
    squared += target @ target
    # rounding can make the distance of a face to itself slightly negative
    np.maximum(squared, 0, out=squared)
    candidates = np.flatnonzero(squared <= threshold * threshold)
    if len(candidates) == 0:
        return Ranking(np.empty(0, dtype=np.intp), np.empty(0, dtype=descriptors.dtype))
    best = _best(squared, limit, largest=False, candidates=candidates)
    return Ranking(best.rows, np.sqrt(best.values))
