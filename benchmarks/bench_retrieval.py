"""Retrieval quality of face search on CelebA's test split (docs/SEARCH.md, "Retrieval quality").

The 4,640 test images (official identity-disjoint partition of the shared subset) are the
collection; their true labels say which images answer each query (all its conditions hold).
For each shipped model and each way of indexing:

- ``aligned``: ``mtfap index --aligned``: each image is taken as the face, framed as in
  training (the model's own framing; no detection);
- ``detected``: ``mtfap index`` as for any photo collection: faces detected (HOG), aligned onto
  the model's template, with identity descriptors; an image whose face is missed cannot be
  found, which lowers precision and AP;

the images are ranked by each of the queries below (an image ranks at its best face), and
precision at 10 and 50 and average precision (over all the relevant images of the collection)
are computed, against a random ranking (the mean over 200 random permutations). Indexing times
(single thread) are recorded too.

    OMP_NUM_THREADS=1 python benchmarks/bench_retrieval.py --celeba ../shared/data/celeba --out benchmarks/results/retrieval.json
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from mtfap.applications.face_search import FaceSearch
from mtfap.applications.index import CollectionIndexer
from mtfap.attributes import CELEBA_ATTRIBUTES
from mtfap.evaluation.retrieval import average_precision, precision_at
from mtfap.io import write_json
from mtfap.model.shipped import shipped_models
from mtfap.search.rank import rank_query

# single attributes, pairs and triples, in words as a user would type them
QUERIES = (
    "glasses", "man", "woman", "smiling", "blond", "wearing a hat", "bald", "beard", "lipstick",
    "necktie", "mustache", "old",
    "smiling woman", "bearded man", "blond woman", "old woman", "man wearing a necktie",
    "woman wearing earrings", "man with glasses", "woman with bangs",
    "old man wearing glasses", "young woman with blond hair", "smiling woman wearing lipstick",
    "man with a mustache and a beard", "old man with gray hair", "young man wearing a hat",
    "woman with bangs, not smiling",
)
KS = (10, 50)
RANDOM_PERMUTATIONS = 200


def load_average() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def test_split(celeba: Path) -> tuple[list[str], np.ndarray]:
    """The test images' names and their (n, 40) boolean labels, in file order."""
    partition = (celeba / "list_eval_partition.txt").read_text().split()
    test = {name for name, part in zip(partition[::2], partition[1::2]) if part == "2"}
    names, labels = [], []
    for line in (celeba / "list_attr_celeba.txt").read_text().splitlines()[2:]:
        name, *values = line.split()
        if name in test:
            names.append(name)
            labels.append([v == "1" for v in values])
    return names, np.array(labels, dtype=bool)


def extract(celeba: Path, names: list[str], folder: Path) -> None:
    """The test images as files of a photo collection (once)."""
    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.jpg"))) == len(names):
        return
    with zipfile.ZipFile(celeba / "img_align_celeba.zip") as archive:
        for name in names:
            (folder / name).write_bytes(archive.read(f"img_align_celeba/{name}"))


def relevant_images(query, labels: np.ndarray) -> np.ndarray:
    keep = np.ones(len(labels), dtype=bool)
    for condition in query.conditions:
        keep &= labels[:, CELEBA_ATTRIBUTES.index(condition.attribute)] == condition.present
    return keep


def ranked_images(search: FaceSearch, query, image_of_path: dict[str, int]) -> np.ndarray:
    """The images in the order of their best face under ``query``."""
    matrix, _ = search.matrix()
    ranking = rank_query(query, matrix.probabilities, search.attributes, limit=len(matrix))
    file_ids = matrix.file_ids[ranking.rows]
    unique = np.unique(file_ids)
    with search.store() as store:
        path_of = dict(zip(unique.tolist(), store.paths(unique)))
    images = np.array([image_of_path[path_of[f]] for f in file_ids.tolist()], dtype=np.int64)
    _, first = np.unique(images, return_index=True)
    return images[np.sort(first)]


def scores(relevant_ranked: np.ndarray, total: int) -> dict:
    return {**{f"precision_at_{k}": precision_at(relevant_ranked, k) for k in KS},
            "average_precision": average_precision(relevant_ranked, total)}


def random_scores(relevant: np.ndarray, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    runs = [scores(relevant[rng.permutation(len(relevant))], int(relevant.sum()))
            for _ in range(RANDOM_PERMUTATIONS)]
    return {key: float(np.mean([r[key] for r in runs])) for key in runs[0]}


def index(photos: Path, db: Path, model: str, framing: str) -> dict:
    """Index the collection from scratch, then again (nothing to do); the times include
    opening the model."""
    started = time.perf_counter()
    report = CollectionIndexer(model, aligned=framing == "aligned", workers=1).run(
        photos, db, rebuild=True)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    rerun = CollectionIndexer(model, aligned=framing == "aligned", workers=1).run(photos, db)
    rerun_seconds = time.perf_counter() - started
    assert rerun.decoded == 0 and rerun.read == 0, "a re-run over unchanged files read some"
    return {"files": report.new, "faces": report.faces, "unreadable": len(report.errors),
            "seconds": round(seconds, 1), "faces_per_second": round(report.faces / seconds, 1),
            "rerun_unchanged_seconds": round(rerun_seconds, 3)}


def evaluate(search: FaceSearch, names: list[str], labels: np.ndarray) -> dict:
    image_of_path = {name: i for i, name in enumerate(names)}
    queries = {}
    for text in QUERIES:
        query = search.parse(text)
        relevant = relevant_images(query, labels)
        ranked = ranked_images(search, query, image_of_path)
        queries[text] = {"conditions": str(query), "relevant": int(relevant.sum()),
                         "found_images": len(ranked),
                         **{k: round(v, 4) for k, v in scores(relevant[ranked],
                                                              int(relevant.sum())).items()}}
    return queries


def mean_of(queries: dict) -> dict:
    keys = [k for k in next(iter(queries.values())) if k.startswith(("precision", "average"))]
    return {k: round(float(np.nanmean([q[k] for q in queries.values()])), 4) for k in keys}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--celeba", type=Path, default=Path("../shared/data/celeba"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/mtfap-bench-retrieval"),
                        help="where the collection's files and the indexes go")
    parser.add_argument("--models", nargs="+", default=None,
                        help="models to measure (default: every shipped model)")
    parser.add_argument("--framings", nargs="+", choices=("aligned", "detected"),
                        default=["aligned", "detected"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/retrieval.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    models = args.models or list(shipped_models())
    report = {"command": "OMP_NUM_THREADS=1 python benchmarks/bench_retrieval.py --celeba "
                         f"{args.celeba} --framings {' '.join(args.framings)} --out {args.out}"
                         + (f" --models {' '.join(args.models)}" if args.models else ""),
              "machine": {"cpu": platform.processor() or platform.machine(),
                          "cpu_count": os.cpu_count(), "python": platform.python_version(),
                          "torch": torch.__version__, "threads": 1},
              "load_average_before": load_average(), "queries": list(QUERIES)}
    names, labels = test_split(args.celeba)
    photos = args.work / "celeba-test"
    extract(args.celeba, names, photos)
    report["collection"] = {"images": len(names), "source": "CelebA test split (shared subset, "
                                                            "102 x 125 aligned crops)"}
    with threadpool_limits(1):
        results = {}
        for model in models:
            for framing in args.framings:
                db = args.work / f"{model}.{framing}.db"
                started = time.perf_counter()
                indexing = index(photos, db, model, framing)
                queries = evaluate(FaceSearch(db), names, labels)
                results[f"{model} / {framing}"] = {"model": model, "framing": framing,
                                                   "indexing": indexing,
                                                   "mean": mean_of(queries), "queries": queries}
                print(f"{model} / {framing}: {indexing}; mean {mean_of(queries)} "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)
        search = FaceSearch(args.work / f"{models[0]}.{args.framings[0]}.db")
        random = {}
        for text in QUERIES:
            relevant = relevant_images(search.parse(text), labels)
            random[text] = {k: round(v, 4) for k, v in random_scores(relevant).items()}
        results["random ranking"] = {"mean": mean_of(random), "queries": random}
    report["results"] = results
    report["load_average_after"] = load_average()
    write_json(args.out, report)
    print(f"load average {report['load_average_before']} -> {report['load_average_after']}; "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
