"""Fuzzing every reader and every command that takes a file (issue 16).

Each file a user can hand to mtfap is built small and valid, then mutated a few dozen ways:
truncated, bytes flipped, replaced by garbage, and headers that lie (a size, a count, a shape,
a type). The reader decides whether a mutant is still valid (a flipped byte inside a JPEG's
pixels may well be); every mutant it refuses must make the command that takes the file exit
non-zero with exactly one error line that names the file, no traceback, and nothing written
outside the command's output folder.
"""

import io
import json
import random
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from data_factory import (
    jpeg_bytes,
    make_celeba,
    make_lfw,
    make_table_dataset,
    png_header_only,
    write_features,
)
from PIL import Image

from mtfap.backbones import create_backbone
from mtfap.backbones.weights import load_local_weights
from mtfap.cli import main
from mtfap.cli.compare import read_params
from mtfap.data.decode import read_image_file
from mtfap.data.features import FeatureSet
from mtfap.data.layout import open_dataset
from mtfap.data.lfw import read_lfw_pairs
from mtfap.errors import DataError
from mtfap.heads.groupings import resolve_groups
from mtfap.model.network import build_model
from mtfap.model.runs import open_run
from mtfap.training.checkpoint import save_checkpoint
from mtfap.training.config import TrainConfig, load_config

ATTRIBUTES = ("Male", "Smiling", "Young", "Bangs")
USER_ERRORS = (DataError, ValueError, OSError)


def mutants(data: bytes, lies: dict[str, bytes], seed: int) -> dict[str, bytes]:
    """Truncations, byte flips, garbage, and the given lying variants of ``data``."""
    rng, n = random.Random(seed), len(data)
    found = {"empty": b"", "one byte": data[:1], "a tenth": data[: n // 10],
             "half": data[: n // 2], "all but the last byte": data[:-1],
             "garbage": bytes(rng.randrange(256) for _ in range(200))}
    for _ in range(10):
        flipped, where = bytearray(data), rng.randrange(n)
        flipped[where] ^= rng.choice((0x01, 0x20, 0x80, 0xFF))
        found[f"byte {where} flipped"] = bytes(flipped)
    return {**found, **lies}


def jpeg_lying(data: bytes, width: int, height: int) -> bytes:
    """The JPEG with the size in its frame header (SOF0) replaced."""
    at = data.index(b"\xff\xc0") + 5
    return data[:at] + struct.pack(">HH", height, width) + data[at + 4:]


def crlf(*lines: str) -> bytes:
    return "".join(f"{line}\r\n" for line in lines).encode()


def npz_with(path: Path, **changes) -> bytes:
    arrays = dict(np.load(path))
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def json_with(path: Path, change) -> bytes:
    table = json.loads(path.read_text())
    change(table)
    return json.dumps(table).encode()


@dataclass
class Case:
    """A file, the command that takes it (``OUT`` is its output folder), the reader that judges
    a mutant, and the lies to tell in it."""

    file: Path
    command: list
    reader: callable
    lies: dict
    binary: bool = False  # empty and truncated files can never be valid

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Small valid inputs of every kind, and the commands that read them."""
    root = tmp_path_factory.mktemp("fuzz")
    out = root / "out"
    make_celeba(root / "celeba", n=9)
    make_lfw(root / "lfw")
    _, table = make_table_dataset(root / "table", ["a.jpg,p1,1,0", "b.jpg,p2,0,1", "c.jpg,p3,,1"])
    features = write_features(root / "features.npz", attributes=ATTRIBUTES)
    assert main(["fit-heads", str(features), "--method", "graph", "--bootstrap", "0",
                 "--out", str(root / "heads_run")]) == 0
    (root / "groups.json").write_text(json.dumps({"a": ATTRIBUTES[:2], "b": ATTRIBUTES[2:]}))
    (root / "params.json").write_text(json.dumps({"graph": {"xi": 0.01}}))
    (root / "run.yaml").write_text("backbone: compact\nheads: graph\nheads_params: {xi: 0.1}\n"
                                   "epochs: 2\nlr: 0.01\nattributes: [Male, Smiling]\n")
    (root / "run.json").write_text(json.dumps({"epochs": 2, "heads": "independent",
                                               "augmentation": {"flip_prob": 0.5}}))
    # A model whose backbone can be rebuilt (cam) and a train run (graph, evaluate).
    torch.manual_seed(0)
    torch.save(create_backbone("compact").state_dict(), root / "compact.pt")
    cam_features = write_features(root / "cam_features.npz", d=256, attributes=("Smiling", "Male"),
                                  meta={"backbone": "compact", "weights": str(root / "compact.pt")})
    assert main(["fit-heads", str(cam_features), "--method", "independent", "--bootstrap", "0",
                 "--out", str(root / "cam_run")]) == 0
    (root / "face.jpg").write_bytes(jpeg_bytes(3, size=(40, 48)))
    Image.open(io.BytesIO(jpeg_bytes(4, size=(24, 30)))).save(root / "face.png")
    config = TrainConfig(data=str(root / "celeba"), backbone="compact", heads="graph",
                         backbone_args={"input_size": 16, "widths": [4, 8]},
                         attributes=["Male", "Smiling"], output_dir=str(root / "train_run"))
    spec = config.model_spec(config.attributes)
    model = build_model(spec)
    save_checkpoint(root / "train_run" / "best.pt", config=config, model=model,
                    optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epoch=1, step=1,
                    batch_in_epoch=0, history=[], best=None)
    config.save(root / "train_run" / "config.json")
    spec.save(root / "train_run" / "model.json")

    attr = root / "celeba" / "list_attr_celeba.txt"
    lines = attr.read_bytes().decode().split("\r\n")
    heads_json = root / "heads_run" / "heads.json"
    cases = {
        "celeba attributes": Case(attr, ["data", "info", root / "celeba"],
                                  lambda p: open_dataset(root / "celeba"), {
            "count lies": crlf("99", *lines[1:]),
            "39 names": crlf(lines[0], " ".join(lines[1].split()[1:]), *lines[2:]),
            "a value of 2": crlf(*lines[:3], lines[3].replace("-1", " 2", 1), *lines[4:])}),
        "celeba partition": Case(root / "celeba" / "list_eval_partition.txt",
                                 ["data", "info", root / "celeba"],
                                 lambda p: open_dataset(root / "celeba"),
                                 {"split 7": crlf("000001.jpg 7"),
                                  "a second row": crlf("000001.jpg 0 0")}),
        "celeba identities": Case(root / "celeba" / "identity_CelebA.txt",
                                  ["data", "info", root / "celeba"],
                                  lambda p: open_dataset(root / "celeba"),
                                  {"name only": crlf("000001.jpg"),
                                   "unknown image": crlf("999999.jpg 4")}),
        "lfw pairs": Case(root / "lfw" / "pairs.txt", ["data", "info", root / "lfw"],
                          read_lfw_pairs, {"folds lie": b"10 300\nAnn_Lee\t1\t2\n",
                                           "numbers": b"1\t1\nAnn_Lee\tone\ttwo\n"}),
        "image table": Case(table, ["data", "info", table], open_dataset, {
            "repeated header": b"image,Male,Male\na.jpg,1,0\n",
            "short row": b"image,identity,Smiling,Male\na.jpg,p1,1\nb.jpg,p2,0,1\nc.jpg,p3,1,1\n"}),
        "features": Case(features, ["fit-heads", "FILE", "--out", out], FeatureSet.load, {
            "no X": npz_with(features, X=None),
            "rows lie": npz_with(features, X=FeatureSet.load(features).X[:10]),
            "split 5": npz_with(features, split=FeatureSet.load(features).split * 5),
            "meta not JSON": npz_with(features, meta=np.array("{oops"))}),
        "features to evaluate": Case(features, ["evaluate", root / "heads_run", "--features",
                                                "FILE", "--out", out, "--bootstrap", "0"],
                                     FeatureSet.load,
                                     {"no labels": npz_with(features, labels=None)}),
        "heads.json": Case(heads_json, ["evaluate", root / "heads_run", "--out", out,
                                        "--bootstrap", "0"],
                           lambda p: open_run(root / "heads_run"), {
            "method lies": json_with(heads_json, lambda d: d.update(method="independent2")),
            "fitted lies": json_with(heads_json, lambda d: d["fitted"].update(n_features_in_=99)),
            "a method as value": json_with(heads_json, lambda d: d["fitted"].update(fit="x"))}),
        "heads.npz": Case(root / "heads_run" / "heads.npz",
                          ["evaluate", root / "heads_run", "--out", out, "--bootstrap", "0"],
                          lambda p: open_run(root / "heads_run"), {}),
        "train config": Case(root / "run.yaml", ["train", "--config", "FILE", "--data",
                                                 root / "celeba", "--output-dir", out],
                             load_config, {"epochs -1": b"epochs: -1\n", "lr nan": b"lr: .nan\n",
                                           "lam table": b"heads_params: 5\n"}),
        "train config json": Case(root / "run.json", ["train", "--config", "FILE", "--data",
                                                      root / "celeba", "--output-dir", out],
                                  load_config, {"augmentation": b'{"augmentation": {"spin": 1}}'}),
        "grouping": Case(root / "groups.json", ["fit-heads", features, "--groups", "FILE",
                                                "--out", out, "--bootstrap", "0"],
                         lambda p: resolve_groups(p, ATTRIBUTES),
                         {"twice": b'{"a": ["Male", "Male"], "b": ["Young", "Bangs", "Smiling"]}'}),
        "compare params": Case(root / "params.json", ["compare", "--features", features,
                                                      "--params", "FILE", "--out", out],
                               read_params, {"xi text": b'{"graph": {"xi": "big"}}',
                                             "unknown method": b'{"grahp": {}}'}),
        "cam jpeg": Case(root / "face.jpg", ["cam", root / "cam_run", "FILE", "--attr",
                                             "Smiling", "--out", out], read_image_file, {
            "size lies": jpeg_lying((root / "face.jpg").read_bytes(), 65000, 65000),
            "size zero": jpeg_lying((root / "face.jpg").read_bytes(), 0, 48)}),
        "cam png": Case(root / "face.png", ["cam", root / "cam_run", "FILE", "--attr",
                                            "Smiling", "--out", out], read_image_file, {
            "size lies": png_header_only(100_000, 100_000), "no width": png_header_only(0, 5),
            "pixels missing": png_header_only(64, 64)}),
        "checkpoint": Case(root / "train_run" / "best.pt", ["graph", root / "train_run",
                                                             "--out", out],
                           lambda p: open_run(root / "train_run"), {}),
        "model description": Case(root / "train_run" / "model.json",
                                  ["graph", root / "train_run", "--out", out],
                                  lambda p: open_run(root / "train_run"), {
            "heads lie": json_with(root / "train_run" / "model.json",
                                   lambda d: d["heads_params"].update(xi=-5))}),
        "weights": Case(root / "compact.pt", ["features", root / "celeba", "--backbone", "compact",
                                              "--weights", "FILE", "--out", out / "f.npz",
                                              "--no-progress"],
                        lambda p: load_local_weights(create_backbone("compact"), p), {}),
    }
    for name in ("features", "features to evaluate", "heads.npz", "cam jpeg", "cam png",
                 "checkpoint", "weights"):
        cases[name].binary = True
    return root, cases


def _snapshot(root: Path, skip) -> dict:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and not any(p.is_relative_to(s) for s in skip)}


def _judge(reader, path):
    """True when the reader accepts the file, False when it refuses it with a user error."""
    try:
        reader(path)
    except USER_ERRORS:
        return False
    return True


@pytest.mark.parametrize("name", ["celeba attributes", "celeba partition", "celeba identities",
                                  "lfw pairs", "image table", "features", "features to evaluate",
                                  "heads.json", "heads.npz", "train config", "train config json",
                                  "grouping", "compare params", "cam jpeg", "cam png",
                                  "checkpoint", "model description", "weights"])
def test_every_refused_mutant_is_one_line_naming_the_file(world, name, capsys, monkeypatch):
    root, cases = world
    case = cases[name]
    out = root / "out"
    monkeypatch.setenv("MTFAP_CACHE", str(root / "cache"))
    original = case.file.read_bytes()
    refused = set()
    try:
        for label, data in mutants(original, case.lies, seed=len(name)).items():
            case.file.write_bytes(data)
            if _judge(case.reader, case.file):
                continue
            refused.add(label)
            shutil.rmtree(out, ignore_errors=True)
            before = _snapshot(root, [out, root / "cache", case.file])
            args = [str(case.file) if a == "FILE" else str(a) for a in case.command]
            try:
                status = main(args)
            except SystemExit as exc:
                status = exc.code
            err = capsys.readouterr().err
            errors = [line for line in err.splitlines() if line.startswith("mtfap")]
            where = f"{name} / {label}: {err[-600:]}"
            assert status not in (0, None), where
            assert "Traceback" not in err and "internal error" not in err, where
            assert len(errors) == 1 and case.file.name in errors[0], where
            assert _snapshot(root, [out, root / "cache", case.file]) == before, where
            assert not list(root.rglob("*.tmp")), where
    finally:
        case.file.write_bytes(original)
    must = {"one byte", "garbage", *case.lies} | ({"empty", "a tenth", "half"} if case.binary
                                                   else set())
    assert must <= refused, f"{name}: accepted {sorted(must - refused)}"


def test_a_sample_through_the_real_command_line(world):
    """A refused mutant through a fresh process: what a user sees is one line, no traceback."""
    root, cases = world
    case = cases["features"]
    bad = root / "bad.npz"
    bad.write_bytes(case.file.read_bytes()[:40])
    args = [str(bad) if a == "FILE" else str(a) for a in case.command]
    done = subprocess.run([sys.executable, "-m", "mtfap", *args], capture_output=True, check=False,
                          text=True, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and bad.name in lines[0], done.stderr
    assert "Traceback" not in done.stderr
