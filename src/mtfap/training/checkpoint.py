"""Checkpoints: written atomically, read safely, and checked against the configuration.

A checkpoint is a plain dictionary of tensors, numbers and strings saved with ``torch.save``
and read with ``torch.load(weights_only=True)`` (no pickled code can run):

    format, version, config (dict), epoch (completed epochs), step (optimiser steps),
    batch_in_epoch (batches done in the current epoch, 0 at an epoch boundary),
    model (state_dict of backbone + heads), optimizer (state_dict), rng (random states),
    history (metrics of the finished epochs), best (the best validation result so far),
    elapsed (wall seconds of the run so far, for ``time_budget_minutes``).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from mtfap.evaluation.reports import atomic_write
from mtfap.training.config import TrainConfig, config_from_dict

CHECKPOINT_FORMAT = "mtfap-checkpoint"
CHECKPOINT_VERSION = 1


def atomic_torch_save(obj, path: str | Path) -> Path:
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def capture_rng_state() -> dict:
    """The states of Python's, NumPy's and torch's generators, as weights-only-safe values."""
    numpy_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
                  "pos": int(numpy_state[2]), "has_gauss": int(numpy_state[3]),
                  "cached_gaussian": float(numpy_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, *, config: TrainConfig, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, epoch: int, step: int, batch_in_epoch: int,
                    history: list, best: dict | None, elapsed: float = 0.0) -> Path:
    """Write a checkpoint atomically (see the module docstring for its content)."""
    checkpoint = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
        "config": config.to_dict(), "epoch": epoch, "step": step, "batch_in_epoch": batch_in_epoch,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "rng": capture_rng_state(), "history": history, "best": best, "elapsed": elapsed,
    }
    return atomic_torch_save(checkpoint, path)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Read a checkpoint safely; a missing, truncated or foreign file raises a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise ValueError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc}); the file "
                         "is corrupt or not an mtfap checkpoint") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an mtfap checkpoint (written by `mtfap train`)")
    if checkpoint.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {checkpoint.get('version')} is not supported "
                         f"(this mtfap reads version {CHECKPOINT_VERSION})")
    return checkpoint


def check_same_config(checkpoint: dict, config: TrainConfig, path: str | Path) -> None:
    """Raise if ``checkpoint`` was written by a run with another configuration.

    Keys that only change how a run executes (device, workers, output folder, step budget) may
    differ; any other difference would make the resumed run a different experiment.
    """
    saved = config_from_dict(checkpoint["config"], where=f"{path} (saved config)")
    diff = saved.differences(config)
    if diff:
        lines = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in sorted(diff.items()))
        raise ValueError(f"{path}: checkpoint comes from another configuration ({lines}). Resume "
                         "with the same settings, or start a new run in another --output-dir")


def load_model_state(model: torch.nn.Module, state: dict, path: str | Path) -> None:
    """``model.load_state_dict(state)`` with an error that names the mismatching tensors."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if isinstance(own[k], torch.Tensor)
                        and getattr(state[k], "shape", None) != own[k].shape)
    if missing or unexpected or mismatched:
        parts = []
        for label, names in (("missing", missing), ("unexpected", unexpected),
                             ("shape differs", mismatched)):
            if names:
                more = " ..." if len(names) > 5 else ""
                parts.append(f"{label}: {', '.join(names[:5])}{more}")
        raise ValueError(f"{path}: checkpoint does not fit this model ({'; '.join(parts)}); it was "
                         "written for another backbone, head method or attribute list")
    model.load_state_dict(state)
