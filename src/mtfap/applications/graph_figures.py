"""The learned task graph read as the paper does (Sec. 5.4): heatmap (Fig. 9), clusters (Fig. 4).

The graph M (k x k, M_ij >= 0) is made symmetric with a zero diagonal and divided by its
largest entry; entries below a threshold (0.1 in the paper) are dropped, and the clusters are
the connected components of what remains. Agreement between two clusterings is the adjusted
Rand index (1 = identical partitions, about 0 = chance).

Connected components merge everything that one weak path links: on a dense learned graph they
give two or three clusters where the heatmap shows about eight blocks. Two community readings
are offered beside them (:func:`community_labels`): spectral clustering with the number of
clusters from the largest eigengap of the normalised Laplacian, and greedy modularity
maximisation (networkx).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

from mtfap.heads.graph_learning import graph_clusters, threshold_graph
from mtfap.heads.groupings import resolve_groups
from mtfap.io import save_figure, write_json


def normalised_adjacency(graph) -> np.ndarray:
    """(M + M^T) / 2 with a zero diagonal, divided by its largest entry (an all-zero graph stays 0).

    Raises ValueError for a non-square matrix or negative off-diagonal weights (a Laplacian
    or A = L + eps I must be converted to its weights M = -A_off first).
    """
    graph = np.asarray(graph, dtype=np.float64)
    if graph.ndim != 2 or graph.shape[0] != graph.shape[1]:
        raise ValueError(f"a task graph must be a square (k, k) matrix; got shape {graph.shape}")
    adjacency = (graph + graph.T) / 2
    np.fill_diagonal(adjacency, 0.0)
    if (adjacency < -1e-12).any():
        raise ValueError("the task graph has negative off-diagonal weights; pass the edge "
                         "weights M (M_ij >= 0), not the Laplacian L(M) or A = L + eps I")
    return threshold_graph(adjacency, 0.0)


def cluster_labels(graph, threshold: float = 0.1) -> np.ndarray:
    """Cluster labels (k,) of the tasks: connected components of the normalised graph >= threshold.

    The components are those of ``mtfap.heads.graph_learning.graph_clusters`` (what
    ``GraphHeads.clusters_`` holds); labels are numbered by decreasing cluster size (ties: by
    the first task), so the same partition always gets the same labels.
    """
    adjacency = normalised_adjacency(graph)
    labels = np.empty(len(adjacency), dtype=int)
    for c, members in enumerate(graph_clusters(adjacency, threshold)):
        labels[members] = c
    return _canonical_labels(labels)


def eigengap_clusters(adjacency, max_clusters: int = 15) -> int:
    """The number of clusters (2..max_clusters) after which the sorted eigenvalues of the
    symmetric normalised Laplacian ``I - D^-1/2 A D^-1/2`` jump the most (the eigengap)."""
    degree = adjacency.sum(axis=1)
    scale = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1e-300)), 0.0)
    laplacian = np.eye(len(adjacency)) - scale[:, None] * adjacency * scale[None, :]
    values = np.sort(np.linalg.eigvalsh(laplacian))
    top = min(max_clusters, len(values) - 1)
    gaps = np.diff(values[:top + 1])  # gaps[i] = lambda_{i+1} - lambda_i (0-based)
    return int(np.argmax(gaps[1:]) + 2)  # at least two clusters


def community_labels(graph, method: str = "spectral", max_clusters: int = 15,
                     seed: int = 0) -> np.ndarray:
    """Cluster labels (k,) from a community reading of the normalised graph.

    method : "spectral" (scikit-learn's SpectralClustering on the graph as affinity, the
        number of clusters from :func:`eigengap_clusters`, QR label assignment: deterministic)
        or "modularity" (networkx's greedy modularity communities on the weighted graph).
    """
    adjacency = normalised_adjacency(graph)
    if method == "spectral":
        from sklearn.cluster import SpectralClustering
        n_clusters = eigengap_clusters(adjacency, max_clusters)
        raw = SpectralClustering(n_clusters, affinity="precomputed", assign_labels="cluster_qr",
                                 random_state=seed).fit_predict(adjacency + 1e-9)
    elif method == "modularity":
        import networkx as nx
        from networkx.algorithms.community import greedy_modularity_communities
        network = nx.from_numpy_array(adjacency)
        raw = np.empty(len(adjacency), dtype=int)
        for c, members in enumerate(greedy_modularity_communities(network, weight="weight")):
            raw[list(members)] = c
    else:
        raise ValueError(f"method must be 'spectral' or 'modularity', got {method!r}")
    return _canonical_labels(raw)


def _canonical_labels(raw) -> np.ndarray:
    raw = np.asarray(raw)
    groups = sorted(np.unique(raw), key=lambda g: (-np.sum(raw == g), np.flatnonzero(raw == g)[0]))
    relabel = {g: i for i, g in enumerate(groups)}
    return np.array([relabel[g] for g in raw])


def grouping_labels(groups, attributes) -> np.ndarray:
    """Cluster labels (k,) of ``attributes`` from a task grouping.

    groups : a preset name (``"paper"``: the paper's ten CelebA clusters, ``"regions"``), a
        JSON/YAML grouping file, or a mapping ``group -> [attribute, ...]``; checked by
        ``mtfap.heads.groupings.resolve_groups`` (every attribute in exactly one group).
    """
    labels = np.empty(len(attributes), dtype=int)
    for g, (_, columns) in enumerate(resolve_groups(groups, list(attributes))):
        labels[columns] = g
    return _canonical_labels(labels)


def clusters_as_lists(labels, attributes) -> list[list[str]]:
    """Labels -> the clusters as lists of attribute names, largest first."""
    labels = np.asarray(labels)
    return [[a for a, lab in zip(attributes, labels) if lab == g] for g in np.unique(labels)]


def cluster_agreement(labels, reference) -> float:
    """Adjusted Rand index between two clusterings of the same tasks."""
    return float(adjusted_rand_score(np.asarray(reference), np.asarray(labels)))


def display_order(graph, labels) -> np.ndarray:
    """Task order for the heatmap: cluster by cluster, and inside a cluster the leaf order of
    an average-linkage dendrogram on the distance 1 - M, so that strongly linked tasks sit
    next to each other even when one cluster holds most of them."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    distance = 1.0 - normalised_adjacency(graph)
    np.fill_diagonal(distance, 0.0)
    leaves = leaves_list(linkage(squareform(distance, checks=False), "average"))
    rank = np.empty(len(leaves), dtype=int)
    rank[leaves] = np.arange(len(leaves))
    return np.lexsort((rank, np.asarray(labels)))


def plot_graph_heatmap(graph, attributes, path: str | Path, labels=None, title: str | None = None,
                       svg: bool = False) -> list[Path]:
    """Fig. 9: the normalised task graph as a heatmap with attribute names on both axes.

    With cluster ``labels`` the tasks are ordered by :func:`display_order` and the clusters
    are outlined, so that blocks of related attributes show at a glance.
    """
    import matplotlib.pyplot as plt

    adjacency = normalised_adjacency(graph)
    k = len(attributes)
    if adjacency.shape[0] != k:
        raise ValueError(f"graph is {adjacency.shape[0]} x {adjacency.shape[0]} but "
                         f"{k} attribute names were given")
    order = display_order(graph, labels) if labels is not None else np.arange(k)
    names = [attributes[i] for i in order]
    side = max(4.0, 0.22 * k + 2.5)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(adjacency[np.ix_(order, order)], cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(k), names, rotation=90, fontsize=7 if k > 20 else 9)
    ax.set_yticks(range(k), names, fontsize=7 if k > 20 else 9)
    if labels is not None:
        sorted_labels = np.asarray(labels)[order]
        for edge in np.flatnonzero(np.diff(sorted_labels)) + 0.5:
            ax.axhline(edge, color="white", lw=0.8)
            ax.axvline(edge, color="white", lw=0.8)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="edge weight M_ij / max M")
    ax.set_title(title or "Learned task graph")
    ax.set_xlabel("attribute")
    ax.set_ylabel("attribute")
    return save_figure(fig, path, svg=svg)


def cluster_layout(labels) -> np.ndarray:
    """(k, 2) node positions: each cluster on its own small circle, clusters around a big one.

    Deterministic, and every cluster is a visibly separate group, which a force layout of a
    sparse graph with many singletons does not guarantee.
    """
    labels = np.asarray(labels)
    groups = np.unique(labels)
    radii = np.array([0.5 * np.sqrt(np.sum(labels == g)) for g in groups])
    # Angular room for each cluster: its diameter plus a margin for the names.
    spans = 2 * radii + 2.0
    big_radius = max(spans.sum() / (2 * np.pi), 1.0)
    angles = 2 * np.pi * (np.cumsum(spans) - spans / 2) / spans.sum()
    positions = np.zeros((len(labels), 2))
    for g, radius, angle in zip(groups, radii, angles):
        members = np.flatnonzero(labels == g)
        centre = big_radius * np.array([np.cos(angle), np.sin(angle)])
        if len(members) == 1:
            positions[members[0]] = centre
            continue
        theta = 2 * np.pi * np.arange(len(members)) / len(members)
        positions[members] = centre + radius * np.c_[np.cos(theta), np.sin(theta)]
    return positions


def plot_graph_clusters(graph, attributes, path: str | Path, labels=None, threshold: float = 0.1,
                        title: str | None = None, svg: bool = False) -> list[Path]:
    """Fig. 4: the thresholded task graph, nodes coloured and placed by cluster.

    Edges with normalised weight >= ``threshold`` are drawn, thicker and darker when heavier.
    ``labels`` default to the connected components at that threshold.
    """
    import matplotlib.pyplot as plt

    adjacency = normalised_adjacency(graph)
    labels = cluster_labels(graph, threshold) if labels is None else np.asarray(labels)
    positions = cluster_layout(labels)
    n_clusters = len(np.unique(labels))
    colours = plt.get_cmap("tab10" if n_clusters <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(12, 12))
    rows, cols = np.nonzero(np.triu(adjacency >= threshold, 1))
    for i, j in zip(rows, cols):
        weight = adjacency[i, j]
        ax.plot(*positions[[i, j]].T, color="0.3", alpha=0.25 + 0.6 * weight,
                lw=0.5 + 2.5 * weight, zorder=1)
    for g in np.unique(labels):
        members = labels == g
        ax.scatter(*positions[members].T, s=140, color=colours(g % colours.N), zorder=2,
                   edgecolor="black", linewidth=0.5, label=f"cluster {g + 1} ({members.sum()})")
    for position, name, g in zip(positions, attributes, labels):
        # Names point away from the middle of their cluster (of the figure for a singleton),
        # so they neither cover the edges nor each other.
        members = positions[labels == g]
        centre = members.mean(0) if len(members) > 1 else positions.mean(0)
        away = position - centre
        away = away / (np.linalg.norm(away) + 1e-9)
        ax.annotate(name, position, xytext=12 * away, textcoords="offset points", fontsize=8,
                    ha="left" if away[0] >= 0 else "right", va="center", zorder=3)
    ax.set_title(title or f"Task graph: edges with weight >= {threshold:g} of the largest, "
                          f"{n_clusters} clusters")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, title="cluster (size)")
    ax.set_aspect("equal")
    ax.margins(0.15)
    ax.axis("off")
    return save_figure(fig, path, svg=svg)


def write_graph_report(graph, attributes, out: str | Path, references: dict | None = None,
                       threshold: float = 0.1, svg: bool = False) -> dict:
    """Fig. 9 (``graph_heatmap.png``), Fig. 4 (``graph_clusters.png``) and ``clusters.json``.

    references : name -> grouping (preset, file or mapping); the adjusted Rand index of the
        clusters against each one that covers exactly these attributes is reported (others
        are skipped: an index over different task sets means nothing).

    Returns the content of ``clusters.json``.
    """
    out = Path(out)
    labels = cluster_labels(graph, threshold)
    agreement, skipped = {}, {}
    for name, grouping in (references or {}).items():
        try:
            reference = grouping_labels(grouping, attributes)
        except ValueError as err:
            skipped[name] = str(err)
            continue
        agreement[name] = round(cluster_agreement(labels, reference), 4)
    heatmap = plot_graph_heatmap(graph, attributes, out / "graph_heatmap", labels,
                                 title="Learned task graph, tasks ordered by cluster", svg=svg)
    drawing = plot_graph_clusters(graph, attributes, out / "graph_clusters", labels, threshold,
                                  svg=svg)
    clusters = clusters_as_lists(labels, attributes)
    readings = {}
    for method in ("spectral", "modularity"):
        reading = community_labels(graph, method)
        readings[method] = {
            "n_clusters": int(reading.max() + 1),
            "clusters": clusters_as_lists(reading, attributes),
            "adjusted_rand_index": {
                name: round(cluster_agreement(reading, grouping_labels(grouping, attributes)), 4)
                for name, grouping in (references or {}).items() if name not in skipped}}
    report = {"threshold": threshold, "n_clusters": len(clusters),
              "n_edges": int(np.triu(normalised_adjacency(graph) >= threshold, 1).sum()),
              "clusters": clusters, "adjusted_rand_index": agreement,
              "community_readings": readings,
              "not_compared": skipped, "figures": [str(p) for p in heatmap + drawing]}
    write_json(out / "clusters.json", report)
    return report
