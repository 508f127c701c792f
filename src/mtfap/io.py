"""Writing results: files replaced atomically, JSON, CSV and Markdown tables, figures; and
reading the plain ``.npz`` files the project writes, without pickle.

Everything the project writes goes through :func:`atomic_write`: a temporary file beside the
target, renamed over it when complete, so a reader (or the next run after a kill) never sees a
half-written file.
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from mtfap.errors import DataError

TMP_MARK = ".tmp"  # every temporary file of atomic_write ends so: stale_temporaries finds them
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | Path, write) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then ``os.replace`` it over
    ``path``: a reader never sees a half-written file, even if the process dies mid-write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_MARK)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def stale_temporaries(folder: str | Path) -> list[Path]:
    """The temporary files that a killed :func:`atomic_write` left in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.name.startswith(".") and p.name.endswith(TMP_MARK))


def remove_stale_temporaries(folder: str | Path) -> int:
    """Delete what :func:`stale_temporaries` finds; returns how many were removed."""
    found = stale_temporaries(folder)
    for path in found:
        path.unlink(missing_ok=True)
    return len(found)


def jsonable(value):
    """numpy scalars/arrays, paths and NaN -> plain JSON values (NaN becomes null)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(jsonable(obj), indent=2) + "\n")


def write_csv(path: str | Path, frame) -> Path:
    return atomic_write_text(path, frame.to_csv(float_format="%.4f"))


def markdown_table(frame, digits: int = 2) -> str:
    """A GitHub Markdown table of the DataFrame ``frame`` (index as the first column); NaN
    shows as '-'."""
    import pandas as pd  # here, not at the top: pandas costs half a second of every start-up

    def cell(value):
        if isinstance(value, (float, np.floating)):
            return "-" if math.isnan(value) else f"{value:.{digits}f}"
        return str(value).replace("|", "\\|")
    header = [frame.index.name or ""] + [str(c) for c in frame.columns]
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]
    rule = ["---"] + ["---:" if is_num else "---" for is_num in numeric]
    rows = [[cell(i)] + [cell(v) for v in row] for i, row in zip(frame.index, frame.to_numpy())]
    return "\n".join("| " + " | ".join(r) + " |" for r in [header, rule, *rows]) + "\n"


def text_table(frame, digits: int = 2) -> str:
    """A plain aligned text table for the terminal; NaN shows as '-'."""
    formatted = frame.apply(lambda col: col.map(
        lambda v: "-" if isinstance(v, (float, np.floating)) and math.isnan(v)
        else (f"{v:.{digits}f}" if isinstance(v, (float, np.floating)) else str(v))))
    return formatted.to_string()


def write_table(stem: str | Path, frame, digits: int = 2, title: str | None = None,
                extra: dict | None = None) -> dict[str, Path]:
    """Write ``frame`` as ``stem.csv``, ``stem.md`` and ``stem.json`` (with ``extra`` merged in).

    Returns the paths by format.
    """
    stem = Path(stem)
    markdown = (f"## {title}\n\n" if title else "") + markdown_table(frame, digits)
    records = {str(i): {str(c): v for c, v in row.items()} for i, row in frame.iterrows()}
    return {
        "csv": write_csv(stem.with_suffix(".csv"), frame),
        "md": atomic_write_text(stem.with_suffix(".md"), markdown),
        "json": write_json(stem.with_suffix(".json"), {**(extra or {}), "table": records}),
    }


def save_figure(fig, path: str | Path, svg: bool = False, dpi: int = 150) -> list[Path]:
    """Save a matplotlib figure as PNG (and SVG beside it when ``svg``), atomically; close it.

    Returns the written paths.
    """
    import matplotlib.pyplot as plt

    path = Path(path).with_suffix(".png")
    targets = [(path, "png")] + ([(path.with_suffix(".svg"), "svg")] if svg else [])
    written = [atomic_write(target, lambda tmp, fmt=fmt: fig.savefig(
        tmp, format=fmt, dpi=dpi, bbox_inches="tight")) for target, fmt in targets]
    plt.close(fig)
    return written


# What numpy raises on a damaged .npz: a broken zip (BadZipFile, zlib.error, EOFError,
# struct.error), a bad array header or an array that needs pickle (ValueError), a read error.
_NPZ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, struct.error, ValueError, OSError,
               KeyError, RuntimeError, NotImplementedError)


def write_npz(path: str | Path, arrays: dict) -> Path:
    """``arrays`` as an uncompressed ``.npz`` at ``path``, atomically (:func:`atomic_write`)."""
    def write(tmp):
        with open(tmp, "wb") as handle:  # a file object: np.savez would append .npz to a name
            np.savez(handle, **arrays)
    return atomic_write(path, write)


def read_npz(path: Path, what: str, hint: str) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path``, read without pickle; a damaged or foreign file
    raises DataError naming it as ``what``."""
    try:
        stored = np.load(path, allow_pickle=False)
        arrays = None
        if isinstance(stored, np.lib.npyio.NpzFile):  # else a bare .npy array
            with stored:
                arrays = {name: stored[name] for name in stored.files}
    except _NPZ_ERRORS as exc:
        raise DataError(f"cannot read the {what} ({_npz_reason(exc)})", path, hint=hint) from None
    if arrays is None:
        raise DataError(f"not a {what}: an .npy array, not an .npz archive", path, hint=hint)
    return arrays


def _npz_reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if "pickle" in text:
        return "it holds Python objects that only pickle can read, and mtfap never unpickles"
    return f"damaged, truncated or not an .npz archive: {text}"

