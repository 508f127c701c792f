"""Face verification (paper Sec. 5.6, Fig. 11): pair lists, the 10-fold protocol and its metrics.

A verifier gives each pair of images a score, higher meaning "more likely the same person"
(for the Siamese verifier, the negative distance of the two embeddings, eq. 17-19). A pair is
declared genuine when its score is at least a threshold t. The metrics:

- 10-fold accuracy (LFW View 2): for each fold, t maximises the accuracy on the nine other
  folds and is applied to the held-out fold; the mean and spread of the ten accuracies are the
  result. The held-out fold never takes part in choosing its threshold.
- ROC: TAR(t) = #{genuine: s >= t} / #genuine against FAR(t) = #{impostor: s >= t} / #impostor.
- TAR at FAR: the largest TAR whose threshold keeps FAR at most the target.
- EER: the rate where FAR = FRR = 1 - TAR on the ROC curve.

Pair lists are LFW's ``pairs.txt`` (:func:`mtfap.data.read_lfw_pairs`) or, for CelebA, the
fixed list of :func:`celeba_test_pairs`, built the same way and stored with :func:`save_pairs`.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import auc, roc_curve

from mtfap.data.dataset import SPLITS, FaceDataset
from mtfap.data.lfw import read_lfw_pairs
from mtfap.errors import DataError
from mtfap.io import atomic_write_text, save_figure

PAIRS_HEADER = ("fold", "same", "key1", "key2")
DEFAULT_FARS = (1e-2, 1e-3)


# --------------------------------------------------------------------------------------------
# Pair lists

@dataclass
class VerificationPairs:
    """Pairs of images to verify, in folds.

    key1, key2 : (n,) image keys (as in :class:`FaceDataset.keys`).
    same : (n,) bool, True for a genuine pair (one person), False for an impostor pair.
    fold : (n,) int, the fold of each pair (0-based).
    name : what the list is ("lfw-view2", "celeba-test", ...).
    """

    key1: np.ndarray
    key2: np.ndarray
    same: np.ndarray
    fold: np.ndarray
    name: str = "pairs"

    def __post_init__(self):
        self.key1 = np.asarray(self.key1, dtype=str)
        self.key2 = np.asarray(self.key2, dtype=str)
        self.same = np.asarray(self.same, dtype=bool)
        self.fold = np.asarray(self.fold, dtype=np.int64)
        shapes = {a: getattr(self, a).shape for a in ("key1", "key2", "same", "fold")}
        if len(set(shapes.values())) != 1 or self.key1.ndim != 1:
            raise ValueError(f"key1, key2, same and fold must be 1-D of one length; got {shapes}")

    @classmethod
    def from_lfw(cls, pairs: np.ndarray, name: str = "lfw-view2") -> VerificationPairs:
        """From the structured array of :func:`mtfap.data.read_lfw_pairs`."""
        return cls(pairs["key1"], pairs["key2"], pairs["same"], pairs["fold"], name)

    def __len__(self) -> int:
        return len(self.same)

    @property
    def folds(self) -> np.ndarray:
        """The fold numbers present, sorted."""
        return np.unique(self.fold)

    def index(self, keys) -> tuple[np.ndarray, np.ndarray]:
        """Positions of ``key1`` and ``key2`` in ``keys`` (e.g. the keys of a feature cache).

        Raises ValueError naming the first missing keys when a pair image is not in ``keys``.
        """
        position = {key: i for i, key in enumerate(keys)}
        missing = sorted({k for k in (*self.key1, *self.key2) if k not in position})
        if missing:
            raise ValueError(f"{len(missing)} pair images are not among the {len(position)} keys "
                             f"given: {', '.join(missing[:3])}; compute their features first")
        return (np.array([position[k] for k in self.key1], dtype=np.int64),
                np.array([position[k] for k in self.key2], dtype=np.int64))

    def summary(self) -> dict:
        """How many pairs (genuine, impostor), folds and distinct images the list has."""
        return {"name": self.name, "n_pairs": len(self), "n_folds": len(self.folds),
                "n_genuine": int(self.same.sum()), "n_impostor": int((~self.same).sum()),
                "n_images": len(np.unique(np.concatenate([self.key1, self.key2])))}


def celeba_test_pairs(dataset: FaceDataset, n_pairs: int = 6000, n_folds: int = 10,
                      seed: int = 0) -> VerificationPairs:
    """A fixed list of verification pairs on CelebA's test identities, made like LFW's View 2.

    Sampling (everything in sorted key order, so the list does not depend on the row order of
    ``dataset``; one ``numpy.random.default_rng(seed)`` stream, used in this order):

    1. People: the identities of the test split (``split == 2``; CelebA's official partition is
       identity-disjoint, so none of them was seen in training or validation), sorted, shuffled,
       and dealt to the folds in turn (identity number i of the shuffle goes to fold i mod
       ``n_folds``). Each identity is in exactly one fold, so folds are identity-disjoint, as in
       View 2, and a threshold chosen on nine folds is tested on unseen people.
    2. Genuine pairs: in each fold, all unordered pairs of two different images of one person
       are candidates (C(5, 2) = 10 per person in CelebA); ``n_pairs / (2 n_folds)`` of them are
       drawn uniformly without replacement.
    3. Impostor pairs: in each fold, two different people of the fold are drawn uniformly, then
       one image of each, uniformly; repeated until that many distinct pairs are found.

    Pairs are stored with the smaller key first, each fold's genuine pairs before its impostor
    pairs, and sorted within each block (LFW lists them alphabetically too). With the defaults:
    6,000 pairs, 10 folds of 300 genuine + 300 impostor pairs.

    Parameters
    ----------
    dataset : CelebA (or any dataset with ``identities`` and an official ``split``).
    n_pairs : total number of pairs; a multiple of ``2 * n_folds``.
    n_folds : number of identity-disjoint folds.
    seed : seed of the draws; the same seed and data give the same list.

    Raises
    ------
    ValueError
        The dataset has no identities or split, ``n_pairs`` does not divide into the folds, or
        a fold has too few people or images for the pairs asked.
    """
    if dataset.identities is None or dataset.split is None:
        raise ValueError(f"dataset {dataset.name!r} needs identities and a train/val/test split "
                         "(read CelebA with identity_CelebA.txt and list_eval_partition.txt)")
    if n_folds < 2 or n_pairs % (2 * n_folds):
        raise ValueError(f"n_pairs ({n_pairs}) must be a positive multiple of 2 * n_folds "
                         f"({2 * n_folds}), with n_folds >= 2, so every fold has as many genuine "
                         "as impostor pairs")
    per_class = n_pairs // (2 * n_folds)
    test = dataset.split == SPLITS["test"]
    keys = np.asarray(dataset.keys)[test]
    order = np.argsort(keys, kind="stable")
    keys, identities = keys[order], dataset.identities[test][order]
    people = np.unique(identities)
    rng = np.random.default_rng(seed)
    fold_of_person = dict(zip(rng.permutation(people).tolist(), np.arange(len(people)) % n_folds))

    key1, key2, same, fold = [], [], [], []
    for f in range(n_folds):
        members = [p for p in people if fold_of_person[p] == f]
        images = [np.flatnonzero(identities == p) for p in members]
        genuine = np.array([(a, b) for rows in images
                            for i, a in enumerate(rows) for b in rows[i + 1:]]).reshape(-1, 2)
        if len(genuine) < per_class or len(members) < 2:
            raise ValueError(f"fold {f} has {len(members)} test people and {len(genuine)} possible "
                             f"genuine pairs; {per_class} are needed: ask for fewer pairs or folds")
        genuine = genuine[rng.choice(len(genuine), per_class, replace=False)]
        impostor = _draw_impostors(images, per_class, rng, fold=f)
        for block, is_same in ((genuine, True), (impostor, False)):
            block = sorted((keys[a], keys[b]) for a, b in np.sort(block, axis=1))
            key1 += [a for a, _ in block]
            key2 += [b for _, b in block]
            same += [is_same] * len(block)
            fold += [f] * len(block)
    return VerificationPairs(np.array(key1), np.array(key2), np.array(same), np.array(fold),
                             name=f"{dataset.name}-test")


def _draw_impostors(images: list[np.ndarray], n: int, rng, fold: int) -> np.ndarray:
    """``n`` distinct pairs (row, row) of images of two different people among ``images``."""
    n_people = len(images)
    possible = (sum(len(r) for r in images) ** 2 - sum(len(r) ** 2 for r in images)) // 2
    if possible < n:
        raise ValueError(f"fold {fold} allows only {possible} impostor pairs; {n} are needed")
    found: dict[tuple[int, int], None] = {}   # insertion-ordered set: keeps the draw order
    while len(found) < n:
        first = rng.integers(n_people)
        second = rng.integers(n_people - 1)
        second += second >= first
        a = images[first][rng.integers(len(images[first]))]
        b = images[second][rng.integers(len(images[second]))]
        found.setdefault((min(a, b), max(a, b)), None)
    return np.array(list(found))


def save_pairs(pairs: VerificationPairs, path: str | Path) -> Path:
    """Write ``pairs`` as CSV with the columns ``fold,same,key1,key2`` (same: 1 or 0)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PAIRS_HEADER)
    writer.writerows(zip(pairs.fold.tolist(), pairs.same.astype(int).tolist(),
                         pairs.key1.tolist(), pairs.key2.tolist()))
    return atomic_write_text(path, buffer.getvalue())


def load_pairs(path: str | Path, name: str | None = None) -> VerificationPairs:
    """Read a pair list: the CSV of :func:`save_pairs`, or LFW's ``pairs.txt`` (or its folder).

    ``name`` defaults to the file's stem ("lfw-view2" for LFW's file).
    """
    path = Path(path)
    if path.is_dir():
        return VerificationPairs.from_lfw(read_lfw_pairs(path), name or "lfw-view2")
    if not path.is_file():
        raise DataError("pairs file not found", path,
                        hint="give a CSV written by save_pairs, or LFW's pairs.txt or its folder")
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or tuple(c.strip() for c in rows[0]) != PAIRS_HEADER:
        return VerificationPairs.from_lfw(read_lfw_pairs(path), name or "lfw-view2")
    fold, same, key1, key2 = [], [], [], []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 4 or row[1].strip() not in ("0", "1") or not row[0].strip().isdigit() \
                or not row[2].strip() or not row[3].strip():
            raise DataError(f"expected 'fold,same,key1,key2' with a fold number and same 0 or 1, "
                            f"found {','.join(row)[:80]!r}", path, line)
        fold.append(int(row[0]))
        same.append(row[1].strip() == "1")
        key1.append(row[2].strip())
        key2.append(row[3].strip())
    return VerificationPairs(np.array(key1, dtype=str), np.array(key2, dtype=str),
                             np.array(same, dtype=bool), np.array(fold, dtype=np.int64),
                             name or path.stem)


# --------------------------------------------------------------------------------------------
# Metrics

def _check_scores(scores, same, folds=None):
    scores = np.asarray(scores, dtype=np.float64)
    same = np.asarray(same)
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D, one per pair; got shape {scores.shape}")
    if same.shape != scores.shape:
        raise ValueError(f"same has shape {same.shape} but scores {scores.shape}")
    if not np.isin(same, (0, 1)).all():
        raise ValueError("same must be boolean (True = genuine pair)")
    same = same.astype(bool)
    if same.all() or not same.any():
        raise ValueError("verification metrics need both genuine and impostor pairs")
    if not np.isfinite(scores).all():
        raise ValueError(f"{np.sum(~np.isfinite(scores))} scores are NaN or infinite")
    if folds is None:
        return scores, same
    folds = np.asarray(folds)
    if folds.shape != scores.shape:
        raise ValueError(f"folds has shape {folds.shape} but scores {scores.shape}")
    if len(np.unique(folds)) < 2:
        raise ValueError("the fold protocol needs at least two folds")
    return scores, same, folds


@dataclass
class FoldResult:
    """The 10-fold protocol's result; accuracies are fractions in [0, 1].

    folds, accuracies, thresholds, n_pairs : one entry per held-out fold.
    """

    folds: np.ndarray
    accuracies: np.ndarray
    thresholds: np.ndarray
    n_pairs: np.ndarray

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        """Sample standard deviation of the fold accuracies (ddof = 1, LFW's sigma-hat)."""
        return float(np.std(self.accuracies, ddof=1))

    @property
    def standard_error(self) -> float:
        """sigma-hat / sqrt(n_folds): the "S_E" that LFW's result tables report."""
        return self.std / np.sqrt(len(self.accuracies))

    def summary(self) -> dict:
        return {"accuracy": self.mean, "accuracy_std": self.std,
                "accuracy_standard_error": self.standard_error,
                "fold_accuracies": self.accuracies.tolist(),
                "fold_thresholds": self.thresholds.tolist()}


def ten_fold_accuracy(scores, same, folds) -> FoldResult:
    """LFW View 2 accuracy: a threshold chosen on the other folds, applied to each fold.

    For held-out fold f, with the pairs of the other folds T_f,

        t_f = argmax_t  sum_{i in T_f} [ (s_i >= t) == same_i ],
        acc_f = mean_{i in fold f} [ (s_i >= t_f) == same_i ].

    The candidates t are the midpoints between consecutive distinct scores of T_f, plus -inf
    (accept all) and +inf (reject all); among equally good ones the lowest is taken. t_f is a
    function of T_f alone: neither the labels nor the scores of fold f take part in it. All
    folds are solved at once from one sort of the scores (cumulative counts per fold).

    Parameters
    ----------
    scores : (n,) pair scores, higher = more likely the same person.
    same : (n,) bool, True for genuine pairs.
    folds : (n,) fold of each pair (any labels; at least two folds).

    Returns
    -------
    FoldResult with the per-fold accuracies and thresholds, their mean and spread.
    """
    scores, same, folds = _check_scores(scores, same, folds)
    fold_ids = np.unique(folds)
    thresholds = _training_thresholds(scores, same, folds[None, :] != fold_ids[:, None])
    held_out = folds[None, :] == fold_ids[:, None]
    right = (scores[None, :] >= thresholds[:, None]) == same[None, :]
    n_pairs = held_out.sum(1)
    return FoldResult(fold_ids, (right & held_out).sum(1) / n_pairs, thresholds, n_pairs)


def best_threshold(scores, same) -> tuple[float, float]:
    """The threshold that maximises the accuracy on these pairs, and that accuracy.

    The same rule as each fold of :func:`ten_fold_accuracy`, on all pairs at once (for
    choosing a model on validation pairs, or a deployed verifier's threshold).
    """
    scores, same = _check_scores(scores, same)
    threshold = float(_training_thresholds(scores, same, np.ones((1, len(scores)), bool))[0])
    return threshold, float(np.mean((scores >= threshold) == same))


def _training_thresholds(scores, same, train) -> np.ndarray:
    """Best-accuracy threshold of each row of ``train`` ((F, n) bool: the pairs it may use)."""
    order = np.argsort(scores, kind="stable")
    s, y, train = scores[order], same[order], train[:, order]
    n = len(s)
    # Cut c rejects the sorted pairs [0, c) and accepts [c, n): correct = impostors below +
    # genuine pairs above, counted over the training pairs only.
    impostors_below = np.concatenate([np.zeros((len(train), 1)), np.cumsum(train & ~y, 1)], 1)
    genuine_seen = np.concatenate([np.zeros((len(train), 1)), np.cumsum(train & y, 1)], 1)
    correct = impostors_below + genuine_seen[:, -1:] - genuine_seen
    # A cut between equal scores cannot be realised by "s >= t".
    realisable = np.concatenate([[True], s[1:] > s[:-1], [True]])
    best = np.argmax(np.where(realisable, correct, -1), axis=1)   # first = lowest best cut
    # The threshold sits halfway between the training scores on either side of the cut, so
    # that pairs outside the training set (the held-out fold) cannot move it.
    positions = np.arange(n)
    last_below = np.maximum.accumulate(np.where(train, positions, -1), axis=1)
    first_above = np.minimum.accumulate(np.where(train, positions, n)[:, ::-1], axis=1)[:, ::-1]
    rows = np.arange(len(train))
    lo = np.where(best > 0, last_below[rows, np.maximum(best - 1, 0)], -1)
    hi = np.where(best < n, first_above[rows, np.minimum(best, n - 1)], n)
    s_lo, s_hi = s[np.clip(lo, 0, n - 1)], s[np.clip(hi, 0, n - 1)]
    return np.where(lo < 0, -np.inf, np.where(hi >= n, np.inf, (s_lo + s_hi) / 2))


@dataclass
class RocCurve:
    """ROC points (FAR, TAR) for decreasing thresholds (rule: genuine iff score >= threshold)."""

    far: np.ndarray
    tar: np.ndarray
    thresholds: np.ndarray
    auc: float
    n_genuine: int
    n_impostor: int


def roc(scores, same) -> RocCurve:
    """The ROC curve of a verifier: TAR(t) against FAR(t) at every distinct score t.

    TAR(t) = #{genuine: s >= t} / #genuine, FAR(t) = #{impostor: s >= t} / #impostor; the
    first point (threshold +inf) is (0, 0). ``auc`` is the area under the curve.
    """
    scores, same = _check_scores(scores, same)
    far, tar, thresholds = roc_curve(same, scores)
    return RocCurve(far, tar, thresholds, float(auc(far, tar)), int(same.sum()), int((~same).sum()))


@dataclass
class OperatingPoint:
    """A threshold chosen for a target FAR, and the TAR and FAR it achieves."""

    target_far: float
    threshold: float
    tar: float
    far: float


def tar_at_far(scores, same, far: float) -> OperatingPoint:
    """TAR at the lowest threshold whose FAR is at most ``far``.

    With N impostor pairs at most k = floor(far * N) may be accepted. With the impostor scores
    sorted in decreasing order, u_1 >= u_2 >= ..., the rule accepts s > u_{k+1} (threshold
    just above u_{k+1}; ties at u_{k+1} are all rejected, so FAR <= far holds even then):

        TAR = #{genuine: s > u_{k+1}} / #genuine.

    With N < 1 / far no impostor may be accepted (k = 0): with LFW's 3,000 impostor pairs
    TAR@FAR=1e-3 rests on 3 accepted impostors, so expect wide intervals.
    """
    if not 0 < far < 1:
        raise ValueError(f"far must be in (0, 1); got {far}")
    scores, same = _check_scores(scores, same)
    impostor = np.sort(scores[~same])[::-1]
    allowed = int(np.floor(far * len(impostor) + 1e-9))
    threshold = (-np.inf if allowed >= len(impostor)
                 else float(np.nextafter(impostor[allowed], np.inf)))
    return OperatingPoint(float(far), threshold, float(np.mean(scores[same] >= threshold)),
                          float(np.mean(impostor >= threshold)))


def equal_error_rate(scores, same) -> float:
    """The rate where FAR = FRR (= 1 - TAR), on the ROC curve linearly interpolated.

    The difference FAR - FRR grows from -1 (threshold +inf) to 1 along the ROC vertices; the
    EER is where the segment that crosses 0 crosses it.
    """
    curve = roc(scores, same)
    gap = curve.far - (1 - curve.tar)
    i = int(np.argmax(gap >= 0))
    weight = -gap[i - 1] / (gap[i] - gap[i - 1])
    return float(curve.far[i - 1] + weight * (curve.far[i] - curve.far[i - 1]))


# --------------------------------------------------------------------------------------------
# Comparing two verifiers

def metric_names(fars=DEFAULT_FARS) -> list[str]:
    return ["accuracy"] + [f"tar@far={far:g}" for far in fars] + ["eer"]


def verification_metrics(scores, same, folds, fars=DEFAULT_FARS) -> dict[str, float]:
    """10-fold accuracy, TAR at each FAR of ``fars`` and EER, by :func:`metric_names`."""
    values = [ten_fold_accuracy(scores, same, folds).mean]
    values += [tar_at_far(scores, same, far).tar for far in fars]
    values.append(equal_error_rate(scores, same))
    return dict(zip(metric_names(fars), values))


@dataclass
class PairedDifference:
    """Verifier a minus verifier b on the same pairs (fractions; for EER lower is better).

    metrics : names (see :func:`metric_names`); value_a, value_b, difference : (m,);
    ci : (m, 2) 95 % percentile-bootstrap interval of the difference;
    fold_differences : (n_folds,) differences of the per-fold accuracies.
    """

    metrics: list[str]
    value_a: np.ndarray
    value_b: np.ndarray
    difference: np.ndarray
    ci: np.ndarray
    folds: np.ndarray
    fold_differences: np.ndarray
    n_bootstrap: int
    meta: dict = field(default_factory=dict)

    @property
    def fold_mean(self) -> float:
        return float(np.mean(self.fold_differences))

    @property
    def fold_std(self) -> float:
        return float(np.std(self.fold_differences, ddof=1))

    def to_frame(self) -> pd.DataFrame:
        """One row per metric, in percent."""
        return pd.DataFrame({"a": 100 * self.value_a, "b": 100 * self.value_b,
                             "difference": 100 * self.difference,
                             "ci_low": 100 * self.ci[:, 0], "ci_high": 100 * self.ci[:, 1]},
                            index=pd.Index(self.metrics, name="metric"))

    def to_dict(self) -> dict:
        return {"metrics": {m: {c: float(v) for c, v in row.items()}
                            for m, row in self.to_frame().iterrows()},
                "fold_differences": (100 * self.fold_differences).tolist(),
                "fold_mean": 100 * self.fold_mean, "fold_std": 100 * self.fold_std,
                "n_bootstrap": self.n_bootstrap, "meta": self.meta}


def paired_difference(scores_a, scores_b, same, folds, n_bootstrap: int = 1000, seed: int = 0,
                      fars=DEFAULT_FARS) -> PairedDifference:
    """How much better verifier a is than verifier b, scored on the same pairs.

    For each metric M (10-fold accuracy, TAR at each FAR of ``fars``, EER) the difference is
    M(a) - M(b). Its 95 % interval is the percentile bootstrap over pair resamples: each
    replicate redraws, with replacement, the genuine and the impostor pairs of every fold
    separately (so each fold keeps its 300 + 300 design), and scores both verifiers on that
    same resample; the pairing cancels what the two share (hard pairs are hard for both).
    The per-fold differences acc_f(a) - acc_f(b) come with their mean and standard deviation
    (ddof = 1), the spread LFW's protocol reports. A replicate takes about 10 ms for 6,000
    pairs, so the default 1,000 take some 10 s.

    Parameters
    ----------
    scores_a, scores_b : (n,) scores of the two verifiers on the same pairs.
    same : (n,) bool, True for genuine pairs.
    folds : (n,) fold of each pair.
    n_bootstrap : number of replicates (0: no interval).
    seed : seed of the resampling.
    fars : the FAR targets of the TAR metrics.
    """
    if np.shape(scores_a) != np.shape(scores_b):
        raise ValueError(f"scores_a {np.shape(scores_a)} and scores_b {np.shape(scores_b)} must "
                         "score the same pairs")
    scores_a, same, folds = _check_scores(scores_a, same, folds)
    scores_b, _ = _check_scores(scores_b, same)
    names = metric_names(fars)
    value_a = np.array(list(verification_metrics(scores_a, same, folds, fars).values()))
    value_b = np.array(list(verification_metrics(scores_b, same, folds, fars).values()))
    fold_a = ten_fold_accuracy(scores_a, same, folds)
    fold_b = ten_fold_accuracy(scores_b, same, folds)
    ci = np.full((len(names), 2), np.nan)
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        strata = [np.flatnonzero((folds == f) & (same == s))
                  for f in np.unique(folds) for s in (True, False)]
        draws = np.concatenate([m[rng.integers(len(m), size=(n_bootstrap, len(m)))]
                                for m in strata if len(m)], axis=1)
        replicates = np.array([
            np.array(list(verification_metrics(scores_a[d], same[d], folds[d], fars).values()))
            - np.array(list(verification_metrics(scores_b[d], same[d], folds[d], fars).values()))
            for d in draws])
        ci = np.percentile(replicates, [2.5, 97.5], axis=0).T
    return PairedDifference(names, value_a, value_b, value_a - value_b, ci, fold_a.folds,
                            fold_a.accuracies - fold_b.accuracies, int(n_bootstrap))


# --------------------------------------------------------------------------------------------
# Figure

def plot_roc(curves: dict, path: str | Path, title: str = "", svg: bool = False) -> list[Path]:
    """The paper's Fig. 11 for one dataset: the ROC curves of all verifiers in one figure.

    Parameters
    ----------
    curves : name -> (scores, same), one entry per verifier (e.g. "with attributes",
        "without attributes"), all on the same pairs or not.
    path : the PNG to write (an SVG beside it when ``svg``).
    title : the figure's title (e.g. "LFW View 2, 6,000 pairs").

    The FAR axis is logarithmic, from 1 / #impostors (a FAR of 0 cannot be drawn); each legend
    entry gives the AUC and the EER. Returns the written paths.
    """
    import matplotlib.pyplot as plt

    if not curves:
        raise ValueError("plot_roc needs at least one curve")
    fig, axis = plt.subplots(figsize=(5, 4.2))
    lowest = 1.0
    for label, (scores, same) in curves.items():
        curve = roc(scores, same)
        drawn = curve.far > 0
        lowest = min(lowest, 1 / curve.n_impostor)
        eer = equal_error_rate(scores, same)
        axis.plot(curve.far[drawn], 100 * curve.tar[drawn],
                  label=f"{label} (AUC {curve.auc:.4f}, EER {100 * eer:.2f} %)")
    axis.set_xscale("log")
    axis.set(xlim=(lowest, 1), xlabel="false accept rate (FAR)",
             ylabel="true accept rate (TAR, %)", title=title)
    axis.grid(alpha=0.3, which="both")
    axis.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return save_figure(fig, path, svg=svg)
