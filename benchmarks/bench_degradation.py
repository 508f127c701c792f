"""How much worse does a model do on soft, grey, heavily compressed or partly covered faces?

On a seeded sample of aligned CelebA faces of one split, each model (a shipped model's name, an
exported model's folder or a run folder) predicts the faces as they are and after each
degradation; the table gives the mean accuracy over the 40 attributes and the ``Male``
accuracy per condition, and the paired change from the untouched faces (the JSON also keeps each
attribute's accuracy per condition). The stored images are
CelebA's aligned crops (102 x 125 in the shared copy), so a blur of 2 px there is about 3 px at
the network's 150 px.

    python benchmarks/bench_degradation.py --models celeba-fairface-dlib-finetuned \\
        --split test --limit 1000 --out benchmarks/results/degradation.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from mtfap.data import open_dataset
from mtfap.data.transforms import jpeg_round_trip
from mtfap.evaluation.metrics import evaluate_predictions
from mtfap.model import load_model


def covered(image: Image.Image) -> Image.Image:
    """A grey band from under the nose to the chin of a face in CelebA's alignment (nose tip at
    about 62 % of the height, the mouth at 70 %), like a face mask: the condition of the same
    name in ``bench_predict.py shift``, in this framing."""
    out, (w, h) = image.copy(), image.size
    ImageDraw.Draw(out).rounded_rectangle((0.3 * w, 0.64 * h, 0.7 * w, 0.84 * h),
                                          radius=0.05 * w, fill=(128, 128, 128))
    return out


CONDITIONS = {
    "as is": lambda image: image,
    "blur 1 px": lambda image: image.filter(ImageFilter.GaussianBlur(1)),
    "blur 2 px": lambda image: image.filter(ImageFilter.GaussianBlur(2)),
    "grey": lambda image: image.convert("L").convert("RGB"),
    "JPEG quality 10": lambda image: jpeg_round_trip(image, 10),
    "lower face covered": covered,
}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["celeba-fairface-dlib-finetuned"])
    parser.add_argument("--data", default="../shared/data/celeba")
    parser.add_argument("--split", choices=("val", "test"), default="test")
    parser.add_argument("--limit", type=int, default=1000, help="faces sampled (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/degradation.json")
    args = parser.parse_args(argv)

    load = os.getloadavg()
    split = open_dataset(args.data).get_split(args.split)
    rows = np.arange(len(split))
    if args.limit and args.limit < len(split):
        rows = np.sort(np.random.default_rng(args.seed).choice(len(split), args.limit,
                                                               replace=False))
    faces = [Image.fromarray(np.asarray(split.source.load(split.keys[i]))).convert("RGB")
             for i in rows]
    labels, mask = split.labels[rows], split.mask[rows]
    male = list(split.attributes).index("Male")
    results = {}
    for name in args.models:
        predictor = load_model(name)
        if list(predictor.attributes) != list(split.attributes):
            raise SystemExit(f"{name}: its attributes are not the dataset's")
        started, rows_out, reference = time.perf_counter(), {}, None
        for condition, change in CONDITIONS.items():
            scores = predictor.predict_proba([np.asarray(change(face)) for face in faces])
            decided = scores >= predictor.thresholds
            correct = decided == (labels == 1)
            summary = evaluate_predictions(scores, labels, mask, thresholds=predictor.thresholds,
                                           n_bootstrap=0)
            male_accuracy = float(correct[mask[:, male], male].mean())
            if reference is None:
                reference = (summary.mean_accuracy, male_accuracy)
            rows_out[condition] = {
                "mean_accuracy": 100 * summary.mean_accuracy,
                "male_accuracy": 100 * male_accuracy,
                "mean_accuracy_change": 100 * (summary.mean_accuracy - reference[0]),
                "male_accuracy_change": 100 * (male_accuracy - reference[1]),
                "mean_probability": {a: float(scores[:, split.attributes.index(a)].mean())
                                     for a in ("Male", "Young")},
                "accuracy": {a: None if np.isnan(v) else 100 * float(v)
                             for a, v in zip(split.attributes, summary.accuracy)}}
            print(f"{name:<40} {condition:<16} mean {rows_out[condition]['mean_accuracy']:6.2f} "
                  f"({rows_out[condition]['mean_accuracy_change']:+.2f})  Male "
                  f"{rows_out[condition]['male_accuracy']:6.2f} "
                  f"({rows_out[condition]['male_accuracy_change']:+.2f})", flush=True)
        results[name] = {"conditions": rows_out, "seconds": round(time.perf_counter() - started, 1)}
    payload = {"split": args.split, "faces": len(rows), "seed": args.seed, "models": results,
               "load_average_start": load, "load_average_end": os.getloadavg(),
               "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=1))
    return payload


if __name__ == "__main__":
    main()
