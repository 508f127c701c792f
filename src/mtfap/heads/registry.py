"""The one registry of head methods: a name -> its scikit-learn estimator and its torch module.

=================  ==========================  ===============================  ============
name               estimator (fixed features)  torch module (end to end)        objective
=================  ==========================  ===============================  ============
``independent``    ``IndependentHeads``        ``TorchIndependentHeads``        eq. 1
``lowrank_sparse`` ``LowRankSparseHeads``      ``TorchLowRankSparseHeads``      eq. 3
``graph``          ``GraphHeads``              ``TorchGraphHeads``              eq. 6-14
=================  ==========================  ===============================  ============

Both forms of a method take the same hyper-parameters with the same defaults. The registry
names the classes by module path and imports them on first use: the command line reads the
method names without paying for scikit-learn or torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from mtfap.errors import unknown_name_error
from mtfap.heads.params import ESTIMATOR, TORCH, check_params


def _import(path: str) -> type:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class HeadMethod:
    """A head method: where its estimator class and its torch module live ("module:Class").

    Both are imported on first use: fitting heads on fixed features needs no torch (about a
    second to import), and listing the methods needs neither.
    """

    name: str
    estimator_path: str
    torch_path: str
    equation: str

    @property
    def estimator(self) -> type:
        """The scikit-learn estimator on fixed features."""
        return _import(self.estimator_path)

    @property
    def torch_class(self) -> type:
        """The torch module for end-to-end training."""
        return _import(self.torch_path)


METHODS: dict[str, HeadMethod] = {m.name: m for m in (
    HeadMethod("independent", "mtfap.heads.independent:IndependentHeads",
               "mtfap.heads.torch_independent:TorchIndependentHeads", "eq. 1"),
    HeadMethod("lowrank_sparse", "mtfap.heads.lowrank_sparse:LowRankSparseHeads",
               "mtfap.heads.torch_lowrank_sparse:TorchLowRankSparseHeads", "eq. 3"),
    HeadMethod("graph", "mtfap.heads.graph:GraphHeads",
               "mtfap.heads.torch_graph:TorchGraphHeads", "eq. 6-14"),
)}


def head_method(name: str) -> HeadMethod:
    """The registered method ``name``; an unknown name raises with the closest one."""
    if name not in METHODS:
        raise unknown_name_error("head method", name, METHODS)
    return METHODS[name]


def make_head_estimator(method: str, params: dict | None = None, attributes=None):
    """``IndependentHeads`` / ``LowRankSparseHeads`` / ``GraphHeads`` with ``params``.

    Unknown methods and parameter names raise ValueError naming the closest valid one; values
    are checked against their declaration (:mod:`mtfap.heads.params`): type, finiteness, range.

    >>> make_head_estimator("graph", {"xi": 0.5}).xi
    0.5
    """
    estimator = head_method(method).estimator(attributes=attributes)
    return estimator.set_params(**check_params(method, params, ESTIMATOR))


def make_torch_heads(method: str, in_features: int, attributes, **params):
    """The torch heads of ``method`` ("independent", "lowrank_sparse" or "graph").

    ``params`` are the method's hyper-parameters (``lam``; ``groups``, ``ranks``, ``lam``,
    ``gamma``, ``solver``; ``xi``, ``eps``, ``graph_step``, ``graph_sparsity``), named as in the
    scikit-learn estimators and with the same defaults.

    Examples
    --------
    >>> import torch
    >>> heads = make_torch_heads("graph", 8, ["a", "b", "c"], xi=0.1)
    >>> heads(torch.zeros(2, 8)).shape
    torch.Size([2, 3])
    """
    cls = head_method(method).torch_class
    return cls(in_features, attributes, **check_params(method, params, TORCH))
