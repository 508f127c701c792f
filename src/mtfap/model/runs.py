"""Opening a finished run: the folder written by ``mtfap train`` or by ``mtfap fit-heads``.

- ``mtfap train`` (end to end): ``config.json`` (the training config), ``model.json`` (the
  model's description; runs written before it existed are described from ``config.json``),
  ``best.pt`` / ``last.pt`` checkpoints. Predictions need the images (the dataset named in the
  config, or another one).
- ``mtfap fit-heads`` (heads on frozen features): ``heads.json`` + ``heads.npz``; predictions on
  a split need the features file it was fitted on (recorded in ``heads.json`` by absolute path
  and content fingerprint: a file that moved or changed is refused, never silently replaced by
  another) or another one of the same backbone given explicitly; predictions on images use the
  backbone named in the features file.

:func:`open_run` returns a :class:`TrainRun` or a :class:`HeadsRun`; both answer the same
questions (attribute names, the heads as a linear map on the backbone's GAP features, the
learned task graph, scores on a split) and both give a :class:`~mtfap.model.predictor.Predictor`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from mtfap.backbones import create_backbone
from mtfap.data.features import FeatureSet, file_fingerprint
from mtfap.data.layout import open_dataset
from mtfap.data.loader import make_loader
from mtfap.errors import DataError
from mtfap.heads.persistence import load_fitted_heads, read_heads_description
from mtfap.model.checkpoint import load_checkpoint, load_model_state
from mtfap.model.inference import predict_loader
from mtfap.model.network import build_model
from mtfap.model.predictor import Predictor
from mtfap.model.spec import ModelSpec

MODEL_FILE = "model.json"


class Run(ABC):
    """An opened run folder; :func:`open_run` picks the subclass."""

    kind: str

    def __init__(self, path: Path, method: str, attributes: list[str], info: dict):
        self.path, self.method, self.attributes, self.info = path, method, attributes, info

    @abstractmethod
    def head_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """(W (d, k), b (k,)) with logits = GAP features @ W + b (eq. 15-16 use W)."""

    @abstractmethod
    def task_graph(self) -> np.ndarray | None:
        """The learned task graph M (k, k) of a graph-heads run, else None."""

    @abstractmethod
    def backbone(self) -> torch.nn.Module:
        """The backbone whose GAP features the heads read (trained, or the frozen one)."""

    @abstractmethod
    def predictor(self, device: str = "cpu") -> Predictor:
        """The run's model as a :class:`Predictor`."""

    @abstractmethod
    def predict_split(self, split: str, data=None, features=None, batch_size: int = 64,
                      device: str = "cpu", progress: bool = True, scales=None):
        """Scores of the images of ``split``: (scores, labels, mask, identities), row-aligned.

        data : dataset path for a train run (default: the one it was trained on).
        features : features file for a heads run (default: the one it was fitted on).
        scales : train runs: average the logits over these centre zooms (sides as fractions of
            the image, ``mtfap.model.inference.view_logits``); default: the image as it is. The
            run's own ``flip_test`` adds the mirror of each view.
        """


def dataset_part(data, attributes, split: str):
    """The rows of ``split`` of the dataset at ``data`` with ``attributes`` selected; a dataset
    without a split (the user's own labelled photos) counts as all test."""
    dataset = open_dataset(data).select_attributes(attributes)
    if dataset.split is None:
        if split != "test":
            raise ValueError(f"dataset {dataset.name!r} has no train/val/test split: all of its "
                             f"images are test images, so use --split test (not {split!r})")
        return dataset
    part = dataset.get_split(split)
    if len(part) == 0:
        raise ValueError(f"dataset {dataset.name!r} has no {split} images")
    return part


class TrainRun(Run):
    """A run of ``mtfap train``: the end-to-end network from its best (or last) checkpoint."""

    kind = "train"

    def __init__(self, path: Path, spec: ModelSpec, info: dict, model):
        super().__init__(path, spec.heads, list(spec.attributes), info)
        self.spec, self.model = spec, model

    def head_weights(self):
        W, b = self.model.heads.linear_map()
        return W.cpu().numpy().astype(np.float64), b.cpu().numpy().astype(np.float64)

    def task_graph(self):
        graph = getattr(self.model.heads, "graph", None)
        return None if graph is None else graph.detach().cpu().numpy().astype(np.float64)

    def backbone(self):
        return self.model.backbone.eval()

    def predictor(self, device="cpu"):
        return Predictor(self.model, self.spec, name=self.path.name, version="run",
                         source=str(self.path), device=device)

    def predict_split(self, split, data=None, features=None, batch_size=64, device="cpu",
                      progress=True, scales=None):
        if features is not None:
            raise ValueError("an end-to-end run reads images: give --data, not --features")
        part = dataset_part(data if data is not None else self.info.get("data"), self.attributes,
                            split)
        self.model.to(device)
        loader = make_loader(part, self.model.backbone.input_spec, train=False,
                             batch_size=batch_size, cache_dir=self.info.get("cache_dir"))
        scores, labels, mask = predict_loader(
            self.model, loader, device=torch.device(device),
            scales=tuple(scales) if scales else (1.0,), flip=self.info.get("flip_test", False),
            channels_last=self.info.get("channels_last", False),
            amp=self.info.get("amp", "off"), progress=progress)
        return scores, labels.astype(np.uint8), mask, part.identities


def spec_of_train_config(config: dict, attributes=None) -> ModelSpec:
    """The model description of a train run from its saved training config (``config.json``),
    for runs written before ``model.json`` existed."""
    attributes = attributes or config.get("attributes")
    if not attributes:
        attributes = list(open_dataset(config["data"]).attributes)
    return ModelSpec(backbone=config["backbone"], heads=config["heads"], attributes=attributes,
                     backbone_args=dict(config.get("backbone_args", {})),
                     heads_params=dict(config.get("heads_params", {})),
                     flip_test=bool(config.get("flip_test", False)))


def _open_train_run(path: Path, checkpoint: str, which: str = "delivered") -> TrainRun:
    if checkpoint not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    if which not in ("delivered", "raw"):
        raise ValueError(f"weights must be 'delivered' or 'raw', got {which!r}")
    weights = path / f"{checkpoint}.pt"
    state = load_checkpoint(weights)
    config = state.get("config")
    if not isinstance(config, dict) or not isinstance(state.get("model"), dict):
        raise DataError("the checkpoint lacks its config or its weights", weights,
                        hint="it was not written by `mtfap train`")
    if (path / MODEL_FILE).is_file():
        spec = ModelSpec.load(path / MODEL_FILE)
    else:
        try:
            spec = spec_of_train_config(config)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"cannot describe the model from the checkpoint's config ({exc})",
                            weights, hint="it was not written by `mtfap train`") from None
    # The weights the run delivers: their moving average when it kept one (``ema_decay``).
    averaged = isinstance(state.get("ema"), dict)
    weights_state = state["ema"] if averaged and which == "delivered" else state["model"]
    if "heads.standardizer.mean" not in weights_state and "standardize" not in spec.heads_params:
        # A run written before the heads standardised their features.
        spec.heads_params = {**spec.heads_params, "standardize": False}
    # The trained weights replace the backbone's, so its packaged weights are not loaded.
    described_by = path / MODEL_FILE if (path / MODEL_FILE).is_file() else weights
    try:
        model = build_model(spec, pretrained=False)
        load_model_state(model, weights_state, weights)
    except ValueError as exc:
        raise ValueError(f"{exc} (the model as {described_by} describes it)") from None
    return TrainRun(path, spec, config, model.eval())


class HeadsRun(Run):
    """A run of ``mtfap fit-heads``: heads fitted on the frozen features of a backbone."""

    kind = "heads"

    def __init__(self, path: Path, info: dict, estimator):
        super().__init__(path, info["method"], list(estimator.attributes_), info)
        self.estimator = estimator

    def head_weights(self):
        return self.estimator.coef_.T, self.estimator.intercept_

    def task_graph(self):
        return getattr(self.estimator, "graph_", None)

    def features_path(self) -> Path:
        """The features file the heads were fitted on, checked to be that very file: where it
        was (an absolute path) and as it was (its content fingerprint)."""
        meta, where = self.info.get("meta", {}), self.path / "heads.json"
        recorded, fingerprint = meta.get("features"), meta.get("features_fingerprint")
        if not isinstance(recorded, str) or not recorded:
            raise DataError("does not name its features file", where,
                            hint="give one with --features")
        path = Path(recorded)
        if not path.is_absolute() or not fingerprint:
            raise DataError(f"records its features file as {recorded!r} without what identifies "
                            "it (an absolute path and a fingerprint), so another file of that "
                            "name could be scored", where,
                            hint="give the file with --features, or fit the heads again")
        if not path.is_file():
            raise DataError("the features file the heads were fitted on is not there any more",
                            path, hint="give its new place with --features")
        if file_fingerprint(path) != fingerprint:
            raise DataError("the features file changed since the heads were fitted on it (its "
                            "content fingerprint differs)", path,
                            hint="fit the heads again, or give --features FILE to score a "
                                 "file on purpose")
        return path

    def features_meta(self) -> dict:
        """How the features were made (backbone, weights, flip, dataset), from ``heads.json``."""
        meta = self.info.get("meta", {}).get("features_meta", {})
        if not isinstance(meta, dict) or not all(
                isinstance(meta.get(key, ""), str) for key in ("backbone", "weights")):
            raise DataError("its features_meta is not a mapping with backbone and weights names",
                            self.path / "heads.json", hint="fit the heads again")
        return meta

    def backbone(self):
        meta = self.features_meta()
        if "backbone" not in meta:
            raise ValueError(f"{self.path}: the features file does not record its backbone, so "
                             "the image maps cannot be computed")
        weights = meta.get("weights", "package")
        recorded = meta.get("weights_fingerprint")
        if recorded and Path(weights).is_file() and file_fingerprint(weights) != recorded:
            raise DataError("the weights file changed since the features were extracted with it",
                            weights, hint="extract the features and fit the heads again")
        if weights == "none":
            raise ValueError(f"{self.path}: its features came from a randomly initialised "
                             f"{meta['backbone']} whose weights were not saved, so the maps "
                             "cannot be recomputed; extract features with --weights FILE")
        return create_backbone(meta["backbone"],
                               pretrained=True if weights == "package" else weights).eval()

    def spec(self) -> ModelSpec:
        meta = self.features_meta()
        return ModelSpec(backbone=meta.get("backbone", "?"), heads="linear",
                         attributes=self.attributes, flip_test=bool(meta.get("flip", False)))

    def predictor(self, device="cpu"):
        model = build_model(self.spec(), backbone=self.backbone(),
                            linear_map=self.head_weights())
        return Predictor(model, self.spec(), name=self.path.name, version="run",
                         source=str(self.path), device=device)

    def predict_split(self, split, data=None, features=None, batch_size=64, device="cpu",
                      progress=True, scales=None):
        if scales is not None:
            raise ValueError("test-time zooms need images: a fit-heads run reads features "
                             "that were computed once per image")
        if data is not None:
            raise ValueError("a fit-heads run reads features, not images: give --features "
                             "(made by `mtfap features` with the same backbone)")
        path = Path(features) if features is not None else self.features_path()
        features = FeatureSet.load(path)
        fitted_on = self.features_meta().get("backbone")
        if fitted_on and features.meta.get("backbone") not in (None, fitted_on):
            raise DataError(f"holds {features.meta['backbone']} features, but the heads were "
                            f"fitted on {fitted_on} features", path,
                            hint=f"extract features with --backbone {fitted_on}")
        if features.X.shape[1] != self.estimator.n_features_in_:
            raise DataError(f"holds {features.X.shape[1]}-D features, but the heads were fitted "
                            f"on {self.estimator.n_features_in_}-D features", path,
                            hint="give a features file of the backbone the heads were fitted on")
        missing = [a for a in self.attributes if a not in features.attributes]
        if missing:
            raise DataError(f"lacks attributes the heads were fitted on: {', '.join(missing[:5])}",
                            path, hint="give features of a dataset with these attributes")
        columns = [features.attributes.index(a) for a in self.attributes]  # fit-heads --attributes
        features = replace(features, labels=features.labels[:, columns],
                           mask=features.mask[:, columns], attributes=list(self.attributes))
        if features.split is None:
            raise DataError("the features have no train/val/test split", path,
                            hint="evaluate on features of a dataset with a split")
        part = features.get_split(split)
        return self.estimator.predict_proba(part.X), part.labels, part.mask, part.identities


def _open_heads_run(path: Path) -> HeadsRun:
    return HeadsRun(path, read_heads_description(path), load_fitted_heads(path))


def open_run(path: str | Path, checkpoint: str = "best", weights: str = "delivered") -> Run:
    """Open the run folder ``path`` (see the module docstring).

    checkpoint : for a train run, "best" (``best.pt``, the best validation epoch) or "last".
    weights : for a train run that averaged its weights (``ema_decay``), "delivered" (the
        average) or "raw" (the weights the optimiser left); others have only the raw ones.
    """
    path = Path(path)
    # `mtfap train` also writes a heads_summary.json: the training config decides first.
    if (path / "config.json").is_file():
        return _open_train_run(path, checkpoint, weights)
    if (path / "heads.json").is_file():
        return _open_heads_run(path)
    raise FileNotFoundError(f"{path}: not a run folder (expected config.json and best.pt from "
                            "`mtfap train`, or heads.json from `mtfap fit-heads`)")
