"""``mtfap verification-benchmark``: the paper's face-verification experiment (Sec. 5.6, Fig. 11).

Compares, on LFW's View 2 (6,000 pairs, 10 folds; the threshold of each fold chosen on the
nine others) and on 6,000 fixed pairs of CelebA's test people: dlib's descriptor with the
Euclidean distance (the reference), and the Siamese verifier (contrastive loss, eq. 17-19)
without attributes, with the attributes of a model trained without prior groups and with those
of a model trained with them. The verifiers are trained on CelebA's training people and tuned
on its validation people. Reports the 10-fold accuracy and its spread, TAR at FAR 1e-2 and
1e-3, EER, and paired differences with bootstrap intervals; draws the ROC curves of all
verifiers (Fig. 11) for each pair list. The first run encodes every LFW and CelebA image
(detection, alignment, dlib's descriptor; about an hour on one core) into --cache-dir.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "verification-benchmark",
        help="face verification on LFW View 2 and CelebA test pairs, with and without attributes",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", type=Path, required=True,
                        help="the LFW folder (lfw-deepfunneled.zip or its folder, pairs.txt)")
    parser.add_argument("--celeba", type=Path, default=None,
                        help="the CelebA folder (identities and the official split); "
                             "default: 'celeba' beside --data")
    parser.add_argument("--without-groups", default=None, metavar="MODEL",
                        help="attribute model trained without prior groups (independent heads): "
                             "a shipped model's name, an exported model or a run folder; "
                             "without it the blue variant is skipped")
    parser.add_argument("--with-groups", default=None, metavar="MODEL",
                        help="attribute model trained with the prior groups (low-rank + "
                             "sparse heads), the same way otherwise; without it the red "
                             "variant is skipped")
    parser.add_argument("--out", type=Path, default=Path("runs/verification"),
                        help="folder for tables, scores, results.json and the verifiers")
    parser.add_argument("--figures", type=Path, default=None,
                        help="folder for the ROC figures (default: --out)")
    parser.add_argument("--cache-dir", default=None,
                        help="cache folder for the face codes (default: $MTFAP_CACHE or "
                             "~/.cache/mtfap)")
    parser.add_argument("--epochs", type=int, default=40, help="epochs of each verifier fit")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="training seeds: the first gives the tables, all the seed spread")
    parser.add_argument("--bootstrap", type=int, default=1000,
                        help="bootstrap replicates of the paired differences (0: none)")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.set_defaults(func=run)


def run(args) -> int:
    import warnings

    from mtfap.data import read_celeba, read_lfw
    from mtfap.data.cache import default_cache_dir
    from mtfap.evaluation.verification import load_pairs
    from mtfap.experiments.verification import (
        VerifierSettings,
        celeba_test_pair_list,
        run_benchmark,
    )
    from mtfap.model import load_model
    from mtfap.model.shipped import default_model_name

    celeba_dir = args.celeba if args.celeba is not None else args.data.parent / "celeba"
    if not args.data.is_dir():
        raise ValueError(f"--data {args.data}: not a folder; give the LFW folder")
    if not celeba_dir.is_dir():
        raise ValueError(f"--celeba {celeba_dir}: not a folder; give the CelebA folder, on "
                         "whose training people the verifiers are trained")
    sources = {key: source for key, source in (("independent", args.without_groups),
                                                ("prior_groups", args.with_groups)) if source}
    models = {key: load_model(source) for key, source in sources.items()}
    framing = next(iter(models.values()), None) or load_model(default_model_name())
    if not models:
        print("no attribute models given (--without-groups, --with-groups): comparing dlib's "
              "descriptor with the Siamese verifier without attributes only")
    with warnings.catch_warnings():
        # LFW's gender lists name 5 images twice; verification does not read gender.
        warnings.simplefilter("ignore", UserWarning)
        lfw = read_lfw(args.data)
    celeba = read_celeba(celeba_dir)
    settings = VerifierSettings(epochs=args.epochs, seeds=tuple(args.seeds))
    summary = run_benchmark(
        lfw, load_pairs(args.data), celeba, celeba_test_pair_list(), models, framing=framing,
        codes_dir=default_cache_dir(args.cache_dir) / "verification" / "codes", out=args.out,
        figures=args.figures, settings=settings, n_bootstrap=args.bootstrap,
        model_sources={k: str(Path(s).resolve()) if Path(s).exists() else s
                       for k, s in sources.items()},
        progress=args.progress)
    for name in ("lfw", "celeba"):
        print(f"\n{name}:")
        print((args.out / f"{name}_metrics.md").read_text())
        print((args.out / f"{name}_differences.md").read_text())
    print(json.dumps({"out": str(args.out), "seconds": summary["seconds"]}))
    return 0
