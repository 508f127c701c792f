import numpy as np
import pytest
from PIL import Image

from mtfap.applications.graph_figures import (cluster_agreement, cluster_labels, clusters_as_lists,
                                              display_order, grouping_labels, normalised_adjacency,
                                              plot_graph_clusters, plot_graph_heatmap)
from mtfap.attributes import CELEBA_ATTRIBUTES
from mtfap.heads.groupings import PAPER_GROUPS

ATTRS = list(CELEBA_ATTRIBUTES)


def _graph_of(labels, seed=0, within=(0.3, 1.0), noise=0.05):
    """Strong random edges inside each cluster, weak noise (< 0.1 of the top weight) across."""
    rng = np.random.default_rng(seed)
    k = len(labels)
    same = labels[:, None] == labels[None, :]
    M = np.where(same, rng.uniform(*within, (k, k)), rng.uniform(0, noise, (k, k)))
    return (M + M.T) / 2


def test_paper_clusters_are_recovered_from_a_graph_built_on_them():
    paper = grouping_labels("paper", ATTRS)
    assert len(np.unique(paper)) == 10
    found = cluster_labels(_graph_of(paper) * 7.3, threshold=0.1)   # scale must not matter
    assert cluster_agreement(found, paper) == pytest.approx(1.0)
    clusters = clusters_as_lists(found, ATTRS)
    assert sorted(map(sorted, clusters)) == sorted(map(sorted, PAPER_GROUPS.values()))
    assert len(clusters[0]) == 15   # numbered by decreasing size
    assert cluster_agreement(found, grouping_labels("regions", ATTRS)) < 0.5


def test_threshold_decides_which_edges_remain():
    labels = np.array([0, 0, 1, 1])
    M = np.array([[0, 1.0, 0.05, 0], [1.0, 0, 0, 0], [0.05, 0, 0, 0.5], [0, 0, 0.5, 0]])
    assert list(cluster_labels(M, 0.1)) == [0, 0, 1, 1]
    assert len(np.unique(cluster_labels(M, 0.01))) == 1     # the weak edge now joins them
    assert len(np.unique(cluster_labels(M, 0.8))) == 3      # only the strongest edge remains
    assert len(np.unique(cluster_labels(np.zeros((4, 4)), 0.0))) == 4
    assert cluster_agreement(cluster_labels(M, 0.1), labels) == 1.0


def test_normalisation_and_bad_graphs():
    M = np.array([[5.0, 2.0], [0.0, 1.0]])
    np.testing.assert_allclose(normalised_adjacency(M), [[0, 1], [1, 0]])
    laplacian = np.array([[1.0, -1.0], [-1.0, 1.0]])
    with pytest.raises(ValueError, match="not the Laplacian"):
        normalised_adjacency(laplacian)
    with pytest.raises(ValueError, match="square"):
        normalised_adjacency(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="unknown attribute"):
        grouping_labels({"g": ["Smilng"]}, ["Smiling"])


def test_figures_are_written_with_legible_size(tmp_path):
    paper = grouping_labels("paper", ATTRS)
    M = _graph_of(paper)
    heatmap = plot_graph_heatmap(M, ATTRS, tmp_path / "graph_heatmap", labels=paper, svg=True)
    drawing = plot_graph_clusters(M, ATTRS, tmp_path / "graph_clusters.png")
    assert [p.suffix for p in heatmap] == [".png", ".svg"]
    assert "Wearing_Necktie" in heatmap[1].read_text()  # names are drawn as text
    for path in (heatmap[0], drawing[0]):
        with Image.open(path) as image:
            assert min(image.size) > 800   # 40 names need room to be read
    with pytest.raises(ValueError, match="attribute names"):
        plot_graph_heatmap(M, ATTRS[:5], tmp_path / "bad")


def test_heatmap_order_keeps_clusters_together_and_strong_pairs_adjacent():
    # One component at threshold 0.1 (weak 0.2 links), but two strong blocks inside it.
    blocks = np.array([0, 1, 0, 1, 0, 1])
    M = np.where(blocks[:, None] == blocks[None, :], 1.0, 0.2)
    np.fill_diagonal(M, 0)
    labels = np.array([0, 0, 0, 0, 0, 0])
    order = display_order(M, labels)
    assert sorted(order) == list(range(6))
    assert set(blocks[order[:3]]) in ({0}, {1})   # each strong block is contiguous
    labels = np.array([1, 0, 1, 0, 1, 0])
    assert set(display_order(M, labels)[:3]) == {1, 3, 5}   # cluster 0 first


def test_community_readings_find_blocks_that_a_weak_path_joins_into_one_component():
    from mtfap.applications.graph_figures import cluster_labels, community_labels
    rng = np.random.default_rng(0)
    blocks = [0] * 5 + [1] * 4 + [2] * 6
    graph = np.array([[0.0 if i == j else (0.9 + 0.1 * rng.random() if a == b else 0.15)
                       for j, b in enumerate(blocks)] for i, a in enumerate(blocks)])
    assert len(set(cluster_labels(graph, 0.1))) == 1  # every task reachable: one component
    for method in ("spectral", "modularity"):
        labels = community_labels(graph, method)
        assert len(set(labels)) == 3, method
        for block in range(3):
            members = {labels[i] for i, b in enumerate(blocks) if b == block}
            assert len(members) == 1, (method, block)
