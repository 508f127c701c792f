"""Scenario 1 (eq. 3): known task groups, each group's heads low-rank times sparse."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from mtfap.heads.base import MaskedLogisticLoss, MultiTaskHeads, check_multitask_data
from mtfap.heads.groupings import resolve_groups
from mtfap.heads.proximal import (
    accelerated_proximal_gradient,
    nuclear_norm,
    numerical_rank,
    singular_value_threshold,
    soft_threshold,
)
from mtfap.heads.smidas import link, link_exponent, smidas_step
from mtfap.heads.svd_update import subgradient_step, thin_svd


def default_rank(n_tasks: int) -> int:
    """K_g = ceil(T_g / 2), which is < T_g for T_g >= 2; a single task gets K_g = 1."""
    return max(1, math.ceil(n_tasks / 2)) if n_tasks > 1 else 1


def resolve_ranks(ranks, groups) -> list[int]:
    """Latent dimension K_g of each group from ``ranks`` (None, an int cap or a mapping).

    None uses :func:`default_rank`; an int K gives ``min(K, T_g - 1)`` (1 for single tasks);
    a mapping ``group name -> K_g`` overrides the groups it names (1 <= K_g < T_g required).
    """
    out = [default_rank(len(cols)) for _, cols in groups]
    if ranks is None:
        return out
    if isinstance(ranks, (int, np.integer)) and not isinstance(ranks, bool):
        if ranks < 1:
            raise ValueError(f"ranks must be at least 1, got {ranks}")
        return [1 if len(cols) == 1 else min(int(ranks), len(cols) - 1) for _, cols in groups]
    if not isinstance(ranks, Mapping):
        raise ValueError(f"ranks must be None, an int or a mapping group -> K, got "
                         f"{type(ranks).__name__}")
    names = [name for name, _ in groups]
    for name, rank in ranks.items():
        if name not in names:
            raise ValueError(f"ranks names unknown group {name!r}; groups are {', '.join(names)}")
        n_tasks = len(groups[names.index(name)][1])
        upper = max(1, n_tasks - 1)
        if not 1 <= int(rank) <= upper:
            raise ValueError(f"ranks[{name!r}] = {rank}: need 1 <= K_g < T_g = {n_tasks} "
                             f"(K_g = 1 for a single task)")
        out[names.index(name)] = int(rank)
    return out


class _Factors:
    """Packs the per-group L_g (d x K_g), S_g (K_g x T_g) and the intercepts b into one vector."""

    def __init__(self, d, groups, ranks, k):
        self.d, self.groups, self.ranks, self.k = d, groups, ranks, k
        sizes = [d * K for K in ranks] + [K * len(cols) for K, (_, cols) in zip(ranks, groups)]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        self.m = len(groups)

    def unpack(self, theta):
        blocks = [theta[a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:])]
        L = [blk.reshape(self.d, K) for blk, K in zip(blocks[:self.m], self.ranks)]
        S = [blk.reshape(K, len(cols)) for blk, K, (_, cols)
             in zip(blocks[self.m:], self.ranks, self.groups)]
        return L, S, theta[self.offsets[-1]:]

    @staticmethod
    def pack(L, S, b):
        return np.concatenate([x.ravel() for x in (*L, *S, b)])

    def weights(self, L, S):
        W = np.zeros((self.d, self.k))
        for (_, cols), L_g, S_g in zip(self.groups, L, S):
            W[:, cols] = L_g @ S_g
        return W


class LowRankSparseHeads(MultiTaskHeads):
    """Grouped heads ``W_g = L_g S_g`` with ``Omega = sum_g lam ||S_g||_1 + gamma ||L_g||_*`` (eq. 3).

    Within a group of T_g tasks the heads share K_g < T_g latent basis heads (the columns of
    L_g, d x K_g) and combine them with sparse codes S_g (K_g x T_g). Both factors start from
    the balanced truncated SVD of ridge heads.

    Parameters
    ----------
    lam : float, default 1e-4
        Weight of ``||S_g||_1``.
    gamma : float, default 1e-3
        Weight of ``||L_g||_*``. Both weights are relative to the per-task mean cross-entropy,
        so the paper's values (lam = 1e-2, gamma = 1, for a summed loss) do not carry over; the
        defaults were the best on CelebA validation of those tried (docs/HEADS.md).
    groups : str, path or mapping, default "paper"
        ``"paper"`` (the paper's ten clusters), ``"regions"``, a JSON/YAML file or a mapping
        ``group -> [attribute, ...]``; see :mod:`mtfap.heads.groupings`.
    ranks : None, int or mapping, default None
        K_g per group; see :func:`resolve_ranks`.
    solver : {"proximal", "paper"}, default "proximal"
        ``"proximal"``: FISTA with backtracking on (L, S, b) jointly, singular-value
        soft-thresholding on each L_g and soft-thresholding on each S_g after every gradient
        step (exact zeros, exact low rank). ``"paper"``: mini-batch Algorithm 1 on L (factored
        SVD update with a probing matrix, rank capped at K_g) alternating with SMIDAS
        (Algorithm 2) on S, for ``n_epochs`` epochs.
    max_iter, tol : int, float
        ``"proximal"``: FISTA limits. Also the limits of the ridge start.
    n_epochs, batch_size : int
        ``"paper"`` solver: passes over the data and mini-batch size.
    learning_rate : float, default 0.05
        ``"paper"`` solver: step eta of Algorithm 1 (and of the intercepts).
    smidas_rate : float, default 0.05
        ``"paper"`` solver: step r of SMIDAS.
    n_probes : int or None
        ``"paper"`` solver: columns of the probing matrix (default K_g).
    init_lam : float, default 1e-3
        Ridge weight of the starting heads.
    random_state : int, default 0
        Seed of the mini-batch order and the probing matrices.
    precision : {"float32", "float64"}, default "float32"
        Arithmetic of the data term: float32 is about twice as fast, float64 solves to full
        precision (use it to compare solutions to 1e-6).
    attributes, standardize
        As in :class:`~mtfap.heads.IndependentHeads`.

    Fitted attributes
    -----------------
    L_, S_ : lists of the fitted factors, one per group (standardised feature space)
    groups_ : list of (group name, [column indices of Y])
    ranks_ : K_g per group; effective_ranks_ : numerical rank of each L_g (rtol 1e-9)
    sparsity_ : fraction of exact zeros in all S_g
    objective_history_ : training objective of eq. 3: after each epoch (``"paper"``), or the
        final one (``"proximal"``)
    """

    method = "lowrank_sparse"
    _fitted = ("L_", "S_", "groups_", "ranks_", "effective_ranks_", "sparsity_",
               "objective_history_")

    def __init__(self, lam=1e-4, gamma=1e-3, *, groups="paper", ranks=None, solver="proximal",
                 max_iter=100, tol=1e-5, n_epochs=10, batch_size=2048, learning_rate=0.05,
                 smidas_rate=0.05, n_probes=None, init_lam=1e-3, random_state=0,
                 attributes=None, standardize=True,
                 precision="float32"):
        self.lam = lam
        self.gamma = gamma
        self.groups = groups
        self.ranks = ranks
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.smidas_rate = smidas_rate
        self.n_probes = n_probes
        self.init_lam = init_lam
        self.random_state = random_state
        self.attributes = attributes
        self.standardize = standardize
        self.precision = precision

    # -- fitting ------------------------------------------------------------------------------
    def _fit_heads(self, data):
        d, k = data.X.shape[1], data.Y.shape[1]
        self.groups_ = resolve_groups(self.groups, self.attributes_)
        self.ranks_ = resolve_ranks(self.ranks, self.groups_)
        factors = _Factors(d, self.groups_, self.ranks_, k)
        W0, b = self._fit_quadratic(data, self.init_lam * np.eye(k))
        L, S = [], []
        for (_, cols), K in zip(self.groups_, self.ranks_):
            u, sigma, vt = np.linalg.svd(W0[:, cols], full_matrices=False)
            root = np.sqrt(sigma[:K])
            L.append(u[:, :K] * root)
            S.append(root[:, None] * vt[:K])
        if self.solver == "proximal":
            L, S, b = self._fit_proximal(data, factors, L, S, b)
        else:
            L, S, b = self._fit_paper(data, factors, L, S, b)
        self.L_, self.S_ = L, S
        self.effective_ranks_ = [numerical_rank(L_g) for L_g in L]
        self.sparsity_ = float(sum((S_g == 0).sum() for S_g in S) / sum(S_g.size for S_g in S))
        return factors.weights(L, S), b

    def _penalty(self, L, S) -> float:
        return sum(self.lam * np.abs(S_g).sum() + self.gamma * nuclear_norm(L_g)
                   for L_g, S_g in zip(L, S))

    @staticmethod
    def _factor_gradients(data, factors, L, S, b):
        """Loss and its gradients in (L_g, S_g, b) via the chain rule through W_g = L_g S_g."""
        loss, grad_W, grad_b = data(factors.weights(L, S), b)
        grad_L = [grad_W[:, cols] @ S_g.T for (_, cols), S_g in zip(factors.groups, S)]
        grad_S = [L_g.T @ grad_W[:, cols] for (_, cols), L_g in zip(factors.groups, L)]
        return loss, grad_L, grad_S, grad_b

    def _fit_proximal(self, data, factors, L, S, b):
        def smooth(theta):
            loss, grad_L, grad_S, grad_b = self._factor_gradients(data, factors,
                                                                  *factors.unpack(theta))
            return loss, factors.pack(grad_L, grad_S, grad_b)

        def penalty(theta):
            L_, S_, _ = factors.unpack(theta)
            return self._penalty(L_, S_)

        def prox(theta, step):
            L_, S_, b_ = factors.unpack(theta)
            return factors.pack([singular_value_threshold(L_g, step * self.gamma) for L_g in L_],
                                [soft_threshold(S_g, step * self.lam) for S_g in S_], b_)

        result = accelerated_proximal_gradient(smooth, penalty, prox, factors.pack(L, S, b),
                                               max_iter=self.max_iter, tol=self.tol)
        self.n_iter_ = result.n_iter
        self.objective_history_ = [result.objective]
        return factors.unpack(result.x)

    def _fit_paper(self, data, factors, L, S, b):
        """Mini-batch alternation: Algorithm 1 on every L_g, then SMIDAS on every S_g."""
        rng = np.random.default_rng(self.random_state)
        svds = [thin_svd(L_g) for L_g in L]
        exponents = [link_exponent(K) for K in self.ranks_]
        duals = [link(S_g, p) for S_g, p in zip(S, exponents)]
        n = data.X.shape[0]
        self.objective_history_ = []
        for _ in range(self.n_epochs):
            order = rng.permutation(n)
            for start in range(0, n, self.batch_size):
                rows = order[start:start + self.batch_size]
                batch = data.rows(rows)
                # Algorithm 1 on every L_g with S fixed
                _, grad_L, _, grad_b = self._factor_gradients(batch, factors, L, S, b)
                for g, K in enumerate(self.ranks_):
                    u, sigma, v = svds[g]
                    svds[g] = subgradient_step(u, sigma, v, grad_L[g], self.gamma,
                                               self.learning_rate, self.n_probes or K, rng, K)
                    L[g] = (svds[g][0] * svds[g][1]) @ svds[g][2].T
                b = b - self.learning_rate * grad_b
                # Algorithm 2 (SMIDAS) on every S_g with the new L fixed
                _, _, grad_S, _ = self._factor_gradients(batch, factors, L, S, b)
                for g, p in enumerate(exponents):
                    duals[g], S[g] = smidas_step(duals[g], grad_S[g], self.smidas_rate,
                                                 self.lam, p)
            loss = self._factor_gradients(data, factors, L, S, b)[0]
            self.objective_history_.append(loss + self._penalty(L, S))
        self.n_iter_ = self.n_epochs
        return L, S, b

    def objective(self, X, Y, mask=None) -> float:
        """The training objective of eq. 3 at the fitted factors on data (X, Y, mask)."""
        X, Y, mask = check_multitask_data(X, Y, mask)
        data = MaskedLogisticLoss((X - self.mean_) / self.scale_, Y, mask, self.precision)
        factors = _Factors(X.shape[1], self.groups_, self.ranks_, Y.shape[1])
        loss = self._factor_gradients(data, factors, self.L_, self.S_, self.b_)[0]
        return loss + self._penalty(self.L_, self.S_)
