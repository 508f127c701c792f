"""Low-rank + sparse heads for end-to-end training (Scenario 1, eq. 3): the torch form of
``LowRankSparseHeads``, with the proximal and the paper's solver (Algorithms 1-2)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mtfap.heads.groupings import resolve_groups
from mtfap.heads.lowrank_sparse import resolve_ranks
from mtfap.heads.proximal import (
    numerical_rank,
    singular_value_threshold,
    soft_threshold,
)
from mtfap.heads.smidas import link, link_exponent, smidas_step
from mtfap.heads.svd_update import subgradient_step, thin_svd
from mtfap.heads.torch_base import TorchHeads, _assign, _numpy


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
