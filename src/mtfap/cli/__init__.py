"""The ``mtfap`` command line. Each sub-command lives in its own module with ``add_parser``.

Every sub-command module imports its work inside ``run`` (not at the top): building the parser
imports all of them, and ``mtfap --help`` or ``mtfap search`` must not pay for torch, dlib or
scikit-learn (seconds) that another sub-command needs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from mtfap.version import __version__

# Sub-command modules, in the order ``mtfap --help`` lists them.
COMMANDS: tuple[str, ...] = ("demo", "predict", "models", "export", "card", "data", "train",
                             "features", "fit_heads", "compare", "compare_runs", "evaluate",
                             "sweep", "graph", "cam", "index", "search", "serve", "verify",
                             "verification_benchmark")


class _OneLineErrors(argparse.ArgumentParser):
    """Argument errors in one line, like every other error of the command line."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError) and exc.filename:
        text = f"{exc.filename}: {exc.strerror or exc}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrors(
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
    command = f"mtfap {args.command}"
    try:
        return int(args.func(args) or 0)
    except (DataError, ValueError, OSError) as exc:
        # Errors about the user's input or files: one clear line, no traceback.
        print(f"{command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"{command}: error: out of memory; try a smaller --batch-size or fewer images",
              file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: one line, and the traceback on request
        if os.environ.get("MTFAP_DEBUG"):
            raise
        print(f"{command}: error: internal error ({type(exc).__name__}: {_one_line(exc)}); "
              "please report it with the command; MTFAP_DEBUG=1 shows the traceback",
              file=sys.stderr)
        return 1
