"""The main job: independent vs Scenario 1 (both solvers) vs Scenario 2, end to end.

On frozen features (one vector per image), every method is fitted on the training split with
hyper-parameters chosen on the identity-disjoint validation split (``mtfap.experiments.sweep``)
and measured once on the test split: per-attribute accuracy, the mean over attributes (the
paper's Tables 1-2), balanced accuracy and identity-bootstrap 95 % intervals. The learned task
graph of Scenario 2 is drawn and its clusters compared with the known groupings.

Features:
- real data (``--data``): a pretrained backbone, frozen (``mtfap features``; cached);
- the embedded generated dataset (no ``--data``): 24x24 pixels reduced by PCA, fitted on the
  training split. On these cartoons a linear read-out of pixels is both fast and strong (its
  test mean accuracy beats frozen dlib face features, 88 % vs 86 %, measured), and no
  pretrained face network is meant for cartoons.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mtfap.backbones.base import InputSpec
from mtfap.data.dataset import FaceDataset
from mtfap.data.features import FeatureSet
from mtfap.data.loader import make_loader
from mtfap.data.splits import scarce_setting
from mtfap.evaluation.metrics import (
    EvaluationResult,
    evaluate_predictions,
    tune_thresholds,
)
from mtfap.evaluation.paper import MTFAP_COLUMNS, paper_columns
from mtfap.experiments.features import ensure_features
from mtfap.experiments.frozen import VARIANTS, check_methods, fit_method, is_seeded
from mtfap.experiments.sweep import SweepResult, sweep_frozen
from mtfap.heads.groupings import PRESETS
from mtfap.io import text_table, write_table


def pixel_features(dataset: FaceDataset, size: int = 24, n_components: int = 128,
                   cache_dir=None, progress: bool = True) -> FeatureSet:
    """Features without a CNN: the image at ``size`` x ``size``, PCA to ``n_components``.

    The PCA is fitted on the training rows only, so nothing of val/test leaks into the
    features. Deterministic (full SVD).
    """
    from sklearn.decomposition import PCA

    loader = make_loader(dataset, InputSpec(size=(size, size)), train=False, batch_size=256,
                         cache_dir=cache_dir)
    pixels = np.zeros((len(dataset), 3 * size * size), np.float32)
    for batch in tqdm(loader, desc="pixels", unit="batch", disable=not progress):
        pixels[batch.index.numpy()] = batch.images.reshape(len(batch.index), -1).numpy()
    train = dataset.split_indices("train")
    n_components = min(n_components, len(train), pixels.shape[1])
    pca = PCA(n_components, svd_solver="full").fit(pixels[train])
    meta = {"features": f"pixels {size}x{size} -> PCA {n_components} (fitted on train)",
            "dataset": dataset.name, "explained_variance": round(float(
                pca.explained_variance_ratio_.sum()), 4), **dataset.meta}
    return FeatureSet(pca.transform(pixels).astype(np.float32), dataset.labels, dataset.mask,
                      list(dataset.attributes), list(dataset.keys), dataset.split,
                      dataset.identities, meta)


def backbone_features(data: str, backbone: str, out: Path, cache_dir=None,
                      progress: bool = True) -> FeatureSet:
    """Frozen ``backbone`` features of the dataset at ``data``, reusing ``out`` when it is up
    to date (``mtfap.experiments.features.ensure_features``)."""
    return ensure_features(data, out, backbone=backbone, cache_dir=cache_dir,
                           progress=progress)[0]


def with_scarce_labels(features: FeatureSet, fraction: float, count: int, seed: int
                       ) -> tuple[FeatureSet, list[str]]:
    """The paper's motivating case on features: ``mtfap.data.splits.scarce_setting`` (only
    ``fraction`` of the train and val labels of the ``count`` rarest attributes kept; test
    labels whole).

    Returns the features with the reduced mask and the names of the scarce attributes.
    """
    # The label bookkeeping of a FaceDataset without its images (no image is read here).
    labels_only = FaceDataset(features.meta.get("dataset", "features"), None, features.keys,
                              features.attributes, features.labels, features.mask,
                              features.identities, features.split)
    labels_only, rare = scarce_setting(labels_only, fraction, count, seed)
    scarce = replace(features, mask=labels_only.mask,
                     meta={**features.meta, "scarce_labels": {"fraction": fraction,
                                                              "attributes": rare, "seed": seed}})
    return scarce, rare


@dataclass
class Comparison:
    """Test results of every method (one per seed for seeded methods or scarce labels)."""

    attributes: list[str]
    results: dict[str, list[EvaluationResult]]
    fits: dict[str, list[dict]]
    test_positive_rate: np.ndarray
    graph: np.ndarray | None = None
    sweeps: list[SweepResult] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def accuracy_table(self, paper: str | None = None) -> pd.DataFrame:
        """Per-attribute test accuracy (%) of each method, averaged over seeds, then the Mean
        and Mean balanced rows; with ``paper`` ("celeba"/"lfwa") the paper's MTFAP columns."""
        columns = {name: np.mean([100 * r.accuracy for r in runs], axis=0)
                   for name, runs in self.results.items()}
        table = pd.DataFrame({"positive %": 100 * self.test_positive_rate, **columns},
                             index=pd.Index(self.attributes, name="attribute"))
        if paper is not None:
            table = table.join(paper_columns(paper, MTFAP_COLUMNS))
        means = table.mean(axis=0)
        balanced = {name: np.mean([100 * r.mean_balanced_accuracy for r in runs])
                    for name, runs in self.results.items()}
        table.loc["Mean"] = means
        table.loc["Mean balanced"] = pd.Series(balanced)
        return table

    def summary_table(self) -> pd.DataFrame:
        """One row per method: mean accuracy over seeds (and its spread), the 95 % bootstrap
        interval of the first seed, balanced accuracy, fit time, the chosen parameters."""
        rows = {}
        for name, runs in self.results.items():
            means = np.array([100 * r.mean_accuracy for r in runs])
            first = runs[0]
            rows[name] = {
                "method": VARIANTS[name].label,
                "mean accuracy": means.mean(),
                "sd over seeds": means.std(ddof=1) if len(means) > 1 else np.nan,
                "runs": len(runs),
                "95% CI low": 100 * first.ci_mean_accuracy[0],
                "95% CI high": 100 * first.ci_mean_accuracy[1],
                "mean balanced": np.mean([100 * r.mean_balanced_accuracy for r in runs]),
                "fit seconds": np.mean([f["seconds"] for f in self.fits[name]]),
                "params": json.dumps(self.fits[name][0]["params"], sort_keys=True),
            }
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("name")


def compare_on_features(features: FeatureSet, methods=None, seeds=(0,), groups=None,
                        tune: bool = True, params: dict | None = None, grid: dict | None = None,
                        scarce: tuple[float, int] | None = None, threshold_tuning: bool = False,
                        n_bootstrap: int = 1000, progress: bool = True) -> Comparison:
    """Fit every method on train, (optionally) tune it on val, score it on test.

    Parameters
    ----------
    features : frozen features with a train/val/test split.
    methods : names of ``mtfap.experiments.frozen.VARIANTS`` (default all four).
    seeds : seeds of the runs. A method whose fit has no randomness runs once per distinct
        input, not once per seed (its results would be identical); with ``scarce`` every seed
        draws other hidden labels, so every method runs once per seed.
    groups : Scenario 1 task grouping (default the estimator's: the paper's ten clusters).
    tune : choose the hyper-parameters on val (``sweep_frozen`` with ``grid``) per run.
    params : ``{method: {param: value}}`` used as given (and as the start of tuning).
    scarce : (fraction, count): see :func:`with_scarce_labels`.
    threshold_tuning : per-attribute thresholds tuned on val instead of 0.5.
    n_bootstrap : bootstrap replicates of the test intervals.
    """
    methods = check_methods(methods or list(VARIANTS))
    test = features.get_split("test")
    if len(test) == 0:
        raise ValueError("these features have no test images; the comparison needs a "
                         "train/val/test split")
    results = {m: [] for m in methods}
    fits = {m: [] for m in methods}
    sweeps, graph, scarce_attributes = [], None, None
    for seed in seeds:
        run_features = features
        if scarce is not None:
            run_features, scarce_attributes = with_scarce_labels(features, *scarce, seed=seed)
        todo = [m for m in methods if seed == seeds[0] or scarce is not None or is_seeded(m)]
        chosen = dict(params or {})
        if tune and todo:
            sweep = sweep_frozen(run_features, todo, grid, groups, seed, progress, params)
            sweeps.append(sweep)
            chosen = {**chosen, **sweep.chosen}
        train, val = run_features.get_split("train"), run_features.get_split("val")
        for method in tqdm(todo, desc=f"fit (seed {seed})", unit="method", disable=not progress):
            estimator, seconds = fit_method(method, train, chosen.get(method), groups, seed)
            thresholds = 0.5
            if threshold_tuning:
                thresholds = tune_thresholds(estimator.predict_proba(val.X), val.labels, val.mask)
            result = evaluate_predictions(
                estimator.predict_proba(test.X), test.labels, test.mask, features.attributes,
                test.identities, thresholds, n_bootstrap=n_bootstrap, seed=seed,
                meta={"method": method, "seed": seed})
            results[method].append(result)
            fits[method].append({"seed": seed, "seconds": round(seconds, 3),
                                 # the grouping is in meta; here only the tunable values
                                 "params": {k: v for k, v in estimator.get_params().items()
                                            if k not in ("attributes", "groups")}})
            if graph is None and hasattr(estimator, "graph_"):
                graph = estimator.graph_
    positive = (test.labels.astype(bool) & test.mask).sum(0) / np.maximum(test.mask.sum(0), 1)
    meta = {"features": features.meta, "seeds": list(seeds), "tuned": tune,
            "threshold_tuning": threshold_tuning, "n_bootstrap": n_bootstrap,
            "groups": groups if groups is not None else "paper",
            "n_train": int((features.split == 0).sum()), "n_val": int((features.split == 1).sum()),
            "n_test": len(test), "scarce": None if scarce is None else
            {"fraction": scarce[0], "count": scarce[1], "attributes": scarce_attributes}}
    return Comparison(list(features.attributes), results, fits, positive, graph, sweeps, meta)


def reference_groupings(features: FeatureSet) -> dict:
    """Groupings to compare the learned clusters with: the paper's, the face regions', and the
    generating groups of the synthetic dataset when that is the data."""
    references = {f"{name} grouping": name for name in PRESETS}
    if isinstance(features.meta.get("groups"), dict):
        references = {"generating groups (synthetic)": features.meta["groups"], **references}
    return references


def write_comparison(comparison: Comparison, out: Path, paper: str | None = None,
                     svg: bool = False) -> dict:
    """``comparison.{csv,md,json}`` (per attribute), ``summary.{csv,md,json}`` (per method),
    the sweep figure and table of the first run, and the graph figures when there is a graph."""
    out = Path(out)
    written = {
        "comparison": write_table(out / "comparison", comparison.accuracy_table(paper),
                                  title="Test accuracy (%) per attribute",
                                  extra={"meta": comparison.meta}),
        "summary": write_table(out / "summary", comparison.summary_table(),
                               title="Test mean accuracy (%) per method",
                               extra={"meta": comparison.meta,
                                      "runs": {m: [r.to_dict() for r in runs]
                                               for m, runs in comparison.results.items()}}),
    }
    if comparison.sweeps:
        written["sweep"] = comparison.sweeps[0].save(out, svg=svg)
    return written


SHORT_NAMES = {"independent": "indep.", "lowrank_sparse_paper": "S1 paper",
               "lowrank_sparse_proximal": "S1 prox.", "graph": "S2 graph"}


def format_report(comparison: Comparison, paper: str | None = None) -> str:
    """The readable terminal report: the per-attribute table, then the per-method summary."""
    table = comparison.accuracy_table(paper)
    short = {m: SHORT_NAMES[m] for m in comparison.results}
    table = table.rename(columns={**short, "MTFAP without prior (paper)": "paper w/o prior",
                                  "MTFAP with prior (paper)": "paper prior"})
    summary = comparison.summary_table().drop(columns=["method", "params"]).rename(index=short)
    legend = ", ".join(f"{short[m]} = {VARIANTS[m].label}" for m in comparison.results)
    return "\n".join([text_table(table), "", legend, "", text_table(summary)])
