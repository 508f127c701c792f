"""Graph-regularised heads for end-to-end training (Scenario 2, eq. 6-14, Algorithm 3): the
torch form of ``GraphHeads``; ``end_epoch`` is the graph step."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mtfap.heads.graph_learning import (
    graph_clusters,
    laplacian,
    learn_task_graph,
    threshold_graph,
)
from mtfap.heads.torch_base import TorchHeads, _numpy


class TorchGraphHeads(TorchHeads):
    """Eq. 6-14: ``penalty = xi * Tr(W A W^T)``, ``A = L(M) + eps I``; ``end_epoch`` learns M."""

    method = "graph"

    def __init__(self, in_features, attributes, xi: float = 1e-2, eps: float = 0.1,
                 graph_step: str = "kalofolias", graph_sparsity: float = 1.0,
                 graph_threshold: float = 0.1, standardize: bool = True):
        super().__init__(in_features, attributes, standardize)
        self.xi, self.eps = float(xi), float(eps)
        self.graph_step, self.graph_sparsity = graph_step, float(graph_sparsity)
        self.graph_threshold = float(graph_threshold)
        k = len(self.attributes)
        self.weight = nn.Parameter(torch.empty(in_features, k))
        nn.init.normal_(self.weight, std=in_features ** -0.5)
        self.register_buffer("graph", torch.zeros(k, k))
        self.register_buffer("A", self.eps * torch.eye(k))

    def weight_matrix(self):
        return self.weight

    def penalty(self):
        return self.xi * ((self.weight @ self.A) * self.weight).sum()

    @torch.no_grad()
    def end_epoch(self):
        M = learn_task_graph(_numpy(self.weight), self.graph_step, self.graph_sparsity)
        self.graph.copy_(torch.as_tensor(M, dtype=self.graph.dtype))
        self.A.copy_(torch.as_tensor(laplacian(M) + self.eps * np.eye(len(M)), dtype=self.A.dtype))

    def describe(self):
        M = _numpy(self.graph)
        clusters = graph_clusters(M, self.graph_threshold)
        return {**super().describe(), "graph_step": self.graph_step,
                "n_edges": int((threshold_graph(M, self.graph_threshold) > 0).sum() // 2),
                "clusters": [[self.attributes[j] for j in c] for c in clusters]}
