"""``mtfap index``: an attribute index of a photo collection, for ``mtfap search`` and
``mtfap serve``.

Every face of every photo under PHOTOS (sub-folders included, hidden ones left out) is found,
aligned and described: box, landmarks, the 40 attribute probabilities, dlib's 128-D identity
descriptor, with the file's path (relative to PHOTOS), size, time and SHA-256, in one SQLite
file. A second run reads only new and changed files and drops removed ones; work is committed
in batches, so a run stopped at any moment loses at most one batch and the next run goes on.

Several processes or machines: --shard I/N gives each a disjoint part of the collection (the
same on every machine), each writing its own file ('{shard}' in --db is replaced by I);
`mtfap index merge photos.0.db photos.1.db --db photos.db` joins them (the shards before
--db). To index a folder called merge, write ./merge.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mtfap.cli.arguments import add_image_arguments, count


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "index", help="index the faces of a photo collection for search (or merge shards)",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="PHOTOS",
                        help="the folder of the collection; or `merge` followed by the shard "
                             "indexes to join into --db")
    parser.add_argument("--db", required=True,
                        help="the index file (created if absent); with --shard, '{shard}' in "
                             "it becomes the shard's number")
    parser.add_argument("--model", default=None,
                        help="a shipped model's name (`mtfap models`), an exported model's folder "
                             "or a run folder (default: the index's model, else the default "
                             "shipped model)")
    parser.add_argument("--aligned", action="store_true",
                        help="the photos are aligned faces framed like the model's training "
                             "images (e.g. CelebA's aligned crops): no detection, no identity "
                             "descriptors")
    parser.add_argument("--detector", choices=("auto", "hog", "cnn"), default="auto",
                        help="hog: fast; cnn: finds more turned faces, about 50x slower; auto: "
                             "hog, then hog on the photo turned sideways and upside down, then "
                             "cnn, each only where the one before found nothing")
    parser.add_argument("--upsample", type=count(0), default=1,
                        help="detector upsampling (1 finds faces down to about 40 px across)")
    parser.add_argument("--no-identity", dest="identity", action="store_false",
                        help="do not store identity descriptors (no --person search)")
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="index only part I of N of the collection (0 <= I < N), or 'env' "
                             "for torchrun's RANK/WORLD_SIZE")
    parser.add_argument("--batch-files", type=count(1), default=32,
                        help="files committed per transaction (a stopped run loses at most "
                             "these)")
    parser.add_argument("--batch-size", type=count(1), default=32,
                        help="photos decoded and found faces predicted per batch")
    parser.add_argument("--workers", type=count(1), default=None,
                        help="threads that decode photos and find faces (default: the cores, "
                             "at most 2)")
    parser.add_argument("--rebuild", action="store_true",
                        help="delete the index first and index everything again (refused for a "
                             "file that is not an mtfap index)")
    add_image_arguments(parser, skip=False)
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.paths[0] == "merge":
        return _merge(args)
    from mtfap.applications.index import CollectionIndexer, parse_shard

    if len(args.paths) != 1:
        raise ValueError(f"give one folder of photos, got {len(args.paths)}: "
                         f"{' '.join(args.paths)} (to join shard indexes: mtfap index merge "
                         f"SHARDS... --db all.db)")
    shard = parse_shard(args.shard)
    db = Path(args.db.replace("{shard}", str(shard[0])))
    indexer = CollectionIndexer(args.model, aligned=args.aligned, detector=args.detector,
                                upsample=args.upsample, identity=args.identity,
                                batch_files=args.batch_files, batch_size=args.batch_size,
                                workers=args.workers, max_pixels=args.max_pixels)
    report = indexer.run(
        args.paths[0], db, shard=shard, rebuild=args.rebuild,
        progress=args.progress and sys.stderr.isatty(),
        on_error=lambda error: print(f"mtfap index: error: {error}", file=sys.stderr,
                                     flush=True))
    print(report.summary(), file=sys.stderr)
    return 0


def _merge(args) -> int:
    from mtfap.applications.index import merge_shards

    shards = args.paths[1:]
    if not shards:
        raise ValueError("mtfap index merge needs the shard indexes to join, e.g. "
                         "mtfap index merge photos.0.db photos.1.db --db all.db")
    counts = merge_shards(args.db, shards)
    print(f"{args.db}: merged {counts['files']} file(s) and {counts['faces']} face(s) from "
          f"{len(shards)} shard(s)", file=sys.stderr)
    return 0
