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


def _mix(colour, other, t: float) -> tuple[int, int, int]:
    return tuple(int(round((1 - t) * c + t * o)) for c, o in zip(colour, other))


def render_face(labels: dict, look: dict, size: int = 64) -> Image.Image:
    """Draw one face (RGB, ``size`` x ``size``) from its labels (name -> bool) and look.

    Every attribute is drawn from its label; ``look`` adds what is not a label (colours,
    position). Drawn at twice the size and reduced, which anti-aliases the PIL primitives.
    """
    S = 2 * size
    a = labels
    skin = _PALE_SKIN if a["Pale_Skin"] else tuple(int(c) for c in look["skin"])
    hair_name = next((name for name in _HAIR_RGB if name and a[name]), None)
    hair = tuple(int(c) for c in np.clip(np.add(_HAIR_RGB[hair_name], look["hair_shade"]), 0, 255))
    img = Image.new("RGB", (S, S), tuple(look["background"]))
    d = ImageDraw.Draw(img)

    def P(x, y):
        return (x * S, y * S)

    def ellipse(x, y, rx, ry, **kw):
        d.ellipse([P(x - rx, y - ry), P(x + rx, y + ry)], **kw)

    def width(w):
        return max(1, int(round(w * S)))

    cx, cy = 0.5 + look["shift"][0], 0.47 + look["shift"][1]
    fw = 0.20 + 0.045 * a["Chubby"] + 0.012 * a["Male"]     # face half-width
    fh = 0.26 + 0.045 * a["Oval_Face"]                       # face half-height
    long_hair = not a["Male"]
    eye_y, nose_y, mouth_y = cy - 0.04, cy + 0.075, cy + 0.155
    hairline = cy - 0.16
    texture = 0 if a["Straight_Hair"] else 1 if a["Wavy_Hair"] else 2  # 2: curly
    phase = float(look["waves"])

    def strand(x0, y0, y1, colour, w=0.008):
        """One hair strand from (x0, y0) down to y1, in the hair's texture."""
        steps = 8
        ys = np.linspace(y0, y1, steps)
        if texture == 0:
            d.line([P(x0, y0), P(x0, y1)], fill=colour, width=width(w))
        elif texture == 1:
            xs = x0 + 0.018 * np.sin(phase + ys * 60)
            d.line([P(x, y) for x, y in zip(xs, ys)], fill=colour, width=width(w))
        else:
            for y in ys[::2]:
                ellipse(x0, y, 0.014, 0.014, outline=colour, width=width(w))

    dark_hair = _mix(hair, (0, 0, 0), 0.35)
    beard = _mix(hair, (0, 0, 0), 0.55)  # brows and facial hair, darker than the hair
    # Strands contrast with the hair: lighter on dark hair, darker on light hair.
    strand_colour = _mix(hair, (255, 255, 255), 0.3) if sum(hair) < 240 else dark_hair
    streak = (205, 205, 205)
    # Hair behind the head (long hair), with strands on both sides.
    if long_hair and not a["Bald"]:
        d.rectangle([P(cx - fw - 0.075, cy - 0.1), P(cx + fw + 0.075, cy + 0.36)], fill=hair)
        ellipse(cx, cy - 0.06, fw + 0.075, fh + 0.07, fill=hair)
        for side in (-1, 1):
            for k in range(3):
                x = cx + side * (fw + 0.018 + 0.025 * k)
                strand(x, cy - 0.1, cy + 0.34, streak if a["Gray_Hair"] and k != 1 else strand_colour)
    # Shoulders, neck, necklace, tie.
    shoulder = 0.44 + 0.06 * a["Male"]
    ellipse(cx, 1.12, shoulder, 0.27, fill=tuple(look["clothes"]))
    neck_skin = _mix(skin, (0, 0, 0), 0.12)
    d.rectangle([P(cx - 0.075, cy + 0.15), P(cx + 0.075, 0.9)], fill=neck_skin)
    if a["Wearing_Necktie"]:
        d.polygon([P(cx - 0.075, 0.86), P(cx, 0.92), P(cx - 0.02, 0.84)], fill=(245, 245, 245))
        d.polygon([P(cx + 0.075, 0.86), P(cx, 0.92), P(cx + 0.02, 0.84)], fill=(245, 245, 245))
        tie = tuple(look["tie"])
        d.polygon([P(cx - 0.022, 0.88), P(cx + 0.022, 0.88), P(cx + 0.014, 0.92),
                   P(cx - 0.014, 0.92)], fill=tie)
        d.polygon([P(cx - 0.014, 0.92), P(cx + 0.014, 0.92), P(cx + 0.04, 1.0),
                   P(cx - 0.04, 1.0)], fill=tie)
    if a["Wearing_Necklace"]:
        for t in np.linspace(0.15, 0.85, 9) * np.pi:
            ellipse(cx + 0.08 * math.cos(t), 0.80 + 0.05 * math.sin(t), 0.01, 0.01,
                    fill=(235, 200, 60))
    # Ears, face.
    for side in (-1, 1):
        ellipse(cx + side * fw, cy + 0.0, 0.035, 0.055, fill=neck_skin)
    jaw_power = 2.8 if a["Male"] else 2.0  # superellipse exponent: squarer jaw for men
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    cos, sin = np.cos(t), np.sin(t)
    lower = sin > 0
    power = np.where(lower, jaw_power, 2.0)
    face_x = cx + fw * np.sign(cos) * np.abs(cos) ** (2 / power)
    face_y = cy + fh * np.sign(sin) * np.abs(sin) ** (2 / power)
    d.polygon([P(x, y) for x, y in zip(face_x, face_y)], fill=skin)
    if a["Double_Chin"]:  # a fold above the chin line and a second chin below it
        fold = _mix(skin, (0, 0, 0), 0.45)
        ellipse(cx, cy + fh + 0.01, 0.1, 0.045, fill=_mix(skin, (0, 0, 0), 0.08), outline=fold,
                width=width(0.014))
        d.arc([P(cx - 0.09, cy + fh - 0.06), P(cx + 0.09, cy + fh - 0.01)], 25, 155, fill=fold,
              width=width(0.014))
    if a["5_o_Clock_Shadow"]:  # a tint on the jaw, stippled with stubble
        jaw = [(x, y) for x, y in zip(face_x, face_y) if y > nose_y - 0.01]
        d.polygon([P(x, y) for x, y in jaw], fill=_mix(skin, (40, 35, 35), 0.35))
        grid = np.mgrid[nose_y:cy + fh:0.022, cx - fw:cx + fw:0.022].reshape(2, -1).T
        inside = ((grid[:, 1] - cx) / fw) ** 2 + ((grid[:, 0] - cy) / fh) ** 2 < 0.85
        dots = [(x * S + dx, y * S + dy) for y, x in grid[inside] for dx in (0, 1) for dy in (0, 1)]
        d.point(dots, fill=beard)
    # Cheeks.
    for side in (-1, 1):
        if a["High_Cheekbones"]:  # a highlight on the bone and a shadow beneath it
            ellipse(cx + side * 0.115, cy + 0.025, 0.05, 0.022, fill=_mix(skin, (255, 255, 255), 0.55))
            d.line([P(cx + side * 0.17, cy + 0.045), P(cx + side * 0.085, cy + 0.105)],
                   fill=_mix(skin, (0, 0, 0), 0.45), width=width(0.016))
        if a["Rosy_Cheeks"]:
            ellipse(cx + side * 0.11, cy + 0.08, 0.05, 0.035, fill=_mix(skin, (235, 70, 95), 0.55))
    if not a["Young"]:  # forehead lines, nasolabial folds, crow's feet
        wrinkle = _mix(skin, (0, 0, 0), 0.6)
        for y in (cy - 0.14, cy - 0.115, cy - 0.09):
            d.line([P(cx - 0.085, y), P(cx + 0.085, y)], fill=wrinkle, width=width(0.011))
        for side in (-1, 1):
            d.line([P(cx + side * 0.045, nose_y - 0.005), P(cx + side * 0.09, mouth_y + 0.02)],
                   fill=wrinkle, width=width(0.013))
            for dy in (-0.015, 0.012):
                d.line([P(cx + side * 0.15, eye_y + dy * 0.3), P(cx + side * 0.18, eye_y + dy)],
                       fill=wrinkle, width=width(0.01))
    # Eyes, eyelids, bags, brows.
    eye_rx = 0.042 + 0.014 * a["Attractive"]
    eye_ry = (0.012 if a["Narrow_Eyes"] else 0.024) + 0.004 * a["Attractive"]
    for side in (-1, 1):
        ex = cx + side * 0.09
        if a["Heavy_Makeup"]:
            ellipse(ex, eye_y - 0.017, eye_rx + 0.016, eye_ry + 0.018, fill=(125, 70, 150))
        if a["Bags_Under_Eyes"]:
            ellipse(ex, eye_y + eye_ry + 0.012, eye_rx + 0.004, 0.02,
                    fill=_mix(skin, (60, 25, 45), 0.6))
        ellipse(ex, eye_y, eye_rx, eye_ry, fill=(250, 250, 250),
                outline=(10, 10, 10) if a["Heavy_Makeup"] else None,
                width=width(0.012) if a["Heavy_Makeup"] else 1)
        iris = min(eye_ry, 0.02)
        ellipse(ex, eye_y, iris, iris, fill=tuple(look["iris"]))
        ellipse(ex, eye_y, iris * 0.5, iris * 0.5, fill=(0, 0, 0))
        if a["Attractive"]:
            ellipse(ex + 0.006, eye_y - 0.006, 0.006, 0.006, fill=(255, 255, 255))
        brow_y = eye_y - eye_ry - 0.035
        arch = 0.028 if a["Arched_Eyebrows"] else 0.004
        brow = [P(ex - side * 0.055, brow_y + 0.01), P(ex + side * 0.005, brow_y - arch),
                P(ex + side * 0.055, brow_y + 0.012)]
        d.line(brow, fill=beard, width=width(0.026 if a["Bushy_Eyebrows"] else 0.009))
    # Nose: bridge lines and nostrils; a big nose is longer and wider, a pointy one ends in a
    # sharp shaded tip instead of a round bulb.
    nose_w = 0.05 if a["Big_Nose"] else 0.028
    nose_top = eye_y + (0.0 if a["Big_Nose"] else 0.04)
    nose_bottom = nose_y + (0.015 if a["Big_Nose"] else 0.0)
    nose_line = _mix(skin, (0, 0, 0), 0.45)
    if a["Pointy_Nose"]:  # a dark wedge ending in a point
        d.polygon([P(cx - nose_w * 0.5, nose_bottom - 0.035), P(cx + nose_w * 0.5, nose_bottom - 0.035),
                   P(cx, nose_bottom + 0.04)], fill=nose_line)
    else:  # a round, lit bulb
        ellipse(cx, nose_bottom - 0.006, nose_w, nose_w * 0.8, fill=_mix(skin, (255, 255, 255), 0.3),
                outline=nose_line, width=width(0.01))
    for side in (-1, 1):
        d.line([P(cx + side * 0.012, nose_top), P(cx + side * nose_w * 0.8, nose_bottom - 0.012)],
               fill=nose_line, width=width(0.01))
        ellipse(cx + side * nose_w * 0.6, nose_bottom + 0.006, 0.011, 0.007, fill=nose_line)
    # Mouth: a curve whose centre dips when smiling; lips above and below it.
    half = 0.07 + 0.01 * a["Big_Lips"]
    lip = 0.03 if a["Big_Lips"] else 0.016
    gap = 0.028 if a["Mouth_Slightly_Open"] else 0.0
    dip = 0.035 if a["Smiling"] else 0.0
    ts = np.linspace(-1, 1, 11)
    mid = mouth_y + dip * (1 - ts ** 2) - dip / 2
    xs = cx + half * ts
    bulge = lip * np.sqrt(1 - ts ** 2)
    lip_colour = (195, 25, 50) if a["Wearing_Lipstick"] else _mix(skin, (110, 30, 45), 0.55)
    upper_edge, lower_edge = mid - gap / 2, mid + gap / 2
    d.polygon([P(x, y) for x, y in zip(xs, upper_edge - bulge)]
              + [P(x, y) for x, y in zip(xs[::-1], upper_edge[::-1])], fill=lip_colour)
    d.polygon([P(x, y) for x, y in zip(xs, lower_edge)]
              + [P(x, y) for x, y in zip(xs[::-1], (lower_edge + bulge)[::-1])], fill=lip_colour)
    if gap:
        d.polygon([P(x, y) for x, y in zip(xs, upper_edge)]
                  + [P(x, y) for x, y in zip(xs[::-1], lower_edge[::-1])], fill=(55, 15, 20))
        d.polygon([P(x, y) for x, y in zip(xs[2:-2], upper_edge[2:-2])]
                  + [P(x, y) for x, y in zip(xs[-3:1:-1], upper_edge[-3:1:-1] + gap * 0.45)],
                  fill=(245, 245, 240))
    else:
        d.line([P(x, y) for x, y in zip(xs, mid)], fill=_mix(lip_colour, (0, 0, 0), 0.5),
               width=width(0.014))
    if a["Mustache"]:
        top = mid.min() - gap / 2 - lip - 0.004
        d.polygon([P(cx - half - 0.01, top + 0.012), P(cx - 0.02, top - 0.03),
                   P(cx + 0.02, top - 0.03), P(cx + half + 0.01, top + 0.012),
                   P(cx, top - 0.005)], fill=beard)
    if a["Goatee"]:
        top = mid.max() + gap / 2 + lip + 0.012
        d.polygon([P(cx - 0.045, top), P(cx + 0.045, top), P(cx + 0.035, cy + fh - 0.005),
                   P(cx - 0.035, cy + fh - 0.005)], fill=beard)
    # Hair on the head: the cap above the hairline, or a bare (shining) scalp.
    if a["Bald"]:
        ellipse(cx - 0.05, cy - fh + 0.045, 0.05, 0.022, fill=_mix(skin, (255, 255, 255), 0.5))
        for side in (-1, 1):
            d.rectangle([P(cx + side * fw - 0.015, cy - 0.07), P(cx + side * fw + 0.015, cy - 0.01)],
                        fill=streak if a["Gray_Hair"] else hair)
    else:
        recede = 0.07 if a["Receding_Hairline"] else 0.0
        arc_t = np.linspace(np.pi, 2 * np.pi, 17)
        cap = [P(cx + (fw + 0.03) * math.cos(u), cy - 0.03 + (fh + 0.05) * math.sin(u)) for u in arc_t]
        temple = cy - 0.02 if long_hair else cy - 0.05
        cap += [P(cx + fw + 0.005, temple), P(cx + fw * 0.55, hairline - recede),
                P(cx, hairline + 0.01), P(cx - fw * 0.55, hairline - recede),
                P(cx - fw - 0.005, temple)]
        d.polygon(cap, fill=hair)
        for k, x in enumerate(np.linspace(cx - fw * 0.75, cx + fw * 0.75, 6)):
            colour = streak if a["Gray_Hair"] and k % 2 == 0 else strand_colour
            strand(x, cy - fh - 0.03, hairline - recede - 0.01, colour)
        if a["Bangs"]:
            fringe_y = eye_y - 0.1
            points = [P(cx - fw * 0.95, hairline - 0.03), P(cx + fw * 0.95, hairline - 0.03)]
            for k, x in enumerate(np.linspace(cx + fw * 0.9, cx - fw * 0.9, 9)):
                points.append(P(x, fringe_y + (0.012 if k % 2 else -0.01)))
            d.polygon(points, fill=hair)
            for x in np.linspace(cx - fw * 0.7, cx + fw * 0.7, 5):
                strand(x, hairline - 0.02, fringe_y - 0.012, strand_colour, w=0.006)
    if a["Sideburns"]:
        for side in (-1, 1):
            x_out = cx + side * (fw - 0.004)
            d.polygon([P(x_out, cy - 0.07), P(x_out - side * 0.035, cy - 0.07),
                       P(x_out - side * 0.03, cy + 0.07), P(x_out, cy + 0.07)], fill=beard)
    # Accessories on top.
    if a["Eyeglasses"]:
        frame = (20, 20, 25)
        for side in (-1, 1):
            ex = cx + side * 0.09
            d.rounded_rectangle([P(ex - 0.066, eye_y - 0.045), P(ex + 0.066, eye_y + 0.045)],
                                radius=0.02 * S, outline=frame, width=width(0.014))
            d.line([P(ex + side * 0.066, eye_y - 0.02), P(cx + side * (fw + 0.01), eye_y - 0.03)],
                   fill=frame, width=width(0.012))
        d.line([P(cx - 0.024, eye_y - 0.01), P(cx + 0.024, eye_y - 0.01)], fill=frame,
               width=width(0.012))
    if a["Wearing_Hat"]:
        hat = tuple(look["hat"])
        brim_y = cy - fh + 0.005
        d.chord([P(cx - fw - 0.025, brim_y - 0.2), P(cx + fw + 0.025, brim_y + 0.12)], 180, 360,
                fill=hat)
        d.rectangle([P(cx - fw - 0.08, brim_y - 0.025), P(cx + fw + 0.08, brim_y + 0.012)],
                    fill=_mix(hat, (0, 0, 0), 0.3))
    if a["Wearing_Earrings"]:
        for side in (-1, 1):
            ellipse(cx + side * (fw + 0.005), cy + 0.075, 0.024, 0.024, fill=(240, 200, 50),
                    outline=(120, 90, 20))
    img = img.reduce(2)
    if a["Blurry"]:
        img = img.filter(ImageFilter.GaussianBlur(radius=1.1 * size / 64))
    return img


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


def save_contact_sheet(dataset: FaceDataset, path: str | Path, count: int = 16,
                       columns: int = 4, indices=None) -> Path:
    """Save ``count`` images of ``dataset`` (``indices``, default evenly spread over the rows)
    as a grid PNG, each titled with its positive attributes (abbreviated)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if indices is None:
        indices = np.linspace(0, len(dataset) - 1, min(count, len(dataset))).astype(int)
    count = len(indices)
    rows = math.ceil(count / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in zip(indices, axes.flat):
        ax.imshow(dataset.source.load(dataset.keys[i]), interpolation="nearest")
        positive = [name for name, on, known in zip(dataset.attributes, dataset.labels[i],
                                                    dataset.mask[i]) if on and known]
        short = [name.replace("Wearing_", "").replace("_Hair", "").replace("_", " ")[:11]
                 for name in positive]
        lines = [", ".join(short[j:j + 3]) for j in range(0, len(short), 3)]
        ax.set_title("\n".join(lines), fontsize=6.5)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path
