"""Fine-tuning speed of dlib's face ResNet: affine layers kept or fused, NCHW or channels-last,
float32 or bf16 autocast.

One training step (forward, mean-square loss on the GAP features, backward, AdamW step) on a
batch of random 150x150 images, for five variants of the same pretrained network:

- ``plain``: the network as read from dlib's file (convolution, then a per-channel affine);
- ``fused``: ``fuse_affine=True`` (the affine layers folded into the convolutions);
- ``channels_last``: the plain network and its input in NHWC layout;
- ``fused+channels_last``: both;
- ``fused+channels_last+bf16``: both, under ``torch.autocast("cpu", torch.bfloat16)`` (the
  config's ``amp = "bf16"``; fast on CPUs with AMX or AVX512-BF16, slow elsewhere);
- with ``--frozen-layers N ...``, also ``fused+channels_last+frozen N``: float32, the first N of
  the network's 15 layers (the stem, then the residual blocks) kept fixed, as the config's
  ``frozen_layers = N`` trains it (no gradient through them);
- with ``--compile``, also ``fused+channels_last+bf16+compile``: the same network compiled with
  ``torch.compile`` (inductor; the config's ``compile = true``); its compile time is printed.

The variants are timed in interleaved rounds (one step of each per round, in a rotating order)
so that drifts of a shared machine hit them alike; the table gives the median images/s over the
rounds and the ratio to ``plain``. The features of the variants are checked to agree first.

    python benchmarks/bench_finetune_speed.py --rounds 6 --out bench_finetune_speed.json
    python benchmarks/bench_finetune_speed.py --rounds 6 --frozen-layers 4 8 11
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from mtfap.backbones import create_backbone


def variants(compiled: bool = False, frozen: tuple[int, ...] = ()):
    """name -> (model, channels_last, bf16)."""
    def fused_nhwc():
        return (create_backbone("dlib_face_resnet", pretrained=True, fuse_affine=True)
                .to(memory_format=torch.channels_last))
    models = {
        "plain": (create_backbone("dlib_face_resnet", pretrained=True), False, False),
        "fused": (create_backbone("dlib_face_resnet", pretrained=True, fuse_affine=True),
                  False, False),
        "channels_last": (create_backbone("dlib_face_resnet", pretrained=True)
                          .to(memory_format=torch.channels_last), True, False),
        "fused+channels_last": (fused_nhwc(), True, False),
        "fused+channels_last+bf16": (fused_nhwc(), True, True),
    }
    for count in frozen:
        model = fused_nhwc()
        for layer in model.ordered_layers()[:count]:
            layer.requires_grad_(False)
        models[f"fused+channels_last+frozen {count}"] = (model, True, False)
    if compiled:
        model = fused_nhwc()
        model.compile()
        models["fused+channels_last+bf16+compile"] = (model, True, True)
    return models


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds (default: 6)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", action="store_true",
                        help="add a torch.compile variant (compiling takes minutes on 2 cores)")
    parser.add_argument("--frozen-layers", type=int, nargs="*", default=[], metavar="N",
                        help="add float32 variants with the first N of the 15 layers fixed")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    x = torch.randn(args.batch_size, 3, 150, 150)
    if any(not 1 <= n <= 15 for n in args.frozen_layers):
        parser.error(f"--frozen-layers: each N must be 1 to 15, got {args.frozen_layers}")
    models = variants(args.compile, tuple(args.frozen_layers))
    with torch.no_grad():
        reference = models["plain"][0].eval()(x)
        for name, (model, channels_last, bf16) in models.items():
            inputs = x.contiguous(memory_format=torch.channels_last) if channels_last else x
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                features = model.eval()(inputs).float()
            error = (features - reference).abs().max().item()
            # bf16 keeps 8 significant bits: its features agree to about 1 %, not 0.1 %.
            if error > (3e-2 if bf16 else 1e-3) * reference.abs().max().item():
                raise SystemExit(f"{name}: features differ from plain by {error}")
    steps = {}
    for name, (model, channels_last, bf16) in models.items():
        model.train()
        inputs = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                      lr=1e-5)

        def step(model=model, inputs=inputs, optimizer=optimizer, bf16=bf16):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(inputs).float().square().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        started = time.perf_counter()
        step()  # warm-up (and the compilation of a compiled variant)
        if name.endswith("compile"):
            print(f"{name}: first step (compilation) {time.perf_counter() - started:.0f} s")
        steps[name] = step
    names, seconds = list(steps), {name: [] for name in steps}
    for round_index in range(args.rounds):
        for name in names[round_index % len(names):] + names[:round_index % len(names)]:
            started = time.perf_counter()
            steps[name]()
            seconds[name].append(time.perf_counter() - started)
    speed = {name: args.batch_size / statistics.median(s) for name, s in seconds.items()}
    print(f"dlib_face_resnet training step, batch {args.batch_size}, 150 px, median of "
          f"{args.rounds} interleaved rounds, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'variant':<33} {'images/s':>9} {'vs plain':>9}")
    for name in names:
        print(f"{name:<33} {speed[name]:>9.1f} {speed[name] / speed['plain']:>8.2f}x")
    result = {"images_per_second": speed, "batch_size": args.batch_size, "rounds": args.rounds,
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "machine": platform.machine(), "cpus": os.cpu_count(),
              "load_average": os.getloadavg()}
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=2)
    return result


if __name__ == "__main__":
    main()
