"""A model's card, measured: accuracy on CelebA's test split, calibration, and groups.

- Per-attribute test accuracy (and balanced accuracy) with 95 % intervals from resampling test
  identities, at the model's thresholds and with its test-time views; the mean accuracy of a
  fixed sample (the first ``SAMPLE`` test images), which the tests reproduce from the shipped
  weights.
- Calibration: the expected calibration error over all attributes' known test labels (15 equal
  bins of predicted probability) and a reliability diagram.
- Groups (optional): FairFace's detection rate, ``Male`` accuracy by race and gender and the
  mean probability of ``Young`` by age group (``mtfap.experiments.groups``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtfap.applications.analyze import Analyzer
from mtfap.data.fairface import fairface_halves
from mtfap.data.layout import open_dataset
from mtfap.data.loader import make_loader
from mtfap.evaluation.metrics import evaluate_predictions
from mtfap.experiments.groups import write_group_report
from mtfap.io import atomic_write_text, markdown_table, save_figure, write_json
from mtfap.model.inference import predict_loader
from mtfap.model.predictor import Predictor

SAMPLE = 256  # the first test images whose mean accuracy the card records for the tests
BINS = 15


def test_scores(predictor: Predictor, data, split: str = "test", batch_size: int = 64,
                limit: int | None = None, progress: bool = True):
    """(scores, labels, mask, identities, keys) of the ``split`` images of ``data`` (images
    framed like the model's training images, e.g. CelebA's aligned ones) through the
    predictor's network and test-time views."""
    dataset = open_dataset(data).select_attributes(predictor.attributes)
    part = dataset.get_split(split) if dataset.split is not None else dataset
    if limit is not None:
        part = part.subset(np.arange(min(limit, len(part))))
    loader = make_loader(part, predictor.input_spec, train=False, batch_size=batch_size)
    scores, labels, mask = predict_loader(predictor.model, loader, device=predictor.device,
                                          scales=predictor.spec.test_scales,
                                          flip=predictor.spec.flip_test, progress=progress)
    return scores, labels.astype(np.uint8), mask, part.identities, part.keys


def calibration(scores, labels, mask, bins: int = BINS) -> dict:
    """Expected calibration error and the reliability curve over every known label."""
    p, y = np.asarray(scores)[mask], np.asarray(labels)[mask].astype(float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    confidence = np.bincount(which, weights=p, minlength=bins) / np.maximum(count, 1)
    frequency = np.bincount(which, weights=y, minlength=bins) / np.maximum(count, 1)
    ece = float((count / count.sum() * np.abs(confidence - frequency)).sum())
    return {"ece": ece, "bins": bins, "count": count.tolist(),
            "mean_probability": confidence.tolist(), "positive_rate": frequency.tolist()}


def plot_reliability(curve: dict, path: str | Path, title: str) -> list[Path]:
    import matplotlib.pyplot as plt

    keep = np.asarray(curve["count"]) > 0
    confidence = np.asarray(curve["mean_probability"])[keep]
    frequency = np.asarray(curve["positive_rate"])[keep]
    fig, axis = plt.subplots(figsize=(3.8, 3.6))
    axis.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    axis.plot(confidence, frequency, "o-", label=f"model (ECE {100 * curve['ece']:.2f} %)")
    axis.set(xlabel="predicted probability", ylabel="share of positive labels",
             title=title, xlim=(0, 1), ylim=(0, 1))
    axis.legend(fontsize=8, loc="upper left")
    axis.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def measure_card(predictor: Predictor, data, out: str | Path, *, fairface=None,
                 fairface_part: str = "all", n_bootstrap: int = 1000,
                 progress: bool = True) -> dict:
    """Measure the card of ``predictor`` (see the module docstring) into ``out``:
    ``card.json``, ``card.md``, ``reliability.png`` and, with ``fairface``, ``groups.*``.

    fairface_part : ``"all"`` the photos, or only the held-out half (``"test"``) of
        :func:`~mtfap.data.fairface.fairface_halves`, for a model trained on the other half."""
    if fairface_part not in ("all", "test"):
        raise ValueError(f"fairface_part must be 'all' or 'test', got {fairface_part!r}")
    out = Path(out)
    scores, labels, mask, identities, _ = test_scores(predictor, data, progress=progress)
    thresholds = predictor.thresholds
    result = evaluate_predictions(scores, labels, mask, predictor.attributes, identities,
                                  thresholds, n_bootstrap=n_bootstrap)
    sample = evaluate_predictions(scores[:SAMPLE], labels[:SAMPLE], mask[:SAMPLE],
                                  predictor.attributes, thresholds=thresholds, n_bootstrap=0)
    curve = calibration(scores, labels, mask)
    plot_reliability(curve, out / "reliability.png", f"{predictor.name}: CelebA test")
    summary = result.summary()
    card = {"model": predictor.name, "version": predictor.version,
            "test_images": int(len(scores)),
            "test_mean_accuracy": summary["mean_accuracy"],
            "test_mean_accuracy_ci95": summary["mean_accuracy_ci95"],
            "test_mean_balanced_accuracy": summary["mean_balanced_accuracy"],
            "sample_images": min(SAMPLE, len(scores)),
            "sample_mean_accuracy": 100 * sample.mean_accuracy,
            "ece": curve["ece"], "calibration": curve,
            "views": {"scales": predictor.spec.test_scales, "flip": predictor.spec.flip_test},
            "per_attribute": result.to_frame().reset_index().to_dict(orient="records")}
    if fairface is not None:
        photos, title = open_dataset(fairface), f"{predictor.name} on FairFace"
        if fairface_part == "test":
            photos = fairface_halves(photos).get_split("test")
            title += " (held-out half)"
        card["fairface"] = write_group_report(Analyzer(predictor, largest_only=True), photos,
                                              out, title, progress=progress)
        card["fairface"]["part"] = fairface_part
    write_json(out / "card.json", card)
    atomic_write_text(out / "card.md", card_markdown(card, result))
    return card


def card_markdown(card: dict, result) -> str:
    """The card's accuracy table in Markdown."""
    frame = result.to_frame()
    keep = ["accuracy", "accuracy_ci_low", "accuracy_ci_high", "balanced_accuracy",
            "positive_rate_true", "threshold"]
    lines = [f"## {card['model']} {card['version']}", "",
             f"CelebA test mean accuracy {card['test_mean_accuracy']:.2f} % "
             f"[{card['test_mean_accuracy_ci95'][0]:.2f}, {card['test_mean_accuracy_ci95'][1]:.2f}]"
             f" ({card['test_images']} images, 95 % interval over identities), mean balanced "
             f"accuracy {card['test_mean_balanced_accuracy']:.2f} %; expected calibration error "
             f"{100 * card['ece']:.2f} %.", "", markdown_table(frame[keep])]
    return "\n".join(lines)


def check_sample(predictor: Predictor, data, expected: float, tolerance: float = 0.05) -> float:
    """The mean accuracy (%) of the card's fixed sample, recomputed; raises if it is more than
    ``tolerance`` points from ``expected``."""
    scores, labels, mask, _, _ = test_scores(predictor, data, limit=SAMPLE, progress=False)
    value = 100 * evaluate_predictions(scores, labels, mask, thresholds=predictor.thresholds,
                                       n_bootstrap=0).mean_accuracy
    if abs(value - expected) > tolerance:
        raise AssertionError(f"sample accuracy {value:.3f} % differs from the card's "
                             f"{expected:.3f} %")
    return value

