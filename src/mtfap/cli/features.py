"""``mtfap features``: write the frozen GAP features of a dataset once, for ``mtfap fit-heads``.

All splits go into one ``.npz`` (``mtfap.data.features.FeatureSet``) with the labels, mask,
split and identities. The file records how it was made (backbone, weights, flip, the dataset's
labels, split, identities and a fingerprint of its images); running the same command again
finds it up to date and returns at once, unless any of these changed (``--force`` redoes it).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mtfap.cli.arguments import add_image_arguments, count, pixel_limit


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "features", help="compute frozen backbone features of a dataset (for fit-heads)",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("data", help="dataset path (CelebA folder, LFW folder, image table, ...)")
    parser.add_argument("--backbone", default="dlib_face_resnet", help="backbone name")
    parser.add_argument("--weights", default="package",
                        help="'package' (the weights shipped in an installed package), 'none' "
                             "(random init) or a local weights file")
    parser.add_argument("--out", type=Path, required=True, help="output .npz file")
    parser.add_argument("--flip", action="store_true",
                        help="average the features of each image and its mirror (2x the time)")
    parser.add_argument("--batch-size", type=count(1), default=64)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--num-workers", type=count(0), default=0,
                        help="DataLoader worker processes")
    parser.add_argument("--cache-dir", default=None,
                        help="decoded-image cache folder (default: $MTFAP_CACHE or ~/.cache/mtfap)")
    parser.add_argument("--force", action="store_true",
                        help="recompute even if --out is up to date")
    add_image_arguments(parser)
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bar")
    parser.set_defaults(func=run)


def run(args) -> int:
    from mtfap.experiments.features import ensure_features
    from mtfap.outputs import prepare_output_file
    from mtfap.training.distributed import resolve_device

    prepare_output_file(args.out, suffix=".npz")
    started = time.perf_counter()
    with pixel_limit(args.max_pixels):
        features, computed = ensure_features(
            args.data, args.out, backbone=args.backbone, weights=args.weights, flip=args.flip,
            batch_size=args.batch_size, device=resolve_device(args.device),
            cache_dir=args.cache_dir, num_workers=args.num_workers, force=args.force,
            progress=args.progress, skip_bad_images=args.skip_bad_images)
    if not computed:
        print(f"{args.out} is up to date ({len(features)} images; --force recomputes it)")
        return 0
    seconds = time.perf_counter() - started
    print(json.dumps({"out": str(args.out), "images": len(features),
                      "feature_dim": int(features.X.shape[1]), "seconds": round(seconds, 1),
                      "images_per_second": round(len(features) / seconds, 1)}))
    return 0
