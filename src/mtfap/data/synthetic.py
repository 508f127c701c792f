"""An embedded, generated face-like dataset with all 40 CelebA attributes: a demo and test fixture.

Faces are drawn procedurally with PIL. Their labels come from nine independent latent factors
(``SYNTHETIC_GROUPS``): each attribute is a Bernoulli draw (or a categorical one, for hair colour
and hair texture) whose log-odds are ``w_a z_g + b_a`` for the latent ``z_g`` of its group, and
each attribute is then drawn so that it is visible in the image. Attributes of one group are
therefore correlated, attributes of different groups (nearly) independent: the ground truth that
a learned task graph can be compared with.

This is not a stand-in for real faces: the images are cartoons and the label statistics are
invented. Use it to run and test the code paths quickly and without any data files.

>>> from mtfap.data.synthetic import load_synthetic
>>> faces = load_synthetic(n=200, size=64, seed=0)      # doctest: +SKIP
>>> faces.labels.shape, faces.get_split("train").labels.shape[1]  # doctest: +SKIP
((200, 40), 40)
"""

from __future__ import annotations

import io
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mtfap.attributes import CELEBA_ATTRIBUTES
from mtfap.data.dataset import FaceDataset
from mtfap.data.images import ImageSource

GENERATOR_VERSION = 1  # bump whenever drawing or sampling changes: cached zips are regenerated
IMAGES_PER_IDENTITY = 5
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)  # train / val / test, by identity


@dataclass(frozen=True)
class _Factor:
    """A latent factor: per identity (``identity_share`` = 1) or mixed with per-image noise,
    z = s u_identity + sqrt(1 - s^2) e_image."""

    identity_share: float
    # attribute -> (w, b): P(attribute) = sigmoid(w z + b). Categorical attributes are absent.
    loadings: dict


_FACTORS: dict[str, _Factor] = {
    "masculinity": _Factor(1.0, {"Male": (4.0, 0.0), "5_o_Clock_Shadow": (2.5, -2.0),
                                 "Goatee": (2.5, -2.5), "Mustache": (2.5, -2.5),
                                 "Sideburns": (2.5, -2.3), "Bushy_Eyebrows": (2.0, -1.5)}),
    "age": _Factor(1.0, {"Young": (-3.0, 1.2), "Gray_Hair": (2.5, -3.0), "Bald": (2.5, -3.5),
                         "Receding_Hairline": (2.5, -2.5), "Bags_Under_Eyes": (2.0, -1.0)}),
    "face_shape": _Factor(1.0, {"Chubby": (2.5, -2.0), "Double_Chin": (2.5, -2.5),
                                "Big_Nose": (2.0, -1.0), "Big_Lips": (2.0, -1.0),
                                "Narrow_Eyes": (2.0, -2.0), "Oval_Face": (-2.0, -1.0),
                                "Pointy_Nose": (-2.0, -1.0)}),
    "expression": _Factor(0.3, {"Smiling": (3.0, 0.0), "Mouth_Slightly_Open": (2.5, 0.0),
                                "High_Cheekbones": (2.5, -0.3)}),
    "hair_colour": _Factor(1.0, {}),
    "hair_style": _Factor(1.0, {"Bangs": (1.5, -1.5)}),
    "glamour": _Factor(0.8, {"Heavy_Makeup": (3.0, -1.0), "Wearing_Lipstick": (3.0, -0.5),
                             "Arched_Eyebrows": (2.0, -1.0), "Rosy_Cheeks": (2.0, -2.0),
                             "Wearing_Earrings": (2.0, -1.5), "Wearing_Necklace": (2.0, -2.0),
                             "Attractive": (2.0, 0.0)}),
    "accessories": _Factor(0.5, {"Wearing_Hat": (2.5, -2.0), "Eyeglasses": (2.5, -2.0),
                                 "Wearing_Necktie": (2.5, -2.0)}),
    "photo": _Factor(0.3, {"Blurry": (2.5, -2.0), "Pale_Skin": (2.5, -2.0)}),
}
# Categorical groups: one category per image, with log-odds (w z + b) per category; the last
# category has no label (red hair; curly hair).
_HAIR_COLOURS = {"Black_Hair": (1.8, 0.0), "Brown_Hair": (0.0, 0.3), "Blond_Hair": (-1.8, -0.3),
                 None: (0.0, -1.0)}
_HAIR_TEXTURES = {"Straight_Hair": (2.0, 0.0), "Wavy_Hair": (-2.0, 0.0), None: (0.0, -0.5)}

SYNTHETIC_GROUPS: dict[str, list[str]] = {
    "masculinity": ["Male", "5_o_Clock_Shadow", "Goatee", "Mustache", "No_Beard", "Sideburns",
                    "Bushy_Eyebrows"],
    "age": ["Young", "Gray_Hair", "Bald", "Receding_Hairline", "Bags_Under_Eyes"],
    "face_shape": ["Chubby", "Double_Chin", "Big_Nose", "Big_Lips", "Narrow_Eyes", "Oval_Face",
                   "Pointy_Nose"],
    "expression": ["Smiling", "Mouth_Slightly_Open", "High_Cheekbones"],
    "hair_colour": ["Black_Hair", "Brown_Hair", "Blond_Hair"],
    "hair_style": ["Straight_Hair", "Wavy_Hair", "Bangs"],
    "glamour": ["Heavy_Makeup", "Wearing_Lipstick", "Arched_Eyebrows", "Rosy_Cheeks",
                "Wearing_Earrings", "Wearing_Necklace", "Attractive"],
    "accessories": ["Wearing_Hat", "Eyeglasses", "Wearing_Necktie"],
    "photo": ["Blurry", "Pale_Skin"],
}
"""Ground-truth task groups: the latent factor that drives each attribute. Within a group some
attributes fall as the factor rises (No_Beard, Young, Oval_Face, Pointy_Nose; one hair colour or
texture excludes the others), so compare groups by the size of correlations, not their sign."""

_HAIR_RGB = {"Black_Hair": (28, 22, 22), "Brown_Hair": (110, 68, 36),
             "Blond_Hair": (226, 190, 112), None: (165, 62, 30)}
_PALE_SKIN = (252, 234, 226)
_GREY_STREAK = (205, 205, 205)
_BLACK, _WHITE = (0, 0, 0), (255, 255, 255)
_STRAIGHT, _WAVY, _CURLY = 0, 1, 2  # hair textures
_EYE_OFFSET = 0.09  # the eyes (and the lenses of glasses) sit this far either side of the centre


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _categorical(rng, z, table) -> np.ndarray:
    """Index into ``table`` per row, drawn with softmax(w z + b) probabilities."""
    logits = np.stack([w * z + b for w, b in table.values()], axis=1)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    cumulative = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)
    return (rng.random((len(z), 1)) > cumulative).sum(axis=1).clip(max=len(table) - 1)


def sample_faces(n: int, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray],
                                                 np.ndarray]:
    """Draw the labels and drawing parameters of ``n`` faces (no images).

    Returns ``(labels, look, identities)``: labels maps each of the 40 attribute names to an
    (n,) bool array, look holds the nuisance parameters the renderer needs (colours, jitter).
    """
    rng = np.random.default_rng([seed, GENERATOR_VERSION])
    identities = np.arange(n) // IMAGES_PER_IDENTITY
    n_ids = int(identities[-1]) + 1 if n else 0
    latent = {}
    for name, factor in _FACTORS.items():
        per_identity = rng.standard_normal(n_ids)[identities]
        s = factor.identity_share
        latent[name] = s * per_identity + math.sqrt(1 - s * s) * rng.standard_normal(n)

    labels: dict[str, np.ndarray] = {}
    for name, factor in _FACTORS.items():
        # Identity-level factors draw their labels once per person, so all of a person's images
        # agree; image-level factors draw per image.
        for attribute, (w, b) in factor.loadings.items():
            u = rng.random(n_ids)[identities] if factor.identity_share == 1.0 else rng.random(n)
            labels[attribute] = u < _sigmoid(w * latent[name] + b)
    # Hair colour and texture are per person: drawn from each identity's first image.
    first_image = np.arange(0, n, IMAGES_PER_IDENTITY)
    hair = _categorical(rng, latent["hair_colour"][first_image], _HAIR_COLOURS)[identities]
    texture = _categorical(rng, latent["hair_style"][first_image], _HAIR_TEXTURES)[identities]
    for i, attribute in enumerate(a for a in _HAIR_COLOURS if a):
        labels[attribute] = hair == i
    for i, attribute in enumerate(a for a in _HAIR_TEXTURES if a):
        labels[attribute] = texture == i
    labels["No_Beard"] = ~(labels["5_o_Clock_Shadow"] | labels["Goatee"] | labels["Mustache"])
    # What cannot be drawn together: a bald head has no fringe; a fringe hides the hairline.
    labels["Bangs"] &= ~labels["Bald"]
    labels["Receding_Hairline"] &= ~(labels["Bald"] | labels["Bangs"])

    tone = rng.random(n_ids)[identities]
    skin = np.array([238, 196, 160]) * (1 - tone[:, None]) + np.array([118, 76, 50]) * tone[:, None]
    look = {
        "skin": skin.round().astype(int), "hair_shade": rng.integers(-12, 13, (n_ids, 3))[identities],
        "background": rng.integers(40, 230, (n, 3)), "clothes": rng.integers(20, 235, (n, 3)),
        "hat": rng.integers(20, 235, (n, 3)), "tie": rng.integers(20, 235, (n, 3)),
        "iris": np.array([[70, 45, 25], [60, 100, 150], [70, 110, 60]])[rng.integers(0, 3, n_ids)][identities],
        "shift": rng.uniform(-0.025, 0.025, (n, 2)), "waves": rng.uniform(0, 2 * np.pi, n),
    }
    return labels, look, identities


def _mix(colour, other, fraction: float) -> tuple[int, int, int]:
    """``colour`` moved ``fraction`` of the way towards ``other``."""
    return tuple(int(round((1 - fraction) * c + fraction * o)) for c, o in zip(colour, other))


class _Canvas:
    """A PIL drawing addressed in image units: (0, 0) is the top-left corner, (1, 1) the
    bottom-right; line widths are in image units too."""

    def __init__(self, image: Image.Image):
        self.draw = ImageDraw.Draw(image)
        self.scale = image.width

    def at(self, x, y) -> tuple:
        return (x * self.scale, y * self.scale)

    def width(self, line_width: float) -> int:
        return max(1, int(round(line_width * self.scale)))

    def ellipse(self, x, y, radius_x, radius_y, **style):
        corners = [self.at(x - radius_x, y - radius_y), self.at(x + radius_x, y + radius_y)]
        self.draw.ellipse(corners, **style)

    def line(self, points, colour, line_width: float):
        self.draw.line([self.at(x, y) for x, y in points], fill=colour,
                       width=self.width(line_width))

    def polygon(self, points, colour):
        self.draw.polygon([self.at(x, y) for x, y in points], fill=colour)

    def rectangle(self, left, top, right, bottom, colour):
        self.draw.rectangle([self.at(left, top), self.at(right, bottom)], fill=colour)


@dataclass(frozen=True)
class _FaceLayout:
    """Where the parts of a face are, in image units."""

    cx: float  # centre of the face
    cy: float
    half_width: float
    half_height: float
    eye_y: float
    nose_y: float
    mouth_y: float
    hairline_y: float


def _face_layout(labels: dict, shift) -> _FaceLayout:
    """A chubby (and slightly, a male) face is wider, an oval one longer; ``shift`` moves it."""
    cx, cy = 0.5 + shift[0], 0.47 + shift[1]
    return _FaceLayout(cx, cy,
                       half_width=0.20 + 0.045 * labels["Chubby"] + 0.012 * labels["Male"],
                       half_height=0.26 + 0.045 * labels["Oval_Face"],
                       eye_y=cy - 0.04, nose_y=cy + 0.075, mouth_y=cy + 0.155, hairline_y=cy - 0.16)


@dataclass(frozen=True)
class _Hair:
    """How the hair of one face is drawn."""

    colour: tuple
    strand_colour: tuple  # contrasts with the hair: lighter on dark hair, darker on light hair
    texture: int  # _STRAIGHT, _WAVY or _CURLY
    wave_phase: float
    grey: bool  # some strands are grey streaks
    long: bool  # falls behind the head to the shoulders


def _hair_of(labels: dict, look: dict) -> _Hair:
    name = next((name for name in _HAIR_RGB if name and labels[name]), None)
    colour = tuple(int(c) for c in np.clip(np.add(_HAIR_RGB[name], look["hair_shade"]), 0, 255))
    strand_colour = _mix(colour, _WHITE, 0.3) if sum(colour) < 240 else _mix(colour, _BLACK, 0.35)
    texture = _STRAIGHT if labels["Straight_Hair"] else _WAVY if labels["Wavy_Hair"] else _CURLY
    return _Hair(colour, strand_colour, texture, float(look["waves"]), bool(labels["Gray_Hair"]),
                 long=not labels["Male"])


def _draw_strand(canvas: _Canvas, hair: _Hair, x, top, bottom, colour, line_width=0.008):
    """One hair strand from (x, top) down to ``bottom``, in the hair's texture."""
    ys = np.linspace(top, bottom, 8)
    if hair.texture == _STRAIGHT:
        canvas.line([(x, top), (x, bottom)], colour, line_width)
    elif hair.texture == _WAVY:
        canvas.line(zip(x + 0.018 * np.sin(hair.wave_phase + ys * 60), ys), colour, line_width)
    else:  # curly: a column of rings
        for y in ys[::2]:
            canvas.ellipse(x, y, 0.014, 0.014, outline=colour, width=canvas.width(line_width))


def _draw_long_hair(canvas: _Canvas, face: _FaceLayout, hair: _Hair):
    """Hair behind the head, falling to the shoulders, with strands on both sides."""
    cx, cy, half_width = face.cx, face.cy, face.half_width
    canvas.rectangle(cx - half_width - 0.075, cy - 0.1, cx + half_width + 0.075, cy + 0.36,
                     hair.colour)
    canvas.ellipse(cx, cy - 0.06, half_width + 0.075, face.half_height + 0.07, fill=hair.colour)
    for side in (-1, 1):
        for k in range(3):
            x = cx + side * (half_width + 0.018 + 0.025 * k)
            colour = _GREY_STREAK if hair.grey and k != 1 else hair.strand_colour
            _draw_strand(canvas, hair, x, cy - 0.1, cy + 0.34, colour)


def _draw_shoulders_and_neck(canvas: _Canvas, face: _FaceLayout, male, clothes, neck_skin):
    """Clothed shoulders (broader for a man) and the neck."""
    canvas.ellipse(face.cx, 1.12, 0.44 + 0.06 * male, 0.27, fill=tuple(clothes))
    canvas.rectangle(face.cx - 0.075, face.cy + 0.15, face.cx + 0.075, 0.9, neck_skin)


def _draw_necktie(canvas: _Canvas, cx, tie_colour):
    """A white collar and a tie (knot and blade) at the bottom of the image."""
    collar = (245, 245, 245)
    canvas.polygon([(cx - 0.075, 0.86), (cx, 0.92), (cx - 0.02, 0.84)], collar)
    canvas.polygon([(cx + 0.075, 0.86), (cx, 0.92), (cx + 0.02, 0.84)], collar)
    tie = tuple(tie_colour)
    knot = [(cx - 0.022, 0.88), (cx + 0.022, 0.88), (cx + 0.014, 0.92), (cx - 0.014, 0.92)]
    canvas.polygon(knot, tie)
    blade = [(cx - 0.014, 0.92), (cx + 0.014, 0.92), (cx + 0.04, 1.0), (cx - 0.04, 1.0)]
    canvas.polygon(blade, tie)


def _draw_necklace(canvas: _Canvas, cx):
    """Gold beads on an arc below the neck."""
    for angle in np.linspace(0.15, 0.85, 9) * np.pi:
        canvas.ellipse(cx + 0.08 * math.cos(angle), 0.80 + 0.05 * math.sin(angle), 0.01, 0.01,
                       fill=(235, 200, 60))


def _draw_ears(canvas: _Canvas, face: _FaceLayout, ear_skin):
    for side in (-1, 1):
        canvas.ellipse(face.cx + side * face.half_width, face.cy, 0.035, 0.055, fill=ear_skin)


def _draw_face_shape(canvas: _Canvas, face: _FaceLayout, skin, square_jaw) -> tuple:
    """The face: an ellipse whose lower half is a superellipse (squarer for a square jaw).

    Returns the outline, ``(xs, ys)``.
    """
    jaw_power = 2.8 if square_jaw else 2.0  # superellipse exponent
    angle = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    cos, sin = np.cos(angle), np.sin(angle)
    power = np.where(sin > 0, jaw_power, 2.0)
    xs = face.cx + face.half_width * np.sign(cos) * np.abs(cos) ** (2 / power)
    ys = face.cy + face.half_height * np.sign(sin) * np.abs(sin) ** (2 / power)
    canvas.polygon(zip(xs, ys), skin)
    return xs, ys


def _draw_double_chin(canvas: _Canvas, face: _FaceLayout, skin):
    """A fold above the chin line and a second chin below it."""
    cx, chin_y = face.cx, face.cy + face.half_height
    fold = _mix(skin, _BLACK, 0.45)
    canvas.ellipse(cx, chin_y + 0.01, 0.1, 0.045, fill=_mix(skin, _BLACK, 0.08), outline=fold,
                   width=canvas.width(0.014))
    canvas.draw.arc([canvas.at(cx - 0.09, chin_y - 0.06), canvas.at(cx + 0.09, chin_y - 0.01)],
                    25, 155, fill=fold, width=canvas.width(0.014))


def _draw_stubble(canvas: _Canvas, face: _FaceLayout, outline, skin, stubble_colour):
    """A five o'clock shadow: a tint on the jaw below the nose, stippled with stubble."""
    cx, cy, half_width, half_height = face.cx, face.cy, face.half_width, face.half_height
    jaw = [(x, y) for x, y in zip(*outline) if y > face.nose_y - 0.01]
    canvas.polygon(jaw, _mix(skin, (40, 35, 35), 0.35))
    grid = np.mgrid[face.nose_y:cy + half_height:0.022,
                    cx - half_width:cx + half_width:0.022].reshape(2, -1).T
    inside = ((grid[:, 1] - cx) / half_width) ** 2 + ((grid[:, 0] - cy) / half_height) ** 2 < 0.85
    scale = canvas.scale
    dots = [(x * scale + dx, y * scale + dy)  # 2 x 2 pixels each
            for y, x in grid[inside] for dx in (0, 1) for dy in (0, 1)]
    canvas.draw.point(dots, fill=stubble_colour)


def _draw_cheeks(canvas: _Canvas, face: _FaceLayout, skin, high_cheekbones, rosy):
    cx, cy = face.cx, face.cy
    for side in (-1, 1):
        if high_cheekbones:  # a highlight on the bone and a shadow beneath it
            canvas.ellipse(cx + side * 0.115, cy + 0.025, 0.05, 0.022,
                           fill=_mix(skin, _WHITE, 0.55))
            canvas.line([(cx + side * 0.17, cy + 0.045), (cx + side * 0.085, cy + 0.105)],
                        _mix(skin, _BLACK, 0.45), 0.016)
        if rosy:
            canvas.ellipse(cx + side * 0.11, cy + 0.08, 0.05, 0.035,
                           fill=_mix(skin, (235, 70, 95), 0.55))


def _draw_wrinkles(canvas: _Canvas, face: _FaceLayout, skin):
    """Forehead lines, nasolabial folds and crow's feet: an older face."""
    cx, cy, eye_y = face.cx, face.cy, face.eye_y
    wrinkle = _mix(skin, _BLACK, 0.6)
    for y in (cy - 0.14, cy - 0.115, cy - 0.09):
        canvas.line([(cx - 0.085, y), (cx + 0.085, y)], wrinkle, 0.011)
    for side in (-1, 1):
        canvas.line([(cx + side * 0.045, face.nose_y - 0.005),
                     (cx + side * 0.09, face.mouth_y + 0.02)], wrinkle, 0.013)
        for dy in (-0.015, 0.012):
            canvas.line([(cx + side * 0.15, eye_y + dy * 0.3), (cx + side * 0.18, eye_y + dy)],
                        wrinkle, 0.01)


def _draw_eye(canvas: _Canvas, x, y, half_width, half_height, labels: dict, skin, iris_colour):
    """One eye centred on (x, y), with eye shadow and bags under it when labelled."""
    makeup = labels["Heavy_Makeup"]
    if makeup:  # eye shadow
        canvas.ellipse(x, y - 0.017, half_width + 0.016, half_height + 0.018, fill=(125, 70, 150))
    if labels["Bags_Under_Eyes"]:
        canvas.ellipse(x, y + half_height + 0.012, half_width + 0.004, 0.02,
                       fill=_mix(skin, (60, 25, 45), 0.6))
    canvas.ellipse(x, y, half_width, half_height, fill=(250, 250, 250),
                   outline=(10, 10, 10) if makeup else None,
                   width=canvas.width(0.012) if makeup else 1)
    iris = min(half_height, 0.02)
    canvas.ellipse(x, y, iris, iris, fill=tuple(iris_colour))
    canvas.ellipse(x, y, iris * 0.5, iris * 0.5, fill=_BLACK)  # pupil
    if labels["Attractive"]:  # a catch-light
        canvas.ellipse(x + 0.006, y - 0.006, 0.006, 0.006, fill=_WHITE)


def _draw_brow(canvas: _Canvas, x, y, side, arched, bushy, colour):
    """The brow over the eye at ``x`` on ``side`` (-1: the image's left, 1: its right)."""
    arch = 0.028 if arched else 0.004
    canvas.line([(x - side * 0.055, y + 0.01), (x + side * 0.005, y - arch),
                 (x + side * 0.055, y + 0.012)], colour, 0.026 if bushy else 0.009)


def _draw_eyes_and_brows(canvas: _Canvas, face: _FaceLayout, labels: dict, skin, iris_colour,
                         brow_colour):
    eye_half_width = 0.042 + 0.014 * labels["Attractive"]
    eye_half_height = (0.012 if labels["Narrow_Eyes"] else 0.024) + 0.004 * labels["Attractive"]
    for side in (-1, 1):
        x = face.cx + side * _EYE_OFFSET
        _draw_eye(canvas, x, face.eye_y, eye_half_width, eye_half_height, labels, skin, iris_colour)
        _draw_brow(canvas, x, face.eye_y - eye_half_height - 0.035, side,
                   arched=labels["Arched_Eyebrows"], bushy=labels["Bushy_Eyebrows"],
                   colour=brow_colour)


def _draw_nose(canvas: _Canvas, face: _FaceLayout, skin, big, pointy):
    """Bridge lines and nostrils; a big nose is longer and wider, a pointy one ends in a sharp
    shaded tip instead of a round bulb."""
    cx = face.cx
    half_width = 0.05 if big else 0.028
    top = face.eye_y + (0.0 if big else 0.04)
    bottom = face.nose_y + (0.015 if big else 0.0)
    shade = _mix(skin, _BLACK, 0.45)
    if pointy:  # a dark wedge ending in a point
        canvas.polygon([(cx - half_width * 0.5, bottom - 0.035),
                        (cx + half_width * 0.5, bottom - 0.035), (cx, bottom + 0.04)], shade)
    else:  # a round, lit bulb
        canvas.ellipse(cx, bottom - 0.006, half_width, half_width * 0.8,
                       fill=_mix(skin, _WHITE, 0.3), outline=shade, width=canvas.width(0.01))
    for side in (-1, 1):
        canvas.line([(cx + side * 0.012, top), (cx + side * half_width * 0.8, bottom - 0.012)],
                    shade, 0.01)
        canvas.ellipse(cx + side * half_width * 0.6, bottom + 0.006, 0.011, 0.007, fill=shade)


@dataclass(frozen=True)
class _Mouth:
    """What the facial hair around a drawn mouth needs to know."""

    half_width: float
    lip: float  # thickness of each lip at the middle
    gap: float  # opening between the lips
    parting: np.ndarray  # height of the line between the lips, at 11 points from left to right


def _draw_mouth(canvas: _Canvas, face: _FaceLayout, labels: dict, skin) -> _Mouth:
    """A curve whose middle dips when smiling, with lips above and below it; teeth show in an
    open mouth."""
    half_width = 0.07 + 0.01 * labels["Big_Lips"]
    lip = 0.03 if labels["Big_Lips"] else 0.016
    gap = 0.028 if labels["Mouth_Slightly_Open"] else 0.0
    dip = 0.035 if labels["Smiling"] else 0.0
    ts = np.linspace(-1, 1, 11)
    parting = face.mouth_y + dip * (1 - ts ** 2) - dip / 2
    xs = face.cx + half_width * ts
    bulge = lip * np.sqrt(1 - ts ** 2)
    lip_colour = (195, 25, 50) if labels["Wearing_Lipstick"] else _mix(skin, (110, 30, 45), 0.55)
    upper_edge, lower_edge = parting - gap / 2, parting + gap / 2
    canvas.polygon([*zip(xs, upper_edge - bulge), *zip(xs[::-1], upper_edge[::-1])], lip_colour)
    canvas.polygon([*zip(xs, lower_edge), *zip(xs[::-1], (lower_edge + bulge)[::-1])], lip_colour)
    if gap:
        canvas.polygon([*zip(xs, upper_edge), *zip(xs[::-1], lower_edge[::-1])], (55, 15, 20))
        teeth = [*zip(xs[2:-2], upper_edge[2:-2]),
                 *zip(xs[-3:1:-1], upper_edge[-3:1:-1] + gap * 0.45)]
        canvas.polygon(teeth, (245, 245, 240))
    else:
        canvas.line(zip(xs, parting), _mix(lip_colour, _BLACK, 0.5), 0.014)
    return _Mouth(half_width, lip, gap, parting)


def _draw_moustache(canvas: _Canvas, cx, mouth: _Mouth, colour):
    top = mouth.parting.min() - mouth.gap / 2 - mouth.lip - 0.004  # just above the upper lip
    half_width = mouth.half_width
    canvas.polygon([(cx - half_width - 0.01, top + 0.012), (cx - 0.02, top - 0.03),
                    (cx + 0.02, top - 0.03), (cx + half_width + 0.01, top + 0.012),
                    (cx, top - 0.005)], colour)


def _draw_goatee(canvas: _Canvas, face: _FaceLayout, mouth: _Mouth, colour):
    """From below the lower lip down to the chin."""
    cx = face.cx
    top = mouth.parting.max() + mouth.gap / 2 + mouth.lip + 0.012
    chin_y = face.cy + face.half_height - 0.005
    canvas.polygon([(cx - 0.045, top), (cx + 0.045, top), (cx + 0.035, chin_y),
                    (cx - 0.035, chin_y)], colour)


def _draw_bald_scalp(canvas: _Canvas, face: _FaceLayout, skin, hair: _Hair):
    """A shine on the bare scalp and what hair is left above the ears."""
    cx, cy = face.cx, face.cy
    canvas.ellipse(cx - 0.05, cy - face.half_height + 0.045, 0.05, 0.022,
                   fill=_mix(skin, _WHITE, 0.5))
    for side in (-1, 1):
        canvas.rectangle(cx + side * face.half_width - 0.015, cy - 0.07,
                         cx + side * face.half_width + 0.015, cy - 0.01,
                         _GREY_STREAK if hair.grey else hair.colour)


def _draw_hair_cap(canvas: _Canvas, face: _FaceLayout, hair: _Hair, receding):
    """The hair on the head: a cap above the hairline (higher at the temples when receding),
    with strands."""
    cx, cy, half_width = face.cx, face.cy, face.half_width
    recede = 0.07 if receding else 0.0
    hairline_y = face.hairline_y
    cap = [(cx + (half_width + 0.03) * math.cos(angle),
            cy - 0.03 + (face.half_height + 0.05) * math.sin(angle))
           for angle in np.linspace(np.pi, 2 * np.pi, 17)]
    temple_y = cy - 0.02 if hair.long else cy - 0.05
    cap += [(cx + half_width + 0.005, temple_y), (cx + half_width * 0.55, hairline_y - recede),
            (cx, hairline_y + 0.01), (cx - half_width * 0.55, hairline_y - recede),
            (cx - half_width - 0.005, temple_y)]
    canvas.polygon(cap, hair.colour)
    for k, x in enumerate(np.linspace(cx - half_width * 0.75, cx + half_width * 0.75, 6)):
        colour = _GREY_STREAK if hair.grey and k % 2 == 0 else hair.strand_colour
        _draw_strand(canvas, hair, x, cy - face.half_height - 0.03, hairline_y - recede - 0.01,
                     colour)


def _draw_bangs(canvas: _Canvas, face: _FaceLayout, hair: _Hair):
    """A fringe over the forehead, with a zigzag lower edge."""
    cx, half_width, hairline_y = face.cx, face.half_width, face.hairline_y
    fringe_y = face.eye_y - 0.1
    fringe = [(cx - half_width * 0.95, hairline_y - 0.03),
              (cx + half_width * 0.95, hairline_y - 0.03)]
    for k, x in enumerate(np.linspace(cx + half_width * 0.9, cx - half_width * 0.9, 9)):
        fringe.append((x, fringe_y + (0.012 if k % 2 else -0.01)))
    canvas.polygon(fringe, hair.colour)
    for x in np.linspace(cx - half_width * 0.7, cx + half_width * 0.7, 5):
        _draw_strand(canvas, hair, x, hairline_y - 0.02, fringe_y - 0.012, hair.strand_colour,
                     line_width=0.006)


def _draw_sideburns(canvas: _Canvas, face: _FaceLayout, colour):
    cx, cy = face.cx, face.cy
    for side in (-1, 1):
        outer_x = cx + side * (face.half_width - 0.004)
        canvas.polygon([(outer_x, cy - 0.07), (outer_x - side * 0.035, cy - 0.07),
                        (outer_x - side * 0.03, cy + 0.07), (outer_x, cy + 0.07)], colour)


def _draw_glasses(canvas: _Canvas, face: _FaceLayout):
    """Rounded frames over the eyes, arms to the ears and a bridge."""
    frame = (20, 20, 25)
    cx, eye_y = face.cx, face.eye_y
    for side in (-1, 1):
        x = cx + side * _EYE_OFFSET
        canvas.draw.rounded_rectangle([canvas.at(x - 0.066, eye_y - 0.045),
                                       canvas.at(x + 0.066, eye_y + 0.045)],
                                      radius=0.02 * canvas.scale, outline=frame,
                                      width=canvas.width(0.014))
        canvas.line([(x + side * 0.066, eye_y - 0.02),
                     (cx + side * (face.half_width + 0.01), eye_y - 0.03)], frame, 0.012)
    canvas.line([(cx - 0.024, eye_y - 0.01), (cx + 0.024, eye_y - 0.01)], frame, 0.012)


def _draw_hat(canvas: _Canvas, face: _FaceLayout, hat_colour):
    """A crown over the top of the head and a darker brim at the forehead."""
    cx, half_width = face.cx, face.half_width
    hat = tuple(hat_colour)
    brim_y = face.cy - face.half_height + 0.005
    canvas.draw.chord([canvas.at(cx - half_width - 0.025, brim_y - 0.2),
                       canvas.at(cx + half_width + 0.025, brim_y + 0.12)], 180, 360, fill=hat)
    canvas.rectangle(cx - half_width - 0.08, brim_y - 0.025, cx + half_width + 0.08, brim_y + 0.012,
                     _mix(hat, _BLACK, 0.3))


def _draw_earrings(canvas: _Canvas, face: _FaceLayout):
    for side in (-1, 1):
        canvas.ellipse(face.cx + side * (face.half_width + 0.005), face.cy + 0.075, 0.024, 0.024,
                       fill=(240, 200, 50), outline=(120, 90, 20))


def render_face(labels: dict, look: dict, size: int = 64) -> Image.Image:
    """Draw one face (RGB, ``size`` x ``size``) from its labels (name -> bool) and look.

    Every attribute is drawn from its label; ``look`` adds what is not a label (colours,
    position). Drawn at twice the size and reduced, which anti-aliases the PIL primitives.
    The steps go from back to front: each covers what the ones before it drew.
    """
    image = Image.new("RGB", (2 * size, 2 * size), tuple(look["background"]))
    canvas = _Canvas(image)
    face = _face_layout(labels, look["shift"])
    hair = _hair_of(labels, look)
    skin = _PALE_SKIN if labels["Pale_Skin"] else tuple(int(c) for c in look["skin"])
    shaded_skin = _mix(skin, _BLACK, 0.12)  # neck and ears
    facial_hair = _mix(hair.colour, _BLACK, 0.55)  # brows, beard: darker than the hair

    if hair.long and not labels["Bald"]:
        _draw_long_hair(canvas, face, hair)
    _draw_shoulders_and_neck(canvas, face, labels["Male"], look["clothes"], shaded_skin)
    if labels["Wearing_Necktie"]:
        _draw_necktie(canvas, face.cx, look["tie"])
    if labels["Wearing_Necklace"]:
        _draw_necklace(canvas, face.cx)
    _draw_ears(canvas, face, shaded_skin)
    outline = _draw_face_shape(canvas, face, skin, square_jaw=labels["Male"])
    if labels["Double_Chin"]:
        _draw_double_chin(canvas, face, skin)
    if labels["5_o_Clock_Shadow"]:
        _draw_stubble(canvas, face, outline, skin, facial_hair)
    _draw_cheeks(canvas, face, skin, labels["High_Cheekbones"], labels["Rosy_Cheeks"])
    if not labels["Young"]:
        _draw_wrinkles(canvas, face, skin)
    _draw_eyes_and_brows(canvas, face, labels, skin, look["iris"], brow_colour=facial_hair)
    _draw_nose(canvas, face, skin, big=labels["Big_Nose"], pointy=labels["Pointy_Nose"])
    mouth = _draw_mouth(canvas, face, labels, skin)
    if labels["Mustache"]:
        _draw_moustache(canvas, face.cx, mouth, facial_hair)
    if labels["Goatee"]:
        _draw_goatee(canvas, face, mouth, facial_hair)
    if labels["Bald"]:
        _draw_bald_scalp(canvas, face, skin, hair)
    else:
        _draw_hair_cap(canvas, face, hair, receding=labels["Receding_Hairline"])
        if labels["Bangs"]:
            _draw_bangs(canvas, face, hair)
    if labels["Sideburns"]:
        _draw_sideburns(canvas, face, facial_hair)
    if labels["Eyeglasses"]:
        _draw_glasses(canvas, face)
    if labels["Wearing_Hat"]:
        _draw_hat(canvas, face, look["hat"])
    if labels["Wearing_Earrings"]:
        _draw_earrings(canvas, face)
    image = image.reduce(2)
    if labels["Blurry"]:
        image = image.filter(ImageFilter.GaussianBlur(radius=1.1 * size / 64))
    return image


def _zip_path(n: int, size: int, seed: int, cache_dir) -> Path:
    from mtfap.data.cache import (
        default_cache_dir,  # the one place that knows the cache dir
    )

    return default_cache_dir(cache_dir) / "synthetic" / f"faces-n{n}-s{size}-seed{seed}-v{GENERATOR_VERSION}.zip"


def _complete(path: Path, n: int) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return len(archive.namelist()) == n
    except (OSError, zipfile.BadZipFile):
        return False


def load_synthetic(n: int = 2000, size: int = 64, seed: int = 0,
                   cache_dir: str | Path | None = None) -> FaceDataset:
    """The generated dataset: ``n`` faces of ``size`` x ``size`` pixels with all 40 attributes.

    Faces come in identities of 5 images (same person-level attributes, different expression,
    accessories, make-up and photo quality) and an identity-disjoint 80/10/10 train/val/test
    split. The JPEG images are written once to a zip in ``<cache dir>/synthetic`` (deterministic
    for ``(n, size, seed)``); labels are drawn again from the seed on each call.
    ``dataset.meta["groups"]`` is ``SYNTHETIC_GROUPS``.
    """
    if n < IMAGES_PER_IDENTITY * 3:
        raise ValueError(f"n must be at least {IMAGES_PER_IDENTITY * 3} (three identities, one per "
                         f"split), got {n}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    labels, look, identities = sample_faces(n, seed)
    keys = [f"synthetic/{i:06d}.jpg" for i in range(n)]
    path = _zip_path(n, size, seed, cache_dir)
    if not _complete(path, n):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        try:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
                for i, key in enumerate(keys):
                    face = render_face({k: bool(v[i]) for k, v in labels.items()},
                                       {k: v[i] for k, v in look.items()}, size)
                    buffer = io.BytesIO()
                    face.save(buffer, format="JPEG", quality=92)
                    # A fixed timestamp keeps the archive byte-identical across runs.
                    archive.writestr(zipfile.ZipInfo(key, date_time=(1980, 1, 1, 0, 0, 0)),
                                     buffer.getvalue())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    n_ids = int(identities[-1]) + 1
    order = np.random.default_rng([seed, GENERATOR_VERSION, 1]).permutation(n_ids)
    cut_train = min(n_ids - 2, max(1, int(round(SPLIT_FRACTIONS[0] * n_ids))))
    cut_val = min(n_ids - 1, cut_train + max(1, int(round(SPLIT_FRACTIONS[1] * n_ids))))
    split_of_identity = np.empty(n_ids, dtype=np.int8)
    split_of_identity[order[:cut_train]] = 0
    split_of_identity[order[cut_train:cut_val]] = 1
    split_of_identity[order[cut_val:]] = 2
    matrix = np.stack([labels[name] for name in CELEBA_ATTRIBUTES], axis=1)
    return FaceDataset(
        name=f"synthetic-n{n}-s{size}-seed{seed}", source=ImageSource(path), keys=keys,
        attributes=list(CELEBA_ATTRIBUTES), labels=matrix, mask=np.ones_like(matrix, dtype=bool),
        identities=identities, split=split_of_identity[identities],
        meta={"generator": "mtfap.data.synthetic", "version": GENERATOR_VERSION, "n": n,
              "size": size, "seed": seed, "groups": SYNTHETIC_GROUPS})
