"""Small real photo collections for the index, search and web tests: CelebA test-split faces
picked by their labels, LFW photos of a few people and FairFace photos by age and gender, all
copied out of the shared zips into the tests' folders (never into the repository)."""

from __future__ import annotations

import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from mtfap.attributes import CELEBA_ATTRIBUTES

FROZEN = "celeba-dlib-frozen"
QUERY = "old man wearing glasses"
# (required labels, how many): the paper's query has four answers among sixteen faces; the
# others differ from it in one or two of its conditions
GROUPS = (({"Male": True, "Young": False, "Eyeglasses": True}, 4),
          ({"Male": False, "Young": True, "Eyeglasses": False}, 4),
          ({"Male": True, "Young": True, "Eyeglasses": False}, 4),
          ({"Male": True, "Young": False, "Eyeglasses": False}, 2),
          ({"Male": False, "Eyeglasses": True}, 2))


@lru_cache(maxsize=2)
def celeba_test_labels(celeba_dir: Path) -> dict[str, np.ndarray]:
    """``{file name: 40 bools}`` of the official test split, in file order."""
    partition = (celeba_dir / "list_eval_partition.txt").read_text().split()
    test = {name for name, part in zip(partition[::2], partition[1::2]) if part == "2"}
    labels = {}
    for line in (celeba_dir / "list_attr_celeba.txt").read_text().splitlines()[2:]:
        name, *values = line.split()
        if name in test:
            labels[name] = np.array([v == "1" for v in values])
    return labels


def matches(labels: np.ndarray, wanted: dict[str, bool]) -> bool:
    return all(labels[CELEBA_ATTRIBUTES.index(a)] == v for a, v in wanted.items())


def celeba_collection(celeba_dir: Path, folder: Path, groups=GROUPS, skip: int = 0
                      ) -> dict[str, np.ndarray]:
    """Copy the first test-split faces of each group (after ``skip`` of each) into ``folder``;
    returns ``{file name: 40 bools}`` of those copied."""
    labels = celeba_test_labels(celeba_dir)
    chosen = {}
    for wanted, count in groups:
        found = [n for n, v in labels.items() if matches(v, wanted) and n not in chosen]
        chosen.update({n: labels[n] for n in found[skip:skip + count]})
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(celeba_dir / "img_align_celeba.zip") as archive:
        for name in chosen:
            (folder / name).write_bytes(archive.read(f"img_align_celeba/{name}"))
    return chosen


def lfw_photos(lfw_dir: Path, folder: Path, names: dict[str, str]) -> dict[str, Path]:
    """Copy LFW photos (``{target relative path: 'Person_Name_0001'}``) into ``folder``."""
    written = {}
    with zipfile.ZipFile(lfw_dir / "lfw-deepfunneled.zip") as archive:
        for target, stem in names.items():
            person = stem.rsplit("_", 1)[0]
            path = folder / target
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(archive.read(f"lfw-deepfunneled/{person}/{stem}.jpg"))
            written[target] = path
    return written


OLD = ("50-59", "60-69", "more than 70")


def fairface_collection(fairface_dir: Path, folder: Path, old_men: int, others: int
                        ) -> list[str]:
    """The first ``old_men`` FairFace validation photos of men aged 50 or more and the first
    ``others`` of everyone else, copied into ``folder``; returns their names. FairFace is
    CC BY 4.0 (Kärkkäinen and Joo, WACV 2021), so pictures made of them may be published with
    that credit."""
    rows = [line.split(",") for line in
            (fairface_dir / "labels_val.csv").read_text().splitlines()[1:]]
    chosen = ([name for name, age, gender, _ in rows if gender == "Male" and age in OLD][:old_men]
              + [name for name, age, gender, _ in rows
                 if not (gender == "Male" and age in OLD)][:others])
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(fairface_dir / "fairface-val.zip") as archive:
        for name in chosen:
            (folder / name).write_bytes(archive.read(f"fairface-val/{name}"))
    return chosen
