"""``mtfap search``: find faces in an index (``mtfap index``) by what they look like.

    mtfap search old man wearing glasses --db photos.db
    mtfap search "Male & ~Young & Eyeglasses" --db photos.db --format json
    mtfap search --like me.jpg --db photos.db        # faces with the attributes of mine
    mtfap search --person me.jpg --db photos.db      # my face in the collection

A query is a list of conditions that must all hold, in words (with synonyms and negations:
"woman without glasses, not smiling") or in the explicit form; docs/SEARCH.md lists every
word. Faces are ranked by the joint probability of the conditions. --like ranks by the L1
distance between the 40 probabilities (a number of attributes), --person by the distance
between dlib's identity descriptors (under 0.6: the same person), both for the largest face of
the photo given.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path

from mtfap.cli.arguments import count

FORMATS = ("table", "json", "csv")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "search", help="find faces in an index by a query (old man wearing glasses), a "
                       "photo's attributes or its person",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("query", nargs="*", metavar="QUERY",
                        help="the query, quoted or not (not with --like / --person)")
    parser.add_argument("--db", required=True, help="the index file of `mtfap index`")
    way = parser.add_mutually_exclusive_group()
    way.add_argument("--like", type=Path, metavar="PHOTO",
                     help="faces whose attributes are closest to those of the face in PHOTO")
    way.add_argument("--person", type=Path, metavar="PHOTO",
                     help="faces of the same person as the face in PHOTO")
    parser.add_argument("--limit", type=count(1), default=20, help="how many faces to show "
                                                                   "(default 20)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="--person: largest descriptor distance kept (default 0.6, dlib's "
                             "'same person')")
    parser.add_argument("--format", choices=FORMATS, default="table",
                        help="table for reading; json / csv for programs (default table)")
    parser.add_argument("--out", type=Path, help="write the results to this file (default: "
                                                 "standard output)")
    parser.add_argument("--thumbnails", type=Path, metavar="DIR",
                        help="also write each face found as a JPEG into DIR")
    parser.add_argument("--root", type=Path, default=None,
                        help="the collection's folder, when it moved since it was indexed "
                             "(default: the one the index recorded)")
    parser.add_argument("--model", default=None,
                        help="--like / --person: the model that reads PHOTO, when the index's "
                             "cannot be opened by name; it must be the index's model")
    parser.add_argument("--aligned", action="store_true",
                        help="--like / --person: PHOTO is an aligned face crop framed like the "
                             "model's training images (no detection)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from mtfap.applications.face_search import FaceSearch

    text = " ".join(args.query).strip()
    by_photo = args.like or args.person
    if by_photo and text:
        raise ValueError("give a QUERY or --like / --person PHOTO, not both")
    if not by_photo and not text:
        raise ValueError("give a QUERY (e.g. old man wearing glasses), or --like / --person PHOTO")
    if args.threshold is not None and not args.person:
        raise ValueError("--threshold applies to --person only")
    if args.out is not None and args.out.is_dir():
        raise ValueError(f"--out {args.out} is a folder; give a file name")
    search = FaceSearch(args.db, root=args.root)
    query = None
    if text:
        query, hits = search.query(text, args.limit)
        kind = "log_probability"
    else:
        face = _face_of(search, by_photo, bool(args.person), args)
        if args.like:
            hits, kind = search.like(face.probabilities, args.limit), "l1_distance"
        else:
            threshold = 0.6 if args.threshold is None else args.threshold
            hits, kind = search.person(face.descriptor, args.limit, threshold), "distance"
    thumbnails = _write_thumbnails(search, hits, args.thumbnails) if args.thumbnails else {}
    total = search.counts()["faces"]
    shown = list(query.as_dict()) if query is not None else []
    output = _render(args.format, search, query, hits, kind, shown, total, thumbnails,
                     args.like or args.person)
    if args.out is None:
        sys.stdout.write(output)
    else:
        from mtfap.io import atomic_write_text
        atomic_write_text(args.out, output)
    if args.format != "table" or args.out is not None:
        print(f"{len(hits)} of {total} face(s)" + (f"; written to {args.out}" if args.out else ""),
              file=sys.stderr)
    return 0


def _face_of(search, photo: Path, identity: bool, args):
    """The largest face of ``photo``, described by the index's model."""
    from mtfap.errors import DataError

    if identity and search.descriptor_dim == 0:
        search.matrix(descriptors=True)  # raises the one-line reason
    if identity and args.aligned:
        raise ValueError("--person finds the face's landmarks for its identity descriptor: "
                         "leave out --aligned")
    analyzer = search.analyzer(args.model, aligned=args.aligned, identity=identity,
                               largest_only=True, workers=1)
    result = analyzer.analyze_image(photo)
    if result.error is not None:
        raise DataError(result.error)
    if not result.faces:
        raise DataError("no face found in the photo", photo,
                        hint="give a photo where the face is at least 40 pixels across, or "
                             "--aligned for an aligned face crop")
    return result.faces[0]


def _write_thumbnails(search, hits, folder: Path) -> dict[int, str]:
    from mtfap.applications.annotate import save_image
    from mtfap.errors import DataError

    written = {}
    for hit in hits:
        try:
            image = search.thumbnail(hit.face_id)
        except DataError as exc:
            print(f"mtfap search: warning: no thumbnail of face {hit.face_id}: {exc}",
                  file=sys.stderr)
            continue
        path = save_image(image, folder / f"{hit.rank:03d}_face{hit.face_id}.jpg")
        written[hit.face_id] = str(path)
    return written


def _render(fmt, search, query, hits, kind, shown, total, thumbnails, photo) -> str:
    if fmt == "json":
        payload = {"db": str(search.path), "query": None if query is None else str(query),
                   "photo": None if photo is None else str(photo), "value": kind,
                   "faces_in_index": total,
                   "hits": [{**hit.record(search.attributes, shown),
                             **({"probability": round(math.exp(hit.value), 5)}
                                if kind == "log_probability" else {}),
                             "thumbnail": thumbnails.get(hit.face_id)} for hit in hits]}
        return json.dumps(payload, indent=1) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["rank", "face_id", "path", "face", "left", "top", "right", "bottom",
                         kind, *shown])
        for hit in hits:
            writer.writerow([hit.rank, hit.face_id, hit.path, hit.face_index,
                             *(f"{v:.1f}" for v in hit.box), f"{hit.value:.5f}",
                             *(f"{hit.probabilities[search.attributes.index(a)]:.4f}"
                               for a in shown)])
        return buffer.getvalue()
    what = str(query) if query is not None else (
        f"like {photo}" if kind == "l1_distance" else f"same person as {photo}")
    lines = [f"{what}: {len(hits)} best of {total} face(s) in {search.path}"]
    header = "p(all)" if kind == "log_probability" else "distance"
    lines.append(f"{'rank':>4}  {'face':>7}  {header:>8}  file")
    for hit in hits:
        value = math.exp(hit.value) if kind == "log_probability" else hit.value
        box = ",".join(str(round(v)) for v in hit.box)
        lines.append(f"{hit.rank:>4}  {hit.face_id:>7}  {value:>8.4f}  {hit.path} "
                     f"face {hit.face_index} [{box}]")
    if not hits:
        lines.append("(no face" + (" within the threshold" if kind == "distance" else "") + ")")
    return "\n".join(lines) + "\n"
