"""Labeled Faces in the Wild: images by person, gender lists and the View 2 verification pairs.

Layout (folder or zip, read in place)::

    root/
      lfw-deepfunneled.zip  (or lfw-deepfunneled/, lfw_funneled/, lfw/, or their .zip)
          lfw-deepfunneled/Person_Name/Person_Name_0001.jpg
      pairs.txt                          View 2: 10 folds of 300 matched + 300 mismatched pairs
      male_names.txt, female_names.txt   one image file name per line (optional)

The identity of an image is its folder name. Gender becomes the attribute ``Male`` (1 male,
0 female); images in neither list, or in both, have it missing (mask False), never negative.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtfap.data.dataset import FaceDataset
from mtfap.data.images import ImageSource
from mtfap.data.tables import read_text
from mtfap.errors import DataError, ProblemLog

# Image folders of the LFW variants (deep-funneled, funneled, original), in order of preference.
IMAGE_FOLDERS = ("lfw-deepfunneled", "lfw_funneled", "lfw")
PAIRS_FILE = "pairs.txt"
GENDER_FILES = {"male_names.txt": 1, "female_names.txt": 0}



def lfw_images(root: str | Path) -> tuple[ImageSource, list[str], Path]:
    """The LFW images at ``root``: their source, their keys and the folder that holds them.

    ``root`` is the LFW folder (holding ``lfw-deepfunneled.zip`` or ``lfw-deepfunneled/``, or
    another variant's name), or the image zip or folder itself. The holding folder is where
    the gender lists and ``pairs.txt`` are looked for.
    """
    root = Path(root)
    if root.is_file():
        source = ImageSource(root)
        return source, source.keys(), root.parent
    for name in IMAGE_FOLDERS:
        if (root / name).is_dir():
            source = ImageSource(root)
            return source, source.keys(under=name), root
        if (root / f"{name}.zip").is_file():
            source = ImageSource(root / f"{name}.zip")
            return source, source.keys(), root
    if root.name in IMAGE_FOLDERS and root.is_dir():  # the image folder itself
        source = ImageSource(root.parent)
        return source, source.keys(under=root.name), root.parent
    raise DataError("no LFW images found", root,
                    hint=f"expected one of {', '.join(n + '/' for n in IMAGE_FOLDERS)} or the same "
                         "names with .zip, holding Person_Name/Person_Name_0001.jpg")


def is_lfw_root(path: str | Path) -> bool:
    """True when ``path`` is a folder with LFW images (folder or zip) or ``pairs.txt``."""
    path = Path(path)
    return path.is_dir() and ((path / PAIRS_FILE).is_file() or any(
        (path / n).is_dir() or (path / f"{n}.zip").is_file() for n in IMAGE_FOLDERS))


def _person(key: str) -> str:
    parts = key.split("/")
    return parts[-2] if len(parts) >= 2 else ""


def _read_gender(root: Path, keys: list[str], log: ProblemLog) -> tuple[np.ndarray, np.ndarray]:
    """Labels and mask of ``Male`` for ``keys`` from the two name lists (when present)."""
    index = {key.rsplit("/", 1)[-1]: i for i, key in enumerate(keys)}
    votes = [set() for _ in keys]
    found = False
    for file_name, value in GENDER_FILES.items():
        path = root / file_name
        if not path.is_file():
            continue
        found = True
        unknown = []
        for name in read_text(path).split():
            # One entry of the published list lacks its extension; the image is meant.
            name = name if name.lower().endswith(".jpg") else name + ".jpg"
            if name in index:
                votes[index[name]].add(value)
            else:
                unknown.append(name)
        if unknown:
            log.warn(f"{path}: {len(unknown)} names match no image, ignored: {', '.join(unknown[:5])}")
    if not found:
        log.warn(f"{root}: no male_names.txt / female_names.txt; the attribute Male is missing "
                 "for every image")
    conflicts = [keys[i] for i, v in enumerate(votes) if len(v) > 1]
    if conflicts:
        log.warn(f"{root}: {len(conflicts)} images are in both gender lists; their Male label is "
                 f"left missing: {', '.join(conflicts[:5])}")
    mask = np.array([len(v) == 1 for v in votes], dtype=bool)
    labels = np.array([max(v) if len(v) == 1 else 0 for v in votes], dtype=np.uint8)
    return labels, mask


def read_lfw(root: str | Path, *, log: ProblemLog | None = None) -> FaceDataset:
    """Read LFW: one row per image, identity = person folder, attribute ``Male`` from the lists.

    Parameters
    ----------
    root : the LFW folder (see the module docstring), or directly the image folder or zip.
    log : a :class:`ProblemLog`; default strict.

    Returns
    -------
    FaceDataset with ``identities`` numbering the people in alphabetical order (their names in
    ``meta["identity_names"]``), no split (LFW has none for attributes: use
    :func:`mtfap.data.splits.identity_disjoint_split`), and the attribute ``Male`` masked where
    the gender is unknown.
    """
    root, log = Path(root), log or ProblemLog()
    if not root.exists():
        raise DataError("LFW folder not found", root, hint="give the folder holding "
                        "lfw-deepfunneled.zip (or lfw-deepfunneled/) and pairs.txt")
    source, keys, home = lfw_images(root)
    if not keys:
        raise DataError("no images found", source.root, hint="expected Person_Name/Person_Name_0001.jpg")
    loose = [k for k in keys if "/" not in k]
    if loose:
        log.problem(DataError(f"{len(loose)} images are not in a person folder: {', '.join(loose[:5])}",
                              source.root, hint="LFW keeps each person's images in a folder named after them"))
        keys = [k for k in keys if "/" in k]
    people, identities = np.unique([_person(k) for k in keys], return_inverse=True)
    labels, mask = _read_gender(home, keys, log)
    return FaceDataset(name="lfw", source=source, keys=keys, attributes=["Male"],
                       labels=labels[:, None], mask=mask[:, None], identities=identities,
                       meta={"root": str(root), "identity_names": people.tolist()})


def read_lfw_pairs(path_or_root: str | Path, *, log: ProblemLog | None = None) -> np.ndarray:
    """Read an LFW pairs file (View 2 ``pairs.txt``, or View 1 ``pairsDevTrain.txt``).

    Format: a header ``FOLDS N`` (or just ``N`` for one fold), then for each fold ``N`` lines
    ``Name i j`` (two images of one person) followed by ``N`` lines ``Name1 i Name2 j``.

    Parameters
    ----------
    path_or_root : the pairs file, or the LFW folder holding ``pairs.txt``.
    log : a :class:`ProblemLog`; default strict.

    Returns
    -------
    Structured array with fields ``fold`` (0-based), ``key1``, ``key2`` and ``same``. When LFW
    images sit next to the file the keys are their image keys (as in :func:`read_lfw`, e.g.
    ``lfw-deepfunneled/Name/Name_0001.jpg``) and every pair image must exist; otherwise the
    keys are ``Name/Name_0001.jpg``.
    """
    path, log = Path(path_or_root), log or ProblemLog()
    if path.is_dir():
        path = path / PAIRS_FILE
    if not path.is_file():
        raise DataError("pairs file not found", path, hint="give LFW's pairs.txt or its folder")
    lines = read_text(path).splitlines()
    header = lines[0].split() if lines else []
    try:
        folds, per_fold = (1, int(header[0])) if len(header) == 1 else map(int, header)
    except (ValueError, TypeError, IndexError):
        raise DataError(f"line 1 should be 'FOLDS PAIRS_PER_FOLD' (e.g. '10 300'), found {lines[0][:40]!r}"
                        if lines else "the file is empty", path, 1) from None
    body = [(n, line.split()) for n, line in enumerate(lines[1:], start=2) if line.strip()]
    if len(body) != 2 * folds * per_fold:
        log.problem(DataError(f"line 1 announces {folds} folds of {per_fold} matched and {per_fold} "
                              f"mismatched pairs ({2 * folds * per_fold} lines), found {len(body)}",
                              path, 1, hint="the file may be truncated"))
    key_of = _pair_key_function(path.parent)
    pairs = []
    for position, (number, fields) in enumerate(body):
        fold, same = position // (2 * per_fold), position % (2 * per_fold) < per_fold
        expected = 3 if same else 4
        if len(fields) != expected:
            kind = "a matched pair 'Name i j'" if same else "a mismatched pair 'Name1 i Name2 j'"
            log.problem(DataError(f"expected {kind} ({expected} fields), found {len(fields)} fields",
                                  path, number, hint="each fold lists its matched pairs first"))
            continue
        names = (fields[0], fields[0]) if same else (fields[0], fields[2])
        numbers = (fields[1], fields[2]) if same else (fields[1], fields[3])
        try:
            files = [f"{name}/{name}_{int(i):04d}.jpg" for name, i in zip(names, numbers)]
        except ValueError:
            log.problem(DataError(f"image numbers must be integers, found {' '.join(numbers)}", path, number))
            continue
        keys = [key_of(f) for f in files]
        if None in keys:
            log.problem(DataError(f"pair names an image that does not exist: {files[keys.index(None)]}",
                                  path, number, hint="the pairs file and the images are from different sets"))
            continue
        pairs.append((fold, keys[0], keys[1], same))
    width = max([len(k) for p in pairs for k in p[1:3]], default=1)
    dtype = np.dtype([("fold", np.int16), ("key1", f"U{width}"), ("key2", f"U{width}"), ("same", bool)])
    return np.array(pairs, dtype=dtype)


def _pair_key_function(folder: Path):
    """Maps ``Name/Name_0001.jpg`` to the image key next to the pairs file (None if absent)."""
    try:
        _, keys, _ = lfw_images(folder)
    except DataError:
        return lambda file: file
    by_file = {"/".join(k.split("/")[-2:]): k for k in keys}
    return by_file.get
