"""Bytes to an upright 8-bit RGB image: the one decoder for every image the project reads.

Photos come in every form a camera, a scanner or an editor writes: rotated by an EXIF tag,
grayscale, palette, with transparency, CMYK, 16 bits per sample, truncated by a failed copy.
:func:`decode_image` turns each into the same thing, an upright ``RGB`` PIL image, or raises a
one-line :class:`~mtfap.errors.DataError` that names the file and says what to do.

- EXIF orientation is applied, so a portrait photo stands upright.
- Transparent pixels are composited onto white, as image viewers show them (onto black, a
  logo's black text or a cut-out face's dark hair would vanish into the background).
- 16-bit and 32-bit samples are scaled by their bit depth (65535 -> 255), not clipped at 255,
  which would turn every pixel above 255/65535 of full scale white.
- The pixel count is checked from the header, before the pixels are decoded: a small file can
  claim 100000 x 100000 pixels (40 GB once decoded).
"""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mtfap.errors import DataError

# The suffixes of the files taken for photos when a folder is given (the decoder decides
# whether a file really is one).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
DEFAULT_MAX_PIXELS = 64_000_000  # a 64 MP photo; phone cameras write 12-50 MP
MAX_PIXELS_ENV = "MTFAP_MAX_PIXELS"

_BROKEN_HINT = "the file is corrupt, truncated or not an image; replace it or leave it out"
# Modes that carry an alpha channel, composited onto white.
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def max_pixels_limit(max_pixels: int | None = None) -> int:
    """The largest image (width * height) to decode: ``max_pixels`` if given, else the
    environment variable ``MTFAP_MAX_PIXELS``, else :data:`DEFAULT_MAX_PIXELS`.

    >>> max_pixels_limit(1000)
    1000
    """
    if max_pixels is None:
        text = os.environ.get(MAX_PIXELS_ENV, "").strip().replace("_", "")
        if not text:
            return DEFAULT_MAX_PIXELS
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"environment variable {MAX_PIXELS_ENV}="
                             f"{os.environ[MAX_PIXELS_ENV]!r} must be a positive whole number "
                             "of pixels, e.g. 100000000")
        return int(text)
    if int(max_pixels) < 1:
        raise ValueError(f"max_pixels must be a positive number of pixels, got {max_pixels!r}")
    return int(max_pixels)


def decode_image(data: bytes, name: str, *, max_pixels: int | None = None) -> Image.Image:
    """Decode an encoded image (JPEG, PNG, ...) into an upright RGB PIL image.

    Parameters
    ----------
    data : the file's bytes.
    name : what to call the image in errors (a path or an archive member).
    max_pixels : the largest width * height accepted; default ``MTFAP_MAX_PIXELS`` or
        64 million.

    Raises
    ------
    DataError
        ``cannot decode image 'name': reason``: empty, not an image, corrupt or truncated, or
        larger than ``max_pixels`` (checked from the header, before decoding).

    Examples
    --------
    >>> buffer = io.BytesIO()
    >>> Image.new("LA", (4, 3), (0, 0)).save(buffer, "PNG")   # fully transparent
    >>> decode_image(buffer.getvalue(), "blank.png").getpixel((0, 0))
    (255, 255, 255)
    """
    limit = max_pixels_limit(max_pixels)
    if not data:
        raise _broken(name, "the file is empty")
    with warnings.catch_warnings():
        # Pillow's own guard against decompression bombs: a warning above
        # Image.MAX_IMAGE_PIXELS, an error above twice that. Both become our DataError.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))  # reads the header only
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _bomb(name, exc, limit) from None
        except UnidentifiedImageError:
            raise _broken(name, "not an image, or in a format Pillow cannot read") from None
        except (OSError, SyntaxError, ValueError, struct.error, EOFError) as exc:
            raise _broken(name, _reason(exc)) from None
        width, height = image.size
        if width * height > limit:
            raise _too_large(name, f"{width} x {height} = {width * height:,} pixels", limit)
        try:
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _bomb(name, exc, limit) from None
        except (OSError, SyntaxError, ValueError, struct.error, EOFError) as exc:
            raise _broken(name, _reason(exc)) from None
    return to_rgb(_upright(image, name))


def read_image_file(path: str | Path, max_pixels: int | None = None) -> Image.Image:
    """Read and decode an image file (see :func:`decode_image`).

    Raises
    ------
    DataError
        The file is missing, is a folder, cannot be read, or cannot be decoded.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError("image file not found", path, hint="check the path") from None
    except IsADirectoryError:
        raise DataError("is a folder, not an image file", path,
                        hint="give the path of one image file") from None
    except PermissionError:
        raise DataError("cannot read the image file: permission denied", path,
                        hint="check the file's permissions") from None
    except OSError as exc:
        raise DataError(f"cannot read the image file: {exc.strerror or exc}", path) from None
    return decode_image(data, str(path), max_pixels=max_pixels)


def to_rgb(image: Image.Image) -> Image.Image:
    """An image of any PIL mode as 8-bit RGB: alpha composited onto white, palette and CMYK
    converted, 16/32-bit and float samples scaled by their bit depth.

    >>> to_rgb(Image.new("I;16", (2, 2), 65535)).getpixel((0, 0))
    (255, 255, 255)
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_to_8_bit(image)).convert("RGB")
    # "1", "L", "P", "CMYK", "YCbCr", "LAB", "HSV": Pillow's own conversions. For JPEG CMYK
    # Pillow already undoes Adobe's inverted storage.
    return image.convert("RGB")


def as_rgb_array(image) -> np.ndarray:
    """A PIL image (any mode) or an array, as a contiguous uint8 (H, W, 3) RGB array.

    Arrays must be uint8, (H, W) grayscale or (H, W, 3) RGB; other arrays raise ValueError
    rather than being silently reinterpreted.
    """
    if isinstance(image, Image.Image):
        return np.array(to_rgb(image))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image array (values 0..255), got dtype "
                         f"{array.dtype}; convert it, e.g. (x * 255).round().astype(np.uint8) "
                         "for floats in [0, 1]")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an RGB image array of shape (H, W, 3), got {array.shape}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"the image is empty: shape {array.shape}")
    return np.ascontiguousarray(array)


def _upright(image: Image.Image, name: str) -> Image.Image:
    """Apply the EXIF orientation tag. A broken EXIF block leaves the image as stored, with a
    warning: the pixels are fine, and rejecting the photo for its metadata would be worse."""
    try:
        return ImageOps.exif_transpose(image)
    except (SyntaxError, ValueError, OSError, struct.error, KeyError, TypeError) as exc:
        warnings.warn(f"image {name!r}: unreadable EXIF orientation ({exc}); used as stored",
                      stacklevel=3)
        return image


def _to_8_bit(image: Image.Image) -> np.ndarray:
    """uint8 (H, W) of a single-channel integer or float image, scaled by its bit depth.

    ``I;16*`` modes are 16-bit. ``I`` (signed 32-bit integers) is how older Pillow versions
    and some TIFF writers store 16-bit data, so values up to 65535 are taken as 16-bit, larger
    ones as 31-bit. ``F`` images with values in [0, 1] are taken as unit floats, others like ``I``.
    """
    values = np.asarray(image, dtype=np.float64)
    peak = float(values.max(initial=0.0))
    if image.mode.startswith("I;16"):
        full_scale = 65535.0
    elif image.mode == "F" and peak <= 1.0:
        full_scale = 1.0
    else:
        full_scale = 65535.0 if peak <= 65535 else 2147483647.0
    return np.clip(np.rint(values * (255.0 / full_scale)), 0, 255).astype(np.uint8)


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if "truncated" in text:
        return f"the file is truncated (Pillow: {text})"
    return f"the file is corrupt (Pillow: {text})"


def _broken(name: str, reason: str) -> DataError:
    return DataError(f"cannot decode image {name!r}: {reason}", hint=_BROKEN_HINT)


def _too_large(name: str, size: str, limit: int) -> DataError:
    return DataError(
        f"cannot decode image {name!r}: {size} is more than the limit of {limit:,} pixels",
        hint=f"if the image is genuine, raise the limit with --max-pixels N or the environment "
             f"variable {MAX_PIXELS_ENV}=N")


def _bomb(name: str, exc: BaseException, limit: int) -> DataError:
    """Pillow refused the image before we saw its size: report its size from Pillow's message.

    With the default limit this happens only above our own limit. A user who raised ours
    above Pillow's guard (``PIL.Image.MAX_IMAGE_PIXELS``) hits Pillow's instead; it is a
    process-wide setting that the program using mtfap owns, so it is named, not changed here.
    """
    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(found.group(1)):,} pixels" if found else "its size"
    guard = Image.MAX_IMAGE_PIXELS
    if guard is not None and limit > guard:
        return DataError(
            f"cannot decode image {name!r}: {size} is more than Pillow's own limit of "
            f"{guard:,} pixels", hint="raise PIL.Image.MAX_IMAGE_PIXELS in the program that "
                                      f"decodes it, as well as {MAX_PIXELS_ENV}")
    return _too_large(name, size, limit)
