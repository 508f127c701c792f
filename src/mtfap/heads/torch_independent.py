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

    @torch.no_grad()
    def start_from(self, weight, bias) -> None:
        """Start from trained heads ``logits = features @ weight + bias`` on the raw features
        (``linear_map`` of a trained model): the standardiser, if any, is set to the identity
        map and fixed there (its statistics are not estimated again), so the heads compute the
        loaded map exactly, and their weights train on from it."""
        weight, bias = torch.as_tensor(weight), torch.as_tensor(bias)
        if weight.shape != self.weight.shape or bias.shape != self.bias.shape:
            raise ValueError(f"trained heads of shape {tuple(weight.shape)} do not fit heads of "
                             f"shape {tuple(self.weight.shape)}")
        self.weight.copy_(weight)
        self.bias.copy_(bias)
        if self.standardizer is not None:
            s = self.standardizer
            s.mean.zero_()
            s.var.fill_(1.0 - s.eps)  # sqrt(var + eps) = 1
            s.updates.fill_(s.warmup_batches)
            s.momentum = 0.0

    def penalty(self):
        return self.lam * (self.weight ** 2).sum()
