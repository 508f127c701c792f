"""Task groupings for Scenario 1 (eq. 3): presets by name or a user file, validated.

A grouping maps a group name to attribute names; every attribute must be in exactly one group.

Presets
-------
``paper``
    The ten clusters the paper reads off its learned CelebA graph (Sec. 5.4; docs/METHOD.md section 4).
``regions``
    Attributes grouped by the face region they describe, as a contrast to ``paper``.
``learned``
    The communities of the task graph learned on CelebA (Scenario 2 on frozen dlib features),
    read by modularity: Scenario 2's structure handed to Scenario 1 (docs/RESULTS.md).

A preset applied to some of CelebA's attributes (``--attributes Smiling,Male``) keeps those
attributes in their groups and drops the groups left empty. A user grouping is a JSON or YAML
file holding one mapping ``group name -> [attribute, ...]``; it must name exactly the
attributes fitted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import yaml

from mtfap.errors import DataError, did_you_mean

PAPER_GROUPS: dict[str, list[str]] = {
    "mouth_expression": ["Mouth_Slightly_Open", "High_Cheekbones", "Smiling"],
    "feminine_appearance": [
        "Attractive", "No_Beard", "Heavy_Makeup", "Wavy_Hair", "Young", "Bangs", "Brown_Hair",
        "Oval_Face", "Pointy_Nose", "Rosy_Cheeks", "Wearing_Lipstick", "Blond_Hair",
        "Wearing_Necklace", "Arched_Eyebrows", "Wearing_Earrings"],
    "masculine_appearance": [
        "Wearing_Necktie", "Male", "Mustache", "Sideburns", "Bald", "5_o_Clock_Shadow", "Goatee",
        "Bushy_Eyebrows"],
    "hat": ["Wearing_Hat"],
    "gray_hair": ["Gray_Hair"],
    "blurry": ["Blurry"],
    "pale_skin": ["Pale_Skin"],
    "eyeglasses": ["Eyeglasses"],
    "black_straight_hair": ["Black_Hair", "Straight_Hair"],
    "ageing_face_shape": [
        "Receding_Hairline", "Chubby", "Double_Chin", "Bags_Under_Eyes", "Big_Lips", "Big_Nose",
        "Narrow_Eyes"],
}

REGION_GROUPS: dict[str, list[str]] = {
    "mouth": ["Big_Lips", "Mouth_Slightly_Open", "Smiling", "Wearing_Lipstick"],
    "eyes_and_brows": ["Arched_Eyebrows", "Bags_Under_Eyes", "Bushy_Eyebrows", "Narrow_Eyes"],
    "nose": ["Big_Nose", "Pointy_Nose"],
    "hair_and_headwear": [
        "Bald", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair",
        "Receding_Hairline", "Straight_Hair", "Wavy_Hair", "Wearing_Hat"],
    "facial_hair": ["5_o_Clock_Shadow", "Goatee", "Mustache", "No_Beard", "Sideburns"],
    "cheeks_and_face_shape": ["Chubby", "Double_Chin", "High_Cheekbones", "Oval_Face",
                              "Rosy_Cheeks"],
    "whole_face": ["Attractive", "Blurry", "Heavy_Makeup", "Male", "Pale_Skin", "Young"],
    "accessories": ["Eyeglasses", "Wearing_Earrings", "Wearing_Necklace", "Wearing_Necktie"],
}

# `mtfap fit-heads FEATURES --method graph --param xi=0.01` on the frozen dlib features of the
# shared CelebA train split, then `mtfap graph RUN`: the "modularity" reading of clusters.json
# (adjusted Rand index 0.53 against the paper's ten clusters; the paper's connected components
# of the same graph give two clusters and 0.08).
LEARNED_GROUPS: dict[str, list[str]] = {
    "appearance_and_hair": [
        "Arched_Eyebrows", "Attractive", "Bangs", "Big_Lips", "Blond_Hair", "Blurry", "Brown_Hair",
        "Heavy_Makeup", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose",
        "Rosy_Cheeks", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Lipstick",
        "Wearing_Necklace", "Young"],
    "ageing": ["Bags_Under_Eyes", "Bald", "Big_Nose", "Chubby", "Double_Chin", "Eyeglasses",
               "Gray_Hair", "Receding_Hairline", "Wearing_Necktie"],
    "male_and_facial_hair": ["5_o_Clock_Shadow", "Black_Hair", "Bushy_Eyebrows", "Goatee", "Male",
                             "Mustache", "Sideburns", "Wearing_Hat"],
    "smile": ["High_Cheekbones", "Mouth_Slightly_Open", "Smiling"],
}

PRESETS: dict[str, dict[str, list[str]]] = {"paper": PAPER_GROUPS, "regions": REGION_GROUPS,
                                             "learned": LEARNED_GROUPS}


def load_grouping(path: str | Path) -> dict[str, list[str]]:
    """Read a grouping file (``.json``, ``.yaml`` or ``.yml``): ``group name -> [attribute, ...]``."""
    path = Path(path)
    if not path.is_file():
        raise DataError("grouping file not found", path,
                        hint=f"give a preset name ({', '.join(PRESETS)}) or an existing file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"not a UTF-8 text file ({err.reason} at byte {err.start})", path) from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            raise DataError(f"unknown grouping file type {path.suffix!r}", path,
                            hint="use .json, .yaml or .yml")
    except json.JSONDecodeError as err:
        raise DataError(f"not valid JSON: {err.msg}", path, err.lineno) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise DataError(f"not valid YAML: {getattr(err, 'problem', err)}", path,
                        mark.line + 1 if mark else None) from None
    if not isinstance(data, Mapping) or not data:
        raise DataError("a grouping file must hold a non-empty mapping", path,
                        hint="write `group_name: [Attribute_A, Attribute_B]` per group")
    for name, members in data.items():
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise DataError(f"group {name!r} must be a list of attribute names", path)
    return {str(name): list(members) for name, members in data.items()}


def resolve_groups(groups, attributes) -> list[tuple[str, list[int]]]:
    """Turn ``groups`` into ``[(group name, [column indices]), ...]`` and check it.

    Parameters
    ----------
    groups : str, path or mapping
        A preset name (``"paper"``, ``"regions"``), a path to a JSON/YAML file, or a mapping
        ``group name -> [attribute name, ...]``.
    attributes : sequence of str
        The attribute name of each column of Y, in order.

    Raises
    ------
    ValueError (DataError for a file)
        When an attribute is unknown, appears in two groups, is in no group, or a group is empty
        (a preset is first restricted to ``attributes``, see the module docstring).
    """
    source = "groups"
    if isinstance(groups, Mapping):
        mapping = {str(k): list(v) for k, v in groups.items()}
    elif isinstance(groups, str) and groups in PRESETS:
        mapping, source = PRESETS[groups], f"grouping preset {groups!r}"
        mapping = {name: kept for name, members in mapping.items()
                   if (kept := [m for m in members if m in set(attributes)])}
    elif isinstance(groups, (str, Path)):
        if isinstance(groups, str) and not Path(groups).suffix:
            raise ValueError(f"unknown grouping {groups!r}: use a preset ({', '.join(PRESETS)}), "
                             "a mapping, or a .json/.yaml file")
        mapping, source = load_grouping(groups), str(groups)
    else:
        raise ValueError(f"groups must be a preset name, a file path or a mapping, "
                         f"got {type(groups).__name__}")
    column = {name: j for j, name in enumerate(attributes)}
    owner: dict[str, str] = {}
    resolved = []
    for name, members in mapping.items():
        if not members:
            raise ValueError(f"{source}: group {name!r} is empty")
        for member in members:
            if member not in column:
                shown = ", ".join(list(column)[:8]) + (" ..." if len(column) > 8 else "")
                raise ValueError(f"{source}: group {name!r} names unknown attribute {member!r}."
                                 f"{did_you_mean(member, column)} The attributes fitted are "
                                 f"{shown}; a grouping must name exactly these")
            if member in owner:
                raise ValueError(f"{source}: attribute {member!r} is in two groups, {owner[member]!r} "
                                 f"and {name!r}; every attribute must be in exactly one group")
            owner[member] = name
        resolved.append((name, [column[m] for m in members]))
    missing = [a for a in attributes if a not in owner]
    if missing:
        raise ValueError(f"{source}: attributes in no group: {', '.join(missing)}; every attribute "
                         "must be in exactly one group. Give a grouping that covers them (a "
                         ".json/.yaml file of group: [attributes], as --groups FILE, or "
                         "--param groups=FILE for mtfap train) or use the graph or independent "
                         "heads, which need no grouping")
    return resolved
