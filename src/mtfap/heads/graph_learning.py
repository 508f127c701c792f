"""The graph step of Scenario 2 (eq. 6-14, Algorithm 3): learn the task graph M from the heads W.

The penalty is ``xi * Tr(W A W^T)`` with ``A = L(M) + eps I`` and ``L(M) = D - M``; with
``Z_ij = ||w_i - w_j||^2`` for the columns w_i of W (d x k),

    sum_ij M_ij Z_ij = 2 Tr(W L(M) W^T),     Tr(W A W^T) = sum_ij A_ij w_i^T w_j.

Graph steps (``learn_task_graph(W, method=...)``):

``"paper"``
    Algorithm 3 as written: ``argmin_A Tr(W A W^T)`` s.t. ``A >= I`` (PSD order), ``A_ij <= 0``
    off the diagonal, ``A 1 = 1``, solved by projected gradient with Dykstra's projection onto
    the intersection of the three sets. The feasible set is exactly ``{I + L(M) : M >= 0}`` and
    the objective is ``||W||_F^2 + sum_{i<j} M_ij Z_ij``, so the answer is A = I, M = 0: the step
    learns nothing. It is kept to show that.
``"kalofolias"`` (default)
    Kalofolias (AISTATS 2016): ``min_{M >= 0, sym} sum_ij M_ij theta Z_ij / mean(Z)
    - 1^T log(M 1) + 1/2 ||M||_F^2``. The log-degree barrier forbids isolated tasks, so M = 0 is
    excluded. Kalofolias and Perraudin (2019) show that the (alpha, beta) of the general form
    only rescale M, so one knob ``theta`` (``sparsity``) sets the sparsity; dividing Z by its
    mean makes that knob mean the same from run to run. Larger ``sparsity`` = fewer edges.

Both return M normalised to a largest weight of 1, the form the paper thresholds at 0.1.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse.csgraph import connected_components

from mtfap.heads.params import GRAPH_STEPS


def pairwise_sq_distances(W: np.ndarray) -> np.ndarray:
    """``Z_ij = ||w_i - w_j||^2`` for the columns of W (d x k); exact zeros on the diagonal."""
    W = np.asarray(W, dtype=np.float64)
    norms = (W * W).sum(axis=0)
    Z = np.maximum(norms[:, None] + norms[None, :] - 2.0 * (W.T @ W), 0.0)
    np.fill_diagonal(Z, 0.0)
    return Z


def laplacian(M: np.ndarray) -> np.ndarray:
    """``L(M) = diag(M 1) - M``."""
    return np.diag(M.sum(axis=1)) - M


def _upper(k: int):
    return np.triu_indices(k, 1)


def _degree_operator(k: int) -> np.ndarray:
    """S (k x k(k-1)/2) mapping the upper-triangle edge weights m to the degrees M 1."""
    rows, cols = _upper(k)
    S = np.zeros((k, rows.size))
    edges = np.arange(rows.size)
    S[rows, edges] = 1.0
    S[cols, edges] = 1.0
    return S


def _from_upper(weights: np.ndarray, k: int) -> np.ndarray:
    M = np.zeros((k, k))
    M[_upper(k)] = weights
    return M + M.T


def kalofolias_graph(Z: np.ndarray, alpha: float = 1.0, beta: float = 1.0, max_iter: int = 5000,
                     tol: float = 1e-8) -> np.ndarray:
    """Solve ``min_{M sym, M >= 0, diag 0} sum_ij M_ij Z_ij - alpha 1^T log(M 1) + beta/2 ||M||_F^2``.

    The forward-backward-forward primal-dual iteration of Kalofolias (2016, Algorithm 1) on the
    upper-triangle weights m (so ``sum_ij M_ij Z_ij = 2 m^T z``, ``||M||_F^2 = 2 ||m||^2``) and the
    dual variable v of the degrees ``d = S m``.
    """
    k = Z.shape[0]
    if k < 2:
        return np.zeros((k, k))
    z = Z[_upper(k)]
    S = _degree_operator(k)
    lipschitz = 2 * beta + np.sqrt(2 * (k - 1))  # smooth part's constant + ||S||
    step = 0.5 / (1 + lipschitz)
    m = np.zeros_like(z)
    v = S @ m
    for _ in range(max_iter):
        y = m - step * (2 * beta * m + S.T @ v)
        y_dual = v + step * (S @ m)
        p = np.maximum(0.0, y - 2 * step * z)
        p_dual = (y_dual - np.sqrt(y_dual ** 2 + 4 * alpha * step)) / 2
        q = p - step * (2 * beta * p + S.T @ p_dual)
        q_dual = p_dual + step * (S @ p)
        m_new, v = m - y + q, v - y_dual + q_dual
        change = np.linalg.norm(m_new - m)
        m = m_new
        if change <= tol * max(1.0, np.linalg.norm(m)):
            break
    return _from_upper(np.maximum(m, 0.0), k)  # the iterate may end a rounding error below 0


def _project_feasible_paper(A: np.ndarray, n_rounds: int) -> np.ndarray:
    """Dykstra's projection onto {A - I PSD} n {A_off <= 0} n {A 1 = 1} (symmetric A)."""
    k = A.shape[0]
    eye, ones = np.eye(k), np.ones(k)
    off = ~np.eye(k, dtype=bool)

    def psd_shift(B):
        vals, vecs = np.linalg.eigh((B + B.T) / 2 - eye)
        return eye + (vecs * np.maximum(vals, 0.0)) @ vecs.T

    def nonpositive_off(B):
        return np.where(off, np.minimum(B, 0.0), B)

    def unit_rows(B):
        residual = B @ ones - ones
        mu = (-residual + residual.sum() / (2 * k)) / k
        return B + mu[:, None] + mu[None, :]

    projections = (psd_shift, nonpositive_off, unit_rows)
    corrections = [np.zeros_like(A) for _ in projections]
    X = A.copy()
    for _ in range(n_rounds):
        for i, project in enumerate(projections):
            Y = project(X + corrections[i])
            corrections[i] = X + corrections[i] - Y
            X = Y
    return X


def paper_graph_step(W: np.ndarray, max_iter: int = 100, tol: float = 1e-9, seed: int = 0,
                     n_projection_rounds: int = 50) -> np.ndarray:
    """Algorithm 3's graph step as written: ``argmin_A Tr(W A W^T)`` over the paper's constraints.

    Projected gradient on A from a random feasible start ``I + L(M0)``; the gradient of the
    linear objective is ``W^T W``. A linear objective has a gradient with Lipschitz constant 0,
    so any step converges; along the feasible set a step t lowers each M_ij by about
    t Z_ij / 4, so ``t = 10 / min_{i<j} Z_ij`` takes few steps. Returns the A found (which is
    the identity; see the module docstring).
    """
    k = W.shape[1]
    rng = np.random.default_rng(seed)
    start = _from_upper(rng.uniform(0, 1, size=k * (k - 1) // 2), k)
    A = np.eye(k) + laplacian(start)
    gram = W.T @ W
    distances = pairwise_sq_distances(W)[_upper(k)]
    positive = distances[distances > 0]
    step = 10.0 / (positive.min() if positive.size else max(np.linalg.norm(gram, 2), 1e-12))
    for _ in range(max_iter):
        A_new = _project_feasible_paper(A - step * gram, n_projection_rounds)
        change = np.linalg.norm(A_new - A)
        A = A_new
        if change <= tol * max(1.0, np.linalg.norm(A)):
            break
    return (A + A.T) / 2


def learn_task_graph(W: np.ndarray, method: str = "kalofolias", sparsity: float = 1.0,
                     max_iter: int = 5000, tol: float = 1e-8, seed: int = 0) -> np.ndarray:
    """Learn the task graph M (k x k, symmetric, non-negative, zero diagonal) from heads W (d x k).

    Parameters
    ----------
    W : ndarray
        (d x k) head weights, one column per task.
    method : {"kalofolias", "paper"}
        The graph step; see the module docstring.
    sparsity : float
        Kalofolias' theta applied to ``Z / mean(Z)``: larger gives a sparser graph. Unused by
        ``"paper"``.
    max_iter, tol : int, float
        Limits of the inner solver.
    seed : int
        Random feasible start of the ``"paper"`` step.

    Returns
    -------
    M : ndarray
        Normalised so that its largest weight is 1 (all zeros when no edge is learned).
    """
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2:
        raise ValueError(f"W must be a (d x k) matrix, got shape {W.shape}")
    if sparsity <= 0:
        raise ValueError(f"sparsity must be positive, got {sparsity}")
    k = W.shape[1]
    if method == "paper":
        A = paper_graph_step(W, seed=seed)
        M = -(A - np.diag(np.diag(A)))
        M[M < 1e-6] = 0.0  # below the accuracy of the projections (A's diagonal is about 1)
    elif method == "kalofolias":
        Z = pairwise_sq_distances(W)
        mean = Z[_upper(k)].mean() if k > 1 else 0.0
        Z = Z / mean if mean > 0 else Z
        M = kalofolias_graph(sparsity * Z, max_iter=max_iter, tol=tol)
    else:
        raise ValueError(f"unknown graph step {method!r}; use one of {', '.join(GRAPH_STEPS)}")
    np.fill_diagonal(M, 0.0)
    M = (M + M.T) / 2
    top = M.max() if M.size else 0.0
    return M / top if top > 0 else M


def threshold_graph(M: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """Normalise M by its largest weight and zero the weights below ``threshold`` (paper Sec. 5.4)."""
    top = M.max() if M.size else 0.0
    normalised = M / top if top > 0 else np.zeros_like(M)
    return np.where(normalised >= threshold, normalised, 0.0)


def graph_clusters(M: np.ndarray, threshold: float = 0.1) -> list[list[int]]:
    """Connected components of the thresholded graph, as sorted lists of task indices.

    Clusters are ordered by their smallest index, so the output is deterministic.
    """
    n_components, labels = connected_components(threshold_graph(M, threshold) > 0, directed=False)
    clusters = [sorted(np.flatnonzero(labels == c).tolist()) for c in range(n_components)]
    return sorted(clusters, key=lambda c: c[0])
