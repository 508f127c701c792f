"""The scikit-learn estimators: contract, missing labels, the two Scenario 1 solvers, graph heads,
groupings and input errors. Generated data only (small: the file runs in seconds)."""

import json

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score
from sklearn.model_selection import GridSearchCV

from mtfap.attributes import CELEBA_ATTRIBUTES
from mtfap.errors import DataError
from mtfap.heads import GraphHeads, IndependentHeads, LowRankSparseHeads
from mtfap.heads.groupings import PAPER_GROUPS, REGION_GROUPS, resolve_groups
from mtfap.heads.lowrank_sparse import default_rank, resolve_ranks

NAMES = [f"t{j}" for j in range(12)]
GROUPS = {"a": NAMES[:4], "b": NAMES[4:8], "c": NAMES[8:]}


def clustered_tasks(n=600, d=10, seed=0, spread=0.1):
    """Three planted task clusters of four tasks; features with an offset and unequal scales."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(d, 3)) * 1.5
    planted = np.repeat(np.arange(3), 4)
    W = centres[:, planted] + spread * rng.normal(size=(d, 12))
    X = rng.normal(size=(n, d))
    Y = (rng.random((n, 12)) < 1 / (1 + np.exp(-X @ W))).astype(np.uint8)
    return X * np.linspace(0.5, 3, d) + 2.0, Y, planted


ESTIMATORS = {
    "independent": lambda: IndependentHeads(lam=1e-2, attributes=NAMES),
    "graph": lambda: GraphHeads(xi=0.05, attributes=NAMES, n_graph_steps=3),
    "lowrank_proximal": lambda: LowRankSparseHeads(lam=1e-3, gamma=1e-2, groups=GROUPS,
                                                   attributes=NAMES),
    "lowrank_paper": lambda: LowRankSparseHeads(lam=1e-3, gamma=1e-2, groups=GROUPS,
                                                attributes=NAMES, solver="paper", n_epochs=3,
                                                batch_size=100),
}


@pytest.fixture(scope="module")
def data():
    return clustered_tasks()


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_estimator_contract_and_accuracy(name, data):
    X, Y, _ = data
    est = ESTIMATORS[name]()
    assert est.fit(X, Y) is est
    copy = clone(est)
    assert copy.get_params() == est.get_params() and not hasattr(copy, "coef_")
    proba = est.predict_proba(X)
    assert proba.shape == Y.shape and ((proba > 0) & (proba < 1)).all()
    assert np.array_equal(est.predict(X), (proba > 0.5).astype(np.uint8))
    assert np.allclose(est.decision_function(X), X @ est.coef_.T + est.intercept_)
    # the raw-feature heads and the standardised ones agree
    assert np.allclose(est.decision_function(X), ((X - est.mean_) / est.scale_) @ est.W_ + est.b_)
    assert est.score(X, Y) > 0.75  # Bayes accuracy of these tasks is about 0.85


def test_independent_heads_equal_scikit_learn_logistic_regression(data):
    X, Y, _ = data
    n, lam = len(X), 1e-2
    est = IndependentHeads(lam=lam, attributes=NAMES, standardize=False, precision="float64",
                           tol=1e-9).fit(X, Y)
    for j in (0, 5, 11):  # ours: mean loss + lam ||w||^2; sklearn: C sum loss + ||w||^2 / 2
        ref = LogisticRegression(C=1 / (2 * lam * n), tol=1e-10, max_iter=5000).fit(X, Y[:, j])
        assert np.allclose(est.coef_[j], ref.coef_[0], atol=1e-5)
        # the features' offset of 2 makes the intercept the worst-conditioned coordinate
        assert est.intercept_[j] == pytest.approx(ref.intercept_[0], abs=1e-4)


def test_grid_search_and_missing_labels_coded_as_minus_one(data):
    X, Y, _ = data
    Y = Y.astype(int)
    Y[::7, 3] = -1  # missing labels marked in Y itself, as GridSearchCV cannot pass a mask
    search = GridSearchCV(IndependentHeads(attributes=NAMES), {"lam": [1e-3, 1.0]}, cv=3).fit(X, Y)
    assert search.best_params_["lam"] == 1e-3 and 0.5 < search.best_score_ <= 1


@pytest.mark.parametrize("name", ["independent", "graph", "lowrank_proximal"])
def test_fitting_with_a_mask_equals_fitting_on_the_labelled_rows(name, data):
    X, Y, _ = data
    mask = np.ones(Y.shape, dtype=bool)
    mask[::3] = False  # rows without any known label
    with_mask = ESTIMATORS[name]().fit(X, Y, mask=mask)
    alone = ESTIMATORS[name]().fit(X[mask.any(1)], Y[mask.any(1)])
    assert np.allclose(with_mask.coef_, alone.coef_, atol=1e-6)
    assert np.allclose(with_mask.intercept_, alone.intercept_, atol=1e-6)


def test_missing_labels_never_count_as_negatives(data):
    X, Y, _ = data
    rng = np.random.default_rng(1)
    mask = rng.random(Y.shape) > 0.4
    zeros, ones = np.where(mask, Y, 0), np.where(mask, Y, 1)
    a = IndependentHeads(attributes=NAMES).fit(X, zeros, mask=mask)
    b = IndependentHeads(attributes=NAMES).fit(X, ones, mask=mask)
    assert np.array_equal(a.coef_, b.coef_)
    # each task uses exactly its own known rows (no standardisation: rows differ per task)
    exact = dict(standardize=False, precision="float64", tol=1e-9)
    est = IndependentHeads(attributes=NAMES, **exact).fit(X, Y, mask=mask)
    for j in (0, 7):
        own = IndependentHeads(attributes=["x"], **exact).fit(
            X[mask[:, j]], Y[mask[:, j], j:j + 1])
        # The joint fit stops on the summed objective: on an AVX2 EPYC its coefficients differ
        # from the single fit's by 1.3e-5 (to 1e-5 on the AMX Xeon). Counting the unknown labels
        # as negatives would move them by tenths.
        assert np.allclose(est.coef_[j], own.coef_[0], rtol=1e-4, atol=1e-5)
    # the score ignores unknown labels
    assert est.score(X, ones, mask) == est.score(X, zeros, mask)


def test_lowrank_proximal_gives_exact_zeros_and_low_rank_and_beats_the_paper_solver(data):
    X, Y, _ = data
    common = dict(lam=0.02, gamma=0.05, groups=GROUPS, attributes=NAMES)
    prox = LowRankSparseHeads(**common, max_iter=300).fit(X, Y)
    paper = LowRankSparseHeads(**common, solver="paper", n_epochs=5, batch_size=100).fit(X, Y)
    assert [S.shape for S in prox.S_] == [(2, 4), (2, 4), (2, 4)] == [S.shape for S in paper.S_]
    assert all(L.shape == (10, 2) for L in prox.L_) and prox.ranks_ == [2, 2, 2]
    assert prox.sparsity_ > 0 and min(prox.effective_ranks_) < 2  # exact zeros, exact low rank
    assert paper.effective_ranks_ == [2, 2, 2]  # sub-gradient steps never lower the rank exactly
    assert all(np.allclose(prox.W_[:, cols], L @ S)
               for (_, cols), L, S in zip(prox.groups_, prox.L_, prox.S_))
    assert prox.objective(X, Y) < paper.objective(X, Y)
    assert len(paper.objective_history_) == 5


def test_graph_heads_recover_planted_task_clusters():
    X, Y, planted = clustered_tasks(n=3000, seed=2, spread=0.05)
    est = GraphHeads(xi=0.05, attributes=NAMES, graph_sparsity=2.0).fit(X, Y)
    M = est.graph_
    assert np.allclose(M, M.T) and (M >= 0).all() and np.all(np.diag(M) == 0)
    assert np.allclose(est.A_, np.diag(M.sum(1)) - M + est.eps * np.eye(12))
    labels = np.empty(12, dtype=int)
    for c, members in enumerate(est.clusters_):
        labels[members] = c
    assert adjusted_rand_score(planted, labels) >= 0.9
    assert est.cluster_names()[0][0] == "t0"


def test_paper_graph_step_learns_nothing_and_reduces_to_ridge(data):
    X, Y, _ = data
    est = GraphHeads(xi=2.0, eps=1e-2, graph_step="paper", attributes=NAMES, tol=1e-9).fit(X, Y)
    assert np.array_equal(est.graph_, np.zeros((12, 12)))
    assert est.clusters_ == [[j] for j in range(12)]
    ridge = IndependentHeads(lam=2.0 * 1e-2, attributes=NAMES, tol=1e-9).fit(X, Y)
    assert np.allclose(est.coef_, ridge.coef_, atol=1e-5)


# -- groupings and ranks ----------------------------------------------------------------------
def test_presets_cover_every_attribute_once():
    for preset in ("paper", "regions"):
        groups = resolve_groups(preset, CELEBA_ATTRIBUTES)
        assert sorted(j for _, cols in groups for j in cols) == list(range(40))
    assert len(PAPER_GROUPS) == 10 and len(REGION_GROUPS) == 8
    assert [default_rank(t) for t in (1, 2, 3, 8, 15)] == [1, 1, 2, 4, 8]
    groups = resolve_groups("paper", CELEBA_ATTRIBUTES)
    assert resolve_ranks(2, groups)[:3] == [2, 2, 2] and resolve_ranks(2, groups)[3] == 1
    assert resolve_ranks({"mouth_expression": 1}, groups)[0] == 1
    with pytest.raises(ValueError, match="need 1 <= K_g < T_g = 3"):
        resolve_ranks({"mouth_expression": 3}, groups)


def test_user_grouping_files(tmp_path):
    json_file = tmp_path / "g.json"
    json_file.write_text(json.dumps(GROUPS))
    yaml_file = tmp_path / "g.yaml"
    yaml_file.write_text("\n".join(f"{g}: [{', '.join(m)}]" for g, m in GROUPS.items()))
    assert resolve_groups(str(json_file), NAMES) == resolve_groups(yaml_file, NAMES) == \
        resolve_groups(GROUPS, NAMES)
    broken = tmp_path / "bad.yaml"
    broken.write_text("a: [t0, t1\nb: t2")
    with pytest.raises(DataError, match="bad.yaml:.*not valid YAML"):
        resolve_groups(broken, NAMES)
    with pytest.raises(DataError, match="not found"):
        resolve_groups(tmp_path / "missing.json", NAMES)


@pytest.mark.parametrize("groups, message", [
    ({"a": NAMES[:6], "b": NAMES[5:]}, "'t5' is in two groups"),
    ({"a": NAMES[:6], "b": NAMES[6:11]}, "in no group: t11"),
    ({"a": NAMES[:11] + ["t121"], "b": []}, "unknown attribute 't121'. Did you mean 't11'"),
    ("papr", "unknown grouping 'papr'"),
])
def test_bad_groupings_are_named(groups, message):
    with pytest.raises(ValueError, match=message):
        resolve_groups(groups, NAMES)


# -- input errors -----------------------------------------------------------------------------
@pytest.mark.parametrize("X, Y, mask, message", [
    (np.zeros(5), np.zeros((5, 2)), None, "X must be a 2-D array"),
    (np.zeros((5, 3)), np.zeros((4, 2)), None, "n_samples = 5"),
    (np.zeros((5, 3)), np.full((5, 2), 2), None, "0/1 labels"),
    (np.zeros((5, 3)), np.zeros((5, 2)), np.ones((5, 3), bool), "mask must have Y's shape"),
    (np.zeros((5, 3)), np.zeros((5, 2)), np.zeros((5, 2), bool), "no known label for task"),
    (np.full((5, 3), np.nan), np.zeros((5, 2)), None, "non-finite"),
])
def test_bad_input_is_named(X, Y, mask, message):
    with pytest.raises(ValueError, match=message):
        IndependentHeads().fit(X, Y, mask)


def test_bad_hyper_parameters_are_named(data):
    X, Y, _ = data
    with pytest.raises(ValueError, match="solver must be one of 'paper', 'proximal'"):
        LowRankSparseHeads(solver="sgd", groups=GROUPS, attributes=NAMES).fit(X, Y)
    with pytest.raises(ValueError, match="graph_step must be one of"):
        GraphHeads(graph_step="dong", attributes=NAMES).fit(X, Y)
    with pytest.raises(ValueError, match="attributes has 3 names but Y has 12"):
        IndependentHeads(attributes=["a", "b", "c"]).fit(X, Y)
    est = IndependentHeads(attributes=NAMES).fit(X, Y)
    with pytest.raises(ValueError, match="X has 3 features"):
        est.predict(X[:, :3])
