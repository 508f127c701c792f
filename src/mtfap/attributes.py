"""The 40 CelebA attributes, in the official order of ``list_attr_celeba.txt``."""

from __future__ import annotations

from mtfap.errors import unknown_name_error

CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup",
    "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard",
    "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns",
    "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)


def resolve_attributes(names, available=CELEBA_ATTRIBUTES) -> list[str]:
    """Check attribute names against ``available``; unknown names raise with a suggestion."""
    available = list(available)
    out = []
    for name in names:
        if name not in available:
            raise unknown_name_error("attribute", name, available)
        out.append(name)
    return out
