"""``mtfap models``: the models that ship inside the package, with their test accuracy.

Each is loaded by name (``mtfap predict --model NAME``, ``mtfap.load_model(NAME)``); its card
(training data and licence, per-attribute accuracy, calibration, groups) is docs/MODELS.md.
"""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "models", help="list the models shipped inside the package",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def run(args) -> int:
    from mtfap.model.shipped import describe_shipped
    rows = describe_shipped()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("no models ship with this installation")
        return 1
    for row in rows:
        card = row["card"]
        accuracy = card.get("test_mean_accuracy")
        shown = f"{accuracy:.2f} %" if accuracy is not None else "n/a"
        size = (f"{row['size_mb']:.1f} MB" if row["size_mb"] >= 1
                else f"{1024 * row['size_mb']:.0f} kB")
        fairface = card.get("fairface", {})
        male = fairface.get("all", {}).get("male_accuracy")
        groups = "" if male is None else (
            f", FairFace Male {100 * male:.1f} % of faces found"
            + (" (held-out half)" if fairface.get("part") == "test" else ""))
        print(f"{row['name']}{' (default)' if row['default'] else ''}  version {row['version']}"
              f"  {size}  CelebA test mean accuracy {shown}{groups}")
        print(f"    {row['description']}")
    return 0
