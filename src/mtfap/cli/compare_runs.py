"""``mtfap compare-runs``: trained runs of several head methods, paired on the same images.

Give each method its runs in seed order, METHOD=RUN[,RUN...]; run i of every method is paired
with run i of the baseline (the first method, or --baseline). For each method: mean accuracy
per seed, the seed-to-seed spread, and the difference to the baseline for each seed pair with
a 95 % identity-bootstrap interval computed on the same resampled images for both runs; the
attributes that gain and lose most. --focus names attributes with a mean of their own (with
--scarce, the rarest attributes of the scarce-label setting, computed from the runs' data).
Writes runs_comparison.json / .md and per_attribute.csv into --out; scores are cached in
--out/scores, so a second report costs seconds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mtfap.cli.arguments import add_overwrite_argument, count


def _method_runs(text: str) -> tuple[str, list[Path]]:
    name, sep, paths = text.partition("=")
    runs = [Path(p) for p in paths.split(",") if p.strip()]
    if not sep or not name.strip() or not runs:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give METHOD=RUN[,RUN...], e.g. independent=runs/ind_s0,runs/ind_s1")
    return name.strip(), runs


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare-runs", help="paired comparison of trained runs (methods x seeds) on one split",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("methods", type=_method_runs, nargs="+", metavar="METHOD=RUN[,RUN...]",
                        help="a method's name and its run folders in seed order")
    parser.add_argument("--baseline", help="method the others are compared with (default: "
                                           "the first)")
    parser.add_argument("--split", choices=("train", "val", "test"), default="test")
    parser.add_argument("--data", help="dataset path (default: the one each run was trained on)")
    parser.add_argument("--focus", help="comma-separated attributes with a mean of their own")
    parser.add_argument("--scarce", type=count(1), metavar="COUNT",
                        help="focus on the COUNT rarest attributes of the train split (the "
                             "scarce-label setting's choice)")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best")
    parser.add_argument("--bootstrap", type=count(0), default=1000,
                        help="bootstrap replicates (0: none)")
    parser.add_argument("--seed", type=count(0), default=0, help="seed of the bootstrap draws")
    parser.add_argument("--title", default="Paired comparison of trained runs")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    add_overwrite_argument(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from mtfap.data.layout import open_dataset
    from mtfap.data.splits import least_frequent_attributes
    from mtfap.experiments.runs_comparison import (
        compare_runs,
        markdown_report,
        report_tables,
        run_scores,
    )
    from mtfap.io import atomic_write_text, text_table, write_csv, write_json
    from mtfap.outputs import prepare_output_folder

    methods = dict(args.methods)
    if len(methods) != len(args.methods):
        raise ValueError("a METHOD is named twice; give each method once with all its runs")
    baseline = args.baseline or args.methods[0][0]
    if baseline not in methods:
        raise ValueError(f"--baseline {baseline!r} is not one of the methods {sorted(methods)}")
    for name, runs in methods.items():
        for path in runs:
            if not path.is_dir():
                raise FileNotFoundError(f"{path} (method {name}): no such run folder")
    every_run = [p for runs in methods.values() for p in runs]
    prepare_output_folder(args.out, "compare-runs", overwrite=args.overwrite, protect=every_run)
    scored = {name: [run_scores(p, args.split, data=args.data, checkpoint=args.checkpoint,
                                cache=args.out / "scores", progress=args.progress)
                     for p in runs] for name, runs in methods.items()}
    focus = [a.strip() for a in args.focus.split(",") if a.strip()] if args.focus else []
    if args.scarce:
        from mtfap.model.runs import open_run
        data = args.data or open_run(every_run[0], args.checkpoint).info.get("data")
        attributes = next(iter(scored.values()))[0].attributes
        dataset = open_dataset(data).select_attributes(attributes)
        focus += [a for a in least_frequent_attributes(dataset, args.scarce, split="train")
                  if a not in focus]
    report = compare_runs(scored, baseline, focus=focus, n_bootstrap=args.bootstrap,
                          seed=args.seed)
    tables = report_tables(report)
    write_json(args.out / "runs_comparison.json", report)
    atomic_write_text(args.out / "runs_comparison.md", markdown_report(report, args.title))
    write_csv(args.out / "per_attribute.csv", tables["attributes"])
    print(text_table(tables["methods"]))
    for method, diff in report["differences"].items():
        print(f"{method} - {baseline}: {diff['mean_difference']:+.2f} points "
              f"(favoured in every seed pair: {diff['all_pairs_favour']})")
    print(f"written to {args.out}/ (runs_comparison.json, runs_comparison.md, per_attribute.csv)")
    return 0
