"""From a ``FaceDataset`` to normalised batches: torch samples read from the decoded-image
cache, collation with the seeded augmentation, and the DataLoader."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mtfap.backbones.base import InputSpec
from mtfap.data.cache import build_cache
from mtfap.data.dataset import FaceDataset
from mtfap.data.images import SKIP_HINT
from mtfap.data.transforms import Augmentation, _check_spec, normalize, preprocess
from mtfap.errors import DataError


class FaceImageDataset(Dataset):
    """A ``FaceDataset`` as torch samples ``(image uint8 (3, H, W), labels float (k,),
    mask bool (k,), index)``, where ``index`` is the row in the ``FaceDataset``.

    cache : read decoded images from the memmap cache (built on first use) instead of decoding
        each image at every epoch.
    skip_bad_images : an image that cannot be decoded is excluded with a warning instead of
        raising DataError. With the cache this is known up front: the row is left out of the
        samples and its mask row set to False. Without it, the row is found bad when first read
        and is returned as a zero image with an all-False mask (contributing no loss).
    """

    def __init__(self, dataset: FaceDataset, spec: InputSpec, *, cache: bool = True,
                 cache_dir: str | Path | None = None, skip_bad_images: bool = False,
                 num_threads: int = 2, progress: bool = True):
        _check_spec(spec)
        self.faces, self.spec, self.skip_bad_images = dataset, spec, skip_bad_images
        self.labels = torch.from_numpy(dataset.labels.astype(np.float32))
        self.mask = torch.from_numpy(dataset.mask.copy())
        self.samples = np.arange(len(dataset))
        self.cache, self.cache_rows = None, None
        if cache:
            self.cache = build_cache(dataset, spec, cache_dir, skip_bad_images=skip_bad_images,
                                     num_threads=num_threads, progress=progress)
            self.cache_rows = self.cache.rows(dataset.keys)
            if self.cache.bad_keys:
                bad = np.isin(np.asarray(dataset.keys, dtype=object),
                              np.asarray(self.cache.bad_keys, dtype=object))
                if bad.any() and not skip_bad_images:
                    first = dataset.keys[int(np.flatnonzero(bad)[0])]
                    raise DataError(f"cannot decode image {first!r} (recorded when the cache was "
                                    "built)", dataset.source.root,
                                    hint=f"replace the file; {SKIP_HINT}")
                self.mask[torch.from_numpy(bad)] = False
                self.samples = np.flatnonzero(~bad)

    def __len__(self) -> int:
        return len(self.samples)

    def image(self, row: int) -> tuple[np.ndarray, bool]:
        """Decoded uint8 (H, W, 3) image of dataset row ``row``, and whether it is usable."""
        if self.cache is not None:
            return np.array(self.cache.array[self.cache_rows[row]]), True
        key = self.faces.keys[row]
        try:
            return preprocess(self.faces.source.load(key), self.spec), True
        except DataError as err:
            if not self.skip_bad_images:
                raise
            warnings.warn(f"skipping undecodable image (labels masked): {err}", stacklevel=2)
            return np.zeros((*self.spec.size, 3), np.uint8), False

    def __getitem__(self, i: int):
        row = int(self.samples[i])
        image, usable = self.image(row)
        mask = self.mask[row] if usable else torch.zeros_like(self.mask[row])
        return torch.from_numpy(image).permute(2, 0, 1), self.labels[row], mask, row


class Batch(NamedTuple):
    """A collated batch: images are float (N, 3, H, W), normalised for the backbone."""

    images: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor
    index: torch.Tensor


class NormalizingCollate:
    """Stacks samples, augments them (training) and normalises them for ``spec``.

    ``epoch`` is set by ``FaceLoader`` before each pass; this runs in the DataLoader workers.
    ``unlabel`` (k,) bool: the label columns to read as missing on the images that the
    augmentation covers (its ``cover_unlabel``).
    """

    def __init__(self, spec: InputSpec, augmentation: Augmentation | None, seed: int,
                 unlabel: np.ndarray | None = None):
        self.spec, self.augmentation, self.seed, self.epoch = spec, augmentation, seed, 0
        self.unlabel = None if unlabel is None else torch.as_tensor(unlabel, dtype=torch.bool)

    def __call__(self, samples) -> Batch:
        images = torch.stack([s[0] for s in samples])
        labels = torch.stack([s[1] for s in samples])
        mask = torch.stack([s[2] for s in samples])
        index = torch.tensor([s[3] for s in samples], dtype=torch.int64)
        if self.augmentation is not None:
            images = self.augmentation(images.float().div_(255.0), index.tolist(), seed=self.seed,
                                       epoch=self.epoch)
            if self.unlabel is not None:
                covered = torch.as_tensor(self.augmentation.covered(
                    index.tolist(), seed=self.seed, epoch=self.epoch))
                mask = mask & ~(covered.view(-1, 1) & self.unlabel.view(1, -1))
        return Batch(normalize(images, self.spec), labels, mask, index)


class FaceLoader(DataLoader):
    """A DataLoader of ``Batch`` es whose augmentation draws depend on (seed, epoch, row).

    Each pass uses the next epoch number (0, 1, ...); ``set_epoch`` sets it explicitly (and
    forwards to a sampler that has ``set_epoch``, such as DistributedSampler).
    """

    _next_epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self._next_epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        # Set before the workers start, as they take a copy of the collate function.
        self.collate_fn.epoch = self._next_epoch
        self._next_epoch += 1
        return super().__iter__()


def make_loader(dataset: FaceDataset | FaceImageDataset, spec: InputSpec, *, train: bool,
                batch_size: int = 64, shuffle: bool | None = None, num_workers: int = 0,
                cache: bool = True, cache_dir: str | Path | None = None, seed: int = 0,
                sampler=None, drop_last: bool = False, augmentation: Augmentation | None = None,
                skip_bad_images: bool = False, pin_memory: bool = False) -> FaceLoader:
    """A loader of normalised ``Batch`` es for a backbone with input ``spec``.

    Parameters
    ----------
    dataset : a FaceDataset, or a FaceImageDataset to share one opened cache between loaders.
    train : augment (``augmentation``, default ``Augmentation()``) and, unless ``shuffle`` or
        ``sampler`` says otherwise, shuffle. Evaluation loaders are neither.
    shuffle : default ``train and sampler is None``; the order is seeded by ``seed``.
    num_workers : decoding processes (0 = in the calling process).
    cache, cache_dir, skip_bad_images : see ``FaceImageDataset`` and ``build_cache``.
    seed : seeds the shuffling and the augmentation draws.
    sampler : e.g. a DistributedSampler; excludes ``shuffle=True``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if sampler is not None and shuffle:
        raise ValueError("give either shuffle=True or a sampler (which does its own shuffling)")
    if shuffle is None:
        shuffle = train and sampler is None
    if isinstance(dataset, FaceImageDataset):
        if dataset.spec != spec:
            raise ValueError(f"the FaceImageDataset was made for {dataset.spec}, not {spec}")
        images = dataset
    else:
        images = FaceImageDataset(dataset, spec, cache=cache, cache_dir=cache_dir,
                                  skip_bad_images=skip_bad_images)
    if train and augmentation is None:
        augmentation = Augmentation()
    unlabel = None
    if train and augmentation.cover_unlabel:
        attributes = list(images.faces.attributes)
        unknown = [name for name in augmentation.cover_unlabel if name not in attributes]
        if unknown:
            raise ValueError(f"augmentation cover_unlabel names {unknown}, not attributes of "
                             f"this dataset; its attributes are {', '.join(attributes)}")
        unlabel = np.isin(attributes, augmentation.cover_unlabel)
    collate = NormalizingCollate(spec, augmentation if train else None, seed, unlabel)
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return FaceLoader(images, batch_size=batch_size, shuffle=shuffle, sampler=sampler,
                      num_workers=num_workers, collate_fn=collate, drop_last=drop_last,
                      generator=generator, pin_memory=pin_memory)
