"""Training on several processes (one machine or several) with DistributedDataParallel.

Launch with ``torchrun --nproc_per_node N -m mtfap train ...`` (add ``--nnodes`` and a
rendezvous for several machines). torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and
the master address; :func:`setup` reads them, picks gloo on CPUs and NCCL on GPUs and gives one
GPU per process. Without those variables everything runs in one process.

What stays identical on every rank:
- the data order: every process (also a single one) draws from a ``DistributedSampler`` with
  the same seed, so N processes with batch B/N see exactly the batches one process with batch
  B sees;
- the gradient: the masked cross-entropy is normalised by the number of known labels in the
  *global* batch (one all-reduce of a count), so DDP's average equals the single-process loss;
- the heads: the structured solver steps (SVD, SMIDAS, proximal) and the graph step run on
  every rank, then rank 0's head state is broadcast so that no rank can drift (a solver that
  draws random probing vectors would otherwise diverge).
Logging and checkpoints happen on rank 0 only.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> the local GPU when there is one, else the CPU; ``cuda`` without a GPU raises."""
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA GPU is visible to torch; use --device cpu")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def setup(device: str = "auto") -> DistContext:
    """Join the process group torchrun prepared (if any) and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if chosen.type == "cuda":
            torch.cuda.set_device(chosen)
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return DistContext(rank, world_size, local_rank, chosen)


def teardown(context: DistContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: torch.nn.Module, context: DistContext, find_unused: bool) -> torch.nn.Module:
    """DDP on several processes (``find_unused`` when part of the model may get no gradient,
    e.g. a frozen backbone); the model itself on one."""
    if not context.enabled:
        return model
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused)


def all_reduce_sum(value: torch.Tensor, context: DistContext) -> torch.Tensor:
    """The sum of ``value`` over all processes (``value`` itself on one)."""
    if context.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def broadcast_float(value: float, context: DistContext) -> float:
    """Rank 0's ``value`` on every process (``value`` itself on one)."""
    if not context.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=context.device)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


def broadcast_module_state(module: torch.nn.Module, context: DistContext) -> None:
    """Copy rank 0's parameters and buffers of ``module`` into every other rank, in place."""
    if not context.enabled:
        return
    with torch.no_grad():
        for value in module.state_dict().values():
            if isinstance(value, torch.Tensor):  # not a module's non-tensor "extra state"
                dist.broadcast(value, src=0)


def gather_arrays(array, context: DistContext):
    """Concatenate each rank's numpy array in rank order (on every rank)."""
    import numpy as np
    if not context.enabled:
        return array
    parts = [None] * context.world_size
    dist.all_gather_object(parts, array)
    return np.concatenate(parts)


def barrier(context: DistContext) -> None:
    if context.enabled:
        dist.barrier()
