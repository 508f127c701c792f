"""FairFace (Kärkkäinen and Joo, WACV 2021; CC BY 4.0): face crops balanced over seven race
groups, with gender, age group and race.

Layout (folder, images read in place from the zip)::

    root/
      fairface-val.zip      fairface-val/N.jpg (or a folder fairface-val/)
      labels_val.csv        image,age,gender,race  (e.g. 1.jpg,3-9,Male,East Asian)

Gender becomes the attribute ``Male``; the age group, race and gender of each image are in
``dataset.meta["groups"][key]`` (by image key, so that subsets keep them). FairFace is a test set here: the
dataset has no split.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np

from mtfap.data.dataset import FaceDataset
from mtfap.data.images import ImageSource
from mtfap.errors import DataError

LABELS_FILE = "labels_val.csv"
IMAGE_FOLDER = "fairface-val"
AGE_GROUPS = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70")
RACES = ("White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian",
         "Middle Eastern")
GENDERS = ("Female", "Male")


def is_fairface_root(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / LABELS_FILE).is_file() and (
        (path / f"{IMAGE_FOLDER}.zip").is_file() or (path / IMAGE_FOLDER).is_dir())


def read_fairface(root: str | Path) -> FaceDataset:
    """The FairFace images at ``root`` with ``Male`` and the age and race groups."""
    root = Path(root)
    labels = root / LABELS_FILE
    if not labels.is_file():
        raise DataError(f"{LABELS_FILE} not found", root, hint="give FairFace's folder")
    zipped = root / f"{IMAGE_FOLDER}.zip"
    source = ImageSource(zipped if zipped.is_file() else root)
    available = set(source.keys())
    keys, male, ages, races = [], [], [], []
    with open(labels, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = {"image", "age", "gender", "race"} - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"columns missing: {', '.join(sorted(missing))}", labels, 1,
                            hint="expected the header image,age,gender,race")
        for line, row in enumerate(reader, start=2):
            key = f"{IMAGE_FOLDER}/{row['image']}"
            if key not in available:
                raise DataError(f"image {row['image']!r} is not in {source.root.name}", labels,
                                line)
            for value, allowed, column in ((row["age"], AGE_GROUPS, "age"),
                                           (row["gender"], GENDERS, "gender"),
                                           (row["race"], RACES, "race")):
                if value not in allowed:
                    raise DataError(f"{column} {value!r} is not one of {', '.join(allowed)}",
                                    labels, line)
            keys.append(key)
            male.append(row["gender"] == "Male")
            ages.append(row["age"])
            races.append(row["race"])
    if not keys:
        raise DataError("no rows", labels)
    return FaceDataset(name="fairface", source=source, keys=keys, attributes=["Male"],
                       labels=np.array(male, np.uint8)[:, None],
                       mask=np.ones((len(keys), 1), bool),
                       meta={"root": str(root), "groups": {
                           key: {"age": age, "race": race, "gender": "Male" if m else "Female"}
                           for key, age, race, m in zip(keys, ages, races, male)}})


# The photos the demo ships (src/mtfap/resources/demo): always in the held-out half, so that
# the demo never shows a model its own training photos.
DEMO_PHOTOS = tuple(f"{IMAGE_FOLDER}/{n}.jpg" for n in (3, 4, 7, 14, 18, 20, 21, 28, 38))


def fairface_halves(dataset: FaceDataset, train_fraction: float = 0.5, seed: int = 0
                    ) -> FaceDataset:
    """FairFace with a split: ``train_fraction`` of the photos of every race x gender x age-group
    cell drawn at random (``seed``) as ``train``, the rest ``test``; the demo's photos are
    always ``test``. FairFace has no identities, so the halves are disjoint by photo only.

    A model trained on the ``train`` half is scored on the ``test`` half (``mtfap card
    --fairface-part test``); the draw depends on the labels file and the seed only."""
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    groups = dataset.meta["groups"]
    cells: dict[tuple, list[int]] = {}
    for row, key in enumerate(dataset.keys):
        g = groups[key]
        cells.setdefault((g["race"], g["gender"], g["age"]), []).append(row)
    split = np.full(len(dataset), 2, np.int8)
    rng = np.random.default_rng(seed)
    demo = set(DEMO_PHOTOS)
    for cell in sorted(cells):
        rows = np.array([r for r in cells[cell] if dataset.keys[r] not in demo], dtype=np.int64)
        rows = rows[rng.permutation(len(rows))]
        split[rows[:int(round(train_fraction * len(cells[cell])))]] = 0
    identities = np.arange(len(dataset), dtype=np.int64)  # one person a photo, as far as known
    return replace(dataset, split=split, identities=identities)
