"""Backbones by name: ``create_backbone("dlib_face_resnet", pretrained=True)``.

Each backbone lives in its own module and registers a factory with ``@register_backbone``.
"""

from __future__ import annotations

import importlib
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
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}.{did_you_mean(name, _REGISTRY)} "
                         f"Available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](pretrained=pretrained, **kwargs)


__all__ = ["Backbone", "InputSpec", "create_backbone", "list_backbones", "register_backbone"]
