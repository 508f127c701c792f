"""The attribute index of a photo collection: one SQLite file of files, faces and predictions.

Schema (version 1)
------------------
``meta(key TEXT PRIMARY KEY, value TEXT)``
    ``schema_version``; ``model_name``, ``model_version``, ``attributes`` (JSON list, the k
    columns of every probability vector) and ``descriptor_dim`` (128 for dlib, 0 for none): the
    model whose predictions the index holds, checked on every open so that an index never mixes
    two models; ``created`` (ISO 8601, UTC); ``database_id`` (random, set at creation) and
    ``generation`` (incremented by every write transaction): together they name one state of the
    data, the key of the matrix cache.
``files(id, path UNIQUE, size, mtime_ns, sha256, n_faces, error, indexed_at)``
    One row per file seen, including the files that could not be read: ``error`` holds why (else
    NULL), so that a re-run skips them until they change. ``path`` is relative to the collection
    root, with ``/``; ``sha256`` is the content hash (NULL when unread).
``faces(id, file_id REFERENCES files ON DELETE CASCADE, face_index, left, top, right, bottom,
score, detector, landmarks, probabilities, descriptor)``
    One row per detected face; the box in pixels of the file's image; ``landmarks`` a BLOB of
    float32 (x, y) pairs; ``probabilities`` a BLOB of k float32, the model's predicted
    probabilities in the order of ``meta.attributes``; ``descriptor`` a BLOB of
    ``descriptor_dim`` float32 (dlib's face descriptor) or NULL.

Indices: ``UNIQUE(path)`` is the index on ``files.path`` and ``UNIQUE(file_id, face_index)``
the one on ``faces.file_id`` (its first column), so neither needs a second copy.

Probabilities are float32 rather than float16: the descriptor (512 bytes) dominates a face's
row anyway, so float16 would save about a tenth of the file, and it would round every
probability above 0.9995 to 1.

Consistency: WAL journal, foreign keys on, and every write (:meth:`IndexStore.write_batch`,
:meth:`~IndexStore.remove`, :func:`merge`) is one transaction, so a process killed at any
moment loses at most the batch in flight and leaves a database that passes
``PRAGMA integrity_check``. ``synchronous=NORMAL``: a power cut (not a killed process) may lose
the last committed batches, never consistency; a re-run indexes them again.

Loading for search (:meth:`IndexStore.load_matrix`) concatenates the per-face BLOBs inside
SQLite (``group_concat``) and reads them with one ``np.frombuffer``; it caches the result beside
the database (``<db>.matrix.npz``, keyed by ``database_id`` and ``generation``) because a million
faces take 2.4 s from SQLite (6.8 s with descriptors) and 0.4 s from the cache (1.2 s with
descriptors) on two shared cores (docs/SEARCH.md, "Measurements").
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import unicodedata
import uuid
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePath

import numpy as np

from mtfap.errors import DataError
from mtfap.io import write_npz

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE files (
    id         INTEGER PRIMARY KEY,
    path       TEXT NOT NULL UNIQUE,
    size       INTEGER NOT NULL,
    mtime_ns   INTEGER NOT NULL,
    sha256     TEXT,
    n_faces    INTEGER NOT NULL DEFAULT 0,
    error      TEXT,
    indexed_at TEXT NOT NULL
);
CREATE TABLE faces (
    id            INTEGER PRIMARY KEY,
    file_id       INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    face_index    INTEGER NOT NULL,
    left          REAL NOT NULL,
    top           REAL NOT NULL,
    right         REAL NOT NULL,
    bottom        REAL NOT NULL,
    score         REAL,
    detector      TEXT,
    landmarks     BLOB,
    probabilities BLOB NOT NULL,
    descriptor    BLOB,
    UNIQUE (file_id, face_index)
);
"""

# what must agree between an index and the run that opens it, and between merged shards
_MODEL_KEYS = ("schema_version", "model_name", "model_version", "attributes", "descriptor_dim")

# load_matrix concatenates at most this many bytes per SQL statement: SQLite's default limit on
# one value is 1e9 bytes, and smaller pieces keep the peak memory near the size of the result
_CHUNK_BYTES = 1 << 28

_FACE_COLUMNS = ("file_id, face_index, left, top, right, bottom, score, detector, landmarks, "
                 "probabilities, descriptor")


@dataclass(frozen=True)
class FaceRecord:
    """One detected face, to be written by :meth:`IndexStore.write_batch`.

    ``box`` is (left, top, right, bottom) in pixels; ``probabilities`` the k predicted
    probabilities (order of the index's attributes); ``landmarks`` an (n, 2) array of points;
    ``descriptor`` the identity descriptor (``descriptor_dim`` values) or None.
    """

    box: tuple[float, float, float, float]
    probabilities: np.ndarray
    score: float | None = None
    detector: str | None = None
    landmarks: np.ndarray | None = None
    descriptor: np.ndarray | None = None


@dataclass(frozen=True)
class FileRecord:
    """One file with its faces, or with the ``error`` that kept it from being read."""

    path: str
    size: int
    mtime_ns: int
    sha256: str | None = None
    faces: Sequence[FaceRecord] = ()
    error: str | None = None


@dataclass(frozen=True)
class StoredFile:
    path: str
    size: int
    mtime_ns: int
    sha256: str | None
    n_faces: int
    error: str | None
    indexed_at: str


@dataclass(frozen=True)
class StoredFace:
    """A face as stored: what a thumbnail (``path`` and ``box``) or a "like this" search needs."""

    face_id: int
    file_id: int
    path: str
    face_index: int
    box: tuple[float, float, float, float]
    score: float | None
    detector: str | None
    landmarks: np.ndarray  # (n, 2) float32; (0, 2) when none were stored
    probabilities: np.ndarray  # (k,) float32
    descriptor: np.ndarray | None  # (descriptor_dim,) float32


@dataclass(frozen=True)
class Plan:
    """What an indexing run has to do, by relative path (each list sorted).

    ``changed`` files differ in size or modification time; the caller may compare their content
    hash with :meth:`IndexStore.file` and, when equal, record the new stat with
    :meth:`IndexStore.update_stat` instead of indexing them again.
    """

    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FaceMatrix:
    """Every face of an index as arrays, in ascending face id; rows align across the arrays.

    ``probabilities`` is (N, k) float32 with columns ``attributes``; ``descriptors`` is
    (N, descriptor_dim) float32 with NaN rows for faces stored without one, or None when not
    loaded. Paths come from :meth:`IndexStore.paths` for the rows a search shows.
    """

    attributes: tuple[str, ...]
    face_ids: np.ndarray
    file_ids: np.ndarray
    probabilities: np.ndarray
    descriptors: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.face_ids)


def shard_of(path: str | PurePath, n_shards: int) -> int:
    """The shard (0 to ``n_shards - 1``) that indexes ``path``, the same on every machine.

    ``path`` is relative to the collection root; a ``PurePath`` is taken with ``/`` separators
    and the text in Unicode NFC (macOS file names come decomposed). The hash is BLAKE2b because
    Python's ``hash`` of a string changes from one process to the next.

    >>> shard_of("2019/img_0001.jpg", 4) == shard_of("2019/img_0001.jpg", 4)
    True
    """
    if n_shards < 1:
        raise ValueError(f"n_shards must be at least 1, got {n_shards}")
    text = path.as_posix() if isinstance(path, PurePath) else str(path)
    digest = hashlib.blake2b(unicodedata.normalize("NFC", text).encode("utf-8"), digest_size=8)
    return int.from_bytes(digest.digest(), "big") % n_shards


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _blob(values, dtype=np.float32) -> bytes | None:
    return None if values is None else np.ascontiguousarray(values, dtype=dtype).tobytes()


def _connect(path: Path, read_only: bool = False) -> sqlite3.Connection:
    # isolation_level=None: transactions are opened and closed explicitly (_transaction), never
    # implicitly by the sqlite3 module
    if read_only:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                             isolation_level=None, timeout=30)
    else:
        db = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        if not read_only:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as err:  # "file is not a database"
        db.close()
        raise _not_an_index(path, str(err)) from None
    return db


def _not_an_index(path: Path, why: str) -> DataError:
    return DataError(f"not an mtfap index ({why})", path=path, hint="give another --db")


def _read_meta(db: sqlite3.Connection, path: Path) -> dict[str, str]:
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    if "meta" not in tables:
        raise _not_an_index(path, "no meta table")
    meta = dict(db.execute("SELECT key, value FROM meta"))
    # load_matrix reads BLOBs through text concatenation, which is byte for byte only in UTF-8
    encoding = db.execute("PRAGMA encoding").fetchone()[0]
    if encoding != "UTF-8":
        raise DataError(f"index text encoding is {encoding}, mtfap writes UTF-8", path=path,
                        hint="rebuild it with --rebuild")
    return meta


def _describe(meta: dict[str, str]) -> str:
    attributes = json.loads(meta.get("attributes", "[]"))
    return (f"model {meta.get('model_name')!r} version {meta.get('model_version')!r} "
            f"({len(attributes)} attributes, descriptors of {meta.get('descriptor_dim')} values)")


def _check_model(stored: dict[str, str], wanted: dict[str, str], path: Path, other: str) -> None:
    """Raise when ``stored`` (the index at ``path``) was built differently from ``wanted``."""
    if stored.get("schema_version") != wanted["schema_version"]:
        raise DataError(f"index schema version {stored.get('schema_version')}, {other} "
                        f"version {wanted['schema_version']}", path=path,
                        hint="use another --db, or --rebuild to index again")
    differ = [k for k in _MODEL_KEYS if stored.get(k) != wanted[k]]
    if differ:
        raise DataError(f"the index holds {_describe(stored)}, {other} {_describe(wanted)}; "
                        f"an index never mixes models (they differ in {', '.join(differ)})",
                        path=path, hint="use another --db, or --rebuild to index again")


class IndexStore:
    """An open index database (see the module docstring for the schema).

    Open one with :meth:`create_or_open` (indexing: the model must match) or :meth:`open`
    (searching: any model); use it as a context manager or call :meth:`close`.
    """

    def __init__(self, db: sqlite3.Connection, path: Path, meta: dict[str, str]):
        self._db, self.path, self.meta = db, path, meta
        self.model_name = meta["model_name"]
        self.model_version = meta["model_version"]
        self.attributes: tuple[str, ...] = tuple(json.loads(meta["attributes"]))
        self.descriptor_dim = int(meta["descriptor_dim"])

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def create_or_open(cls, path: str | Path, model_name: str, model_version: str,
                       attributes: Sequence[str], descriptor_dim: int = 128,
                       rebuild: bool = False) -> IndexStore:
        """Create the index at ``path``, or open it when it exists and holds the same model.

        Parameters
        ----------
        path : str or Path
        model_name, model_version : str
            The model whose predictions are written; stored in ``meta``.
        attributes : sequence of str
            The k columns of the probability vectors.
        descriptor_dim : int, default 128
            Length of the identity descriptors (dlib: 128; 0 for none).
        rebuild : bool, default False
            Delete an existing index (and its cache) first. Refused for a file that is not an
            mtfap index, so a mistyped path cannot delete someone's data.

        Raises
        ------
        DataError
            The file is not an mtfap index, or holds another schema version or another model
            (the message names both and says to use another ``--db`` or ``--rebuild``).
        """
        path = Path(path)
        wanted = {"schema_version": str(SCHEMA_VERSION), "model_name": str(model_name),
                  "model_version": str(model_version), "attributes": json.dumps(list(attributes)),
                  "descriptor_dim": str(int(descriptor_dim))}
        if rebuild and path.exists():
            with closing(_connect(path, read_only=True)) as db:
                _read_meta(db, path)  # refuses a file that is not an index
            for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), _cache_path(path)):
                leftover.unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        db = _connect(path)
        try:
            with _transaction(db):  # BEGIN IMMEDIATE: two processes creating it at once wait
                empty = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
                if empty:
                    # statement by statement: executescript would commit the transaction first
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    meta = {**wanted, "created": _now(), "database_id": uuid.uuid4().hex,
                            "generation": "0"}
                    db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            meta = _read_meta(db, path)
            _check_model(meta, wanted, path, "this run uses")
        except BaseException:
            db.close()
            raise
        return cls(db, path, meta)

    @classmethod
    def open(cls, path: str | Path) -> IndexStore:
        """Open an existing index for searching, whatever its model (read it from ``meta``)."""
        path = Path(path)
        if not path.is_file():
            raise DataError("no index here", path=path,
                            hint=f"build one with: mtfap index PHOTOS --db {path}")
        db = _connect(path)
        try:
            meta = _read_meta(db, path)
            if meta.get("schema_version") != str(SCHEMA_VERSION):
                raise DataError(f"index schema version {meta.get('schema_version')}, this "
                                f"mtfap reads version {SCHEMA_VERSION}", path=path,
                                hint="use another --db, or --rebuild to index again")
        except BaseException:
            db.close()
            raise
        return cls(db, path, meta)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> IndexStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- incremental updates ---------------------------------------------------------------

    def plan(self, files: Iterable[tuple[str, int, int]]) -> Plan:
        """Compare the files on disk, ``(path, size, mtime_ns)``, with the index.

        ``files`` must be the whole collection (or the whole shard): stored paths missing from
        it are reported as ``gone``. Files stored with an error count as unchanged until their
        size or time changes, so a re-run does not retry them.
        """
        stored = {path: (size, mtime) for path, size, mtime
                  in self._db.execute("SELECT path, size, mtime_ns FROM files")}
        plan = Plan()
        seen = set()
        for path, size, mtime_ns in files:
            seen.add(path)
            before = stored.get(path)
            target = plan.new if before is None else (
                plan.unchanged if before == (size, mtime_ns) else plan.changed)
            target.append(path)
        plan.gone.extend(p for p in stored if p not in seen)
        for paths in (plan.new, plan.changed, plan.unchanged, plan.gone):
            paths.sort()
        return plan

    def write_batch(self, records: Sequence[FileRecord]) -> None:
        """Write files with their faces in one transaction, replacing the faces stored for any
        of these paths before.

        All records are checked before anything is written; a bad one raises ``ValueError``
        naming its path and face, and nothing of the batch is written.
        """
        rows = [self._encode(record) for record in records]
        twice = sorted(p for p, n in Counter(r.path for r in records).items() if n > 1)
        if twice:
            raise ValueError(f"the batch holds these paths more than once: {', '.join(twice)}")
        with _transaction(self._db):
            for file_row, face_rows in rows:
                file_id = self._db.execute(
                    "INSERT INTO files (path, size, mtime_ns, sha256, n_faces, error, indexed_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET"
                    " size = excluded.size, mtime_ns = excluded.mtime_ns,"
                    " sha256 = excluded.sha256, n_faces = excluded.n_faces,"
                    " error = excluded.error, indexed_at = excluded.indexed_at RETURNING id",
                    file_row).fetchone()[0]
                self._db.execute("DELETE FROM faces WHERE file_id = ?", (file_id,))
                self._db.executemany(f"INSERT INTO faces ({_FACE_COLUMNS}) VALUES "
                                     f"(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                     [(file_id, *face) for face in face_rows])
            _next_generation(self._db)

    def _encode(self, record: FileRecord) -> tuple[tuple, list[tuple]]:
        """Check one record against the index and turn it into table rows."""
        k, d = len(self.attributes), self.descriptor_dim
        faces = []
        for index, face in enumerate(record.faces):
            where = f"{record.path}: face {index}:"
            box = np.asarray(face.box, dtype=np.float64)
            probabilities = np.asarray(face.probabilities, dtype=np.float32)
            if box.shape != (4,) or not np.isfinite(box).all():
                raise ValueError(f"{where} box must be 4 finite numbers (left, top, right, "
                                 f"bottom), got {face.box!r}")
            if probabilities.shape != (k,):
                raise ValueError(f"{where} probabilities must have {k} values (one per "
                                 f"attribute of the index), got shape {probabilities.shape}")
            if not ((probabilities >= 0) & (probabilities <= 1)).all():
                raise ValueError(f"{where} probabilities must lie in [0, 1]")
            if face.descriptor is not None and (np.shape(face.descriptor) != (d,)
                                                or not np.isfinite(face.descriptor).all()):
                raise ValueError(f"{where} descriptor must be {d} finite values, got shape "
                                 f"{np.shape(face.descriptor)}")
            if face.landmarks is not None and (np.ndim(face.landmarks) != 2
                                               or np.shape(face.landmarks)[1] != 2):
                raise ValueError(f"{where} landmarks must be an (n, 2) array of points, got "
                                 f"shape {np.shape(face.landmarks)}")
            faces.append((index, *box.tolist(), None if face.score is None else float(face.score),
                          face.detector, _blob(face.landmarks), probabilities.tobytes(),
                          _blob(face.descriptor)))
        file_row = (record.path, int(record.size), int(record.mtime_ns), record.sha256,
                    len(faces), record.error, _now())
        return file_row, faces

    def remove(self, paths: Iterable[str]) -> int:
        """Delete files (and their faces) in one transaction; returns how many were stored."""
        with _transaction(self._db):
            removed = self._db.executemany("DELETE FROM files WHERE path = ?",
                                           [(p,) for p in paths]).rowcount
            _next_generation(self._db)
        return removed

    def update_stat(self, files: Iterable[tuple[str, int, int]]) -> None:
        """Record a new ``(path, size, mtime_ns)`` for files whose content hash is unchanged, so
        that the next :meth:`plan` counts them as unchanged without indexing them again."""
        with _transaction(self._db):
            self._db.executemany("UPDATE files SET size = ?, mtime_ns = ? WHERE path = ?",
                                 [(size, mtime, path) for path, size, mtime in files])

    # -- reading ---------------------------------------------------------------------------

    def file(self, path: str) -> StoredFile | None:
        """The stored row of ``path``, or None."""
        row = self._db.execute("SELECT path, size, mtime_ns, sha256, n_faces, error, indexed_at "
                               "FROM files WHERE path = ?", (path,)).fetchone()
        return None if row is None else StoredFile(*row)

    def errors(self) -> list[StoredFile]:
        """The files that could not be read, with why, by path."""
        return [StoredFile(*row) for row in self._db.execute(
            "SELECT path, size, mtime_ns, sha256, n_faces, error, indexed_at FROM files "
            "WHERE error IS NOT NULL ORDER BY path")]

    def counts(self) -> dict[str, int]:
        """Numbers of files, faces and unreadable files."""
        files, errors = self._db.execute(
            "SELECT count(*), count(error) FROM files").fetchone()
        faces = self._db.execute("SELECT count(*) FROM faces").fetchone()[0]
        return {"files": files, "faces": faces, "errors": errors}

    def paths(self, file_ids: Iterable[int]) -> list[str]:
        """The paths of ``file_ids``, in their order: for the rows a search shows.

        Loading every path with the matrix would cost about 0.5 s per million files.
        """
        file_ids = [int(i) for i in file_ids]
        found = {}
        for start in range(0, len(file_ids), 900):  # below SQLite's 999 parameters
            chunk = file_ids[start:start + 900]
            found.update(self._db.execute(
                f"SELECT id, path FROM files WHERE id IN ({','.join('?' * len(chunk))})", chunk))
        missing = [i for i in file_ids if i not in found]
        if missing:
            raise KeyError(f"no file with id {missing[0]} in {self.path}")
        return [found[i] for i in file_ids]

    def face(self, face_id: int) -> StoredFace:
        """One face with its file's path, box, landmarks and predictions."""
        row = self._db.execute(
            "SELECT faces.id, file_id, path, face_index, left, top, right, bottom, score, "
            "detector, landmarks, probabilities, descriptor FROM faces JOIN files "
            "ON files.id = faces.file_id WHERE faces.id = ?", (int(face_id),)).fetchone()
        if row is None:
            raise KeyError(f"no face with id {face_id} in {self.path}")
        (face_id, file_id, path, face_index, *box, score, detector, landmarks, probabilities,
         descriptor) = row
        return StoredFace(
            face_id, file_id, path, face_index, tuple(box), score, detector,
            np.frombuffer(landmarks or b"", dtype=np.float32).reshape(-1, 2),
            np.frombuffer(probabilities, dtype=np.float32),
            None if descriptor is None else np.frombuffer(descriptor, dtype=np.float32))

    def load_matrix(self, descriptors: bool = False, cache: bool = True) -> FaceMatrix:
        """Every face's probabilities (and descriptors) as matrices, for ranking.

        Parameters
        ----------
        descriptors : bool, default False
            Also load the (N, descriptor_dim) descriptor matrix (4x the bytes of the
            probabilities for dlib's 128 values against 40 attributes).
        cache : bool, default True
            Read from (and write) ``<db>.matrix.npz`` when it belongs to this exact state of
            the database; a cache that cannot be written (read-only folder) is skipped.
        """
        if descriptors and self.descriptor_dim == 0:
            raise ValueError(f"{self.path} stores no descriptors (descriptor_dim 0)")
        with _transaction(self._db, "BEGIN"):  # one snapshot for the key and the data
            database_id, generation = (self._db.execute(
                "SELECT value FROM meta WHERE key = ?", (name,)).fetchone()[0]
                for name in ("database_id", "generation"))
            key = f"{database_id}:{generation}"
            arrays = _read_cache(self.path, key, descriptors) if cache else None
            if arrays is None:
                arrays = self._load_arrays(descriptors)
                if cache:
                    _write_cache(self.path, key, arrays)
        return FaceMatrix(self.attributes, arrays["face_ids"], arrays["file_ids"],
                          arrays["probabilities"], arrays.get("descriptors"))

    def _load_arrays(self, descriptors: bool) -> dict[str, np.ndarray]:
        """Read the face rows in chunks of ids.

        ``group_concat`` joins the BLOBs inside SQLite and ``CAST(... AS BLOB)`` hands them over
        as one bytes object: 0.5 s for a million probability vectors, against 1.5 s for a Python
        loop over the rows and 2.2 s through ``hex()`` (one measurement on a lightly loaded
        machine). All aggregates of one statement see the rows in the same order, so ids and
        vectors stay aligned.
        """
        k, d = len(self.attributes), self.descriptor_dim
        row_bytes = 4 * (k + (d if descriptors else 0))
        columns = ("count(*), max(id), group_concat(id), group_concat(file_id), "
                   "CAST(group_concat(probabilities, '') AS BLOB)")
        if descriptors:  # NULL would be skipped by group_concat: a NaN vector keeps rows aligned
            columns += ", CAST(group_concat(coalesce(descriptor, :nan), '') AS BLOB)"
        statement = (f"SELECT {columns} FROM (SELECT id, file_id, probabilities, descriptor "
                     f"FROM faces WHERE id > :after ORDER BY id LIMIT :limit)")
        nan = np.full(d, np.nan, dtype=np.float32).tobytes()
        parts: dict[str, list] = {"face_ids": [], "file_ids": [], "probabilities": [],
                                  "descriptors": []}
        after = 0
        while True:
            n, last, ids, file_ids, *blobs = self._db.execute(statement, {
                "after": after, "limit": max(1, _CHUNK_BYTES // row_bytes), "nan": nan}).fetchone()
            if n == 0:
                break
            for name, blob, width in zip(("probabilities", "descriptors"), blobs, (k, d)):
                if len(blob) != 4 * n * width:
                    raise RuntimeError(f"{self.path}: {name} of {n} faces take {len(blob)} "
                                       f"bytes, expected {4 * n * width}")
                parts[name].append(np.frombuffer(blob, dtype=np.float32).reshape(n, width))
            # np.fromstring parses "1,2,3" in C: 0.03 s a million, against 0.2 s for split()
            parts["face_ids"].append(np.fromstring(ids, dtype=np.int64, sep=","))
            parts["file_ids"].append(np.fromstring(file_ids, dtype=np.int64, sep=","))
            after = last
        arrays = {"face_ids": np.zeros(0, np.int64), "file_ids": np.zeros(0, np.int64),
                  "probabilities": np.zeros((0, k), np.float32)}
        if descriptors:
            arrays["descriptors"] = np.zeros((0, d), np.float32)
        arrays.update({name: np.concatenate(chunks) for name, chunks in parts.items() if chunks})
        order = np.argsort(arrays["face_ids"], kind="stable")
        if (order != np.arange(len(order))).any():
            arrays = {name: values[order] for name, values in arrays.items()}
        return arrays


@contextmanager
def _transaction(db: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE"):
    """One transaction: committed when the block ends, rolled back on any exception.

    ``BEGIN IMMEDIATE`` takes the write lock at once, so a second writer waits (``timeout``)
    instead of failing half-way with "database is locked".
    """
    db.execute(begin)
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _next_generation(db: sqlite3.Connection) -> None:
    """Mark a new state of the data (inside the write's transaction): caches keyed by the
    previous one stop matching."""
    db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")


def _cache_path(path: Path) -> Path:
    return Path(f"{path}.matrix.npz")


def _read_cache(path: Path, key: str, descriptors: bool) -> dict[str, np.ndarray] | None:
    """The cached arrays when the cache holds ``key`` (and descriptors if asked), else None."""
    try:
        with np.load(_cache_path(path), allow_pickle=False) as cached:
            if str(cached["key"]) != key or (descriptors and "descriptors" not in cached.files):
                return None
            names = ["face_ids", "file_ids", "probabilities"] + (["descriptors"] * descriptors)
            return {name: cached[name] for name in names}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None  # absent, or damaged by something other than atomic_write: rebuild it


def _write_cache(path: Path, key: str, arrays: dict[str, np.ndarray]) -> None:
    try:
        write_npz(_cache_path(path), {"key": np.array(key), **arrays})
    except OSError:
        pass  # a read-only folder: search works without the cache, only slower


def merge(target: str | Path, shards: Sequence[str | Path]) -> dict[str, int]:
    """Join shard indexes into ``target`` (created if absent) in one transaction.

    All shards and the target must hold the same model and schema version, and no path may be
    in two of them (shards split by :func:`shard_of` never overlap): otherwise ``DataError``
    and nothing is written. Face and file ids are renumbered; everything else is copied as is.

    Returns
    -------
    dict
        Numbers of ``files`` and ``faces`` merged.
    """
    target = Path(target)
    sources = [Path(s) for s in shards]
    if not sources:
        raise ValueError("merge needs at least one shard")
    connections = []
    try:
        metas = []
        for source in sources:
            if not source.is_file():
                raise DataError("no such shard index", path=source)
            if target.exists() and source.samefile(target):
                raise DataError("a shard cannot be merged into itself", path=source)
            connections.append(_connect(source, read_only=True))
            metas.append(_read_meta(connections[-1], source))
        first = {k: metas[0].get(k) for k in _MODEL_KEYS}
        for source, meta in zip(sources[1:], metas[1:]):
            _check_model(meta, first, source, f"shard {sources[0]} holds")
        with IndexStore.create_or_open(target, first["model_name"], first["model_version"],
                                       json.loads(first["attributes"]),
                                       int(first["descriptor_dim"])) as store:
            _check_disjoint(store, sources, connections)
            return _copy_shards(store._db, connections)
    finally:
        for connection in connections:
            connection.close()


def _check_disjoint(store: IndexStore, sources: list[Path], connections) -> None:
    owner = {path: store.path for (path,) in store._db.execute("SELECT path FROM files")}
    for source, connection in zip(sources, connections):
        for (path,) in connection.execute("SELECT path FROM files"):
            if path in owner:
                raise DataError(f"{path!r} is both in {owner[path]} and in {source}", path=source,
                                hint="shards must hold disjoint files: split them with "
                                     "shard_of, or remove the file from one of them")
            owner[path] = source


def _copy_shards(db: sqlite3.Connection, connections) -> dict[str, int]:
    counts = {"files": 0, "faces": 0}
    with _transaction(db):
        for connection in connections:
            # keep each shard's file ids, moved past the target's, so faces need no lookup
            offset = db.execute("SELECT coalesce(max(id), 0) FROM files").fetchone()[0]
            counts["files"] += db.executemany(
                "INSERT INTO files (id, path, size, mtime_ns, sha256, n_faces, error, indexed_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                ((file_id + offset, *rest) for file_id, *rest in connection.execute(
                    "SELECT id, path, size, mtime_ns, sha256, n_faces, error, indexed_at "
                    "FROM files"))).rowcount
            counts["faces"] += db.executemany(
                f"INSERT INTO faces ({_FACE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ((file_id + offset, *rest) for file_id, *rest in connection.execute(
                    f"SELECT {_FACE_COLUMNS} FROM faces ORDER BY id"))).rowcount
        _next_generation(db)
    return counts
