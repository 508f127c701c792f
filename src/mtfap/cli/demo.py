"""``mtfap demo``: what mtfap does, on a few photos that ship with it.

Runs ``mtfap predict`` on the demo photos inside the package (FairFace photos, CC BY 4.0, see
their CREDITS.md; one of them a group of three faces): prints the attributes found on every
face, and writes each photo with its faces boxed and labelled, a map of where the model looks
for ``--cam`` attributes, and all predictions as JSON into --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def demo_photos() -> list[Path]:
    from importlib import resources
    folder = Path(str(resources.files("mtfap").joinpath("resources/demo")))
    return sorted(folder.glob("*.jpg"))


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="predict on the demo photos that ship with mtfap (start here)",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("mtfap-demo"),
                        help="folder for the annotated photos, maps and predictions.json")
    parser.add_argument("--model", default=None, help="model (default: the default shipped one)")
    parser.add_argument("--cam", nargs="*", default=["Smiling", "Eyeglasses"], metavar="ATTR",
                        help="attributes to map over each face")
    parser.set_defaults(func=run)


def run(args) -> int:
    from mtfap.cli import main

    photos = [str(p) for p in demo_photos()]
    if not photos:
        raise ValueError("no demo photos in this installation (mtfap/resources/demo)")
    status = main(["predict", *photos, "--annotate", str(args.out), "--format", "json",
                   "--out", str(args.out / "predictions.json"),
                   *(["--model", args.model] if args.model else []),
                   *(["--cam", *args.cam] if args.cam else [])])
    if status == 0:
        print(f"\nannotated photos and maps: {args.out}/ (open *.annotated.jpg); every "
              f"probability: {args.out / 'predictions.json'}")
    return status
