"""Independent heads for end-to-end training (eq. 1): the torch form of ``IndependentHeads``."""

from __future__ import annotations

import torch
from torch import nn

from mtfap.heads.torch_base import TorchHeads


class TorchIndependentHeads(TorchHeads):
    """Eq. 1: ``penalty = lam * ||W||_F^2``."""

    method = "independent"

    def __init__(self, in_features, attributes, lam: float = 1e-3, standardize: bool = True):
        super().__init__(in_features, attributes, standardize)
        self.lam = float(lam)
        self.weight = nn.Parameter(torch.empty(in_features, len(self.attributes)))
        nn.init.normal_(self.weight, std=in_features ** -0.5)

    def weight_matrix(self):
        return self.weight

    def penalty(self):
        return self.lam * (self.weight ** 2).sum()
