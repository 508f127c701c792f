"""`mtfap index` and `mtfap search` on real faces: the ranking against the true labels, re-runs
that read nothing, photos added, changed and deleted, a run killed with SIGKILL, shards,
models and framings that must not mix, and malformed queries."""

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from index_factory import FROZEN, QUERY, celeba_collection, lfw_photos, matches

from mtfap.applications.face_search import FaceSearch
from mtfap.applications.index import CollectionIndexer, index_collection, parse_shard
from mtfap.attributes import CELEBA_ATTRIBUTES
from mtfap.cli import main
from mtfap.data.decode import decode_image
from mtfap.evaluation.retrieval import average_precision
from mtfap.search.store import IndexStore

pytestmark = pytest.mark.data

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def celeba_photos(celeba_dir, tmp_path_factory):
    """Sixteen CelebA test faces: four old men with glasses among people who differ from them
    in one or two conditions; ``(folder, {file: labels})``."""
    folder = tmp_path_factory.mktemp("celeba") / "photos"
    return folder, celeba_collection(celeba_dir, folder)


@pytest.fixture(scope="module")
def celeba_index(celeba_photos, tmp_path_factory):
    folder, _ = celeba_photos
    db = tmp_path_factory.mktemp("index") / "photos.db"
    report = index_collection(folder, db, FROZEN, aligned=True, workers=1)
    return db, report


def ranked_relevance(search: FaceSearch, labels, text: str, wanted: dict) -> tuple[list, int]:
    _, hits = search.query(text, limit=len(labels))
    return ([matches(labels[hit.path], wanted) for hit in hits],
            sum(matches(v, wanted) for v in labels.values()))


def test_an_indexed_folder_of_real_faces_ranks_them_by_the_query_as_their_labels_say(
        celeba_photos, celeba_index):
    _, labels = celeba_photos
    db, report = celeba_index
    assert (report.new, report.faces, report.errors) == (16, 16, [])
    search = FaceSearch(db)
    assert str(search.parse(QUERY)) == "~Young & Male & Eyeglasses"
    relevant, total = ranked_relevance(search, labels, QUERY,
                                       {"Male": True, "Young": False, "Eyeglasses": True})
    assert total == 4 and relevant[0] and average_precision(relevant, total) >= 0.7
    for text, wanted in (("glasses", {"Eyeglasses": True}), ("woman", {"Male": False})):
        relevant, total = ranked_relevance(search, labels, text, wanted)
        assert average_precision(relevant, total) >= 0.8, text
    # the ranking is the joint probability: scores fall, and each is the sum of the logs
    _, hits = search.query("Male & ~Young & Eyeglasses", limit=16)
    values = [hit.value for hit in hits]
    assert values == sorted(values, reverse=True)
    p = hits[0].probabilities
    columns = [CELEBA_ATTRIBUTES.index(a) for a in ("Male", "Young", "Eyeglasses")]
    expected = np.log(p[columns[0]]) + np.log(1 - p[columns[1]]) + np.log(p[columns[2]])
    assert values[0] == pytest.approx(expected, abs=1e-4)


def test_the_index_stores_the_file_the_face_and_the_model(celeba_photos, celeba_index):
    folder, _ = celeba_photos
    db, _ = celeba_index
    with IndexStore.open(db) as store:
        assert (store.model_name, store.descriptor_dim) == (FROZEN, 0)  # aligned: no identity
        assert store.meta["framing"] == "aligned"
        assert Path(store.meta["collection_root"]) == folder.resolve()
        name = min(p.name for p in folder.iterdir())
        stored = store.file(name)
        data = (folder / name).read_bytes()
        assert stored.sha256 == hashlib.sha256(data).hexdigest() and stored.size == len(data)
        face = store.face(1)
        assert face.probabilities.shape == (40,) and face.box[2] > face.box[0]


def test_a_rerun_over_an_unchanged_collection_decodes_no_image(celeba_photos, celeba_index):
    folder, _ = celeba_photos
    db, _ = celeba_index
    before = _faces(db)
    indexer = CollectionIndexer(FROZEN, aligned=True, workers=1)
    calls = []
    indexer.decode = lambda *a, **k: calls.append(a) or decode_image(*a, **k)
    report = indexer.run(folder, db)
    assert calls == [] and report.read == 0 and report.decoded == 0
    assert (report.new, report.changed, report.touched, report.gone, report.unchanged) == \
        (0, 0, 0, 0, 16)
    assert _faces(db) == before  # same ids, same rows


def _faces(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT faces.id, path, probabilities FROM faces JOIN files "
                                  "ON files.id = file_id ORDER BY faces.id").fetchall()


# -- a collection that changes, indexed through detection ---------------------------------

PEOPLE = {"2001/colin_1.jpg": "Colin_Powell_0001", "2001/colin_2.jpg": "Colin_Powell_0002",
          "2002/serena_1.jpg": "Serena_Williams_0001", "2002/serena_2.jpg": "Serena_Williams_0002",
          "2003/tony_1.jpg": "Tony_Blair_0001"}


@pytest.fixture(scope="module")
def lfw_indexed(lfw_dir, tmp_path_factory):
    """Five LFW photos of three people in sub-folders, indexed with detection (identity
    descriptors included); ``(folder, db, report)``."""
    base = tmp_path_factory.mktemp("lfw")
    folder = base / "photos"
    lfw_photos(lfw_dir, folder, PEOPLE)
    (folder / ".thumbnails").mkdir()
    (folder / ".thumbnails" / "hidden.jpg").write_bytes((folder / "2001/colin_1.jpg").read_bytes())
    (folder / "notes.txt").write_text("not a photo")
    db = base / "lfw.db"
    report = index_collection(folder, db, FROZEN, workers=1)
    return folder, db, report


def test_detection_indexes_every_photo_with_an_identity_descriptor(lfw_indexed):
    _, db, report = lfw_indexed
    assert (report.new, report.faces, report.errors) == (5, 5, [])
    with IndexStore.open(db) as store:
        assert store.descriptor_dim == 128 and store.meta["framing"] == "detected"
        paths = [p for (p,) in store._db.execute("SELECT path FROM files ORDER BY path")]
    assert paths == sorted(PEOPLE)  # relative, with '/'; hidden folders and non-photos left out
    search = FaceSearch(db)
    colin = search.matrix(descriptors=True)[0]
    hits = search.person(colin.descriptors[0], limit=5)
    assert {hit.path for hit in hits} == {"2001/colin_1.jpg", "2001/colin_2.jpg"}


def test_added_changed_touched_and_deleted_photos_are_brought_up_to_date(lfw_indexed, lfw_dir,
                                                                         tmp_path):
    source, source_db, _ = lfw_indexed
    folder, db = tmp_path / "photos", tmp_path / "lfw.db"
    shutil.copytree(source, folder)
    shutil.copy(source_db, db)
    lfw_photos(lfw_dir, folder, {"2004/new.jpg": "George_W_Bush_0001",
                                 "2001/colin_2.jpg": "Tony_Blair_0002"})  # one new, one changed
    (folder / "2004" / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    touched = folder / "2002" / "serena_1.jpg"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    (folder / "2003" / "tony_1.jpg").unlink()
    before = {path: face for face, path, _ in _faces(db)}

    indexer = CollectionIndexer(FROZEN, workers=1)
    decoded = []
    indexer.decode = lambda data, name, **k: decoded.append(Path(name).name) or decode_image(
        data, name, **k)
    errors = []
    report = indexer.run(folder, db, on_error=errors.append)
    assert (report.new, report.changed, report.touched, report.gone, report.unchanged) == \
        (2, 1, 1, 1, 2)
    assert sorted(decoded) == ["broken.jpg", "colin_2.jpg", "new.jpg"]  # not the touched one
    assert len(errors) == 1 and "broken.jpg" in errors[0]
    after = {path: face for face, path, _ in _faces(db)}
    assert "2003/tony_1.jpg" not in after and "2004/new.jpg" in after
    assert after["2002/serena_1.jpg"] == before["2002/serena_1.jpg"]  # kept as it was
    assert after["2001/colin_2.jpg"] != before["2001/colin_2.jpg"]  # described again
    with IndexStore.open(db) as store:
        assert [e.path for e in store.errors()] == ["2004/broken.jpg"]
        assert store._db.execute("PRAGMA foreign_key_check").fetchall() == []
    # the changed photo is now Tony Blair: the person search finds it, not Colin's other one
    search = FaceSearch(db)
    matrix, _ = search.matrix(descriptors=True)
    row = int(np.flatnonzero(matrix.face_ids == after["2001/colin_2.jpg"])[0])
    assert "2001/colin_1.jpg" not in {h.path for h in search.person(matrix.descriptors[row])}

    decoded.clear()
    again = indexer.run(folder, db)
    assert decoded == [] and again.unchanged == 6 and again.errors == []  # errors not retried


def test_an_empty_folder_does_not_wipe_an_index(lfw_indexed, tmp_path, capsys):
    _, source_db, _ = lfw_indexed
    db = tmp_path / "lfw.db"
    shutil.copy(source_db, db)
    (tmp_path / "unmounted").mkdir()
    assert main(["index", str(tmp_path / "unmounted"), "--db", str(db), "--model", FROZEN]) == 2
    assert "refusing to drop them all" in capsys.readouterr().err
    with IndexStore.open(db) as store:
        assert store.counts()["files"] == 5


# -- a run killed with SIGKILL -------------------------------------------------------------

def count_files(path: Path) -> int:
    try:  # read-only: never creates the file
        with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT count(*) FROM files").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_an_index_run_killed_with_sigkill_leaves_an_intact_index_that_a_rerun_completes(
        celeba_dir, tmp_path):
    folder = tmp_path / "photos"
    labels = celeba_collection(celeba_dir, folder, skip=4)
    db = tmp_path / "photos.db"
    command = [sys.executable, "-m", "mtfap", "index", str(folder), "--db", str(db),
               "--model", FROZEN, "--batch-files", "1", "--batch-size", "1", "--workers", "1",
               "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    child = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while count_files(db) == 0 and child.poll() is None:
        assert time.monotonic() < deadline, "the index run wrote nothing"
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL, "the index run finished before the kill"

    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
        done = connection.execute("SELECT count(*) FROM files").fetchone()[0]
        faces = connection.execute("SELECT count(*) FROM faces").fetchone()[0]
        assert connection.execute("SELECT coalesce(sum(n_faces), 0) FROM files"
                                  ).fetchone()[0] == faces
    assert 0 < done < len(labels)

    indexer = CollectionIndexer(FROZEN, workers=1)
    report = indexer.run(folder, db)
    assert (report.unchanged, report.new, report.decoded) == (done, len(labels) - done,
                                                              len(labels) - done)
    with IndexStore.open(db) as store:
        assert store.counts()["files"] == len(labels)
        assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# -- shards, models and framings -----------------------------------------------------------

def test_shards_indexed_apart_and_merged_equal_one_index_of_everything(celeba_photos,
                                                                       celeba_index, tmp_path):
    folder, _ = celeba_photos
    whole, _ = celeba_index
    for shard in ("0/2", "1/2"):
        assert main(["index", str(folder), "--db", str(tmp_path / "part.{shard}.db"), "--aligned",
                     "--model", FROZEN, "--shard", shard, "--no-progress"]) == 0
    parts = [tmp_path / "part.0.db", tmp_path / "part.1.db"]
    assert all(count_files(p) > 0 for p in parts)
    assert main(["index", "merge", *map(str, parts), "--db", str(tmp_path / "all.db")]) == 0

    def rows(db):
        return dict(sorted((path, np.frombuffer(blob, np.float32)) for _, path, blob in _faces(db)))
    merged_rows, whole_rows = rows(tmp_path / "all.db"), rows(whole)
    assert list(merged_rows) == list(whole_rows)
    np.testing.assert_allclose(np.stack(list(merged_rows.values())),
                               np.stack(list(whole_rows.values())), atol=1e-5)
    merged = FaceSearch(tmp_path / "all.db")
    assert merged.framing == "aligned" and merged.root == folder.resolve()
    # a shard's index refuses a run over another part of the collection
    assert main(["index", str(folder), "--db", str(parts[0]), "--aligned", "--model", FROZEN,
                 "--shard", "1/2"]) == 2


def test_shard_arguments(monkeypatch):
    assert parse_shard(None) == (0, 1) and parse_shard("3/4") == (3, 4)
    assert parse_shard("env", {"RANK": "1", "WORLD_SIZE": "3"}) == (1, 3)
    for bad in ("4/4", "-1/2", "a/b", "2"):
        with pytest.raises(ValueError, match="I/N"):
            parse_shard(bad)


def test_an_index_never_mixes_models_or_framings(celeba_photos, celeba_index, tmp_path, capsys):
    folder, _ = celeba_photos
    db, _ = celeba_index
    # faces found by detection into an index of aligned faces
    assert main(["index", str(folder), "--db", str(db), "--model", FROZEN]) == 2
    message = capsys.readouterr().err.strip()
    assert "faces aligned" in message and "faces detected" in message
    assert "\n" not in message and "--rebuild" in message
    # another model's index
    other = tmp_path / "other.db"
    IndexStore.create_or_open(other, "someone-elses-model", "7", CELEBA_ATTRIBUTES, 0).close()
    assert main(["index", str(folder), "--db", str(other), "--aligned", "--model", FROZEN]) == 2
    assert "never mixes models" in capsys.readouterr().err


# -- mtfap search --------------------------------------------------------------------------

def test_search_writes_a_table_json_csv_and_thumbnails(celeba_index, tmp_path, capsys):
    db, _ = celeba_index
    assert main(["search", "old", "man", "wearing", "glasses", "--db", str(db),
                 "--limit", "3"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("~Young & Male & Eyeglasses: 3 best of 16")
    assert len(table) == 2 + 3

    assert main(["search", QUERY, "--db", str(db), "--format", "json", "--limit", "4",
                 "--thumbnails", str(tmp_path / "thumbs"), "--out", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["query"] == "~Young & Male & Eyeglasses" and len(result["hits"]) == 4
    hit = result["hits"][0]
    assert set(hit["probabilities"]) == {"Young", "Male", "Eyeglasses"}
    assert hit["probability"] == pytest.approx(np.exp(hit["value"]), rel=1e-3)
    from PIL import Image
    assert Image.open(hit["thumbnail"]).size[0] > 50
    assert len(list((tmp_path / "thumbs").iterdir())) == 4

    assert main(["search", "smiling woman", "--db", str(db), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("rank,face_id,path,face,left,top,right,bottom,log_probability,"
                        "Smiling,Male")
    assert len(lines) == 1 + 16


def test_search_like_a_photo_finds_that_photo_first(celeba_photos, celeba_index, capsys):
    folder, _ = celeba_photos
    db, _ = celeba_index
    photo = sorted(folder.iterdir())[3]
    assert main(["search", "--like", str(photo), "--aligned", "--db", str(db), "--limit", "2",
                 "--format", "json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert hits[0]["path"] == photo.name and hits[0]["value"] == pytest.approx(0, abs=1e-3)


@pytest.mark.parametrize("query, expected", [
    ("old man with glases", "did you mean 'glasses'"),
    ("man or woman", "'or' is not supported"),
    ("man woman", "contradictory query"),
    ("smiling without", "not followed by an attribute"),
    ("a photo of a person", "names no attribute"),
    ("Male && (Young)", "parentheses are not supported"),
])
def test_a_malformed_query_fails_in_one_line(celeba_index, capsys, query, expected):
    db, _ = celeba_index
    assert main(["search", query, "--db", str(db)]) == 2
    message = capsys.readouterr().err.strip()
    assert expected in message and "\n" not in message and "Traceback" not in message


def test_search_arguments_are_checked(celeba_index, tmp_path, capsys):
    db, _ = celeba_index
    assert main(["search", "--db", str(db)]) == 2  # nothing to search for
    assert main(["search", "--person", str(tmp_path / "x.jpg"), "--db", str(db)]) == 2
    assert "stores no identity descriptors" in capsys.readouterr().err  # an aligned index
    assert main(["search", "smiling", "--db", str(tmp_path / "missing.db")]) == 2
    assert "mtfap index PHOTOS" in capsys.readouterr().err
