"""The head methods of the paper's comparison, fitted and scored on frozen features.

Four methods, by name: the independent baseline (eq. 1), Scenario 1 with the prior groups and
either solver (eq. 3: the paper's Algorithms 1-2, or the proximal one), and Scenario 2 with
the learned task graph (eq. 6-14, Algorithm 3). They are the estimators of ``mtfap.heads``,
built by ``mtfap.training.features.make_head_estimator``.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

from threadpoolctl import threadpool_limits

from mtfap.data.features import FeatureSet
from mtfap.evaluation.metrics import evaluate_predictions

#: name -> (head method, fixed estimator parameters, label for tables)
METHODS: dict[str, tuple[str, dict, str]] = {
    "independent": ("independent", {}, "Independent (eq. 1)"),
    "lowrank_sparse_paper": ("lowrank_sparse", {"solver": "paper"},
                             "Scenario 1, paper solver (Alg. 1-2)"),
    "lowrank_sparse_proximal": ("lowrank_sparse", {"solver": "proximal"},
                                "Scenario 1, proximal solver"),
    "graph": ("graph", {}, "Scenario 2, learned graph (Alg. 3)"),
}


def check_methods(names) -> list[str]:
    """Validate method names (did-you-mean on a typo)."""
    from mtfap.attributes import closest_name
    for name in names:
        if name not in METHODS:
            hint = closest_name(name, METHODS)
            tip = f" Did you mean {hint!r}?" if hint else ""
            raise ValueError(f"unknown method {name!r}.{tip} Methods: {', '.join(METHODS)}")
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
    from mtfap.training.features import make_head_estimator
    check_methods([name])
    head, fixed, _ = METHODS[name]
    params = {**fixed, **(params or {})}
    if head == "lowrank_sparse" and groups is not None:
        params.setdefault("groups", groups)
    estimator = make_head_estimator(head, params, list(attributes))
    if "random_state" in estimator.get_params():
        estimator.set_params(random_state=seed)
    return estimator


def is_seeded(name: str) -> bool:
    """Whether the fit of method ``name`` depends on a seed (else all seeds give one result)."""
    from mtfap.training.features import head_estimator_classes
    head = METHODS[name][0]
    return "random_state" in head_estimator_classes()[head]().get_params()


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
