"""Errors raised for bad input data: they name the file (and line) and say how to fix it."""

from __future__ import annotations

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
