"""Image sources: a folder of files or a zip archive, addressed by the same relative keys."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import zipfile
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from mtfap.errors import DataError


class ImageSource:
    """Reads images by key (a relative path such as ``img_align_celeba/000001.jpg``).

    ``ImageSource.open(path)`` takes a folder or a ``.zip``; zip members are read in place,
    without unpacking. Zip handles are opened per process and thread, so a source can be used
    by DataLoader workers.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.is_zip = self.root.is_file() and zipfile.is_zipfile(self.root)
        if not self.root.exists():
            raise DataError("image folder or zip not found", self.root,
                            hint="check the path; give a folder of images or a .zip")
        if self.root.is_file() and not self.is_zip:
            raise DataError("not a zip archive or a folder", self.root,
                            hint="give a folder of images or a .zip of them")
        self._local = threading.local()

    open = classmethod(lambda cls, root: cls(root))

    def _zip(self) -> zipfile.ZipFile:
        handle = getattr(self._local, "zip", None)
        if handle is None or getattr(self._local, "pid", None) != os.getpid():
            handle = zipfile.ZipFile(self.root)
            self._local.zip, self._local.pid = handle, os.getpid()
        return handle

    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_local"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()

    def keys(self, under: str = "") -> list[str]:
        """All image keys (jpg/jpeg/png), sorted; only those below folder ``under`` if given.

        Listing reads the folder or the zip's table of contents only: no image is decoded.
        macOS metadata (``__MACOSX/``, ``._name.jpg``) is not an image and is left out.
        """
        exts = (".jpg", ".jpeg", ".png")
        prefix = under.strip("/") + "/" if under.strip("/") else ""
        if self.is_zip:
            names = [n for n in self._zip().namelist() if n.startswith(prefix)]
        else:
            top = self.root / prefix
            names = [p.relative_to(self.root).as_posix() for p in top.rglob("*")] if top.is_dir() else []
        return sorted(n for n in names if n.lower().endswith(exts) and _is_real_file(n))

    def read_bytes(self, key: str) -> bytes:
        try:
            if self.is_zip:
                return self._zip().read(key)
            return (self.root / key).read_bytes()
        except (KeyError, FileNotFoundError):
            raise DataError(f"image {key!r} not found", self.root,
                            hint="the label table names an image that is not there") from None

    def load(self, key: str) -> Image.Image:
        """Decode one image as RGB; a corrupt or truncated file raises DataError naming it."""
        data = self.read_bytes(key)
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                return img.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise DataError(f"cannot decode image {key!r}: {exc}", self.root,
                            hint="the file is corrupt or truncated; replace it, or pass "
                                 "--skip-bad-images to skip it with a warning") from None

    def fingerprint(self) -> str:
        """Changes when the source changes: the cache key of decoded images.

        A zip: its path, size and modification time. A folder: its path and the relative path,
        size and modification time of every image below it (a folder's own time changes only
        when entries are added or removed, not when an image is overwritten in place). Listing
        a folder of 50,000 images this way takes well under a second.
        """
        digest = hashlib.sha1(str(self.root.resolve()).encode())
        if self.is_zip:
            st = self.root.stat()
            digest.update(f"|{st.st_size}|{st.st_mtime_ns}".encode())
        else:
            for key in self.keys():
                st = (self.root / key).stat()
                digest.update(f"|{key}|{st.st_size}|{st.st_mtime_ns}".encode())
        return digest.hexdigest()[:16]

    def __repr__(self) -> str:
        return f"ImageSource({str(self.root)!r})"


def _is_real_file(key: str) -> bool:
    """False for the metadata files macOS puts into archives and folders."""
    name = key.rsplit("/", 1)[-1]
    return not (key.startswith("__MACOSX/") or name.startswith("._"))
