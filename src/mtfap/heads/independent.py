"""Independent heads, the baseline of eq. 1: no sharing between tasks."""

from __future__ import annotations

import numpy as np

from mtfap.heads.base import MultiTaskHeads


class IndependentHeads(MultiTaskHeads):
    """k logistic regressions with ``Omega(W) = lam * sum_j ||w_j||^2`` (eq. 1).

    Fitted jointly by full-batch L-BFGS (the tasks do not interact, so this is the same as k
    separate fits, only faster).

    Parameters
    ----------
    lam : float, default 1e-3
        Ridge weight on each head (on standardised features; the intercepts are not penalised).
    attributes : list of str, optional
        Task names (default: the 40 CelebA names when Y has 40 columns, else ``task_j``).
    standardize : bool, default True
        Standardise the features inside ``fit``.
    precision : {"float32", "float64"}, default "float32"
        Arithmetic of the data term: float32 is about twice as fast, float64 solves to full
        precision (use it to compare solutions to 1e-6).
    max_iter : int, default 500
        L-BFGS iteration limit.
    tol : float, default 1e-4
        L-BFGS gradient tolerance.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 5)); Y = (X[:, :2] > 0).astype(int)
    >>> IndependentHeads(attributes=["a", "b"]).fit(X, Y).score(X, Y) > 0.9
    True
    """

    method = "independent"

    def __init__(self, lam=1e-3, *, attributes=None, standardize=True, precision="float32",
                 max_iter=500, tol=1e-4):
        self.lam = lam
        self.attributes = attributes
        self.standardize = standardize
        self.precision = precision
        self.max_iter = max_iter
        self.tol = tol

    def _fit_heads(self, data):
        return self._fit_quadratic(data, self.lam * np.eye(data.Y.shape[1]))
