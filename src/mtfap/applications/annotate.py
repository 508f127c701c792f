"""Pictures a person can read at a glance: each photo with its faces boxed and the attributes
found, and activation maps laid over the faces of the photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mtfap.applications.cam import normalise_map
from mtfap.faces.align import compose_affine, invert_affine, warp_affine
from mtfap.io import atomic_write

BOX_COLOURS = ((230, 57, 70), (42, 157, 143), (233, 196, 106), (69, 123, 157), (244, 162, 97))


def _font(size: int):
    try:  # DejaVu ships with matplotlib, which mtfap depends on: no system font needed
        import matplotlib
        path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return ImageFont.truetype(str(path), size)
    except (ImportError, OSError):
        return ImageFont.load_default()


def label_lines(face, limit: int = 6) -> list[str]:
    """The label of a face: its number, then the attributes found, most probable first."""
    found = face.present[:limit]
    more = len(face.present) - len(found)
    lines = [f"face {face.index}"] + [f"{name.replace('_', ' ')} {face.probability(name):.2f}"
                                      for name in found]
    return lines + ([f"+{more} more"] if more > 0 else [])


def enlargement(photo: np.ndarray, at_least: int = 400) -> int:
    """The whole factor by which a small photo is enlarged for drawing, so that labels and
    maps stay legible (1 for photos of ``at_least`` pixels a side or more)."""
    return max(1, int(np.ceil(at_least / max(photo.shape[:2]))))


def annotate(photo: np.ndarray, faces, limit: int = 6) -> Image.Image:
    """``photo`` with every face boxed and labelled with the attributes found."""
    image = Image.fromarray(photo).convert("RGB")
    factor = enlargement(photo)
    if factor > 1:
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(image)
    font = _font(max(11, int(max(image.size) / 55)))
    width = max(2, int(max(image.size) / 300))
    for face in faces:
        colour = BOX_COLOURS[face.index % len(BOX_COLOURS)]
        left, top, right, bottom = (v * factor for v in face.box)
        draw.rectangle((left, top, right, bottom), outline=colour, width=width)
        text = "\n".join(label_lines(face, limit))
        x, y = left, bottom + width
        box = draw.multiline_textbbox((x, y), text, font=font)
        if box[3] > image.height:  # no room below the face: write above it
            y = max(0, top - (box[3] - box[1]) - width)
        if box[2] > image.width:  # no room on the right: move the label left
            x = max(0, image.width - (box[2] - box[0]))
        box = draw.multiline_textbbox((x, y), text, font=font)
        draw.rectangle(box, fill=(0, 0, 0))
        draw.multiline_text((x, y), text, fill=colour, font=font)
    return image


def map_on_photo(photo: np.ndarray, face, activation: np.ndarray, alpha: float = 0.5,
                 factor: int = 1) -> np.ndarray:
    """Lay one activation map (at the aligned face's resolution) over the photo where the face
    is: the map is warped back through the inverse of the face's alignment. ``photo`` may be
    the photo enlarged ``factor`` times (see :func:`enlargement`)."""
    import matplotlib

    height, width = photo.shape[:2]
    heat = (matplotlib.colormaps["jet"](normalise_map(activation))[..., :3] * 255).astype(np.uint8)
    aligned_h, aligned_w = activation.shape
    inside = np.full((aligned_h, aligned_w, 3), 255, np.uint8)
    # enlarged photo pixel x' = factor (x + 0.5) - 0.5 of the photo pixel x
    shrink = np.array([[1 / factor, 0, 0.5 / factor - 0.5], [0, 1 / factor, 0.5 / factor - 0.5]])
    back = invert_affine(compose_affine(face.matrix, shrink))
    heat_on_photo = warp_affine(heat, back, (height, width)).astype(np.float64)
    weight = warp_affine(inside, back, (height, width))[..., :1].astype(np.float64) / 255 * alpha
    return (photo * (1 - weight) + heat_on_photo * weight).astype(np.uint8)


def save_image(image: Image.Image | np.ndarray, path: str | Path, quality: int = 90) -> Path:
    """Write a JPEG or PNG (by suffix) atomically."""
    image = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    fmt = "PNG" if Path(path).suffix.lower() == ".png" else "JPEG"
    return atomic_write(path, lambda tmp: image.save(tmp, format=fmt, quality=quality))
