"""Benchmark of the multi-task heads on frozen features (issue 3): time, accuracy, scarce labels.

For each method and solver, on the train/val/test splits of a FeatureSet:
1. full labels: a small hyper-parameter grid fitted on train and scored on val; the best setting's
   test mean accuracy and fit time (wall and CPU), beside scikit-learn's LogisticRegression
   (StandardScaler + one LogisticRegression per attribute, default C = 1);
2. scarce labels: 10 % of the train labels kept for the 30 least frequent attributes
   (mtfap.data.splits.least_frequent_attributes: smallest min(p, 1 - p) on train), all labels
   for the others; hyper-parameters tuned on val (fully labelled) with seed 0, then seeds 0-2;
3. the structure of each fitted model: sparsity of S, ranks of L_g, graph clusters.

Results go to a JSON file, written after every fit, so an interrupted run resumes.

    python benchmarks/bench_heads.py --features /work/cache/features/celeba_dlib_face_resnet.npz \
        --out /work/cache/bench_heads/results.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from mtfap.data.features import FeatureSet
from mtfap.data.splits import least_frequent_attributes, scarce_labels
from mtfap.evaluation.metrics import EvaluationResult, evaluate_predictions
from mtfap.heads import GraphHeads, IndependentHeads, LowRankSparseHeads

# method name -> (estimator class, fixed parameters, grid of tuned parameters)
METHODS = {
    "independent": (IndependentHeads, {}, [{"lam": v} for v in (1e-3, 1e-2)]),
    "lowrank_sparse/proximal": (LowRankSparseHeads, {"solver": "proximal"},
                                [{"lam": lam, "gamma": gamma}
                                 for lam, gamma in ((1e-4, 1e-3), (1e-3, 1e-2))]),
    "lowrank_sparse/paper": (LowRankSparseHeads, {"solver": "paper", "n_epochs": 5},
                             [{"lam": 1e-4, "gamma": 1e-3}]),
    "lowrank_sparse/proximal/regions": (LowRankSparseHeads, {"solver": "proximal",
                                                             "groups": "regions"},
                                        [{"lam": 1e-4, "gamma": 1e-3}]),
    # diagnostics of Scenario 1: convergence (3x the iterations) and capacity (K_g = T_g - 1)
    "lowrank_sparse/proximal/long": (LowRankSparseHeads, {"solver": "proximal", "max_iter": 300},
                                     [{"lam": 1e-4, "gamma": 1e-3}]),
    "lowrank_sparse/proximal/maxrank": (LowRankSparseHeads, {"solver": "proximal", "ranks": 39},
                                        [{"lam": 1e-4, "gamma": 1e-3}]),
    "lowrank_sparse/proximal/strong": (LowRankSparseHeads, {"solver": "proximal"},
                                       [{"lam": 1e-2, "gamma": 1e-1}]),
    # graph heads with a ridge part (xi * eps) as large as the best ridge of independent heads
    "graph/kalofolias/ridge": (GraphHeads, {"eps": 0.1}, [{"xi": xi} for xi in (1e-2, 1e-1)]),
    "graph/kalofolias/ridge/sparse": (GraphHeads, {"eps": 0.1, "graph_sparsity": 8.0},
                                      [{"xi": xi} for xi in (1e-1, 1e-2)]),
    "graph/kalofolias": (GraphHeads, {"eps": 1e-3}, [{"xi": xi} for xi in (1e-2, 1e-1)]),
    "graph/paper": (GraphHeads, {"graph_step": "paper", "n_graph_steps": 1, "eps": 1e-3},
                    [{"xi": 1e-2}]),
}


def evaluate(predicted, part: FeatureSet) -> EvaluationResult:
    """Per-attribute accuracy of 0/1 predictions on the known labels of ``part``.

    The predictions are the scores: at the default threshold 0.5 they predict themselves, so
    the decision stays the estimator's own (``predict``: logit > 0). No bootstrap intervals.
    """
    return evaluate_predictions(predicted, part.labels, part.mask, part.attributes,
                                n_bootstrap=0)


def structure(est) -> dict:
    out = {}
    if hasattr(est, "sparsity_"):
        out.update(sparsity_S=est.sparsity_, ranks=est.effective_ranks_, rank_caps=est.ranks_,
                   groups=[name for name, _ in est.groups_])
    if hasattr(est, "clusters_"):
        out.update(n_clusters=len(est.clusters_), clusters=est.cluster_names(),
                   n_edges=int((est.graph_thresholded_ > 0).sum() // 2))
    return out


def timed_fit(est, X, Y, mask):
    wall, cpu = time.perf_counter(), time.process_time()
    est.fit(X, Y, mask)
    return time.perf_counter() - wall, time.process_time() - cpu


def sklearn_baseline(train, test):
    """StandardScaler + LogisticRegression per attribute (the tool a user reaches for)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    wall, cpu = time.perf_counter(), time.process_time()
    predicted = np.zeros_like(test.labels)
    for j in range(train.labels.shape[1]):
        rows = train.mask[:, j]
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        model.fit(train.X[rows], train.labels[rows, j])
        predicted[:, j] = model.predict(test.X)
    return predicted, time.perf_counter() - wall, time.process_time() - cpu


def sweep_graph_sparsity(train, values=(1.0, 2.0, 4.0, 8.0, 16.0)) -> dict:
    """Clusters of the Kalofolias graph of independent heads for several sparsity knobs."""
    from mtfap.heads.graph_learning import (
        graph_clusters,
        learn_task_graph,
        threshold_graph,
    )
    heads = IndependentHeads(lam=1e-3).fit(train.X, train.labels, train.mask)
    out = {}
    for value in values:
        M = learn_task_graph(heads.W_, sparsity=value)
        clusters = graph_clusters(M)
        out[str(value)] = {"n_edges": int((threshold_graph(M) > 0).sum() // 2),
                           "clusters": [[train.attributes[j] for j in c] for c in clusters]}
        print("sparsity", value, out[str(value)], flush=True)
    return out


def run(args):
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}

    def save():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1, default=float))
        os.replace(tmp, out)

    features = FeatureSet.load(args.features)
    train, val, test = (features.get_split(s) for s in ("train", "val", "test"))
    results["setup"] = {"features": str(args.features), "meta": {k: v for k, v in features.meta.items()
                                                                  if k != "attributes"},
                        "n": [len(train), len(val), len(test)], "d": int(features.X.shape[1]),
                        "threads": args.threads, "load_average_start": os.getloadavg()}
    scarce_names = least_frequent_attributes(train, 30, split=None)
    scarce_cols = [train.attributes.index(a) for a in scarce_names]
    results["setup"]["scarce_attributes"] = scarce_names
    names = [m for m in METHODS if not args.methods or m in args.methods]

    wants_sklearn = not args.methods or "sklearn" in args.methods
    if args.part in ("full", "both") and wants_sklearn and "sklearn" not in results:
        predicted, wall, cpu = sklearn_baseline(train, test)
        results["sklearn"] = {"test_accuracy": evaluate(predicted, test).mean_accuracy,
                              "wall_s": wall, "cpu_s": cpu}
        save()

    def fit_grid(key, method, train_set, grid):
        cls, fixed, _ = METHODS[method]
        runs = results.setdefault(key, {})
        for params in grid:
            tag = json.dumps(params, sort_keys=True)
            if tag in runs:
                continue
            est = cls(**fixed, **params)
            wall, cpu = timed_fit(est, train_set.X, train_set.labels, train_set.mask)
            on_val, on_test = evaluate(est.predict(val.X), val), evaluate(est.predict(test.X), test)
            runs[tag] = {"params": params, "wall_s": wall, "cpu_s": cpu, "n_iter": est.n_iter_,
                         "val_accuracy": on_val.mean_accuracy,
                         "test_accuracy": on_test.mean_accuracy,
                         "test_accuracy_scarce_attributes": float(
                             np.nanmean(on_test.accuracy[scarce_cols])),
                         **structure(est)}
            print(key, runs[tag], flush=True)
            save()
        return max(runs.values(), key=lambda r: r["val_accuracy"])

    for method in names if args.part == "full" or args.part == "both" else []:
        best = fit_grid(f"full/{method}", method, train, METHODS[method][2][:args.grid])
        print(f"best {method}: val {best['val_accuracy']:.4f} test {best['test_accuracy']:.4f}",
              flush=True)
    if args.part == "sweep":
        results["sweep"] = sweep_graph_sparsity(train)
        save()
    if args.part in ("full", "sweep"):
        return
    for method in names:
        grid = METHODS[method][2][:args.grid]
        for seed in range(args.seeds):
            scarce = scarce_labels(train, 0.1, scarce_names, seed=seed)
            # tune on seed 0 only, then reuse the chosen setting on the other seeds
            best = fit_grid(f"scarce/{method}/seed{seed}", method, scarce, grid)
            grid = [best["params"]]


def report(paths) -> str:
    """Markdown tables from one or more result files (merged)."""
    results = {}
    for path in paths:
        for key, value in json.loads(Path(path).read_text()).items():
            results.setdefault(key, {}).update(value)
    lines = [("| method | chosen on val | val acc | test acc | test acc, 30 rarest | fit wall s | "
              "fit CPU s |"), "| --- | --- | --- | --- | --- | --- | --- |"]
    if "sklearn" in results:
        sk = results["sklearn"]
        lines.append(f"| scikit-learn LogisticRegression x 40 | C = 1 | - | "
                     f"{100 * sk['test_accuracy']:.2f} | - | {sk['wall_s']:.1f} | {sk['cpu_s']:.1f} |")
    structures = []
    for key in sorted(k for k in results if k.startswith("full/")):
        best = max(results[key].values(), key=lambda r: r["val_accuracy"])
        lines.append(f"| {key[5:]} | {best['params']} | {100 * best['val_accuracy']:.2f} | "
                     f"{100 * best['test_accuracy']:.2f} | "
                     f"{100 * best['test_accuracy_scarce_attributes']:.2f} | {best['wall_s']:.1f} | "
                     f"{best['cpu_s']:.1f} |")
        for run in results[key].values():
            if "sparsity_S" in run:
                structures.append(f"- {key[5:]} {run['params']}: S {100 * run['sparsity_S']:.1f} % "
                                  f"zeros; ranks of L_g {run['ranks']} (caps {run['rank_caps']})")
            if "clusters" in run:
                multi = [c for c in run["clusters"] if len(c) > 1]
                structures.append(f"- {key[5:]} {run['params']}: {run['n_edges']} edges, "
                                  f"{run['n_clusters']} clusters; non-singleton: {multi}")
    lines += ["", "| method (scarce labels) | setting | test acc, all 40 | test acc, 30 scarce | seeds |",
              "| --- | --- | --- | --- | --- |"]
    methods = sorted({k.rsplit("/seed", 1)[0] for k in results if k.startswith("scarce/")})
    for method in methods:
        seeds = [k for k in results if k.startswith(method + "/seed")]
        chosen = max(results[method + "/seed0"].values(), key=lambda r: r["val_accuracy"])
        runs = [results[k][json.dumps(chosen["params"], sort_keys=True)] for k in seeds
                if json.dumps(chosen["params"], sort_keys=True) in results[k]]
        every = np.array([100 * r["test_accuracy"] for r in runs])
        rare = np.array([100 * r["test_accuracy_scarce_attributes"] for r in runs])
        lines.append(f"| {method[7:]} | {chosen['params']} | {every.mean():.2f} +- {every.std():.2f} | "
                     f"{rare.mean():.2f} +- {rare.std():.2f} | {len(runs)} |")
    return "\n".join(lines + [""] + structures)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--features", default="/work/cache/features/celeba_dlib_face_resnet.npz")
    parser.add_argument("--out", default="/work/cache/bench_heads/results.json")
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the scarce-label setting")
    parser.add_argument("--methods", nargs="*", choices=["sklearn", *METHODS],
                        help="default: all, with the scikit-learn baseline")
    parser.add_argument("--grid", type=int, default=None,
                        help="use only the first N settings of each grid (default: all)")
    parser.add_argument("--part", choices=["full", "scarce", "both", "sweep"], default="both",
                        help="full labels, scarce labels, both, or the graph sparsity sweep")
    parser.add_argument("--report", nargs="+", metavar="JSON",
                        help="print markdown tables from result files instead of running")
    args = parser.parse_args(argv)
    if args.report:
        print(report(args.report))
        return 0
    with threadpool_limits(args.threads):
        run(args)


if __name__ == "__main__":
    sys.exit(main())
