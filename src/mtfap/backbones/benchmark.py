"""Inference speed of the registered backbones on this machine.

    python -m mtfap.backbones.benchmark --batch 64 --threads 2 --dlib --json speeds.json

Each backbone runs ``forward`` (feature map + GAP) on a random batch at its input size; the
median over ``--repeats`` timed batches (after one warm-up batch) is reported in images/s.
``--dlib`` also times dlib's own CPU build on the same face-descriptor task (150x150 chips to
128-D descriptors) beside the port, when dlib and its weights are installed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mtfap.backbones import create_backbone, list_backbones


def _rates(run, batch: int, repeats: int) -> dict:
    """Speed of ``run()`` on a batch: one warm-up call, then the median of ``repeats`` calls.

    ``images_per_s`` is per wall-clock second; ``images_per_cpu_s`` per second of this process's
    CPU time (all its threads), which other processes on a busy machine disturb far less.
    """
    run()
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        run()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return {"images_per_s": batch / statistics.median(wall),
            "images_per_cpu_s": batch / statistics.median(cpu)}


def time_backbone(name: str, batch: int, repeats: int) -> dict:
    """images/s of ``forward`` for backbone ``name`` at its declared input size."""
    model = create_backbone(name).eval()
    x = torch.randn(batch, 3, *model.input_spec.size)
    with torch.inference_mode():
        rates = _rates(lambda: model(x), batch, repeats)
    return {"backbone": name, "input": list(model.input_spec.size),
            "feature_dim": model.feature_dim,
            "parameters": sum(p.numel() for p in model.parameters()), **rates}


def time_dlib_descriptor(batch: int, repeats: int) -> list[dict]:
    """Face descriptors of 150x150 chips: dlib's CPU build and the port, on the same batch."""
    import dlib  # optional: only for this comparison

    from mtfap.backbones.dlib_face import packaged_weights_path
    path = packaged_weights_path()
    chips = np.random.default_rng(0).integers(0, 256, (batch, 150, 150, 3), dtype=np.uint8)
    reference = dlib.face_recognition_model_v1(str(path))
    dlib_rates = _rates(lambda: reference.compute_face_descriptor(list(chips)), batch, repeats)
    model = create_backbone("dlib_face_resnet", pretrained=True).eval()
    spec = model.input_spec
    x = torch.from_numpy(chips).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        port_rates = _rates(lambda: model.descriptor(x), batch, repeats)
    return [{"backbone": "dlib (dlib-bin CPU build)", "task": "128-D descriptor", **dlib_rates},
            {"backbone": "dlib_face_resnet (this port)", "task": "128-D descriptor", **port_rates}]


def _line(row: dict) -> str:
    return (f"{row['backbone']:<30} {row['images_per_s']:8.1f} images/s "
            f"{row['images_per_cpu_s']:8.1f} images/CPU-s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mtfap.backbones.benchmark", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=None,
                        help="backbones to time (default: all registered)")
    parser.add_argument("--batch", type=int, default=64, help="images per batch")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed batches per backbone")
    parser.add_argument("--dlib", action="store_true",
                        help="also time dlib's own face descriptor against the port")
    parser.add_argument("--json", type=Path, default=None, help="write the results to this file")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeats < 1 or args.threads < 1:
        parser.error("--batch, --repeats and --threads must be positive")
    names = args.backbones or list_backbones()
    unknown = sorted(set(names) - set(list_backbones()))
    if unknown:
        parser.error(f"unknown backbone(s) {', '.join(unknown)}; "
                     f"known: {', '.join(list_backbones())}")
    torch.set_num_threads(args.threads)

    results = []
    for name in names:
        results.append(time_backbone(name, args.batch, args.repeats))
        print(_line(results[-1]), flush=True)
    if args.dlib:
        for row in time_dlib_descriptor(args.batch, args.repeats):
            results.append(row)
            print(_line(row) + " (descriptor)", flush=True)
    if args.json:
        payload = {"batch": args.batch, "threads": args.threads, "repeats": args.repeats,
                   "torch": torch.__version__, "cpu_count": os.cpu_count(),
                   # other processes on the machine slow every figure; say how busy it was
                   "load_average_1min": os.getloadavg()[0], "results": results}
        with tempfile.NamedTemporaryFile("w", dir=args.json.parent, delete=False,
                                         suffix=".tmp") as handle:
            json.dump(payload, handle, indent=2)
        os.replace(handle.name, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
