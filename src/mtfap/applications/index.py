"""Building the attribute index of a photo collection (``mtfap index``).

One run::

    list the photos under the root (hidden files and folders left out), stat each
      --plan--> new | changed (size or time) | unchanged | gone     (no file read yet)
      gone: removed; changed with the same SHA-256: only the new stat is recorded
      new and really changed: read once (hash and decode from the same bytes), faces found,
      aligned and described by the model, written in batches of files, one transaction each

so a second run over an unchanged collection reads no image, and a run killed at any moment
loses at most the batch in flight (:mod:`mtfap.search.store` keeps every batch atomic).

Besides the model (checked by the store), the index records how its faces were found
(``framing``: ``detected`` or ``aligned``), which part of the collection it holds (``shard``)
and where the collection was (``collection_root``, for thumbnails), so that a later run cannot
mix faces found one way with faces found another.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from mtfap.data.decode import IMAGE_SUFFIXES, decode_image
from mtfap.errors import DataError
from mtfap.search.store import FaceRecord, FileRecord, IndexStore, merge, shard_of

# The analyzer and the models are imported where they are used: they bring torch and dlib
# (seconds), which searching an index does not need.

# meta keys this module adds to the store's (mtfap.search.store checks the model's own)
ROOT_KEY, FRAMING_KEY, SHARD_KEY = "collection_root", "framing", "shard"
DETECTED, ALIGNED = "detected", "aligned"

DEFAULT_BATCH_FILES = 32


def parse_shard(text: str | None, environ=os.environ) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``; ``"env"`` reads torchrun's ``RANK`` and
    ``WORLD_SIZE``; None is the whole collection, ``(0, 1)``.

    >>> parse_shard("2/4")
    (2, 4)
    """
    if text is None:
        return 0, 1
    if text == "env":
        if "RANK" not in environ or "WORLD_SIZE" not in environ:
            raise ValueError("--shard env reads RANK and WORLD_SIZE (set by torchrun); they are "
                             "not set: give --shard I/N")
        text = f"{environ['RANK']}/{environ['WORLD_SIZE']}"
    index, _, count = text.partition("/")
    if not (index.strip().isdigit() and count.strip().isdigit()) \
            or not 0 <= int(index) < int(count):
        raise ValueError(f"--shard must be I/N with 0 <= I < N (e.g. 0/4), or 'env'; got {text!r}")
    return int(index), int(count)


def collection_files(root: str | Path) -> list[tuple[str, Path, os.stat_result]]:
    """The photos under ``root``, by suffix (``IMAGE_SUFFIXES``), as ``(relative path with /,
    path, stat)``, sorted by relative path. Hidden files and folders (name starting with a dot)
    and links to folders are left out; nothing is opened."""
    root = Path(root)
    if not root.is_dir():
        raise DataError("not a folder of photos", root, hint="give the folder of the collection")
    found = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in names:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            path = Path(folder, name)
            try:
                stat = path.stat()
            except OSError:
                continue  # vanished or a broken link: it is not part of the collection
            found.append((path.relative_to(root).as_posix(), path, stat))
    found.sort(key=lambda item: item[0])
    return found


def file_in_collection(root: str | Path, relative: str) -> Path:
    """The file of an index's relative ``path`` under ``root``; refuses a path that would
    leave ``root`` (absolute, or with ``..``), whatever the index holds."""
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
        raise DataError(f"the index holds the path {relative!r}, which is not inside the "
                        f"collection", hint="rebuild the index with mtfap index")
    return Path(root).joinpath(*parts)


@dataclass
class IndexReport:
    """What one indexing run did (numbers of files unless said otherwise)."""

    root: str
    db: str
    model: str
    shard: tuple[int, int] = (0, 1)
    new: int = 0
    changed: int = 0  # size or time changed and the content too: indexed again
    touched: int = 0  # size or time changed, same content: new stat recorded, nothing decoded
    unchanged: int = 0
    gone: int = 0
    read: int = 0  # files whose bytes were read (hashing or indexing)
    decoded: int = 0  # images decoded
    faces: int = 0  # faces written by this run
    errors: list[str] = field(default_factory=list)  # "path: why" of the files not indexed
    seconds: dict = field(default_factory=dict)  # plan, analyse (decode, find, network), write

    def summary(self) -> str:
        analyse = self.seconds.get("analyse", 0.0)
        speed = f" ({self.faces / analyse:.1f} faces/s)" if analyse > 0 and self.faces else ""
        shard = f" shard {self.shard[0]}/{self.shard[1]}," if self.shard[1] > 1 else ""
        return (f"{self.db}:{shard} {self.new} new, {self.changed} changed, {self.touched} "
                f"touched (same content), {self.unchanged} unchanged, {self.gone} removed; "
                f"{self.faces} face(s) written, {len(self.errors)} unreadable; "
                f"{sum(self.seconds.values()):.1f} s{speed}; model {self.model}")


def check_settings(stored: dict[str, str], wanted: dict[str, str], db_path: Path) -> None:
    """Refuse an index (``stored``: its meta) whose faces were found with another framing than
    ``wanted`` or that holds another shard of the collection."""
    for key, what in ((FRAMING_KEY, "faces {}"), (SHARD_KEY, "shard {}")):
        if key in wanted and key in stored and stored[key] != wanted[key]:
            raise DataError(f"the index holds {_setting(what, stored[key])}, this run asks for "
                            f"{_setting(what, wanted[key])}; an index never mixes them", db_path,
                            hint="use another --db, or --rebuild to index again")


def record_settings(db_path: Path, wanted: dict[str, str]) -> None:
    """Record framing, shard and root in the index's ``meta`` after :func:`check_settings`
    (nothing is written when it refuses).

    Written through a connection of its own because the store has no door for its callers'
    keys; ``meta`` is a plain key-value table and the store checks only its own keys.
    """
    with closing(sqlite3.connect(db_path, isolation_level=None, timeout=30)) as db:
        db.execute("BEGIN IMMEDIATE")
        try:
            check_settings(dict(db.execute("SELECT key, value FROM meta")), wanted, db_path)
            db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                           wanted.items())
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


def _setting(what: str, value: str) -> str:
    return what.format(value or "(whole collection)")


def _holds_data(db_path: Path) -> bool:
    """Whether ``db_path`` is a file with something in it (SQLite takes an empty file for an
    empty database, which the store fills)."""
    return db_path.is_file() and db_path.stat().st_size > 0


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class CollectionIndexer:
    """Indexes a folder of photos into an index file, incrementally.

    Parameters
    ----------
    model : a :class:`Predictor`, or a name or path for :func:`mtfap.load_model`; None: the
        model of the index when it exists, else :func:`default_model_name`.
    aligned : the photos are faces framed like the model's training images (e.g. CelebA's
        aligned crops): no detection; such an index stores no identity descriptors.
    detector, upsample, workers, max_pixels : those of
        :class:`~mtfap.applications.analyze.Analyzer`.
    identity : store dlib's 128-D descriptor of each face (``mtfap search --person``).
    batch_files : files per transaction: a killed run loses at most this many.
    """

    def __init__(self, model=None, *, aligned: bool = False,
                 detector: str = "auto", upsample: int = 1, identity: bool = True,
                 batch_files: int = DEFAULT_BATCH_FILES, batch_size: int = 32,
                 workers: int | None = None, max_pixels: int | None = None):
        if batch_files < 1 or batch_size < 1:
            raise ValueError(f"batch sizes must be >= 1, got {batch_files} files, "
                             f"{batch_size} faces")
        self.model = model
        self.aligned, self.detector, self.upsample = bool(aligned), detector, upsample
        self.identity = bool(identity) and not self.aligned
        self.batch_files, self.batch_size = int(batch_files), int(batch_size)
        self.workers, self.max_pixels = workers, max_pixels
        self._analyzer = None
        # the decoder, as a seam: the tests count its calls to show that a re-run reads nothing
        self.decode: Callable = decode_image

    @property
    def framing(self) -> str:
        return ALIGNED if self.aligned else DETECTED

    def _predictor(self, db_path: Path | None):
        # imported here: the model pulls in torch (seconds); a re-run over an unchanged
        # collection needs none of it
        from mtfap.model import Predictor, load_model
        from mtfap.model.shipped import default_model_name

        if isinstance(self.model, Predictor):
            return self.model
        if self.model is not None:
            return load_model(self.model)
        if db_path is None or not _holds_data(db_path):
            return load_model(default_model_name())
        with IndexStore.open(db_path) as store:
            name = store.model_name
        try:
            return load_model(name)
        except DataError as exc:
            raise DataError(f"the index was built with the model {name!r}, which cannot be "
                            f"opened ({exc})", db_path,
                            hint="give it with --model, or --rebuild with another") from None

    def analyzer(self, db_path: Path | None = None):
        """The :class:`~mtfap.applications.analyze.Analyzer` of this indexer, made on first use
        with the model of :meth:`run`'s rules (``db_path``: the index whose model is the
        default)."""
        from mtfap.applications.analyze import (
            Analyzer,  # torch: only when there is work
        )

        if self._analyzer is None:
            self._analyzer = Analyzer(self._predictor(db_path), detector=self.detector,
                                      upsample=self.upsample, aligned=self.aligned,
                                      identity=self.identity, max_pixels=self.max_pixels,
                                      workers=self.workers)
        return self._analyzer

    def run(self, root: str | Path, db: str | Path, *, shard: tuple[int, int] = (0, 1),
            rebuild: bool = False, progress: bool = False,
            on_error: Callable[[str], None] | None = None) -> IndexReport:
        """Bring the index at ``db`` up to date with the photos under ``root`` (or the part
        ``shard`` = (I, N) of them, :func:`~mtfap.search.store.shard_of`).

        Returns an :class:`IndexReport`; ``on_error`` is called with ``"path: why"`` for each
        file that cannot be indexed as it is found (the file is stored with its error and not
        retried until it changes).
        """
        started = time.perf_counter()
        root, db_path = Path(root), Path(db)
        index, count = shard
        files = {rel: (path, stat) for rel, path, stat in collection_files(root)
                 if count == 1 or shard_of(rel, count) == index}
        settings = {FRAMING_KEY: self.framing, SHARD_KEY: f"{index}/{count}" if count > 1 else "",
                    ROOT_KEY: str(root.resolve())}
        if _holds_data(db_path) and not rebuild:  # before the model's check: a clearer reason
            with IndexStore.open(db_path) as store:
                check_settings(store.meta, settings, db_path)
        # with --rebuild the index's own model is no default: it is about to go
        predictor = self.analyzer(None if rebuild else db_path).predictor
        report = IndexReport(str(root), str(db_path), f"{predictor.name} {predictor.version}",
                             (index, count))
        with IndexStore.create_or_open(db_path, predictor.name, predictor.version,
                                       predictor.attributes, 128 if self.identity else 0,
                                       rebuild=rebuild) as store:
            record_settings(db_path, settings)
            plan = store.plan((rel, stat.st_size, stat.st_mtime_ns)
                              for rel, (_, stat) in files.items())
            if not files and plan.gone:
                raise DataError(f"no photos under the folder, and the index holds "
                                f"{len(plan.gone)} file(s): refusing to drop them all", root,
                                hint="is the collection's disk mounted? to empty the index, "
                                     "use --rebuild")
            if plan.gone:
                store.remove(plan.gone)
            report.gone, report.unchanged, report.new = (len(plan.gone), len(plan.unchanged),
                                                         len(plan.new))
            todo = list(plan.new) + self._changed_content(store, plan.changed, files, report)
            report.seconds["plan"] = time.perf_counter() - started
            self._index(store, sorted(todo), files, report, progress, on_error)
        return report

    def _changed_content(self, store: IndexStore, changed: list[str], files, report) -> list[str]:
        """The files of ``changed`` whose content differs from the stored hash; the others
        get their new stat recorded."""
        same, different = [], []
        for rel in changed:
            path, stat = files[rel]
            stored = store.file(rel)
            try:
                digest = _sha256(path.read_bytes())
                report.read += 1
            except OSError:
                digest = None  # let the indexing step store why it cannot be read
            if stored is not None and digest is not None and stored.sha256 == digest \
                    and stored.error is None:
                same.append((rel, stat.st_size, stat.st_mtime_ns))
            else:
                different.append(rel)
        if same:
            store.update_stat(same)
        report.touched, report.changed = len(same), len(different)
        return different

    def _index(self, store: IndexStore, todo: list[str], files, report: IndexReport,
               progress: bool, on_error) -> None:
        analyzer = self.analyzer()
        hashes: dict[str, str] = {}  # filled by the worker threads, one key each
        decoded: list[str] = []

        def loader(rel: str, path: Path):
            def load():
                data = path.read_bytes()
                hashes[rel] = _sha256(data)
                decoded.append(rel)
                return self.decode(data, str(path), max_pixels=self.max_pixels)
            return load

        batch: list[FileRecord] = []
        write_seconds = 0.0
        started = time.perf_counter()

        def write():
            nonlocal batch, write_seconds
            write_started = time.perf_counter()
            store.write_batch(batch)
            write_seconds += time.perf_counter() - write_started
            batch = []

        results = analyzer.analyze_items([(rel, loader(rel, files[rel][0])) for rel in todo],
                                         batch_size=self.batch_size, progress=progress)
        for result in results:
            _, stat = files[result.file]
            if result.error is not None:
                report.errors.append(result.error)
                if on_error is not None:
                    on_error(result.error)
            batch.append(FileRecord(
                result.file, stat.st_size, stat.st_mtime_ns, hashes.get(result.file),
                [_face_record(face) for face in result.faces], result.error))
            report.faces += len(result.faces)
            if len(batch) == self.batch_files:
                write()
        if batch:
            write()
        report.read += len(hashes)
        report.decoded += len(decoded)
        report.seconds["analyse"] = time.perf_counter() - started - write_seconds
        report.seconds["write"] = write_seconds


def _face_record(face) -> FaceRecord:
    return FaceRecord(face.box, np.asarray(face.probabilities, dtype=np.float32),
                      None if np.isnan(face.score) else float(face.score), face.detector,
                      np.asarray(face.landmarks, dtype=np.float32).reshape(-1, 2),
                      face.descriptor)


def index_collection(root: str | Path, db: str | Path, model=None, *, shard=(0, 1),
                     rebuild: bool = False, progress: bool = False, **options) -> IndexReport:
    """Index the photos under ``root`` into ``db`` (one call of :class:`CollectionIndexer`;
    ``options`` are its parameters).

    >>> report = index_collection("photos", "photos.db")  # doctest: +SKIP
    >>> report.faces, report.unchanged                     # doctest: +SKIP
    """
    return CollectionIndexer(model, **options).run(root, db, shard=shard, rebuild=rebuild,
                                                   progress=progress)


def merge_shards(target: str | Path, shards: Iterable[str | Path]) -> dict[str, int]:
    """Join shard indexes into ``target`` (:func:`mtfap.search.store.merge`: same model, no
    file twice) and record that it holds the whole collection; shards whose faces were found
    differently (detected / aligned) are refused before anything is written. The collection
    root is carried over when all shards name the same one."""
    target, shards = Path(target), [Path(s) for s in shards]
    settings = {}
    for source in [*shards, *([target] if target.is_file() else [])]:
        with IndexStore.open(source) as store:
            settings[source] = (store.meta.get(FRAMING_KEY), store.meta.get(ROOT_KEY))
    framings = {framing for framing, _ in settings.values() if framing is not None}
    if len(framings) > 1:
        listed = ", ".join(f"{path}: {framing}" for path, (framing, _) in settings.items())
        raise DataError(f"the shards hold faces found in different ways ({listed})", target,
                        hint="index them all with detection, or all with --aligned")
    counts = merge(target, shards)
    values = {FRAMING_KEY: framings.pop() if framings else DETECTED, SHARD_KEY: ""}
    roots = {root for _, root in settings.values()}
    if len(roots) == 1 and None not in roots:
        values[ROOT_KEY] = roots.pop()
    record_settings(target, values)
    return counts
