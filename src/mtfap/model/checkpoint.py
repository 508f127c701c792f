"""Reading what training writes: a checkpoint's format, safely, and its weights into a model.

A checkpoint is a plain dictionary of tensors, numbers and strings saved with ``torch.save``
(``mtfap.training.checkpoint.save_checkpoint``) and read here with
``torch.load(weights_only=True)``, so no pickled code can run::

    format, version, config (dict), epoch (completed epochs), step (optimiser steps),
    batch_in_epoch (batches done in the current epoch, 0 at an epoch boundary),
    model (state_dict of backbone + heads), optimizer (state_dict), rng (random states),
    history (metrics of the finished epochs), best (the best validation result so far),
    elapsed (wall seconds of the run so far, for ``time_budget_minutes``),
    data (digests of the dataset's labels and images; a resume on changed data is refused),
    and, when the run averages its weights (``ema_decay``), ema (state_dict of the average:
    the weights a trained model is opened with) and ema_updates (steps averaged).
"""

from __future__ import annotations

from pathlib import Path

import torch

CHECKPOINT_FORMAT = "mtfap-checkpoint"
CHECKPOINT_VERSION = 1


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
