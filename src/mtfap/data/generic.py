"""Any image folder or zip plus a CSV/TSV label table: LFWA, own photos, partial labels.

The table has a header line; one column names the image (default ``image``), relative to the
folder or zip; every other column is an attribute with values 1 (present) and 0 or -1 (absent).
An empty cell (or ``NA``) is a missing label: it is masked, never read as a negative. Optional
columns: an identity (default name ``identity``, any text or number) and a split
(default name ``split``: ``train``/``val``/``test`` or ``0``/``1``/``2``)::

    image,identity,split,Smiling,Eyeglasses,Male
    alice_1.jpg,alice,train,1,0,0
    alice_2.jpg,alice,train,,0,0
    bob_1.jpg,bob,test,0,-1,1
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtfap.attributes import CELEBA_ATTRIBUTES, resolve_attributes
from mtfap.data.dataset import SPLITS, FaceDataset
from mtfap.data.images import ImageSource
from mtfap.data.tables import match_images, read_csv_table
from mtfap.errors import DataError, ProblemLog, closest_name

TABLE_SUFFIXES = (".csv", ".tsv", ".tab")
MISSING = ("", "na", "nan", "n/a")
POSITIVE, NEGATIVE = ("1", "+1", "1.0"), ("0", "-1", "0.0", "-1.0")
SPLIT_NAMES = {**SPLITS, "valid": 1, "validation": 1, **{str(code): code for code in SPLITS.values()}}
DEFAULT_IDENTITY, DEFAULT_SPLIT, DEFAULT_IMAGE = "identity", "split", "image"


def _column(header: list[str], name: str | None, default: str, table: Path, what: str) -> int | None:
    """Index of column ``name`` in the header; absent is fine only for the default name."""
    if name is None:
        return None
    if name in header:
        return header.index(name)
    if name != default:
        raise DataError(f"no {what} column {name!r}; the columns are {', '.join(header)}", table, 1,
                        hint=f"name the {what} column as it appears in the header line")
    return None


def _misspelt_headers(names: list[str], absent: dict[str, str]) -> list[str]:
    """Attribute column names that look like a misspelt CelebA attribute, or like a special
    column that was looked for and not found (``absent``: what -> expected name); a table may
    have attributes of its own, so only close calls are reported."""
    guesses = []
    for name in names:
        if name in CELEBA_ATTRIBUTES:
            continue
        special = next((f"the {what} column {wanted!r}" for what, wanted in absent.items()
                        if closest_name(name, [wanted], cutoff=0.8)), None)
        close = special or closest_name(name, CELEBA_ATTRIBUTES, cutoff=0.8)
        if close:
            guesses.append(f"{name} (did you mean {close}?)")
    return guesses


def _labels(cells: np.ndarray, attributes: list[str], lines: np.ndarray, table: Path,
            log: ProblemLog) -> tuple[np.ndarray, np.ndarray]:
    """(n, k) string cells -> uint8 labels and bool mask; bad cells are named and masked."""
    lowered = np.char.lower(cells.astype(str))
    positive, negative = np.isin(lowered, POSITIVE), np.isin(lowered, NEGATIVE)
    known = positive | negative
    bad = ~known & ~np.isin(lowered, MISSING)
    for row, col in zip(*np.nonzero(bad)):
        log.problem(DataError(f"bad label {cells[row, col]!r} in column {attributes[col]!r}; "
                              "expected 1, 0 or -1, or an empty cell for a missing label",
                              table, int(lines[row])))
    zero, minus = np.isin(lowered, ("0", "0.0")).any(), np.isin(lowered, ("-1", "-1.0")).any()
    if zero and minus:
        # Some tables use -1/1 with 0 for "unknown": reading 0 as a negative would invent labels.
        log.problem(DataError("the table uses both 0 and -1; it is ambiguous whether 0 means "
                              "'absent' or 'unknown'", table,
                              hint="write negatives as 0 (or as -1) throughout, and leave unknown "
                                   "labels empty"))
    return positive.astype(np.uint8), known


def _split(cells: np.ndarray, lines: np.ndarray, column: str, table: Path, log: ProblemLog) -> np.ndarray:
    codes = np.full(len(cells), -1, dtype=np.int8)
    for i, cell in enumerate(cells):
        code = SPLIT_NAMES.get(str(cell).strip().lower())
        if code is None:
            log.problem(DataError(f"bad split {cell!r} in column {column!r}; expected train, val "
                                  "or test (or 0, 1, 2)", table, int(lines[i])))
        else:
            codes[i] = code
    return codes


def read_table_dataset(images: str | Path, table: str | Path, identity_column: str | None = DEFAULT_IDENTITY,
                       split_column: str | None = DEFAULT_SPLIT, *, image_column: str = DEFAULT_IMAGE,
                       attributes=None, log: ProblemLog | None = None) -> FaceDataset:
    """Read images from a folder or zip with labels from a CSV/TSV table.

    Parameters
    ----------
    images : folder or ``.zip`` of the images; table names are relative to it (a zip's single
        top folder may be left out).
    table : the CSV (comma) or TSV (tab) file; see the module docstring for its columns.
    identity_column : column of person identities (default ``identity``, used when present);
        None: no identities.
    split_column : column of train/val/test (default ``split``, used when present); None: no split.
    image_column : column of image names (default ``image``).
    attributes : attribute columns to keep, in this order (default: all others).
    log : a :class:`ProblemLog`; default strict.

    Returns
    -------
    FaceDataset; ``mask`` is False where a cell was empty. Identities are numbered in sorted
    order of their values, which are kept in ``meta["identity_names"]``.
    """
    table, log = Path(table), log or ProblemLog()
    source = ImageSource(images)
    parsed = read_csv_table(table, log)
    header = [parsed.name_column, *parsed.columns]
    if header[0] != image_column:
        raise DataError(f"the first column is {header[0]!r}, expected the image column {image_column!r}",
                        table, 1, hint=f"put the image names in the first column and call it {image_column!r} "
                                       "(or pass its name as image_column / --image-column)")
    id_col = _column(header, identity_column, DEFAULT_IDENTITY, table, "identity")
    split_col = _column(header, split_column, DEFAULT_SPLIT, table, "split")
    special = {c for c in (0, id_col, split_col) if c is not None}
    attribute_names = [h for i, h in enumerate(header) if i not in special]
    absent = {what: wanted for what, wanted, col in (("identity", identity_column, id_col),
                                                     ("split", split_column, split_col))
              if wanted and col is None}
    guesses = _misspelt_headers(attribute_names, absent)
    if guesses:
        # As the CelebA reader does: a typo in a header silently makes a new attribute.
        log.warn(f"{table}:1: {len(guesses)} column names look misspelt and are read as "
                 f"attributes: {', '.join(guesses)}")
    if attributes:
        attribute_names = resolve_attributes(attributes, attribute_names)
    if not attribute_names:
        log.warn(f"{table}: no attribute columns; the dataset has images only")

    rows, keys = match_images(parsed, table, source.keys(), source.root, log)
    cells = parsed.values[rows]
    lines = parsed.lines[rows]
    labels, mask = _labels(cells[:, [header.index(a) - 1 for a in attribute_names]], attribute_names,
                           lines, table, log)
    meta = {"table": str(table), "images": str(images)}
    identities = split = None
    if id_col is not None:
        values = cells[:, id_col - 1].astype(str)
        empty = np.flatnonzero(np.char.strip(values) == "")
        for i in empty:
            log.problem(DataError(f"empty identity in column {header[id_col]!r}", table, int(lines[i]),
                                  hint="give every image its person, or drop the identity column"))
        names, identities = np.unique(values, return_inverse=True)
        meta["identity_names"] = names.tolist()
    if split_col is not None:
        split = _split(cells[:, split_col - 1], lines, header[split_col], table, log)
    return FaceDataset(name=table.stem, source=source, keys=keys, attributes=list(attribute_names),
                       labels=labels, mask=mask, identities=identities, split=split, meta=meta)
