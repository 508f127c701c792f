"""Benchmark of face search over an index of a million faces (docs/SEARCH.md, "Measurements").

1. generates an index of ``--faces`` faces in a temporary SQLite file through
   ``IndexStore.write_batch`` (files of 1-4 faces, 10,000 files per transaction): probabilities
   from a low-rank logistic model with CelebA-like base rates (so attributes correlate), and
   unit 128-D descriptors drawn around one centre per identity (about 10 faces each);
2. times loading the matrices: from SQLite, writing the cache, and from the cache;
3. times ``old man wearing glasses`` (parse + rank, top 20), a person search (top 20 under
   0.6) and a "like this face" search, each over ``--runs`` runs with different targets, and
   reports median and 90th percentile latency.

The machine's load average is read before and after, and everything goes to one JSON file.

    python benchmarks/bench_search.py --out benchmarks/results/search.json
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from mtfap.attributes import CELEBA_ATTRIBUTES
from mtfap.io import write_json
from mtfap.search.query import parse_query
from mtfap.search.rank import rank_like, rank_person, rank_query, squared_norms
from mtfap.search.store import FaceRecord, FileRecord, IndexStore

QUERY = "old man wearing glasses"
FILES_PER_BATCH = 10_000


def load_average() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def generated_faces(n_faces: int, seed: int = 0):
    """Probabilities (n, 40) float32 and descriptors (n, 128) float32 with some structure."""
    rng = np.random.default_rng(seed)
    k, rank = len(CELEBA_ATTRIBUTES), 6
    base_rate = rng.uniform(0.03, 0.6, k)
    logits = (rng.standard_normal((n_faces, rank), dtype=np.float32)
              @ rng.normal(0, 1.2, (rank, k)).astype(np.float32)
              + np.log(base_rate / (1 - base_rate)).astype(np.float32))
    probabilities = 1 / (1 + np.exp(-logits))
    identities = rng.integers(0, max(1, n_faces // 10), n_faces)
    centres = rng.standard_normal((identities.max() + 1, 128), dtype=np.float32)
    descriptors = centres[identities] / np.linalg.norm(centres[identities], axis=1,
                                                       keepdims=True)
    descriptors += rng.normal(0, 0.03, descriptors.shape).astype(np.float32)
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    return probabilities.astype(np.float32), descriptors


def build_index(path: Path, n_faces: int) -> dict:
    """Write ``n_faces`` generated faces through the store; returns the timing."""
    probabilities, descriptors = generated_faces(n_faces)
    faces_per_file = np.random.default_rng(1).integers(1, 5, n_faces)  # 1-4, mean 2.5
    landmarks = np.zeros((5, 2), dtype=np.float32)
    start = time.perf_counter()
    with IndexStore.create_or_open(path, "bench", "1", CELEBA_ATTRIBUTES, 128) as store:
        batch, face, n_files = [], 0, 0
        while face < n_faces:
            count = min(int(faces_per_file[n_files]), n_faces - face)
            batch.append(FileRecord(
                f"{n_files // 1000:04d}/img_{n_files:07d}.jpg", 250_000, 10**18 + n_files,
                faces=[FaceRecord((40.0, 50.0, 140.0, 150.0), probabilities[f], 0.99, "hog",
                                  landmarks, descriptors[f]) for f in range(face, face + count)]))
            face, n_files = face + count, n_files + 1
            if len(batch) == FILES_PER_BATCH or face == n_faces:
                store.write_batch(batch)
                batch = []
    seconds = time.perf_counter() - start
    return {"faces": n_faces, "files": n_files, "seconds": round(seconds, 2),
            "faces_per_second": round(n_faces / seconds),
            "database_mb": round(path.stat().st_size / 2**20, 1)}


def timed(function) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def latency(function, runs: int) -> dict:
    """Median and 90th percentile (ms) of ``function(i)`` over ``runs`` calls, after a warm-up."""
    function(runs)
    times = []
    for i in range(runs):
        start = time.perf_counter()
        function(i)
        times.append((time.perf_counter() - start) * 1000)
    return {"runs": runs, "median_ms": round(float(np.median(times)), 1),
            "p90_ms": round(float(np.percentile(times, 90)), 1),
            "min_ms": round(min(times), 1)}


def measure_loading(path: Path) -> tuple[dict, object]:
    with IndexStore.open(path) as store:
        sql, _ = timed(lambda: store.load_matrix(cache=False))
        sql_descriptors, _ = timed(lambda: store.load_matrix(descriptors=True, cache=False))
        cache_write, _ = timed(lambda: store.load_matrix(descriptors=True))
        cached, _ = timed(lambda: store.load_matrix())
        cached_descriptors, matrix = timed(lambda: store.load_matrix(descriptors=True))
        paths, _ = timed(lambda: store.paths(matrix.file_ids[:20]))
    seconds = {"sqlite_probabilities": sql, "sqlite_probabilities_descriptors": sql_descriptors,
               "sqlite_and_cache_write_probabilities_descriptors": cache_write,
               "cache_probabilities": cached, "cache_probabilities_descriptors":
               cached_descriptors, "paths_of_20_rows": paths}
    cache_mb = Path(f"{path}.matrix.npz").stat().st_size / 2**20
    return {**{k: round(v, 3) for k, v in seconds.items()},
            "cache_mb": round(cache_mb, 1)}, matrix


def measure_search(matrix, runs: int) -> dict:
    attributes = matrix.attributes
    targets = np.random.default_rng(2).integers(0, len(matrix), runs + 1)
    norms_seconds, norms = timed(lambda: squared_norms(matrix.descriptors))
    results = {
        "query": latency(lambda i: rank_query(parse_query(QUERY, attributes),
                                              matrix.probabilities, attributes, limit=20), runs),
        "person": latency(lambda i: rank_person(matrix.descriptors[targets[i]],
                                                matrix.descriptors, 20, norms=norms), runs),
        "person_without_precomputed_norms": latency(
            lambda i: rank_person(matrix.descriptors[targets[i]], matrix.descriptors, 20), runs),
        "like": latency(lambda i: rank_like(matrix.probabilities[targets[i]],
                                            matrix.probabilities, 20, exclude=targets[i]), runs),
        "squared_norms_once_ms": round(norms_seconds * 1000, 1),
    }
    with threadpool_limits(1):
        results["person_one_blas_thread"] = latency(
            lambda i: rank_person(matrix.descriptors[targets[i]], matrix.descriptors, 20,
                                  norms=norms), runs)
    found = rank_person(matrix.descriptors[targets[0]], matrix.descriptors, 20, norms=norms)
    results["person_matches_of_first_target"] = len(found.rows)
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/search.json"))
    parser.add_argument("--tmp", type=Path, default=None,
                        help="folder for the temporary index (default: the system's)")
    args = parser.parse_args(argv)

    report = {"command": "python benchmarks/bench_search.py " + " ".join(
                  f"--{k} {v}" for k, v in vars(args).items() if v is not None),
              "machine": {"cpu": platform.processor() or platform.machine(),
                          "cpu_count": os.cpu_count(), "python": platform.python_version(),
                          "numpy": np.__version__, "blas": [
                              {k: p.get(k) for k in ("internal_api", "num_threads")}
                              for p in threadpool_info()]},
              "load_average_before": load_average(), "targets_ms": {"query": 100, "person": 200}}
    with tempfile.TemporaryDirectory(dir=args.tmp) as folder:
        path = Path(folder) / "bench.db"
        report["generation"] = build_index(path, args.faces)
        print("generated", report["generation"], flush=True)
        report["loading_seconds"], matrix = measure_loading(path)
        print("loading", report["loading_seconds"], flush=True)
        report["search"] = measure_search(matrix, args.runs)
        print("search", report["search"], flush=True)
    report["load_average_after"] = load_average()
    write_json(args.out, report)
    print(f"load average {report['load_average_before']} -> {report['load_average_after']}; "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
