"""Errors about the user's input, and the one "did you mean" hint every part uses.

Every message names what is wrong (the file and line, or the argument) and how to fix it; the
command line prints it in one line (``mtfap CMD: error: ...``) and exits with status 2.
"""

from __future__ import annotations

import difflib
import warnings
from pathlib import Path


class DataError(ValueError):
    """A problem with a user's data file.

    ``str(err)`` reads ``path:line: message (hint)``, like a compiler error.
    """

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None,
                 hint: str | None = None):
        self.message, self.path, self.line, self.hint = message, path, line, hint
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        text = where + message
        if hint:
            text += f" ({hint})"
        super().__init__(text)


class ProblemLog:
    """Where readers send the problems they find in a user's data.

    A strict log (the default) raises the first problem, which is what reading a dataset needs.
    A collecting log (``strict=False``) keeps every problem so that ``mtfap data check`` can list
    all of them at once; readers then carry on with the rows that are fine.
    Warnings (data that is odd but usable) go to ``warnings.warn`` in strict mode and into
    ``warnings`` otherwise.
    """

    def __init__(self, strict: bool = True):
        self.strict = strict
        self.problems: list[DataError] = []
        self.warnings: list[str] = []

    def problem(self, error: DataError) -> None:
        if self.strict:
            raise error
        self.problems.append(error)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        if self.strict:
            warnings.warn(message, stacklevel=3)


def closest_name(name: str, choices, cutoff: float = 0.5) -> str | None:
    """The closest of ``choices`` to ``name`` (case-insensitive, similarity at least
    ``cutoff``), or None.

    >>> closest_name("smilng", ["Smiling", "Male"])
    'Smiling'
    """
    lowered = {str(c).lower(): c for c in choices}
    match = difflib.get_close_matches(str(name).lower(), list(lowered), n=1, cutoff=cutoff)
    return lowered[match[0]] if match else None


def did_you_mean(name: str, choices) -> str:
    """`` Did you mean 'x'?`` for the closest of ``choices`` to ``name``, or an empty string.

    >>> did_you_mean("graf", ["graph", "independent"])
    " Did you mean 'graph'?"
    """
    hint = closest_name(name, choices)
    return f" Did you mean {hint!r}?" if hint else ""


def unknown_name_error(kind: str, name: str, choices) -> ValueError:
    """``ValueError("unknown KIND 'name'. Did you mean ...? Known KINDs: a, b, c")``."""
    choices = [str(c) for c in choices]
    return ValueError(f"unknown {kind} {name!r}.{did_you_mean(name, choices)} "
                      f"Known {kind}s: {', '.join(choices)}")
