"""``mtfap verify``: are two photos of one person?

The largest face of each photo is found and aligned as `mtfap predict` does, then compared: by
default with dlib's 128-D identity descriptor and the Euclidean distance, one person when the
distance is at most 0.6 (dlib's rule, checked on LFW and CelebA in docs/VERIFICATION.md);
with --verifier, a Siamese verifier written by `mtfap verification-benchmark` at the threshold
chosen on CelebA's validation pairs. Prints the distance (the score's magnitude: lower = more
alike), the threshold used and the decision. Exit status 0 for either answer; 2 when a photo
cannot be read or has no face.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "verify", help="are two photos of one person? (distance, threshold, decision)",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("photo_a", type=Path, metavar="A", help="first photo")
    parser.add_argument("photo_b", type=Path, metavar="B", help="second photo")
    parser.add_argument("--verifier", type=Path, default=None,
                        help="a Siamese verifier (NAME.json beside NAME.safetensors) from "
                             "`mtfap verification-benchmark`; default: dlib's descriptor")
    parser.add_argument("--threshold", type=float, default=None,
                        help="largest distance still declared one person (default: the "
                             "verifier's own)")
    parser.add_argument("--model", default=None,
                        help="attribute model to align faces for (default: the verifier's, "
                             "else the default shipped model)")
    parser.add_argument("--detector", choices=("auto", "hog", "cnn"), default="auto",
                        help="hog: fast; cnn: finds more turned faces, ~50x slower; auto: hog, "
                             "then hog on the photo turned sideways and upside down, then cnn, "
                             "each only where the one before found nothing")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(func=run)


def run(args) -> int:
    from mtfap.applications.verify import verify

    for photo in (args.photo_a, args.photo_b):
        if not photo.is_file():
            raise ValueError(f"{photo}: no such photo")
    result = verify(args.photo_a, args.photo_b, args.verifier, threshold=args.threshold,
                    model=args.model, detector=args.detector)
    if args.format == "json":
        print(json.dumps(result.to_record()))
        return 0
    for face in result.faces:
        box = ", ".join(f"{v:.0f}" for v in face.box)
        print(f"{face.file}: face at ({box}) [{face.detector}]")
    print(f"verifier   {result.verifier}")
    print(f"distance   {result.distance:.4f}  (score {result.score:.4f}; lower distance = "
          "more alike)")
    print(f"threshold  {result.threshold:.4f}  ({result.threshold_source})")
    print(f"decision   {'same person' if result.same else 'different people'}")
    return 0
