"""``mtfap card``: measure a model's card: accuracy per attribute on CelebA's test split with
95 % intervals over identities, calibration (expected calibration error, reliability diagram)
and, with --fairface, how it does by race, gender and age group on FairFace.

With --save the figures go into the model's own model.json (``card``), which ``mtfap models``
shows and the tests check against.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "card", help="measure a model's card (accuracy, calibration, groups)",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("model", help="a shipped model's name, an exported model or a run")
    parser.add_argument("--data", required=True, help="CelebA (or images framed like the "
                                                      "model's training images, with a split)")
    parser.add_argument("--fairface", help="FairFace's folder, for the group tables")
    parser.add_argument("--fairface-part", choices=("all", "test"), default="all",
                        help="which FairFace photos: all, or the held-out half (test) of "
                             "mtfap.data.fairface.fairface_halves, for a model trained on the "
                             "other half")
    parser.add_argument("--out", type=Path, required=True, help="folder for the card's files")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--save", action="store_true",
                        help="also store the summary in the exported model's model.json")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.set_defaults(func=run)


def run(args) -> int:
    from mtfap.experiments.card import measure_card
    from mtfap.model import load_model

    if args.bootstrap < 0:
        raise ValueError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    predictor = load_model(args.model)
    card = measure_card(predictor, args.data, args.out, fairface=args.fairface,
                        fairface_part=args.fairface_part, n_bootstrap=args.bootstrap,
                        progress=args.progress)
    if args.save:
        from mtfap.model.store import save_card
        save_card(predictor.source, card)
    print(f"{predictor.name}: CelebA test mean accuracy {card['test_mean_accuracy']:.2f} % "
          f"{card['test_mean_accuracy_ci95']}, ECE {100 * card['ece']:.2f} %; card in {args.out}")
    return 0
