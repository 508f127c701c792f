"""Refit one head of a trained model (``Male`` by default) on its frozen features, with FairFace's
training half weighed in, the weight chosen by cross-validation on that half alone.

    python scripts/refit_male_head.py --model celeba-fairface-dlib-finetuned \
        --mix /tmp/mix --fairface ../shared/data/fairface --out /tmp/refit

``--mix`` is the folder that ``scripts/build_training_mix.py`` writes: CelebA plus the aligned
faces of FairFace's training half. Every face's features are the backbone's GAP vector averaged
over the model's test-time views, so a linear head on them gives exactly the model's logit. A
logistic regression (scikit-learn) is fitted on a sample of CelebA's training images (weight 1)
and FairFace's training faces (weight ``w``, children under 20 ``w * c``), for every (w, c, C)
of a small grid; each setting is scored by 5-fold cross-validation over FairFace's training
faces (the head refitted on the other four folds and the CelebA sample) and on a sample of
CelebA's validation images. The setting kept has the best FairFace cross-validated accuracy
among those that lose at most ``--max-celeba-loss`` points of that head's CelebA validation
accuracy. The model is then written to ``--out`` with only that head replaced (the backbone and
the other heads byte for byte), with ``refit.json`` beside it: the grid, the choice and the
counts. FairFace's held-out half is not read here: score it with
``benchmarks/bench_fairface_adaptation.py``, once, for the setting kept.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from mtfap.data.fairface import read_fairface
from mtfap.data.layout import open_dataset
from mtfap.io import atomic_write_text
from mtfap.model import load_model
from mtfap.model.inference import view_logits
from mtfap.model.store import export_model, read_description

CHILD_AGES = ("0-2", "3-9", "10-19")


def view_features(predictor, source, keys, batch_size: int = 64) -> np.ndarray:
    """The backbone's features of images ``keys`` of ``source``, averaged over the model's
    test-time views, (N, d); the images are read a batch at a time."""
    parts = []
    with torch.no_grad():
        for first in range(0, len(keys), batch_size):
            batch = predictor.prepare([source.load(key) for key in keys[first:first + batch_size]])
            parts.append(view_logits(predictor.model.backbone, batch,
                                     scales=predictor.spec.test_scales,
                                     flip=predictor.spec.flip_test).numpy())
    return np.concatenate(parts)


def fit(x, y, weights, c_value) -> tuple[np.ndarray, float]:
    """A logistic regression on standardised features, returned as (w, b) on the raw ones."""
    scaler = StandardScaler().fit(x)
    model = LogisticRegression(C=c_value, max_iter=2000)
    model.fit(scaler.transform(x), y, sample_weight=weights)
    w = model.coef_[0] / scaler.scale_
    return w, float(model.intercept_[0] - np.dot(w, scaler.mean_))


def accuracy(x, y, w, b) -> float:
    return float(np.mean(((x @ w + b) >= 0) == y))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a shipped model's name or a folder")
    parser.add_argument("--mix", required=True, type=Path, help="build_training_mix.py's folder")
    parser.add_argument("--fairface", required=True, type=Path, help="FairFace's folder (ages)")
    parser.add_argument("--out", required=True, type=Path, help="folder of the refitted model")
    parser.add_argument("--attribute", default="Male")
    parser.add_argument("--celeba-train", type=int, default=6000,
                        help="CelebA training images in the fit (default 6000)")
    parser.add_argument("--celeba-val", type=int, default=3000,
                        help="CelebA validation images that score each setting (default 3000)")
    parser.add_argument("--weights", default="0,1,3,10", help="FairFace weights w to try")
    parser.add_argument("--child-weights", default="1,2", help="extra factors c for children")
    parser.add_argument("--C", dest="c_values", default="0.1,1", help="inverse regularisation")
    parser.add_argument("--max-celeba-loss", type=float, default=1.0,
                        help="points of the head's CelebA validation accuracy a setting may "
                             "lose (default 1.0: 0.025 points of a 40-attribute mean)")
    parser.add_argument("--version", default=None, help="version of the written model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    grid = []
    for flag, text in (("--weights", args.weights), ("--child-weights", args.child_weights),
                       ("--C", args.c_values)):
        try:
            grid.append([float(v) for v in text.split(",")])
        except ValueError:
            parser.error(f"{flag} {text!r}: expected numbers separated by commas, e.g. 0,1,3")
        if any(v < 0 for v in grid[-1]) or (flag == "--C" and 0 in grid[-1]):
            parser.error(f"{flag} {text!r}: weights must be >= 0 and C > 0")

    predictor = load_model(args.model)
    if args.attribute not in predictor.attributes:
        parser.error(f"--attribute {args.attribute!r} is not one of the model's attributes")
    column = predictor.attributes.index(args.attribute)
    mix = open_dataset(args.mix)
    rng = np.random.default_rng(args.seed)
    is_fairface = np.array([key.startswith("fairface/") and ".copy" not in key
                            for key in mix.keys])
    has_label = mix.mask[:, column]

    def sample(split: int, count: int) -> np.ndarray:
        rows = np.flatnonzero((mix.split == split) & ~is_fairface & has_label)
        return np.sort(rng.choice(rows, size=min(count, len(rows)), replace=False))

    parts = {"celeba_train": sample(0, args.celeba_train), "celeba_val": sample(1, args.celeba_val),
             "fairface": np.flatnonzero(is_fairface & has_label)}
    if not len(parts["fairface"]):
        raise SystemExit(f"{args.mix}: no FairFace face (fairface/*.png) with a {args.attribute} "
                         "label; build the folder with scripts/build_training_mix.py")
    features = {}
    for name, rows in parts.items():
        print(f"features of {len(rows)} {name} faces ...", flush=True)
        features[name] = view_features(predictor, mix.source, [mix.keys[i] for i in rows])
    labels = {name: mix.labels[rows, column].astype(bool) for name, rows in parts.items()}

    # Ages of FairFace's faces: the mix names each face after its photo (fairface/N.png).
    groups = read_fairface(args.fairface).meta["groups"]
    ages = np.array([groups[f"fairface-val/{Path(mix.keys[i]).stem}.jpg"]["age"]
                     for i in parts["fairface"]])
    child = np.isin(ages, CHILD_AGES)

    W, b = (t.detach().float().numpy() for t in predictor.model.heads.linear_map())
    shipped = W[:, column], float(b[column])
    reference = {
        "fairface_training_faces": accuracy(features["fairface"], labels["fairface"], *shipped),
        "celeba_val": accuracy(features["celeba_val"], labels["celeba_val"], *shipped)}
    print(f"the model's own head: FairFace training half "
          f"{100 * reference['fairface_training_faces']:.2f} %, "
          f"CelebA val {100 * reference['celeba_val']:.2f} %")

    folds = list(StratifiedKFold(5, shuffle=True, random_state=args.seed).split(
        features["fairface"], labels["fairface"]))

    def design(w_ff, c_child, rows=None):
        ff = slice(None) if rows is None else rows
        x = np.concatenate([features["celeba_train"], features["fairface"][ff]])
        y = np.concatenate([labels["celeba_train"], labels["fairface"][ff]])
        weights = np.concatenate([np.ones(len(features["celeba_train"])),
                                  w_ff * np.where(child[ff], c_child, 1.0)])
        keep = weights > 0
        return x[keep], y[keep], weights[keep]

    results = []
    for w_ff, c_child, c_value in itertools.product(*grid):
        if w_ff == 0 and c_child != grid[1][0]:
            continue  # no FairFace in the fit: the children's factor changes nothing
        right = np.zeros(len(child), bool)
        for train_rows, test_rows in folds:
            head = fit(*design(w_ff, c_child, train_rows), c_value)
            right[test_rows] = ((features["fairface"][test_rows] @ head[0] + head[1]) >= 0) \
                == labels["fairface"][test_rows]
        head = fit(*design(w_ff, c_child), c_value)
        results.append({"fairface_weight": w_ff, "child_factor": c_child, "C": c_value,
                        "fairface_cv": float(right.mean()),
                        "fairface_cv_children": float(right[child].mean()),
                        "fairface_cv_adults": float(right[~child].mean()),
                        "celeba_val": accuracy(features["celeba_val"], labels["celeba_val"],
                                               *head)})
        r = results[-1]
        print(f"w={w_ff:g} c={c_child:g} C={c_value:g}: FairFace CV {100 * r['fairface_cv']:.2f} % "
              f"(children {100 * r['fairface_cv_children']:.1f}, adults "
              f"{100 * r['fairface_cv_adults']:.1f}), CelebA val {100 * r['celeba_val']:.2f} %",
              flush=True)

    allowed = [r for r in results
               if r["celeba_val"] >= reference["celeba_val"] - args.max_celeba_loss / 100]
    if not allowed:
        raise SystemExit("no setting keeps CelebA validation accuracy within "
                         f"{args.max_celeba_loss} points; nothing written")
    best = max(allowed, key=lambda r: r["fairface_cv"])
    w_new, b_new = fit(*design(best["fairface_weight"], best["child_factor"]), best["C"])

    heads = predictor.model.heads
    with torch.no_grad():  # exported heads are "linear": their map is their parameters
        heads.weight[:, column] = torch.from_numpy(w_new).to(heads.weight.dtype)
        heads.bias[column] = float(b_new)
    description = read_description(predictor.source)
    version = args.version or f"{description['version']}+refit"
    export_model(predictor, args.out, name=description["name"], version=version,
                 description=f"{description['description']}; the {args.attribute} head refitted "
                             "on frozen features with FairFace's training half weighed in "
                             "(scripts/refit_male_head.py)")
    summary = {"model": args.model, "attribute": args.attribute, "seed": args.seed,
               "counts": {name: len(rows) for name, rows in parts.items()},
               "fairface_children": int(child.sum()), "reference": reference,
               "grid": results, "chosen": best, "max_celeba_loss": args.max_celeba_loss}
    atomic_write_text(args.out / "refit.json", json.dumps(summary, indent=2) + "\n")
    print(json.dumps({"reference": reference, "chosen": best}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
