"""``mtfap data``: look at a dataset (``info``) and validate it (``check``).

PATH is a CelebA folder (list_attr_celeba.txt with img_align_celeba.zip or img_align_celeba/),
an LFW folder (lfw-deepfunneled.zip or folder, pairs.txt, gender lists), a CSV/TSV table of
images and labels (or an image folder/zip with --table), or 'synthetic'.

examples:
  mtfap data info ../shared/data/celeba
  mtfap data info photos/ --table labels.csv --attributes Smiling,Eyeglasses --json
  mtfap data check ../shared/data/lfw --decode
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from mtfap.cli.arguments import add_image_arguments, pixel_limit
from mtfap.data.dataset import SPLITS, FaceDataset


def _add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="dataset folder, table or zip, or 'synthetic'")
    parser.add_argument("--table", help="CSV/TSV label table, when PATH is an image folder or zip")
    parser.add_argument("--images", help="image folder or zip of a table (default: the table's folder)")
    parser.add_argument("--attributes", help="comma-separated attributes to keep (default: all)")
    parser.add_argument("--image-column", default="image", help="table column of image names (default: image)")
    parser.add_argument("--identity-column", default="identity",
                        help="table column of identities, used when present (default: identity)")
    parser.add_argument("--split-column", default="split",
                        help="table column of train/val/test, used when present (default: split)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("data", help="inspect and validate datasets",
                                   description=__doc__.split("\n\n", 1)[1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="data_command", metavar="{info,check}", required=True)
    info = commands.add_parser("info", help="images, splits, identities and label balance",
                               description="Print the number of images, the train/val/test sizes, "
                                           "the identities and, per attribute, the positive rate "
                                           "and the number of missing labels.")
    _add_dataset_arguments(info)
    info.set_defaults(func=run_info)
    check = commands.add_parser("check", help="validate a dataset and list every problem",
                                description="Run every validation and list all problems found. "
                                            "Exit status 0 when the data is clean, 1 otherwise.")
    _add_dataset_arguments(check)
    check.add_argument("--decode", action="store_true", help="also decode every image (slow)")
    check.add_argument("--skip-bad-images", action="store_true",
                       help="count images that cannot be decoded as warnings, not problems")
    add_image_arguments(check, skip=False)
    check.add_argument("--max-problems", type=int, default=50,
                       help="list at most this many problems (default: 50; all are counted)")
    check.set_defaults(func=run_check)


def _options(args) -> dict:
    """Keyword arguments of ``open_dataset`` from the flags (the table ones only for tables)."""
    from mtfap.data import detect_layout
    options = {"table": args.table, "images": args.images,
               "attributes": [a.strip() for a in args.attributes.split(",") if a.strip()]
               if args.attributes else None}
    if detect_layout(args.path, args.table) == "table":
        options.update(image_column=args.image_column, identity_column=args.identity_column,
                       split_column=args.split_column)
    return options


def dataset_summary(dataset: FaceDataset) -> dict:
    """Counts of images, splits and identities, and per attribute its balance and missing labels."""
    known = dataset.mask.sum(axis=0)
    positives = (dataset.labels.astype(bool) & dataset.mask).sum(axis=0)
    return {
        "name": dataset.name,
        "images": len(dataset),
        "image_source": str(dataset.source.root),
        "splits": None if dataset.split is None else
        {name: int((dataset.split == code).sum()) for name, code in SPLITS.items()},
        "identities": None if dataset.identities is None else int(len(np.unique(dataset.identities))),
        "attributes": [{"name": name, "positive_rate": float(p / k) if k else None,
                        "positives": int(p), "known": int(k), "missing": int(len(dataset) - k)}
                       for name, p, k in zip(dataset.attributes, positives, known)],
    }


def _print_summary(summary: dict, path: str) -> None:
    print(f"dataset     {summary['name']} ({path})")
    print(f"images      {summary['images']:,} from {summary['image_source']}")
    splits = summary["splits"]
    print("splits      " + (" | ".join(f"{k} {v:,}" for k, v in splits.items()) if splits
                            else "none (make one with identity_disjoint_split)"))
    identities = summary["identities"]
    print(f"identities  {identities:,}" if identities is not None else "identities  none")
    if "pairs" in summary:
        pairs = summary["pairs"]
        print(f"pairs       {pairs['pairs']:,} in {pairs['folds']} folds ({pairs['matched']:,} matched)")
    if not summary["attributes"]:
        return
    width = max(len("attribute"), *(len(a["name"]) for a in summary["attributes"]))
    print(f"\n{'attribute':<{width}}  positive     known   missing")
    for a in summary["attributes"]:
        rate = "     -" if a["positive_rate"] is None else f"{100 * a['positive_rate']:6.1f}"
        print(f"{a['name']:<{width}}  {rate} %  {a['known']:>8,}  {a['missing']:>8,}")


def run_info(args) -> int:
    from mtfap.data import detect_layout, open_dataset, read_lfw_pairs
    from mtfap.data.lfw import PAIRS_FILE
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = open_dataset(args.path, **_options(args))
    summary = dataset_summary(dataset)
    if detect_layout(args.path, args.table) == "lfw" and (Path(args.path) / PAIRS_FILE).is_file():
        pairs = read_lfw_pairs(args.path)
        summary["pairs"] = {"pairs": len(pairs), "folds": int(len(np.unique(pairs["fold"]))),
                            "matched": int(pairs["same"].sum())}
    summary["warnings"] = [str(w.message) for w in caught]
    if args.json:
        print(json.dumps({"path": args.path, **summary}, indent=2))
        return 0
    _print_summary(summary, args.path)
    for message in summary["warnings"]:
        print(f"warning: {message}", file=sys.stderr)
    return 0


def run_check(args) -> int:
    from mtfap.data import check_dataset
    with pixel_limit(args.max_pixels):
        report = check_dataset(args.path, decode=args.decode,
                               skip_bad_images=args.skip_bad_images, progress=not args.json,
                               **_options(args))
    images = report.images
    if args.json:
        problems = [{"message": p.message, "path": None if p.path is None else str(p.path),
                     "line": p.line, "hint": p.hint, "text": str(p)} for p in report.problems]
        usable = None if report.dataset is None else len(report.dataset)
        print(json.dumps({"path": args.path, "layout": report.layout, "ok": report.ok, "images": images,
                          "usable_images": usable, "problems": problems, "warnings": report.warnings},
                         indent=2))
        return 0 if report.ok else 1
    print(f"checked {args.path} ({report.layout})" + (f": {images:,} images read" if images is not None else ""))
    for message in report.warnings:
        print(f"warning: {message}")
    shown = report.problems[:max(args.max_problems, 0)]
    for problem in shown:
        print(f"problem: {problem}")
    if len(report.problems) > len(shown):
        print(f"... and {len(report.problems) - len(shown)} more problems (see --max-problems)")
    if report.ok:
        print("OK: no problems found" + (" (images decoded)" if args.decode else
                                         " (images listed, not decoded; add --decode to decode them)"))
        return 0
    print(f"FAILED: {len(report.problems)} problem{'s' if len(report.problems) != 1 else ''}")
    return 1
