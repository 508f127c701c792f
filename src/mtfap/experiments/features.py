"""Frozen mode: the GAP features of a dataset, computed once, for fitting heads in seconds.

With the backbone frozen, block 1 is a fixed map z -> x, so the features of every image can be
computed once (:func:`extract_features`) and the structured heads fitted on them directly
(``mtfap fit-heads``). ``flip=True`` averages the features of each image and its mirror,
x = (GAP(z) + GAP(flip(z))) / 2, a cheap test-time augmentation (faces are nearly symmetric).

:func:`ensure_features` is the one place that decides whether a features file is up to date
(its recipe: backbone, weights, flip, and everything of the dataset the file holds: the images'
content fingerprint, the keys, labels, mask, split and identities) and recomputes it if not;
``mtfap features`` and ``mtfap compare`` both go through it.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mtfap.backbones import create_backbone
from mtfap.data.dataset import FaceDataset
from mtfap.data.features import FeatureSet, file_fingerprint
from mtfap.data.layout import open_dataset
from mtfap.data.loader import make_loader
from mtfap.errors import DataError


@torch.no_grad()
def extract_features(dataset: FaceDataset, backbone: torch.nn.Module, *, batch_size: int = 64,
                     flip: bool = False, device: str | torch.device = "cpu",
                     cache_dir=None, num_workers: int = 0, progress: bool = True,
                     meta: dict | None = None, skip_bad_images: bool = False) -> FeatureSet:
    """The (n, d) GAP features of every image of ``dataset``, with its labels and split.

    Parameters
    ----------
    dataset : the images (all splits at once; the split travels with the features).
    backbone : a ``Backbone``; used in eval mode, without gradients.
    batch_size, num_workers, cache_dir : as in ``mtfap.data.loader.make_loader`` (the decoded
        images are cached, so a second extraction at the same input size decodes nothing).
    flip : average the features of each image and of its horizontal mirror.
    device : where the backbone runs.
    meta : extra entries for ``FeatureSet.meta`` (the backbone name, for example).
    skip_bad_images : leave out, with a warning, the images that cannot be decoded (else the
        first one raises DataError naming it).

    Returns
    -------
    FeatureSet whose row i belongs to ``dataset`` row i (of the images kept); ``meta`` records
    the input size, the flip option, the feature dimension, the extraction time and the images
    left out.
    """
    device = torch.device(device)
    spec = backbone.input_spec
    backbone = backbone.eval().to(device)
    loader = make_loader(dataset, spec, train=False, batch_size=batch_size, cache_dir=cache_dir,
                         num_workers=num_workers, skip_bad_images=skip_bad_images)
    features = np.zeros((len(dataset), backbone.feature_dim), np.float32)
    seen = np.zeros(len(dataset), bool)
    started = time.perf_counter()
    with tqdm(total=len(dataset), desc="features", unit="img", disable=not progress) as bar:
        for batch in loader:
            images = batch.images.to(device, non_blocking=True)
            x = backbone(images).float()
            if flip:
                x = (x + backbone(images.flip(-1)).float()) / 2
            rows = batch.index.numpy()
            features[rows] = x.cpu().numpy()
            seen[rows] = True
            bar.update(len(rows))
    skipped = [key for key, ok in zip(dataset.keys, seen) if not ok]
    info = {"input_size": list(spec.size), "flip": flip, "feature_dim": backbone.feature_dim,
            "dataset": dataset.name, "n_images": len(dataset),
            "extract_seconds": round(time.perf_counter() - started, 2),
            "skipped_images": len(skipped), "skipped_examples": skipped[:20], **(meta or {})}
    kept = dataset.subset(seen) if skipped else dataset
    return FeatureSet(features[seen], kept.labels, kept.mask, list(kept.attributes),
                      list(kept.keys), kept.split, kept.identities, info)


def features_recipe(data, dataset: FaceDataset, backbone: str, weights: str, flip: bool,
                    skip_bad_images: bool = False) -> dict:
    """What determines the features of ``dataset``: stored in the file, compared to decide
    whether it is current. A label, partition or identity file edited in place changes
    ``labels_digest``; an image replaced changes ``source_fingerprint``."""
    weights_file = weights not in ("package", "none") and Path(weights).is_file()
    if weights_file:  # where the weights are, whatever folder the features are used from
        weights = str(Path(weights).resolve())
    return {"backbone": backbone, "weights": weights, "flip": flip,
            "weights_fingerprint": file_fingerprint(weights) if weights_file else None,
            "data": str(Path(data).resolve()) if Path(data).exists() else str(data),
            "source_fingerprint": dataset.source.fingerprint(), "n_images": len(dataset),
            "attributes": list(dataset.attributes), "labels_digest": dataset.labels_digest(),
            "skip_bad_images": skip_bad_images, "max_pixels": dataset.source.pixel_limit()}


def is_up_to_date(out: str | Path, recipe: dict) -> bool:
    """Whether the features file ``out`` exists and was made by ``recipe``. A file that cannot
    be read as features is not up to date: it is recomputed and replaced."""
    out = Path(out)
    if not out.is_file():
        return False
    try:
        saved = FeatureSet.load(out).meta
    except DataError as exc:
        warnings.warn(f"{exc}; computing it again", stacklevel=2)
        return False
    return all(saved.get(k) == v for k, v in recipe.items())


def ensure_features(data, out: str | Path, *, backbone: str = "dlib_face_resnet",
                    weights: str = "package", flip: bool = False, batch_size: int = 64,
                    device: str | torch.device = "cpu", cache_dir=None, num_workers: int = 0,
                    force: bool = False, progress: bool = True, skip_bad_images: bool = False
                    ) -> tuple[FeatureSet, bool]:
    """The frozen ``backbone`` features of the dataset at ``data`` in ``out``, computed only when
    the file is missing or was made by another recipe (or ``force``).

    weights : "package" (the weights shipped in an installed package), "none" (random init) or
        a local weights file.
    skip_bad_images : leave out the images that cannot be decoded, with a warning.

    Returns the features and whether they were computed (False: the file was up to date).
    """
    dataset = open_dataset(data)
    recipe = features_recipe(data, dataset, backbone, weights, flip, skip_bad_images)
    if not force and is_up_to_date(out, recipe):
        return FeatureSet.load(out), False
    pretrained = {"package": True, "none": False}.get(weights, weights)
    network = create_backbone(backbone, pretrained=pretrained)
    features = extract_features(dataset, network, batch_size=batch_size, flip=flip,
                                device=device, cache_dir=cache_dir, num_workers=num_workers,
                                progress=progress, meta=recipe, skip_bad_images=skip_bad_images)
    features.save(out)
    return features, True
