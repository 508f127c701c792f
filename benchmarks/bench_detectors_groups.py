"""The share of FairFace photos in which each dlib detector finds a face, by group.

FairFace's photos are tight face crops (the face fills the frame, many turned heads), balanced
over seven race groups. For a sample of them (the same photos for every detector: ``--per-race``
drawn at random from each race group, seeded), each detector runs on the photo as
``mtfap predict`` gives it (HOG or CNN/MMOD, ``--upsample`` doublings) and the share with at
least one face is reported per race, gender and age group, with the seconds per photo. What
``mtfap predict`` does when a detector finds nothing (the whole photo taken as a face crop) is
not counted here: this is the detectors alone.

    python benchmarks/bench_detectors_groups.py --fairface ../shared/data/fairface \
        --per-race 100 --detectors hog cnn
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mtfap.data.fairface import AGE_GROUPS, GENDERS, RACES, read_fairface
from mtfap.faces.detect import make_detector
from mtfap.io import write_json


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fairface", type=Path, default=Path("../shared/data/fairface"))
    parser.add_argument("--per-race", type=int, default=100,
                        help="photos drawn from each race group (0: all 5,000)")
    parser.add_argument("--detectors", nargs="+", default=["hog", "cnn"])
    parser.add_argument("--upsample", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path,
                        default=Path("benchmarks/results/detectors_fairface.json"))
    args = parser.parse_args()

    dataset = read_fairface(args.fairface)
    groups = [dataset.meta["groups"][key] for key in dataset.keys]
    race = np.array([g["race"] for g in groups])
    rng = np.random.default_rng(args.seed)
    if args.per_race:
        rows = np.sort(np.concatenate([
            rng.choice(np.flatnonzero(race == r), min(args.per_race, int((race == r).sum())),
                       replace=False) for r in RACES]))
    else:
        rows = np.arange(len(dataset))
    images = [np.asarray(dataset.source.load(dataset.keys[i])) for i in rows]
    picked = [groups[i] for i in rows]
    result = {"photos": len(rows), "per_race": args.per_race, "seed": args.seed,
              "upsample": args.upsample, "load_average_start": load_average(),
              "cpus": os.cpu_count(), "detectors": {}}
    for name in args.detectors:
        detector = make_detector(name, upsample=args.upsample)
        detector.detect(images[0])  # load the model outside the timing
        found, started = [], time.perf_counter()
        for image in tqdm(images, desc=name):
            found.append(bool(detector.detect(image)))
        seconds = time.perf_counter() - started
        found = np.array(found)

        def share(key, values):
            return {v: round(100 * float(found[[g[key] == v for g in picked]].mean()), 2)
                    for v in values if any(g[key] == v for g in picked)}
        by_race = share("race", RACES)
        result["detectors"][name] = {
            "found_percent": round(100 * float(found.mean()), 2),
            "by_race": by_race, "by_gender": share("gender", GENDERS),
            "by_age": share("age", AGE_GROUPS),
            "race_gap_points": round(max(by_race.values()) - min(by_race.values()), 2),
            "seconds_per_photo": round(seconds / len(images), 4)}
        print(name, result["detectors"][name])
    result["load_average_end"] = load_average()
    write_json(args.out, result)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
