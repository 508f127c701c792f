"""Opening a finished run for evaluation, graph figures and activation maps.

A run is a folder written by one of two commands:

- ``mtfap train`` (end to end): ``config.json``, ``best.pt`` / ``last.pt`` checkpoints;
  predictions need the images (the dataset named in the config, or another one).
- ``mtfap fit-heads`` (heads on frozen features): ``heads.json`` + ``heads.npz``; predictions
  need the features file it was fitted on (recorded in ``heads.json``) or another one of the
  same backbone.

:class:`Run` hides the difference: attribute names, the head weights (d x k) and biases on the
backbone's GAP features, the learned task graph when there is one, and scores on a split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np


@dataclass
class Run:
    """An opened run. ``kind`` is "train" or "heads"; use :func:`open_run`."""

    path: Path
    kind: str
    method: str
    attributes: list[str]
    info: dict                 # config.json (train) or heads.json (heads)
    model: object = None       # AttributeModel (train)
    estimator: object = None   # fitted scikit-learn heads (heads)

    def head_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """(W (d, k), b (k,)) with logits = GAP features @ W + b (eq. 15-16 use W)."""
        if self.kind == "train":
            W, b = self.model.heads.linear_map()
            return (W.cpu().numpy().astype(np.float64), b.cpu().numpy().astype(np.float64))
        return self.estimator.coef_.T, self.estimator.intercept_

    def task_graph(self) -> np.ndarray | None:
        """The learned task graph M (k, k) of a graph-heads run, else None."""
        if self.kind == "train":
            graph = getattr(self.model.heads, "graph", None)
            return None if graph is None else graph.detach().cpu().numpy().astype(np.float64)
        return getattr(self.estimator, "graph_", None)

    def backbone(self):
        """The backbone whose GAP features the heads read (trained, or the frozen one)."""
        if self.kind == "train":
            return self.model.backbone.eval()
        from mtfap.backbones import create_backbone
        meta = self.features_meta()
        if "backbone" not in meta:
            raise ValueError(f"{self.path}: the features file does not record its backbone, so "
                             "the image maps cannot be computed")
        weights = meta.get("weights", "package")
        if weights == "none":
            raise ValueError(f"{self.path}: its features came from a randomly initialised "
                             f"{meta['backbone']} whose weights were not saved, so the maps "
                             "cannot be recomputed; extract features with --weights FILE")
        return create_backbone(meta["backbone"],
                               pretrained=True if weights == "package" else weights).eval()

    def features_path(self) -> Path:
        """The features file a heads run was fitted on."""
        recorded = self.info.get("meta", {}).get("features")
        if not recorded:
            raise ValueError(f"{self.path / 'heads.json'} does not name its features file; "
                             "give one with --features")
        return Path(recorded)

    def features_meta(self) -> dict:
        return self.info.get("meta", {}).get("features_meta", {})

    def predict_split(self, split: str, data=None, features=None, batch_size: int = 64,
                      device: str = "cpu", progress: bool = True, scales=None):
        """Scores of the images of ``split``: (scores, labels, mask, identities), row-aligned.

        data : dataset path for a train run (default: the one it was trained on).
        features : features file for a heads run (default: the one it was fitted on).
        scales : train runs: average the logits over these centre zooms (sides as fractions of
            the image, ``trainer.predict``); default: the image as it is. The run's own
            ``flip_test`` adds the mirror of each view.
        """
        if self.kind == "heads" and scales is not None:
            raise ValueError("test-time zooms need images: a fit-heads run reads features "
                             "that were computed once per image")
        if self.kind == "heads":
            from mtfap.data.features import FeatureSet
            if data is not None:
                raise ValueError("a fit-heads run reads features, not images: give --features "
                                 "(made by `mtfap features` with the same backbone)")
            features = FeatureSet.load(features or self.features_path())
            if features.attributes != self.attributes:
                raise ValueError(f"the features file has attributes {features.attributes[:3]}... "
                                 f"but the heads were fitted on {self.attributes[:3]}...")
            part = features.get_split(split)
            return (self.estimator.predict_proba(part.X), part.labels, part.mask,
                    part.identities)
        import torch

        from mtfap.data.pipeline import make_loader
        from mtfap.training.config import config_from_dict
        from mtfap.training.trainer import load_dataset, predict
        if features is not None:
            raise ValueError("an end-to-end run reads images: give --data, not --features")
        config = config_from_dict(self.info)
        config = replace(config, data=str(data) if data is not None else config.data,
                         attributes=self.attributes, progress=progress)
        part = load_dataset(config).get_split(split)
        self.model.to(device)
        loader = make_loader(part, self.model.backbone.input_spec, train=False,
                             batch_size=batch_size, cache_dir=config.cache_dir)
        scores, labels, mask = predict(self.model, loader, config, torch.device(device),
                                       scales=tuple(scales) if scales else (1.0,))
        return scores, labels.astype(np.uint8), mask, part.identities


def open_run(path: str | Path, checkpoint: str = "best") -> Run:
    """Open the run folder ``path`` (see the module docstring).

    checkpoint : for a train run, "best" (``best.pt``, the best validation epoch) or "last".
    """
    path = Path(path)
    # `mtfap train` also writes a heads.json (a description of its heads): check it first.
    if (path / "config.json").is_file():
        from mtfap.training.checkpoint import load_checkpoint, load_model_state
        from mtfap.training.config import config_from_dict
        from mtfap.training.trainer import build_model, load_dataset
        if checkpoint not in ("best", "last"):
            raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
        weights = path / f"{checkpoint}.pt"
        state = load_checkpoint(weights)
        config = config_from_dict(state["config"], where=str(weights))
        if "heads.standardizer.mean" not in state["model"] and \
                "standardize" not in config.heads_params:
            # A run written before the heads standardised their features.
            config = replace(config, heads_params={**config.heads_params, "standardize": False})
        attributes = config.attributes or list(load_dataset(config).attributes)
        # The trained weights replace the backbone's, so its packaged weights are not loaded.
        model = build_model(replace(config, pretrained=False), attributes)
        load_model_state(model, state["model"], weights)
        return Run(path, "train", config.heads, list(attributes), config.to_dict(),
                   model=model.eval())
    if (path / "heads.json").is_file():
        from mtfap.training.features import load_fitted_heads
        info = json.loads((path / "heads.json").read_text())
        if info.get("format") != "mtfap-heads":
            raise ValueError(f"{path / 'heads.json'}: not written by `mtfap fit-heads`")
        estimator = load_fitted_heads(path)
        return Run(path, "heads", info["method"], list(estimator.attributes_), info,
                   estimator=estimator)
    raise FileNotFoundError(f"{path}: not a run folder (expected config.json and best.pt from "
                            "`mtfap train`, or heads.json from `mtfap fit-heads`)")
