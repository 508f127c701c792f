"""Frozen mode: the GAP features of a dataset, computed once, for fitting heads in seconds.

With the backbone frozen, block 1 is a fixed map z -> x, so the features of every image can be
computed once (:func:`extract_features`) and the structured heads fitted on them directly
(``mtfap fit-heads``). ``flip=True`` averages the features of each image and its mirror,
x = (GAP(z) + GAP(flip(z))) / 2, a cheap test-time augmentation (faces are nearly symmetric).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mtfap.data.dataset import FaceDataset
from mtfap.data.features import FeatureSet
from mtfap.evaluation.reports import write_json
from mtfap.training.checkpoint import atomic_write


@torch.no_grad()
def extract_features(dataset: FaceDataset, backbone: torch.nn.Module, *, batch_size: int = 64,
                     flip: bool = False, device: str | torch.device = "cpu",
                     cache_dir=None, num_workers: int = 0, progress: bool = True,
                     meta: dict | None = None) -> FeatureSet:
    """The (n, d) GAP features of every image of ``dataset``, with its labels and split.

    Parameters
    ----------
    dataset : the images (all splits at once; the split travels with the features).
    backbone : a ``Backbone``; used in eval mode, without gradients.
    batch_size, num_workers, cache_dir : as in ``mtfap.data.pipeline.make_loader`` (the decoded
        images are cached, so a second extraction at the same input size decodes nothing).
    flip : average the features of each image and of its horizontal mirror.
    device : where the backbone runs.
    meta : extra entries for ``FeatureSet.meta`` (the backbone name, for example).

    Returns
    -------
    FeatureSet whose row i belongs to ``dataset`` row i; ``meta`` records the input size, the
    flip option, the feature dimension and the extraction time.
    """
    from mtfap.data.pipeline import make_loader
    device = torch.device(device)
    spec = backbone.input_spec
    backbone = backbone.eval().to(device)
    loader = make_loader(dataset, spec, train=False, batch_size=batch_size, cache_dir=cache_dir,
                         num_workers=num_workers)
    features = np.zeros((len(dataset), backbone.feature_dim), np.float32)
    started = time.perf_counter()
    with tqdm(total=len(dataset), desc="features", unit="img", disable=not progress) as bar:
        for batch in loader:
            images = batch.images.to(device, non_blocking=True)
            x = backbone(images).float()
            if flip:
                x = (x + backbone(images.flip(-1)).float()) / 2
            rows = batch.index.numpy()
            features[rows] = x.cpu().numpy()
            bar.update(len(rows))
    info = {"input_size": list(spec.size), "flip": flip, "feature_dim": backbone.feature_dim,
            "dataset": dataset.name, "n_images": len(dataset),
            "extract_seconds": round(time.perf_counter() - started, 2), **(meta or {})}
    return FeatureSet(features, dataset.labels, dataset.mask, list(dataset.attributes),
                      list(dataset.keys), dataset.split, dataset.identities, info)


# --------------------------------------------------------------------------------------------
# Heads fitted on fixed features, saved without pickle
# --------------------------------------------------------------------------------------------

def head_estimator_classes() -> dict:
    """Head method name -> scikit-learn estimator class."""
    from mtfap.heads import GraphHeads, IndependentHeads, LowRankSparseHeads
    return {"independent": IndependentHeads, "lowrank_sparse": LowRankSparseHeads,
            "graph": GraphHeads}


def make_head_estimator(method: str, params: dict | None = None, attributes=None):
    """``IndependentHeads`` / ``LowRankSparseHeads`` / ``GraphHeads`` with ``params``.

    Unknown methods and parameter names raise ValueError naming the closest valid one.
    """
    from mtfap.training.config import did_you_mean
    classes = head_estimator_classes()
    if method not in classes:
        raise ValueError(f"unknown head method {method!r}.{did_you_mean(method, classes)} "
                         f"Methods: {', '.join(classes)}")
    estimator = classes[method](attributes=attributes)
    valid = sorted(set(estimator.get_params()) - {"attributes"})
    for name in params or {}:
        if name not in valid:
            raise ValueError(f"{method} heads have no parameter {name!r}."
                             f"{did_you_mean(name, valid)} Parameters: {', '.join(valid)}")
    return estimator.set_params(**(params or {}))


def _fitted_attributes(estimator) -> tuple[dict, dict]:
    """Split the fitted attributes (``name_``) into arrays (for .npz) and the rest (for JSON)."""
    arrays, values = {}, {}
    for name, value in vars(estimator).items():
        if not name.endswith("_") or name.startswith("_"):
            continue
        if isinstance(value, np.ndarray):
            arrays[name] = value
        elif isinstance(value, list) and value and all(isinstance(v, np.ndarray) for v in value):
            for i, part in enumerate(value):  # per-group factors such as L_ and S_
                arrays[f"{name}/{i}"] = part
            values[name] = {"arrays": len(value)}
        else:
            values[name] = value
    return arrays, values


def save_fitted_heads(estimator, method: str, folder: str | Path, meta: dict | None = None) -> Path:
    """Write ``heads.npz`` (fitted arrays) and ``heads.json`` (method, parameters, the other
    fitted values, ``meta``) into ``folder``, atomically. No pickle: both are plain data."""
    folder = Path(folder)
    arrays, values = _fitted_attributes(estimator)
    description = {"format": "mtfap-heads", "version": 1, "method": method,
                   "params": estimator.get_params(),
                   "fitted": values, "meta": meta or {}}
    def write_arrays(tmp):
        with open(tmp, "wb") as handle:  # a file object: np.savez would append .npz to a name
            np.savez(handle, **arrays)

    atomic_write(folder / "heads.npz", write_arrays)
    write_json(folder / "heads.json", description)
    return folder


def load_fitted_heads(folder: str | Path):
    """The estimator saved by :func:`save_fitted_heads`, ready for ``predict_proba``."""
    folder = Path(folder)
    for name in ("heads.json", "heads.npz"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name}: not found (write it with `mtfap fit-heads`)")
    description = json.loads((folder / "heads.json").read_text())
    if description.get("format") != "mtfap-heads":
        raise ValueError(f"{folder / 'heads.json'}: not an mtfap heads file")
    estimator = make_head_estimator(description["method"])
    estimator.set_params(**description["params"])
    with np.load(folder / "heads.npz", allow_pickle=False) as stored:
        arrays = {key: stored[key] for key in stored.files}
    for name, value in description["fitted"].items():
        if isinstance(value, dict) and set(value) == {"arrays"}:
            value = [arrays.pop(f"{name}/{i}") for i in range(value["arrays"])]
        setattr(estimator, name, value)
    for name, value in arrays.items():
        setattr(estimator, name, value)
    return estimator
