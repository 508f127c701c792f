"""What detection and alignment cost, and how fast `mtfap predict` is, on this machine.

Sub-commands (each writes a JSON into --out with the load average before and after):

- ``aligned``: CelebA's test images (already aligned) evaluated directly (the training
  framing, as ``mtfap evaluate`` does) and through detection + alignment (``mtfap predict``),
  paired on the same images; the detection rate.
- ``placed``: every CelebA test image placed into a larger canvas at a random scale, rotation
  (up to 25 degrees) and position over a background tiled from the corners (no faces) of other
  test images, JPEG quality 60-95, then through ``mtfap predict``; accuracy against the aligned
  evaluation.
- ``lfw``: ``Male`` accuracy against LFW's gender lists on all 13,233 photos and the share of
  photos with a face found, for each detector.
- ``shift``: framings and photo conditions unlike the shared data's (grey, small, blurred,
  heavily compressed, sideways, tilted, cut tight, the lower face covered), each applied to
  the same random sample of LFW photos: the share of photos with a face found and ``Male``
  accuracy, paired with the untouched photos on the faces found in both.
- ``speed``: faces per second end to end on LFW photos with the time of each step (decode,
  detection + landmarks, alignment, network), and the start-up time of a first
  ``mtfap predict`` on one photo (median of 5 runs of the command).

    python benchmarks/bench_predict.py aligned --model celeba-dlib-frozen --out benchmarks/results/predict_aligned.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from mtfap.applications.analyze import Analyzer
from mtfap.data import open_dataset
from mtfap.data.transforms import jpeg_round_trip
from mtfap.evaluation.metrics import evaluate_predictions
from mtfap.experiments.card import test_scores
from mtfap.model import load_model


def _write(path, payload, load_start):
    payload = {**payload, "load_average_start": load_start, "load_average_end": os.getloadavg(),
               "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=1))
    print(json.dumps({k: v for k, v in payload.items() if not isinstance(v, (list, dict))},
                     indent=1))


def _through_pipeline(analyzer, items, attributes_count):
    """Probabilities (n, k) of the largest face of each item (NaN rows where none) and how
    each was found."""
    scores = np.full((len(items), attributes_count), np.nan)
    found = np.zeros(len(items), dtype=object)
    for row, result in enumerate(analyzer.analyze_items(items, batch_size=64)):
        if result.faces:
            scores[row] = result.faces[0].probabilities
            found[row] = result.faces[0].detector
        else:
            found[row] = ""
    return scores, found


def _paired(direct, piped, labels, mask, identities, thresholds):
    hit = ~np.isnan(piped).any(axis=1)
    a = evaluate_predictions(direct[hit], labels[hit], mask[hit], identities=identities[hit],
                             thresholds=thresholds, n_bootstrap=1000)
    b = evaluate_predictions(piped[hit], labels[hit], mask[hit], identities=identities[hit],
                             thresholds=thresholds, n_bootstrap=1000)
    return {"faces": int(hit.sum()), "direct_mean_accuracy": 100 * a.mean_accuracy,
            "pipeline_mean_accuracy": 100 * b.mean_accuracy,
            "difference": 100 * (b.mean_accuracy - a.mean_accuracy)}


def aligned(args):
    load = os.getloadavg()
    predictor = load_model(args.model)
    direct, labels, mask, identities, keys = test_scores(predictor, args.data, progress=False)
    dataset = open_dataset(args.data).get_split("test")
    source = dataset.source
    analyzer = Analyzer(predictor, largest_only=True, detector=args.detector)
    started = time.perf_counter()
    piped, found = _through_pipeline(analyzer, [(k, lambda k=k: source.load(k)) for k in keys],
                                     len(predictor.attributes))
    seconds = time.perf_counter() - started
    _write(args.out, {"model": args.model, "images": len(keys), "detector": args.detector,
                      "found_by_detector": float(np.isin(found, ["hog", "cnn"]).mean()),
                      "found_as_crop": float((found == "crop").mean()),
                      "seconds": round(seconds, 1),
                      **_paired(direct, piped, labels, mask, identities, predictor.thresholds)},
           load)


def background_from(others: list[np.ndarray], side: int, rng) -> Image.Image:
    """A canvas of ``side`` pixels tiled with corner patches (a quarter of the side, outside
    the face) of other images: their backgrounds, hair and clothes, but no second face that a
    detector could take for the largest one."""
    tiles = 4
    canvas = Image.new("RGB", (side, side))
    step = -(-side // tiles)
    for row in range(tiles):
        for col in range(tiles):
            other = others[int(rng.integers(0, len(others)))]
            h, w = other.shape[:2]
            patch_h, patch_w = h // 4, w // 4
            top = 0 if rng.random() < 0.5 else h - patch_h
            left = 0 if rng.random() < 0.5 else w - patch_w
            patch = Image.fromarray(other[top:top + patch_h, left:left + patch_w])
            canvas.paste(patch.resize((step, step), Image.Resampling.BILINEAR),
                         (col * step, row * step))
    return canvas


def place(image: np.ndarray, others: list[np.ndarray], rng, scale_base: float) -> np.ndarray:
    """``image`` scaled (0.4-1.5 x ``scale_base``), turned (up to 25 degrees) and placed at
    random on a canvas three times its size tiled from other images' backgrounds
    (:func:`background_from`), JPEG-recompressed (quality 60-95)."""
    height, width = image.shape[:2]
    canvas_side = int(round(3.0 * max(height, width) * scale_base))
    canvas = background_from(others, canvas_side, rng)
    scale = scale_base * rng.uniform(0.4, 1.5)
    face = Image.fromarray(image).resize((max(8, round(width * scale)),
                                          max(8, round(height * scale))),
                                         Image.Resampling.LANCZOS)
    face = face.convert("RGBA").rotate(rng.uniform(-25, 25), resample=Image.Resampling.BICUBIC,
                                       expand=True)
    x = int(rng.integers(0, max(1, canvas_side - face.width)))
    y = int(rng.integers(0, max(1, canvas_side - face.height)))
    canvas.paste(face, (x, y), face)
    return np.asarray(jpeg_round_trip(canvas, int(rng.integers(60, 96))))


def placed(args):
    load = os.getloadavg()
    predictor = load_model(args.model)
    direct, labels, mask, identities, keys = test_scores(predictor, args.data, progress=False)
    source = open_dataset(args.data).get_split("test").source
    # scale 1 = the stored image's size; CelebA's own images are 178 x 218, the shared copy
    # 102 x 125: --scale-base 1.745 places faces at 0.4-1.5x of CelebA's size.
    rng_root = np.random.SeedSequence(args.seed)
    children = rng_root.spawn(len(keys))

    def load_placed(i):
        rng = np.random.default_rng(children[i])
        others = [np.asarray(source.load(keys[int(j)])) for j in rng.integers(0, len(keys), 4)]
        return place(np.asarray(source.load(keys[i])), others, rng, args.scale_base)

    analyzer = Analyzer(predictor, largest_only=True, upsample=args.upsample)
    started = time.perf_counter()
    piped, found = _through_pipeline(analyzer, [(k, lambda i=i: load_placed(i))
                                                for i, k in enumerate(keys)],
                                     len(predictor.attributes))
    seconds = time.perf_counter() - started
    aligned_all = evaluate_predictions(direct, labels, mask, thresholds=predictor.thresholds,
                                       n_bootstrap=0)
    _write(args.out, {"model": args.model, "images": len(keys), "scale_base": args.scale_base,
                      "upsample": args.upsample, "seed": args.seed,
                      "found_by_detector": float(np.isin(found, ["hog", "cnn"]).mean()),
                      "found_as_crop": float((found == "crop").mean()),
                      "aligned_mean_accuracy_all": 100 * aligned_all.mean_accuracy,
                      "seconds": round(seconds, 1),
                      **_paired(direct, piped, labels, mask, identities, predictor.thresholds)},
           load)


def lfw(args):
    load = os.getloadavg()
    predictor = load_model(args.model)
    dataset = open_dataset(args.data)
    if args.limit and args.limit < len(dataset):  # a seeded random sample, the same for all
        rows = np.random.default_rng(args.seed).choice(len(dataset), args.limit, replace=False)
        dataset = dataset.subset(np.sort(rows))
    male = predictor.attributes.index("Male")
    rows = {}
    for detector in args.detectors:
        analyzer = Analyzer(predictor, largest_only=True, detector=detector,
                            upsample=args.upsample)
        started = time.perf_counter()
        scores, found = _through_pipeline(
            analyzer, [(k, lambda k=k: dataset.source.load(k)) for k in dataset.keys],
            len(predictor.attributes))
        known = dataset.mask[:, 0]
        hit = ~np.isnan(scores[:, 0])
        correct = (scores[:, male] >= predictor.thresholds[male]) == (dataset.labels[:, 0] == 1)
        rows[detector] = {"photos": len(dataset), "seconds": round(time.perf_counter() - started, 1),
                          "found": float(hit.mean()),
                          "found_by_detector": float(np.isin(found, ["hog", "cnn"]).mean()),
                          "gender_known": int(known.sum()),
                          "male_accuracy": float(correct[hit & known].mean()),
                          "male_accuracy_female": float(correct[hit & known & (dataset.labels[:, 0] == 0)].mean()),
                          "male_accuracy_male": float(correct[hit & known & (dataset.labels[:, 0] == 1)].mean())}
        print(detector, rows[detector], flush=True)
    _write(args.out, {"model": args.model, "upsample": args.upsample, "sample": args.limit or None,
                      "seed": args.seed, "detectors": rows}, load)


def _conditions() -> dict:
    """name -> function (PIL RGB photo -> PIL RGB photo): what ``shift`` does to each photo."""
    def scaled(image, factor):
        size = (max(8, round(image.width * factor)), max(8, round(image.height * factor)))
        return image.resize(size, Image.Resampling.LANCZOS)

    def covered(image):  # a grey band from under the nose to the chin of a centred LFW face
        out, (w, h) = image.copy(), image.size
        ImageDraw.Draw(out).rounded_rectangle((0.3 * w, 0.53 * h, 0.7 * w, 0.75 * h),
                                              radius=0.05 * w, fill=(128, 128, 128))
        return out

    def tight(image):  # the centred 45 %: the face fills the frame, forehead and chin cut
        w, h = image.size
        return image.crop((round(0.275 * w), round(0.275 * h), round(0.725 * w),
                           round(0.725 * h)))
    return {
        "as is": lambda image: image,
        "grey": lambda image: image.convert("L").convert("RGB"),
        "half size (face ~28 px)": lambda image: scaled(image, 0.5),
        "double size": lambda image: scaled(image, 2.0),
        "blurred (Gaussian, 2 px)": lambda image: image.filter(ImageFilter.GaussianBlur(2)),
        "JPEG quality 10": lambda image: jpeg_round_trip(image, 10),
        "tilted 40 degrees": lambda image: image.rotate(40, resample=Image.Resampling.BICUBIC),
        "sideways (90 degrees, no EXIF)": lambda image: image.transpose(
            Image.Transpose.ROTATE_90),
        "tight crop (centre 45 %)": tight,
        "lower face covered": covered,
    }


def shift(args):
    load = os.getloadavg()
    predictor = load_model(args.model)
    dataset = open_dataset(args.data)
    known = np.flatnonzero(dataset.mask[:, 0])
    rows = np.sort(np.random.default_rng(args.seed).choice(known, args.photos, replace=False))
    dataset = dataset.subset(rows)
    male = predictor.attributes.index("Male")
    truth = dataset.labels[:, 0] == 1
    analyzer = Analyzer(predictor, largest_only=True, detector=args.detector)
    results, reference = {}, None
    for name, change in _conditions().items():
        started = time.perf_counter()
        scores, found = _through_pipeline(
            analyzer, [(k, lambda k=k, change=change: np.asarray(change(Image.fromarray(
                np.asarray(dataset.source.load(k))).convert("RGB")))) for k in dataset.keys],
            len(predictor.attributes))
        hit = ~np.isnan(scores[:, 0])
        correct = (scores[:, male] >= predictor.thresholds[male]) == truth
        if reference is None:
            reference = (hit, correct)
        both = hit & reference[0]
        results[name] = {"found": float(hit.mean()),
                         "found_by_detector": float(np.isin(found, ["hog", "cnn"]).mean()),
                         "male_accuracy": float(correct[hit].mean()) if hit.any() else None,
                         "paired_faces": int(both.sum()),
                         "paired_as_is": float(reference[1][both].mean()) if both.any() else None,
                         "paired_here": float(correct[both].mean()) if both.any() else None,
                         "seconds": round(time.perf_counter() - started, 1)}
        print(f"{name:<32} found {100 * hit.mean():5.1f} %  Male "
              f"{100 * results[name]['male_accuracy']:5.1f} %  paired "
              f"{100 * results[name]['paired_as_is']:5.1f} -> "
              f"{100 * results[name]['paired_here']:5.1f} % on {both.sum()}", flush=True)
    false_turns = _false_turns(args.upright_photos) if args.upright_photos else None
    _write(args.out, {"model": args.model, "detector": args.detector, "photos": args.photos,
                      "seed": args.seed, "conditions": results, "false_turns": false_turns},
           load)


def _false_turns(folder) -> dict:
    """How often the auto detector's search of sideways photos takes a face from a turned copy
    of photos that all stand upright (FairFace's; each such face is a false one), and how often
    it runs (the photos where HOG finds no upright face)."""
    from mtfap.faces.detect import CascadeDetector

    dataset = open_dataset(folder)
    cascade = CascadeDetector()
    searched = turned = 0
    for key in dataset.keys:
        image = np.asarray(dataset.source.load(key))
        if cascade.hog.detect(image):
            continue
        searched += 1
        turned += bool(cascade.detect_turned(image))
    result = {"photos": len(dataset), "searched": searched, "taken_from_a_turned_copy": turned}
    print("upright photos:", result, flush=True)
    return result


def speed(args):
    load = os.getloadavg()
    dataset = open_dataset(args.data)
    keys = dataset.keys[:args.photos]
    folder = Path(tempfile.mkdtemp(prefix="mtfap-speed-"))
    paths = []
    for key in keys:  # real files, so that decoding is measured as a user's run decodes
        path = folder / Path(key).name
        path.write_bytes(dataset.source.read_bytes(key))
        paths.append(path)
    analyzer = Analyzer(args.model, workers=args.workers)
    list(analyzer.analyze_paths(paths[:16], batch_size=args.batch_size))  # warm-up
    started = time.perf_counter()
    steps, faces = {}, 0
    for result in analyzer.analyze_paths(paths, batch_size=args.batch_size):
        faces += len(result.faces)
        for step, value in result.seconds.items():
            steps[step] = steps.get(step, 0.0) + value
    wall = time.perf_counter() - started
    startup = []
    for _ in range(args.startup_runs):
        begin = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mtfap", "predict", str(paths[0]), "--model",
                        args.model], check=True, capture_output=True)
        startup.append(time.perf_counter() - begin)
    _write(args.out, {"model": args.model, "photos": len(paths), "faces": faces,
                      "workers": analyzer.workers, "batch_size": args.batch_size,
                      "wall_seconds": round(wall, 2), "faces_per_second": faces / wall,
                      "step_seconds_per_face": {k: v / max(faces, 1) for k, v in steps.items()},
                      "startup_seconds": startup,
                      "startup_median": float(np.median(startup)) if startup else math.nan},
           load)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    for name, data in (("aligned", "../shared/data/celeba"), ("placed", "../shared/data/celeba"),
                       ("lfw", "../shared/data/lfw"), ("speed", "../shared/data/lfw"),
                       ("shift", "../shared/data/lfw")):
        p = sub.add_parser(name)
        p.add_argument("--model", default="celeba-dlib-frozen")
        p.add_argument("--data", default=data)
        p.add_argument("--out", default=f"benchmarks/results/predict_{name}.json")
    sub.choices["aligned"].add_argument("--detector", default="hog")
    sub.choices["placed"].add_argument("--scale-base", type=float, default=1.0)
    sub.choices["placed"].add_argument("--upsample", type=int, default=1)
    sub.choices["placed"].add_argument("--seed", type=int, default=0)
    sub.choices["lfw"].add_argument("--detectors", nargs="+", default=["hog", "cnn"])
    sub.choices["lfw"].add_argument("--upsample", type=int, default=1)
    sub.choices["lfw"].add_argument("--limit", type=int, default=0,
                                    help="a random sample of this many photos (0: all)")
    sub.choices["lfw"].add_argument("--seed", type=int, default=0)
    sub.choices["shift"].add_argument("--photos", type=int, default=1000)
    sub.choices["shift"].add_argument("--detector", default="auto")
    sub.choices["shift"].add_argument("--seed", type=int, default=0)
    sub.choices["shift"].add_argument("--upright-photos", default=None,
                                      help="a dataset of upright photos (FairFace's) on which to "
                                           "count faces wrongly taken from turned copies")
    sub.choices["speed"].add_argument("--photos", type=int, default=1000)
    sub.choices["speed"].add_argument("--workers", type=int, default=None)
    sub.choices["speed"].add_argument("--batch-size", type=int, default=32)
    sub.choices["speed"].add_argument("--startup-runs", type=int, default=5)
    args = parser.parse_args()
    {"aligned": aligned, "placed": placed, "lfw": lfw, "speed": speed,
     "shift": shift}[args.what](args)


if __name__ == "__main__":
    main()
