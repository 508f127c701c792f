"""Paired comparison of trained runs: does one head method beat another once the network
learns with it (the paper's central claim, docs/RESULTS.md section 6)?

Every run is scored on the same images (the test split by default); runs of the same method
are its seeds, paired with the baseline's runs of the same position (seed i against seed i).
For each method against the baseline: the difference of mean accuracy for each seed pair with
a 95 % interval from an identity bootstrap in which both runs are scored on the same resample
(:func:`mtfap.evaluation.metrics.paired_accuracy_difference`), the mean of those differences,
and beside them the seed-to-seed spread of each method, the yardstick a difference has to
beat. Per-attribute differences (mean over seed pairs) name the attributes that move most; a
``focus`` set of attributes (the scarce ones of the scarce-label setting) gets its own mean.

Scores are cached in ``cache`` (one ``.npz`` per run, keyed on the checkpoint's size and
modification time, the split, data and views), so a report re-runs in seconds.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mtfap.evaluation.metrics import evaluate_predictions, paired_accuracy_difference
from mtfap.io import markdown_table, read_npz, write_npz


@dataclass
class RunScores:
    """A run's scores on a split, row-aligned with the labels every run shares."""

    path: Path
    scores: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    identities: np.ndarray | None
    attributes: list[str]


def _cache_key(path: Path, split: str, data, scales, checkpoint: str) -> str:
    weights = [p for p in (path / f"{checkpoint}.pt", path / "heads.npz") if p.is_file()]
    stamp = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in weights]
    text = json.dumps([str(path.resolve()), split, None if data is None else str(data),
                       list(scales or ()), checkpoint, stamp])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_scores(path: str | Path, split: str = "test", data=None, scales=None,
               checkpoint: str = "best", cache: Path | None = None,
               progress: bool = True) -> RunScores:
    """The scores of the run at ``path`` on ``split`` (cached in ``cache`` when given)."""
    from mtfap.model.runs import open_run

    path = Path(path)
    file = None
    if cache is not None:
        file = Path(cache) / f"{path.name}-{_cache_key(path, split, data, scales, checkpoint)}.npz"
        if file.is_file():
            saved = read_npz(file, "scores cache", "delete it to recompute")
            identities = saved["identities"] if saved["identities"].size else None
            return RunScores(path, saved["scores"], saved["labels"], saved["mask"], identities,
                             [str(a) for a in saved["attributes"]])
    run = open_run(path, checkpoint)
    scores, labels, mask, identities = run.predict_split(split, data=data, scales=scales,
                                                         progress=progress)
    result = RunScores(path, np.asarray(scores, np.float32), np.asarray(labels),
                       np.asarray(mask, bool), identities, list(run.attributes))
    if file is not None:
        arrays = {"scores": result.scores, "labels": result.labels, "mask": result.mask,
                  "identities": np.asarray([] if identities is None else identities),
                  "attributes": np.asarray(result.attributes)}
        write_npz(file, arrays)
    return result


def _check_same_images(runs: dict[str, list[RunScores]]) -> RunScores:
    first = next(iter(runs.values()))[0]
    for method, scored in runs.items():
        for item in scored:
            if item.attributes != first.attributes or not (
                    np.array_equal(item.labels, first.labels)
                    and np.array_equal(item.mask, first.mask)):
                raise ValueError(f"{item.path} ({method}) was not scored on the same images, "
                                 f"labels and attributes as {first.path}; compare runs of the "
                                 "same dataset and split")
    return first


def compare_runs(runs: dict[str, list[RunScores]], baseline: str, focus=(),
                 n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """The paired report (JSON-ready, accuracies in percent) of ``runs`` (method -> its runs
    in seed order) against the method ``baseline``; see the module docstring."""
    if baseline not in runs:
        raise ValueError(f"baseline {baseline!r} is not among the methods {sorted(runs)}")
    reference = _check_same_images(runs)
    attributes = reference.attributes
    unknown = [a for a in focus if a not in attributes]
    if unknown:
        raise ValueError(f"focus attributes {unknown} are not among the runs' attributes")
    focus_cols = [attributes.index(a) for a in focus]
    common = {"labels": reference.labels, "mask": reference.mask,
              "identities": reference.identities, "attributes": attributes}

    per_run, methods = [], {}
    for method, scored in runs.items():
        means, focus_means = [], []
        for index, item in enumerate(scored):
            result = evaluate_predictions(item.scores, n_bootstrap=n_bootstrap, seed=seed,
                                          **common)
            focus_acc = float(np.nanmean(result.accuracy[focus_cols])) if focus_cols else None
            per_run.append({"method": method, "seed_index": index, "run": str(item.path),
                            **result.summary(),
                            "focus_mean_accuracy": None if focus_acc is None else
                            round(100 * focus_acc, 3)})
            means.append(100 * result.mean_accuracy)
            focus_means.append(None if focus_acc is None else 100 * focus_acc)
        methods[method] = {
            "runs": len(scored), "mean_accuracy": float(np.mean(means)),
            "seed_spread": float(np.ptp(means)) if len(means) > 1 else None,
            "focus_mean_accuracy": float(np.mean(focus_means)) if focus_cols else None}

    differences, per_attribute = {}, {}
    for method, scored in runs.items():
        if method == baseline:
            continue
        pairs = list(zip(scored, runs[baseline]))
        rows, attr_diffs = [], []
        for index, (item, base) in enumerate(pairs):
            diff = paired_accuracy_difference(item.scores, base.scores, n_bootstrap=n_bootstrap,
                                              seed=seed, **common)
            focus_diff = float(np.nanmean(diff.difference[focus_cols])) if focus_cols else None
            rows.append({"seed_index": index, "difference": 100 * diff.mean_difference,
                         "ci95": [100 * float(v) for v in diff.ci_mean_difference],
                         "focus_difference": None if focus_diff is None else 100 * focus_diff})
            attr_diffs.append(diff.difference)
        mean_attr = 100 * np.mean(attr_diffs, axis=0)
        per_attribute[method] = mean_attr
        differences[method] = {
            "pairs": rows, "mean_difference": float(np.mean([r["difference"] for r in rows])),
            "all_pairs_favour": ("method" if all(r["ci95"][0] > 0 for r in rows) else
                                 "baseline" if all(r["ci95"][1] < 0 for r in rows) else
                                 "neither"),
            "focus_mean_difference": float(np.mean([r["focus_difference"] for r in rows]))
            if focus_cols else None,
            "largest_gains": _movers(attributes, mean_attr, largest=True),
            "largest_losses": _movers(attributes, mean_attr, largest=False)}
    return {"baseline": baseline, "focus": list(focus), "n_images": int(len(reference.labels)),
            "n_bootstrap": n_bootstrap, "runs": per_run, "methods": methods,
            "differences": differences,
            "per_attribute_difference": {m: {a: float(v) for a, v in zip(attributes, d)}
                                         for m, d in per_attribute.items()}}


def _movers(attributes, values, largest: bool, count: int = 5) -> dict[str, float]:
    order = np.argsort(-values if largest else values, kind="stable")[:count]
    return {attributes[j]: round(float(values[j]), 3) for j in order}


def report_tables(report: dict) -> dict[str, pd.DataFrame]:
    """The report as tables: one row per method (accuracy, spread, difference to the baseline)
    and one row per attribute (difference of each method to the baseline)."""
    rows = []
    for method, info in report["methods"].items():
        diff = report["differences"].get(method)
        seeds = [r["mean_accuracy"] for r in report["runs"] if r["method"] == method]
        rows.append({
            "method": method, "runs": info["runs"],
            "accuracy_per_seed": " / ".join(f"{v:.2f}" for v in seeds),
            "mean_accuracy": info["mean_accuracy"],
            "seed_spread": np.nan if info["seed_spread"] is None else info["seed_spread"],
            "difference": np.nan if diff is None else diff["mean_difference"],
            "difference_ci95_per_seed": "-" if diff is None else "; ".join(
                f"{r['difference']:+.2f} [{r['ci95'][0]:+.2f}, {r['ci95'][1]:+.2f}]"
                for r in diff["pairs"]),
            **({"focus_accuracy": info["focus_mean_accuracy"],
                "focus_difference": np.nan if diff is None else diff["focus_mean_difference"]}
               if report["focus"] else {})})
    methods = pd.DataFrame(rows).set_index("method")
    attributes = pd.DataFrame(report["per_attribute_difference"])
    attributes.index.name = "attribute"
    return {"methods": methods, "attributes": attributes}


def markdown_report(report: dict, title: str) -> str:
    """A readable page: the method table, then the largest per-attribute moves."""
    tables = report_tables(report)
    lines = [f"# {title}", "",
             f"{report['n_images']} images; differences are method - {report['baseline']} in "
             f"points of mean accuracy, paired on the same images (95 % identity-bootstrap "
             f"intervals, {report['n_bootstrap']} replicates); seed spread = max - min over "
             "a method's seeds.", "", markdown_table(tables["methods"]), ""]
    for method, diff in report["differences"].items():
        gains = ", ".join(f"{a} {v:+.2f}" for a, v in diff["largest_gains"].items())
        losses = ", ".join(f"{a} {v:+.2f}" for a, v in diff["largest_losses"].items())
        lines.append(f"- {method}: gains {gains}; losses {losses}")
    return "\n".join(lines) + "\n"
