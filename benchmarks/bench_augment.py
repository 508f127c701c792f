"""The training augmentation's cost per batch: what the data pipeline adds to each step.

Times ``mtfap.data.transforms.Augmentation`` on a batch of random float images (the collate's
input: (N, 3, H, W) in [0, 1]) for the settings that the fine-tune recipe and the shipped
model's training use, with torch's threads as training has them (``--threads`` to change).
Each setting runs in interleaved rounds; the table gives the median milliseconds per batch and
per image.

To compare two versions of the code, run the script once with each on ``PYTHONPATH`` (for
example a ``git worktree`` of the older commit), one after the other on an idle machine:

    python benchmarks/bench_augment.py --rounds 40 --out after.json
    PYTHONPATH=/tmp/old/src python benchmarks/bench_augment.py --rounds 40 --out before.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

import mtfap
from mtfap.data.transforms import Augmentation

SETTINGS = {
    "flip, crop, shift, colour (the default)": {},
    "+ framing (the recipe)": {"frame_prob": 0.5},
    "+ framing, blur and grey (the default model's version 3)": {
        "frame_prob": 0.5, "blur_prob": 0.3, "grey_prob": 0.1},
    "+ JPEG (the default model's version 4)": {
        "frame_prob": 0.5, "blur_prob": 0.3, "grey_prob": 0.1, "jpeg_prob": 0.3},
    "+ covered mouths (measured, not shipped)": {
        "frame_prob": 0.5, "blur_prob": 0.3, "grey_prob": 0.1, "jpeg_prob": 0.3,
        "cover_prob": 0.3, "cover_area": (0.08, 0.16), "cover_aspect": (1.5, 3.0),
        "cover_centre": (0.42, 0.70, 0.58, 0.78)},
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="images per batch (the recipe's)")
    parser.add_argument("--size", type=int, default=150, help="image side (dlib's input)")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's, as in training)")
    parser.add_argument("--out", help="JSON file for the results")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.size < 8 or args.rounds < 1:
        parser.error("--batch, --rounds must be positive and --size at least 8")

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(args.seed)
    images = torch.rand(args.batch, 3, args.size, args.size, generator=generator)
    augmentations = {name: Augmentation(**kwargs) for name, kwargs in SETTINGS.items()}
    times = {name: [] for name in SETTINGS}
    for name, augment in augmentations.items():  # warm-up
        augment(images, range(args.batch), seed=args.seed, epoch=0)
    names = list(SETTINGS)
    for round_ in range(args.rounds):
        for k in range(len(names)):
            name = names[(round_ + k) % len(names)]
            indices = range(round_ * args.batch, (round_ + 1) * args.batch)
            start = time.perf_counter()
            augmentations[name](images, indices, seed=args.seed, epoch=1)
            times[name].append(time.perf_counter() - start)

    load = os.getloadavg()
    print(f"mtfap from {os.path.dirname(mtfap.__file__)}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {platform.processor() or platform.machine()}; "
          f"load average {load[0]:.2f}")
    print(f"{'setting':60s} {'ms/batch':>9s} {'ms/image':>9s}")
    rows = []
    for name in names:
        median = statistics.median(times[name]) * 1000
        rows.append({"setting": name, "kwargs": SETTINGS[name], "ms_per_batch": median,
                     "ms_per_image": median / args.batch})
        print(f"{name:60s} {median:9.1f} {median / args.batch:9.3f}")
    if args.out:
        result = {"batch": args.batch, "size": args.size, "rounds": args.rounds,
                  "threads": torch.get_num_threads(), "torch": torch.__version__,
                  "mtfap_path": os.path.dirname(mtfap.__file__), "load_average": load,
                  "machine": platform.machine(), "results": rows}
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
