"""End-to-end training of MTFAP: the CNN (block 1) and the structured heads (block 2) together.

One step minimises the paper's objective (eq. 2) on a mini-batch,

    loss = sum_{i,j known} BCE(f_j(x_i), y_ij) / #known  +  Omega_smooth(W),

where missing labels contribute nothing (they are not negatives) and ``Omega_smooth`` is
``heads.penalty()``. The optimiser (SGD or AdamW) steps on the CNN and the heads; then
``heads.solver_step(lr)`` applies the non-smooth part of Omega (Algorithms 1-2 alternating, or
the proximal operators); after each epoch ``heads.end_epoch()`` runs the graph step of
Algorithm 3. The validation mean accuracy picks ``best.pt``; ``last.pt`` is written after every
epoch and at the end, so ``resume=True`` continues a killed run and ends where an uninterrupted
run of the same seed ends. The metrics files are written after the checkpoints they describe
(and again at a resume), so after a kill they never run ahead of ``last.pt``. With
``time_budget_minutes`` the run stops inside a wall-clock budget and the cosine schedule follows
the fraction of it used (:class:`TimeBudget`).

Read :func:`train` top to bottom; the helpers above it each do one thing.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from mtfap.data.cache import build_cache
from mtfap.data.layout import open_dataset
from mtfap.data.loader import FaceImageDataset, make_loader
from mtfap.data.splits import scarce_setting
from mtfap.evaluation.metrics import evaluate_predictions
from mtfap.io import (
    atomic_write_text,
    remove_stale_temporaries,
    save_figure,
    write_json,
)
from mtfap.model.checkpoint import load_checkpoint, load_model_state
from mtfap.model.inference import autocast, predict_loader
from mtfap.model.network import AttributeModel, build_model
from mtfap.outputs import prepare_output_folder
from mtfap.training import distributed
from mtfap.training.checkpoint import (
    check_same_config,
    check_same_data,
    dataset_identity,
    restore_rng_state,
    save_checkpoint,
)
from mtfap.training.config import TrainConfig


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, out of memory); the message says what to try."""


@dataclass
class TrainResult:
    """What a run produced: its folder, per-epoch metrics and the best validation result."""

    output_dir: Path
    history: list[dict] = field(default_factory=list)
    best: dict | None = None
    steps: int = 0
    is_main: bool = True


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
               normaliser: torch.Tensor | float, smoothing: float = 0.0,
               pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Sum of the sigmoid cross-entropies of the known labels, divided by ``normaliser``.

    ``normaliser`` is the number of known labels the loss is averaged over (for one process,
    ``mask.sum()``; under DDP the count of the global batch divided by the world size, so that
    DDP's gradient average is the global mean). ``smoothing`` = e moves each target from
    {0, 1} to {e / 2, 1 - e / 2} (label smoothing). ``pos_weight`` (k,) multiplies the loss of
    each attribute's positive labels (:func:`positive_weights`).
    """
    targets = labels.float()
    if smoothing:
        targets = targets * (1.0 - smoothing) + 0.5 * smoothing
    losses = F.binary_cross_entropy_with_logits(logits, targets, reduction="none",
                                                pos_weight=pos_weight)
    return (losses * mask).sum() / normaliser


def positive_weights(labels: np.ndarray, mask: np.ndarray, power: float) -> torch.Tensor | None:
    """Per attribute ``(negatives / positives) ** power`` over the known labels (None for power
    0); an attribute with no known positive or no known negative gets 1."""
    if power == 0:
        return None
    known = np.asarray(mask, dtype=bool)
    positives = (np.asarray(labels, dtype=bool) & known).sum(axis=0).astype(np.float64)
    negatives = known.sum(axis=0) - positives
    ratio = np.divide(negatives, positives, out=np.ones_like(positives),
                      where=(positives > 0) & (negatives > 0))
    return torch.from_numpy(ratio ** power).float()


def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int,
                  time_fraction: float = 0.0) -> float:
    """The learning rate of optimiser step ``step`` (0-based): linear warm-up, then the schedule.

    cosine: lr * (1 + cos(pi * t)) / 2 with t the fraction of the post-warm-up steps done, or
    ``time_fraction`` (of ``time_budget_minutes``) when that is larger;
    step: lr * step_gamma ** (epoch // step_epochs); none: lr.
    """
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    if config.schedule == "cosine":
        total = max(1, config.epochs * steps_per_epoch - warmup)
        progress = min(1.0, max((step - warmup) / total, time_fraction))
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    if config.schedule == "step":
        return config.lr * config.step_gamma ** ((step // steps_per_epoch) // config.step_epochs)
    return config.lr


def make_optimizer(config: TrainConfig, model: AttributeModel) -> torch.optim.Optimizer:
    """SGD or AdamW; weight decay on the backbone only (Omega regularises the heads), and the
    heads' learning rate ``head_lr_scale`` times the backbone's (``lr_scale`` of each group)."""
    trainable = [p for p in model.backbone.parameters() if p.requires_grad]  # frozen_layers
    groups = [{"params": trainable, "weight_decay": config.weight_decay, "lr_scale": 1.0},
              {"params": list(model.heads.parameters()), "weight_decay": 0.0,
               "lr_scale": config.head_lr_scale}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    return torch.optim.AdamW(groups, lr=config.lr)


def load_dataset(config: TrainConfig, dataset=None):
    """The dataset (``config.data`` unless one is given), its attributes selected, with a split
    (and, in the scarce-label setting, its train and val labels thinned)."""
    if dataset is None:
        dataset = open_dataset(config.data)
    if config.attributes:
        dataset = dataset.select_attributes(config.attributes)
    if dataset.split is None:
        raise ValueError(f"dataset {dataset.name!r} has no train/val/test split; add a split "
                         "column (train, val or test per image) to its table, or make one in "
                         "Python with mtfap.data.splits.identity_disjoint_split")
    if not (dataset.split == 0).any():
        raise ValueError(f"dataset {dataset.name!r} has no training images")
    if config.scarce_fraction is not None:
        dataset, _ = scarce_setting(dataset, config.scarce_fraction, config.scarce_count,
                                    config.scarce_seed)
    return dataset


def batch_tensors(batch, device: torch.device, channels_last: bool = False):
    """(images, labels, mask, index) of a pipeline ``Batch``, the tensors on ``device``."""
    images = batch.images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, batch.labels.to(device), batch.mask.to(device), batch.index


def evaluate(model: AttributeModel, loader, config: TrainConfig, context) -> dict:
    """Mean (and balanced) accuracy over attributes on known labels.

    Each rank scores its shard of the split; the shards are gathered before averaging.
    """
    scores, labels, mask = (distributed.gather_arrays(part, context)
                            for part in predict_loader(model, loader, device=context.device,
                                                       flip=config.flip_test,
                                                       channels_last=config.channels_last,
                                                       amp=config.amp, progress=config.progress))
    result = evaluate_predictions(scores, labels, mask, n_bootstrap=0)
    return {"mean_accuracy": result.mean_accuracy,
            "mean_balanced_accuracy": result.mean_balanced_accuracy}


def _validate(model: AttributeModel, data: "_Data", config: TrainConfig, context) -> dict:
    if not data.val_size:
        return {"mean_accuracy": float("nan"), "mean_balanced_accuracy": float("nan")}
    return evaluate(model, data.val_loader, config, context)


def plot_history(history: list[dict], path: Path) -> None:
    """The epoch curve: training loss and validation mean (balanced) accuracy per epoch."""
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(history)
    fig, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(9, 3.2))
    loss_axis.plot(frame["epoch"], frame["train_loss"], "o-")
    loss_axis.set(xlabel="epoch", ylabel="training loss (BCE + penalty)")
    for column, label in (("val_mean_accuracy", "mean accuracy"),
                          ("val_mean_balanced_accuracy", "mean balanced accuracy")):
        accuracy_axis.plot(frame["epoch"], 100 * frame[column], "o-", label=label)
    accuracy_axis.set(xlabel="epoch", ylabel="validation (%)")
    accuracy_axis.legend(loc="lower right", fontsize="small")
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        axis.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    save_figure(fig, path)


def write_metrics(output_dir: Path, history: list[dict]) -> None:
    """metrics.csv, metrics.json and the curve metrics.png, one row / point per finished epoch
    (rewritten atomically)."""
    if not history:
        return
    write_json(output_dir / "metrics.json", history)
    atomic_write_text(output_dir / "metrics.csv", pd.DataFrame(history).to_csv(index=False))
    plot_history(history, output_dir / "metrics.png")


class SkipFirst(torch.utils.data.Sampler):
    """The indices of ``sampler`` after the first ``skip`` (to resume inside an epoch)."""

    def __init__(self, sampler, skip: int):
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        return iter(list(self.sampler)[self.skip:])

    def __len__(self):
        return max(0, len(self.sampler) - self.skip)


class TimeBudget:
    """The wall-clock budget of a run (``time_budget_minutes``), on rank 0's clock everywhere.

    ``elapsed()`` counts from the start of ``train`` (plus the time of the run before a resume);
    the budget is spent when the elapsed time plus ``reserve`` (the longest validation and
    checkpoint writing seen so far, or an estimate before the first) reaches it, so that the last
    validation still ends inside the budget. Every time that enters a decision is rank 0's, so
    all processes stop at the same step. Without a budget nothing is synchronised.
    """

    clock = staticmethod(time.perf_counter)  # tests replace it with a simulated clock

    def __init__(self, minutes: float | None, context: distributed.DistContext,
                 elapsed: float = 0.0):
        self.seconds = None if minutes is None else 60.0 * minutes
        self.context = context
        self.origin = self.clock() - elapsed
        self.reserve = 0.0

    @property
    def enabled(self) -> bool:
        return self.seconds is not None

    def local_elapsed(self) -> float:
        return self.clock() - self.origin

    def elapsed(self) -> float:
        """Rank 0's elapsed seconds (a collective call under DDP when a budget is set)."""
        value = self.local_elapsed()
        return distributed.broadcast_float(value, self.context) if self.enabled else value

    def fraction(self, elapsed: float) -> float:
        return min(1.0, elapsed / self.seconds) if self.enabled else 0.0

    def spent(self, elapsed: float) -> bool:
        return self.enabled and elapsed + self.reserve >= self.seconds

    def start_epoch(self) -> None:
        self._epoch_start = self.elapsed()

    def end_training(self, steps: float, validation_batches: int) -> None:
        """The epoch's steps are done; before the first validation, guess it costs one
        training step per validation batch."""
        self._training_end = self.elapsed()
        if self.enabled and not self.reserve:
            per_step = (self._training_end - self._epoch_start) / max(steps, 1)
            self.reserve = validation_batches * per_step

    def end_epoch(self) -> bool:
        """Validation and checkpoints are done: update the reserve; True when spent."""
        if not self.enabled:
            return False
        ended = self.elapsed()
        self.reserve = max(self.reserve, 1.1 * (ended - self._training_end))
        return self.spent(ended)


class NonFiniteLoss(TrainingError):
    """The loss of a step is NaN or infinite; raised before the optimiser touches the weights."""


def _non_finite_message(value, epoch, step, batch_index, index, checkpoint) -> str:
    images = ", ".join(str(int(i)) for i in index[:8]) + (" ..." if len(index) > 8 else "")
    kept = f"the last good checkpoint is {checkpoint}" if checkpoint.exists() else \
        "no checkpoint was written yet"
    return (f"non-finite loss ({value}) at epoch {epoch + 1}, step {step + 1} (batch "
            f"{batch_index + 1} of the epoch, training images {images}); {kept}. Try a lower --lr "
            "(or --set grad_clip_norm=1.0), a smaller head regularisation, or check those images")


def train_step(model: AttributeModel, ddp_model: nn.Module, optimizer: torch.optim.Optimizer,
               images: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, lr: float,
               config: TrainConfig, context: distributed.DistContext, frozen: bool = False,
               pos_weight: torch.Tensor | None = None):
    """One step on a batch: forward, masked BCE + Omega_smooth, optimiser step, head solver step.

    Returns the (data loss of this rank's share, penalty), detached. Raises NonFiniteLoss
    before any weight changes when the loss is not finite.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
    # Known labels of the global batch; each rank's share is scaled so that DDP's average of
    # the rank gradients is the gradient of the global masked mean.
    known = distributed.all_reduce_sum(mask.sum().float(), context).clamp_min(1.0)
    with autocast(config.amp, context.device):
        logits = ddp_model(images, frozen)
    data_loss = masked_bce(logits.float(), labels, mask, known / context.world_size,
                           config.label_smoothing, pos_weight)
    penalty = model.heads.penalty()
    loss = data_loss + penalty
    if not torch.isfinite(loss):
        raise NonFiniteLoss(loss.item())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip_norm is not None:
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
    optimizer.step()
    # The non-smooth part of Omega (Algorithms 1-2 or the proximal operators), at the heads' lr.
    model.heads.solver_step(lr * config.head_lr_scale)
    distributed.broadcast_module_state(model.heads, context)
    return data_loss.detach(), penalty.detach()


def make_ema(model: AttributeModel, decay: float) -> AveragedModel:
    """An exponential moving average of ``model``'s weights and buffers (``config.ema_decay``),
    updated with ``ema.update_parameters(model)`` after each optimiser step."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def start_from_trained(model: AttributeModel, source: str) -> None:
    """Copy the backbone and heads of the trained model ``source`` (``config.init``) into
    ``model``; the backbone and the attributes must be the same."""
    from mtfap.model import load_model  # the model store, needed only for this start

    trained = load_model(source).model
    names, theirs = list(model.heads.attributes), list(trained.heads.attributes)
    if names != theirs:
        raise ValueError(f"config init: model {source!r} predicts other attributes "
                         f"({len(theirs)}: {', '.join(theirs[:3])}, ...) than this run "
                         f"({len(names)}: {', '.join(names[:3])}, ...)")
    state = {name: tensor.float() for name, tensor in trained.backbone.state_dict().items()}
    try:
        model.backbone.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"config init: the backbone of {source!r} does not fit this run's "
                         f"({exc}); use the same backbone and backbone_args") from None
    model.heads.start_from(*trained.heads.linear_map())


def freeze_layers(model: AttributeModel, count: int) -> list[nn.Module]:
    """Keep the backbone's first ``count`` layers (``config.frozen_layers``) at their weights:
    their parameters stop requiring gradients. Returns those layers (kept in eval mode while
    training)."""
    if count == 0:
        return []
    try:
        layers = model.backbone.ordered_layers()
    except NotImplementedError as exc:
        raise ValueError(f"config frozen_layers: {exc}; use frozen_layers = 0 with this "
                         f"backbone") from None
    if count > len(layers):
        raise ValueError(f"config frozen_layers: the backbone has {len(layers)} layers, got "
                         f"{count}; to train the heads alone use freeze_backbone_epochs")
    for layer in layers[:count]:
        layer.requires_grad_(False)
    return layers[:count]


def _place_model(model: AttributeModel, config: TrainConfig, context) -> AttributeModel:
    """The model on the device, in channels-last layout if asked, with synchronised batch norm
    under DDP on GPUs."""
    model = model.to(context.device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    has_batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if context.enabled and has_batch_norm:
        if context.device.type == "cuda":
            # Batch statistics over the global batch, as one process would compute them.
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif context.is_main:
            warnings.warn("batch-norm statistics are computed per process on CPUs (SyncBatchNorm "
                          "needs GPUs): results differ slightly from a single-process run",
                          stacklevel=2)
    return model


@dataclass
class _Data:
    """The training images, their sampler and the validation loader of this process."""

    train_images: FaceImageDataset
    sampler: DistributedSampler
    val_loader: object
    val_size: int
    per_rank_batch: int
    steps_per_epoch: int
    pos_weight: torch.Tensor | None = None


def _prepare_data(dataset, input_spec, config: TrainConfig, context) -> _Data:
    """Decode every image once into the cache of the whole dataset (each split reads from it);
    the training samples with their sampler, and this rank's shard of the validation split."""
    train_set, val_set = dataset.get_split("train"), dataset.get_split("val")
    on_gpu = context.device.type == "cuda"
    skip = config.skip_bad_images
    build_cache(dataset, input_spec, config.cache_dir, skip_bad_images=skip,
                progress=config.progress and context.is_main)
    train_images = FaceImageDataset(train_set, input_spec, cache_dir=config.cache_dir,
                                    skip_bad_images=skip, progress=False)
    val_shard = np.array_split(np.arange(len(val_set)), context.world_size)[context.rank]
    val_loader = make_loader(val_set.subset(val_shard), input_spec, train=False,
                             batch_size=config.batch_size, cache_dir=config.cache_dir,
                             num_workers=config.num_workers, skip_bad_images=skip,
                             pin_memory=on_gpu) if len(val_shard) else []
    per_rank_batch = config.batch_size // context.world_size
    if per_rank_batch * context.world_size != config.batch_size:
        raise ValueError(f"--batch-size {config.batch_size} must be divisible by the number of "
                         f"processes ({context.world_size})")
    # The same sampler on one process or many: identical data order for the same seed.
    sampler = DistributedSampler(train_images, num_replicas=context.world_size,
                                 rank=context.rank, shuffle=True, seed=config.seed)
    pos_weight = positive_weights(train_set.labels, train_set.mask, config.positive_weight_power)
    if pos_weight is not None:
        pos_weight = pos_weight.to(context.device)
    return _Data(train_images, sampler, val_loader, len(val_set), per_rank_batch,
                 math.ceil(len(sampler) / per_rank_batch), pos_weight)


@dataclass
class _Progress:
    """Where the loop stands: completed epochs, optimiser steps, batches of the current epoch,
    the finished epochs' metrics and the best of them."""

    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0
    history: list = field(default_factory=list)
    best: dict | None = None


def _resume(last_path: Path, config: TrainConfig, model, optimizer, ema, context, data: dict
            ) -> tuple[_Progress, float]:
    """Restore the model, optimiser, weight average, random states and loop position of
    ``last.pt`` (written with the same config, on the same ``data``); returns the position and
    the wall seconds the run had used."""
    checkpoint = load_checkpoint(last_path, map_location=context.device)
    check_same_config(checkpoint, config, last_path)
    check_same_data(checkpoint, data, last_path)
    load_model_state(model, checkpoint["model"], last_path)
    if ema is not None:
        load_model_state(ema.module, checkpoint["ema"], last_path)
        ema.n_averaged.fill_(int(checkpoint["ema_updates"]))
    optimizer.load_state_dict(checkpoint["optimizer"])
    progress = _Progress(checkpoint["epoch"], checkpoint["step"], checkpoint["batch_in_epoch"],
                         checkpoint["history"], checkpoint["best"])
    if progress.batch_in_epoch:
        progress.history = progress.history[:-1]  # that epoch's row is rewritten when it completes
    restore_rng_state(checkpoint["rng"])
    return progress, checkpoint.get("elapsed", 0.0)


def _epoch_loader(data: _Data, config: TrainConfig, progress: _Progress, augmentation, on_gpu):
    """The batches of the current epoch, after those already done (resume inside an epoch)."""
    data.sampler.set_epoch(progress.epoch)
    loader = make_loader(data.train_images, data.train_images.spec, train=True,
                         batch_size=data.per_rank_batch,
                         sampler=SkipFirst(data.sampler,
                                           progress.batch_in_epoch * data.per_rank_batch),
                         seed=config.seed, num_workers=config.num_workers, pin_memory=on_gpu,
                         augmentation=augmentation)
    loader.set_epoch(progress.epoch)  # augmentation draws depend on (seed, epoch, image) only
    # The loader draws its workers' base seed from the global generator; keep that draw off
    # the training stream so that a run resumed inside an epoch draws what the original drew.
    with torch.random.fork_rng(devices=[]):
        return iter(loader)


def train(config: TrainConfig, *, dataset=None, backbone: nn.Module | None = None,
          resume: bool = False, overwrite: bool = False,
          on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train backbone and heads end to end as described in the module docstring.

    Parameters
    ----------
    config : the run's settings; saved as ``config.json`` in ``config.output_dir``, and the
        model's description (``config.model_spec``) as ``model.json``.
    dataset : a ``FaceDataset`` with a train/val split; default ``open_dataset(config.data)``.
    backbone : a ready backbone instead of ``create_backbone(config.backbone, ...)``.
    resume : continue from ``output_dir/last.pt`` (which must come from the same config).
    overwrite : replace the outputs of another run in ``output_dir`` (else such a folder is
        refused, ``mtfap.outputs.prepare_output_folder``).
    on_step : called with the global step number after every optimiser step (hooks, tests).

    Returns
    -------
    TrainResult with the output folder, the per-epoch metrics and the best epoch.
    """
    context = distributed.setup(config.device)
    output_dir = Path(config.output_dir)
    last_path, best_path = output_dir / "last.pt", output_dir / "best.pt"
    if not resume:
        if last_path.exists() and not overwrite:
            raise ValueError(f"{output_dir} already holds a run ({last_path.name}); pass --resume "
                             "to continue it, --overwrite to replace it, or choose another "
                             "--output-dir")
        # Every rank refuses the same folder; only rank 0 writes (and clears) it.
        prepare_output_folder(output_dir, "train", overwrite=overwrite, flag="--output-dir",
                              check_only=not context.is_main)
    elif context.is_main:
        remove_stale_temporaries(output_dir)  # left by a kill in the middle of a write
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    budget = TimeBudget(config.time_budget_minutes, context)

    # --- data and model -------------------------------------------------------------------
    dataset = load_dataset(config, dataset)
    identity = dataset_identity(dataset)
    model_spec = config.model_spec(list(dataset.attributes))
    model = build_model(model_spec, pretrained=config.pretrained and config.init is None,
                        backbone=backbone)
    if config.init is not None and not resume:  # a resumed run reads its own weights
        start_from_trained(model, config.init)
    model = _place_model(model, config, context)
    fixed_layers = freeze_layers(model, config.frozen_layers)
    data = _prepare_data(dataset, model.backbone.input_spec, config, context)
    optimizer = make_optimizer(config, model)
    # The weights the run validates, keeps as best.pt and delivers: their average if asked.
    ema = make_ema(model, config.ema_decay) if config.ema_decay is not None else None
    delivered = model if ema is None else ema.module
    augmentation = config.make_augmentation()
    on_gpu = context.device.type == "cuda"

    # --- resume ---------------------------------------------------------------------------
    at = _Progress()
    if resume:
        at, elapsed = _resume(last_path, config, model, optimizer, ema, context, identity)
        budget = TimeBudget(config.time_budget_minutes, context, elapsed)
    if context.is_main:
        config.save(output_dir / "config.json")
        model_spec.save(output_dir / "model.json")
        write_metrics(output_dir, at.history)  # a kill may have come between checkpoint and metrics
    ddp_model = distributed.wrap_model(model, context,
                                       find_unused=config.freeze_backbone_epochs > 0)

    def checkpoint_now(path):
        if context.is_main:
            save_checkpoint(path, config=config, model=model, optimizer=optimizer,
                            epoch=at.epoch, step=at.step, batch_in_epoch=at.batch_in_epoch,
                            history=at.history, best=at.best, elapsed=budget.local_elapsed(),
                            data=identity, ema=ema)

    # --- the loop -------------------------------------------------------------------------
    total_steps = config.epochs * data.steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    # Under a time budget the step count is not known ahead (the bar shows the minutes left).
    bar = tqdm(total=None if budget.enabled else total_steps, initial=at.step, desc="train",
               unit="step", disable=not (config.progress and context.is_main))
    out_of_time = False
    while at.epoch < config.epochs and at.step < total_steps and not out_of_time:
        batches = _epoch_loader(data, config, at, augmentation, on_gpu)
        frozen = at.epoch < config.freeze_backbone_epochs
        model.train()
        if frozen:
            model.backbone.eval()  # frozen: no gradient and no batch-norm statistics updates
        for layer in fixed_layers:
            layer.eval()
        epoch_loss, epoch_penalty, epoch_images, started = 0.0, 0.0, 0, time.perf_counter()
        budget.start_epoch()
        for images, labels, mask, index in (batch_tensors(b, context.device, config.channels_last)
                                            for b in batches):
            elapsed = budget.elapsed()
            if budget.spent(elapsed):
                out_of_time = True
                break
            lr = learning_rate(config, at.step, data.steps_per_epoch, budget.fraction(elapsed))
            try:
                data_loss, penalty = train_step(model, ddp_model, optimizer, images, labels, mask,
                                                lr, config, context, frozen, data.pos_weight)
            except NonFiniteLoss as exc:
                raise TrainingError(_non_finite_message(exc.args[0], at.epoch, at.step,
                                                        at.batch_in_epoch, index,
                                                        last_path)) from None
            except torch.cuda.OutOfMemoryError:
                raise TrainingError(
                    f"GPU out of memory with a batch of {data.per_rank_batch} images per process "
                    f"at epoch {at.epoch + 1}, step {at.step + 1}; try --batch-size "
                    f"{max(1, config.batch_size // 2)} (or a smaller input size)") from None
            if ema is not None:
                ema.update_parameters(model)
            at.step, at.batch_in_epoch = at.step + 1, at.batch_in_epoch + 1

            # Logging: the global mean loss (the data term is summed over ranks).
            global_loss = distributed.all_reduce_sum(data_loss / context.world_size,
                                                     context) + penalty
            epoch_loss += float(global_loss) * len(images)
            epoch_penalty += float(penalty) * len(images)
            epoch_images += len(images) * context.world_size
            speed = epoch_images / max(time.perf_counter() - started, 1e-9)
            left = {"left": f"{(budget.seconds - elapsed) / 60:.1f}m"} if budget.enabled else {}
            bar.set_postfix(epoch=at.epoch + 1, loss=f"{float(global_loss):.4f}", lr=f"{lr:.2e}",
                            img_s=f"{speed:.0f}", **left)
            bar.update(1)
            if on_step is not None:
                on_step(at.step)
            if at.step >= total_steps:
                break
        if out_of_time and epoch_images == 0:
            break  # the budget ran out at the very start of an epoch: nothing new to evaluate
        finished_epoch = at.batch_in_epoch >= data.steps_per_epoch
        if finished_epoch:
            model.heads.end_epoch()  # Algorithm 3's graph step, once per epoch
            distributed.broadcast_module_state(model.heads, context)

        # --- evaluation, metrics and checkpoints --------------------------------------------
        seconds = time.perf_counter() - started
        budget.end_training(epoch_images / config.batch_size, len(data.val_loader))
        # Evaluation must not move the random streams: a resumed run has not evaluated here.
        with torch.random.fork_rng(devices=[context.device] if on_gpu else []):
            val = _validate(delivered, data, config, context)
            raw = {} if ema is None else \
                {"val_mean_accuracy_raw": _validate(model, data, config, context)["mean_accuracy"]}
        row = {"epoch": at.epoch + 1, "step": at.step, "complete": finished_epoch, "lr": lr,
               "train_loss": epoch_loss * context.world_size / max(epoch_images, 1),
               "train_penalty": epoch_penalty * context.world_size / max(epoch_images, 1),
               "val_mean_accuracy": val["mean_accuracy"],
               "val_mean_balanced_accuracy": val["mean_balanced_accuracy"], **raw,
               "seconds": seconds, "images_per_second": epoch_images / max(seconds, 1e-9),
               "elapsed_minutes": budget.elapsed() / 60}
        at.history.append(row)
        improved = at.best is None or val["mean_accuracy"] > at.best["val_mean_accuracy"]
        if finished_epoch:
            at.epoch, at.batch_in_epoch = at.epoch + 1, 0
        if improved:
            at.best = dict(row)
        # The checkpoint first: the metrics written next describe it, never a later state.
        checkpoint_now(last_path)
        if improved:
            checkpoint_now(best_path)
        if context.is_main:
            write_metrics(output_dir, at.history)
            write_json(output_dir / "heads_summary.json", model.heads.describe())  # ranks, graph
            bar.write(f"epoch {row['epoch']}: loss {row['train_loss']:.4f}, val mean accuracy "
                      f"{100 * row['val_mean_accuracy']:.2f} %, "
                      f"{row['images_per_second']:.0f} img/s")
        distributed.barrier(context)
        out_of_time = budget.end_epoch() or out_of_time
    bar.close()
    distributed.teardown(context)
    return TrainResult(output_dir, at.history, at.best, at.step, context.is_main)
