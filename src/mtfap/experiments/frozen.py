"""The variants of the paper's comparison, fitted and scored on frozen features.

Four variants, by name: the independent baseline (eq. 1), Scenario 1 with the prior groups and
either solver (eq. 3: the paper's Algorithms 1-2, or the proximal one), and Scenario 2 with
the learned task graph (eq. 6-14, Algorithm 3). A variant is a head method of
``mtfap.heads.registry`` with some parameters fixed (the solver); its estimator is built by
``mtfap.heads.make_head_estimator``.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

from threadpoolctl import threadpool_limits

from mtfap.data.features import FeatureSet
from mtfap.errors import did_you_mean
from mtfap.evaluation.metrics import evaluate_predictions
from mtfap.heads.registry import head_method, make_head_estimator


@dataclass(frozen=True)
class Variant:
    """A head method of the comparison with some parameters fixed, and its label in tables."""

    method: str
    fixed: dict
    label: str


VARIANTS: dict[str, Variant] = {
    "independent": Variant("independent", {}, "Independent (eq. 1)"),
    "lowrank_sparse_paper": Variant("lowrank_sparse", {"solver": "paper"},
                                    "Scenario 1, paper solver (Alg. 1-2)"),
    "lowrank_sparse_proximal": Variant("lowrank_sparse", {"solver": "proximal"},
                                       "Scenario 1, proximal solver"),
    "graph": Variant("graph", {}, "Scenario 2, learned graph (Alg. 3)"),
}


def check_methods(names) -> list[str]:
    """Validate variant names (did-you-mean on a typo)."""
    for name in names:
        if name not in VARIANTS:
            raise ValueError(f"unknown method {name!r}.{did_you_mean(name, VARIANTS)} "
                             f"Methods: {', '.join(VARIANTS)}")
    return list(names)


@contextmanager
def single_blas_thread():
    """Run the enclosed fits with one BLAS thread.

    The heads multiply a tall X (n x d) by W (d x k) thousands of times. On a small machine
    shared with other work, a two-thread BLAS spends its time waiting for its descheduled
    partner: we measured 244 s with two threads against 7 s with one for the same fit (2 cores,
    load 10); on an idle machine the difference is small.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def make_method(name: str, attributes, params: dict | None = None, groups=None, seed: int = 0):
    """The unfitted estimator of method ``name``.

    params : estimator parameters (``lam``, ``gamma``, ``xi``, ...) over the method's defaults.
    groups : the task grouping of Scenario 1 (preset name, file or mapping); ignored otherwise.
    seed : ``random_state`` where the method has one (the paper solver's mini-batches).
    """
    check_methods([name])
    variant = VARIANTS[name]
    params = {**variant.fixed, **(params or {})}
    if variant.method == "lowrank_sparse" and groups is not None:
        params.setdefault("groups", groups)
    estimator = make_head_estimator(variant.method, params, list(attributes))
    if "random_state" in estimator.get_params():
        estimator.set_params(random_state=seed)
    return estimator


def is_seeded(name: str) -> bool:
    """Whether the fit of method ``name`` depends on a seed (else all seeds give one result)."""
    estimator = head_method(VARIANTS[name].method).estimator()
    return "random_state" in estimator.get_params()


def fit_method(name: str, train: FeatureSet, params: dict | None = None, groups=None,
               seed: int = 0):
    """Fit method ``name`` on ``train`` (its known labels only); returns (estimator, seconds)."""
    estimator = make_method(name, train.attributes, params, groups, seed)
    started = time.perf_counter()
    with single_blas_thread():
        estimator.fit(train.X, train.labels, train.mask)
    return estimator, time.perf_counter() - started


def mean_accuracy(estimator, part: FeatureSet, thresholds=0.5) -> float:
    """Mean over attributes of the accuracy on the known labels of ``part``."""
    scores = estimator.predict_proba(part.X)
    return evaluate_predictions(scores, part.labels, part.mask, part.attributes,
                                thresholds=thresholds, n_bootstrap=0).mean_accuracy
