"""The small base every multi-task head estimator shares.

Model (docs/METHOD.md section 1): k linear predictors ``f_j(x) = w_j^T x + b_j`` on fixed features x in R^d,
``W = [w_1 ... w_k]`` (d x k), trained by

    min_{W, b}  sum_j  (1 / n_j) sum_{i : label (i, j) known}  l(y_ij, w_j^T x_i + b_j)  + Omega(W)

with the sigmoid cross-entropy ``l(y, z) = log(1 + e^z) - y z``. A missing label contributes
nothing (it is never a negative); each task's loss is averaged over its n_j known labels, so the
penalty weights mean the same whatever the number of labelled rows. The features are
standardised inside ``fit`` (heads are sensitive to scale) and the learned heads are mapped back,
so ``coef_`` and ``intercept_`` apply to raw features.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from mtfap.attributes import CELEBA_ATTRIBUTES
from mtfap.heads.params import ESTIMATOR, check_params


def check_multitask_data(X, Y=None, mask=None):
    """Validate ``X`` (n x d), ``Y`` (n x k, 0/1, or -1 for missing) and ``mask`` (n x k bool).

    Returns float64 X, and when Y is given uint8 Y with missing entries set to 0 and the boolean
    mask (True = label known). Errors name the argument and its shape.
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D array (n_samples x n_features), got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number):
        raise ValueError(f"X must be numeric, got dtype {X.dtype}")
    X = X.astype(np.float64, copy=False)
    if not np.isfinite(X).all():
        rows = np.flatnonzero(~np.isfinite(X).all(axis=1))
        raise ValueError(f"X has non-finite values in {rows.size} rows (first: row {rows[0]})")
    if Y is None:
        return X
    Y = np.asarray(Y)
    if Y.ndim != 2 or Y.shape[0] != X.shape[0]:
        raise ValueError(f"Y must be (n_samples x n_tasks) with n_samples = {X.shape[0]} like X, "
                         f"got shape {Y.shape}")
    values = np.unique(Y)
    if not np.isin(values, (-1, 0, 1)).all():
        raise ValueError(f"Y must hold 0/1 labels (or -1 for a missing label), found values "
                         f"{values[~np.isin(values, (-1, 0, 1))][:5].tolist()}")
    known = Y >= 0
    if mask is None:
        mask = known
    else:
        mask = np.asarray(mask)
        if mask.shape != Y.shape:
            raise ValueError(f"mask must have Y's shape {Y.shape}, got {mask.shape}")
        if mask.dtype != bool:
            raise ValueError(f"mask must be boolean (True = label known), got dtype {mask.dtype}")
        mask = mask & known
    return X, np.where(mask, Y, 0).astype(np.uint8), mask


class MaskedLogisticLoss:
    """``sum_j (1/n_j) sum_{i known} log(1 + e^{z_ij}) - y_ij z_ij`` with ``Z = X W + b``.

    Holds the data in ``dtype``: float32 halves the time of the n x d and n x k arrays (the
    expensive part; the loss is still summed in float64) at the price of gradients accurate to
    about 1e-4 relative; float64 solves to full precision. Returns the loss with its gradients
    in W and b, in float64.
    """

    def __init__(self, X, Y, mask, dtype=np.float32):
        self.dtype = np.dtype(dtype)
        self.X = np.asarray(X, dtype=self.dtype)
        counts = np.maximum(mask.sum(axis=0), 1)
        self.weights = (mask / counts).astype(self.dtype)  # 0 for a missing label
        self.Y = np.asarray(Y, dtype=self.dtype)
        self.sign = 1 - 2 * self.Y  # the loss is softplus(sign * z)

    def __call__(self, W, b):
        logits = self.X @ W.astype(self.dtype) + b.astype(self.dtype)
        signed = self.sign * logits
        terms = np.maximum(signed, 0) + np.log1p(np.exp(-np.abs(signed)))  # stable softplus
        loss = float((self.weights * terms).sum(dtype=np.float64))
        grad_logits = self.weights * (expit(logits) - self.Y)
        grad_W = (self.X.T @ grad_logits).astype(np.float64)
        return loss, grad_W, grad_logits.sum(axis=0, dtype=np.float64)

    def rows(self, index) -> "MaskedLogisticLoss":
        """The loss on a subset of rows, each task still averaged over its known labels there."""
        return MaskedLogisticLoss(self.X[index], self.Y[index], self.weights[index] > 0, self.dtype)


class MultiTaskHeads(ClassifierMixin, BaseEstimator):
    """Base of the multi-task head estimators (not used directly).

    Subclasses name their ``method`` (its parameters are declared in
    :mod:`mtfap.heads.params` and checked at the start of ``fit``) and implement
    ``_fit_heads(data) -> (W, b)``, ``data`` being the
    :class:`MaskedLogisticLoss` of the standardised training set, with W (d x k) and b (k,), and
    may set more fitted attributes there.

    Fitted attributes
    -----------------
    coef_ : (k, d) heads on raw features; intercept_ : (k,)
    W_ : (d, k) heads on standardised features (the matrix the regulariser sees); b_ : (k,)
    mean_, scale_ : (d,) the standardisation, from the rows with at least one known label
    attributes_ : list of k names; n_features_in_ : int; n_iter_ : int
    """

    method: str
    _fitted: tuple[str, ...] = ()  # a subclass's own fitted attributes

    @classmethod
    def fitted_attributes(cls) -> tuple[str, ...]:
        """The names ``fit`` sets (what a saved estimator may restore, and nothing else)."""
        return ("coef_", "intercept_", "W_", "b_", "mean_", "scale_", "attributes_",
                "n_features_in_", "n_iter_", *cls._fitted)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, X, Y, mask=None):
        """Fit the k heads on features ``X`` (n x d) and labels ``Y`` (n x k, 0/1).

        ``mask`` (n x k bool, True = label known) marks missing labels; Y may also mark them
        with -1. Rows without any known label do not count, not even for the standardisation,
        so fitting with a mask equals fitting on the labelled rows alone.
        """
        check_params(self.method, self.get_params(), ESTIMATOR)
        X, Y, mask = check_multitask_data(X, Y, mask)
        counts = mask.sum(axis=0)
        self.attributes_ = self._attribute_names(Y.shape[1])
        if (counts == 0).any():
            empty = [self.attributes_[j] for j in np.flatnonzero(counts == 0)]
            raise ValueError(f"no known label for task(s) {', '.join(empty)}: drop those columns "
                             "or give some labels")
        labelled = mask.any(axis=1)
        X, Y, mask = X[labelled], Y[labelled], mask[labelled]
        self.n_features_in_ = X.shape[1]
        if getattr(self, "standardize", True):
            self.mean_ = X.mean(axis=0)
            scale = X.std(axis=0)
            self.scale_ = np.where(scale > 0, scale, 1.0)
        else:
            self.mean_, self.scale_ = np.zeros(X.shape[1]), np.ones(X.shape[1])
        X_std = (X - self.mean_) / self.scale_
        W, b = self._fit_heads(MaskedLogisticLoss(X_std, Y, mask, self.precision))
        self.W_, self.b_ = W, b
        self.coef_ = (W / self.scale_[:, None]).T
        self.intercept_ = b - self.coef_ @ self.mean_
        return self

    def _attribute_names(self, k: int) -> list[str]:
        names = getattr(self, "attributes", None)
        if names is None:
            return list(CELEBA_ATTRIBUTES) if k == len(CELEBA_ATTRIBUTES) else [
                f"task_{j}" for j in range(k)]
        names = [str(a) for a in names]
        if len(names) != k:
            raise ValueError(f"attributes has {len(names)} names but Y has {k} columns")
        if len(set(names)) != k:
            raise ValueError("attributes has repeated names")
        return names

    @staticmethod
    def _initial_intercept(Y, mask) -> np.ndarray:
        """Log-odds of each task's positive rate among its known labels (clipped)."""
        rate = np.clip((Y * mask).sum(axis=0) / mask.sum(axis=0), 1e-3, 1 - 1e-3)
        return np.log(rate / (1 - rate))

    def _fit_quadratic(self, data, penalty_matrix, W0=None, b0=None):
        """Minimise ``loss(W, b) + Tr(W P W^T)`` (P = ``penalty_matrix``, k x k PSD) by L-BFGS.

        Covers eq. 1 (P = lam I) and the W-step of Scenario 2 (P = xi A). ``data`` is the
        :class:`MaskedLogisticLoss` of the training set.
        """
        d, k = data.X.shape[1], data.Y.shape[1]
        W0 = np.zeros((d, k)) if W0 is None else W0
        b0 = self._initial_intercept(data.Y, data.weights > 0) if b0 is None else b0

        def objective(theta):
            W, b = theta[:d * k].reshape(d, k), theta[d * k:]
            loss, grad_W, grad_b = data(W, b)
            WP = W @ penalty_matrix
            return loss + float((W * WP).sum()), np.concatenate([(grad_W + 2 * WP).ravel(),
                                                                  grad_b])

        result = minimize(objective, np.concatenate([W0.ravel(), b0]), jac=True,
                          method="L-BFGS-B",
                          options={"maxiter": self.max_iter, "gtol": self.tol,
                                   "ftol": self.tol * 1e-4})
        self.n_iter_ = int(result.nit)
        return result.x[:d * k].reshape(d, k), result.x[d * k:]

    # -- prediction ---------------------------------------------------------------------------
    def decision_function(self, X) -> np.ndarray:
        """Logits ``X coef_^T + intercept_``, (n x k)."""
        check_is_fitted(self, "coef_")
        X = check_multitask_data(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, the heads were fitted on "
                             f"{self.n_features_in_}")
        return X @ self.coef_.T + self.intercept_

    def predict_proba(self, X) -> np.ndarray:
        """Probability that each attribute is present, (n x k) (one column per task, not per class)."""
        return expit(self.decision_function(X))

    def predict(self, X) -> np.ndarray:
        """0/1 predictions (n x k): 1 where the logit is positive."""
        return (self.decision_function(X) > 0).astype(np.uint8)

    def score(self, X, Y, mask=None) -> float:
        """Mean over tasks of the accuracy on the known labels of each task (paper Tables 1-2)."""
        X, Y, mask = check_multitask_data(X, Y, mask)
        correct = (self.predict(X) == Y) & mask
        counts = mask.sum(axis=0)
        scored = counts > 0
        return float((correct.sum(axis=0)[scored] / counts[scored]).mean())
