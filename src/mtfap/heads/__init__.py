"""Block 2 of MTFAP: the 40 linear heads and their multi-task regularisers, one file per method.

On fixed features, scikit-learn estimators: :class:`IndependentHeads` (eq. 1),
:class:`LowRankSparseHeads` (Scenario 1, eq. 3) and :class:`GraphHeads` (Scenario 2, eq. 6-14).
Inside end-to-end training, torch modules (``torch_independent``, ``torch_lowrank_sparse``,
``torch_graph``, built by :func:`make_torch_heads`). ``registry`` maps each method name to both;
``persistence`` saves and loads fitted estimators without pickle. Both forms share the same math:
proximal operators (``proximal``), Algorithm 1's SVD update (``svd_update``), SMIDAS
(``smidas``), the graph step (``graph_learning``) and the groupings (``groupings``).
"""

from mtfap.heads.registry import (
    METHODS,
    head_method,
    make_head_estimator,
    make_torch_heads,
)

_ESTIMATORS = {"IndependentHeads": "independent", "LowRankSparseHeads": "lowrank_sparse",
               "GraphHeads": "graph"}


def __getattr__(name: str):
    # The estimator classes are imported on first use (scikit-learn costs about a second).
    if name in _ESTIMATORS:
        return METHODS[_ESTIMATORS[name]].estimator
    raise AttributeError(f"module 'mtfap.heads' has no attribute {name!r}")


__all__ = ["IndependentHeads", "LowRankSparseHeads", "GraphHeads", "METHODS", "head_method",
           "make_head_estimator", "make_torch_heads"]
