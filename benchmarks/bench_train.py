"""Training throughput: mtfap's step with each head method against a plain PyTorch step.

Both loops see the same backbone (same initial weights), the same batches and the same
optimiser. The plain loop is the textbook one: backbone, one ``nn.Linear``, mean BCE, SGD step.
mtfap's loop is ``mtfap.training.trainer.train_step``: masked BCE normalised by the known labels,
``heads.penalty()``, the optimiser step and ``heads.solver_step`` (proximal, SVD or SMIDAS
updates). The graph step of Algorithm 3 runs once per epoch; it is timed on its own and
amortised over the steps of one epoch of ``--epoch-images`` images.

Methods are timed step by step in interleaved rounds (each round runs one step of every method
on the same batch, in a rotating order) so that drifts of a shared machine hit all of them
alike; the table shows the median images per second and per CPU-second and their ratios to
plain.

    python benchmarks/bench_train.py --data /work/shared/data/celeba --backbone compact --size 96
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mtfap.backbones import create_backbone
from mtfap.data import open_dataset
from mtfap.data.loader import make_loader
from mtfap.training.config import TrainConfig
from mtfap.training.distributed import DistContext
from mtfap.model.network import AttributeModel, build_model
from mtfap.training.trainer import make_optimizer, train_step

# "method:solver" picks a solver of the low-rank + sparse heads (proximal by default).
METHODS = ("plain", "independent", "lowrank_sparse", "lowrank_sparse:paper", "graph")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", default="synthetic",
                        help="dataset path, or 'synthetic' for the generated faces")
    parser.add_argument("--backbone", default="compact")
    parser.add_argument("--size", type=int, default=96, help="input size (compact backbone only)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=40,
                        help="timed steps per method, interleaved one by one")
    parser.add_argument("--batches", type=int, default=4, help="distinct batches, used in turn")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--epoch-images", type=int, default=37540,
                        help="images per epoch, to amortise the once-per-epoch graph step "
                             "(default: the shared CelebA subset's training split)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--cache-dir", default=None, help="decoded-image cache folder")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    return parser.parse_args(argv)


def make_batches(args, spec):
    """``batches`` training batches (augmented, normalised) held in memory: no decoding in the
    timings."""
    dataset = open_dataset(args.data).get_split("train")
    dataset = dataset.subset(range(min(len(dataset), args.batch_size * args.batches)))
    loader = make_loader(dataset, spec, train=True, batch_size=args.batch_size,
                         cache_dir=args.cache_dir, seed=0)
    return list(loader), list(dataset.attributes)


class PlainModel(nn.Module):
    def __init__(self, backbone, k):
        super().__init__()
        self.backbone, self.head = backbone, nn.Linear(backbone.feature_dim, k)

    def forward(self, images):
        return self.head(self.backbone(images))


def make_runner(method, base_backbone, attributes, config):
    """A function running one training step on a batch, for ``method``."""
    backbone = copy.deepcopy(base_backbone)
    context = DistContext()
    if method == "plain":
        model = PlainModel(backbone, len(attributes))
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay)

        def step(batch):
            loss = F.binary_cross_entropy_with_logits(model(batch.images), batch.labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return model, step
    name, _, solver = method.partition(":")
    method_config = TrainConfig(**{**config.to_dict(), "heads": name,
                                   "heads_params": {"solver": solver} if solver else {}})
    model: AttributeModel = build_model(method_config.model_spec(attributes), backbone=backbone)
    optimizer = make_optimizer(method_config, model)

    def step(batch):
        train_step(model, model, optimizer, batch.images, batch.labels, batch.mask,
                   method_config.lr, method_config, context)
    return model, step


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    backbone_args = {"input_size": args.size} if args.backbone == "compact" else {}
    base = create_backbone(args.backbone, **backbone_args)
    batches, attributes = make_batches(args, base.input_spec)
    config = TrainConfig(data=args.data, backbone=args.backbone, lr=1e-3, device="cpu", amp="off")
    methods = [m.strip() for m in args.methods.split(",")]
    runners = {m: make_runner(m, base, attributes, config) for m in methods}
    for model, step in runners.values():  # warm-up: allocations, first-call overheads
        model.train()
        step(batches[0])

    load_before = os.getloadavg()[0]
    # One step of every method per round, in a rotating order, on the same batch: a drift of the
    # shared machine hits all methods alike. Wall-clock speed, and speed per CPU-second of this
    # process (all its threads), which other jobs disturb less.
    speeds, cpu_speeds = {m: [] for m in methods}, {m: [] for m in methods}
    for round_index in range(args.rounds):
        batch = batches[round_index % len(batches)]
        shift = round_index % len(methods)
        for method in methods[shift:] + methods[:shift]:
            started, cpu_started = time.perf_counter(), time.process_time()
            runners[method][1](batch)
            speeds[method].append(args.batch_size / (time.perf_counter() - started))
            cpu_speeds[method].append(args.batch_size / (time.process_time() - cpu_started))

    # The head solver step alone (it reads the gradients the last step left), timed directly:
    # its share of a step is the overhead that the step timings above resolve only roughly.
    solver_ms = {}
    for method in methods:
        if method != "plain":
            heads = runners[method][0].heads
            times = []
            for _ in range(20):
                started = time.perf_counter()
                heads.solver_step(config.lr)
                times.append(1000 * (time.perf_counter() - started))
            solver_ms[method] = statistics.median(times)

    # Once-per-epoch work (the graph step of Algorithm 3), amortised over one epoch's steps.
    steps_per_epoch = -(-args.epoch_images // args.batch_size)
    epoch_seconds = {}
    for method in methods:
        if method == "plain":
            continue
        heads = runners[method][0].heads
        started = time.perf_counter()
        heads.end_epoch()
        epoch_seconds[method] = time.perf_counter() - started

    def with_epoch_step(method, speed):
        """Images/s once the once-per-epoch work is spread over the epoch's steps."""
        per_step = args.batch_size / speed + epoch_seconds.get(method, 0.0) / steps_per_epoch
        return args.batch_size / per_step

    plain = {"wall": statistics.median(speeds["plain"]),
             "cpu": statistics.median(cpu_speeds["plain"])} if "plain" in speeds else None
    rows = []
    for method in methods:
        wall = with_epoch_step(method, statistics.median(speeds[method]))
        cpu = with_epoch_step(method, statistics.median(cpu_speeds[method]))
        rows.append({"method": method,
                     "images_per_second": round(statistics.median(speeds[method]), 2),
                     "quartiles": [round(q, 2) for q in statistics.quantiles(speeds[method], n=4)],
                     "images_per_cpu_second": round(statistics.median(cpu_speeds[method]), 2),
                     "cpu_quartiles": [round(q, 2) for q in
                                       statistics.quantiles(cpu_speeds[method], n=4)],
                     "solver_step_ms": round(solver_ms.get(method, 0.0), 3),
                     "end_epoch_seconds": round(epoch_seconds.get(method, 0.0), 4),
                     "images_per_second_with_epoch_step": round(wall, 2),
                     "images_per_cpu_second_with_epoch_step": round(cpu, 2),
                     "ratio_to_plain": round(wall / plain["wall"], 4) if plain else None,
                     "cpu_ratio_to_plain": round(cpu / plain["cpu"], 4) if plain else None})
    result = {"backbone": args.backbone, "input_size": list(base.input_spec.size),
              "batch_size": args.batch_size, "rounds": args.rounds,
              "data": args.data, "threads": args.threads, "torch": torch.__version__,
              "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
              "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
              "steps_per_epoch": steps_per_epoch, "results": rows}
    print(f"{'method':<22} {'img/s':>8} {'vs plain':>9} {'img/CPU-s':>10} {'vs plain':>9} "
          f"{'solver ms':>10} {'epoch-step s':>13}   (medians, epoch step included)")
    for row in rows:
        ratios = [f"{row[key]:.3f}" if row[key] else "-" for key in ("ratio_to_plain",
                                                                      "cpu_ratio_to_plain")]
        print(f"{row['method']:<22} {row['images_per_second_with_epoch_step']:>8.1f} "
              f"{ratios[0]:>9} {row['images_per_cpu_second_with_epoch_step']:>10.1f} "
              f"{ratios[1]:>9} {row['solver_step_ms']:>10.2f} {row['end_epoch_seconds']:>13.3f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
