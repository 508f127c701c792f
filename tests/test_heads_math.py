"""The math shared by all heads: Laplacian identities, proximal operators and solver, Algorithm 1's
SVD update, SMIDAS, and the graph steps."""

import numpy as np
import pytest
from scipy.optimize import minimize, minimize_scalar
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score

from mtfap.heads.graph_learning import (_project_feasible_paper, graph_clusters, kalofolias_graph,
                                        laplacian, learn_task_graph, paper_graph_step,
                                        pairwise_sq_distances, threshold_graph)
from mtfap.heads.proximal import (accelerated_proximal_gradient, nuclear_norm, numerical_rank,
                                  singular_value_threshold, soft_threshold)
from mtfap.heads.smidas import inverse_link, link, link_exponent, smidas_step
from mtfap.heads.svd_update import factored_update, probing_matrix, subgradient_step, thin_svd


def random_graph(k, rng):
    M = rng.uniform(0, 1, (k, k)) * (rng.random((k, k)) < 0.5)
    M = np.triu(M, 1)
    return M + M.T


def planted_heads(rng, d=30, k=24, n_clusters=4, spread=0.15):
    labels = np.repeat(np.arange(n_clusters), k // n_clusters)
    centres = rng.normal(size=(d, n_clusters))
    return centres[:, labels] + spread * rng.normal(size=(d, k)), labels


def cluster_labels(clusters, k):
    labels = np.empty(k, dtype=int)
    for c, members in enumerate(clusters):
        labels[members] = c
    return labels


# -- Laplacian identities (eq. 6-7) -----------------------------------------------------------
def test_laplacian_identities_on_random_data():
    rng = np.random.default_rng(0)
    d, k = 7, 9
    W = rng.normal(size=(d, k))
    M = random_graph(k, rng)
    L = laplacian(M)
    pairwise = sum(M[i, j] * np.sum((W[:, i] - W[:, j]) ** 2) for i in range(k) for j in range(k))
    assert pairwise == pytest.approx(2 * np.trace(W @ L @ W.T), rel=1e-12)
    assert np.allclose(pairwise_sq_distances(W), [[np.sum((W[:, i] - W[:, j]) ** 2)
                                                   for j in range(k)] for i in range(k)])
    A = L + 1e-3 * np.eye(k)
    by_pairs = sum(A[i, j] * W[:, i] @ W[:, j] for i in range(k) for j in range(k))
    assert np.trace(W @ A @ W.T) == pytest.approx(by_pairs, rel=1e-12)
    assert np.allclose(L.sum(axis=1), 0) and np.linalg.eigvalsh(L).min() > -1e-12


# -- proximal operators and the proximal solver -----------------------------------------------
def test_soft_threshold_is_the_l1_prox():
    rng = np.random.default_rng(1)
    values, t = rng.normal(size=20) * 2, 0.7
    out = soft_threshold(values, t)
    for v, x in zip(values, out):
        ref = minimize_scalar(lambda z: t * abs(z) + 0.5 * (z - v) ** 2, bounds=(-10, 10),
                              method="bounded", options={"xatol": 1e-10}).x
        assert x == pytest.approx(ref, abs=1e-6)
    assert (out == 0).sum() == (np.abs(values) <= t).sum()


def test_singular_value_threshold_satisfies_the_nuclear_prox_optimality_condition():
    rng = np.random.default_rng(2)
    V, t = rng.normal(size=(8, 5)), 1.5
    X = singular_value_threshold(V, t)
    u, s, vt = np.linalg.svd(X, full_matrices=False)
    r = numerical_rank(X)
    assert 0 < r < 5  # the threshold removed some singular values exactly
    U1, V1 = u[:, :r], vt[:r].T
    D = (V - X) / t  # must be a sub-gradient of ||.||_* at X: U1 V1^T + R, ||R||_2 <= 1
    assert np.allclose(U1.T @ D @ V1, np.eye(r), atol=1e-10)
    R = D - U1 @ V1.T
    assert np.allclose(U1.T @ R, 0, atol=1e-10) and np.allclose(R @ V1, 0, atol=1e-10)
    assert np.linalg.norm(R, 2) <= 1 + 1e-10
    assert nuclear_norm(np.diag([3.0, -2.0])) == pytest.approx(5.0)


def logistic_smooth(X, y):
    n = len(y)

    def smooth(w):
        z = X @ w
        loss = np.logaddexp(0, z) - y * z
        return loss.mean(), X.T @ (1 / (1 + np.exp(-z)) - y) / n
    return smooth


def test_proximal_solver_reaches_the_l1_logistic_optimum_of_liblinear():
    rng = np.random.default_rng(3)
    n, d, lam = 300, 12, 0.02
    X = rng.normal(size=(n, d))
    y = (X[:, :3] @ [1.5, -2.0, 1.0] + 0.5 * rng.normal(size=n) > 0).astype(float)
    result = accelerated_proximal_gradient(
        logistic_smooth(X, y), lambda w: lam * np.abs(w).sum(),
        lambda v, t: soft_threshold(v, t * lam), np.zeros(d), max_iter=5000, tol=1e-9)
    # liblinear minimises ||w||_1 + C sum_i loss_i, i.e. ours times n C with C = 1 / (n lam)
    ref = LogisticRegression(l1_ratio=1.0, C=1 / (n * lam), solver="liblinear",
                             fit_intercept=False, tol=1e-10, max_iter=10000).fit(X, y).coef_[0]
    assert result.converged
    assert np.allclose(result.x, ref, atol=1e-4)
    assert ((result.x == 0) == (np.abs(ref) < 1e-8)).all() and (result.x == 0).sum() >= 3


def test_proximal_solver_reaches_the_nuclear_norm_optimum_of_a_factored_reference():
    rng = np.random.default_rng(4)
    n, d, k, t = 200, 6, 5, 0.05
    X = rng.normal(size=(n, d))
    W_true = rng.normal(size=(d, 2)) @ rng.normal(size=(2, k))
    Y = (X @ W_true + rng.normal(size=(n, k)) > 0).astype(float)

    def smooth(w):
        Z = X @ w.reshape(d, k)
        return ((np.logaddexp(0, Z) - Y * Z).mean(0).sum(),
                (X.T @ (1 / (1 + np.exp(-Z)) - Y) / n).ravel())

    result = accelerated_proximal_gradient(
        smooth, lambda w: t * nuclear_norm(w.reshape(d, k)),
        lambda v, s: singular_value_threshold(v.reshape(d, k), s * t).ravel(), np.zeros(d * k),
        max_iter=5000, tol=1e-12)

    # reference: ||W||_* = min_{W = U V^T} (||U||^2 + ||V||^2) / 2, a smooth problem for L-BFGS
    def factored(theta):
        U, V = theta[:d * d].reshape(d, d), theta[d * d:].reshape(k, d)
        f, g = smooth((U @ V.T).ravel())
        G = g.reshape(d, k)
        return (f + t * 0.5 * (theta ** 2).sum(),
                np.concatenate([(G @ V + t * U).ravel(), (G.T @ U + t * V).ravel()]))

    ref = minimize(factored, rng.normal(size=d * d + k * d) * 0.1, jac=True, method="L-BFGS-B",
                   options={"maxiter": 20000, "gtol": 1e-12, "ftol": 1e-15})
    W_ref = ref.x[:d * d].reshape(d, d) @ ref.x[d * d:].reshape(k, d).T
    assert result.objective == pytest.approx(ref.fun, rel=1e-7)
    assert np.allclose(result.x.reshape(d, k), W_ref, atol=1e-3)
    assert numerical_rank(result.x.reshape(d, k)) < min(d, k)  # exact low rank


# -- Algorithm 1: factored SVD update ---------------------------------------------------------
def test_factored_update_equals_the_dense_update_and_its_svd():
    rng = np.random.default_rng(5)
    d, K, eta = 20, 6, 0.3
    L = rng.normal(size=(d, 4)) @ rng.normal(size=(4, K))  # rank 4 < K
    u, s, v = thin_svd(L)
    G, Y = rng.normal(size=(d, K)), probing_matrix(K, 2, rng)
    u2, s2, v2 = factored_update(u, s, v, G, Y, eta)
    dense = L - eta * G @ Y @ Y.T
    assert np.allclose((u2 * s2) @ v2.T, dense, atol=1e-10)
    sigma_dense = np.linalg.svd(dense, compute_uv=False)
    assert np.allclose(s2, sigma_dense[:len(s2)], atol=1e-10)
    assert np.allclose(u2.T @ u2, np.eye(len(s2)), atol=1e-10)
    assert np.allclose(v2.T @ v2, np.eye(len(s2)), atol=1e-10)
    # with a cap: the best rank-3 approximation of the dense update (Eckart-Young)
    u3, s3, v3 = factored_update(u, s, v, G, Y, eta, rank_cap=3)
    U, S, Vt = np.linalg.svd(dense)
    assert len(s3) == 3
    assert np.allclose((u3 * s3) @ v3.T, (U[:, :3] * S[:3]) @ Vt[:3], atol=1e-10)


def test_probing_matrix_is_unbiased_and_subgradient_steps_respect_the_rank_cap():
    rng = np.random.default_rng(6)
    mean = sum(P @ P.T for P in (probing_matrix(5, 2, rng) for _ in range(20000))) / 20000
    assert np.allclose(mean, np.eye(5), atol=0.05)
    u, s, v = thin_svd(rng.normal(size=(15, 5)))
    for _ in range(30):
        u, s, v = subgradient_step(u, s, v, rng.normal(size=(15, 5)), 0.5, 0.1, 3, rng, 2)
        assert len(s) <= 2 and u.shape == (15, len(s)) and v.shape == (5, len(s))


# -- Algorithm 2: SMIDAS ----------------------------------------------------------------------
@pytest.mark.parametrize("dim", [1, 2, 3, 10, 5000])
def test_smidas_link_is_inverted_exactly(dim):
    rng = np.random.default_rng(dim)
    p = link_exponent(dim)
    assert p == (2.0 if dim <= 2 else pytest.approx(2 * np.log(dim)))
    s = rng.normal(size=(dim, 3)) * np.array([1e-3, 1.0, 1e3])
    assert np.allclose(inverse_link(link(s, p), p), s, rtol=1e-10, atol=0)
    assert np.allclose(link(inverse_link(s, p), p), s, rtol=1e-10, atol=0)
    assert np.array_equal(inverse_link(np.zeros(dim), p), np.zeros(dim))


def test_smidas_link_does_not_overflow_for_large_dimensions_or_values():
    rng = np.random.default_rng(7)
    dim = 100_000
    p = link_exponent(dim)  # about 23: |theta|^{p-1} overflows float64 for |theta| > 1e14
    theta = rng.normal(size=dim) * 1e200
    with np.errstate(all="raise"):
        s = inverse_link(theta, p)
        back = link(s, p)
    assert np.isfinite(s).all()
    assert np.allclose(back, theta, rtol=1e-9)


def test_smidas_reaches_exact_zeros_where_plain_sgd_does_not():
    rng = np.random.default_rng(8)
    n, K, lam, rate, batch = 2000, 10, 0.05, 0.05, 200
    X = rng.normal(size=(n, K))
    y = (X[:, :2] @ [2.0, -2.0] + 0.3 * rng.normal(size=n) > 0).astype(float)
    p = link_exponent(K)
    theta, s_smidas, s_sgd = np.zeros(K), np.zeros(K), np.zeros(K)
    for _ in range(3000):  # mini-batch stochastic gradients, as in the estimators
        i = rng.integers(0, n, batch)
        grad = lambda s: X[i].T @ (1 / (1 + np.exp(-X[i] @ s)) - y[i]) / batch  # noqa: E731
        theta, s_smidas = smidas_step(theta, grad(s_smidas), rate, lam, p)
        s_sgd = s_sgd - rate * (grad(s_sgd) + lam * np.sign(s_sgd))
    assert (s_smidas == 0).sum() >= 5 and (s_sgd == 0).sum() == 0
    assert s_smidas[0] > 0.2 and s_smidas[1] < -0.2  # the two informative codes survive


# -- graph steps ------------------------------------------------------------------------------
def test_paper_graph_step_returns_the_identity():
    rng = np.random.default_rng(9)
    W, _ = planted_heads(rng, k=12, n_clusters=3)
    A = paper_graph_step(W)
    assert np.allclose(A, np.eye(12), atol=1e-8)
    objective = np.trace(W @ A @ W.T)
    for _ in range(5):  # any feasible I + L(M), M >= 0, costs more
        assert np.trace(W @ (np.eye(12) + laplacian(random_graph(12, rng))) @ W.T) > objective
    assert np.array_equal(learn_task_graph(W, "paper"), np.zeros((12, 12)))


def test_paper_feasible_set_projection_lands_on_the_constraints():
    rng = np.random.default_rng(10)
    A = _project_feasible_paper(rng.normal(size=(8, 8)) * 3, 500)
    # Dykstra converges slowly from far away; 500 rounds land within 1e-3 of every constraint
    assert np.linalg.eigvalsh((A + A.T) / 2 - np.eye(8)).min() > -1e-3
    assert np.allclose(A @ np.ones(8), 1, atol=1e-3)
    assert (A[~np.eye(8, dtype=bool)] <= 1e-3).all()


def test_kalofolias_matches_a_reference_solver():
    rng = np.random.default_rng(11)
    k = 8
    W, _ = planted_heads(rng, k=k, n_clusters=2, spread=0.5)
    Z = pairwise_sq_distances(W)
    Z /= Z[np.triu_indices(k, 1)].mean()
    M = kalofolias_graph(Z, tol=1e-12, max_iter=50000)
    rows, cols = np.triu_indices(k, 1)

    def objective(m):
        G = np.zeros((k, k))
        G[rows, cols] = m
        G = G + G.T
        degree = G.sum(1)
        grad = 2 * Z[rows, cols] - 1 / degree[rows] - 1 / degree[cols] + 2 * m
        return (G * Z).sum() - np.log(degree).sum() + 0.5 * (G * G).sum(), grad

    ref = minimize(objective, np.full(rows.size, 0.1), jac=True, method="L-BFGS-B",
                   bounds=[(0, None)] * rows.size, options={"ftol": 1e-15, "gtol": 1e-12})
    assert np.allclose(M[rows, cols], ref.x, atol=1e-5)


def test_default_graph_step_is_valid_and_recovers_planted_clusters():
    rng = np.random.default_rng(12)
    W, planted = planted_heads(rng)
    M = learn_task_graph(W)
    k = W.shape[1]
    assert np.allclose(M, M.T) and (M >= 0).all() and np.all(np.diag(M) == 0)
    assert M.max() == pytest.approx(1.0) and (M > 0).sum() > k  # non-trivial
    assert np.allclose(laplacian(M).sum(axis=1), 0)
    found = cluster_labels(graph_clusters(M), k)
    assert adjusted_rand_score(planted, found) >= 0.9
    thresholded = threshold_graph(M)
    assert (thresholded[(thresholded > 0)] >= 0.1).all()


def test_graph_sparsity_knob_is_scale_free_and_monotone():
    rng = np.random.default_rng(13)
    W, _ = planted_heads(rng, spread=0.6)
    assert np.allclose(learn_task_graph(W, sparsity=2.0), learn_task_graph(1e3 * W, sparsity=2.0),
                       atol=1e-6)
    edges = [(learn_task_graph(W, sparsity=s) > 1e-6).sum() for s in (0.5, 2.0, 8.0)]
    assert edges[0] > edges[1] > edges[2] > 0
    with pytest.raises(ValueError, match="unknown graph step"):
        learn_task_graph(W, method="sdp")
