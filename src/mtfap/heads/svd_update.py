"""Algorithm 1 of the paper: stochastic sub-gradient steps on L with a factored SVD update.

L (d x K) is kept as its thin SVD ``L = U diag(sigma) V^T``. The sub-gradient of
``loss(L) + gamma ||L||_*`` is ``G = grad loss(L) + gamma U V^T``. Following Avron et al.
(ICML 2012) the dense step ``L - eta G`` is replaced by the low-rank step ``L - eta G Y Y^T``
with a probing matrix Y (K x r, E[Y Y^T] = I), so that the new matrix is a product of two thin
factors whose SVD is cheap:

    L - eta G Y Y^T = [U diag(sigma), G Y] [V, -eta Y]^T
    [U diag(sigma), G Y] = Q_1 R_1,   [V, -eta Y] = Q_2 R_2        (thin QR)
    R_1 R_2^T = A diag(sigma') B^T                                  (small SVD)
    U' = Q_1 A,  V' = Q_2 B

Each step can raise the rank by r, so the result is truncated to the ``rank_cap`` largest
singular values (for Scenario 1 the cap is K_g, the number of latent tasks of the group).
"""

from __future__ import annotations

import numpy as np


def probing_matrix(dim: int, n_probes: int, rng: np.random.Generator) -> np.ndarray:
    """Y (dim x n_probes) whose columns are ``sqrt(dim / n_probes) e_i``, i uniform.

    E[Y Y^T] = n_probes * (dim / n_probes) * E[e_i e_i^T] = I, so ``G Y Y^T`` is an unbiased
    estimate of G.
    """
    if n_probes < 1:
        raise ValueError(f"n_probes must be at least 1, got {n_probes}")
    picks = rng.integers(0, dim, size=n_probes)
    probe = np.zeros((dim, n_probes))
    probe[picks, np.arange(n_probes)] = np.sqrt(dim / n_probes)
    return probe


def factored_update(u, sigma, v, direction, probe, eta, rank_cap=None):
    """SVD of ``U diag(sigma) V^T - eta * direction @ probe @ probe.T`` from thin factors.

    Parameters
    ----------
    u, sigma, v : ndarray
        Thin SVD of the current matrix: (d x r), (r,), (K x r).
    direction : ndarray
        (d x K) the (sub-)gradient G.
    probe : ndarray
        (K x p) probing matrix Y.
    eta : float
        Step size.
    rank_cap : int or None
        Keep only this many largest singular values (None: keep all, at most r + p).

    Returns
    -------
    (u', sigma', v') with sigma' in decreasing order.
    """
    left = np.hstack([u * sigma, direction @ probe])
    right = np.hstack([v, -eta * probe])
    q_left, r_left = np.linalg.qr(left)
    q_right, r_right = np.linalg.qr(right)
    a, sigma_new, bt = np.linalg.svd(r_left @ r_right.T)
    u_new, v_new = q_left @ a, q_right @ bt.T
    if rank_cap is not None:
        u_new, sigma_new, v_new = u_new[:, :rank_cap], sigma_new[:rank_cap], v_new[:, :rank_cap]
    return u_new, sigma_new, v_new


def thin_svd(matrix: np.ndarray, rtol: float = 1e-12):
    """Thin SVD keeping the singular values above ``rtol`` times the largest."""
    u, sigma, vt = np.linalg.svd(matrix, full_matrices=False)
    keep = sigma > rtol * (sigma[0] if sigma.size else 0.0)
    return u[:, keep], sigma[keep], vt[keep].T


def subgradient_step(u, sigma, v, loss_grad, gamma, eta, n_probes, rng, rank_cap):
    """One step of Algorithm 1 on ``loss(L) + gamma ||L||_*`` with L = U diag(sigma) V^T.

    The nuclear-norm sub-gradient ``U V^T`` uses only the singular vectors with non-zero
    singular values (the minimum-norm choice).
    """
    positive = sigma > 0
    direction = loss_grad + gamma * (u[:, positive] @ v[:, positive].T)
    probe = probing_matrix(v.shape[0], n_probes, rng)
    return factored_update(u, sigma, v, direction, probe, eta, rank_cap)
