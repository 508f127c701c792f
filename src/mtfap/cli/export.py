"""``mtfap export``: turn a run into a model that ``mtfap predict --model DIR`` (or the
package, under resources/models) can load.

The alignment template (where the eyes and nose of a face lie in the model's input) is measured
on the run's own training images with dlib's 5-point landmarks, so that photos are aligned into
the framing the model was trained on. The weights are stored as safetensors with their SHA-256.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="turn a run into a loadable model (template, thresholds, weights)",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("run", type=Path, help="run folder (mtfap train or mtfap fit-heads)")
    parser.add_argument("--out", type=Path, required=True, help="the model's folder")
    parser.add_argument("--name", required=True, help="the model's name")
    parser.add_argument("--version", default="1", help="the model's version")
    parser.add_argument("--description", default="", help="one line on what the model is")
    parser.add_argument("--data", help="the training dataset (default: the run's)")
    parser.add_argument("--template-images", type=int, default=2000,
                        help="training images the alignment template is measured on")
    parser.add_argument("--test-scales", default="1",
                        help="test-time zooms (sides, e.g. 1,0.85), each with its mirror when "
                             "the run used flip_test")
    parser.add_argument("--thresholds", choices=("0.5", "val"), default="0.5",
                        help="decision thresholds: 0.5, or tuned per attribute on validation")
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    parser.add_argument("--backbone-weights", choices=("file", "package"), default="file",
                        help="package: store only the heads (a frozen packaged backbone)")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.set_defaults(func=run)


def run(args) -> int:
    import torch

    from mtfap.applications.export import export_run

    if args.template_images < 1:
        raise ValueError(f"--template-images must be >= 1, got {args.template_images}")
    try:
        scales = [float(s) for s in args.test_scales.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--test-scales {args.test_scales!r}: give sides such as 1,0.85") from None
    folder = export_run(args.run, args.out, name=args.name, version=args.version, data=args.data,
                        template_images=args.template_images, test_scales=scales,
                        thresholds=args.thresholds, dtype=getattr(torch, args.dtype),
                        backbone_weights=args.backbone_weights, description=args.description,
                        progress=args.progress)
    print(f"exported {args.run} as {args.name} {args.version} into {folder}")
    return 0
