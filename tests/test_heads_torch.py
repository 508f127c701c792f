"""Torch heads for end-to-end training: the contract the trainer relies on, and the shared math."""

import numpy as np
import pytest
import torch

from mtfap.heads.graph_learning import laplacian
from mtfap.heads.proximal import numerical_rank, singular_value_threshold, soft_threshold
from mtfap.heads.registry import make_torch_heads

NAMES = [f"t{j}" for j in range(6)]
GROUPS = {"a": NAMES[:3], "b": NAMES[3:]}
PARAMS = {"independent": {"lam": 1e-3},
          "lowrank_sparse": {"groups": GROUPS, "lam": 1e-2, "gamma": 1e-2},
          "graph": {"xi": 0.1}}


@pytest.mark.parametrize("method", list(PARAMS))
def test_contract(method):
    heads = make_torch_heads(method, 5, NAMES, **PARAMS[method])
    features = torch.randn(4, 5) * 0.1 + 3.0
    logits = heads(features)  # training mode: the first batch sets the standardisation
    assert logits.shape == (4, 6)
    W = heads.weight_matrix()
    assert W.shape == (5, 6) and heads.bias.shape == (6,)
    z = (features - features.mean(0)) / torch.sqrt(features.var(0, unbiased=False) + 1e-5)
    assert torch.allclose(logits, z @ W + heads.bias, atol=1e-4)  # float32 rounding / std 0.1
    heads.eval()  # the same map in eval mode, and linear_map() gives it on the raw features
    W_raw, b_raw = heads.linear_map()
    assert torch.allclose(heads(features), features @ W_raw + b_raw, atol=1e-4)
    assert torch.allclose(heads(features), logits, atol=1e-4)
    raw = make_torch_heads(method, 5, NAMES, standardize=False, **PARAMS[method])
    assert torch.allclose(raw(features), features @ raw.weight_matrix() + raw.bias)
    assert heads.penalty().ndim == 0
    heads.solver_step(0.1)
    heads.end_epoch()
    info = heads.describe()
    assert info["method"] == method and info["n_tasks"] == 6
    with pytest.raises(ValueError, match=r"features must be \(N, 5\)"):
        heads(torch.randn(4, 3))


def test_standardizer_tracks_the_features_and_is_a_constant_for_the_gradient():
    heads = make_torch_heads("independent", 3, NAMES[:2], standardize=True)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(50, 3, generator=generator) * torch.tensor([0.1, 1.0, 5.0]) + 2.0
               for _ in range(20)]
    for batch in batches:
        heads(batch)
    data = torch.cat(batches)
    # The first 1 / momentum batches are averaged with equal weights: the mean of all rows and
    # the mean within-batch variance.
    within = torch.stack([b.var(0, unbiased=False) for b in batches]).mean(0)
    assert torch.allclose(heads.standardizer.mean, data.mean(0), atol=1e-5)
    assert torch.allclose(heads.standardizer.var, within, rtol=1e-4)
    heads.eval()
    features = torch.randn(4, 3, requires_grad=True)
    heads(features).sum().backward()
    # d logits / d features = W / std, with the statistics held constant.
    expected = (heads.weight / heads.standardizer.scale()[:, None]).sum(1)
    assert torch.allclose(features.grad, expected.expand(4, 3).detach(), atol=1e-6)
    heads.train()
    before = heads.standardizer.mean.clone()
    heads(batches[0] + 100.0)  # the 21st batch moves the estimate by 1/21 of the gap ...
    assert torch.allclose(heads.standardizer.mean - before,
                          (batches[0].mean(0) + 100.0 - before) / 21, atol=1e-4)
    heads.standardizer.updates.fill_(100)
    before = heads.standardizer.mean.clone()
    heads(batches[1] * 50.0)  # ... and after the first 100 batches the statistics stay fixed
    assert torch.equal(heads.standardizer.mean, before)
    following = make_torch_heads("independent", 3, NAMES[:2]).standardizer
    following.__init__(3, warmup_batches=1, momentum=0.01)
    following(batches[0])
    before = following.mean.clone()
    following(batches[1])  # with momentum > 0 they follow the features with that weight
    assert torch.allclose(following.mean - before, 0.01 * (batches[1].mean(0) - before),
                          atol=1e-5)


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
    with pytest.raises(ValueError, match="unknown head method 'lowrank'. Did you mean 'lowrank_sparse'"):
        make_torch_heads("lowrank", 5, NAMES)
    with pytest.raises(ValueError, match="graph heads have no parameter 'gamma'"):
        make_torch_heads("graph", 5, NAMES, gamma=1.0)
    with pytest.raises(ValueError, match="solver must be one of"):
        make_torch_heads("lowrank_sparse", 5, NAMES, groups=GROUPS, solver="adam")
