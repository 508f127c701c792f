"""Proximal operators of the Scenario 1 penalties and an accelerated proximal-gradient solver.

The non-smooth part of eq. 3, ``lam ||S||_1 + gamma ||L||_*``, has closed-form proximal operators:

    prox_{t ||.||_1}(V)  = sign(V) * max(|V| - t, 0)               (entrywise soft-thresholding)
    prox_{t ||.||_*}(V)  = U diag(max(sigma - t, 0)) V^T, V = U diag(sigma) V^T   (SVT)

Applied after a gradient step they give exact zeros and an exact low rank, which sub-gradient
steps (Algorithm 1) never do. Both the scikit-learn estimators and the torch heads call these.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def soft_threshold(values: np.ndarray, threshold: float) -> np.ndarray:
    """``argmin_x threshold * ||x||_1 + 1/2 ||x - values||^2 = sign(v) max(|v| - threshold, 0)``."""
    return np.sign(values) * np.maximum(np.abs(values) - threshold, 0.0)


def singular_value_threshold(matrix: np.ndarray, threshold: float) -> np.ndarray:
    """``argmin_X threshold * ||X||_* + 1/2 ||X - matrix||_F^2``: soft-threshold the singular values."""
    u, sigma, vt = np.linalg.svd(matrix, full_matrices=False)
    return (u * np.maximum(sigma - threshold, 0.0)) @ vt


def nuclear_norm(matrix: np.ndarray) -> float:
    """``||X||_*``, the sum of the singular values."""
    return float(np.linalg.svd(matrix, compute_uv=False).sum())


def numerical_rank(matrix: np.ndarray, rtol: float = 1e-9) -> int:
    """Number of singular values above ``rtol`` times the largest (0 for a zero matrix)."""
    sigma = np.linalg.svd(matrix, compute_uv=False)
    return int((sigma > rtol * sigma[0]).sum()) if sigma.size and sigma[0] > 0 else 0


@dataclass
class ProximalResult:
    """Outcome of :func:`accelerated_proximal_gradient`."""

    x: np.ndarray
    objective: float
    n_iter: int
    converged: bool


def accelerated_proximal_gradient(smooth, penalty, prox, x0, *, step=1.0, max_iter=500,
                                  tol=1e-7) -> ProximalResult:
    """Minimise ``F(x) = f(x) + h(x)`` by FISTA with backtracking and adaptive restart.

    Each iteration takes a gradient step on the smooth part ``f`` from the extrapolated point
    ``y`` and applies ``prox_{t h}``; the step ``t`` halves until the quadratic upper bound
    ``f(x+) <= f(y) + <grad f(y), x+ - y> + ||x+ - y||^2 / (2t)`` holds (Beck and Teboulle,
    2009) and grows by 10 % per iteration so that it tracks the local curvature. The momentum
    restarts whenever ``F`` increases (O'Donoghue and Candes, 2015), which keeps the method
    monotone and also makes it safe on the block-biconvex objective of eq. 3.

    Parameters
    ----------
    smooth : callable
        ``x -> (f(x), grad f(x))`` on flat float64 vectors.
    penalty : callable
        ``x -> h(x)``.
    prox : callable
        ``(v, t) -> prox_{t h}(v)``.
    x0 : ndarray
        Starting point (flat).
    step : float
        Initial step ``t``.
    max_iter : int
        Iteration limit.
    tol : float
        Stop when ``||x_{k+1} - x_k|| <= tol * max(1, ||x_k||)``.
    """
    x = np.asarray(x0, dtype=np.float64).copy()
    f_x, _ = smooth(x)
    objective = f_x + penalty(x)
    y, momentum = x.copy(), 1.0
    for iteration in range(1, max_iter + 1):
        f_y, grad_y = smooth(y)
        while True:
            x_new = prox(y - step * grad_y, step)
            diff = x_new - y
            f_new, _ = smooth(x_new)
            if f_new <= f_y + grad_y @ diff + (diff @ diff) / (2 * step) + 1e-12 * abs(f_y):
                break
            step /= 2
            if step < 1e-20:
                raise FloatingPointError("proximal gradient: the step underflowed; the smooth "
                                         "part or its gradient is not finite")
        objective_new = f_new + penalty(x_new)
        change = np.linalg.norm(x_new - x)
        if objective_new > objective + 1e-13 * abs(objective):  # restart from the last iterate
            y, momentum = x.copy(), 1.0
            if change <= tol * max(1.0, np.linalg.norm(x)):
                return ProximalResult(x, objective, iteration, True)
            continue
        next_momentum = (1 + np.sqrt(1 + 4 * momentum ** 2)) / 2
        y = x_new + ((momentum - 1) / next_momentum) * (x_new - x)
        momentum = next_momentum
        converged = change <= tol * max(1.0, np.linalg.norm(x))
        x, objective = x_new, objective_new
        step *= 1.1
        if converged:
            return ProximalResult(x, objective, iteration, True)
    return ProximalResult(x, objective, max_iter, False)
