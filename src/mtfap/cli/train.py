"""``mtfap train``: train the CNN and the structured heads end to end.

Settings come, in increasing priority, from the defaults of ``TrainConfig``, a config file
(``--config run.toml`` or ``.yaml``), the explicit flags and ``--set key=value`` overrides. The
resolved config is saved as ``config.json`` beside the checkpoints. Under ``torchrun`` the same
command trains on several processes (see ``mtfap.training.distributed``).
"""

from __future__ import annotations

import argparse
import math
import sys
import typing
from dataclasses import fields
from pathlib import Path
from typing import Literal

from mtfap.cli.arguments import add_image_arguments, add_overwrite_argument, pixel_limit
from mtfap.training.config import TrainConfig

# (flag, config key, argparse type, help); every flag maps to exactly one config key.
_FLAGS = (
    ("--data", "data", str, "dataset path (CelebA folder, LFW folder, image list + table, ...)"),
    ("--attributes", "attributes", str, "comma-separated attributes to learn"),
    ("--backbone", "backbone", str, "backbone name (compact, dlib_face_resnet, ...)"),
    ("--heads", "heads", str, "head method: independent (eq. 1), lowrank_sparse (eq. 3), "
                              "graph (eq. 6-14)"),
    ("--optimizer", "optimizer", str, "optimiser of backbone and heads"),
    ("--lr", "lr", float, "peak learning rate"),
    ("--momentum", "momentum", float, "SGD momentum"),
    ("--weight-decay", "weight_decay", float, "weight decay of the backbone"),
    ("--head-lr-scale", "head_lr_scale", float, "the heads learn at this multiple of --lr"),
    ("--schedule", "schedule", str, "learning-rate schedule"),
    ("--warmup-epochs", "warmup_epochs", float, "linear warm-up length in epochs"),
    ("--epochs", "epochs", int, "number of epochs"),
    ("--batch-size", "batch_size", int, "global batch size (split over processes)"),
    ("--freeze-backbone-epochs", "freeze_backbone_epochs", int,
     "train only the heads for this many first epochs"),
    ("--max-steps", "max_steps", int, "stop after this many optimiser steps"),
    ("--time-budget", "time_budget_minutes", float,
     "stop after this many minutes of wall time; the schedule follows the budget"),
    ("--seed", "seed", int, "random seed"),
    ("--device", "device", str, "auto: the GPU when there is one"),
    ("--amp", "amp", str, "auto: bf16 autocast where it is fast (GPUs, CPUs with AMX)"),
    ("--output-dir", "output_dir", str, "run folder: config.json, metrics, checkpoints"),
    ("--num-workers", "num_workers", int, "DataLoader worker processes"),
    ("--cache-dir", "cache_dir", str, "decoded-image cache folder"),
)
_HINTS = typing.get_type_hints(TrainConfig)
_DEFAULTS = {f.name: f.default for f in fields(TrainConfig) if f.default is not f.default_factory}


# How the help shows defaults that are None.
_NONE_MEANS = {"attributes": "all", "cache_dir": "$MTFAP_CACHE or ~/.cache/mtfap",
               "max_steps": "all epochs", "data": "none",
               "time_budget_minutes": "epochs only"}


def _default(key: str) -> str:
    value = _DEFAULTS.get(key)
    return _NONE_MEANS.get(key, "none") if value in (None, "") else str(value)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train backbone and heads end to end",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="TOML or YAML file of config keys")
    for flag, key, kind, text in _FLAGS:
        literal = typing.get_origin(_HINTS[key]) is Literal
        choices = typing.get_args(_HINTS[key]) if literal else None
        parser.add_argument(flag, dest=key, type=kind, default=argparse.SUPPRESS, choices=choices,
                            help=f"{text} (default: {_default(key)})")
    parser.add_argument("--pretrained", nargs="?", const=True, default=argparse.SUPPRESS,
                        metavar="WEIGHTS",
                        help="start the backbone from the weights shipped in an installed "
                             "package, or from a local weights file (default: random init)")
    parser.add_argument("--flip-test", dest="flip_test", action="store_true",
                        default=argparse.SUPPRESS,
                        help="evaluate on the mean logits of each image and its mirror")
    parser.add_argument("--skip-bad-images", dest="skip_bad_images", action="store_true",
                        default=argparse.SUPPRESS,
                        help="leave out, with a warning, the images that cannot be decoded "
                             "(corrupt, truncated, too large) instead of stopping")
    add_image_arguments(parser, skip=False)
    parser.add_argument("--param", dest="heads_param", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="a head hyper-parameter, e.g. --param lam=0.01 "
                             "--param solver=proximal (repeatable)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="any config key, e.g. --set step_gamma=0.5 (repeatable, applied last)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --output-dir from its last.pt (its config.json "
                             "is the base config when --config is not given)")
    add_overwrite_argument(parser, "--output-dir")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        default=argparse.SUPPRESS, help="no progress bars")
    parser.set_defaults(func=run)


def resolve_config(args) -> TrainConfig:
    """Defaults < config file (or the run's config.json on --resume) < flags < --param < --set."""
    from mtfap.training.config import load_config, parse_override, read_config_file
    flags = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    base_file = args.config
    if base_file is None and args.resume:
        saved = Path(flags.get("output_dir", _DEFAULTS["output_dir"])) / "config.json"
        base_file = saved if saved.is_file() else None
    table = read_config_file(base_file) if base_file is not None else {}
    heads_params = [parse_override(text, table="heads_params") for text in args.heads_param]
    overrides = [parse_override(text) for text in args.overrides]
    return load_config(None, [*table.items(), *flags.items(), *heads_params, *overrides],
                       source=base_file)


def run(args) -> int:
    from mtfap.training.trainer import TrainingError, train
    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in --output-dir and --overwrite replaces "
                         "it: give one of them")
    config = resolve_config(args)
    if not config.data:
        raise ValueError("no dataset: give --data PATH (or `data` in the --config file)")
    try:
        with pixel_limit(args.max_pixels):
            result = train(config, resume=args.resume, overwrite=args.overwrite)
    except TrainingError as exc:
        print(f"mtfap train: error: {exc}", file=sys.stderr)
        return 1
    if result.best is not None and result.is_main:
        accuracy = result.best["val_mean_accuracy"]
        shown = "n/a" if math.isnan(accuracy) else f"{100 * accuracy:.2f} %"
        print(f"best epoch {result.best['epoch']}: validation mean accuracy {shown}; "
              f"{result.steps} steps; run folder {result.output_dir}")
    return 0
