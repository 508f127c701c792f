"""How well a ranking retrieves what is relevant: precision at k and average precision, for
face search measured against true labels (benchmarks/bench_retrieval.py, docs/SEARCH.md)."""

from __future__ import annotations

import numpy as np


def precision_at(relevant, k: int) -> float:
    """The share of relevant items among the first ``k`` of the ranking (a list shorter than
    ``k`` counts its missing places as misses).

    >>> precision_at([True, False, True, True], 2)
    0.5
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return float(np.asarray(relevant, dtype=bool)[:k].sum() / k)


def average_precision(relevant, total_relevant: int | None = None) -> float:
    """Average precision of a ranking: the mean, over the relevant items, of the precision at
    each one's rank,

    .. math:: AP = \\frac{1}{R} \\sum_{i: \\text{rel}_i}
              \\frac{\\#\\{j \\le i: \\text{rel}_j\\}}{i},

    with R = ``total_relevant`` (default: the relevant items in the list). Relevant items that
    the ranking never reaches (a face not detected) count as retrieved at no rank, lowering AP.
    NaN when nothing is relevant.

    >>> average_precision([True, False, True])
    0.8333333333333333
    """
    relevant = np.asarray(relevant, dtype=bool)
    total = int(relevant.sum()) if total_relevant is None else int(total_relevant)
    if total == 0:
        return float("nan")
    if total < relevant.sum():
        raise ValueError(f"total_relevant={total} is less than the {int(relevant.sum())} "
                         f"relevant items in the ranking")
    hits = np.cumsum(relevant)
    return float((hits / np.arange(1, len(relevant) + 1))[relevant].sum() / total)
