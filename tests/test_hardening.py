"""Issue 16: every bad input is a clean one-line error, never a silent wrong result, and nothing
saved before is overwritten or left stale. One test (or a few) per class of fault."""

import io
import json
import os
import time
import zipfile

import numpy as np
import pytest
import torch
from data_factory import (
    jpeg_bytes,
    make_celeba,
    make_table_dataset,
    png_header_only,
    write_features,
)
from PIL import Image

from mtfap.backbones import create_backbone
from mtfap.cli import main
from mtfap.data.cache import build_cache, find_cache
from mtfap.data.features import FeatureSet
from mtfap.data.images import ImageSource
from mtfap.data.layout import open_dataset
from mtfap.errors import DataError
from mtfap.heads.params import PARAMS, check_params, method_params
from mtfap.heads.registry import METHODS, make_head_estimator, make_torch_heads
from mtfap.model.spec import ModelSpec
from mtfap.training.config import TrainConfig, parse_override


def run(args, capsys):
    """``mtfap ARGS`` in-process: (exit status, stdout, the error lines of stderr)."""
    try:
        status = main([str(a) for a in args])
    except SystemExit as exc:  # argparse
        status = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "internal error" not in err, err
    return status, out, [line for line in err.splitlines() if line.startswith("mtfap")]


def one_error(args, capsys, *names):
    """Run a command that must fail: status 2 and exactly one error line naming ``names``."""
    status, _, errors = run(args, capsys)
    assert status == 2 and len(errors) == 1, (status, errors)
    for name in names:
        assert str(name) in errors[0], (name, errors[0])
    return errors[0]


def png_bytes(width, height) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def cam_run(tmp_path_factory):
    """A fit-heads run on (generated) features of the compact CNN whose weights are saved, so
    that `mtfap cam` can rebuild its backbone."""
    folder = tmp_path_factory.mktemp("cam_run")
    torch.manual_seed(0)
    torch.save(create_backbone("compact").state_dict(), folder / "compact.pt")
    features = write_features(folder / "features.npz", d=256, attributes=("Smiling", "Male"),
                              meta={"backbone": "compact", "weights": str(folder / "compact.pt")})
    assert main(["fit-heads", str(features), "--method", "independent", "--bootstrap", "0",
                 "--out", str(folder / "run")]) == 0
    return folder / "run"


# --- 1. images that lie about themselves ----------------------------------------------------

@pytest.fixture
def lying_photos(tmp_path):
    """An image table whose liar.png claims 100000 x 100000 pixels in 60-odd bytes."""
    images, table = make_table_dataset(tmp_path, ["a.jpg,1,1,0", "b.jpg,2,0,1", "liar.png,3,1,1"])
    (images / "liar.png").write_bytes(png_header_only(100_000, 100_000))
    return images, table


def test_class1_images_that_lie_about_their_size_are_bad_images_named(lying_photos, tmp_path,
                                                                       cam_run, capsys):
    images, table = lying_photos
    with pytest.raises(DataError, match="liar.png.*more than the limit"):
        ImageSource(images).load("liar.png")
    status, out, _ = run(["data", "check", table, "--decode"], capsys)
    assert status == 1 and "liar.png" in out and "--max-pixels" in out
    status, out, _ = run(["data", "check", table, "--decode", "--skip-bad-images"], capsys)
    assert status == 0 and "skipped 1 of 3" in out and "liar.png" in out
    # An honest image over a (lowered) limit is a bad image too, by name.
    (images / "b.jpg").write_bytes(png_bytes(300, 200))
    status, out, _ = run(["data", "check", table, "--decode", "--max-pixels", "50000",
                          "--skip-bad-images"], capsys)
    assert status == 0 and "b.jpg" in out and "liar.png" in out
    # features: one line naming the image; --skip-bad-images leaves it out of the file.
    features = ["features", table, "--backbone", "compact", "--weights", "none", "--out",
                tmp_path / "f.npz", "--cache-dir", tmp_path / "cache", "--no-progress"]
    one_error(features, capsys, "liar.png", "--skip-bad-images")
    assert run([*features, "--skip-bad-images"], capsys)[0] == 0
    written = FeatureSet.load(tmp_path / "f.npz")
    assert len(written) == 2 and "liar.png" not in written.keys
    assert written.meta["skipped_images"] == 1
    # cam reads image files through the same decoder.
    one_error(["cam", cam_run, images / "liar.png", "--attr", "Smiling", "--out",
               tmp_path / "cam"], capsys, "liar.png", "pixels")


# --- 2. archives with corrupt members --------------------------------------------------------

def test_class2_corrupt_zip_members_are_bad_images_named(tmp_path, capsys):
    images, table = make_table_dataset(tmp_path, ["a.jpg,1,1,0", "b.jpg,2,0,1", "c.jpg,3,1,1"],
                                       as_zip=True)
    stored = zipfile.ZipFile(images).infolist()
    data = bytearray(images.read_bytes())
    # b.jpg (stored): a flipped byte is a CRC error; c.jpg: its local header lies about its size
    data[stored[1].header_offset + 30 + len("b.jpg") + 100] ^= 0xFF
    data[stored[2].header_offset + 18:stored[2].header_offset + 22] = (10**6).to_bytes(4, "little")
    images.write_bytes(bytes(data))
    source = ImageSource(images)
    with pytest.raises(DataError, match="cannot read image 'b.jpg'"):
        source.load("b.jpg")
    status, out, _ = run(["data", "check", table, "--images", images, "--decode"], capsys)
    assert status == 1 and "'b.jpg'" in out
    status, out, _ = run(["data", "check", table, "--images", images, "--decode",
                          "--skip-bad-images"], capsys)
    assert status == 0 and "skipped" in out and "b.jpg" in out
    # A deflated member with bad compressed data fails in zlib: the same bad image.
    deflated = tmp_path / "deflated.zip"
    with zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.png", png_bytes(64, 64) * 4)
    info = zipfile.ZipFile(deflated).infolist()[0]
    broken = bytearray(deflated.read_bytes())
    start = info.header_offset + 30 + len("x.png")
    broken[start + 5:start + 25] = bytes(20)
    deflated.write_bytes(bytes(broken))
    with pytest.raises(DataError, match="x.png"):
        ImageSource(deflated).load("x.png")


# --- 3. malformed feature files --------------------------------------------------------------

def _bad_feature_files(folder, good):
    arrays = dict(np.load(good))
    variants = {"truncated.npz": good.read_bytes()[:300]}
    for name, change in {"no_x.npz": lambda a: a.pop("X"),
                         "short_x.npz": lambda a: a.update(X=a["X"][:-5]),
                         "nan_x.npz": lambda a: a.update(X=np.full_like(a["X"], np.nan)),
                         "labels_2.npz": lambda a: a.update(labels=a["labels"] * 2),
                         "pickled.npz": lambda a: a.update(keys=np.array(list(a["keys"]),
                                                                          dtype=object))}.items():
        copy = dict(arrays)
        change(copy)
        buffer = io.BytesIO()
        np.savez(buffer, **copy)
        variants[name] = buffer.getvalue()
    buffer = io.BytesIO()
    np.save(buffer, arrays["X"])
    variants["array.npz"] = buffer.getvalue()
    for name, data in variants.items():
        (folder / name).write_bytes(data)
    return [folder / name for name in variants]


def test_class3_malformed_feature_files_are_one_line_errors_naming_them(tmp_path, capsys):
    good = write_features(tmp_path / "good.npz")
    assert run(["fit-heads", good, "--method", "independent", "--bootstrap", "0", "--out",
                tmp_path / "run"], capsys)[0] == 0
    for bad in _bad_feature_files(tmp_path, good):
        one_error(["fit-heads", bad, "--out", tmp_path / "out"], capsys, bad.name)
        one_error(["evaluate", tmp_path / "run", "--features", bad, "--bootstrap", "0"],
                  capsys, bad.name)
        one_error(["sweep", bad, "--out", tmp_path / "sweep"], capsys, bad.name)
    assert not (tmp_path / "out").exists() and not (tmp_path / "sweep").exists()
    message = one_error(["fit-heads", tmp_path / "pickled.npz", "--out", tmp_path / "o"], capsys)
    assert "pickle" in message
    one_error(["fit-heads", tmp_path, "--out", tmp_path / "o"], capsys, "folder")


def test_class3_a_corrupt_file_at_features_out_is_replaced_not_blocking(tmp_path, capsys):
    make_celeba(tmp_path / "celeba", n=6)
    out = tmp_path / "f.npz"
    out.write_bytes(b"PK\x03\x04 not really a zip")
    args = ["features", tmp_path / "celeba", "--backbone", "compact", "--weights", "none",
            "--out", out, "--cache-dir", tmp_path / "cache", "--no-progress"]
    with pytest.warns(UserWarning, match="computing it again"):
        assert run(args, capsys)[0] == 0
    assert len(FeatureSet.load(out)) == 6
    (tmp_path / "folder.npz").mkdir()
    one_error([*args[:6], "--out", tmp_path / "folder.npz", *args[8:]], capsys, "is a folder")


# --- 4. hyper-parameters that are not numbers ------------------------------------------------

@pytest.mark.parametrize("args, name", [
    (["--param", "lam=abc"], "lam"), (["--param", "lam=.nan"], "lam"),
    (["--method", "graph", "--param", "xi=nan"], "xi"),
    (["--param", "gamma=.inf"], "gamma"), (["--param", "max_iter=-5"], "max_iter"),
    (["--param", "lam=-100"], "lam"), (["--method", "graph", "--param", "n_graph_steps=1.5"],
                                       "n_graph_steps"),
    (["--param", "solver=adam"], "solver"), (["--bootstrap", "-5"], "--bootstrap"),
])
def test_class4_fit_heads_refuses_bad_hyper_parameters_by_name(tmp_path, args, name, capsys):
    features = write_features(tmp_path / "f.npz")
    one_error(["fit-heads", features, "--out", tmp_path / "out", *args], capsys, name)
    assert not (tmp_path / "out").exists()


def test_class4_one_validation_for_train_sweep_compare_and_the_estimators(tmp_path, capsys):
    one_error(["train", "--data", "synthetic", "--heads", "lowrank_sparse", "--param",
               "lam=-100", "--output-dir", tmp_path / "run"], capsys, "lam", ">= 0")
    one_error(["train", "--data", "synthetic", "--set", "lr=.nan"], capsys, "lr")
    features = write_features(tmp_path / "f.npz")
    one_error(["sweep", features, "--grid", "graph.xi=0.1,nan", "--out", tmp_path / "s"],
              capsys, "xi")
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"graph": {"xi": -1}}))
    one_error(["compare", "--features", features, "--params", params, "--out", tmp_path / "c"],
              capsys, "params.json", "xi")
    assert not any((tmp_path / name).exists() for name in ("run", "s", "c"))
    with pytest.raises(ValueError, match="lam must be a finite number >= 0, got nan"):
        make_head_estimator("independent").set_params(lam=float("nan")).fit(
            np.eye(4), np.eye(4, dtype=int))
    with pytest.raises(ValueError, match="config heads_params: graph heads: eps"):
        TrainConfig(data="synthetic", heads="graph", heads_params={"eps": 0})
    # YAML reads 1e-3 as text; the command line reads it as the number it looks like.
    assert parse_override("xi=1e-3", table="heads_params") == ("heads_params.xi", 0.001)
    assert TrainConfig(heads="graph", heads_params={"xi": 1}).heads_params == {"xi": 1.0}


def test_class4_declared_parameters_are_exactly_those_of_the_classes():
    import inspect
    for method in METHODS:
        estimator = make_head_estimator(method)
        assert set(method_params(method, "estimator")) == set(estimator.get_params()), method
        signature = inspect.signature(METHODS[method].torch_class.__init__).parameters
        assert set(method_params(method, "torch")) == set(signature) - {
            "self", "in_features", "attributes"}, method
        for param in PARAMS[method]:  # every default passes its own check
            form = "estimator" if "estimator" in param.forms else "torch"
            default = (estimator.get_params()[param.name] if form == "estimator"
                       else signature[param.name].default)
            check_params(method, {param.name: default}, form)


# --- 5. stale derived data -------------------------------------------------------------------

def test_class5_features_follow_every_input_they_hold(tmp_path, capsys):
    make_celeba(tmp_path / "celeba", n=6)
    out = tmp_path / "f.npz"
    args = ["features", tmp_path / "celeba", "--backbone", "compact", "--weights", "none",
            "--out", out, "--cache-dir", tmp_path / "cache", "--no-progress"]
    assert run(args, capsys)[0] == 0
    assert "up to date" in run(args, capsys)[1]
    first = FeatureSet.load(out)
    edits = {"list_attr_celeba.txt": ("-1", "1", 2), "list_eval_partition.txt": (" 0", " 2", 0),
             "identity_CelebA.txt": (" 100", " 777", 0)}
    for name, (old, new, skip) in edits.items():
        path = tmp_path / "celeba" / name
        lines = path.read_text().split("\n")
        lines[skip] = lines[skip].replace(old, new, 1)
        path.write_text("\n".join(lines))
        status, printed, _ = run(args, capsys)
        assert status == 0 and "up to date" not in printed, name
    saved = FeatureSet.load(out)
    assert (saved.labels != first.labels).sum() == 1
    assert saved.split[0] == 2 and saved.identities[0] == 777


def test_class5_the_image_cache_sees_content_replaced_with_size_and_time_kept(tmp_path):
    from mtfap.backbones.base import InputSpec
    images, table = make_table_dataset(tmp_path, ["a.jpg,1,1,0", "b.jpg,2,0,1"])
    dataset = open_dataset(table)
    spec = InputSpec(size=(16, 16))
    build_cache(dataset, spec, tmp_path / "cache", progress=False)
    assert find_cache(dataset, spec, tmp_path / "cache") is not None
    target = images / "a.jpg"
    before = target.stat()
    other = jpeg_bytes(7)
    assert len(other) == before.st_size  # same size: only the content differs
    time.sleep(0.02)  # the status-change time is kept at clock-tick resolution
    target.write_bytes(other)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert target.stat().st_mtime_ns == before.st_mtime_ns
    assert find_cache(dataset, spec, tmp_path / "cache") is None
    # In a zip the members' CRC-32s tell, whatever the archive's size and time.
    zipped, _ = make_table_dataset(tmp_path / "z", ["a.jpg,1,1,0"], as_zip=True)
    first = ImageSource(zipped).fingerprint()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("a.jpg", other)
    assert ImageSource(zipped).fingerprint() != first


# --- 6. paths that mean something else later -------------------------------------------------

def test_class6_heads_runs_score_the_very_features_file_they_were_fitted_on(tmp_path, capsys,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_features(tmp_path / "feats.npz", seed=0)
    assert run(["fit-heads", "feats.npz", "--bootstrap", "0", "--method", "independent",
                "--out", "run"], capsys)[0] == 0
    meta = json.loads((tmp_path / "run" / "heads.json").read_text())["meta"]
    assert meta["features"] == str(tmp_path / "feats.npz") and meta["features_fingerprint"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_features(elsewhere / "feats.npz", seed=1)  # same name, other content
    monkeypatch.chdir(elsewhere)
    assert run(["evaluate", tmp_path / "run", "--bootstrap", "0"], capsys)[0] == 0
    write_features(tmp_path / "feats.npz", seed=2)  # the file itself changed
    one_error(["evaluate", tmp_path / "run", "--bootstrap", "0"], capsys, "feats.npz",
              "changed")
    # Scoring another file is possible, but only when asked for by name.
    assert run(["evaluate", tmp_path / "run", "--features", "feats.npz", "--bootstrap", "0",
                "--out", tmp_path / "eval"], capsys)[0] == 0
    (tmp_path / "feats.npz").unlink()
    one_error(["evaluate", tmp_path / "run", "--bootstrap", "0"], capsys, "feats.npz",
              "--features")
    # A train run keeps where its data is, not the path as typed.
    assert TrainConfig(data="feats.npz").data == str(elsewhere / "feats.npz")
    legacy = json.loads((tmp_path / "run" / "heads.json").read_text())
    legacy["meta"].update(features="feats.npz", features_fingerprint=None)
    (tmp_path / "run" / "heads.json").write_text(json.dumps(legacy))
    one_error(["evaluate", tmp_path / "run", "--bootstrap", "0"], capsys, "heads.json",
              "--features")


# --- 7. outputs that overwrite what they should not ------------------------------------------

def _train_folder(folder):
    folder.mkdir()
    for name in ("config.json", "metrics.json", "model.json"):
        (folder / name).write_text("{}")
    (folder / "last.pt").write_bytes(b"weights")
    (folder / "metrics.png").write_bytes(b"curve")
    (folder / "notes.txt").write_text("mine")
    (folder / ".metrics.json.x1y2.tmp").write_text("left by a kill")


def test_class7_a_folder_holding_another_run_is_refused_unless_overwrite(tmp_path, capsys):
    features = write_features(tmp_path / "f.npz")
    trained = tmp_path / "trained"
    _train_folder(trained)
    fit = ["fit-heads", features, "--method", "independent", "--bootstrap", "0", "--out"]
    one_error([*fit, trained], capsys, "trained", "mtfap train", "--overwrite")
    assert (trained / "metrics.json").read_text() == "{}" and (trained / "last.pt").is_file()
    one_error(["train", "--data", "synthetic", "--output-dir", trained], capsys, "--resume",
              "--overwrite")
    _train_folder(tmp_path / "trained2")
    assert run([*fit, trained, "--overwrite"], capsys)[0] == 0
    left = sorted(p.name for p in trained.iterdir())
    assert left == ["heads.json", "heads.npz", "metrics.json", "notes.txt"], left
    # The same kind of run is another run too; results about a run replace their own.
    one_error([*fit, trained], capsys, "mtfap fit-heads")
    evaluate = ["evaluate", trained, "--bootstrap", "0"]
    assert run(evaluate, capsys)[0] == 0 and run(evaluate, capsys)[0] == 0
    one_error([*evaluate, "--out", trained], capsys, "run being read")
    one_error([*evaluate, "--out", tmp_path / "trained2"], capsys, "mtfap train")
    assert (tmp_path / "trained2" / "metrics.json").read_text() == "{}"
    one_error([*evaluate, "--out", features], capsys, "f.npz", "existing file")
    one_error([*fit, features], capsys, "f.npz", "existing file")
    one_error(["features", "synthetic", "--out", trained / "heads.npz"], capsys, "heads.npz",
              "mtfap fit-heads")
    one_error(["sweep", features, "--out", trained], capsys, "mtfap fit-heads")


# --- 8. loaded metadata that overrides code --------------------------------------------------

@pytest.mark.parametrize("change, message", [
    (lambda d: d["fitted"].update(predict_proba="x"), "predict_proba"),
    (lambda d: d["fitted"].update(decision_function_=1), "decision_function_"),
    (lambda d: d["params"].update(fit="x"), "no parameter 'fit'"),
    (lambda d: d["params"].update(lam="abc"), "lam must be"),
    (lambda d: d.update(method="predict"), "unknown head method"),
    (lambda d: d["fitted"].update(n_features_in_=3), "coef_"),
    (lambda d: d["fitted"].update(attributes_="Male"), "attributes_"),
    (lambda d: d.update(params=["lam"]), "params"),
])
def test_class8_saved_heads_set_only_what_the_estimator_declares(tmp_path, change, message,
                                                                 capsys):
    features = write_features(tmp_path / "f.npz")
    assert run(["fit-heads", features, "--method", "independent", "--bootstrap", "0", "--out",
                tmp_path / "run"], capsys)[0] == 0
    path = tmp_path / "run" / "heads.json"
    description = json.loads(path.read_text())
    change(description)
    path.write_text(json.dumps(description))
    one_error(["evaluate", tmp_path / "run", "--bootstrap", "0"], capsys, "heads.json", message)


def test_class8_model_descriptions_set_only_declared_head_parameters(tmp_path):
    spec = ModelSpec(backbone="compact", heads="graph", attributes=["Male"]).to_dict()
    for heads_params, message in (({"xi": -1}, "xi must be"), ({"forward": 1}, "no parameter"),
                                  ([1], "mapping")):
        (tmp_path / "model.json").write_text(json.dumps({**spec, "heads_params": heads_params}))
        with pytest.raises(DataError, match=message):
            ModelSpec.load(tmp_path / "model.json")


# --- 9. hints that point nowhere -------------------------------------------------------------

def test_class9_the_skip_hint_names_commands_that_have_the_flag(tmp_path, capsys):
    images, _ = make_table_dataset(tmp_path, ["a.jpg,1,1,0"])
    (images / "a.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"--skip-bad-images \(mtfap data check, features, train\)"):
        ImageSource(images).load("a.jpg")
    for command in (["features"], ["train"], ["data", "check"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        assert "--skip-bad-images" in capsys.readouterr().out, command


def test_class9_a_misspelt_table_header_is_warned_about(tmp_path):
    _, table = make_table_dataset(tmp_path, ["a.jpg,1,1,0", "b.jpg,0,0,1"],
                                  header="image,idenity,Smilng,Male")
    with pytest.warns(UserWarning) as caught:
        open_dataset(table, identity_column="identity")
    text = " ".join(str(w.message) for w in caught)
    assert "Smilng (did you mean Smiling?)" in text and "identity column 'identity'" in text


def test_class9_some_celeba_attributes_fit_with_the_default_grouping(tmp_path, capsys):
    features = write_features(tmp_path / "f.npz", attributes=("Smiling", "Male", "Young"))
    assert run(["fit-heads", features, "--attributes", "Smiling,Male", "--bootstrap", "0",
                "--out", tmp_path / "run"], capsys)[0] == 0
    groups = json.loads((tmp_path / "run" / "heads.json").read_text())["fitted"]["groups_"]
    assert [name for name, _ in groups] == ["mouth_expression", "masculine_appearance"]
    assert make_torch_heads("lowrank_sparse", 4, ["Smiling", "Male"]).groups
    own = write_features(tmp_path / "own.npz", attributes=("Happy", "Male"))
    one_error(["fit-heads", own, "--out", tmp_path / "r2"], capsys, "Happy", "--groups",
              "graph")


# --- smaller: stale temporaries, metrics that run ahead of the checkpoint --------------------

def test_stale_temporaries_go_and_metrics_follow_the_checkpoint(tmp_path, monkeypatch):
    from mtfap.training import trainer

    make_celeba(tmp_path / "celeba", n=12, attributes=("Smiling", "Male"))
    faces = open_dataset(tmp_path / "celeba")
    config = TrainConfig(data=str(tmp_path / "celeba"), backbone="compact", heads="independent",
                         backbone_args={"input_size": 16, "widths": [4, 8]}, epochs=2,
                         batch_size=4, device="cpu", progress=False, channels_last=False,
                         cache_dir=str(tmp_path / "cache"), output_dir=str(tmp_path / "run"))
    written = []
    save = trainer.write_metrics

    def write_metrics(folder, history):
        from mtfap.model.checkpoint import load_checkpoint
        written.append((len(history), load_checkpoint(folder / "last.pt")["epoch"]
                        if (folder / "last.pt").exists() else None))
        save(folder, history)

    monkeypatch.setattr(trainer, "write_metrics", write_metrics)
    trainer.train(config, dataset=faces)
    # each metrics file describes a checkpoint already written (the first call: no history yet)
    assert written == [(0, None), (1, 1), (2, 2)]
    stale = tmp_path / "run" / ".last.pt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    trainer.train(config, dataset=faces, resume=True)
    assert not stale.exists()
    # class 5 again: a run resumed on changed labels would train on two datasets
    attr = tmp_path / "celeba" / "list_attr_celeba.txt"
    attr.write_bytes(attr.read_bytes().replace(b"-1", b" 1", 1))
    with pytest.raises(ValueError, match="dataset's labels changed since this run started"):
        trainer.train(config, dataset=open_dataset(tmp_path / "celeba"), resume=True)
