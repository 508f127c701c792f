"""Validation of a dataset: every problem at once (``mtfap data check``) and image decoding."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mtfap.data.dataset import SPLITS, FaceDataset
from mtfap.data.layout import SYNTHETIC, detect_layout, open_dataset
from mtfap.data.lfw import PAIRS_FILE, read_lfw_pairs
from mtfap.errors import DataError, ProblemLog


def check_images(dataset: FaceDataset, skip_bad_images: bool = False, progress: bool = True,
                 log: ProblemLog | None = None) -> FaceDataset:
    """Decode every image of ``dataset``.

    A corrupt or truncated image is a problem naming it (strict log: DataError at the first);
    with ``skip_bad_images`` it is left out instead and one warning counts and lists them.
    Returns the dataset without the images that failed (all of it when none did).
    """
    log = log or ProblemLog()
    bad = []
    for key in tqdm(dataset.keys, desc="decoding images", unit="img", disable=not progress):
        try:
            dataset.source.load(key)
        except DataError as error:
            bad.append(key)
            if not skip_bad_images:
                log.problem(error)
    if bad and skip_bad_images:
        log.warn(f"{dataset.source.root}: skipped {len(bad)} of {len(dataset)} images that cannot be "
                 f"decoded: {', '.join(bad[:10])}{' ...' if len(bad) > 10 else ''}")
    return dataset.subset(~np.isin(np.array(dataset.keys, dtype=object), bad)) if bad else dataset


@dataclass
class CheckReport:
    """What ``check_dataset`` found: problems make the data unusable, warnings are worth a look.

    ``images`` is the number of image rows read; ``dataset`` what remains usable (without rows
    that had problems and, after decoding, without images that failed).
    """

    path: str
    layout: str
    dataset: FaceDataset | None
    problems: list[DataError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    images: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_labels(dataset: FaceDataset, log: ProblemLog) -> None:
    """Warn about attributes that cannot be learned and about people in two splits."""
    known = dataset.mask.sum(axis=0)
    positives = (dataset.labels.astype(bool) & dataset.mask).sum(axis=0)
    for name, n_known, n_pos in zip(dataset.attributes, known, positives):
        if n_known == 0:
            log.warn(f"attribute {name}: no known label")
        elif n_pos in (0, n_known):
            log.warn(f"attribute {name}: all {n_known} known labels are {int(n_pos > 0)}")
    if dataset.identities is not None and dataset.split is not None:
        parts_per_person = {}
        for person, part in zip(dataset.identities.tolist(), dataset.split.tolist()):
            parts_per_person.setdefault(person, set()).add(part)
        shared = sum(len(parts) > 1 for parts in parts_per_person.values())
        if shared:
            log.warn(f"{shared} identities appear in more than one of {', '.join(SPLITS)}: "
                     "scores on val/test will be optimistic (see identity_disjoint_split)")


def check_dataset(path: str | Path | None, decode: bool = False, skip_bad_images: bool = False,
                  progress: bool = True, **options) -> CheckReport:
    """Run every validation on the dataset at ``path`` and collect all problems.

    Parameters
    ----------
    path : as for :func:`mtfap.data.open_dataset`.
    decode : also decode every image (slow: about a millisecond per small image).
    skip_bad_images : images that cannot be decoded are warnings, not problems.
    progress : show a progress bar while decoding.
    options : passed to ``open_dataset`` (``table``, ``identity_column``, ...).

    Returns
    -------
    CheckReport; ``report.ok`` is True when no problem was found.
    """
    layout = detect_layout(path, options.get("table"))
    log = ProblemLog(strict=False)
    report = CheckReport(str(path), layout, None, log.problems, log.warnings)
    try:
        if layout != SYNTHETIC:
            options["log"] = log
        report.dataset = open_dataset(path, **options)
        if layout == "lfw" and (Path(path) / PAIRS_FILE).is_file():
            read_lfw_pairs(Path(path) / PAIRS_FILE, log=log)
    except DataError as error:  # a problem that stops the reading (missing file, bad header)
        log.problems.append(error)
        return report
    report.images = len(report.dataset)
    _check_labels(report.dataset, log)
    if decode:
        report.dataset = check_images(report.dataset, skip_bad_images, progress, log)
    return report
