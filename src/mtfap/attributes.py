"""The 40 CelebA attributes, in the official order of ``list_attr_celeba.txt``."""

from __future__ import annotations

import difflib

CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup",
    "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard",
    "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns",
    "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)


def closest_name(name: str, choices) -> str | None:
    """The closest of ``choices`` to ``name`` (case-insensitive), for "did you mean" hints."""
    lowered = {c.lower(): c for c in choices}
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.5)
    return lowered[match[0]] if match else None


def resolve_attributes(names, available=CELEBA_ATTRIBUTES) -> list[str]:
    """Check attribute names against ``available``; unknown names raise with a suggestion."""
    available = list(available)
    out = []
    for name in names:
        if name not in available:
            hint = closest_name(name, available)
            tip = f" Did you mean {hint!r}?" if hint else ""
            raise ValueError(f"unknown attribute {name!r}.{tip} Known attributes: {', '.join(available)}")
        out.append(name)
    return out
