"""``mtfap fit-heads``: fit a head method on frozen features (from ``mtfap features``).

Fits on the training split, reports the mean accuracy over attributes (and the balanced
accuracy) on validation and test with identity-cluster bootstrap intervals, and writes to
``--out``: ``heads.npz`` + ``heads.json`` (the fitted heads, no pickle) and ``metrics.json``.
``heads.json`` records the features file by absolute path and content fingerprint, so that
``mtfap evaluate`` scores that file and no other.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mtfap.cli.arguments import add_overwrite_argument, count
from mtfap.heads.registry import METHODS


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "fit-heads", help="fit structured heads on frozen features in seconds",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("features", type=Path, help="features .npz written by `mtfap features`")
    parser.add_argument("--method", choices=list(METHODS), default="lowrank_sparse",
                        help="independent (eq. 1), lowrank_sparse (eq. 3) or graph (eq. 6-14)")
    parser.add_argument("--solver", choices=("proximal", "paper"),
                        help="lowrank_sparse only (None: the estimator's default, proximal)")
    parser.add_argument("--groups", help="lowrank_sparse only: task grouping preset (paper, "
                                         "regions) or a JSON/YAML file (None: paper)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="an estimator parameter, e.g. --param lam=0.01 --param gamma=1 "
                             "(repeatable)")
    parser.add_argument("--attributes", help="comma-separated attributes to fit (None: all)")
    parser.add_argument("--tune-thresholds", action="store_true",
                        help="pick each attribute's decision threshold on validation (default 0.5)")
    parser.add_argument("--bootstrap", type=count(0), default=1000,
                        help="bootstrap replicates for the 95 %% intervals (0: none)")
    parser.add_argument("--seed", type=count(0), default=0, help="seed of the bootstrap draws")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    add_overwrite_argument(parser)
    parser.set_defaults(func=run)


def _parse_params(args) -> dict:
    from mtfap.heads.params import read_value
    params = {}
    for text in args.param:
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--param {text!r}: expected KEY=VALUE, for example --param lam=0.01")
        params[key.strip()] = read_value(raw)
    for name in ("solver", "groups"):
        if getattr(args, name) is not None:
            if args.method != "lowrank_sparse":
                raise ValueError(f"--{name} applies to --method lowrank_sparse only")
            params[name] = getattr(args, name)
    return params


def run(args) -> int:
    from dataclasses import replace

    import numpy as np

    from mtfap.data.features import FeatureSet, file_fingerprint
    from mtfap.errors import DataError
    from mtfap.evaluation.metrics import evaluate_predictions, tune_thresholds
    from mtfap.heads.persistence import save_fitted_heads
    from mtfap.heads.registry import make_head_estimator
    from mtfap.io import write_json
    from mtfap.outputs import prepare_output_folder

    prepare_output_folder(args.out, "heads", overwrite=args.overwrite, check_only=True)
    features = FeatureSet.load(args.features)
    fingerprint = file_fingerprint(args.features)
    if args.attributes:
        from mtfap.attributes import resolve_attributes
        names = resolve_attributes([a.strip() for a in args.attributes.split(",")],
                                   features.attributes)
        columns = [features.attributes.index(a) for a in names]
        features = replace(features, labels=features.labels[:, columns],
                           mask=features.mask[:, columns], attributes=names)
    estimator = make_head_estimator(args.method, _parse_params(args), features.attributes)
    if features.split is None or not (features.split == 0).any():
        raise DataError("the features have no training split", args.features,
                        hint="fit-heads fits on the train rows; extract features of a dataset "
                             "with a train/val/test split")
    train = features.get_split("train")
    started = time.perf_counter()
    estimator.fit(train.X, train.labels, train.mask)
    fit_seconds = time.perf_counter() - started

    thresholds, report = 0.5, {}
    if args.tune_thresholds:
        val = features.get_split("val")
        thresholds = tune_thresholds(estimator.predict_proba(val.X), val.labels, val.mask)
    for split in ("val", "test"):
        part = features.get_split(split)
        if len(part) == 0:
            continue
        result = evaluate_predictions(estimator.predict_proba(part.X), part.labels, part.mask,
                                      features.attributes, part.identities, thresholds,
                                      n_bootstrap=args.bootstrap, seed=args.seed)
        report[split] = result.to_dict()
        summary = result.summary()
        ci = summary["mean_accuracy_ci95"]
        print(f"{split:>5}: mean accuracy {summary['mean_accuracy']:.2f} % "
              f"[{ci[0]:.2f}, {ci[1]:.2f}], balanced {summary['mean_balanced_accuracy']:.2f} % "
              f"({len(part)} images)")
    meta = {"features": str(args.features.resolve()), "features_fingerprint": fingerprint,
            "features_meta": features.meta,
            "fit_seconds": round(fit_seconds, 3), "n_train": len(train),
            "thresholds": np.broadcast_to(thresholds, (len(features.attributes),)).tolist()}
    prepare_output_folder(args.out, "heads", overwrite=args.overwrite)
    save_fitted_heads(estimator, args.method, args.out, meta)
    write_json(args.out / "metrics.json", {"method": args.method, **meta, **report})
    print(json.dumps({"method": args.method, "fit_seconds": round(fit_seconds, 2),
                      "out": str(args.out)}))
    return 0
