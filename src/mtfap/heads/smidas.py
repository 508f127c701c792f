"""SMIDAS, the paper's Algorithm 2 (Shalev-Shwartz and Tewari, JMLR 2011), for the sparse codes S.

SMIDAS keeps a dual vector theta for each code vector s (a column of S_g, dimension K_g):

    theta <- soft_threshold(theta - r * grad_s, r * lam)
    s     <- f^{-1}(theta),  f^{-1}_j(theta) = sign(theta_j) |theta_j|^{p-1} / ||theta||_p^{p-2}

with p = 2 ln(K_g). The forward link f is the same map with the dual exponent q = p / (p - 1),
so f^{-1}(f(s)) = s. Because the threshold acts on theta and f^{-1}(0) = 0 entrywise, SMIDAS
reaches exact zeros, which a plain stochastic sub-gradient step on s does not.

Where 2 ln K < 2 (K = 1 or 2) the p-norm link would be undefined or expansive, so p = 2 is used:
the link is then the identity and SMIDAS is truncated gradient descent.

Numerical care: ``|theta|^{p-1}`` overflows for large entries or large p. Writing
``theta = m u`` with ``m = max |theta_j|`` gives ``f^{-1}(theta) = m sign(u)|u|^{p-1} / ||u||_p^{p-2}``
where every power is of a number in [0, 1] and ``1 <= ||u||_p <= K^{1/p}``: nothing overflows.
"""

from __future__ import annotations

import numpy as np

from mtfap.heads.proximal import soft_threshold


def link_exponent(dim: int) -> float:
    """p = 2 ln(dim), or 2 where that is below 2 (dim <= 2)."""
    if dim < 1:
        raise ValueError(f"dimension must be at least 1, got {dim}")
    return max(2.0, 2.0 * np.log(dim))


def _pnorm_map(values: np.ndarray, exponent: float) -> np.ndarray:
    """``sign(x)|x|^{r-1} / ||x||_r^{r-2}`` for each column x of ``values`` (r = ``exponent``)."""
    values = np.asarray(values, dtype=np.float64)
    column = values.ndim == 1
    values = values[:, None] if column else values
    scale = np.abs(values).max(axis=0)
    safe_scale = np.where(scale > 0, scale, 1.0)
    unit = values / safe_scale  # entries in [-1, 1], max |entry| = 1 per non-zero column
    norm = (np.abs(unit) ** exponent).sum(axis=0) ** (1.0 / exponent)  # in [1, dim^{1/r}]
    norm = np.where(scale > 0, norm, 1.0)
    out = safe_scale * np.sign(unit) * np.abs(unit) ** (exponent - 1) / norm ** (exponent - 2)
    return out[:, 0] if column else out


def inverse_link(theta: np.ndarray, p: float) -> np.ndarray:
    """Primal from dual: ``s = f^{-1}(theta)``, column-wise (each column is one code vector)."""
    return _pnorm_map(theta, p)


def link(s: np.ndarray, p: float) -> np.ndarray:
    """Dual from primal: ``theta = f(s)``, the p-norm map with the dual exponent p / (p - 1)."""
    return _pnorm_map(s, p / (p - 1.0))


def smidas_step(theta: np.ndarray, grad: np.ndarray, rate: float, lam: float, p: float):
    """One SMIDAS update of the dual ``theta`` (K x T, one column per task) given ``grad`` = dL/ds.

    Returns ``(theta_new, s_new)``. The soft-threshold ``r * lam`` comes from the l1 term
    ``lam ||s||_1`` of eq. 3.
    """
    theta = soft_threshold(theta - rate * grad, rate * lam)
    return theta, inverse_link(theta, p)
