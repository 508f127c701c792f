"""Torch heads for end-to-end training: the contract the trainer relies on, and the shared math."""

import numpy as np
import pytest
import torch

from mtfap.heads.graph_learning import laplacian
from mtfap.heads.proximal import numerical_rank, singular_value_threshold, soft_threshold
from mtfap.heads.torch_heads import make_torch_heads

NAMES = [f"t{j}" for j in range(6)]
GROUPS = {"a": NAMES[:3], "b": NAMES[3:]}
PARAMS = {"independent": {"lam": 1e-3},
          "lowrank_sparse": {"groups": GROUPS, "lam": 1e-2, "gamma": 1e-2},
          "graph": {"xi": 0.1}}


@pytest.mark.parametrize("method", list(PARAMS))
def test_contract(method):
    heads = make_torch_heads(method, 5, NAMES, **PARAMS[method])
    features = torch.randn(4, 5)
    logits = heads(features)
    assert logits.shape == (4, 6)
    W = heads.weight_matrix()
    assert W.shape == (5, 6) and heads.bias.shape == (6,)
    assert torch.allclose(logits, features @ W + heads.bias)
    assert heads.penalty().ndim == 0
    heads.solver_step(0.1)
    heads.end_epoch()
    info = heads.describe()
    assert info["method"] == method and info["n_tasks"] == 6
    with pytest.raises(ValueError, match=r"features must be \(N, 5\)"):
        heads(torch.randn(4, 3))


def test_penalties_are_the_smooth_parts_of_omega():
    heads = make_torch_heads("independent", 5, NAMES, lam=0.3)
    assert heads.penalty().item() == pytest.approx(0.3 * (heads.weight ** 2).sum().item())
    graph = make_torch_heads("graph", 5, NAMES, xi=0.5, eps=1e-2)
    W = graph.weight.detach().double().numpy()
    graph.end_epoch()
    M = graph.graph.double().numpy()
    assert (M > 0).any() and np.allclose(M, M.T)
    A = laplacian(M) + 1e-2 * np.eye(6)
    assert graph.penalty().item() == pytest.approx(0.5 * np.trace(W @ A @ W.T), rel=1e-5)
    assert make_torch_heads("lowrank_sparse", 5, NAMES, groups=GROUPS).penalty().item() == 0


def test_proximal_solver_step_applies_the_shared_operators():
    heads = make_torch_heads("lowrank_sparse", 8, NAMES, groups=GROUPS, lam=0.5, gamma=0.5,
                             ranks={"a": 2, "b": 2})
    before = [(L.detach().double().numpy(), S.detach().double().numpy())
              for L, S in zip(heads.L, heads.S)]
    heads.solver_step(0.4)
    for (L0, S0), L, S in zip(before, heads.L, heads.S):
        assert np.allclose(L.detach().numpy(), singular_value_threshold(L0, 0.2), atol=1e-6)
        assert np.allclose(S.detach().numpy(), soft_threshold(S0, 0.2), atol=1e-6)
    info = heads.describe()
    assert info["sparsity"] > 0 and info["rank_caps"] == [2, 2]


def test_paper_solver_step_trains_with_the_rank_cap():
    torch.manual_seed(0)
    X = torch.randn(256, 8)
    Y = (X[:, :6] > 0).float()
    heads = make_torch_heads("lowrank_sparse", 8, NAMES, groups=GROUPS, lam=1e-3, gamma=1e-3,
                             solver="paper", smidas_rate=0.5)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    first = loss_fn(heads(X), Y).item()
    for _ in range(150):
        heads.zero_grad()
        loss_fn(heads(X), Y).backward()
        heads.solver_step(0.5)  # Algorithm 1 on L, SMIDAS on S, from the gradients
    assert loss_fn(heads(X), Y).item() < 0.7 * first
    assert all(numerical_rank(L.detach().double().numpy()) <= K
               for L, K in zip(heads.L, heads.ranks))


def test_graph_heads_learn_a_graph_at_the_end_of_an_epoch():
    heads = make_torch_heads("graph", 4, NAMES, xi=0.1)
    with torch.no_grad():  # two planted groups of heads
        base = torch.randn(4, 2)
        heads.weight.copy_(base[:, [0, 0, 0, 1, 1, 1]] + 0.01 * torch.randn(4, 6))
    heads.end_epoch()
    assert heads.describe()["clusters"] == [NAMES[:3], NAMES[3:]]


def test_bad_method_or_parameter_is_named():
    with pytest.raises(ValueError, match="unknown heads method 'lowrank'"):
        make_torch_heads("lowrank", 5, NAMES)
    with pytest.raises(ValueError, match="bad parameter for 'graph' heads"):
        make_torch_heads("graph", 5, NAMES, gamma=1.0)
    with pytest.raises(ValueError, match="solver must be one of"):
        make_torch_heads("lowrank_sparse", 5, NAMES, groups=GROUPS, solver="adam")
