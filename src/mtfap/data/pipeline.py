"""From image files to normalised batches: crop/resize per backbone, a decoded uint8 cache,
seeded training augmentation and the DataLoader.

The path of one image::

    file (zip or folder) --decode, centre crop, resize--> uint8 (H, W, 3)   [cached in a memmap]
        --collate--> uint8 (N, 3, H, W) --/255, augment (train)--> float in [0, 1]
        --normalise--> (x - mean) / std                                     [what a backbone sees]

Decoding is the slow step, so its result is cached once per (image source, key set, crop, size)
as a memmap ``(n, H, W, 3)`` in the user's cache folder; the cheap float steps run per batch.
A cache built for a whole dataset serves every subset of it (a split, a scarce-label subset):
rows are looked up by key.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from mtfap.backbones.base import InputSpec
from mtfap.data.dataset import FaceDataset
from mtfap.data.errors import DataError

try:  # POSIX advisory locks keep two processes (e.g. DDP ranks) from building one cache twice
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock, builds stay atomic but may repeat
    fcntl = None

CACHE_FORMAT = 1  # bump when the layout or the preprocessing changes: old caches are ignored


def default_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The folder for derived data: ``cache_dir`` if given, else ``$MTFAP_CACHE``, else
    ``~/.cache/mtfap``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("MTFAP_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "mtfap"


# --------------------------------------------------------------------------------------------
# Per-image preprocessing (PIL) and per-batch normalisation (torch)
# --------------------------------------------------------------------------------------------

def _check_spec(spec: InputSpec) -> tuple[int, int]:
    height, width = (int(v) for v in spec.size)
    if height < 1 or width < 1:
        raise ValueError(f"InputSpec.size must be two positive pixel counts, got {spec.size}")
    if not 0.0 < spec.crop <= 1.0:
        raise ValueError(f"InputSpec.crop is the kept fraction of the shorter side and must be in "
                         f"(0, 1], got {spec.crop}")
    return height, width


def centre_crop_box(width: int, height: int, crop: float) -> tuple[float, float, float, float]:
    """The centred square (left, top, right, bottom) whose side is ``crop * min(width, height)``."""
    side = crop * min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


def preprocess(image: Image.Image, spec: InputSpec) -> np.ndarray:
    """Centre-crop a square (``spec.crop`` of the shorter side) and resize it to ``spec.size``.

    Returns uint8 (H, W, 3). Resizing is PIL's bilinear filter, which widens its support when
    shrinking, so it also anti-aliases downscaling. The crop is square: a non-square
    ``spec.size`` stretches it.
    """
    height, width = _check_spec(spec)
    box = centre_crop_box(*image.size, spec.crop)
    resized = image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR, box=box)
    return np.array(resized, dtype=np.uint8)


def normalize(images: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """``(x - mean) / std`` per channel for a batch (N, 3, H, W).

    ``images`` is uint8 in [0, 255] (divided by 255 here) or float already in [0, 1].
    """
    x = images.float()
    mean = torch.tensor(spec.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    unit = 255.0 if images.dtype == torch.uint8 else 1.0
    # One fused pass: x / (unit std) - mean / std.
    return torch.addcmul(-mean / std, x, 1.0 / (unit * std))


# --------------------------------------------------------------------------------------------
# Seeded training augmentation on float batches in [0, 1]
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Augmentation:
    """Light, face-preserving augmentation: flip, small random crop/translation, brightness and
    contrast jitter.

    The draws of image ``i`` in epoch ``e`` come from a generator seeded by ``(seed, e, i)``,
    so a batch is the same whatever the batch composition, worker count or process.

    flip_prob : probability of a horizontal flip.
    scale : range of the side of the random square crop, as a fraction of the image side
        (zoom in by up to ``1 / scale[0]``).
    max_shift : extra translation beyond the image, as a fraction of the side (edges reflected).
    brightness, contrast : factors b, c drawn uniformly in ``[1 - value, 1 + value]``;
        ``x <- (b x - m) c + m`` with m the mean of ``b x`` over the image, then clipped to [0, 1].
    """

    flip_prob: float = 0.5
    scale: tuple[float, float] = (0.85, 1.0)
    max_shift: float = 0.05
    brightness: float = 0.2
    contrast: float = 0.2

    def __post_init__(self):
        low, high = self.scale
        if not (0 <= self.flip_prob <= 1 and 0 < low <= high <= 1 and self.max_shift >= 0
                and 0 <= self.brightness < 1 and 0 <= self.contrast < 1):
            raise ValueError(f"invalid augmentation settings {self}: need 0 <= flip_prob <= 1, "
                             "0 < scale[0] <= scale[1] <= 1, max_shift >= 0, "
                             "0 <= brightness, contrast < 1")

    def draw(self, indices, *, seed: int, epoch: int) -> np.ndarray:
        """Per-image parameters, (N, 6): flip, crop side s, shift x, shift y, brightness, contrast."""
        params = np.empty((len(indices), 6))
        for row, index in enumerate(indices):
            u = np.random.default_rng([seed, epoch, int(index)]).random(6)
            side = self.scale[0] + (self.scale[1] - self.scale[0]) * u[1]
            # In grid_sample coordinates the image spans [-1, 1]: a window of half-width s stays
            # inside when its centre is within 1 - s; max_shift (fraction of the side) adds 2x.
            reach = 1.0 - side + 2.0 * self.max_shift
            params[row] = (u[0] < self.flip_prob, side, reach * (2 * u[2] - 1),
                           reach * (2 * u[3] - 1), 1 + self.brightness * (2 * u[4] - 1),
                           1 + self.contrast * (2 * u[5] - 1))
        return params

    def __call__(self, images: torch.Tensor, indices, *, seed: int, epoch: int) -> torch.Tensor:
        """Augment float images (N, 3, H, W) in [0, 1]; ``indices`` are the dataset rows."""
        p = torch.as_tensor(self.draw(indices, seed=seed, epoch=epoch), dtype=images.dtype)
        flip = 1 - 2 * p[:, 0]  # -1 mirrors the x axis
        if self.scale != (1.0, 1.0) or self.max_shift > 0:
            # Output pixel (x, y) in [-1, 1]^2 samples input (flip s x + t_x, s y + t_y): crop,
            # translation and flip in one bilinear resampling.
            theta = torch.zeros(len(images), 2, 3, dtype=images.dtype)
            theta[:, 0, 0], theta[:, 0, 2] = flip * p[:, 1], p[:, 2]
            theta[:, 1, 1], theta[:, 1, 2] = p[:, 1], p[:, 3]
            x = _resample(images, theta)
        else:
            x = images.clone()
            flipped = torch.nonzero(flip < 0).flatten()
            x[flipped] = images[flipped].flip(-1)
        if self.brightness == 0 and self.contrast == 0:
            return x
        # (b x - m) c + m with m = mean(b x) = b mean(x) is one affine map a x + o per image.
        b, c = p[:, 4], p[:, 5]
        offset = (b * x.mean(dim=(1, 2, 3)) * (1 - c)).view(-1, 1, 1, 1)
        return torch.addcmul(offset, x, (b * c).view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def centre_zoom(images: torch.Tensor, side: float) -> torch.Tensor:
    """The centre square of ``side`` (a fraction of the image side) of each image (N, C, H, W),
    resampled bilinearly to the full size: the test-time view that matches a training crop of
    that side (``Augmentation.scale``). ``side = 1`` returns the images unchanged."""
    if not 0 < side <= 1:
        raise ValueError(f"zoom side must be in (0, 1], got {side!r}")
    if side == 1:
        return images
    theta = images.new_tensor([[side, 0.0, 0.0], [0.0, side, 0.0]]).expand(len(images), 2, 3)
    return _resample(images, theta)


def _resample(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Bilinear resampling of ``images`` (N, C, H, W) through the affine maps ``theta`` (N, 2, 3)
    in grid_sample coordinates (the image spans [-1, 1]; pixel centres, edges reflected)."""
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)


# --------------------------------------------------------------------------------------------
# The decoded-image cache
# --------------------------------------------------------------------------------------------

@dataclass
class DecodedImageCache:
    """A complete cache entry: uint8 images (n, H, W, 3) of ``keys`` in a memmap file.

    ``bad_keys`` are images that could not be decoded when the cache was built with
    ``skip_bad_images``; their rows hold zeros.
    """

    data_path: Path
    keys: list[str]
    size: tuple[int, int]
    bad_keys: list[str] = field(default_factory=list)
    _array: np.ndarray | None = field(default=None, init=False, repr=False)
    _pid: int | None = field(default=None, init=False, repr=False)

    def __getstate__(self):  # a memmap would pickle as a full copy; workers reopen the file
        state = self.__dict__.copy()
        state["_array"], state["_pid"] = None, None
        return state

    @property
    def array(self) -> np.ndarray:
        """The read-only memmap (n, H, W, 3), opened once per process."""
        if self._array is None or self._pid != os.getpid():
            self._array = np.memmap(self.data_path, dtype=np.uint8, mode="r",
                                    shape=(len(self.keys), *self.size, 3))
            self._pid = os.getpid()
        return self._array

    def rows(self, keys) -> np.ndarray:
        """Row of each of ``keys`` in this cache (KeyError if one is not in it)."""
        position = {key: row for row, key in enumerate(self.keys)}
        return np.fromiter((position[k] for k in keys), dtype=np.int64, count=len(keys))


def _keys_digest(keys: list[str]) -> str:
    return hashlib.sha1("\n".join(keys).encode()).hexdigest()


def cache_folder(dataset: FaceDataset, cache_dir: str | Path | None = None) -> Path:
    """The folder holding the cache entries of ``dataset``'s image source."""
    source_id = hashlib.sha1(str(dataset.source.root.resolve()).encode()).hexdigest()[:12]
    return default_cache_dir(cache_dir) / "decoded" / source_id


def _sidecars(folder: Path):
    for sidecar in sorted(folder.glob("*.json")):
        try:
            yield sidecar, json.loads(sidecar.read_text())
        except (OSError, ValueError):
            continue  # unreadable: not a complete entry, rebuilt on demand


def find_cache(dataset: FaceDataset, spec: InputSpec,
               cache_dir: str | Path | None = None) -> DecodedImageCache | None:
    """A complete cache entry that holds every image of ``dataset`` at ``spec``, or None.

    An entry is used only if its sidecar matches the source's current fingerprint, the crop, the
    size and the cache format, and its data file has exactly the expected size; the entry built
    for exactly these keys is preferred, then any entry whose keys include them.
    """
    height, width = _check_spec(spec)
    folder = cache_folder(dataset, cache_dir)
    if not folder.is_dir():
        return None
    fingerprint, wanted = dataset.source.fingerprint(), set(dataset.keys)
    digest = _keys_digest(sorted(wanted))
    candidates = []
    for sidecar, meta in _sidecars(folder):
        if (meta.get("format") != CACHE_FORMAT or meta.get("fingerprint") != fingerprint
                or meta.get("size") != [height, width] or meta.get("crop") != spec.crop):
            continue
        data_path = sidecar.with_suffix(".u8")
        keys = meta.get("keys", [])
        expected = len(keys) * height * width * 3
        if not data_path.is_file() or data_path.stat().st_size != expected:
            continue
        if meta.get("keys_sha1") == digest or wanted.issubset(keys):
            entry = DecodedImageCache(data_path, keys, (height, width), meta.get("bad_keys", []))
            candidates.append((meta.get("keys_sha1") != digest, len(keys), entry))
    return min(candidates, key=lambda c: c[:2])[2] if candidates else None


@contextlib.contextmanager
def _folder_lock(folder: Path):
    with open(folder / ".lock", "w") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _remove_stale(folder: Path, fingerprint: str) -> None:
    """Delete leftovers of killed builds and entries of an earlier version of the source.

    Called with the folder lock held, so no other build is writing there.
    """
    for path in folder.iterdir():
        stale_tmp = ".tmp-" in path.name
        old_entry = path.suffix in (".u8", ".json") and not path.name.startswith(fingerprint)
        if stale_tmp or old_entry:
            path.unlink(missing_ok=True)


def _write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


def build_cache(dataset: FaceDataset, spec: InputSpec, cache_dir: str | Path | None = None, *,
                skip_bad_images: bool = False, num_threads: int = 2,
                progress: bool = True) -> DecodedImageCache:
    """Decode every image of ``dataset`` once at ``spec`` into a memmap cache (or reuse one).

    Build the cache of a whole dataset before splitting it and every split reuses it.
    The images are decoded by ``num_threads`` threads (PIL releases the GIL while decoding and
    resizing) into a temporary file, which is renamed into place only when complete; the JSON
    sidecar that marks the entry valid is written last. A killed build therefore leaves no entry
    that looks complete, and its temporary files are removed by the next build.

    Raises DataError naming the image when one cannot be decoded, unless ``skip_bad_images``:
    then its row is zeros, it is listed in the sidecar's ``bad_keys`` and a warning is issued.
    """
    height, width = _check_spec(spec)
    if len(dataset) == 0:
        raise ValueError(f"dataset {dataset.name!r} is empty: nothing to cache")
    found = find_cache(dataset, spec, cache_dir)
    if found is not None:
        return found
    folder = cache_folder(dataset, cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with _folder_lock(folder):
        found = find_cache(dataset, spec, cache_dir)  # another process may have built it meanwhile
        if found is not None:
            return found
        fingerprint = dataset.source.fingerprint()
        _remove_stale(folder, fingerprint)
        keys = sorted(set(dataset.keys))
        digest = _keys_digest(keys)
        stem = f"{fingerprint}-{digest[:16]}-{height}x{width}-crop{spec.crop:g}"
        data_path, sidecar = folder / f"{stem}.u8", folder / f"{stem}.json"
        tmp_path = folder / f"{stem}.u8.tmp-{os.getpid()}"
        source, bad_keys, start = dataset.source, [], time.perf_counter()

        def decode(key):
            try:
                return preprocess(source.load(key), spec)
            except DataError:
                if not skip_bad_images:
                    raise
                return None

        try:
            out = np.memmap(tmp_path, dtype=np.uint8, mode="w+", shape=(len(keys), height, width, 3))
            block = 256  # small blocks: an error stops the pool after at most one block
            with ThreadPoolExecutor(max(1, num_threads)) as pool, \
                    tqdm(total=len(keys), desc=f"decoding {dataset.name} at {height}x{width}",
                         unit="img", disable=not progress) as bar:
                for first in range(0, len(keys), block):
                    chunk = keys[first:first + block]
                    for row, image in enumerate(pool.map(decode, chunk), start=first):
                        if image is None:
                            bad_keys.append(keys[row])
                            out[row] = 0
                        else:
                            out[row] = image
                    bar.update(len(chunk))
            out.flush()
            del out
            sidecar.unlink(missing_ok=True)
            os.replace(tmp_path, data_path)
        finally:
            tmp_path.unlink(missing_ok=True)
        _write_json_atomic(sidecar, {
            "format": CACHE_FORMAT, "source": str(source.root.resolve()),
            "fingerprint": fingerprint, "crop": spec.crop, "size": [height, width],
            "resample": "bilinear", "count": len(keys), "keys_sha1": digest,
            "bad_keys": bad_keys, "build_seconds": round(time.perf_counter() - start, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "keys": keys})
    if bad_keys:
        warnings.warn(f"{source.root}: {len(bad_keys)} image(s) could not be decoded and are "
                      f"excluded (all labels masked): {', '.join(bad_keys[:5])}"
                      f"{' ...' if len(bad_keys) > 5 else ''}", stacklevel=2)
    return DecodedImageCache(data_path, keys, (height, width), bad_keys)


# --------------------------------------------------------------------------------------------
# Dataset, collation and loader
# --------------------------------------------------------------------------------------------

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
                                    hint="replace the file, or pass --skip-bad-images")
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
    """

    def __init__(self, spec: InputSpec, augmentation: Augmentation | None, seed: int):
        self.spec, self.augmentation, self.seed, self.epoch = spec, augmentation, seed, 0

    def __call__(self, samples) -> Batch:
        images = torch.stack([s[0] for s in samples])
        labels = torch.stack([s[1] for s in samples])
        mask = torch.stack([s[2] for s in samples])
        index = torch.tensor([s[3] for s in samples], dtype=torch.int64)
        if self.augmentation is not None:
            images = self.augmentation(images.float().div_(255.0), index.tolist(), seed=self.seed,
                                       epoch=self.epoch)
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
    collate = NormalizingCollate(spec, augmentation if train else None, seed)
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return FaceLoader(images, batch_size=batch_size, shuffle=shuffle, sampler=sampler,
                      num_workers=num_workers, collate_fn=collate, drop_last=drop_last,
                      generator=generator, pin_memory=pin_memory)
