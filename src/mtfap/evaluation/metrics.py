"""Per-attribute accuracy, balanced accuracy and identity-cluster bootstrap intervals.

Only known labels count: wherever ``mask`` is False the label is missing and the prediction
is neither right nor wrong. Every metric is a ratio of per-image counts, so one set of count
formulas gives the point estimates and, reweighted, every bootstrap replicate.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd


def _check_inputs(scores, labels, mask):
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (n_images, n_attributes); got shape {scores.shape}")
    if labels.shape != scores.shape:
        raise ValueError(f"labels shape {labels.shape} does not match scores shape {scores.shape}")
    mask = np.ones(scores.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != scores.shape:
        raise ValueError(f"mask shape {mask.shape} does not match scores shape {scores.shape}")
    return scores, labels.astype(bool), mask


def tune_thresholds(scores, labels, mask=None) -> np.ndarray:
    """Per-attribute decision thresholds that maximise accuracy on known labels.

    For attribute j the rule is ``predict 1 iff score >= t_j``. With the known scores sorted,
    s_(1) <= ... <= s_(m), a cut between s_(i) and s_(i+1) predicts the first i negative, so

        correct(i) = #negatives among the first i + #positives among the rest,

    a cumulative sum. ``t_j`` is the midpoint of the best cut (ties: the cut closest to 0.5).
    An attribute without known labels keeps 0.5.

    Parameters
    ----------
    scores : (n, k) array of probabilities (validation split).
    labels : (n, k) array in {0, 1}.
    mask : (n, k) bool, True where the label is known; None = all known.

    Returns
    -------
    (k,) float array of thresholds.
    """
    scores, labels, mask = _check_inputs(scores, labels, mask)
    thresholds = np.full(scores.shape[1], 0.5)
    for j in range(scores.shape[1]):
        s, y = scores[mask[:, j], j], labels[mask[:, j], j]
        if len(s) == 0:
            continue
        order = np.argsort(s, kind="stable")
        s, y = s[order], y[order]
        # Candidate cuts: below everything, between distinct neighbours, above everything.
        negatives_below = np.concatenate([[0], np.cumsum(~y)])
        positives_above = y.sum() - np.concatenate([[0], np.cumsum(y)])
        correct = negatives_below + positives_above
        cut_values = np.concatenate([[s[0] - 1e-6], (s[:-1] + s[1:]) / 2, [s[-1] + 1e-6]])
        valid = np.concatenate([[True], s[1:] > s[:-1], [True]])
        correct = np.where(valid, correct, -1)
        best = np.flatnonzero(correct == correct.max())
        thresholds[j] = cut_values[best[np.argmin(np.abs(cut_values[best] - 0.5))]]
    return thresholds


def _counts(correct, positive, known):
    """Per-row counts (n, k) -> stacked arrays for accuracy and the two class recalls."""
    return np.stack([correct & known,                 # right, any class
                     known,                           # known labels
                     correct & positive & known,      # true positives
                     positive & known,                # known positives
                     correct & ~positive & known,     # true negatives
                     ~positive & known]).astype(np.float64)   # known negatives


def _ratios(counts):
    """counts (..., 6, k) summed over images -> accuracy, balanced accuracy (..., k)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = counts[..., 0, :] / counts[..., 1, :]
        recall_pos = counts[..., 2, :] / counts[..., 3, :]
        recall_neg = counts[..., 4, :] / counts[..., 5, :]
    # Mean of the recalls of the classes present (sklearn's convention for one class).
    both = np.stack([recall_pos, recall_neg])
    present = ~np.isnan(both)
    balanced = np.where(present.any(0), np.nansum(both, 0) / np.maximum(present.sum(0), 1), np.nan)
    return accuracy, balanced


@dataclass
class EvaluationResult:
    """Per-attribute metrics of one model on one split; accuracies are fractions in [0, 1].

    ``ci_*`` are 95 % percentile-bootstrap intervals, (k, 2) per attribute and (2,) for the
    means over attributes; ``bootstrap_unit`` says whether identities or images were resampled.
    """

    attributes: list[str]
    accuracy: np.ndarray
    balanced_accuracy: np.ndarray
    n_known: np.ndarray
    positive_rate_predicted: np.ndarray
    positive_rate_true: np.ndarray
    thresholds: np.ndarray
    ci_accuracy: np.ndarray
    ci_balanced_accuracy: np.ndarray
    ci_mean_accuracy: np.ndarray
    ci_mean_balanced_accuracy: np.ndarray
    n_images: int
    n_units: int
    bootstrap_unit: str
    n_bootstrap: int
    meta: dict = field(default_factory=dict)

    @property
    def mean_accuracy(self) -> float:
        """Mean over the attributes that have known labels (the paper's headline number)."""
        return float(np.nanmean(self.accuracy))

    @property
    def mean_balanced_accuracy(self) -> float:
        return float(np.nanmean(self.balanced_accuracy))

    def to_frame(self) -> pd.DataFrame:
        """One row per attribute; accuracies in percent."""
        return pd.DataFrame({
            "accuracy": 100 * self.accuracy,
            "accuracy_ci_low": 100 * self.ci_accuracy[:, 0],
            "accuracy_ci_high": 100 * self.ci_accuracy[:, 1],
            "balanced_accuracy": 100 * self.balanced_accuracy,
            "balanced_ci_low": 100 * self.ci_balanced_accuracy[:, 0],
            "balanced_ci_high": 100 * self.ci_balanced_accuracy[:, 1],
            "positive_rate_predicted": 100 * self.positive_rate_predicted,
            "positive_rate_true": 100 * self.positive_rate_true,
            "threshold": self.thresholds,
            "n_known": self.n_known,
        }, index=pd.Index(self.attributes, name="attribute"))

    def summary(self) -> dict:
        """The means with their intervals, in percent, as plain floats."""
        pct = lambda a: [round(100 * float(v), 3) for v in a]  # noqa: E731
        return {
            "mean_accuracy": round(100 * self.mean_accuracy, 3),
            "mean_accuracy_ci95": pct(self.ci_mean_accuracy),
            "mean_balanced_accuracy": round(100 * self.mean_balanced_accuracy, 3),
            "mean_balanced_accuracy_ci95": pct(self.ci_mean_balanced_accuracy),
            "n_images": self.n_images,
            "bootstrap_unit": self.bootstrap_unit,
            "n_bootstrap_units": self.n_units,
            "n_bootstrap": self.n_bootstrap,
        }

    def to_dict(self) -> dict:
        """JSON-ready: the summary, the per-attribute table (NaN as None) and ``meta``."""
        frame = self.to_frame().astype(object).where(self.to_frame().notna(), None)
        return {**self.summary(), "meta": self.meta,
                "attributes": {a: {c: (None if v is None else float(v)) for c, v in row.items()}
                               for a, row in frame.iterrows()}}


def _bootstrap_units(identities, n: int) -> tuple[np.ndarray, str, int]:
    """The resampling unit of each of ``n`` rows: its identity when ``identities`` are given
    (a cluster bootstrap), else the row itself; with the unit's name and the number of units."""
    if identities is None:
        return np.arange(n), "image", n
    identities = np.asarray(identities)
    if identities.shape != (n,):
        raise ValueError(f"identities must have shape ({n},); got {identities.shape}")
    _, unit = np.unique(identities, return_inverse=True)
    return unit, "identity", int(unit.max()) + 1 if n else 0


def _bootstrap_weights(n_units: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """(n_bootstrap, n_units) draw counts: how often each unit is drawn in each replicate."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_units, np.full(n_units, 1 / n_units),
                           size=n_bootstrap).astype(np.float64)


def evaluate_predictions(scores, labels, mask=None, attributes=None, identities=None,
                         thresholds=0.5, n_bootstrap: int = 1000, seed: int = 0,
                         meta: dict | None = None) -> EvaluationResult:
    """Accuracy and balanced accuracy per attribute, their means, and bootstrap intervals.

    With predictions ``p_ij = [s_ij >= t_j]`` and known labels (mask) only,

        acc_j = #{i : p_ij = y_ij} / #{i : known},
        bacc_j = (TP_j / P_j + TN_j / N_j) / 2   (a missing class drops out of the mean).

    Intervals: the images of one person are not independent, so when ``identities`` are given
    the bootstrap resamples identities with replacement (cluster bootstrap) and every image of
    a drawn identity comes along; otherwise images are resampled. Each replicate is a vector
    of multinomial draw counts w (one per unit), and its accuracy is (w @ C) / (w @ K) for the
    per-unit count matrices C, K, so all ``n_bootstrap`` replicates are two matrix products.

    Parameters
    ----------
    scores : (n, k) probabilities (or any score thresholded by ``thresholds``).
    labels : (n, k) in {0, 1}.
    mask : (n, k) bool, True where the label is known; None = all known.
    attributes : k names; default ``attr0``... .
    identities : (n,) person ids or None.
    thresholds : scalar or (k,) decision thresholds; 0.5 by default.
    n_bootstrap : number of bootstrap replicates (0 disables the intervals).
    seed : seed of the bootstrap draws.
    """
    scores, labels, mask = _check_inputs(scores, labels, mask)
    n, k = scores.shape
    attributes = list(attributes) if attributes is not None else [f"attr{j}" for j in range(k)]
    if len(attributes) != k:
        raise ValueError(f"{len(attributes)} attribute names for {k} score columns")
    thresholds = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (k,)).copy()
    predicted = scores >= thresholds
    counts = _counts(predicted == labels, labels, mask)        # (6, n, k)
    accuracy, balanced = _ratios(counts.sum(1))
    n_known = mask.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate_pred = (predicted & mask).sum(0) / n_known
        rate_true = (labels & mask).sum(0) / n_known

    unit, unit_name, n_units = _bootstrap_units(identities, n)
    nan2 = np.full((k, 2), np.nan)
    ci_acc, ci_bal, ci_mean_acc, ci_mean_bal = nan2, nan2.copy(), np.full(2, np.nan), np.full(2, np.nan)
    if n_bootstrap > 0 and n_units > 0:
        # Per-unit counts (6, units, k), then replicate counts (B, 6, k) by weighting units.
        per_unit = np.zeros((6, n_units, k))
        np.add.at(per_unit, (slice(None), unit), counts)
        weights = _bootstrap_weights(n_units, n_bootstrap, seed)
        replicate = np.einsum("bu,cuk->bck", weights, per_unit)
        boot_acc, boot_bal = _ratios(replicate)
        q = [2.5, 97.5]
        # An attribute without known labels is all-NaN: expected, so keep it NaN quietly.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ci_acc = np.nanpercentile(boot_acc, q, axis=0).T
            ci_bal = np.nanpercentile(boot_bal, q, axis=0).T
            ci_mean_acc = np.nanpercentile(np.nanmean(boot_acc, 1), q)
            ci_mean_bal = np.nanpercentile(np.nanmean(boot_bal, 1), q)
    return EvaluationResult(attributes, accuracy, balanced, n_known, rate_pred, rate_true,
                            thresholds, ci_acc, ci_bal, ci_mean_acc, ci_mean_bal, n, n_units,
                            unit_name, int(n_bootstrap), dict(meta or {}))



@dataclass
class PairedAccuracyDifference:
    """Accuracy of model a minus model b on the same images, in [0, 1] units.

    ``difference`` is per attribute (k,), ``mean_difference`` the difference of the means over
    attributes; ``ci_*`` their 95 % percentile-bootstrap intervals, both models scored on the
    same resample in every replicate.
    """

    attributes: list[str]
    difference: np.ndarray
    ci_difference: np.ndarray
    mean_difference: float
    ci_mean_difference: np.ndarray
    n_units: int
    bootstrap_unit: str
    n_bootstrap: int


def paired_accuracy_difference(scores_a, scores_b, labels, mask=None, attributes=None,
                               identities=None, thresholds=0.5, n_bootstrap: int = 1000,
                               seed: int = 0) -> PairedAccuracyDifference:
    """How much more accurate model a is than model b, on the same images and labels.

    The difference of accuracies acc_j(a) - acc_j(b) per attribute and of their means; the
    interval resamples identities (or images, without ``identities``) as
    :func:`evaluate_predictions` does, and each replicate scores both models on the *same*
    resample, so what the two share (hard images, hard people) cancels and the interval is
    that of the difference, much narrower than the two separate intervals suggest.

    Parameters
    ----------
    scores_a, scores_b : (n, k) probabilities of the two models on the same images.
    labels, mask, attributes, identities, thresholds : as in :func:`evaluate_predictions`;
        ``thresholds`` applies to both models.
    n_bootstrap : replicates (0: no intervals); seed : seed of the draws.
    """
    scores_a, labels_a, mask = _check_inputs(scores_a, labels, mask)
    scores_b, _, _ = _check_inputs(scores_b, labels, mask)
    n, k = scores_a.shape
    attributes = list(attributes) if attributes is not None else [f"attr{j}" for j in range(k)]
    thresholds = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (k,))
    # (2, n, k): right and known, per model; known is shared
    right = np.stack([((s >= thresholds) == labels_a) & mask for s in (scores_a, scores_b)])
    right = right.astype(np.float64)
    known = mask.astype(np.float64)
    unit, unit_name, n_units = _bootstrap_units(identities, n)

    def accuracy_difference(right_counts, known_counts):
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = right_counts / known_counts            # (..., 2, k)
        return acc[..., 0, :] - acc[..., 1, :]

    difference = accuracy_difference(right.sum(1), known.sum(0))
    ci = np.full((k, 2), np.nan)
    ci_mean = np.full(2, np.nan)
    if n_bootstrap > 0 and n_units > 0:
        per_unit_right = np.zeros((2, n_units, k))
        np.add.at(per_unit_right, (slice(None), unit), right)
        per_unit_known = np.zeros((n_units, k))
        np.add.at(per_unit_known, unit, known)
        weights = _bootstrap_weights(n_units, n_bootstrap, seed)
        boot = accuracy_difference(np.einsum("bu,muk->bmk", weights, per_unit_right),
                                   (weights @ per_unit_known)[:, None, :])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ci = np.nanpercentile(boot, [2.5, 97.5], axis=0).T
            ci_mean = np.nanpercentile(np.nanmean(boot, 1), [2.5, 97.5])
    return PairedAccuracyDifference(attributes, difference, ci, float(np.nanmean(difference)),
                                    ci_mean, n_units, unit_name, int(n_bootstrap))
