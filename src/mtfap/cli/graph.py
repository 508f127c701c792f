"""``mtfap graph``: the task graph a Scenario 2 run learned, drawn and clustered (Sec. 5.4).

Writes into --out: graph_heatmap.png (Fig. 9: the normalised graph with attribute names,
ordered by cluster), graph_clusters.png (Fig. 4: edges at or above --threshold of the largest
weight, nodes placed and coloured by cluster) and clusters.json (the clusters, the number of
edges, and the adjusted Rand index of the clusters against the paper's ten clusters and every
grouping named with --against).

RUN is a graph-heads folder from `mtfap fit-heads --method graph` or `mtfap train --heads graph`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mtfap.cli.arguments import add_overwrite_argument


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "graph", help="heatmap, clusters and cluster agreement of a learned task graph",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("run", type=Path, help="run folder with graph heads")
    parser.add_argument("--threshold", type=float, default=0.1,
                        help="drop edges below this fraction of the largest weight (paper: 0.1)")
    parser.add_argument("--against", nargs="+", default=["paper", "regions"], metavar="GROUPING",
                        help="groupings to compare the clusters with: presets (paper, regions) "
                             "or JSON/YAML files")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best",
                        help="train runs: best validation epoch or the last one")
    parser.add_argument("--out", type=Path, help="output folder (default: RUN/graph)")
    parser.add_argument("--svg", action="store_true", help="also write SVG figures")
    add_overwrite_argument(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from mtfap.applications.graph_figures import write_graph_report
    from mtfap.model.runs import open_run
    from mtfap.outputs import prepare_output_folder

    if not 0 <= args.threshold < 1:
        raise ValueError(f"--threshold must be in [0, 1), got {args.threshold}")
    out = args.out or args.run / "graph"
    prepare_output_folder(out, "graph", overwrite=args.overwrite, protect=[args.run],
                          check_only=True)
    opened = open_run(args.run, args.checkpoint)
    graph = opened.task_graph()
    if graph is None:
        raise ValueError(f"{args.run}: a {opened.method!r} run has no task graph; fit one with "
                         "`mtfap fit-heads --method graph` or train with --heads graph")
    prepare_output_folder(out, "graph", overwrite=args.overwrite, protect=[args.run])
    references = {name: name for name in args.against}
    report = write_graph_report(graph, opened.attributes, out, references, args.threshold,
                                svg=args.svg)
    print(f"{report['n_clusters']} clusters, {report['n_edges']} edges at threshold "
          f"{args.threshold:g}:")
    for number, members in enumerate(report["clusters"], 1):
        print(f"  {number:2d}. {', '.join(members)}")
    for name, value in report["adjusted_rand_index"].items():
        print(f"adjusted Rand index vs {name}: {value:.3f}")
    for name, reason in report["not_compared"].items():
        print(f"not compared with {name}: {reason}")
    print(f"written to {out}/ (graph_heatmap.png, graph_clusters.png, clusters.json)")
    return 0
