"""``mtfap predict``: the 40 attributes of every face in your photos.

Each photo is decoded (EXIF orientation, any colour mode), its faces are found (dlib's HOG
detector by default; a photo that is itself a tight face crop is recognised as one), their
landmarks fitted, and each face aligned into the framing the model was trained on before the
model reads it. One record per face: file, face index (0 = largest), box, landmarks, detection
score, the probability and decision of each attribute, the model's name and version.

A photo that cannot be read is reported by name with the reason and the rest go on; the exit
status is non-zero only when no photo could be read. A photo without a face is reported too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FORMATS = ("table", "json", "jsonl", "csv")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict", help="attributes of every face in your photos (files or folders)",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="photos, or folders of photos")
    parser.add_argument("--model", default=None,
                        help="a shipped model's name (`mtfap models`), an exported model's "
                             "folder or a run folder (default: the default shipped model)")
    parser.add_argument("--format", choices=FORMATS, default="table",
                        help="table: a summary per face for reading; json / jsonl / csv: every "
                             "probability, for programs (schema in docs/PREDICT.md)")
    parser.add_argument("--out", type=Path, help="write the output to this file (default: "
                                                 "standard output); the table summary then "
                                                 "goes to standard output")
    parser.add_argument("--annotate", type=Path, metavar="DIR",
                        help="write each photo with its faces boxed and labelled into DIR")
    parser.add_argument("--cam", nargs="+", metavar="ATTR",
                        help="with --annotate: also an activation map of each of these "
                             "attributes over each face")
    parser.add_argument("--cam-kind", choices=("hirescam", "gradcam", "cam"), default="hirescam",
                        help="hirescam / gradcam: gradient-weighted maps at an earlier layer "
                             "(they resolve facial parts); cam: the paper's class activation "
                             "map (eq. 15-16, 2 x 2 cells for dlib's network)")
    parser.add_argument("--thresholds", default="model",
                        help="decision thresholds: 'model' (the model card's) or a number")
    parser.add_argument("--recursive", action="store_true",
                        help="also the photos in sub-folders")
    parser.add_argument("--largest-face", action="store_true",
                        help="only the largest face of each photo")
    parser.add_argument("--aligned", action="store_true",
                        help="the photos are already aligned faces framed like the model's "
                             "training images (e.g. CelebA's aligned crops): no detection")
    parser.add_argument("--detector", choices=("auto", "hog", "cnn"), default="auto",
                        help="hog: fast; cnn: dlib's MMOD detector, finds more turned faces "
                             "but is about 50x slower on a CPU; auto: hog, then hog on the photo "
                             "turned sideways and upside down, then cnn, each only on the photos "
                             "where the one before found nothing")
    parser.add_argument("--upsample", type=int, default=1,
                        help="detector upsampling: 1 finds faces down to about 40 px across, "
                             "0 is faster, 2 finds smaller faces")
    parser.add_argument("--upright", dest="turns", action="store_false",
                        help="the photos stand upright: with --detector auto, do not look for "
                             "faces in them turned sideways or upside down (photos whose EXIF "
                             "orientation was lost)")
    parser.add_argument("--no-crop-fallback", dest="crop_fallback", action="store_false",
                        help="do not treat a photo without a detected face as a face crop")
    parser.add_argument("--batch-size", type=int, default=32, help="faces per network batch")
    parser.add_argument("--workers", type=int, default=None,
                        help="threads that decode photos and find faces (default: the cores, "
                             "at most 2)")
    parser.add_argument("--max-pixels", type=int, default=None,
                        help="refuse photos with more pixels than this (default 64,000,000, "
                             "or $MTFAP_MAX_PIXELS)")
    parser.add_argument("--top", type=int, default=6,
                        help="table and annotations: how many attributes to show per face")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.set_defaults(func=run)


def _table_lines(result, top: int) -> list[str]:
    if result.error is not None:
        return [f"{result.file}: error: {result.error}"]
    if not result.faces:
        return [f"{result.file}: no face found"]
    lines = []
    for face in result.faces:
        left, top_, right, bottom = (int(round(v)) for v in face.box)
        found = ", ".join(f"{a} {face.probability(a):.2f}" for a in face.present[:top])
        more = len(face.present) - min(top, len(face.present))
        found += f" (+{more})" if more > 0 else ""
        where = f"[{left},{top_},{right},{bottom}]" + (f" {face.detector}"
                                                       if face.detector != "hog" else "")
        lines.append(f"{result.file} face {face.index} {where}: {found or '(none above threshold)'}")
    return lines


def _csv_rows(results, attributes):
    header = ["file", "face", "left", "top", "right", "bottom", "score", "detector", "error",
              *attributes]
    yield header
    for result in results:
        if result.error is not None or not result.faces:
            yield [result.file, "", "", "", "", "", "", "", result.error or "no face",
                   *[""] * len(attributes)]
            continue
        for face in result.faces:
            yield [face.file, face.index, *(f"{v:.1f}" for v in face.box),
                   "" if face.score != face.score else f"{face.score:.4f}", face.detector, "",
                   *(f"{p:.5f}" for p in face.probabilities)]


def _write_maps(analyzer, result, photo, names, kind, folder: Path) -> None:
    import numpy as np
    from PIL import Image

    from mtfap.applications.annotate import enlargement, map_on_photo, save_image
    from mtfap.applications.cam import predictor_maps

    if not result.faces:
        return
    predictor = analyzer.predictor
    faces = [face.aligned for face in result.faces]
    _, maps = predictor_maps(predictor, faces, names, kind)
    canvas = faces[0].shape[:2]
    h, w = maps.shape[-2:]
    top, left = (canvas[0] - h) // 2, (canvas[1] - w) // 2
    stem = Path(result.file).stem
    factor = enlargement(photo)
    large = np.asarray(Image.fromarray(photo).resize(
        (photo.shape[1] * factor, photo.shape[0] * factor), Image.Resampling.LANCZOS))
    for c, name in enumerate(names):
        picture = large
        for face, face_maps in zip(result.faces, maps):
            full = np.zeros(canvas)
            full[top:top + h, left:left + w] = face_maps[c]
            picture = map_on_photo(picture, face, full, factor=factor)
        save_image(picture, folder / f"{stem}.{kind}.{name}.jpg")


def run(args) -> int:
    from mtfap.applications.analyze import Analyzer, list_images
    from mtfap.attributes import resolve_attributes
    from mtfap.io import atomic_write_text

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.cam and not args.annotate:
        raise ValueError("--cam draws maps into the --annotate folder: give --annotate DIR too")
    if args.out is not None and args.out.is_dir():
        raise ValueError(f"--out {args.out} is a folder; give a file name")
    files = list_images(args.paths, recursive=args.recursive)
    if not files:
        raise ValueError("no photos found in " + ", ".join(map(str, args.paths))
                         + ("" if args.recursive else " (pass --recursive for sub-folders)"))
    analyzer = Analyzer(args.model, detector=args.detector, upsample=args.upsample,
                        crop_fallback=args.crop_fallback, turns=args.turns,
                        largest_only=args.largest_face,
                        aligned=args.aligned, thresholds=args.thresholds,
                        keep_aligned=bool(args.cam), max_pixels=args.max_pixels,
                        workers=args.workers)
    cam_names = resolve_attributes(args.cam, analyzer.predictor.attributes) if args.cam else []
    results = []
    progress = args.progress and len(files) > 1 and sys.stderr.isatty()
    for result in analyzer.analyze_paths(files, batch_size=args.batch_size, progress=progress):
        results.append(result)
        if result.error is not None:
            print(f"mtfap predict: error: {result.error}", file=sys.stderr, flush=True)
        elif args.annotate:
            _annotate(analyzer, result, args, cam_names)
        if result.error is None and (args.format == "table" or args.out is not None):
            # The summary for the reader: on standard output unless the output itself goes
            # there (a machine-readable format without --out).
            print("\n".join(_table_lines(result, args.top)), flush=True)
    text = _render(results, args, analyzer.predictor.attributes)
    if text is not None:
        if args.out is None:
            sys.stdout.write(text)
        else:
            atomic_write_text(args.out, text)
    read = sum(r.ok for r in results)
    faces = sum(len(r.faces) for r in results)
    print(f"{faces} face(s) in {read} of {len(results)} photo(s); model "
          f"{analyzer.predictor.name} {analyzer.predictor.version}"
          + (f"; written to {args.out}" if args.out else ""), file=sys.stderr)
    return 0 if read else 1


def _annotate(analyzer, result, args, cam_names) -> None:
    import numpy as np

    from mtfap.applications.annotate import annotate, save_image
    from mtfap.data.decode import read_image_file

    photo = np.asarray(read_image_file(result.file, max_pixels=args.max_pixels))
    stem = Path(result.file).stem
    save_image(annotate(photo, result.faces, args.top), args.annotate / f"{stem}.annotated.jpg")
    if cam_names:
        _write_maps(analyzer, result, photo, cam_names, args.cam_kind, args.annotate)


def _render(results, args, attributes) -> str | None:
    """The whole output as text, for --out or the machine-readable formats."""
    if args.format == "table":
        if args.out is None:
            return None  # printed photo by photo
        return "".join(line + "\n" for r in results for line in _table_lines(r, args.top))
    if args.format == "json":
        payload = {"photos": [{"file": r.file, "error": r.error, "faces": len(r.faces)}
                              for r in results],
                   "faces": [f.to_record() for r in results for f in r.faces]}
        return json.dumps(payload, indent=1) + "\n"
    if args.format == "jsonl":
        lines = []
        for r in results:
            if r.error is not None or not r.faces:
                lines.append(json.dumps({"schema": "mtfap.predict/1", "file": r.file,
                                         "face": None, "error": r.error or "no face found"}))
            lines += [json.dumps(f.to_record()) for f in r.faces]
        return "".join(line + "\n" for line in lines)
    import csv
    import io
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(_csv_rows(results, attributes))
    return buffer.getvalue()
