"""``mtfap compare``: the paper's comparison, end to end, in one command.

Independent heads (eq. 1) vs Scenario 1 (prior task groups, low-rank + sparse, eq. 3, with the
paper's solver and the proximal one) vs Scenario 2 (learned task graph, eq. 6-14), on frozen
features: hyper-parameters chosen on the validation split, accuracy measured on the test split.
Prints a per-attribute and mean accuracy table and writes it (CSV, Markdown, JSON) with the
learned graph's figures, its clusters and the validation sweep into --out.

Without --data it runs on the embedded generated dataset (cartoon faces, not real ones) with
pixel features; with --data (a CelebA folder, say) on real faces with frozen
dlib_face_resnet features, extracted once and cached.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from mtfap.cli.arguments import add_overwrite_argument, count


def add_parser(subparsers) -> None:
    from mtfap.experiments.frozen import VARIANTS as METHODS
    parser = subparsers.add_parser(
        "compare", help="independent vs low-rank+sparse (both solvers) vs graph heads, end to end",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", help="dataset path (CelebA folder, ...); default: the embedded "
                                       "generated dataset")
    parser.add_argument("--features", type=Path,
                        help="a features .npz from `mtfap features` to use instead of --data")
    parser.add_argument("--backbone",
                        help="frozen backbone for the features, or 'pixels' (PCA of 24x24 "
                             "pixels); default: dlib_face_resnet with --data, pixels without")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                        metavar="METHOD", help=f"methods to compare: {', '.join(METHODS)}")
    parser.add_argument("--seeds", nargs="+", type=count(0), default=[0],
                        help="seeds (the paper solver's mini-batches; with --scarce, which "
                             "labels are hidden); deterministic methods run once")
    parser.add_argument("--no-tune", dest="tune", action="store_false",
                        help="skip the validation sweep; use the estimators' defaults (the "
                             "paper's values) or --params")
    parser.add_argument("--params", type=Path,
                        help="JSON {method: {param: value}}, or a sweep.json from `mtfap sweep`")
    parser.add_argument("--groups", help="Scenario 1 task grouping: preset (paper, regions) or "
                                         "JSON/YAML file; default paper (the generating groups "
                                         "on the generated dataset)")
    parser.add_argument("--scarce", type=float, metavar="FRACTION",
                        help="keep only this fraction of the train/val labels of the rarest "
                             "attributes (the paper's motivating case)")
    parser.add_argument("--scarce-count", type=count(1), default=20,
                        help="how many of the rarest attributes --scarce applies to")
    parser.add_argument("--tune-thresholds", action="store_true",
                        help="per-attribute decision thresholds tuned on val (default 0.5)")
    parser.add_argument("--bootstrap", type=count(0), default=1000,
                        help="identity-bootstrap replicates of the test intervals (0: none)")
    parser.add_argument("--paper", choices=("auto", "celeba", "lfwa", "none"), default="auto",
                        help="show the paper's MTFAP columns (auto: Table 1 on real data with "
                             "CelebA's attributes)")
    parser.add_argument("--synthetic-size", type=count(1), default=2000,
                        help="images of the generated dataset when there is no --data")
    parser.add_argument("--out", type=Path, default=Path("runs/compare"), help="output folder")
    parser.add_argument("--cache-dir", help="cache folder (default: $MTFAP_CACHE or ~/.cache/mtfap)")
    parser.add_argument("--svg", action="store_true", help="write SVG figures beside the PNGs")
    add_overwrite_argument(parser)
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bars")
    parser.set_defaults(func=run)


def read_params(path: Path | None) -> dict | None:
    """``{method: {param: value}}`` from a JSON file (a sweep.json's ``chosen`` works too);
    every method and parameter is checked here, with the file named in the error."""
    from mtfap.errors import DataError
    from mtfap.experiments.frozen import VARIANTS, check_methods
    from mtfap.heads.params import check_params

    if path is None:
        return None
    if not path.is_file():
        raise FileNotFoundError(f"{path}: parameters file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"not valid JSON ({err.msg})", path, err.lineno) from None
    except UnicodeDecodeError as err:
        raise DataError(f"not a UTF-8 text file ({err.reason} at byte {err.start})", path) from None
    data = data.get("chosen", data) if isinstance(data, dict) else data
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise DataError("expected {method: {param: value}}", path,
                        hint='for example {"graph": {"xi": 0.01}}')
    try:
        check_methods(data)
        return {name: check_params(VARIANTS[name].method, values)
                for name, values in data.items()}
    except ValueError as exc:
        raise DataError(str(exc), path) from None


def load_features(args):
    """(features, a sentence saying which data and features these are, is the data real?)."""
    from mtfap.data import open_dataset
    from mtfap.data.cache import default_cache_dir
    from mtfap.data.features import FeatureSet
    from mtfap.experiments.compare import backbone_features, pixel_features

    if args.features is not None:
        if args.data or args.backbone:
            raise ValueError("--features already holds the data and the backbone; drop --data "
                             "and --backbone")
        features = FeatureSet.load(args.features)
        real = "synthetic" not in str(features.meta.get("dataset", ""))
        return features, f"features file {args.features} ({features.meta.get('backbone', '?')})", real
    real = args.data is not None
    backbone = args.backbone or ("dlib_face_resnet" if real else "pixels")
    if backbone == "pixels":
        dataset = open_dataset(args.data) if real else open_dataset(
            "synthetic", n=args.synthetic_size, cache_dir=args.cache_dir)
        features = pixel_features(dataset, cache_dir=args.cache_dir, progress=args.progress)
        what = features.meta["features"]
    else:
        data = args.data or "synthetic"
        name = Path(data).name if real else f"synthetic{args.synthetic_size}"
        out = default_cache_dir(args.cache_dir) / "features" / f"{name}_{backbone}.npz"
        features = backbone_features(data, backbone, out, args.cache_dir, args.progress)
        what = f"frozen {backbone} features (cached in {out})"
    if not real:
        what = ("the embedded GENERATED dataset (cartoon faces, not real faces; give --data "
                f"for CelebA), {what}")
    else:
        what = f"{args.data}, {what}"
    return features, what, real


def run(args) -> int:
    from mtfap.applications.graph_figures import write_graph_report
    from mtfap.evaluation.paper import paper_columns
    from mtfap.experiments.compare import (
        compare_on_features,
        format_report,
        reference_groupings,
        write_comparison,
    )
    from mtfap.outputs import prepare_output_folder

    if args.scarce is not None and not 0 < args.scarce <= 1:
        raise ValueError(f"--scarce must be a fraction in (0, 1], got {args.scarce}")
    prepare_output_folder(args.out, "compare", overwrite=args.overwrite, check_only=True)
    started = time.perf_counter()
    params = read_params(args.params)
    features, what, real = load_features(args)
    print(f"data: {what}", flush=True)
    groups = args.groups
    if groups is None and not real and isinstance(features.meta.get("groups"), dict):
        groups = features.meta["groups"]  # the generated dataset's true groups are its prior
    paper = None
    if args.paper != "none" and (args.paper != "auto" or real):
        paper = "celeba" if args.paper == "auto" else args.paper
        if not set(features.attributes) <= set(paper_columns(paper).index):
            if args.paper != "auto":
                raise ValueError(f"--paper {args.paper}: these attributes are not the paper's")
            paper = None
    n = {s: int((features.split == i).sum()) for i, s in enumerate(("train", "val", "test"))}
    print(f"splits: {n['train']} train, {n['val']} val, {n['test']} test images; "
          f"{len(features.attributes)} attributes; {features.X.shape[1]}-D features", flush=True)

    comparison = compare_on_features(
        features, args.methods, tuple(args.seeds), groups, args.tune, params,
        scarce=None if args.scarce is None else (args.scarce, args.scarce_count),
        threshold_tuning=args.tune_thresholds, n_bootstrap=args.bootstrap,
        progress=args.progress)
    comparison.meta["data"] = what
    prepare_output_folder(args.out, "compare", overwrite=args.overwrite)
    write_comparison(comparison, args.out, paper, svg=args.svg)
    print()
    print(f"Test accuracy (%) on {what}")
    if comparison.meta["scarce"]:
        scarce = comparison.meta["scarce"]
        print(f"scarce labels: {100 * scarce['fraction']:g} % of the train/val labels kept for "
              f"{scarce['count']} rarest attributes: {', '.join(scarce['attributes'])}")
    print(format_report(comparison, paper))
    if comparison.graph is not None:
        report = write_graph_report(comparison.graph, comparison.attributes, args.out,
                                    reference_groupings(features), svg=args.svg)
        agreement = ", ".join(f"{k} {v:.2f}" for k, v in report["adjusted_rand_index"].items())
        print(f"\nlearned graph: {report['n_clusters']} clusters at threshold "
              f"{report['threshold']:g}; adjusted Rand index vs {agreement}")
    print(f"\nwritten to {args.out}/ (comparison.md/.csv/.json, summary.*, sweep.*, graph_*.png, "
          f"clusters.json) in {time.perf_counter() - started:.0f} s", file=sys.stdout)
    return 0
