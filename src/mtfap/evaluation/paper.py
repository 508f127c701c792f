"""The paper's published accuracies (Table 1: CelebA, Table 2: LFWA) and tables beside them."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Mapping

import pandas as pd

from mtfap.errors import did_you_mean
from mtfap.evaluation.metrics import EvaluationResult

PAPER_DATASETS = ("celeba", "lfwa")
#: The two columns of the paper's own method, in the order the paper prints them.
MTFAP_COLUMNS = ("MTFAP without prior (paper)", "MTFAP with prior (paper)")


@lru_cache(maxsize=1)
def load_paper_tables() -> dict:
    """The shipped ``resources/paper_tables.json``: ``{source, attributes, celeba, lfwa}``.

    ``celeba`` and ``lfwa`` map a method name to ``{attribute: accuracy in percent}``.
    """
    text = resources.files("mtfap").joinpath("resources/paper_tables.json").read_text("utf-8")
    return json.loads(text)


def paper_columns(dataset: str = "celeba", methods=None) -> pd.DataFrame:
    """The published per-attribute accuracies (percent) of ``dataset``, one column per method.

    methods : names to keep (default all, in the paper's order); unknown names raise with a hint.
    """
    if dataset not in PAPER_DATASETS:
        raise ValueError(f"unknown paper table {dataset!r}; use one of {', '.join(PAPER_DATASETS)}")
    tables = load_paper_tables()
    table = tables[dataset]
    names = list(table) if methods is None else list(methods)
    for name in names:
        if name not in table:
            raise ValueError(f"no method {name!r} in the paper's {dataset} table."
                             f"{did_you_mean(name, table)} "
                             f"Methods: {', '.join(table)}")
    return pd.DataFrame({m: pd.Series(table[m]) for m in names}).reindex(tables["attributes"])


def _as_percent_series(result) -> pd.Series:
    if isinstance(result, EvaluationResult):
        return pd.Series(100 * result.accuracy, index=result.attributes)
    return pd.Series(dict(result), dtype=float)


def comparison_table(results: Mapping[str, EvaluationResult | Mapping[str, float]],
                     dataset: str = "celeba", methods=None) -> pd.DataFrame:
    """Our per-attribute accuracies beside the paper's published columns, with a Mean row.

    Parameters
    ----------
    results : name -> ``EvaluationResult`` or ``{attribute: accuracy in percent}``.
    dataset : "celeba" (Table 1) or "lfwa" (Table 2).
    methods : paper methods to show (default all of that table).

    Returns
    -------
    DataFrame in percent: rows are the attributes of our results in the paper's order, then
    "Mean" (over exactly those rows, so every column is averaged over the same attributes);
    columns are our methods, then the paper's.
    """
    ours = pd.DataFrame({name: _as_percent_series(r) for name, r in results.items()})
    paper = paper_columns(dataset, methods)
    unknown = [a for a in ours.index if a not in paper.index]
    if unknown:
        raise ValueError(f"attributes {unknown[:5]} are not in the paper's {dataset} table, so "
                         "there is nothing to compare them with; compare only CelebA-named "
                         "attributes (drop --compare paper for other label sets)")
    rows = [a for a in paper.index if a in ours.index]
    clash = set(ours.columns) & set(paper.columns)
    if clash:
        raise ValueError(f"result names {sorted(clash)} clash with the paper's method names")
    table = pd.concat([ours.reindex(rows), paper.reindex(rows)], axis=1)
    table.loc["Mean"] = table.mean(axis=0, skipna=True)
    table.index.name = "attribute"
    return table


def paper_means(dataset: str = "celeba") -> pd.Series:
    """Mean published accuracy (percent) over the 40 attributes, per method."""
    return paper_columns(dataset).mean(axis=0)


__all__ = ["MTFAP_COLUMNS", "PAPER_DATASETS", "comparison_table", "load_paper_tables",
           "paper_columns", "paper_means"]

