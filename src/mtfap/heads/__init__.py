"""Block 2 of MTFAP: the 40 linear heads and their multi-task regularisers, one file per method.

On fixed features, scikit-learn estimators: :class:`IndependentHeads` (eq. 1),
:class:`LowRankSparseHeads` (Scenario 1, eq. 3) and :class:`GraphHeads` (Scenario 2, eq. 6-14).
Inside end-to-end training, torch modules from :func:`mtfap.heads.torch_heads.make_torch_heads`.
Both share the same math: proximal operators (``proximal``), Algorithm 1's SVD update
(``svd_update``), SMIDAS (``smidas``), the graph step (``graph_learning``) and the groupings
(``groupings``).
"""

from mtfap.heads.graph import GraphHeads
from mtfap.heads.independent import IndependentHeads
from mtfap.heads.lowrank_sparse import LowRankSparseHeads

__all__ = ["IndependentHeads", "LowRankSparseHeads", "GraphHeads"]
