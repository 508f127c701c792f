"""Running a model on batches: test-time views, autocast, and a pass over a loader."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import numpy as np
import torch
from tqdm.auto import tqdm

from mtfap.data.transforms import centre_zoom


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast speeds ``device`` up: GPUs that support bf16, and CPUs with AMX
    tiles (Xeon 4th generation and later) or AVX512-BF16 instructions (AMD Zen 4 and later).
    Measured on a training step of dlib's ResNet (benchmarks/bench_finetune_speed.py,
    docs/BENCHMARKS.md): 1.7x faster than float32 with AMX, 2.0x with AVX512-BF16 (an AMD
    EPYC); elsewhere bf16 is emulated, and it ran 14.7x slower on an AVX2 AMD EPYC."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # torch >= 2.3
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)
    return False


def autocast(amp: str, device: torch.device):
    """bf16 autocast where it is fast (``amp="auto"``, :func:`fast_bf16`) or wherever
    ``amp="bf16"`` asks for it."""
    use = amp == "bf16" or (amp == "auto" and fast_bf16(device))
    return torch.autocast(device.type, dtype=torch.bfloat16) if use else nullcontext()


def view_logits(model: torch.nn.Module, images: torch.Tensor, *, scales: Sequence[float] = (1.0,),
                flip: bool = False, channels_last: bool = False, amp: str = "off"
                ) -> torch.Tensor:
    """The logits of normalised ``images`` (N, 3, H, W) averaged over their test-time views.

    The views are the centre zooms to the sides ``scales`` (fractions of the image side,
    ``mtfap.data.transforms.centre_zoom``; 1 = the image as it is) and, with ``flip``, their
    mirror images too.
    """
    if not scales:
        raise ValueError("scales must name at least one zoom side, e.g. (1.0,)")
    logits = 0.0
    for side in scales:
        view = centre_zoom(images, side)
        if channels_last:
            view = view.contiguous(memory_format=torch.channels_last)
        with autocast(amp, images.device):
            logits = logits + model(view).float()
            if flip:
                logits = logits + model(view.flip(-1)).float()
    return logits / (len(scales) * (2 if flip else 1))


@torch.no_grad()
def predict_loader(model: torch.nn.Module, loader, *, device: torch.device,
                   scales: Sequence[float] = (1.0,), flip: bool = False,
                   channels_last: bool = False, amp: str = "off", progress: bool = True):
    """Sigmoid scores (n, k) with the labels and mask of the images, in loader order."""
    model.eval()
    k = len(model.heads.attributes)
    scores, labels, mask = [np.zeros((0, k), np.float32)], [np.zeros((0, k), np.float32)], \
        [np.zeros((0, k), bool)]  # a rank's shard of a tiny split may be empty
    for batch in tqdm(loader, desc="eval", leave=False, disable=not progress):
        images = batch.images.to(device, non_blocking=True)
        logits = view_logits(model, images, scales=scales, flip=flip,
                             channels_last=channels_last, amp=amp)
        scores.append(torch.sigmoid(logits).cpu().numpy())
        labels.append(batch.labels.numpy())
        mask.append(batch.mask.numpy())
    return tuple(np.concatenate(parts) for parts in (scores, labels, mask))
