"""Do the activation maps point at the part of the face an attribute lives in?

On the aligned CelebA test faces that have the attribute, the share of a map's positive mass
inside the attribute's region, for the paper's class activation map (eq. 15-16, the last
feature map: 2 x 2 cells at 150 px for dlib's network), two gradient-weighted maps at an
earlier layer (Grad-CAM and HiResCAM, ``mtfap.applications.cam.gradient_maps``) and a uniform
map (the region's
share of the image). The regions come from the model's alignment template (5 points: the eye
corners and the bottom of the nose; d = the distance between the eye centres):

- eyes band (Eyeglasses): rows within 0.45 d of the eye line;
- mouth (Smiling, Mustache): from 0.1 d below the nose to 1.1 d below it, between the outer eye
  corners;
- top of the head (Wearing_Hat, Bangs): rows above 0.5 d over the eye line.

    python benchmarks/bench_cam_regions.py --model celeba-dlib-frozen --data ../shared/data/celeba \
        --per-attribute 200 --out benchmarks/results/cam_regions.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from mtfap.applications.cam import MAP_KINDS, predictor_maps
from mtfap.data import open_dataset
from mtfap.model import load_model

REGIONS = {"Eyeglasses": "eyes", "Smiling": "mouth", "Mustache": "mouth",
           "Wearing_Hat": "top", "Bangs": "top"}


def region_masks(template, size) -> dict[str, np.ndarray]:
    """Boolean (H, W) masks of the eyes band, the mouth and the top of the head."""
    points = np.asarray(template.points)
    right_eye, left_eye, nose = points[:2].mean(0), points[2:4].mean(0), points[4]
    eye_y = (right_eye[1] + left_eye[1]) / 2
    d = float(np.hypot(*(right_eye - left_eye)))
    outer = sorted((points[0, 0], points[2, 0]))
    height, width = size
    y, x = np.mgrid[0:height, 0:width]
    return {"eyes": np.abs(y - eye_y) <= 0.45 * d,
            "mouth": (y >= nose[1] + 0.1 * d) & (y <= nose[1] + 1.1 * d)
                     & (x >= outer[0]) & (x <= outer[1]),
            "top": y <= eye_y - 0.5 * d}


def mass_inside(maps: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Share of each map's positive mass inside ``mask`` (maps (N, H, W))."""
    positive = np.clip(maps, 0, None)
    total = positive.sum(axis=(1, 2))
    return (positive * mask).sum(axis=(1, 2)) / np.where(total > 0, total, np.nan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="celeba-dlib-frozen")
    parser.add_argument("--data", default="../shared/data/celeba")
    parser.add_argument("--per-attribute", type=int, default=200)
    parser.add_argument("--out", default="benchmarks/results/cam_regions.json")
    args = parser.parse_args()
    load = os.getloadavg()
    started = time.perf_counter()
    predictor = load_model(args.model)
    template = predictor.template
    masks = region_masks(template, predictor.input_spec.size)
    dataset = open_dataset(args.data).select_attributes(predictor.attributes)
    test = dataset.get_split("test")
    rows = {}
    for attribute, region in REGIONS.items():
        column = test.attributes.index(attribute)
        having = np.flatnonzero(test.mask[:, column] & (test.labels[:, column] == 1))
        having = having[:args.per_attribute]
        faces = [np.asarray(test.source.load(test.keys[i])) for i in having]
        shares = {}
        for kind in MAP_KINDS:
            parts = []
            for first in range(0, len(faces), 32):
                _, maps = predictor_maps(predictor, faces[first:first + 32], [attribute], kind)
                parts.append(mass_inside(maps[:, 0], masks[region]))
            shares[kind] = np.concatenate(parts)
        uniform = float(masks[region].mean())
        rows[attribute] = {"region": region, "faces": len(having), "uniform": uniform,
                           **{kind: float(np.nanmean(shares[kind])) for kind in MAP_KINDS}}
        print(f"{attribute:12s} {region:5s} n={len(having):4d}  "
              + "  ".join(f"{kind} {rows[attribute][kind]:.3f}" for kind in MAP_KINDS)
              + f"  uniform {uniform:.3f}", flush=True)
    result = {"model": args.model, "rows": rows, "torch_threads": torch.get_num_threads(),
              "seconds": round(time.perf_counter() - started, 1),
              "load_average_start": load, "load_average_end": os.getloadavg()}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
