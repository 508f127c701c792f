"""Indexing throughput and the cost of re-running ``mtfap index`` (docs/SEARCH.md,
"Indexing").

1. ``--photos`` LFW photos (125 x 125, one folder per person, as a collection would be) are
   indexed from scratch as ``mtfap index`` does by default (HOG detection, landmarks,
   alignment, the model, dlib's identity descriptor), on one thread: faces per second;
2. the index is run again over the unchanged collection, in the process (counting the
   decoder's calls and the files read: both must be 0) and as the command a user types
   (``python -m mtfap index``, start-up and imports included, median of 3 runs);
3. one photo in a hundred gets a new modification time with the same content: the re-run reads
   (hashes) those files and decodes none.

    OMP_NUM_THREADS=1 python benchmarks/bench_index.py --lfw ../shared/data/lfw --out benchmarks/results/index.json
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from mtfap.applications.index import CollectionIndexer, default_model_name
from mtfap.data.decode import decode_image
from mtfap.io import write_json


def load_average() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def extract(lfw: Path, count: int, folder: Path) -> int:
    """The first ``count`` LFW photos (by name) as a collection, one folder per person."""
    with zipfile.ZipFile(lfw / "lfw-deepfunneled.zip") as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".jpg"))[:count]
        for name in names:
            path = folder / Path(name).relative_to("lfw-deepfunneled")
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(archive.read(name))
    return len(names)


def counting_indexer(model: str) -> tuple[CollectionIndexer, list]:
    indexer = CollectionIndexer(model, workers=1)
    calls = []

    def decode(*args, **kwargs):
        calls.append(args[1])
        return decode_image(*args, **kwargs)
    indexer.decode = decode
    return indexer, calls


def timed_run(indexer: CollectionIndexer, photos: Path, db: Path, **options):
    started = time.perf_counter()
    report = indexer.run(photos, db, **options)
    return time.perf_counter() - started, report


def command_seconds(photos: Path, db: Path, runs: int = 3) -> list[float]:
    command = [sys.executable, "-m", "mtfap", "index", str(photos), "--db", str(db),
               "--workers", "1", "--no-progress"]
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
        times.append(time.perf_counter() - started)
    return times


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lfw", type=Path, default=Path("../shared/data/lfw"))
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--model", default=None, help="default: the default shipped model")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mtfap-bench-index"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/index.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = args.model or default_model_name()
    report = {"command": f"OMP_NUM_THREADS=1 python benchmarks/bench_index.py --lfw {args.lfw} "
                         f"--photos {args.photos} --out {args.out}"
                         + (f" --model {args.model}" if args.model else ""),
              "machine": {"cpu": platform.processor() or platform.machine(),
                          "cpu_count": os.cpu_count(), "python": platform.python_version(),
                          "torch": torch.__version__, "threads": 1},
              "model": model, "load_average_before": load_average()}
    photos, db = args.work / "lfw", args.work / "lfw.db"
    report["photos"] = extract(args.lfw, args.photos, photos)
    with threadpool_limits(1):
        indexer, calls = counting_indexer(model)
        seconds, first = timed_run(indexer, photos, db, rebuild=True)
        report["first_run"] = {
            "files": first.new, "faces": first.faces, "unreadable": len(first.errors),
            "seconds": round(seconds, 1), "faces_per_second": round(first.faces / seconds, 2),
            "photos_per_second": round(first.new / seconds, 2),
            "seconds_by_step": {k: round(v, 2) for k, v in first.seconds.items()},
            "decoder_calls": len(calls)}
        print("first run", report["first_run"], flush=True)

        indexer, calls = counting_indexer(model)
        seconds, again = timed_run(indexer, photos, db)
        report["rerun_unchanged"] = {
            "seconds_in_process": round(seconds, 3), "unchanged": again.unchanged,
            "decoder_calls": len(calls), "files_read": again.read}
        command = command_seconds(photos, db)
        report["rerun_unchanged"]["seconds_as_command_median_of_3"] = round(
            float(np.median(command)), 2)
        print("re-run", report["rerun_unchanged"], flush=True)

        touched = sorted(photos.rglob("*.jpg"))[::100]
        for path in touched:
            stat = path.stat()
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        indexer, calls = counting_indexer(model)
        seconds, after_touch = timed_run(indexer, photos, db)
        report["rerun_touched"] = {
            "touched": len(touched), "seconds_in_process": round(seconds, 3),
            "reported_touched": after_touch.touched, "files_read": after_touch.read,
            "decoder_calls": len(calls)}
        print("touched", report["rerun_touched"], flush=True)
    report["database_mb"] = round(db.stat().st_size / 2**20, 2)
    report["load_average_after"] = load_average()
    write_json(args.out, report)
    print(f"load average {report['load_average_before']} -> {report['load_average_after']}; "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
