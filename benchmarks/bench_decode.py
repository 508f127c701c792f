"""Images per second through the loader: decoding JPEGs from the zip vs reading the uint8 cache.

For each input size, three ways of producing normalised batches of ``--batch-size`` images:
(a) decode from the zip in the loader, with 0 and with 2 worker processes;
(b) read the decoded-image memmap cache (evaluation batches, and training batches with the
    default augmentation). Each is timed ``--repeats`` times over the same ``--batches``
batches; the table shows the median (min-max) and the speed-up of the cache over decoding.
Optionally (``--build-full-cache``) the one-off cache of every CelebA image is built and timed
at the first size; the cache is kept for later runs.

Example::

    python benchmarks/bench_decode.py --data ../shared/data/celeba --cache-dir /work/cache/mtfap \\
        --build-full-cache --out /work/cache/mtfap/bench_decode.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from mtfap.backbones.base import InputSpec
from mtfap.data.celeba import read_celeba
from mtfap.data.cache import build_cache, find_cache
from mtfap.data.loader import FaceImageDataset, make_loader


def images_per_second(loader, batches: int) -> float:
    """Throughput of the first ``batches`` batches of ``loader`` (worker start-up included)."""
    start, seen = time.perf_counter(), 0
    for i, batch in enumerate(loader):
        seen += len(batch.index)
        if i + 1 == batches:
            break
    return seen / (time.perf_counter() - start)


def summarise(rates: list[float]) -> dict:
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates),
            "runs": rates}


def main(argv=None) -> int:
    repo = Path(__file__).resolve().parents[1]
    default_data = Path(os.environ.get("MTFAP_DATA", repo.parent / "shared" / "data")) / "celeba"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", type=Path, default=default_data, help="CelebA folder")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="decoded-image cache folder (default: $MTFAP_CACHE or ~/.cache/mtfap)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[150, 64],
                        help="square input sizes in pixels (150 = the dlib backbone)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2],
                        help="DataLoader worker counts for decoding from the zip")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=200, help="batches timed per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration")
    parser.add_argument("--build-full-cache", action="store_true",
                        help="build (and time) the cache of every image at the first size")
    parser.add_argument("--decode-threads", type=int, default=2,
                        help="threads decoding images while the cache is built")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch threads for the per-batch float ops in this process (on an "
                             "oversubscribed machine more threads make these small ops slower)")
    parser.add_argument("--out", type=Path, default=Path("bench_decode.json"), help="JSON results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.torch_threads)

    faces = read_celeba(args.data)
    count = args.batches * args.batch_size
    if count > len(faces):
        parser.error(f"--batches x --batch-size = {count} is more than the {len(faces)} images")
    # The same images for every configuration: the first ones of the training split.
    subset = faces.subset(faces.split_indices("train")[:count])
    results = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "torch": torch.__version__, "load_average_start": os.getloadavg()},
        "images": len(subset), "batch_size": args.batch_size, "repeats": args.repeats,
        "sizes": {},
    }

    if args.build_full_cache:
        spec = InputSpec(size=(args.sizes[0], args.sizes[0]))
        existing = find_cache(faces, spec, args.cache_dir)
        if existing is None:
            start = time.perf_counter()
            cache = build_cache(faces, spec, args.cache_dir, num_threads=args.decode_threads)
            seconds, how = time.perf_counter() - start, "built now"
        else:
            cache = existing
            sidecar = json.loads(cache.data_path.with_suffix(".json").read_text())
            seconds, how = sidecar["build_seconds"], "reused; seconds from its sidecar"
        results["full_cache"] = {
            "images": len(cache.keys), "size": list(spec.size), "seconds": seconds, "how": how,
            "images_per_second": len(cache.keys) / seconds, "path": str(cache.data_path),
            "gigabytes": cache.data_path.stat().st_size / 1e9}
        print(f"full cache: {len(cache.keys)} images at {spec.size[0]}x{spec.size[1]} in "
              f"{seconds:.1f} s ({len(cache.keys) / seconds:.0f} img/s, {how}), "
              f"{results['full_cache']['gigabytes']:.2f} GB at {cache.data_path}")

    rows = []
    for size in args.sizes:
        spec = InputSpec(size=(size, size))
        configs = {f"zip, {w} workers": dict(cache=False, num_workers=w, train=False)
                   for w in args.workers}
        cached = FaceImageDataset(subset, spec, cache_dir=args.cache_dir,
                                  num_threads=args.decode_threads)  # built unless it exists
        configs["cache"] = dict(train=False)
        configs["cache + augmentation"] = dict(train=True)
        measured = {}
        for name, options in configs.items():
            source = cached if options.get("cache", True) else subset
            rates = []
            for repeat in range(args.repeats):
                loader = make_loader(source, spec, batch_size=args.batch_size, seed=repeat,
                                     cache_dir=args.cache_dir, **options)
                rates.append(images_per_second(loader, args.batches))
            measured[name] = summarise(rates)
            print(f"{size}x{size} {name:>22}: {measured[name]['median']:8.0f} img/s "
                  f"(runs {', '.join(f'{r:.0f}' for r in rates)})", flush=True)
        results["sizes"][str(size)] = measured
        baseline = measured[f"zip, {args.workers[0]} workers"]["median"]
        for name, m in measured.items():
            rows.append((f"{size}x{size}", name, m["median"], m["min"], m["max"],
                         m["median"] / baseline))

    results["machine"]["load_average_end"] = os.getloadavg()
    print(f"\n{'size':>8} | {'source':>22} | {'img/s median':>12} | {'min-max':>13} | "
          f"x zip({args.workers[0]})")
    for size, name, median, low, high, ratio in rows:
        print(f"{size:>8} | {name:>22} | {median:12.0f} | {low:6.0f}-{high:<6.0f} | {ratio:6.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, args.out)
    print(f"\nwrote {args.out}; load average {results['machine']['load_average_start']} -> "
          f"{results['machine']['load_average_end']} (shared machine)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
