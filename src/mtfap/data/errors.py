"""Errors raised for bad input data: they name the file (and line) and say how to fix it."""

from __future__ import annotations

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
