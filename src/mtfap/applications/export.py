"""From a run to a model anyone can load: measure its alignment template on its training
images, choose its test-time views and thresholds, and write it as an exported model
(``mtfap.model.store``: safetensors + ``model.json`` with the SHA-256 of the weights)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from mtfap.data.layout import open_dataset
from mtfap.evaluation.metrics import tune_thresholds
from mtfap.faces.align import AlignmentTemplate
from mtfap.faces.landmarks import LandmarkModel
from mtfap.faces.template import measure_template
from mtfap.model.runs import open_run
from mtfap.model.store import export_model


def training_template(data, input_spec, *, count: int = 2000, seed: int = 0,
                      progress: bool = True) -> AlignmentTemplate:
    """The alignment template of the training images of the dataset at ``data``: measured on
    ``count`` training images drawn at random (seeded), with dlib's 5-point landmarks."""
    from tqdm.auto import tqdm  # imported here: only the measurement shows a bar

    dataset = open_dataset(data)
    part = dataset.get_split("train") if dataset.split is not None else dataset
    rows = np.random.default_rng(seed).permutation(len(part))[:count]
    keys = [part.keys[i] for i in sorted(rows)]
    images = (np.asarray(part.source.load(key)) for key in
              tqdm(keys, desc="template", unit="img", disable=not progress))
    return measure_template(images, input_spec, LandmarkModel(5), "hog",
                            source=f"{dataset.name} training images")


def export_run(run: str | Path, out: str | Path, *, name: str, version: str, data=None,
               template_images: int = 2000, test_scales=None, thresholds: str = "0.5",
               dtype: torch.dtype = torch.float16, backbone_weights: str = "file",
               description: str = "", progress: bool = True) -> Path:
    """Export the run folder ``run`` into ``out`` (see the module docstring).

    data : the training dataset (default: the one named by the run).
    test_scales : the test-time zooms of the exported model (default: the image only).
    thresholds : "0.5", or "val": per attribute, the threshold of highest validation accuracy.
    """
    opened = open_run(run)
    predictor = opened.predictor()
    data = data if data is not None else (opened.info.get("data") or
                                          opened.features_meta().get("data"))
    if not data:
        raise ValueError(f"{run}: the run does not name its training data; give --data")
    template = training_template(data, predictor.input_spec, count=template_images,
                                 progress=progress)
    spec = replace(predictor.spec, template=template.to_dict(),
                   test_scales=list(test_scales or [1.0]))
    if thresholds == "val":
        scores, labels, mask, _ = (opened.predict_split("val", progress=progress,
                                                        scales=test_scales)
                                   if opened.kind == "train" else opened.predict_split("val"))
        spec.thresholds = tune_thresholds(scores, labels, mask).tolist()
    elif thresholds != "0.5":
        raise ValueError(f"thresholds must be '0.5' or 'val', got {thresholds!r}")
    return export_model(predictor, out, name=name, version=version, spec=spec, dtype=dtype,
                        backbone_weights=backbone_weights, description=description,
                        card={"trained_from": Path(run).name, "data": Path(str(data)).name})
