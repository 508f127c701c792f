"""Torch modules of the k heads and their regularisers, for end-to-end training with a backbone.

Contract (docs/ARCHITECTURE.md) of every module returned by :func:`make_torch_heads`:

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

The math is the one of the scikit-learn estimators, imported from the same files (proximal
operators, factored SVD update, SMIDAS, graph step, groupings); these modules only move the
head parameters between torch and numpy (k = 40 heads: cheap).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from mtfap.heads.graph_learning import (GRAPH_STEPS, graph_clusters, laplacian, learn_task_graph,
                                        threshold_graph)
from mtfap.heads.groupings import resolve_groups
from mtfap.heads.lowrank_sparse import SOLVERS, resolve_ranks
from mtfap.heads.proximal import numerical_rank, singular_value_threshold, soft_threshold
from mtfap.heads.smidas import link, link_exponent, smidas_step
from mtfap.heads.svd_update import subgradient_step, thin_svd

METHODS = ("independent", "lowrank_sparse", "graph")


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


class TorchLowRankSparseHeads(TorchHeads):
    """Eq. 3: ``W_g = L_g S_g``, ``Omega = sum_g lam ||S_g||_1 + gamma ||L_g||_*`` (all non-smooth).

    ``solver="proximal"``: the optimiser's gradient step is the forward step, ``solver_step(lr)``
    the backward step (singular-value soft-thresholding of each L_g by ``lr * gamma``,
    soft-thresholding of each S_g by ``lr * lam``).

    ``solver="paper"``: ``solver_step(lr)`` reads the gradients left by ``backward()`` and
    replaces L_g by Algorithm 1's step (step ``lr``) and S_g by SMIDAS's (step ``smidas_rate``,
    or ``lr``); whatever the optimiser did to L_g and S_g is overwritten, so leave them out of
    it or use plain SGD.
    """

    method = "lowrank_sparse"

    def __init__(self, in_features, attributes, groups="paper", ranks=None, lam: float = 1e-4,
                 gamma: float = 1e-3, solver: str = "proximal", smidas_rate: float | None = None,
                 n_probes: int | None = None, seed: int = 0, standardize: bool = True):
        super().__init__(in_features, attributes, standardize)
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
        self.lam, self.gamma, self.solver = float(lam), float(gamma), solver
        self.smidas_rate, self.n_probes = smidas_rate, n_probes
        self.groups = resolve_groups(groups, self.attributes)
        self.ranks = resolve_ranks(ranks, self.groups)
        generator = torch.Generator().manual_seed(seed)
        self.L = nn.ParameterList(
            nn.Parameter(torch.randn(in_features, K, generator=generator) * in_features ** -0.5)
            for K in self.ranks)
        self.S = nn.ParameterList(
            nn.Parameter(torch.randn(K, len(cols), generator=generator) * K ** -0.5)
            for K, (_, cols) in zip(self.ranks, self.groups))
        order = np.concatenate([cols for _, cols in self.groups])
        self.register_buffer("_column_order", torch.as_tensor(np.argsort(order)), persistent=False)
        self._rng = np.random.default_rng(seed)
        self._paper_state = None  # (thin SVDs of L_g, SMIDAS duals of S_g), built on first use

    def weight_matrix(self):
        grouped = torch.cat([L_g @ S_g for L_g, S_g in zip(self.L, self.S)], dim=1)
        return grouped[:, self._column_order]

    @torch.no_grad()
    def solver_step(self, lr):
        if self.solver == "proximal":
            for L_g, S_g in zip(self.L, self.S):
                _assign(L_g, singular_value_threshold(_numpy(L_g), lr * self.gamma))
                _assign(S_g, soft_threshold(_numpy(S_g), lr * self.lam))
            return
        if self._paper_state is None:
            self._paper_state = ([thin_svd(_numpy(L_g)) for L_g in self.L],
                                 [link(_numpy(S_g), link_exponent(K))
                                  for S_g, K in zip(self.S, self.ranks)])
        svds, duals = self._paper_state
        for g, (L_g, S_g, K) in enumerate(zip(self.L, self.S, self.ranks)):
            if L_g.grad is not None:
                svds[g] = subgradient_step(*svds[g], _numpy(L_g.grad), self.gamma, lr,
                                           self.n_probes or K, self._rng, K)
            _assign(L_g, (svds[g][0] * svds[g][1]) @ svds[g][2].T)
            if S_g.grad is not None:
                duals[g], codes = smidas_step(duals[g], _numpy(S_g.grad), self.smidas_rate or lr,
                                              self.lam, link_exponent(K))
                _assign(S_g, codes)

    def get_extra_state(self) -> dict:
        """The paper solver's own state (probe generator, thin SVDs of L_g, SMIDAS duals), kept
        in ``state_dict`` as tensors and plain values so that a resumed run continues exactly."""
        state = {"rng": self._rng.bit_generator.state}
        if self._paper_state is not None:
            svds, duals = self._paper_state
            state["svds"] = [[torch.from_numpy(np.array(part)) for part in svd] for svd in svds]
            state["duals"] = [torch.from_numpy(np.array(dual)) for dual in duals]
        return state

    def set_extra_state(self, state: dict) -> None:
        self._rng.bit_generator.state = state["rng"]
        self._paper_state = None if "svds" not in state else (
            [tuple(part.numpy() for part in svd) for svd in state["svds"]],
            [dual.numpy() for dual in state["duals"]])

    def describe(self):
        S = [_numpy(S_g) for S_g in self.S]
        return {**super().describe(), "solver": self.solver,
                "groups": {name: [self.attributes[j] for j in cols] for name, cols in self.groups},
                "ranks": [numerical_rank(_numpy(L_g)) for L_g in self.L], "rank_caps": self.ranks,
                "sparsity": float(sum((s == 0).sum() for s in S) / sum(s.size for s in S))}


class TorchGraphHeads(TorchHeads):
    """Eq. 6-14: ``penalty = xi * Tr(W A W^T)``, ``A = L(M) + eps I``; ``end_epoch`` learns M."""

    method = "graph"

    def __init__(self, in_features, attributes, xi: float = 1e-2, eps: float = 0.1,
                 graph_step: str = "kalofolias", graph_sparsity: float = 1.0,
                 graph_threshold: float = 0.1, standardize: bool = True):
        super().__init__(in_features, attributes, standardize)
        if graph_step not in GRAPH_STEPS:
            raise ValueError(f"graph_step must be one of {', '.join(GRAPH_STEPS)}, got {graph_step!r}")
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


_CLASSES = {cls.method: cls for cls in (TorchIndependentHeads, TorchLowRankSparseHeads,
                                        TorchGraphHeads)}


def make_torch_heads(method: str, in_features: int, attributes, **params) -> TorchHeads:
    """The torch heads of ``method`` ("independent", "lowrank_sparse" or "graph").

    ``params`` are the method's hyper-parameters (``lam``; ``groups``, ``ranks``, ``lam``,
    ``gamma``, ``solver``; ``xi``, ``eps``, ``graph_step``, ``graph_sparsity``), named as in the
    scikit-learn estimators and with the same defaults.

    Examples
    --------
    >>> heads = make_torch_heads("graph", 8, ["a", "b", "c"], xi=0.1)
    >>> heads(torch.zeros(2, 8)).shape
    torch.Size([2, 3])
    """
    if method not in _CLASSES:
        raise ValueError(f"unknown heads method {method!r}; use one of {', '.join(METHODS)}")
    try:
        return _CLASSES[method](in_features, attributes, **params)
    except TypeError as err:  # an unknown keyword: name it with the method
        raise ValueError(f"bad parameter for {method!r} heads: {err}") from None
