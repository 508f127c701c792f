"""The ``mtfap`` command line. Each sub-command lives in its own module with ``add_parser``."""

from __future__ import annotations

import argparse
import importlib
import sys

from mtfap.version import __version__

# Sub-command modules, in the order ``mtfap --help`` lists them.
COMMANDS: tuple[str, ...] = ("predict", "models", "export", "card", "data", "train", "features", "fit_heads", "compare",
                             "evaluate", "sweep", "graph", "cam")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtfap",
        description="Multi-task facial attribute prediction (MTFAP): structured heads that share "
                    "knowledge between 40 face attributes.",
    )
    parser.add_argument("--version", action="version", version=f"mtfap {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"mtfap.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from mtfap.errors import DataError
    try:
        return int(args.func(args) or 0)
    except (DataError, FileNotFoundError, ValueError) as exc:
        # Errors about the user's input: one clear line, no traceback.
        print(f"mtfap {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
