"""CelebA in its official layout, read in place (folder or zip, never unpacked).

Files (next to each other, or in the ``Anno/``, ``Eval/`` and ``Img/`` folders of the official
download):

- ``img_align_celeba/`` or ``img_align_celeba.zip``: the aligned images ``NNNNNN.jpg``;
- ``list_attr_celeba.txt``: line 1 the number of rows, line 2 the attribute names, then
  ``NNNNNN.jpg`` and one value per attribute, -1 (absent) or 1 (present);
- ``list_eval_partition.txt``: ``NNNNNN.jpg 0|1|2`` (train/val/test), optional;
- ``identity_CelebA.txt``: ``NNNNNN.jpg IDENTITY``, optional.

Image keys are the member paths, e.g. ``img_align_celeba/000001.jpg``, whether the images come
from the folder or the zip, so caches and predictions do not depend on which one was used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtfap.attributes import CELEBA_ATTRIBUTES, resolve_attributes
from mtfap.data.dataset import FaceDataset
from mtfap.data.images import ImageSource
from mtfap.data.tables import Table, match_images, read_whitespace_table
from mtfap.errors import DataError, ProblemLog, closest_name

ATTRIBUTE_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IDENTITY_FILE = "identity_CelebA.txt"
IMAGE_FOLDER = "img_align_celeba"
# The official download keeps the files in these sub-folders; copies often have them flat.
_SUBFOLDERS = ("", "Anno", "Eval", "Img")


def find_celeba_file(root: str | Path, name: str) -> Path | None:
    """``root/name`` or ``root/{Anno,Eval,Img}/name``, whichever exists, else None."""
    for sub in _SUBFOLDERS:
        path = Path(root) / sub / name
        if path.exists():
            return path
    return None


def is_celeba_root(path: str | Path) -> bool:
    """True when ``path`` is a folder holding CelebA's attribute file."""
    return Path(path).is_dir() and find_celeba_file(path, ATTRIBUTE_FILE) is not None


def celeba_images(root: str | Path) -> tuple[ImageSource, list[str]]:
    """The image source (the ``img_align_celeba`` folder if present, else the zip) and its keys."""
    folder = find_celeba_file(root, IMAGE_FOLDER)
    if folder is not None and folder.is_dir():
        source = ImageSource(folder.parent)
        return source, source.keys(under=IMAGE_FOLDER)
    archive = find_celeba_file(root, IMAGE_FOLDER + ".zip")
    if archive is None:
        raise DataError(f"no {IMAGE_FOLDER}/ folder or {IMAGE_FOLDER}.zip found", root,
                        hint="put the aligned CelebA images next to list_attr_celeba.txt "
                             "(the zip can stay packed)")
    source = ImageSource(archive)
    # The official zip holds img_align_celeba/NNNNNN.jpg; a home-made one may hold the files at
    # its top level, next to other folders or not.
    return source, source.keys(under=IMAGE_FOLDER) or source.keys()


def read_celeba_attributes(path: str | Path, log: ProblemLog | None = None) -> Table:
    """Parse ``list_attr_celeba.txt``; values stay -1/1 (see :func:`read_celeba` for 0/1)."""
    path, log = Path(path), log or ProblemLog()
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        count_line, names_line = handle.readline(), handle.readline()
    try:
        count = int(count_line.strip())
    except ValueError:
        raise DataError(f"line 1 should be the number of images, found {count_line.strip()[:40]!r}",
                        path, 1, hint="CelebA's attribute file starts with the row count, then "
                                      "a line of attribute names") from None
    names = names_line.split()
    if not names or names[0].lower().endswith((".jpg", ".png")):
        raise DataError("line 2 should list the attribute names", path, 2,
                        hint="CelebA's attribute file has two header lines: the count, then the names")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(f"attribute names repeated: {', '.join(repeated)}", path, 2)
    unofficial = [n for n in names if n not in CELEBA_ATTRIBUTES]
    if unofficial:
        # Allowed (a variant may add attributes) but often a typo: say what was probably meant.
        guesses = [f"{n} (did you mean {closest_name(n, CELEBA_ATTRIBUTES)}?)"
                   if closest_name(n, CELEBA_ATTRIBUTES) else n for n in unofficial]
        log.warn(f"{path}:2: {len(unofficial)} attribute names are not CelebA's official ones: "
                 f"{', '.join(guesses)}")
    table = read_whitespace_table(path, names, skip_lines=2, allowed=(-1, 1), log=log)
    rows = len(table.names) + len(table.skipped)
    if rows != count:
        log.problem(DataError(f"line 1 says {count} images but the file has {rows} label rows",
                              path, 1, hint="the file may be truncated"))
    return table


def _read_column(root: Path, file_name: str, column: str, allowed, rows: list[str],
                 image_names: set[str], log: ProblemLog) -> tuple[np.ndarray | None, np.ndarray]:
    """One integer per image from a two-column CelebA file, aligned with ``rows``.

    Every row needs a value, and every entry of the file an image (``image_names``); comparing
    with the images rather than with the attribute file keeps one bad attribute line from
    being reported again here. Returns the values (None when the file is absent) and a mask
    of the rows that have one.
    """
    path = find_celeba_file(root, file_name)
    if path is None:
        log.warn(f"{root}: no {file_name}; the dataset will have no {column}")
        return None, np.ones(len(rows), dtype=bool)
    table = read_whitespace_table(path, [column], allowed=allowed, log=log)
    value_of = dict(zip(table.names, table.values[:, 0]))
    if len(value_of) != len(table.names):
        log.problem(DataError(f"{len(table.names) - len(value_of)} images are listed twice", path,
                              hint="each image may appear once"))
    reported = set(table.skipped)  # bad lines, already reported by the parser
    missing = [name for name in rows if name not in value_of and name not in reported]
    if missing:
        log.problem(DataError(f"{len(missing)} images of {ATTRIBUTE_FILE} have no {column}: "
                              f"{', '.join(missing[:5])}", path,
                              hint=f"{file_name} must list the same images as {ATTRIBUTE_FILE}"))
    extra = sorted(set(value_of) - image_names)
    if extra:
        log.problem(DataError(f"{len(extra)} entries name no image: {', '.join(extra[:5])}", path,
                              hint=f"{file_name} must list the same images as {ATTRIBUTE_FILE}"))
    values = np.array([value_of.get(name, -1) for name in rows], dtype=np.int64)
    return values, np.array([name in value_of for name in rows], dtype=bool)


def read_celeba(root: str | Path, attributes=None, *, log: ProblemLog | None = None) -> FaceDataset:
    """Read CelebA (full or a subset) from its official layout.

    Parameters
    ----------
    root : folder with ``list_attr_celeba.txt`` and the images (see the module docstring).
    attributes : names to keep, in this order (default: all, in the file's order). Unknown
        names raise ValueError with the closest known name.
    log : a :class:`ProblemLog`; default strict (raise the first problem). A collecting log
        gathers all problems and keeps the rows that are fine.

    Returns
    -------
    FaceDataset with labels ``(value + 1) / 2`` (so -1 -> 0, 1 -> 1), every label known,
    ``split`` from the official partition and ``identities`` the CelebA person ids.
    Every label row must have an image and every image a row; this is checked on the folder
    listing or the zip's table of contents, without decoding images.
    """
    root, log = Path(root), log or ProblemLog()
    if not root.is_dir():
        raise DataError("CelebA folder not found", root, hint="give the folder that holds "
                        f"{ATTRIBUTE_FILE} and {IMAGE_FOLDER}.zip (or {IMAGE_FOLDER}/)")
    attr_path = find_celeba_file(root, ATTRIBUTE_FILE)
    if attr_path is None:
        raise DataError(f"no {ATTRIBUTE_FILE} in this folder", root,
                        hint="give the CelebA folder that holds the official label files")
    table = read_celeba_attributes(attr_path, log)
    names = list(table.columns)
    columns = [names.index(a) for a in resolve_attributes(attributes, names)] if attributes else \
        list(range(len(names)))

    source, image_keys = celeba_images(root)
    rows, keys = match_images(table, attr_path, image_keys, source.root, log)
    row_names = [table.names[r] for r in rows]
    image_names = {key.rsplit("/", 1)[-1] for key in image_keys}
    split, has_split = _read_column(root, PARTITION_FILE, "split", (0, 1, 2), row_names, image_names, log)
    identities, has_identity = _read_column(root, IDENTITY_FILE, "identity", None, row_names,
                                            image_names, log)
    complete = has_split & has_identity  # only short of True with a collecting log
    rows = rows[complete]
    labels = (table.values[rows][:, columns] > 0).astype(np.uint8)
    return FaceDataset(
        name="celeba", source=source, keys=[k for k, ok in zip(keys, complete) if ok],
        attributes=[names[c] for c in columns], labels=labels, mask=np.ones_like(labels, dtype=bool),
        identities=None if identities is None else identities[complete],
        split=None if split is None else split[complete],
        meta={"root": str(root), "attribute_file": str(attr_path)})
