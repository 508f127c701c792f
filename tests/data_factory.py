"""Small generated datasets in the real layouts (CelebA, LFW, image table) for the data tests."""

from __future__ import annotations

import io
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from mtfap.attributes import CELEBA_ATTRIBUTES


@lru_cache(maxsize=None)
def jpeg_bytes(seed: int = 0, size=(12, 14)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_images(target: Path, files: dict[str, bytes], as_zip: bool) -> Path:
    """Write ``files`` (relative name -> bytes) into the folder ``target`` or the zip ``target``."""
    if as_zip:
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(target, "w") as archive:
            for name, data in files.items():
                archive.writestr(name, data)
    else:
        for name, data in files.items():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(data)
    return target


def write_lines(path: Path, lines: list[str], newline: str = "\r\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((newline.join(lines) + newline).encode())
    return path


def replace_line(path: Path, number: int, text: str | None) -> None:
    """Replace (or with None delete) 1-based line ``number`` of a CRLF or LF file."""
    raw = path.read_bytes().decode()
    newline = "\r\n" if "\r\n" in raw else "\n"
    lines = raw.split(newline)
    if text is None:
        del lines[number - 1]
    else:
        lines[number - 1] = text
    path.write_bytes(newline.join(lines).encode())


def make_celeba(root: Path, n: int = 12, as_zip: bool = True, seed: int = 0,
                attributes=CELEBA_ATTRIBUTES) -> dict:
    """A CelebA folder with ``n`` images (ids 1, 3, 5, ...): 2 images per identity, split 0/1/2.

    Returns the truth: names, labels (n x k, 0/1), identities and split.
    """
    rng = np.random.default_rng(seed)
    names = [f"{2 * i + 1:06d}.jpg" for i in range(n)]
    labels = rng.integers(0, 2, (n, len(attributes)))
    identities = np.array([100 + i // 2 for i in range(n)])
    split = np.array([(i // 2) % 3 for i in range(n)])
    files = {f"img_align_celeba/{name}": jpeg_bytes(i % 3) for i, name in enumerate(names)}
    write_images(root / ("img_align_celeba.zip" if as_zip else ""), files, as_zip)
    # The official file right-aligns values: "000001.jpg -1  1 -1".
    rows = [name + "".join(f"{2 * v - 1:>3d}" for v in row) for name, row in zip(names, labels)]
    write_lines(root / "list_attr_celeba.txt", [str(n), " ".join(attributes) + " ", *rows])
    write_lines(root / "list_eval_partition.txt", [f"{a} {s}" for a, s in zip(names, split)])
    write_lines(root / "identity_CelebA.txt", [f"{a} {i}" for a, i in zip(names, identities)])
    return {"names": names, "labels": labels, "identities": identities, "split": split}


LFW_PEOPLE = {"Ann_Lee": 3, "Bob_Stone": 2, "Cy_Young": 1, "Dee_Ray": 2}


def make_lfw(root: Path, as_zip: bool = True, people=None) -> Path:
    """An LFW folder: images, gender lists (with LFW's quirks) and a 2-fold pairs file."""
    people = people or LFW_PEOPLE
    files = {f"lfw-deepfunneled/{p}/{p}_{i:04d}.jpg": jpeg_bytes(i)
             for p, count in people.items() for i in range(1, count + 1)}
    write_images(root / ("lfw-deepfunneled.zip" if as_zip else ""), files, as_zip)
    # Bob is male, Ann female; Cy is in neither list; Dee_Ray_0001 is in both (a conflict), and
    # one entry lacks its extension as in the published list.
    write_lines(root / "male_names.txt", ["Bob_Stone_0001.jpg", "Bob_Stone_0002.jpg",
                                          "Dee_Ray_0001.jpg", "Dee_Ray_0002.jpg", ""])
    write_lines(root / "female_names.txt", ["Ann_Lee_0001.jpg", "Ann_Lee_0002", "Ann_Lee_0003.jpg",
                                            "Dee_Ray_0001.jpg"])
    pairs = ["2\t2",
             "Ann_Lee\t1\t2", "Bob_Stone\t1\t2", "Ann_Lee\t1\tBob_Stone\t1", "Cy_Young\t1\tDee_Ray\t2",
             "Ann_Lee\t2\t3", "Dee_Ray\t1\t2", "Ann_Lee\t3\tCy_Young\t1", "Bob_Stone\t2\tDee_Ray\t1"]
    write_lines(root / "pairs.txt", pairs, newline="\n")
    return root


def make_table_dataset(root: Path, rows: list[str], header: str = "image,identity,Smiling,Male",
                       as_zip: bool = False, table_name: str = "labels.csv",
                       image_names=None) -> tuple[Path, Path]:
    """Images named in ``rows`` (first cell) under ``root/photos`` (or photos.zip), and the table."""
    sep = "\t" if "\t" in header else ","
    names = image_names if image_names is not None else [r.split(sep)[0] for r in rows if r.strip()]
    files = {name: jpeg_bytes(i % 3) for i, name in enumerate(names)}
    images = write_images(root / ("photos.zip" if as_zip else "photos"), files, as_zip)
    table = write_lines(root / table_name, [header, *rows], newline="\n")
    return images, table


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` but that holds (almost) no pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 4)) + chunk(b"IEND", b""))


def write_features(path: Path, n: int = 90, d: int = 6,
                   attributes=("Male", "Smiling", "Young", "Bangs"), seed: int = 0,
                   meta: dict | None = None) -> Path:
    """A features file (``mtfap features`` format) with a planted signal, a train/val/test
    split in thirds and three images per identity."""
    from mtfap.data.features import FeatureSet

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    labels = (X[:, : len(attributes)] + 0.3 * rng.normal(size=(n, len(attributes))) > 0)
    split = np.repeat([0, 1, 2], -(-n // 3))[:n].astype(np.int8)
    return FeatureSet(X, labels.astype(np.uint8), np.ones((n, len(attributes)), bool),
                      list(attributes), [f"{i:06d}.jpg" for i in range(n)], split,
                      np.arange(n) // 3, meta or {"backbone": "generated"}).save(path)
