"""Build the training data of the FairFace-adapted model: CelebA plus the training half of FairFace.

    python scripts/build_training_mix.py --celeba ../shared/data/celeba \
        --fairface ../shared/data/fairface --out /tmp/mix

FairFace is split into halves (``mtfap.data.fairface.fairface_halves``: half of every race x
gender x age-group cell, seed 0; the demo's photos always held out). Every FairFace photo goes
through what ``mtfap predict`` does to a photo (the ``auto`` detector, the largest face, 5
landmarks, a similarity transform onto the model's template), so the training half's faces are
framed exactly as a user's tight face crops will be; they are written as PNG files. CelebA's
images are unpacked beside them, and one table (``labels.csv``: image, identity, split and the
40 attributes; FairFace rows carry ``Male`` only, the other 39 labels missing) makes the folder
a dataset that ``mtfap train --data OUT`` reads. CelebA keeps its official split; FairFace's
training half is all ``train``; the held-out half is not in the table. ``--fairface-copies N``
shows every FairFace face N times per epoch: N - 1 hard links to its PNG (``NAME.copyK.png``)
with rows of their own, the same photo's identity on all of them.

The run also records what the model used for the alignment (by default the shipped one) says on
each FairFace photo (``fairface_outcomes.npz``), the reference for the adapted model.
"""

from __future__ import annotations

import argparse
import csv
import json
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from mtfap.applications.analyze import Analyzer
from mtfap.data.celeba import read_celeba
from mtfap.data.fairface import fairface_halves, read_fairface
from mtfap.io import atomic_write_text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--celeba", required=True, type=Path)
    parser.add_argument("--fairface", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--model", default=None, help="the model whose template aligns the faces")
    parser.add_argument("--seed", type=int, default=0, help="seed of the FairFace halves")
    parser.add_argument("--fairface-copies", type=int, default=1, metavar="N",
                        help="rows per FairFace face, to weigh FairFace more (default 1)")
    args = parser.parse_args()
    if args.fairface_copies < 1:
        parser.error(f"--fairface-copies must be at least 1, not {args.fairface_copies}")
    out = args.out
    (out / "fairface").mkdir(parents=True, exist_ok=True)

    fairface = fairface_halves(read_fairface(args.fairface), seed=args.seed)
    analyzer = Analyzer(args.model, largest_only=True, keep_aligned=True)
    male = analyzer.predictor.attributes.index("Male")
    found, detector, p_male, written = [], [], [], []
    for row, result in enumerate(analyzer.analyze_dataset(fairface, batch_size=64,
                                                          progress=True)):
        face = result.faces[0] if result.faces else None
        found.append(face is not None)
        detector.append(face.detector if face else "")
        p_male.append(face.probabilities[male] if face else np.nan)
        if face is not None and fairface.split[row] == 0:
            name = f"fairface/{Path(fairface.keys[row]).stem}.png"
            Image.fromarray(face.aligned).save(out / name)
            written.append((row, name))
    np.savez(out / "fairface_outcomes.npz", keys=np.array(fairface.keys),
             split=fairface.split, found=np.array(found), detector=np.array(detector),
             p_male=np.array(p_male, float), male=fairface.labels[:, 0].astype(bool),
             threshold=np.float64(analyzer.predictor.thresholds[male]))

    celeba = read_celeba(args.celeba)
    with zipfile.ZipFile(celeba.source.root) as archive:
        have = {p.relative_to(out).as_posix() for p in out.glob("img_align_celeba/*.jpg")}
        todo = [k for k in celeba.keys if k not in have]
        for key in todo:
            target = out / key
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(key))

    rows = [["image", "identity", "split", *celeba.attributes]]
    split_names = {0: "train", 1: "val", 2: "test"}
    for i, key in enumerate(celeba.keys):
        rows.append([key, f"celeba{celeba.identities[i]}", split_names[int(celeba.split[i])],
                     *map(str, celeba.labels[i])])
    male_column = celeba.attributes.index("Male")
    for row, name in written:
        cells = [""] * len(celeba.attributes)
        cells[male_column] = str(int(fairface.labels[row, 0]))
        rows.append([name, f"fairface{row}", "train", *cells])
        for copy in range(1, args.fairface_copies):
            copy_name = Path(name).with_suffix(f".copy{copy}.png").as_posix()
            (out / copy_name).unlink(missing_ok=True)  # a stale file of an earlier build
            (out / copy_name).hardlink_to(out / name)
            rows.append([copy_name, f"fairface{row}", "train", *cells])
    with open(out / "labels.csv.tmp", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    (out / "labels.csv.tmp").replace(out / "labels.csv")
    train_half = fairface.split == 0
    summary = {"celeba_images": len(celeba), "fairface_train_half": int(train_half.sum()),
               "fairface_train_faces": len(written),
               "fairface_copies": args.fairface_copies,
               "fairface_test_half": int((~train_half).sum()),
               "alignment_model": analyzer.predictor.name}
    atomic_write_text(out / "mix.json", json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
