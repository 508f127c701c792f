"""The index database (mtfap.search.store); ranking by likeness and identity (mtfap.search.rank)."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import unicodedata
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pytest

from mtfap.attributes import CELEBA_ATTRIBUTES
from mtfap.errors import DataError
from mtfap.search import store as store_module
from mtfap.search.rank import rank_like, rank_person, squared_norms
from mtfap.search.store import FaceRecord, FileRecord, IndexStore, merge, shard_of

MODEL = {"model_name": "celeba-resnet", "model_version": "3", "attributes": CELEBA_ATTRIBUTES,
         "descriptor_dim": 128}


def make_face(seed: int, descriptor: bool = True) -> FaceRecord:
    rng = np.random.default_rng(seed)
    return FaceRecord(box=(10.0 + seed % 7, 20.0, 90.0, 110.0),
                      probabilities=rng.random(len(CELEBA_ATTRIBUTES)), score=0.99,
                      detector="hog", landmarks=rng.random((5, 2)) * 100,
                      descriptor=rng.standard_normal(128) if descriptor else None)


def make_file(index: int, n_faces: int | None = None, version: int = 0) -> FileRecord:
    """``img_{index}.jpg`` with 0-3 faces, each seeded by (index, face, version)."""
    n_faces = index % 4 if n_faces is None else n_faces
    faces = [make_face(100_000 * version + 10 * index + j, descriptor=(index + j) % 5 != 0)
             for j in range(n_faces)]
    return FileRecord(f"dir{index % 3}/img_{index:05d}.jpg", size=1000 + index,
                      mtime_ns=10**18 + index + version, sha256=f"{index:064x}", faces=faces)


def stat(record: FileRecord) -> tuple[str, int, int]:
    return record.path, record.size, record.mtime_ns


@pytest.fixture
def store(tmp_path):
    with IndexStore.create_or_open(tmp_path / "photos.db", **MODEL) as opened:
        yield opened


def stored_faces(store: IndexStore) -> dict[tuple[str, int], np.ndarray]:
    """(path, face_index) -> probabilities of every stored face."""
    matrix = store.load_matrix(cache=False)
    return {(p, store.face(i).face_index): row for i, p, row in
            zip(matrix.face_ids, store.paths(matrix.file_ids), matrix.probabilities)}


# -- schema and opening ------------------------------------------------------------------

def test_a_new_index_records_its_model_and_uses_wal_with_foreign_keys(store):
    assert store.attributes == CELEBA_ATTRIBUTES and store.descriptor_dim == 128
    db = sqlite3.connect(store.path)
    meta = dict(db.execute("SELECT key, value FROM meta"))
    assert meta["schema_version"] == "1" and meta["model_name"] == "celeba-resnet"
    assert json.loads(meta["attributes"]) == list(CELEBA_ATTRIBUTES)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_lookups_by_path_and_by_file_use_an_index(store):
    for sql in ("SELECT id FROM files WHERE path = 'x'", "SELECT id FROM faces WHERE file_id = 1"):
        plan = " ".join(row[-1] for row in store._db.execute(f"EXPLAIN QUERY PLAN {sql}"))
        assert "USING" in plan and "INDEX" in plan, plan


def test_reopening_with_the_same_model_keeps_the_data(tmp_path):
    with IndexStore.create_or_open(tmp_path / "a.db", **MODEL) as first:
        first.write_batch([make_file(1)])
    with IndexStore.create_or_open(tmp_path / "a.db", **MODEL) as again:
        assert again.counts()["files"] == 1


@pytest.mark.parametrize("change, differ", [
    ({"model_version": "4"}, "model_version"),
    ({"model_name": "compact"}, "model_name"),
    ({"attributes": CELEBA_ATTRIBUTES[:39]}, "attributes"),
    ({"descriptor_dim": 0}, "descriptor_dim"),
])
def test_opening_an_index_of_another_model_fails_naming_both_and_what_to_do(tmp_path, change,
                                                                            differ):
    IndexStore.create_or_open(tmp_path / "a.db", **MODEL).close()
    with pytest.raises(DataError) as raised:
        IndexStore.create_or_open(tmp_path / "a.db", **{**MODEL, **change})
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'a.db'}: the index holds model 'celeba-resnet' "
                              f"version '3' (40 attributes")
    assert f"differ in {differ}" in message and "--db" in message and "--rebuild" in message


def test_an_index_of_another_schema_version_is_refused_until_rebuilt(tmp_path):
    IndexStore.create_or_open(tmp_path / "a.db", **MODEL).close()
    with sqlite3.connect(tmp_path / "a.db") as db:
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    for opening in (lambda: IndexStore.create_or_open(tmp_path / "a.db", **MODEL),
                    lambda: IndexStore.open(tmp_path / "a.db")):
        with pytest.raises(DataError, match=r"index schema version 2, .* version 1 \(use "
                                            r"another --db, or --rebuild"):
            opening()
    with IndexStore.create_or_open(tmp_path / "a.db", **MODEL, rebuild=True) as rebuilt:
        assert rebuilt.meta["schema_version"] == "1"


def test_rebuild_starts_a_new_index_but_refuses_a_file_that_is_not_one(tmp_path):
    with IndexStore.create_or_open(tmp_path / "a.db", **MODEL) as old:
        old.write_batch([make_file(1)])
        old.load_matrix()
    with IndexStore.create_or_open(tmp_path / "a.db", **{**MODEL, "model_version": "4"},
                                   rebuild=True) as new:
        assert new.counts()["files"] == 0 and new.model_version == "4"
    assert not Path(f"{tmp_path / 'a.db'}.matrix.npz").exists()
    (tmp_path / "notes.txt").write_text("my notes, not an index\n" * 100)
    with pytest.raises(DataError, match="not an mtfap index"):
        IndexStore.create_or_open(tmp_path / "notes.txt", **MODEL, rebuild=True)
    assert (tmp_path / "notes.txt").read_text().startswith("my notes")


def test_opening_a_missing_index_for_search_says_how_to_build_one(tmp_path):
    with pytest.raises(DataError, match=r"no index here \(build one with: mtfap index PHOTOS"):
        IndexStore.open(tmp_path / "none.db")


# -- incremental updates -----------------------------------------------------------------

def test_add_change_delete_then_plan_again(store):
    files = [make_file(i) for i in range(6)]
    store.write_batch(files[:4])
    plan = store.plan([stat(f) for f in files])
    assert plan.new == sorted(f.path for f in files[4:])
    assert plan.unchanged == sorted(f.path for f in files[:4]) and not plan.changed

    changed = make_file(2, n_faces=1, version=1)
    disk = [stat(f) for f in files[:2]] + [stat(changed)] + [stat(f) for f in files[3:]]
    plan = store.plan(disk[:3] + disk[4:])  # file 3 deleted from disk
    assert plan.changed == [changed.path] and plan.gone == [files[3].path]

    store.write_batch([changed] + files[4:])
    assert store.remove(plan.gone) == 1
    plan = store.plan(disk[:3] + disk[4:])
    assert not (plan.new or plan.changed or plan.gone) and len(plan.unchanged) == 5
    faces = stored_faces(store)
    assert sorted(i for p, i in faces if p == changed.path) == [0]  # old faces replaced
    np.testing.assert_allclose(faces[changed.path, 0], changed.faces[0].probabilities, rtol=1e-6)
    assert not any(p == files[3].path for p, _ in faces)  # cascaded
    assert store._db.execute("SELECT count(*) FROM faces").fetchone()[0] == len(faces)


def test_a_changed_file_with_the_same_hash_is_recorded_without_indexing_it_again(store):
    store.write_batch([make_file(1)])
    touched = ("dir1/img_00001.jpg", 1001, 5)
    assert store.plan([touched]).changed == [touched[0]]
    assert store.file(touched[0]).sha256 == f"{1:064x}"
    store.update_stat([touched])
    assert store.plan([touched]).unchanged == [touched[0]]


def test_unreadable_files_are_stored_with_their_error_listed_and_not_retried(store):
    store.write_batch([FileRecord("bad.jpg", 12, 34, error="cannot identify image file"),
                       make_file(1)])
    assert [(f.path, f.error) for f in store.errors()] == [("bad.jpg",
                                                            "cannot identify image file")]
    assert store.plan([("bad.jpg", 12, 34)]).unchanged == ["bad.jpg"]
    assert store.plan([("bad.jpg", 13, 34)]).changed == ["bad.jpg"]
    assert store.counts() == {"files": 2, "faces": 1, "errors": 1}


def test_a_bad_record_stops_the_whole_batch_before_anything_is_written(store):
    wrong = FileRecord("x.jpg", 1, 1, faces=[FaceRecord((0, 0, 1, 1), np.zeros(39))])
    with pytest.raises(ValueError, match=r"x.jpg: face 0: probabilities must have 40 values"):
        store.write_batch([make_file(1), wrong])
    with pytest.raises(ValueError, match=r"descriptor must be 128 finite values"):
        store.write_batch([FileRecord("y.jpg", 1, 1, faces=[FaceRecord(
            (0, 0, 1, 1), np.zeros(40), descriptor=np.zeros(64))])])
    with pytest.raises(ValueError, match=r"more than once: dir1/img_00001.jpg"):
        store.write_batch([make_file(1), make_file(1)])
    assert store.counts()["files"] == 0


# -- reading for search ------------------------------------------------------------------

def test_load_matrix_holds_every_face_as_stored_with_nan_for_missing_descriptors(store,
                                                                               monkeypatch):
    store.write_batch([make_file(i) for i in range(30)])
    store.remove([make_file(5).path])  # ids with a gap
    monkeypatch.setattr(store_module, "_CHUNK_BYTES", 7 * 4 * (40 + 128))  # 7 faces a chunk
    matrix = store.load_matrix(descriptors=True, cache=False)
    n_faces = sum(i % 4 for i in range(30)) - 5 % 4
    assert len(matrix) == store.counts()["faces"] == n_faces
    assert np.all(np.diff(matrix.face_ids) > 0)
    assert matrix.probabilities.dtype == np.float32
    assert matrix.descriptors.shape == (n_faces, 128)
    for row, face_id in enumerate(matrix.face_ids):
        face = store.face(face_id)
        assert face.file_id == matrix.file_ids[row]
        np.testing.assert_array_equal(face.probabilities, matrix.probabilities[row])
        if face.descriptor is None:
            assert np.isnan(matrix.descriptors[row]).all()
        else:
            np.testing.assert_array_equal(face.descriptor, matrix.descriptors[row])


def test_a_face_gives_what_a_thumbnail_needs(store):
    record = make_file(3)
    store.write_batch([record])
    face = store.face(store.load_matrix().face_ids[1])
    assert face.path == record.path and face.face_index == 1
    assert face.box == pytest.approx(record.faces[1].box)
    np.testing.assert_allclose(face.landmarks, record.faces[1].landmarks, rtol=1e-6)
    assert store.paths([face.file_id, face.file_id]) == [record.path] * 2
    with pytest.raises(KeyError, match="no face with id 999"):
        store.face(999)


def test_an_empty_index_loads_empty_matrices(store):
    matrix = store.load_matrix(descriptors=True)
    assert matrix.probabilities.shape == (0, 40) and matrix.descriptors.shape == (0, 128)


def test_the_matrix_cache_serves_the_same_state_and_is_dropped_by_any_write(store, monkeypatch):
    store.write_batch([make_file(i) for i in range(8)])
    first = store.load_matrix()
    calls = []
    loader = IndexStore._load_arrays
    monkeypatch.setattr(IndexStore, "_load_arrays",
                        lambda self, d: calls.append(d) or loader(self, d))
    np.testing.assert_array_equal(store.load_matrix().probabilities, first.probabilities)
    assert calls == []
    store.load_matrix(descriptors=True)  # the cache has no descriptors yet
    store.load_matrix(descriptors=True)
    assert calls == [True]
    store.remove([make_file(1).path])
    assert len(store.load_matrix()) == len(first) - 1 and calls == [True, False]


# -- sharding and merging ----------------------------------------------------------------

def test_shard_of_is_stable_across_processes_and_path_spellings():
    assert [shard_of(f"2019/img_{i:04d}.jpg", 8) for i in range(8)] == [
        shard_of(f"2019/img_{i:04d}.jpg", 8) for i in range(8)]
    code = "from mtfap.search.store import shard_of; print(shard_of('2019/img_0001.jpg', 1000))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONHASHSEED": "123"})
    assert int(other.stdout) == shard_of("2019/img_0001.jpg", 1000)
    assert shard_of(PureWindowsPath("2019\\img.jpg"), 97) == shard_of(
        PurePosixPath("2019/img.jpg"), 97)
    name = "photos/Zoë.jpg"
    assert shard_of(unicodedata.normalize("NFD", name), 97) == shard_of(name, 97)
    counts = np.bincount([shard_of(f"p/{i}.jpg", 4) for i in range(4000)], minlength=4)
    assert counts.min() > 900


def test_shards_merged_hold_what_one_index_would(tmp_path):
    files = [make_file(i) for i in range(40)] + [FileRecord("bad.jpg", 1, 2, error="truncated")]
    with IndexStore.create_or_open(tmp_path / "one.db", **MODEL) as one:
        one.write_batch(files)
        expected = stored_faces(one)
    shards = [tmp_path / f"shard{s}.db" for s in range(3)]
    for s, path in enumerate(shards):
        with IndexStore.create_or_open(path, **MODEL) as shard:
            shard.write_batch([f for f in files if shard_of(f.path, 3) == s])
    assert merge(tmp_path / "all.db", shards) == {"files": 41, "faces": len(expected)}
    with IndexStore.open(tmp_path / "all.db") as merged:
        got = stored_faces(merged)
        assert got.keys() == expected.keys()
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key])
        assert [f.path for f in merged.errors()] == ["bad.jpg"]
        assert merged._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert merged._db.execute("PRAGMA foreign_key_check").fetchall() == []


def test_merging_shards_with_a_path_in_two_of_them_fails_and_writes_nothing(tmp_path):
    for name, indices in (("a.db", [1, 2]), ("b.db", [2, 3])):
        with IndexStore.create_or_open(tmp_path / name, **MODEL) as shard:
            shard.write_batch([make_file(i) for i in indices])
    with pytest.raises(DataError, match=r"'dir2/img_00002.jpg' is both in .*a.db and in "
                                        r".*b.db .*disjoint"):
        merge(tmp_path / "all.db", [tmp_path / "a.db", tmp_path / "b.db"])
    with IndexStore.open(tmp_path / "all.db") as target:
        assert target.counts()["files"] == 0


def test_merging_shards_of_different_models_fails_naming_both(tmp_path):
    IndexStore.create_or_open(tmp_path / "a.db", **MODEL).close()
    IndexStore.create_or_open(tmp_path / "b.db", **{**MODEL, "model_version": "4"}).close()
    with pytest.raises(DataError, match=r"b.db: the index holds model 'celeba-resnet' version "
                                        r"'4' .*shard .*a.db holds model 'celeba-resnet' "
                                        r"version '3'"):
        merge(tmp_path / "all.db", [tmp_path / "a.db", tmp_path / "b.db"])
    assert not (tmp_path / "all.db").exists()


# -- a process killed while writing ------------------------------------------------------

# writes files img_00000.jpg ... in sorted batches, each file with 3 faces, skipping what is stored
WRITER = """
import sys
import numpy as np
from mtfap.attributes import CELEBA_ATTRIBUTES
from mtfap.search.store import FaceRecord, FileRecord, IndexStore

path, n_files, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
faces = [FaceRecord((0, 0, 50, 60), rng.random(40), descriptor=rng.standard_normal(128))
         for _ in range(3)]
with IndexStore.create_or_open(path, "celeba-resnet", "3", CELEBA_ATTRIBUTES, 128) as store:
    todo = store.plan((f"img_{i:05d}.jpg", 100, 1) for i in range(n_files)).new
    for start in range(0, len(todo), batch):
        store.write_batch([FileRecord(p, 100, 1, faces=faces) for p in todo[start:start + batch]])
"""


def count_files(path: Path) -> int:
    try:
        with sqlite3.connect(path, timeout=5) as db:
            return db.execute("SELECT count(*) FROM files").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_a_writer_killed_at_any_moment_leaves_whole_batches_and_a_rerun_completes(tmp_path):
    n_files, batch = 2000, 50
    db_path = tmp_path / "photos.db"
    writer = [sys.executable, "-c", WRITER, str(db_path), str(n_files), str(batch)]
    rng = np.random.default_rng(0)
    for kill in range(2):
        before = count_files(db_path)
        child = subprocess.Popen(writer)
        deadline = time.monotonic() + 60
        while count_files(db_path) <= before and child.poll() is None:
            assert time.monotonic() < deadline, "the writer wrote nothing"
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.03))  # somewhere inside a later batch
        child.send_signal(signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL, "the writer finished before the kill"
        with sqlite3.connect(db_path) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            paths = [p for (p,) in db.execute("SELECT path FROM files ORDER BY path")]
            assert len(paths) % batch == 0 and before < len(paths) < n_files
            n_faces = db.execute("SELECT count(*) FROM faces").fetchone()[0]
            assert n_faces == 3 * len(paths)
            assert db.execute("SELECT sum(n_faces) FROM files").fetchone()[0] == n_faces
    assert paths == [f"img_{i:05d}.jpg" for i in range(len(paths))]  # whole batches, in order

    subprocess.run(writer, check=True)
    with IndexStore.open(db_path) as store:
        assert store.counts() == {"files": n_files, "faces": 3 * n_files, "errors": 0}
        assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert store._db.execute("PRAGMA foreign_key_check").fetchall() == []


# -- ranking by likeness and by identity -------------------------------------------------

def test_rank_like_orders_faces_by_l1_distance_between_probabilities():
    rng = np.random.default_rng(0)
    probabilities = rng.random((500, 40)).astype(np.float32)
    ranking = rank_like(probabilities[7], probabilities, limit=5, exclude=7)
    distances = np.abs(probabilities - probabilities[7]).sum(1)
    distances[7] = np.inf
    np.testing.assert_array_equal(ranking.rows, np.argsort(distances)[:5])
    np.testing.assert_allclose(ranking.values, np.sort(distances)[:5], rtol=1e-5)
    assert rank_like(probabilities[7], probabilities, limit=1).rows.tolist() == [7]
    everything_else = rank_like(probabilities[7], probabilities[:10], limit=50, exclude=[7, 8])
    assert sorted(everything_else.rows.tolist()) == [0, 1, 2, 3, 4, 5, 6, 9]


def test_rank_person_finds_the_same_person_under_dlibs_threshold_closest_first():
    rng = np.random.default_rng(0)
    people = rng.standard_normal((200, 128)).astype(np.float32)
    people /= np.linalg.norm(people, axis=1, keepdims=True)
    descriptors = np.repeat(people, 5, axis=0)  # 5 photos of each person
    descriptors += rng.normal(0, 0.02, descriptors.shape).astype(np.float32)
    descriptors[11] = np.nan  # a face without a descriptor
    ranking = rank_person(descriptors[10], descriptors, limit=20,
                          norms=squared_norms(descriptors))
    assert sorted(ranking.rows.tolist()) == [10, 12, 13, 14]
    exact = np.linalg.norm(descriptors[ranking.rows] - descriptors[10], axis=1)
    np.testing.assert_allclose(ranking.values, exact, atol=1e-3)
    assert ranking.rows[0] == 10 and np.all(np.diff(ranking.values) >= 0)
    assert len(rank_person(-people[0], descriptors).rows) == 0
    assert rank_person(descriptors[10], descriptors, limit=2).rows.tolist() == \
        ranking.rows[:2].tolist()
