"""The decoded-image cache: every image of a dataset decoded, cropped and resized once into a
uint8 memmap ``(n, H, W, 3)`` in the user's cache folder.

Decoding is the slow step of the image pipeline, so its result is cached once per (image
source, key set, crop, size); the cheap float steps run per batch (``mtfap.data.loader``).
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

import numpy as np
from tqdm.auto import tqdm

from mtfap.backbones.base import InputSpec
from mtfap.data.dataset import FaceDataset
from mtfap.data.transforms import _check_spec, preprocess
from mtfap.errors import DataError

try:  # POSIX advisory locks keep two processes (e.g. DDP ranks) from building one cache twice
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock, builds stay atomic but may repeat
    fcntl = None

CACHE_FORMAT = 2  # bump when the layout or the preprocessing changes: old caches are ignored


def default_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The folder for derived data: ``cache_dir`` if given, else ``$MTFAP_CACHE``, else
    ``~/.cache/mtfap``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("MTFAP_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "mtfap"


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


def find_cache(dataset: FaceDataset, spec: InputSpec, cache_dir: str | Path | None = None,
               fingerprint: str | None = None) -> DecodedImageCache | None:
    """A complete cache entry that holds every image of ``dataset`` at ``spec``, or None.

    An entry is used only if its sidecar matches the source's current fingerprint (of the
    images' content, ``ImageSource.fingerprint``; pass it when already computed), the pixel
    limit, the crop, the size and the cache format, and its data file has exactly the expected
    size; the entry built for exactly these keys is preferred, then any entry whose keys
    include them.
    """
    height, width = _check_spec(spec)
    folder = cache_folder(dataset, cache_dir)
    if not folder.is_dir():
        return None
    fingerprint = fingerprint or dataset.source.fingerprint()
    wanted, limit = set(dataset.keys), dataset.source.pixel_limit()
    digest = _keys_digest(sorted(wanted))
    candidates = []
    for sidecar, meta in _sidecars(folder):
        if (meta.get("format") != CACHE_FORMAT or meta.get("fingerprint") != fingerprint
                or meta.get("size") != [height, width] or meta.get("crop") != spec.crop
                or meta.get("max_pixels") != limit):
            continue
        data_path = sidecar.with_suffix(".u8")
        keys = meta.get("keys", [])
        bad_keys = meta.get("bad_keys", [])
        if not all(isinstance(k, list) and all(isinstance(key, str) for key in k)
                   for k in (keys, bad_keys)):
            continue  # not written by build_cache: rebuilt
        expected = len(keys) * height * width * 3
        if not data_path.is_file() or data_path.stat().st_size != expected:
            continue
        if meta.get("keys_sha1") == digest or wanted.issubset(keys):
            entry = DecodedImageCache(data_path, keys, (height, width), bad_keys)
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
    fingerprint = dataset.source.fingerprint()
    found = find_cache(dataset, spec, cache_dir, fingerprint)
    if found is not None:
        return found
    folder = cache_folder(dataset, cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with _folder_lock(folder):
        # another process may have built it meanwhile
        found = find_cache(dataset, spec, cache_dir, fingerprint)
        if found is not None:
            return found
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
            "fingerprint": fingerprint, "max_pixels": source.pixel_limit(), "crop": spec.crop,
            "size": [height, width],
            "resample": "bilinear", "count": len(keys), "keys_sha1": digest,
            "bad_keys": bad_keys, "build_seconds": round(time.perf_counter() - start, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "keys": keys})
    if bad_keys:
        warnings.warn(f"{source.root}: {len(bad_keys)} image(s) could not be decoded and are "
                      f"excluded (all labels masked): {', '.join(bad_keys[:5])}"
                      f"{' ...' if len(bad_keys) > 5 else ''}", stacklevel=2)
    return DecodedImageCache(data_path, keys, (height, width), bad_keys)
