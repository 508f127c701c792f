"""``mtfap sweep``: tune lambda, gamma (Scenario 1) and xi (Scenario 2) on validation (Fig. 7).

Each hyper-parameter is varied along its grid with the others at their best so far (one
coordinate pass from the paper's values); every fit is scored by the mean accuracy over
attributes on the identity-disjoint validation split (the test split is never used). Writes
sweep.png (validation accuracy against each hyper-parameter, the chosen values circled),
sweep.json (chosen values and every fit; `mtfap compare --params` reads it) and sweep.csv.

Fast on frozen features (FEATURES from `mtfap features`); with --end-to-end CONFIG the whole
network is trained once per grid value (`mtfap train` runs under --out).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mtfap.cli.arguments import add_overwrite_argument, count


def add_parser(subparsers) -> None:
    from mtfap.experiments.frozen import VARIANTS as METHODS
    from mtfap.experiments.sweep import PAPER_GRID
    default_grid = "; ".join(f"{m}: " + ", ".join(f"{p}={'/'.join(f'{v:g}' for v in vs)}"
                                                  for p, vs in grid.items())
                             for m, grid in PAPER_GRID.items())
    parser = subparsers.add_parser(
        "sweep", help="hyper-parameter sweep on the validation split (Fig. 7)",
        description=__doc__.split("\n\n", 1)[1] + f"\n\nDefault grids: {default_grid}.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("features", type=Path, nargs="?",
                        help="features .npz (from `mtfap features`) for the frozen sweep")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                        metavar="METHOD", help=f"methods to tune: {', '.join(METHODS)}")
    parser.add_argument("--grid", action="append", default=[], metavar="METHOD.PARAM=V1,V2,...",
                        help="replace a grid, e.g. --grid graph.xi=0.001,0.01,0.1 (repeatable; "
                             "for --end-to-end: PARAM=V1,V2,...)")
    parser.add_argument("--groups", help="Scenario 1 grouping: preset (paper, regions) or file")
    parser.add_argument("--seed", type=count(0), default=0, help="seed of the seeded solvers")
    parser.add_argument("--end-to-end", type=Path, metavar="CONFIG",
                        help="train end to end per grid value with this training config file")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="--end-to-end: training config overrides")
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"), help="output folder")
    parser.add_argument("--svg", action="store_true", help="also write an SVG figure")
    add_overwrite_argument(parser)
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.set_defaults(func=run)


def parse_grid(entries, with_method: bool = True) -> dict:
    """``["graph.xi=0.01,0.1"]`` -> ``{"graph": {"xi": [0.01, 0.1]}}`` (or ``{"xi": [...]}``).

    Only the form is checked here; each value is checked against its parameter's declaration
    (``mtfap.heads.params``) by the sweep, before any fit."""
    from mtfap.heads.params import read_value
    grid: dict = {}
    for entry in entries:
        key, sep, values = entry.partition("=")
        method, dot, param = key.strip().rpartition(".")
        example = "graph.xi=0.001,0.01" if with_method else "xi=0.001,0.01"
        if not sep or not param or (with_method and not dot) or (not with_method and dot):
            raise ValueError(f"--grid {entry!r}: expected {example}")
        try:
            numbers = [float(read_value(v)) for v in values.split(",") if v.strip()]
        except (TypeError, ValueError):
            raise ValueError(f"--grid {entry!r}: the values must be numbers, e.g. {example}") from None
        if with_method:
            grid.setdefault(method, {})[param] = numbers
        else:
            grid[param] = numbers
    return grid


def run(args) -> int:
    from mtfap.data.features import FeatureSet
    from mtfap.experiments.sweep import PAPER_GRID, sweep_end_to_end, sweep_frozen
    from mtfap.io import text_table
    from mtfap.outputs import prepare_output_folder

    if (args.features is None) == (args.end_to_end is None):
        raise ValueError("give either a features file (frozen sweep) or --end-to-end CONFIG")
    prepare_output_folder(args.out, "sweep", overwrite=args.overwrite, check_only=True)
    if args.end_to_end is not None:
        from mtfap.training.config import load_config, parse_override
        config = load_config(args.end_to_end, [parse_override(o) for o in args.overrides])
        grid = parse_grid(args.grid, with_method=False) or dict(PAPER_GRID[_frozen_name(config)])
        prepare_output_folder(args.out, "sweep", overwrite=args.overwrite)
        result = sweep_end_to_end(config, grid, args.out, progress=args.progress)
    else:
        grid = parse_grid(args.grid)
        unknown = set(grid) - set(args.methods)
        if unknown:
            raise ValueError(f"--grid names methods that are not swept: {', '.join(unknown)} "
                             f"(--methods {' '.join(args.methods)})")
        result = sweep_frozen(FeatureSet.load(args.features), args.methods, grid, args.groups,
                              args.seed, args.progress)
        prepare_output_folder(args.out, "sweep", overwrite=args.overwrite)
    paths = result.save(args.out, svg=args.svg)
    shown = result.curves.set_index(["method", "param", "value"])
    print(text_table(shown[["val_mean_accuracy"] + (["fit_seconds"] if "fit_seconds" in shown
                                                     else [])]))
    for method, params in result.chosen.items():
        chosen = ", ".join(f"{k}={v:g}" for k, v in params.items())
        print(f"chosen for {method}: {chosen}")
    print(f"written to {paths['json']}, {paths['figure']}")
    return 0


def _frozen_name(config) -> str:
    """The PAPER_GRID entry of an end-to-end config's head method."""
    if config.heads == "lowrank_sparse":
        return f"lowrank_sparse_{config.heads_params.get('solver', 'proximal')}"
    return config.heads
