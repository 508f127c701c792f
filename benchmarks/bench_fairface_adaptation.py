"""Two models side by side on FairFace's held-out half: Male accuracy by group, paired.

    python benchmarks/bench_fairface_adaptation.py --fairface ../shared/data/fairface \
        --models celeba-dlib-finetuned path/to/adapted --out benchmarks/results/fairface_adaptation.json

The held-out half is the ``test`` split of ``mtfap.data.fairface.fairface_halves`` (seed 0): the
photos a model trained on the other half never saw. Every photo goes through ``mtfap predict``'s
pipeline once (the ``auto`` detector, the largest face, alignment onto the first model's
template); every model then scores the same aligned faces, so the comparison is paired and only
the networks differ (the models must share the alignment template: export the second with
``--data`` on the first one's training images). Reported: the share of faces found, ``Male``
accuracy per model by gender, race, race x gender and age group, the largest gap between races,
and the paired difference (second - first) with a 95 % interval from resampling photos.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from mtfap.applications.analyze import Analyzer
from mtfap.data.fairface import AGE_GROUPS, RACES, fairface_halves, read_fairface
from mtfap.io import write_json
from mtfap.model import load_model


def paired_interval(a: np.ndarray, b: np.ndarray, rng, draws: int = 2000) -> list[float]:
    """95 % interval of mean(b) - mean(a) over photos resampled with replacement."""
    picks = rng.integers(0, len(a), (draws, len(a)))
    diffs = b[picks].mean(1) - a[picks].mean(1)
    return [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fairface", required=True, type=Path)
    parser.add_argument("--models", nargs=2, required=True, metavar=("FIRST", "SECOND"))
    parser.add_argument("--out", type=Path,
                        default=Path("benchmarks/results/fairface_adaptation.json"))
    parser.add_argument("--seed", type=int, default=0, help="seed of the halves")
    args = parser.parse_args()

    photos = fairface_halves(read_fairface(args.fairface), seed=args.seed).get_split("test")
    first, second = (load_model(m) for m in args.models)
    if first.template != second.template:
        raise SystemExit("the two models have different alignment templates: export the second "
                         "with --data on the first one's training images")
    started = time.perf_counter()
    analyzer = Analyzer(first, largest_only=True, keep_aligned=True)
    male = first.attributes.index("Male")
    rows, aligned = [], []
    for row, result in enumerate(analyzer.analyze_dataset(photos, batch_size=64, progress=True)):
        if result.faces:
            rows.append(row)
            aligned.append(result.faces[0].aligned)
    scores = {name: model.predict_proba(aligned)[:, model.attributes.index("Male")]
              for name, model in zip(args.models, (first, second))}
    rows = np.array(rows)
    truth = photos.labels[rows, 0].astype(bool)
    groups = [photos.meta["groups"][photos.keys[r]] for r in rows]
    race = np.array([g["race"] for g in groups])
    gender = np.array([g["gender"] for g in groups])
    age = np.array([g["age"] for g in groups])
    correct = {name: ((scores[name] >= model.thresholds[male]) == truth).astype(float)
               for name, model in zip(args.models, (first, second))}
    rng = np.random.default_rng(0)
    a, b = args.models

    def summary(select) -> dict:
        return {"faces": int(select.sum()),
                **{name: 100 * float(correct[name][select].mean()) for name in args.models},
                "difference": 100 * float(correct[b][select].mean() - correct[a][select].mean()),
                "difference_ci95": [100 * v for v in paired_interval(
                    correct[a][select], correct[b][select], rng)]}

    everyone = np.ones(len(rows), bool)
    table = {"all": summary(everyone), "age 20 and over": summary(np.isin(age, AGE_GROUPS[3:]))}
    table |= {g: summary(gender == g) for g in ("Female", "Male")}
    table |= {r: summary(race == r) for r in RACES}
    table |= {f"{r} / {g}": summary((race == r) & (gender == g)) for r in RACES
              for g in ("Female", "Male")}
    table |= {f"age {x}": summary(age == x) for x in AGE_GROUPS}
    gaps = {name: max(table[r][name] for r in RACES) - min(table[r][name] for r in RACES)
            for name in args.models}
    report = {"photos": len(photos), "faces": len(rows),
              "found": 100 * len(rows) / len(photos), "models": args.models,
              "male_accuracy": table, "largest_gap_between_races": gaps,
              "seconds": time.perf_counter() - started}
    write_json(args.out, report)
    print(f"{len(rows)} faces of {len(photos)} held-out photos")
    print(f"{'group':32} {'faces':>5} {a[:14]:>14} {b[:14]:>14} {'diff [95 % CI]':>22}")
    for name, row in table.items():
        low, high = row["difference_ci95"]
        print(f"{name:32} {row['faces']:5d} {row[a]:14.1f} {row[b]:14.1f} "
              f"{row['difference']:+7.1f} [{low:+5.1f}, {high:+5.1f}]")
    print("largest gap between races:", json.dumps({k: round(v, 1) for k, v in gaps.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
