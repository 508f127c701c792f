"""What every torch head module shares, for end-to-end training with a backbone.

Contract (docs/ARCHITECTURE.md) of every head module (:func:`mtfap.heads.make_torch_heads`):

- ``forward(features (N, d)) -> logits (N, k)``;
- ``penalty() -> scalar tensor``: the smooth part of Omega, to add to the loss;
- ``solver_step(lr)``: call after every optimiser step; applies the non-smooth part of Omega
  (proximal operators, or Algorithm 1 / SMIDAS for the paper solver); a no-op where Omega is
  smooth;
- ``end_epoch()``: call after every epoch; the graph step for graph heads, else a no-op;
- ``weight_matrix() -> (d, k)`` and ``bias`` (k,): the heads on *standardised* features (the
  matrix Omega sees, as in the scikit-learn estimators); ``linear_map() -> (W, b)`` the same
  heads on the raw backbone features (``logits = features @ W + b`` in eval mode), e.g. for
  class activation maps;
- ``describe() -> dict``: sparsity, ranks, graph and clusters, for logging.

One file per method holds its module (``torch_independent``, ``torch_lowrank_sparse``,
``torch_graph``), beside the scikit-learn estimator of the same method; the math comes from the
same files as the estimators' (proximal operators, factored SVD update, SMIDAS, graph step,
groupings); these modules only move the head parameters between torch and numpy (k = 40 heads:
cheap).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().astype(np.float64)


def _assign(parameter: torch.Tensor, values: np.ndarray) -> None:
    with torch.no_grad():
        parameter.copy_(torch.as_tensor(values, dtype=parameter.dtype, device=parameter.device))


class FeatureStandardizer(nn.Module):
    """``(x - mean) / std`` per feature, with statistics estimated on the first training batches.

    The heads' regulariser is meant for standardised features (the scikit-learn estimators
    standardise too): the raw GAP features of a pretrained CNN can have a large common offset
    and a small spread (dlib's: mean |x| 1.1, per-feature std 0.13), which leaves linear heads
    ill-conditioned and slow to train end to end.

    The mean and variance are the averages over the first ``warmup_batches`` training batches
    (equal weights), then held fixed (``momentum = 0``, the default) or followed with weight
    ``momentum`` per batch. They are constants for the gradient, so training and evaluation see
    the same map. Fixed statistics matter when the backbone is fine-tuned: with statistics that
    follow the features, the loss no longer depends on the features' scale, which then drifts
    without bound under AdamW (measured: dlib's feature mean grew from about 1 to several hundred
    in 6 epochs) while the running estimate lags behind it, and accuracy collapses. Under
    ``torch.distributed`` the batch moments are summed over the processes, so every rank holds
    the statistics of the global batch, as one process would.
    """

    def __init__(self, in_features: int, warmup_batches: int = 100, momentum: float = 0.0,
                 eps: float = 1e-5):
        super().__init__()
        if warmup_batches < 1 or not 0 <= momentum <= 1:
            raise ValueError(f"standardizer needs warmup_batches >= 1 and 0 <= momentum <= 1, "
                             f"got {warmup_batches}, {momentum}")
        self.warmup_batches, self.momentum, self.eps = int(warmup_batches), float(momentum), eps
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("var", torch.ones(in_features))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self._fixed = False

    @torch.no_grad()
    def update(self, features: torch.Tensor) -> None:
        if self._fixed:
            return
        # ``updates`` is read back to the host only until the statistics are fixed (the first
        # ``warmup_batches`` steps): after that a step costs nothing here, not even a GPU sync
        # or, under DDP, an all-reduce.
        done = int(self.updates)
        if done >= self.warmup_batches and self.momentum == 0:
            self._fixed = True
            return
        weight = 1.0 / (done + 1) if done < self.warmup_batches else self.momentum
        x = features.detach().double()
        moments = torch.cat([x.sum(0), (x * x).sum(0), x.new_tensor([len(x)])])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(moments)
        d = len(self.mean)
        count = moments[-1].clamp_min(1.0)
        mean = moments[:d] / count
        var = (moments[d:2 * d] / count - mean * mean).clamp_min(0.0)
        self.updates += 1
        self.mean.lerp_(mean.to(self.mean.dtype), weight)
        self.var.lerp_(var.to(self.var.dtype), weight)

    def _load_from_state_dict(self, *args, **kwargs):
        self._fixed = False  # the loaded counter decides again
        super()._load_from_state_dict(*args, **kwargs)

    def scale(self) -> torch.Tensor:
        return torch.sqrt(self.var + self.eps)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.update(features)
        return (features - self.mean) / self.scale()


class TorchHeads(nn.Module):
    """Base: k linear heads ``logits = z @ W + bias`` on the standardised features ``z``
    (``standardize=False``: on the raw features); subclasses define W and Omega."""

    method = "base"

    def __init__(self, in_features: int, attributes, standardize: bool = True):
        super().__init__()
        if in_features < 1:
            raise ValueError(f"in_features must be positive, got {in_features}")
        self.in_features = int(in_features)
        self.attributes = [str(a) for a in attributes]
        self.bias = nn.Parameter(torch.zeros(len(self.attributes)))
        self.standardize = bool(standardize)
        self.standardizer = FeatureStandardizer(in_features) if self.standardize else None

    def weight_matrix(self) -> torch.Tensor:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 2 or features.shape[1] != self.in_features:
            raise ValueError(f"features must be (N, {self.in_features}), got {tuple(features.shape)}")
        if self.standardizer is not None:
            features = self.standardizer(features)
        return features @ self.weight_matrix() + self.bias

    @torch.no_grad()
    def linear_map(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W (d, k), b (k,)) with ``logits = features @ W + b`` on the raw features (eval mode)."""
        W, b = self.weight_matrix(), self.bias
        if self.standardizer is None:
            return W.clone(), b.clone()
        scale = self.standardizer.scale()
        return W / scale[:, None], b - (self.standardizer.mean / scale) @ W

    def penalty(self) -> torch.Tensor:
        return self.bias.new_zeros(())

    def solver_step(self, lr: float) -> None:
        """Non-smooth part of Omega after an optimiser step with learning rate ``lr``."""

    def end_epoch(self) -> None:
        """Work done once per epoch (the graph step of graph heads)."""

    def describe(self) -> dict:
        return {"method": self.method, "n_tasks": len(self.attributes),
                "standardize": self.standardize}


class LinearHeads(TorchHeads):
    """Heads with given weights, ``logits = features @ W + b`` on the raw features: the torch
    form of heads fitted on frozen features (``mtfap fit-heads``), for prediction only."""

    method = "linear"

    def __init__(self, weight, bias, attributes):
        weight = torch.as_tensor(np.asarray(weight), dtype=torch.float32)
        super().__init__(weight.shape[0], attributes, standardize=False)
        if weight.shape != (self.in_features, len(self.attributes)):
            raise ValueError(f"weight must be (d, {len(self.attributes)}), got {tuple(weight.shape)}")
        self.weight = nn.Parameter(weight, requires_grad=False)
        with torch.no_grad():
            self.bias.copy_(torch.as_tensor(np.asarray(bias), dtype=torch.float32))
        self.bias.requires_grad_(False)

    def weight_matrix(self):
        return self.weight
