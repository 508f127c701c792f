"""Hyper-parameter sweeps on the identity-disjoint validation split (the paper's Fig. 7).

For each method, each hyper-parameter is varied along its grid with the others held at the
best values found so far (one pass of coordinate search, starting from the estimator's
defaults, i.e. the paper's values); the value with the highest validation mean accuracy is
kept. Ties go to the first value of the grid. The test split is never looked at.

Frozen features make one fit take seconds (:func:`sweep_frozen`); :func:`sweep_end_to_end`
trains the whole network once per grid value instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mtfap.data.features import FeatureSet
from mtfap.errors import DataError
from mtfap.experiments.frozen import VARIANTS, check_methods, fit_method, mean_accuracy
from mtfap.heads.params import ESTIMATOR, TORCH, check_params
from mtfap.io import save_figure, write_csv, write_json
from mtfap.training.trainer import train

#: The paper's hyper-parameters and a grid around each: lambda and gamma (Scenario 1, paper
#: values 1e-2 and 1), xi (Scenario 2, paper value 0.75), and the ridge weight of eq. 1.
PAPER_GRID: dict[str, dict[str, list[float]]] = {
    "independent": {"lam": [1e-4, 1e-3, 1e-2, 1e-1]},
    "lowrank_sparse_paper": {"lam": [1e-4, 1e-3, 1e-2, 1e-1], "gamma": [1e-3, 1e-2, 1e-1, 1.0]},
    "lowrank_sparse_proximal": {"lam": [1e-4, 1e-3, 1e-2, 1e-1],
                                "gamma": [1e-3, 1e-2, 1e-1, 1.0]},
    "graph": {"xi": [1e-3, 1e-2, 1e-1, 0.75]},
}
#: Paper symbols of the estimator parameters, for figure labels.
SYMBOLS = {"lam": "lambda", "gamma": "gamma", "xi": "xi"}


@dataclass
class SweepResult:
    """One row per fit (method, parameter, value, validation accuracy) and the chosen values."""

    curves: pd.DataFrame
    chosen: dict[str, dict[str, float]]
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"chosen": self.chosen, "meta": self.meta,
                "curves": self.curves.to_dict(orient="records")}

    def save(self, folder: str | Path, svg: bool = False) -> dict[str, Path]:
        """``sweep.json`` (chosen values, every fit), ``sweep.csv`` and the ``sweep.png`` figure."""
        folder = Path(folder)
        return {"json": write_json(folder / "sweep.json", self.to_dict()),
                "csv": write_csv(folder / "sweep.csv", self.curves.set_index("method")),
                "figure": plot_sweep(self, folder / "sweep.png", svg=svg)[0]}


def check_grid(grid: dict, methods, form: str = ESTIMATOR) -> dict:
    """The grid of each method: the given one or ``PAPER_GRID``; each value is checked against
    its parameter's declaration (``mtfap.heads.params``) before any fit. ``methods`` are
    ``VARIANTS`` names (frozen sweeps) or head methods (``form="torch"``, end to end)."""
    out = {}
    for method in methods:
        head = VARIANTS[method].method if method in VARIANTS else method
        table = (grid or {}).get(method, PAPER_GRID.get(method, {}))
        out[method] = {}
        for param, values in table.items():
            if not isinstance(values, (list, tuple)) or not values:
                raise ValueError(f"grid of {method}.{param} must be a non-empty list of values, "
                                 f"got {values!r}")
            out[method][param] = [check_params(head, {param: v}, form)[param] for v in values]
    return out


def _coordinate_search(methods, grid, score, progress: bool, base_params=None):
    """One coordinate pass per method; ``score(method, params) -> (val accuracy, extra dict)``."""
    rows, chosen = [], {}
    total = sum(len(v) for m in methods for v in grid[m].values())
    with tqdm(total=total, desc="sweep", unit="fit", disable=not progress) as bar:
        for method in methods:
            params = dict((base_params or {}).get(method, {}))
            for param, values in grid[method].items():
                accuracies = []
                for value in values:
                    bar.set_postfix(method=method, **{param: value})
                    accuracy, extra = score(method, {**params, param: value})
                    accuracies.append(accuracy)
                    rows.append({"method": method, "param": param, "value": value,
                                 "val_mean_accuracy": 100 * accuracy,
                                 **{k: params.get(k) for k in grid[method] if k != param},
                                 **extra})
                    bar.update(1)
                params[param] = values[int(np.nanargmax(accuracies))]
            chosen[method] = params
    return pd.DataFrame(rows), chosen


def sweep_frozen(features: FeatureSet, methods=None, grid: dict | None = None, groups=None,
                 seed: int = 0, progress: bool = True, base_params: dict | None = None
                 ) -> SweepResult:
    """Sweep the heads' hyper-parameters on frozen features: fit on train, score on val.

    Parameters
    ----------
    features : features with a train/val split (``mtfap features``).
    methods : names from ``mtfap.experiments.frozen.VARIANTS`` (default all).
    grid : ``{method: {param: [values]}}``; missing methods use ``PAPER_GRID``.
    groups : the Scenario 1 grouping (preset, file or mapping; default the estimator's).
    seed : seed of the seeded methods.
    base_params : ``{method: {param: value}}`` fixed parameters to start from.
    """
    methods = check_methods(methods or list(VARIANTS))
    grid = check_grid(grid, methods)
    train, val = features.get_split("train"), features.get_split("val")
    if len(train) == 0 or len(val) == 0:
        raise DataError("the sweep needs a train and a validation split with images; these "
                        f"features have {len(train)} train and {len(val)} val images",
                        features.path)

    def score(method, params):
        estimator, seconds = fit_method(method, train, params, groups, seed)
        return mean_accuracy(estimator, val), {"fit_seconds": round(seconds, 3)}

    curves, chosen = _coordinate_search(methods, grid, score, progress, base_params)
    meta = {"mode": "frozen", "features": features.meta, "seed": seed,
            "n_train": len(train), "n_val": len(val), "grid": grid,
            "rule": "one coordinate pass per method, others at their best so far; "
                    "validation mean accuracy; ties to the first grid value"}
    return SweepResult(curves, chosen, meta)


def sweep_end_to_end(config, grid: dict, output_dir: str | Path, dataset=None,
                     progress: bool = True) -> SweepResult:
    """Train the network once per grid value (``mtfap train`` runs) and read the best val accuracy.

    config : a ``TrainConfig``; ``config.heads`` is the method; each grid value goes into
        ``heads_params`` and each run into ``output_dir/<param>=<value>``.
    grid : ``{param: [values]}`` for that method.
    """
    method = config.heads

    def score(_, params):
        name = "_".join(f"{k}={v:g}" for k, v in sorted(params.items()))
        run_config = replace(config, heads_params={**config.heads_params, **params},
                             output_dir=str(Path(output_dir) / name), progress=progress)
        result = train(run_config, dataset=dataset)
        best = result.best or {"val_mean_accuracy": float("nan")}
        return best["val_mean_accuracy"], {"run": run_config.output_dir, "best_epoch": best.get("epoch")}

    grid = check_grid({method: grid}, [method], TORCH)
    curves, chosen = _coordinate_search([method], grid, score, progress,
                                        {method: {}})
    meta = {"mode": "end_to_end", "config": config.to_dict(), "grid": grid}
    return SweepResult(curves, chosen, meta)


def plot_sweep(result: SweepResult, path: str | Path, svg: bool = False) -> list[Path]:
    """Fig. 7: validation mean accuracy against each hyper-parameter (log axis), one panel per
    hyper-parameter, one line per method, the chosen value circled."""
    import matplotlib.pyplot as plt

    curves = result.curves
    panels = list(dict.fromkeys(curves["param"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, param in zip(axes[0], panels):
        for method, rows in curves[curves["param"] == param].groupby("method", sort=False):
            label = VARIANTS[method].label if method in VARIANTS else method
            line, = ax.plot(rows["value"], rows["val_mean_accuracy"], "o-", label=label)
            pick = rows[rows["value"] == result.chosen[method][param]]
            ax.scatter(pick["value"], pick["val_mean_accuracy"], s=160, facecolors="none",
                       edgecolors=line.get_color(), linewidths=2, zorder=3)
        positive = curves.loc[curves["param"] == param, "value"] > 0
        if positive.all():
            ax.set_xscale("log")
        ax.set_xlabel(SYMBOLS.get(param, param))
        ax.set_ylabel("validation mean accuracy (%)")
        ax.set_title(f"sweep over {SYMBOLS.get(param, param)}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Hyper-parameters on the validation split (circled: chosen)", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path, svg=svg)
