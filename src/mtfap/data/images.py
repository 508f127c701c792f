"""Image sources: a folder of files or a zip archive, addressed by the same relative keys.

Every image is decoded by :func:`mtfap.data.decode.decode_image` (the pixel limit, EXIF
orientation, every PIL mode). An image that cannot be read or decoded, a corrupt member of a
zip (bad CRC, bad compressed data) included, is a :class:`~mtfap.errors.DataError` naming the
source and the image, which ``--skip-bad-images`` turns into a skipped image.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import zipfile
import zlib
from pathlib import Path

from PIL import Image

from mtfap.data.decode import decode_image, max_pixels_limit
from mtfap.errors import DataError

# How a damaged zip member fails when read: bad compressed data (zlib.error), a CRC mismatch
# or a broken local header (BadZipFile), a short file (EOFError, struct.error), an unsupported
# compression method (NotImplementedError) or encryption (RuntimeError).
_ZIP_MEMBER_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, struct.error, OSError,
                      NotImplementedError, RuntimeError, ValueError)
SKIP_HINT = "--skip-bad-images (mtfap data check, features, train) leaves it out with a warning"


def max_image_bytes(pixel_limit: int) -> int:
    """The largest image file read: what ``pixel_limit`` pixels take stored without compression
    at 16 bits per channel with alpha (8 bytes a pixel), plus 1 MiB of metadata. A larger file
    cannot be an image within the limit (489 MiB for the default 64 million pixels), and is
    refused before it is read: a zip member that inflates to gigabytes never reaches memory."""
    return 8 * pixel_limit + 2**20


def check_image_size(size: int, name: str, where, pixel_limit: int) -> None:
    """Raise DataError naming image ``name`` (in ``where``) when ``size`` bytes is more than an
    image within ``pixel_limit`` pixels can take (:func:`max_image_bytes`)."""
    limit = max_image_bytes(pixel_limit)
    if size > limit:
        raise DataError(f"image {name!r} is {size / 2**20:,.0f} MiB, more than an image of at "
                        f"most {pixel_limit:,} pixels can take ({limit / 2**20:,.0f} MiB)", where,
                        hint=f"it is not a photo, or raise the pixel limit with --max-pixels N; "
                             f"{SKIP_HINT}")


class ImageSource:
    """Reads images by key (a relative path such as ``img_align_celeba/000001.jpg``).

    ``ImageSource.open(path)`` takes a folder or a ``.zip``; zip members are read in place,
    without unpacking. Zip handles are opened per process and thread, so a source can be used
    by DataLoader workers.

    max_pixels : the largest image (width x height) :meth:`load` decodes; None: the
        environment variable ``MTFAP_MAX_PIXELS``, else the default of :mod:`mtfap.data.decode`.
    """

    def __init__(self, root: str | Path, max_pixels: int | None = None):
        self.root = Path(root)
        if not self.root.exists():
            raise DataError("image folder or zip not found", self.root,
                            hint="check the path; give a folder of images or a .zip")
        self.is_zip = self.root.is_file() and zipfile.is_zipfile(self.root)
        if self.root.is_file() and not self.is_zip:
            what = ("not a readable zip archive (truncated or corrupt)"
                    if self.root.suffix.lower() == ".zip" else "not a zip archive or a folder")
            raise DataError(what, self.root, hint="give a folder of images or a .zip of them")
        self.max_pixels = max_pixels
        self._local = threading.local()
        if self.is_zip:
            self._zip()  # a broken table of contents fails here, naming the archive

    open = classmethod(lambda cls, root: cls(root))

    def _zip(self) -> zipfile.ZipFile:
        handle = getattr(self._local, "zip", None)
        if handle is None or getattr(self._local, "pid", None) != os.getpid():
            try:
                handle = zipfile.ZipFile(self.root)
            except (zipfile.BadZipFile, OSError, EOFError, struct.error, ValueError) as exc:
                raise DataError(f"cannot read the zip archive ({exc})", self.root,
                                hint="the archive is truncated or corrupt; copy or pack it "
                                     "again") from None
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
        macOS metadata (``__MACOSX/``, ``._name.jpg``) is not an image and is left out, and so
        is a folder whose name ends like an image's.
        """
        exts = (".jpg", ".jpeg", ".png")
        prefix = under.strip("/") + "/" if under.strip("/") else ""
        if self.is_zip:
            names = [n for n in self._zip().namelist() if n.startswith(prefix)
                     and not n.endswith("/")]
        else:
            top = self.root / prefix
            names = [(Path(folder) / name).relative_to(self.root).as_posix()
                     for folder, _, files in os.walk(top) for name in files]
        return sorted(n for n in names if n.lower().endswith(exts) and _is_real_file(n))

    def read_bytes(self, key: str) -> bytes:
        """The bytes of image ``key``; a missing image, a file too large to be an image
        (:func:`max_image_bytes`) or a damaged zip member is a DataError naming it."""
        try:
            if self.is_zip:
                info = self._zip().getinfo(key)
                check_image_size(info.file_size, key, self.root, self.pixel_limit())
                return self._zip().read(info)
            check_image_size((self.root / key).stat().st_size, key, self.root, self.pixel_limit())
            return (self.root / key).read_bytes()
        except DataError:
            raise
        except (KeyError, FileNotFoundError):
            raise DataError(f"image {key!r} not found", self.root,
                            hint="the label table names an image that is not there") from None
        except IsADirectoryError:
            raise DataError(f"image {key!r} is a folder, not a file", self.root) from None
        except _ZIP_MEMBER_ERRORS as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise DataError(f"cannot read image {key!r}: {reason}", self.root,
                            hint=f"the file is damaged: replace it; {SKIP_HINT}") from None

    def load(self, key: str) -> Image.Image:
        """Decode one image as upright RGB (:func:`mtfap.data.decode.decode_image`); a corrupt,
        truncated or too large image raises DataError naming the source and the image."""
        data = self.read_bytes(key)
        try:
            return decode_image(data, key, max_pixels=self.max_pixels)
        except DataError as err:
            raise DataError(err.message, self.root, hint=f"{err.hint}; {SKIP_HINT}") from None

    def pixel_limit(self) -> int:
        """The pixel limit :meth:`load` applies (see ``max_pixels``)."""
        return max_pixels_limit(self.max_pixels)

    def fingerprint(self) -> str:
        """Changes when any image of the source changes: the key of everything derived from the
        images (the decoded-image cache, features files).

        A zip: the name, CRC-32 and size of every member, from the table of contents (no image
        is read: 30 ms for the 46,715 members of the CelebA subset, measured). A folder: the
        relative path, size, modification time, status-change time and inode of every image.
        The status-change time (ctime) is set by the system at every write and cannot be set
        back, so an image replaced in place with its size and modification time kept is noticed
        without reading it (10 us per file, against 30 us to hash its content from the page
        cache, measured on 5,000 CelebA images).
        """
        digest = hashlib.sha1(str(self.root.resolve()).encode())
        if self.is_zip:
            for info in self._zip().infolist():
                digest.update(f"|{info.filename}|{info.CRC:08x}|{info.file_size}".encode())
        else:
            for key in self.keys():
                st = (self.root / key).stat()
                digest.update(f"|{key}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|"
                              f"{st.st_ino}".encode())
        return digest.hexdigest()[:16]

    def __repr__(self) -> str:
        return f"ImageSource({str(self.root)!r})"


def _is_real_file(key: str) -> bool:
    """False for the metadata files macOS puts into archives and folders."""
    name = key.rsplit("/", 1)[-1]
    return not (key.startswith("__MACOSX/") or name.startswith("._"))
