"""Tell which layout a path holds (CelebA, LFW, image table, synthetic) and open it."""

from __future__ import annotations

from pathlib import Path

from mtfap.data.celeba import is_celeba_root, read_celeba
from mtfap.data.dataset import FaceDataset
from mtfap.data.fairface import is_fairface_root, read_fairface
from mtfap.data.generic import TABLE_SUFFIXES, read_table_dataset
from mtfap.data.lfw import is_lfw_root, read_lfw
from mtfap.errors import DataError

SYNTHETIC = "synthetic"


def _tables_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in TABLE_SUFFIXES and p.is_file())


def detect_layout(path: str | Path | None, table: str | Path | None = None) -> str:
    """``"synthetic"``, ``"celeba"``, ``"lfw"``, ``"fairface"`` or ``"table"`` for ``path`` (see :func:`open_dataset`)."""
    if path is None or (str(path) == SYNTHETIC and not Path(path).exists()):
        return SYNTHETIC
    if str(path) == "":
        raise ValueError("no dataset path given; give a CelebA or LFW folder, an image folder "
                         "with a table, or 'synthetic'")
    path = Path(path)
    if not path.exists():
        raise DataError("dataset not found", path, hint="check the path")
    if table is not None or path.suffix.lower() in TABLE_SUFFIXES:
        return "table"
    if is_celeba_root(path):
        return "celeba"
    if is_lfw_root(path):
        return "lfw"
    if is_fairface_root(path):
        return "fairface"
    if path.is_dir() and len(_tables_in(path)) == 1:
        return "table"
    found = [p.name for p in _tables_in(path)] if path.is_dir() else []
    raise DataError("cannot tell which dataset this is", path,
                    hint="expected list_attr_celeba.txt (CelebA), lfw-deepfunneled.zip or pairs.txt "
                         "(LFW), or an image folder/zip with a CSV table (pass table=... or --table)"
                         + (f"; several tables here: {', '.join(found)}" if len(found) > 1 else ""))


def open_dataset(path: str | Path | None = None, *, table: str | Path | None = None,
                 images: str | Path | None = None, attributes=None, **options) -> FaceDataset:
    """Open a dataset from its path, whatever its layout.

    - None or ``"synthetic"``: the generated face-like dataset (``mtfap.data.synthetic``);
      ``options`` go to ``load_synthetic``.
    - a folder with ``list_attr_celeba.txt``: CelebA (:func:`read_celeba`).
    - a folder with LFW's image folder/zip or ``pairs.txt``: LFW (:func:`read_lfw`).
    - a CSV/TSV file, or a folder/zip with ``table=`` (or holding exactly one table): an image
      table (:func:`read_table_dataset`); images default to the folder of the table, or
      ``path`` when it is the folder/zip.

    ``attributes`` (names) keeps those attributes, in that order; other ``options`` go to the
    reader (``identity_column``, ``log``, ...).
    """
    dataset = _read(detect_layout(path, table), path, table, images, options)
    return dataset if attributes is None else dataset.select_attributes(attributes)


def _read(layout: str, path, table, images, options: dict) -> FaceDataset:
    if layout == SYNTHETIC:
        from mtfap.data.synthetic import (
            load_synthetic,  # generated data, imported only when asked
        )
        return load_synthetic(**options)
    path = Path(path)
    if layout == "celeba":
        return read_celeba(path, **options)
    if layout == "lfw":
        return read_lfw(path, **options)
    if layout == "fairface":
        return read_fairface(path, **options)
    if table is None:
        table = path if path.suffix.lower() in TABLE_SUFFIXES else _tables_in(path)[0]
    if images is None:
        images = path.parent if Path(table) == path else path
    return read_table_dataset(images, table, **options)
