"""Checkpoints: written atomically, with the random states, and checked against the config.

The format (and its safe reading) is ``mtfap.model.checkpoint``: a trained model is opened
without anything from training.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from mtfap.io import atomic_write
from mtfap.model.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
from mtfap.training.config import TrainConfig, config_from_dict


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
                    history: list, best: dict | None, elapsed: float = 0.0,
                    data: dict | None = None, ema=None) -> Path:
    """Write a checkpoint atomically (see the module docstring for its content); ``data``
    identifies the dataset trained on (:func:`dataset_identity`); ``ema`` is the run's
    ``AveragedModel`` of the weights, if it keeps one."""
    checkpoint = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
        "config": config.to_dict(), "epoch": epoch, "step": step, "batch_in_epoch": batch_in_epoch,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "rng": capture_rng_state(), "history": history, "best": best, "elapsed": elapsed,
        "data": data,
    }
    if ema is not None:
        checkpoint["ema"] = ema.module.state_dict()
        checkpoint["ema_updates"] = int(ema.n_averaged)
    return atomic_torch_save(checkpoint, path)


def dataset_identity(dataset) -> dict:
    """What identifies a dataset's content: a digest of its keys, labels, mask, split and
    identities, and the fingerprint of its images."""
    return {"labels": dataset.labels_digest(), "images": dataset.source.fingerprint()}


def check_same_data(checkpoint: dict, identity: dict, path: str | Path) -> None:
    """Raise if the dataset changed since ``checkpoint`` was written (checkpoints written before
    this was recorded are not checked): a resumed run would train on two datasets."""
    saved = checkpoint.get("data")
    if not isinstance(saved, dict):
        return
    changed = [what for what in ("labels", "images") if saved.get(what) != identity[what]]
    if changed:
        raise ValueError(f"{path}: the dataset's {' and '.join(changed)} changed since this run "
                         "started, so resuming would train on two datasets. Start a new run "
                         "(--overwrite, or another --output-dir)")


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
