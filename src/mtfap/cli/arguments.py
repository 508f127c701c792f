"""Arguments that several sub-commands share, declared once: counts, ``--overwrite``,
``--skip-bad-images`` and ``--max-pixels``."""

from __future__ import annotations

import argparse
import contextlib
import os


def count(minimum: int):
    """An argparse type: a whole number >= ``minimum`` (argparse names the flag on error)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    parse.__name__ = f"whole number >= {minimum}"
    return parse


def add_overwrite_argument(parser: argparse.ArgumentParser, what: str = "--out") -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace the run already in {what} (its files are removed first); "
                             "without it such a folder is refused")


def add_image_arguments(parser: argparse.ArgumentParser, skip: bool = True) -> None:
    """``--max-pixels`` and (with ``skip``) ``--skip-bad-images``, for commands that decode
    images."""
    if skip:
        parser.add_argument("--skip-bad-images", action="store_true",
                            help="leave out, with a warning, the images that cannot be decoded "
                                 "(corrupt, truncated, too large) instead of stopping")
    parser.add_argument("--max-pixels", type=count(1), default=None, metavar="N",
                        help="largest image (width x height) to decode; larger ones are bad "
                             "images (default: $MTFAP_MAX_PIXELS or 64,000,000)")


@contextlib.contextmanager
def pixel_limit(max_pixels: int | None):
    """Apply ``--max-pixels`` to everything the command decodes, DataLoader workers included
    (they inherit the environment), and restore the environment afterwards."""
    from mtfap.data.decode import MAX_PIXELS_ENV
    if max_pixels is None:
        yield
        return
    before = os.environ.get(MAX_PIXELS_ENV)
    os.environ[MAX_PIXELS_ENV] = str(max_pixels)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(MAX_PIXELS_ENV, None)
        else:
            os.environ[MAX_PIXELS_ENV] = before
