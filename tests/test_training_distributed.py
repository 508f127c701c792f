"""Two CPU processes (gloo, DistributedDataParallel) against one process with the same global batch.

The backbone here has no batch normalisation: batch-norm statistics are per process under DDP
(SyncBatchNorm, which mtfap switches on for GPUs, needs CUDA), so a BN backbone on two CPU
processes legitimately differs from one process. Everything else (data order, augmentation,
loss normalisation over the global batch, the head solver steps, the evaluation) must agree.
"""

import os
import socket
from dataclasses import replace

import torch
import torch.multiprocessing as mp
from clocks import StepClock
from torch import nn

from mtfap.backbones.base import Backbone, InputSpec
from mtfap.model.checkpoint import load_checkpoint
from mtfap.training.config import TrainConfig
from mtfap.training.trainer import TimeBudget, train

# float32 sums over a batch split in two are added in another order: weights may differ in the
# last bits, which a few steps of AdamW do not amplify beyond this.
TOLERANCE = 1e-5


class NormFreeCNN(Backbone):
    """Two convolutions and ReLUs: a backbone without batch statistics."""

    input_spec = InputSpec(size=(32, 32))
    feature_dim = 16

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                    nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())

    def forward_features(self, x):
        return self.layers(x)


def make_config(output_dir, cache_dir) -> TrainConfig:
    # float32 (amp "auto" takes bf16 on CPUs with AMX or AVX512-BF16, far coarser than TOLERANCE)
    return TrainConfig(data="synthetic", heads="lowrank_sparse", optimizer="adamw", lr=3e-3,
                       epochs=2, batch_size=10, seed=3, device="cpu", progress=False,
                       amp="off", output_dir=str(output_dir), cache_dir=str(cache_dir))


def run_rank(rank, world_size, port, output_dir, cache_dir):
    """What torchrun would start: the environment of one rank, then the ordinary train()."""
    from mtfap.data.synthetic import load_synthetic
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.manual_seed(0)
    train(make_config(output_dir, cache_dir), dataset=load_synthetic(n=60, size=32, seed=0),
          backbone=NormFreeCNN())


BUDGET_MINUTES = 10 / 60  # 10 simulated seconds


def run_rank_with_budget(rank, world_size, port, output_dir, cache_dir):
    """A rank whose clock runs 1 s per step on rank 0 and 3 s per step on rank 1."""
    from mtfap.data.synthetic import load_synthetic
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    clock = StepClock(1.0 if rank == 0 else 3.0)
    TimeBudget.clock = staticmethod(clock)
    torch.manual_seed(0)
    config = replace(make_config(output_dir, cache_dir), epochs=100,
                     time_budget_minutes=BUDGET_MINUTES)
    result = train(config, dataset=load_synthetic(n=60, size=32, seed=0), backbone=NormFreeCNN(),
                   on_step=clock.step)
    (output_dir.parent / f"steps_rank{rank}").write_text(str(result.steps))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    from mtfap.data.synthetic import load_synthetic
    faces = load_synthetic(n=60, size=32, seed=0)
    cache = tmp_path / "cache"
    torch.manual_seed(0)
    single = train(make_config(tmp_path / "single", cache), dataset=faces, backbone=NormFreeCNN())

    mp.spawn(run_rank, args=(2, free_port(), tmp_path / "ddp", cache), nprocs=2)
    one = load_checkpoint(tmp_path / "single" / "last.pt")
    two = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert one["step"] == two["step"] == single.steps == 10
    for name, value in one["model"].items():
        if not isinstance(value, torch.Tensor):  # a module's extra state (solver bookkeeping)
            continue
        difference = (value.double() - two["model"][name].double()).abs().max().item()
        assert difference <= TOLERANCE, f"{name} differs by {difference}"
    for a, b in zip(one["history"], two["history"]):
        assert abs(a["train_loss"] - b["train_loss"]) <= TOLERANCE
        assert abs(a["val_mean_accuracy"] - b["val_mean_accuracy"]) <= TOLERANCE
    # Only rank 0 writes: one set of files, no leftovers from the other rank.
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == \
        ["best.pt", "config.json", "heads_summary.json", "last.pt", "metrics.csv", "metrics.json",
         "metrics.png", "model.json"]


def test_batch_must_split_evenly_over_processes(tmp_path, monkeypatch):
    import pytest

    from mtfap.data.synthetic import load_synthetic
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda *a, **k: None)
    with pytest.raises(ValueError, match="batch-size 10 must be divisible by the number of "
                                         r"processes \(3\)"):
        train(replace(make_config(tmp_path / "run", tmp_path / "cache")),
              dataset=load_synthetic(n=60, size=32, seed=0), backbone=NormFreeCNN())


def test_a_time_budget_stops_every_process_at_rank_zeros_step(tmp_path, monkeypatch):
    """Rank 1's clock runs three times as fast as rank 0's: on its own it would stop after a
    third of the steps and leave rank 0 waiting in a collective. Rank 0's clock decides for
    both, so they stop together, where one process with rank 0's clock stops."""
    from mtfap.data.synthetic import load_synthetic
    cache = tmp_path / "cache"
    clock = StepClock(1.0)
    monkeypatch.setattr(TimeBudget, "clock", staticmethod(clock))
    torch.manual_seed(0)
    config = replace(make_config(tmp_path / "single", cache), epochs=100,
                     time_budget_minutes=BUDGET_MINUTES)
    single = train(config, dataset=load_synthetic(n=60, size=32, seed=0), backbone=NormFreeCNN(),
                   on_step=clock.step)
    assert 5 <= single.steps < 10  # stopped by the budget, not by the 100 epochs

    mp.spawn(run_rank_with_budget, args=(2, free_port(), tmp_path / "ddp", cache), nprocs=2)
    steps = [int((tmp_path / f"steps_rank{r}").read_text()) for r in (0, 1)]
    assert steps == [single.steps, single.steps]
    one = load_checkpoint(tmp_path / "single" / "last.pt")["model"]
    two = load_checkpoint(tmp_path / "ddp" / "last.pt")["model"]
    for name, value in one.items():
        if isinstance(value, torch.Tensor):
            difference = (value.double() - two[name].double()).abs().max().item()
            assert difference <= TOLERANCE, f"{name} differs by {difference}"
