import numpy as np
import pytest

from mtfap.attributes import CELEBA_ATTRIBUTES
from mtfap.evaluation.metrics import evaluate_predictions
from mtfap.evaluation.paper import comparison_table, paper_columns, paper_means


def test_published_means_are_those_of_the_design_page():
    # docs/METHOD.md section 7 lists these means, computed from the per-attribute columns.
    assert paper_means("celeba")["MTFAP with prior (paper)"] == pytest.approx(93.52, abs=0.01)
    assert paper_means("celeba")["MTFAP without prior (paper)"] == pytest.approx(91.47, abs=0.01)
    assert paper_means("lfwa")["MTFAP with prior (paper)"] == pytest.approx(90.05, abs=0.01)
    assert paper_means("lfwa")["PANDA"] == pytest.approx(81.03, abs=0.01)
    assert list(paper_columns("celeba").index) == list(CELEBA_ATTRIBUTES)


def test_comparison_table_puts_ours_beside_the_paper():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (50, 40))
    result = evaluate_predictions(labels.astype(float), labels, attributes=CELEBA_ATTRIBUTES,
                                  n_bootstrap=0)
    table = comparison_table({"ours": result}, "celeba",
                             methods=["MTFAP with prior (paper)"])
    assert list(table.columns) == ["ours", "MTFAP with prior (paper)"]
    assert table.loc["Smiling", "ours"] == 100.0
    assert table.loc["Smiling", "MTFAP with prior (paper)"] == 94.47
    assert table.loc["Mean", "MTFAP with prior (paper)"] == pytest.approx(93.52, abs=0.01)


def test_subset_of_attributes_is_averaged_over_the_same_rows():
    table = comparison_table({"ours": {"Smiling": 90.0, "Male": 80.0}}, "lfwa",
                             methods=["PANDA"])
    assert list(table.index) == ["Male", "Smiling", "Mean"]
    assert table.loc["Mean", "ours"] == 85.0
    assert table.loc["Mean", "PANDA"] == pytest.approx(table.loc[["Male", "Smiling"], "PANDA"].mean())


def test_bad_names_raise_with_hints():
    with pytest.raises(ValueError, match="Did you mean 'PANDA'"):
        paper_columns("celeba", ["panda"])
    with pytest.raises(ValueError, match="unknown paper table"):
        paper_columns("imagenet")
    with pytest.raises(ValueError, match="not in the paper"):
        comparison_table({"ours": {"round_face": 50.0}})
