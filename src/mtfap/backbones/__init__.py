"""Backbones by name: ``create_backbone("dlib_face_resnet", pretrained=True)``.

Each backbone lives in its own module and registers a factory with ``@register_backbone``.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Callable

from mtfap.backbones.base import Backbone, InputSpec
from mtfap.errors import did_you_mean

_REGISTRY: dict[str, Callable[..., Backbone]] = {}
# Modules that register backbones when imported; listed here so the registry is complete
# without importing torch-heavy code at package import.
_MODULES: tuple[str, ...] = ("compact", "dlib_face", "efficientnet_lite", "resnet", "vgg")


def register_backbone(name: str):
    def wrap(factory):
        _REGISTRY[name] = factory
        return factory
    return wrap


def _load_all():
    for module in _MODULES:
        importlib.import_module(f"mtfap.backbones.{module}")


def list_backbones() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def create_backbone(name: str, pretrained: bool | str = False, **kwargs) -> Backbone:
    """Build backbone ``name``.

    pretrained : False for random init, True for the weights shipped in an installed package
        (where the backbone has one), or a path to a local state_dict / safetensors file.
    """
    _load_all()
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}.{did_you_mean(str(name), _REGISTRY)} "
                         f"Available: {', '.join(sorted(_REGISTRY))}")
    factory = _REGISTRY[name]
    accepted = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        known = [p for p in accepted if p != "pretrained"]
        for key in kwargs:  # backbone_args come from config files and model.json
            if key not in accepted:
                raise ValueError(f"backbone {name!r} has no argument {key!r}."
                                 f"{did_you_mean(key, known)} Arguments: {', '.join(known)}")
    try:
        return factory(pretrained=pretrained, **kwargs)
    except TypeError as exc:  # an argument of the wrong type, e.g. widths: "wide"
        raise ValueError(f"backbone {name!r}: bad arguments {kwargs} ({exc})") from None


__all__ = ["Backbone", "InputSpec", "create_backbone", "list_backbones", "register_backbone"]
