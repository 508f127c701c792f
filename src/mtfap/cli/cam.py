"""``mtfap cam``: class activation maps of chosen attributes overlaid on faces (Sec. 5.3, Fig. 8).

For attribute c the map is A_c(x, y) = sum_k w_kc g_k(x, y) over the backbone's last feature
maps g_k (eq. 15-16); its mean over the map plus the bias is the model's logit, so red areas
are where the evidence for the attribute lies. Maps are upsampled bilinearly to the network's
input and drawn over the face as the network saw it (centre crop, resize).

Images are files (IMAGE ...) or, with --data, faces picked from a dataset split (for example
CelebA's test split, read in place from its zip). Writes one PNG per image, or with --grid a
single grid of images x attributes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mtfap.cli.arguments import (
    add_image_arguments,
    add_overwrite_argument,
    count,
    pixel_limit,
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "cam", help="class activation maps of attributes overlaid on face images",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("run", type=Path, help="run folder (mtfap train or mtfap fit-heads)")
    parser.add_argument("images", nargs="*", type=Path, help="image files")
    parser.add_argument("--attr", nargs="+", required=True, metavar="NAME",
                        help="attributes to map, e.g. --attr Smiling Eyeglasses")
    parser.add_argument("--data", help="take faces from this dataset instead of image files")
    parser.add_argument("--split", choices=("train", "val", "test"), default="test",
                        help="with --data: the split to pick faces from")
    parser.add_argument("--count", type=count(1), default=4, help="with --data: number of faces")
    parser.add_argument("--seed", type=count(0), default=0, help="with --data: which faces are picked")
    parser.add_argument("--grid", action="store_true",
                        help="one grid of images x attributes instead of one PNG per image")
    parser.add_argument("--alpha", type=float, default=0.5, help="opacity of the map overlay")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best",
                        help="train runs: best validation epoch or the last one")
    parser.add_argument("--out", type=Path, help="output folder (default: RUN/cam)")
    parser.add_argument("--svg", action="store_true", help="also write SVG figures")
    add_overwrite_argument(parser)
    add_image_arguments(parser, skip=False)
    parser.set_defaults(func=run)


def _images(args):
    """(names, PIL images) from the files or from the dataset split, decoded as every image is
    (``mtfap.data.decode``: the pixel limit, EXIF orientation, corrupt files named)."""
    import numpy as np

    from mtfap.data.decode import max_pixels_limit, read_image_file
    from mtfap.data.images import check_image_size

    if args.data is not None:
        if args.images:
            raise ValueError("give image files or --data, not both")
        from mtfap.data import open_dataset
        dataset = open_dataset(args.data)
        rows = dataset.split_indices(args.split) if dataset.split is not None \
            else np.arange(len(dataset))
        if len(rows) == 0:
            raise ValueError(f"split {args.split!r} of {args.data} has no images")
        picked = np.random.default_rng(args.seed).choice(rows, min(args.count, len(rows)),
                                                         replace=False)
        keys = [dataset.keys[i] for i in sorted(picked)]
        return [Path(k).name for k in keys], [dataset.source.load(k) for k in keys]
    if not args.images:
        raise ValueError("give image files, or --data PATH to pick faces from a dataset")
    images = []
    for path in args.images:
        if path.is_file():  # a missing file: read_image_file names it
            check_image_size(path.stat().st_size, path.name, path, max_pixels_limit())
        images.append(read_image_file(path))
    return [p.name for p in args.images], images


def run(args) -> int:
    with pixel_limit(args.max_pixels):
        return _cam(args)


def _cam(args) -> int:
    from mtfap.applications.cam import attribute_maps, plot_cam_grid
    from mtfap.attributes import resolve_attributes
    from mtfap.model.runs import open_run
    from mtfap.outputs import prepare_output_folder

    if not 0 <= args.alpha <= 1:
        raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}")
    out = args.out or args.run / "cam"
    claim = {"overwrite": args.overwrite, "protect": [args.run]}
    prepare_output_folder(out, "cam", check_only=True, **claim)
    opened = open_run(args.run, args.checkpoint)
    names = resolve_attributes(args.attr, opened.attributes)
    columns = [opened.attributes.index(a) for a in names]
    image_names, images = _images(args)
    weights, bias = opened.head_weights()
    backbone = opened.backbone()
    views, maps, probabilities = attribute_maps(backbone, weights[:, columns], bias[columns],
                                                images)
    prepare_output_folder(out, "cam", **claim)
    if args.grid:
        written = plot_cam_grid(views, maps, names, out / "cam_grid", probabilities,
                                image_names, args.alpha, svg=args.svg)
    else:
        written = []
        for i, name in enumerate(image_names):
            written += plot_cam_grid(views[i:i + 1], maps[i:i + 1], names,
                                     out / f"cam_{Path(name).stem}", probabilities[i:i + 1],
                                     [name], args.alpha, svg=args.svg)
    for name, row in zip(image_names, probabilities):
        print(f"{name}: " + ", ".join(f"{a} {p:.2f}" for a, p in zip(names, row)))
    print(f"wrote {len(written)} figure(s) to {out}/")
    return 0
