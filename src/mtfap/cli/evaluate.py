"""``mtfap evaluate``: per-attribute accuracy of a run, with intervals, beside the paper.

For each attribute: accuracy and balanced accuracy on the known labels of the split, their
95 % bootstrap intervals (identities resampled where the dataset knows them, else images), the
predicted and the true positive rate; then the means over the attributes. Writes
metrics.json / .csv / .md into --out; with --compare paper the table sits beside the published
columns of the paper's Table 1 (CelebA) or Table 2 (LFWA).

RUN is a folder from `mtfap train` (predictions from the images) or from `mtfap fit-heads`
(predictions from the features file it was fitted on, or --features). Several RUNs are
evaluated as one ensemble: the mean of their predicted probabilities.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mtfap.cli.arguments import (
    add_image_arguments,
    add_overwrite_argument,
    count,
    pixel_limit,
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="per-attribute accuracy of a run with bootstrap intervals",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("run", type=Path, nargs="+",
                        help="run folder (mtfap train or mtfap fit-heads); several: their "
                             "ensemble (mean probability); with --detect also a shipped "
                             "model's name or an exported model")
    parser.add_argument("--data", help="dataset path for a train run (default: its own)")
    parser.add_argument("--features", type=Path,
                        help="features .npz for a fit-heads run (default: its own)")
    parser.add_argument("--detect", action="store_true",
                        help="the --data photos are not aligned: find, align and score the "
                             "largest face of each (as mtfap predict does); a dataset without "
                             "a split counts as all test")
    parser.add_argument("--split", choices=("train", "val", "test"), default="test")
    parser.add_argument("--thresholds", choices=("0.5", "val"), default="0.5",
                        help="decision thresholds: 0.5, or tuned per attribute on the "
                             "validation split (maximum accuracy)")
    parser.add_argument("--test-scales", type=_scales, metavar="S[,S...]",
                        help="train runs: average the logits over centre zooms of these sides "
                             "(fractions of the image, e.g. 1,0.9; with the run's flip_test "
                             "their mirrors too); choose them with --split val (default: the "
                             "image as it is)")
    parser.add_argument("--compare", choices=("none", "paper"), default="none",
                        help="paper: put the table beside the paper's published columns")
    parser.add_argument("--paper-table", choices=("celeba", "lfwa"), default="celeba",
                        help="which published table --compare paper uses (Table 1 / Table 2)")
    parser.add_argument("--bootstrap", type=count(0), default=1000,
                        help="bootstrap replicates (0: none)")
    parser.add_argument("--seed", type=count(0), default=0, help="seed of the bootstrap draws")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best",
                        help="train runs: best validation epoch or the last one")
    parser.add_argument("--weights", choices=("delivered", "raw"), default="delivered",
                        help="train runs that averaged their weights (ema_decay): the average "
                             "(delivered, default) or the raw weights of the same checkpoint")
    parser.add_argument("--batch-size", type=count(1), default=64)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (train runs)")
    parser.add_argument("--out", type=Path,
                        help="output folder (default: RUN/eval-SPLIT; for an ensemble "
                             "FIRST_RUN/eval-SPLIT-ensemble)")
    add_overwrite_argument(parser)
    add_image_arguments(parser, skip=False)
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.set_defaults(func=run)


def _scales(text: str) -> tuple[float, ...]:
    try:
        sides = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        sides = ()
    if not sides or not all(0 < side <= 1 for side in sides):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give zoom sides in (0, 1] separated by commas, e.g. 1,0.9")
    return sides


def run(args) -> int:
    with pixel_limit(args.max_pixels):
        return _evaluate(args)


def _evaluate(args) -> int:
    import numpy as np

    from mtfap.evaluation.metrics import evaluate_predictions, tune_thresholds
    from mtfap.evaluation.paper import comparison_table
    from mtfap.io import text_table, write_table
    from mtfap.model.runs import open_run
    from mtfap.outputs import prepare_output_folder

    if args.detect:
        from mtfap.applications.analyze import PhotosRun
        runs = [PhotosRun(str(path)) for path in args.run]
        default_out = Path(f"eval-{runs[0].analyzer.predictor.name}-{args.split}")
    else:
        runs = [open_run(path, args.checkpoint, weights=args.weights) for path in args.run]
        default_out = args.run[0] / f"eval-{args.split}{'-ensemble' if len(args.run) > 1 else ''}"
    out = args.out or default_out
    claim = {"overwrite": args.overwrite, "protect": [r.path for r in runs]}
    prepare_output_folder(out, "evaluate", check_only=True, **claim)
    opened = runs[0]
    for path, other in zip(args.run[1:], runs[1:]):
        if other.attributes != opened.attributes:
            raise ValueError(f"{path}: its attributes differ from those of {args.run[0]}; an "
                             "ensemble needs runs of the same attributes")
    source = dict(data=args.data, features=args.features, batch_size=args.batch_size,
                  device=args.device, progress=args.progress, scales=args.test_scales)

    def predict(split):
        """The (ensemble) scores of ``split`` with its labels, mask and identities."""
        parts = [r.predict_split(split, **source) for r in runs]
        scores, labels, mask, identities = parts[0]
        for path, (_, other_labels, other_mask, _) in zip(args.run[1:], parts[1:]):
            if not (np.array_equal(other_labels, labels) and np.array_equal(other_mask, mask)):
                raise ValueError(f"{path}: its {split} split holds other images or labels than "
                                 f"that of {args.run[0]}; an ensemble needs the same data")
        return np.mean([part[0] for part in parts], axis=0), labels, mask, identities

    scores, labels, mask, identities = predict(args.split)
    if len(scores) == 0:
        raise ValueError(f"split {args.split!r} has no images")
    thresholds = 0.5
    if args.thresholds == "val":
        val_scores, val_labels, val_mask, _ = predict("val")
        thresholds = tune_thresholds(val_scores, val_labels, val_mask)
    ensemble = len(runs) > 1
    result = evaluate_predictions(
        scores, labels, mask, opened.attributes, identities, thresholds,
        n_bootstrap=args.bootstrap, seed=args.seed,
        meta={"run": str(args.run[0]), "runs": [str(path) for path in args.run],
              "kind": opened.kind, "method": opened.method,
              "split": args.split, "thresholds": args.thresholds,
              "test_scales": list(args.test_scales or (1.0,))})
    prepare_output_folder(out, "evaluate", **claim)
    frame = result.to_frame()
    name = " + ".join(map(str, args.run))
    write_table(out / "metrics", frame, title=f"{name} on {args.split}",
                extra={**result.summary(), "meta": result.meta})
    print(text_table(frame.drop(columns=["threshold"] if args.thresholds == "0.5" else [])))
    if args.compare == "paper":
        label = f"ensemble of {len(runs)} runs" if ensemble else "this run"
        table = comparison_table({f"{label} ({opened.method})": result}, args.paper_table)
        write_table(out / "comparison", table,
                    title=f"Accuracy (%) beside the paper's {args.paper_table} table")
        print()
        print(text_table(table))
    summary = result.summary()
    low, high = summary["mean_accuracy_ci95"]
    b_low, b_high = summary["mean_balanced_accuracy_ci95"]
    plural = {"identity": "identities", "image": "images"}[summary["bootstrap_unit"]]
    if args.bootstrap:
        interval = f" [{low:.2f}, {high:.2f}]", f" [{b_low:.2f}, {b_high:.2f}]"
        unit = f" (95 % bootstrap, {summary['n_bootstrap_units']} {plural} resampled)"
    else:
        interval, unit = ("", ""), " (no bootstrap intervals: --bootstrap 0)"
    what = f"ensemble of {len(runs)} {opened.kind} runs" if ensemble else f"{opened.kind} run"
    if args.detect:
        what = f"{what} (faces found and aligned; no face in {runs[0].missed} photos, left out)"
    views = (f"views: zooms {', '.join(f'{s:g}' for s in args.test_scales or (1.0,))}"
             f"{' and their mirrors' if opened.info.get('flip_test') else ''}; "
             if opened.kind == "train" else "")
    print(f"\n{what} {name} ({opened.method}) on {args.split}: {len(scores)} images"
          f"\nmean accuracy {summary['mean_accuracy']:.2f} %{interval[0]}, "
          f"mean balanced accuracy {summary['mean_balanced_accuracy']:.2f} %{interval[1]}{unit}"
          f"\nthresholds: {'tuned on val' if args.thresholds == 'val' else '0.5'}; "
          f"{views}{int(np.sum(mask))} known labels; written to {out}/")
    return 0
