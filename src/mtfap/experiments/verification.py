"""The paper's face-verification experiment (Sec. 5.6, Fig. 11) on LFW View 2 and CelebA test pairs.

Every image goes once through the photo path of ``mtfap predict`` (:class:`Analyzer`: decode,
detect the largest face, 5 landmarks, align): dlib's 128-D identity descriptor of dlib's own
150 px chip, and the GAP features of the attribute model's backbone on the face aligned into
its framing. Both are cached on disk (:func:`ensure_face_codes`); any attribute model on the
same backbone then gives its 40 probabilities from the cached features in milliseconds
(:func:`attribute_probabilities`), so two attribute models that differ only in their heads cost
one pass over the images, not two.

Verifiers compared (:data:`VARIANTS`), all scoring a pair higher when more likely one person:

- ``dlib``: dlib's descriptor and the Euclidean distance, score = -||d1 - d2||; the reference.
- ``siamese``: the Siamese verifier of :mod:`mtfap.applications.verifier` on the descriptor,
  contrastive loss only (eq. 17-19); the paper's green curve.
- ``siamese_independent``: the same with the attribute model trained without prior groups
  (independent heads, eq. 1): its attribute logits join the input, or its identity-invariant
  attributes are the targets of the attribute-matching term, or both, as validation chooses
  (:class:`VerifierSettings`); the blue curve.
- ``siamese_prior_groups``: the same with the model trained with the prior groups (eq. 3); red.
- ``dlib_independent``, ``dlib_prior_groups``: dlib's distance plus a weighted disagreement of
  the two faces' invariant attributes (:func:`fused_scores`), from either attribute model;
  not in the paper: it asks whether the attributes add to the descriptor left as it is.

The verifiers are trained on pairs of CelebA's training people only, their settings chosen on
pairs of the validation people (:func:`tune_and_train`, :func:`tune_fusion`), and tested on
LFW's View 2 and on the fixed CelebA test pairs (``resources/celeba_test_pairs.csv``), both
with the 10-fold protocol, ROC, TAR at FAR 1e-2 and 1e-3, EER, and paired differences
(:func:`run_benchmark`). docs/VERIFICATION.md describes the design, docs/RESULTS.md the results.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from mtfap.applications.analyze import Analyzer, model_framing
from mtfap.applications.verifier import (
    INVARIANT_ATTRIBUTES,
    SiameseVerifier,
    invariant_attributes,
    sample_pairs,
    save_verifier,
    score_pairs,
    train_verifier,
    verifier_inputs,
)
from mtfap.data.dataset import FaceDataset
from mtfap.errors import DataError
from mtfap.evaluation.verification import (
    DEFAULT_FARS,
    VerificationPairs,
    best_threshold,
    equal_error_rate,
    load_pairs,
    paired_difference,
    plot_roc,
    roc,
    tar_at_far,
    ten_fold_accuracy,
)
from mtfap.faces.align import align_with_matrix
from mtfap.io import read_npz, write_json, write_npz, write_table
from mtfap.model import Predictor

CODES_FORMAT = "mtfap-face-codes/1"
# Images per resumable part of the extraction: about a minute of work each.
PART_SIZE = 2000


# --------------------------------------------------------------------------------------------
# What each image becomes: descriptor, features, landmarks

@dataclass
class FaceCodes:
    """The verification inputs of every image of a dataset, row i for ``keys[i]``.

    keys : (n,) image keys.
    detector : (n,) how the face was found: "hog" / "cnn" (detected), "crop" (the finder's
        face-crop fallback) or "fallback" (nothing found: the dataset's median landmarks).
    sizes : (n, 2) photo width and height.
    landmarks : (n, 5, 2) the 5 landmarks in photo pixels.
    descriptors : (n, 128) dlib's identity descriptor of the face chip.
    features : (n, d) the framing model's backbone features (the GAP vector its heads read).
    meta : how they were made (model, backbone hash, template, timings, machine load).
    """

    keys: np.ndarray
    detector: np.ndarray
    sizes: np.ndarray
    landmarks: np.ndarray
    descriptors: np.ndarray
    features: np.ndarray
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.keys)

    def rows(self, keys) -> np.ndarray:
        """Positions of ``keys``; a key without codes raises ValueError naming it."""
        position = {key: i for i, key in enumerate(self.keys)}
        missing = [k for k in keys if k not in position]
        if missing:
            raise ValueError(f"{len(missing)} images have no face codes, e.g. {missing[0]}; "
                             "encode the dataset they come from")
        return np.array([position[k] for k in keys], dtype=np.int64)

    def save(self, path: str | Path) -> Path:
        import json
        arrays = {"keys": self.keys.astype(str), "detector": self.detector.astype(str),
                  "sizes": self.sizes, "landmarks": self.landmarks,
                  "descriptors": self.descriptors, "features": self.features,
                  "meta": np.array(json.dumps({"format": CODES_FORMAT, **self.meta}))}
        return write_npz(path, arrays)

    @classmethod
    def load(cls, path: str | Path) -> FaceCodes:
        import json
        hint = "written by mtfap.experiments.verification.ensure_face_codes; delete it to redo"
        arrays = read_npz(Path(path), "face codes", hint)
        meta = json.loads(str(arrays.get("meta", "{}")))
        if meta.get("format") != CODES_FORMAT:
            raise DataError(f"not a face-codes file (format {meta.get('format')!r})", path,
                            hint=hint)
        return cls(arrays["keys"], arrays["detector"], arrays["sizes"], arrays["landmarks"],
                   arrays["descriptors"], arrays["features"], meta)


def backbone_fingerprint(predictor: Predictor) -> str:
    """SHA-256 of the backbone's weights and of the framing it is fed (template, input spec):
    two models with the same fingerprint compute the same features of the same photo."""
    digest = hashlib.sha256()
    for name, tensor in sorted(predictor.model.backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().float().contiguous().numpy().tobytes())
    template = model_framing(predictor)
    digest.update(np.asarray(template.points, np.float64).tobytes())
    digest.update(repr((template.size, predictor.input_spec)).encode())
    return digest.hexdigest()


def _keys_fingerprint(keys) -> str:
    return hashlib.sha256("\n".join(map(str, keys)).encode()).hexdigest()


@contextmanager
def _captured_features(predictor: Predictor):
    """Collect the backbone's output of every forward pass inside the block.

    The analyzer runs the backbone on each aligned face to predict its attributes; catching
    its GAP vector there saves a second pass of the network over the same faces (8-15 ms of the
    ~33 ms an image costs, measured on 200 LFW and 200 CelebA images).
    """
    captured: list[np.ndarray] = []
    hook = predictor.model.backbone.register_forward_hook(
        lambda module, inputs, output: captured.append(output.detach().float().cpu().numpy()))
    try:
        yield captured
    finally:
        hook.remove()


def _encode_part(analyzer: Analyzer, dataset: FaceDataset, batch_size: int) -> dict:
    """Descriptors, features and landmarks of the largest face of each image of ``dataset``."""
    n, dim = len(dataset), analyzer.predictor.model.backbone.feature_dim
    part = {"detector": np.full(n, "none", dtype="<U8"), "sizes": np.zeros((n, 2), np.int32),
            "landmarks": np.zeros((n, 5, 2), np.float32),
            "descriptors": np.zeros((n, 128), np.float32),
            "features": np.zeros((n, dim), np.float32)}
    with _captured_features(analyzer.predictor) as captured:
        for row, result in enumerate(analyzer.analyze_dataset(dataset, batch_size=batch_size)):
            if result.error is not None:
                raise DataError(result.error)
            part["sizes"][row] = result.size
            if result.faces:
                face = result.faces[0]
                part["detector"][row] = face.detector
                part["landmarks"][row] = face.landmarks
                part["descriptors"][row] = face.descriptor
    found = part["detector"] != "none"
    features = np.concatenate(captured) if captured else np.zeros((0, dim), np.float32)
    if len(features) != found.sum():
        raise RuntimeError(f"caught {len(features)} feature vectors for {found.sum()} faces")
    part["features"][found] = features
    return part


def _encode_with_landmarks(analyzer: Analyzer, dataset: FaceDataset, landmarks) -> tuple:
    """Descriptors and features of faces placed by given landmarks (no detection)."""
    faces, chips = [], []
    for key, points in zip(dataset.keys, landmarks):
        image = dataset.source.load(key)
        faces.append(align_with_matrix(image, points, analyzer.framing)[0])
        chips.append(align_with_matrix(image, points, analyzer.chip_template)[0])
    predictor = analyzer.predictor
    return predictor.embed(chips), predictor.features(faces)


def encode_faces(dataset: FaceDataset, predictor: Predictor, *, batch_size: int = 64,
                 parts_dir: str | Path | None = None, progress: bool = False) -> FaceCodes:
    """The :class:`FaceCodes` of every image of ``dataset``, single-threaded.

    Each image goes through :class:`Analyzer` (HOG detector with its face-crop fallback, 5
    landmarks, the largest face; ``identity=True``), which gives dlib's descriptor; the
    backbone's features are caught as the analyzer computes them. An image in which no face
    is found gets the dataset's median landmarks (relative to the photo size: the datasets here
    are aligned already, so the face sits near the same place in every image) and is marked
    "fallback"; a pair must be scored whatever happens to its images.

    parts_dir : where to keep finished parts of :data:`PART_SIZE` images, so that an interrupted
        run resumes where it stopped (removed by :func:`ensure_face_codes` once complete).
    """
    analyzer = Analyzer(predictor, identity=True, largest_only=True, workers=1)
    started, n = time.perf_counter(), len(dataset)
    parts = []
    for first in range(0, n, PART_SIZE):
        rows = np.arange(first, min(first + PART_SIZE, n))
        keys = [dataset.keys[i] for i in rows]
        path = Path(parts_dir) / f"part{first // PART_SIZE:05d}.npz" if parts_dir else None
        if path is not None and path.is_file():
            stored = read_npz(path, "face-codes part", "delete the parts folder to redo")
            if _keys_fingerprint(keys) == str(stored.pop("keys_sha256")):
                parts.append(stored)
                continue
        part = _encode_part(analyzer, dataset.subset(rows), batch_size)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_npz(path, {**part, "keys_sha256": np.array(_keys_fingerprint(keys))})
        parts.append(part)
        if progress:
            done = rows[-1] + 1
            print(f"  {dataset.name}: {done}/{n} images, {time.perf_counter() - started:.0f} s",
                  flush=True)
    codes = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    detect_seconds = time.perf_counter() - started

    missing = np.flatnonzero(codes["detector"] == "none")
    detected = codes["detector"] != "none"
    if len(missing):
        if not detected.any():
            raise DataError(f"no face found in any of the {n} images of {dataset.name}")
        relative = codes["landmarks"][detected] / codes["sizes"][detected][:, None, :]
        landmarks = np.median(relative, axis=0)[None] * codes["sizes"][missing][:, None, :]
        descriptors, features = _encode_with_landmarks(analyzer, dataset.subset(missing),
                                                       landmarks)
        codes["landmarks"][missing] = landmarks
        codes["descriptors"][missing] = descriptors
        codes["features"][missing] = features
        codes["detector"][missing] = "fallback"
    counts = dict(zip(*np.unique(codes["detector"], return_counts=True)))
    meta = {"dataset": dataset.name, "n_images": n, "model": predictor.name,
            "model_source": str(predictor.source), "backbone": predictor.spec.backbone,
            "backbone_fingerprint": backbone_fingerprint(predictor),
            "keys_sha256": _keys_fingerprint(dataset.keys),
            "template": model_framing(predictor).to_dict(),
            "detectors": {str(k): int(v) for k, v in counts.items()},
            "seconds": round(time.perf_counter() - started, 1),
            "detect_seconds": round(detect_seconds, 1),
            "torch_threads": torch.get_num_threads(),
            "load_average_at_end": list(os.getloadavg())}
    return FaceCodes(np.asarray(dataset.keys, dtype=str), codes["detector"], codes["sizes"],
                     codes["landmarks"], codes["descriptors"], codes["features"], meta)


def ensure_face_codes(dataset: FaceDataset, predictor: Predictor, path: str | Path, *,
                      batch_size: int = 64, progress: bool = False) -> FaceCodes:
    """The face codes of ``dataset`` from ``path`` if they were made from the same images
    (keys) and the same backbone and framing, else computed (:func:`encode_faces`) and saved
    there; a run that stops resumes from the finished parts."""
    path = Path(path)
    if path.is_file():
        codes = FaceCodes.load(path)
        if (codes.meta.get("keys_sha256") == _keys_fingerprint(dataset.keys)
                and codes.meta.get("backbone_fingerprint") == backbone_fingerprint(predictor)):
            return codes
        if progress:
            print(f"  {path} was made from other images or another backbone: recomputing")
    parts_dir = path.with_name(path.stem + ".parts")
    codes = encode_faces(dataset, predictor, batch_size=batch_size, parts_dir=parts_dir,
                         progress=progress)
    codes.save(path)
    shutil.rmtree(parts_dir, ignore_errors=True)
    return codes


# --------------------------------------------------------------------------------------------
# Attributes of the cached faces

@torch.no_grad()
def attribute_probabilities(codes: FaceCodes, predictor: Predictor,
                            dataset: FaceDataset | None = None) -> np.ndarray:
    """The (n, k) attribute probabilities ``predictor`` gives the faces of ``codes``.

    When the predictor's backbone and framing are those the codes were made with (same
    :func:`backbone_fingerprint`) and it uses no test-time views, its heads are applied to the
    cached features directly (milliseconds). Otherwise (a fine-tuned backbone, another template)
    each face is aligned again from its cached landmarks into the predictor's framing and the
    network is run, which needs the ``dataset`` the codes came from.
    """
    if predictor.spec.flip_test or list(predictor.spec.test_scales) != [1.0]:
        same_network = False
    else:
        same_network = codes.meta.get("backbone_fingerprint") == backbone_fingerprint(predictor)
    if same_network:
        features = torch.from_numpy(np.asarray(codes.features, np.float32))
        logits = predictor.model.heads(features.to(predictor.device)).double().cpu().numpy()
        return 1.0 / (1.0 + np.exp(-logits))
    if dataset is None:
        raise ValueError(f"model {predictor.name!r} has another backbone or framing than the "
                         f"cached features ({codes.meta.get('model')!r}): give the dataset so "
                         "that its faces can be aligned again and run through it")
    if _keys_fingerprint(dataset.keys) != codes.meta.get("keys_sha256"):
        raise ValueError(f"dataset {dataset.name!r} is not the one the face codes were made from "
                         f"({codes.meta.get('dataset')!r}, {len(codes)} images)")
    framing = model_framing(predictor)
    parts = []
    for first in range(0, len(codes), 256):
        rows = range(first, min(first + 256, len(codes)))
        faces = [align_with_matrix(dataset.source.load(codes.keys[r]), codes.landmarks[r],
                                   framing)[0] for r in rows]
        parts.append(predictor.predict_proba(faces))
    return np.concatenate(parts)


# --------------------------------------------------------------------------------------------
# The verifiers compared

@dataclass(frozen=True)
class Variant:
    """A verifier of the comparison: how it scores (``kind``), its look in Fig. 11, and which
    attribute model it draws on (None: none; else the key of ``attribute_models`` in
    :func:`run_benchmark`).

    kind : "dlib" (the descriptor's distance), "siamese" (a trained Siamese verifier) or "fused"
        (the descriptor's distance plus a weighted distance of the invariant attributes).
    """

    name: str
    label: str
    short: str
    color: str
    linestyle: str
    attribute_model: str | None
    kind: str


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("dlib", "dlib descriptor, Euclidean (reference)", "dlib", "0.3", "-", None, "dlib"),
    Variant("siamese", "Siamese, no attributes", "Siamese", "tab:green", "-", None, "siamese"),
    Variant("siamese_independent", "Siamese + attributes, no prior groups",
            "Siamese + attr. (no groups)", "tab:blue", "-", "independent", "siamese"),
    Variant("siamese_prior_groups", "Siamese + attributes, prior groups",
            "Siamese + attr. (groups)", "tab:red", "-", "prior_groups", "siamese"),
    Variant("dlib_independent", "dlib + attribute distance, no prior groups",
            "dlib + attr. (no groups)", "tab:blue", ":", "independent", "fused"),
    Variant("dlib_prior_groups", "dlib + attribute distance, prior groups",
            "dlib + attr. (groups)", "tab:red", ":", "prior_groups", "fused"),
)}
# (a, b) pairs whose difference a - b answers the question: do attributes help (Siamese: the
# paper's design; fused: on dlib's own distance), does the prior-groups model help more, and
# what does the Siamese verifier do to dlib's descriptor.
COMPARISONS = (("siamese_independent", "siamese"), ("siamese_prior_groups", "siamese"),
               ("siamese_prior_groups", "siamese_independent"), ("siamese", "dlib"),
               ("dlib_independent", "dlib"), ("dlib_prior_groups", "dlib"),
               ("dlib_prior_groups", "dlib_independent"))
# Weights beta of the fused score -(||d1 - d2|| + beta * mean_j |p1_j - p2_j|) tried on the
# validation pairs; 0 (dlib alone) is among them, so the attributes must earn their weight.
FUSION_WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


@dataclass
class VerifierSettings:
    """How the Siamese verifiers are trained and tuned (defaults: what the benchmark used).

    The optimisation (Adam, lr, weight decay, batch) is :func:`train_verifier`'s default. Each
    setting below is chosen by the validation accuracy (at its best threshold) of
    ``val_pairs`` pairs of CelebA's validation people; the best epoch of each fit is kept
    the same way.

    epochs, pairs_per_epoch : fresh pairs of the training people each epoch, half genuine
        (:func:`sample_pairs`: person first, then images, so no person dominates). Validation
        accuracy is flat after ~20 epochs: 160 epochs of the linear verifier reached 92.3 %
        against 91.9 % at 40 (docs/RESULTS.md, section 5).
    val_pairs : validation pairs (20,000 of the ~900 validation people: a standard error of
        about 0.1 point at 98 % accuracy, so that settings are not picked by noise alone).
    margins, hidden_dims : the grid of the verifier without attributes (m of eq. 17-19; the
        width of the projection's hidden layer, 0 = linear); the attribute variants reuse
        the winner, so the three Siamese verifiers differ only in their attributes.
    attribute_weights : the grid of lambda_a, the weight of the attribute-matching term.
    attribute_inputs : which attribute logits join the descriptor at the input: "none" (the
        attributes act through the matching term only: the paper's design, an embedding
        shared with the attribute tasks), "invariant" (the identity-invariant attributes,
        also the targets of the matching term) or "all" (the 40). Every combination with
        ``attribute_weights`` is tried except ("none", 0), the verifier without attributes;
        the grid doubles as an ablation (inputs only, matching term only, both).
    seeds : training seeds; the first trains the tuned models (the tables), the others
        measure how much the test figures move with the seed alone.
    """

    epochs: int = 40
    pairs_per_epoch: int = 20000
    val_pairs: int = 20000
    margins: tuple[float, ...] = (0.5, 1.0)
    hidden_dims: tuple[int, ...] = (0, 256)
    attribute_weights: tuple[float, ...] = (0.0, 0.03, 0.1, 0.3, 1.0)
    attribute_inputs: tuple[str, ...] = ("none", "invariant", "all")
    seeds: tuple[int, ...] = (0, 1, 2)

    def __post_init__(self):
        unknown = set(self.attribute_inputs) - {"invariant", "all", "none"}
        if unknown:
            raise ValueError(f"attribute_inputs must be among invariant, all, none; got "
                             f"{sorted(unknown)}")
        if not (self.margins and self.hidden_dims and self.attribute_weights
                and self.attribute_inputs and self.seeds):
            raise ValueError("every grid of VerifierSettings needs at least one value")


def variant_inputs(descriptors, probabilities=None, attributes=None,
                   attribute_inputs: str = "none") -> np.ndarray:
    """The Siamese verifier's input per image: the descriptor, then the chosen attribute logits
    (``attribute_inputs``: "none", "invariant" or "all"; see :class:`VerifierSettings`)."""
    if attribute_inputs == "none" or probabilities is None:
        return verifier_inputs(descriptors)
    if attribute_inputs == "invariant":
        probabilities = invariant_attributes(probabilities, attributes)
    return verifier_inputs(descriptors, probabilities)


def dlib_scores(descriptors, first, second) -> np.ndarray:
    """The reference verifier: score = -||d1 - d2|| of dlib's descriptors (dlib's own rule
    declares one person below a distance of 0.6, i.e. a score above -0.6)."""
    descriptors = np.asarray(descriptors, dtype=np.float64)
    return -np.linalg.norm(descriptors[first] - descriptors[second], axis=1)


def fused_scores(descriptors, invariant_probabilities, first, second,
                 weight: float) -> np.ndarray:
    """dlib's distance plus the attributes' disagreement: the score

        -( ||d1 - d2|| + beta * (1/k) sum_j |p1_j - p2_j| )

    over the k identity-invariant attributes (:data:`INVARIANT_ATTRIBUTES`) of the two faces.
    Not the paper's design (which shares an embedding with the attribute tasks, the Siamese
    variants): it asks whether attributes add anything to an identity descriptor that is
    left as it is."""
    p = np.asarray(invariant_probabilities, dtype=np.float64)
    disagreement = np.abs(p[first] - p[second]).mean(axis=1)
    return dlib_scores(descriptors, first, second) - weight * disagreement


@dataclass
class FusedVariant:
    """A fused verifier tuned on validation pairs: its weight beta, the threshold on its score,
    its validation accuracy and that of every weight tried."""

    name: str
    weight: float
    threshold: float
    val_accuracy: float
    tried: list[dict]


def tune_fusion(name: str, descriptors, invariant_probabilities, first, second, same,
                weights=FUSION_WEIGHTS) -> FusedVariant:
    """The weight of ``weights`` whose fused score is the most accurate on the validation pairs
    (first, second, same), at its best threshold; the lowest weight wins a tie."""
    tried, best = [], None
    for weight in weights:
        scores = fused_scores(descriptors, invariant_probabilities, first, second, weight)
        threshold, accuracy = best_threshold(scores, same)
        tried.append({"attribute_weight": weight, "val_accuracy": accuracy})
        if best is None or accuracy > best.val_accuracy:
            best = FusedVariant(name, float(weight), threshold, accuracy, tried)
    return best


@dataclass
class TrainedVariant:
    """A tuned Siamese verifier: the model of the first seed, those of the others, the chosen
    settings and the validation accuracy of every setting tried."""

    name: str
    model: SiameseVerifier
    settings: dict
    val_accuracy: float
    tried: list[dict]
    other_seeds: list[SiameseVerifier] = field(default_factory=list)


def _fit(x_train, ids_train, x_val, ids_val, targets, settings: VerifierSettings, *, seed,
         margin, hidden_dim, attribute_weight=0.0, attribute_names=None):
    started = time.perf_counter()
    model, history = train_verifier(
        x_train, ids_train, targets, val_inputs=x_val, val_identities=ids_val,
        hidden_dim=hidden_dim, margin=margin, attribute_weight=attribute_weight,
        attribute_names=attribute_names, epochs=settings.epochs,
        pairs_per_epoch=settings.pairs_per_epoch, val_pairs=settings.val_pairs, seed=seed)
    model.meta["train_seconds"] = round(time.perf_counter() - started, 1)
    return model, max(h["val_accuracy"] for h in history)


def tune_and_train(celeba: FaceDataset, codes: FaceCodes, probabilities: dict[str, np.ndarray],
                   attributes: list[str], settings: VerifierSettings | None = None, *,
                   variants=tuple(v for v in VARIANTS if VARIANTS[v].kind == "siamese"),
                   model_sources: dict[str, str] | None = None,
                   progress: bool = False) -> dict[str, TrainedVariant]:
    """Train the Siamese variants on CelebA's training people, tuned on its validation people.

    Images in which no face was found ("fallback") are left out of training and validation.
    The verifier without attributes is tuned over ``margins`` x ``hidden_dims``; each variant
    with attributes keeps that margin and width and is tuned over ``attribute_inputs`` x
    ``attribute_weights``, its matching term targeting the identity-invariant attributes
    (:data:`INVARIANT_ATTRIBUTES`) of its own attribute model.

    Parameters
    ----------
    celeba : CelebA with identities and the official split; the rows of ``codes``.
    codes : its face codes.
    probabilities : attribute-model key -> (n, k) probabilities of the rows of ``codes``.
    attributes : the k attribute names.
    model_sources : attribute-model key -> the name or folder it was loaded from (kept in the
        verifier's meta, so that ``mtfap verify`` can open it again).
    """
    settings = settings or VerifierSettings()
    model_sources = model_sources or {}
    if codes.meta.get("keys_sha256") != _keys_fingerprint(celeba.keys):
        raise ValueError("the face codes were not made from this CelebA dataset")
    usable = codes.detector != "fallback"
    train = np.flatnonzero((celeba.split == 0) & usable)
    val = np.flatnonzero((celeba.split == 1) & usable)
    ids = np.asarray(celeba.identities)

    def fit(name, seed=settings.seeds[0], *, attribute_inputs="none", attribute_weight=0.0,
            margin, hidden_dim):
        p = probabilities.get(VARIANTS[name].attribute_model)
        x = variant_inputs(codes.descriptors, p, attributes, attribute_inputs)
        targets = invariant_attributes(p, attributes)[train] if attribute_weight > 0 else None
        return _fit(x[train], ids[train], x[val], ids[val], targets, settings, seed=seed,
                    margin=margin, hidden_dim=hidden_dim, attribute_weight=attribute_weight,
                    attribute_names=INVARIANT_ATTRIBUTES)

    def search(name, grid, fixed=None):
        """The best setting of ``grid`` (dicts) by validation accuracy, and all tried."""
        tried, best = [], None
        for setting in grid:
            model, accuracy = fit(name, **setting, **(fixed or {}))
            tried.append({**setting, "val_accuracy": accuracy})
            if progress:
                shown = ", ".join(f"{k} {v}" for k, v in setting.items())
                print(f"  {name}: {shown}: val {100 * accuracy:.2f} %", flush=True)
            if best is None or accuracy > best[1]:
                best = (model, accuracy, setting)
        return best, tried

    (model, accuracy, shape), tried = search("siamese", [
        {"hidden_dim": h, "margin": m} for h in settings.hidden_dims for m in settings.margins])
    trained: dict[str, TrainedVariant] = {}
    if "siamese" in variants:
        model.meta["inputs"] = {"descriptor": "dlib", "attribute_model": None,
                                "attribute_columns": None}
        trained["siamese"] = TrainedVariant("siamese", model, {
            **shape, "attribute_inputs": "none", "attribute_weight": 0.0}, accuracy, tried)
    grid = [{"attribute_inputs": i, "attribute_weight": w} for i in settings.attribute_inputs
            for w in settings.attribute_weights if (i, w) != ("none", 0)]   # ("none", 0): green
    if not grid:
        raise ValueError("the attribute grid has no setting that uses the attributes")
    for name in variants:
        variant = VARIANTS[name]
        if name == "siamese":
            continue
        if variant.attribute_model not in probabilities:
            raise ValueError(f"variant {name} needs the attribute model "
                             f"{variant.attribute_model!r}; give its probabilities")
        (model, accuracy, chosen), tried = search(name, grid, shape)
        columns = {"none": None, "invariant": list(INVARIANT_ATTRIBUTES),
                   "all": list(attributes)}[chosen["attribute_inputs"]]
        model.meta["inputs"] = {"descriptor": "dlib",
                                "attribute_model": model_sources.get(variant.attribute_model),
                                "attribute_columns": columns}
        trained[name] = TrainedVariant(name, model, {**shape, **chosen}, accuracy, tried)

    for name, result in trained.items():
        for seed in settings.seeds[1:]:
            model, accuracy = fit(name, seed, **result.settings)
            model.meta["inputs"] = result.model.meta["inputs"]
            result.other_seeds.append(model)
            if progress:
                print(f"  {name}: seed {seed}: val {100 * accuracy:.2f} %", flush=True)
    return trained


# --------------------------------------------------------------------------------------------
# Scoring the pair lists

def celeba_test_pair_list() -> VerificationPairs:
    """The fixed 6,000 CelebA test pairs shipped with the package (``resources/
    celeba_test_pairs.csv``, written once by :func:`celeba_test_pairs` with its defaults, so
    that the list never depends on numpy's generator)."""
    path = resources.files("mtfap").joinpath("resources/celeba_test_pairs.csv")
    return load_pairs(Path(str(path)), name="celeba-test")


@dataclass
class PairScores:
    """Every verifier's scores on one pair list.

    scores : variant -> (n,) scores of the tuned verifier (first seed).
    seed_scores : variant -> scores of the same verifier trained with the other seeds.
    thresholds : variant -> the decision threshold chosen on CelebA's validation pairs.
    detectors : how the faces of the list's images were found (counts).
    """

    pairs: VerificationPairs
    scores: dict[str, np.ndarray]
    seed_scores: dict[str, list[np.ndarray]]
    thresholds: dict[str, float]
    detectors: dict[str, int]


def score_pair_list(pairs: VerificationPairs, codes: FaceCodes,
                    probabilities: dict[str, np.ndarray], attributes: list[str],
                    trained: dict[str, TrainedVariant], dlib_threshold: float,
                    fused: dict[str, FusedVariant] | None = None) -> PairScores:
    """Score ``pairs`` (whose images are rows of ``codes``) with dlib's distance, every fused
    verifier and every trained verifier; ``probabilities`` are those of the attribute models
    for ``codes``."""
    first, second = pairs.index(codes.keys)
    scores = {"dlib": dlib_scores(codes.descriptors, first, second)}
    seed_scores: dict[str, list[np.ndarray]] = {"dlib": []}
    thresholds = {"dlib": float(dlib_threshold)}
    for name, result in (fused or {}).items():
        p = invariant_attributes(probabilities[VARIANTS[name].attribute_model], attributes)
        scores[name] = fused_scores(codes.descriptors, p, first, second, result.weight)
        seed_scores[name] = []
        thresholds[name] = result.threshold
    for name, result in trained.items():
        p = probabilities.get(VARIANTS[name].attribute_model)
        x = variant_inputs(codes.descriptors, p, attributes, result.settings["attribute_inputs"])
        scores[name] = score_pairs(result.model, x, first, second)
        seed_scores[name] = [score_pairs(m, x, first, second) for m in result.other_seeds]
        thresholds[name] = float(result.model.threshold)
    used = np.unique(np.concatenate([first, second]))
    counts = dict(zip(*np.unique(codes.detector[used], return_counts=True)))
    scores = {name: scores[name] for name in VARIANTS if name in scores}   # the tables' order
    return PairScores(pairs, scores, seed_scores, thresholds,
                      {str(k): int(v) for k, v in counts.items()})


def metrics_table(result: PairScores, fars=DEFAULT_FARS):
    """One row per verifier, in percent: the 10-fold accuracy and its standard deviation over
    the folds, TAR at each FAR, EER, AUC, the accuracy at the validation threshold, and (with
    several seeds) the mean and standard deviation over seeds of the 10-fold accuracy."""
    import pandas as pd
    rows = {}
    for name, scores in result.scores.items():
        same, folds = result.pairs.same, result.pairs.fold
        fold = ten_fold_accuracy(scores, same, folds)
        row = {"accuracy": 100 * fold.mean, "sd_folds": 100 * fold.std}
        for far in fars:
            row[f"TAR@FAR={far:g}"] = 100 * tar_at_far(scores, same, far).tar
        row["EER"] = 100 * equal_error_rate(scores, same)
        row["AUC"] = 100 * roc(scores, same).auc
        row["accuracy@val_threshold"] = 100 * float(np.mean(
            (scores >= result.thresholds[name]) == same))
        all_seeds = [scores, *result.seed_scores.get(name, [])]
        accuracies = [100 * ten_fold_accuracy(s, same, folds).mean for s in all_seeds]
        row["seeds"] = len(all_seeds)
        row["accuracy_seed_mean"] = float(np.mean(accuracies))
        row["accuracy_seed_sd"] = float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 \
            else float("nan")
        rows[VARIANTS[name].label] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "verifier"
    return frame


def differences_table(result: PairScores, comparisons=COMPARISONS, n_bootstrap: int = 1000,
                      seed: int = 0):
    """:func:`paired_difference` of each comparison (a, b) present in ``result``: one row per
    comparison and metric, in points, with the 95 % bootstrap interval, and the mean and
    standard deviation of the per-fold accuracy differences."""
    import pandas as pd
    frames = []
    for a, b in comparisons:
        if a not in result.scores or b not in result.scores:
            continue
        diff = paired_difference(result.scores[a], result.scores[b], result.pairs.same,
                                 result.pairs.fold, n_bootstrap=n_bootstrap, seed=seed)
        frame = diff.to_frame().drop(columns=["a", "b"])
        frame.insert(0, "comparison", f"{a} - {b}")
        frame["fold_mean"] = 100 * diff.fold_mean
        frame["fold_sd"] = 100 * diff.fold_std
        frames.append(frame.reset_index())
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def plot_variants_roc(result: PairScores, path: str | Path, title: str) -> list[Path]:
    """Fig. 11 for one pair list: the ROC curve of every verifier, in the paper's colours
    (green without attributes, blue and red with the two attribute models; grey dlib; dotted
    the fused verifiers)."""
    import matplotlib.pyplot as plt
    from cycler import cycler

    # The fused curves first: where the attributes earned no weight they are dlib's curve,
    # which is then drawn over them.
    names = sorted(result.scores, key=lambda n: VARIANTS[n].kind != "fused")
    curves = {VARIANTS[n].short: (result.scores[n], result.pairs.same) for n in names}
    style = (cycler(color=[VARIANTS[n].color for n in names])
             + cycler(linestyle=[VARIANTS[n].linestyle for n in names]))
    with plt.rc_context({"axes.prop_cycle": style, "font.size": 8.5}):
        return plot_roc(curves, path, title=title)


# --------------------------------------------------------------------------------------------
# The whole benchmark

def run_benchmark(lfw: FaceDataset, lfw_pairs: VerificationPairs, celeba: FaceDataset,
                  celeba_pairs: VerificationPairs, attribute_models: dict[str, Predictor], *,
                  framing: Predictor, codes_dir: str | Path, out: str | Path,
                  figures: str | Path | None = None, settings: VerifierSettings | None = None,
                  n_bootstrap: int = 1000, model_sources: dict[str, str] | None = None,
                  progress: bool = False) -> dict:
    """Fig. 11 on LFW View 2 and on the CelebA test pairs, with tables and paired differences.

    1. Face codes of every image of ``lfw`` and ``celeba`` with the backbone and framing of
       ``framing`` (cached as ``codes_dir/{lfw,celeba}.npz``; for all 13,233 LFW and 46,715
       CelebA images the first run takes about an hour on one core, later runs seconds).
    2. Attribute probabilities of every image from each model of ``attribute_models``
       ("independent" and/or "prior_groups"; a variant whose model is missing is skipped).
    3. The Siamese verifiers trained and tuned on CelebA train / val (:func:`tune_and_train`);
       dlib's best threshold on the same validation pairs, for comparison with its 0.6.
    4. Every verifier scored on ``lfw_pairs`` and ``celeba_pairs`` (CelebA test people only):
       :func:`metrics_table`, :func:`differences_table`, the ROC figures.

    Writes into ``out``: ``results.json`` (everything, with timings and the machine load),
    ``{lfw,celeba}_metrics.{md,csv,json}``, ``{lfw,celeba}_differences.{md,csv,json}``,
    ``tuning.{md,csv,json}``, ``scores.npz`` and the trained verifiers in ``verifiers/``; the
    figures ``verification_roc_{lfw,celeba}.png`` into ``figures`` (default ``out``).

    Returns the summary written to ``results.json``.
    """
    started = time.perf_counter()
    settings = settings or VerifierSettings()
    out = Path(out)
    figures = Path(figures) if figures is not None else out
    load_at_start = list(os.getloadavg())
    _check_benchmark_inputs(celeba, celeba_pairs, attribute_models, framing)
    attributes = framing.attributes

    def say(text):
        if progress:
            print(text, flush=True)

    codes, probabilities, seconds = {}, {}, {}
    for name, dataset in (("lfw", lfw), ("celeba", celeba)):
        say(f"face codes of {name} ({len(dataset)} images) ...")
        tick = time.perf_counter()
        codes[name] = ensure_face_codes(dataset, framing, Path(codes_dir) / f"{name}.npz",
                                        progress=progress)
        probabilities[name] = {key: attribute_probabilities(codes[name], model, dataset)
                               for key, model in attribute_models.items()}
        seconds[f"codes_{name}"] = round(time.perf_counter() - tick, 1)

    available = [v for v in VARIANTS.values()
                 if v.attribute_model is None or v.attribute_model in attribute_models]
    variants = [v.name for v in available if v.kind == "siamese"]
    say(f"training {', '.join(variants)} on CelebA train, tuned on val ...")
    tick = time.perf_counter()
    trained = tune_and_train(celeba, codes["celeba"], probabilities["celeba"], attributes,
                             settings, variants=variants, model_sources=model_sources,
                             progress=progress)
    seconds["training"] = round(time.perf_counter() - tick, 1)
    # dlib's threshold and the fusion weights, on the validation pairs the verifiers used.
    val = np.flatnonzero((celeba.split == 1) & (codes["celeba"].detector != "fallback"))
    v_first, v_second, v_same = sample_pairs(celeba.identities[val], settings.val_pairs,
                                             [settings.seeds[0], 1])
    dlib_threshold, dlib_val_accuracy = best_threshold(
        dlib_scores(codes["celeba"].descriptors[val], v_first, v_second), v_same)
    fused = {v.name: tune_fusion(
        v.name, codes["celeba"].descriptors[val],
        invariant_attributes(probabilities["celeba"][v.attribute_model][val], attributes),
        v_first, v_second, v_same) for v in available if v.kind == "fused"}

    tick = time.perf_counter()
    results = {name: score_pair_list(pairs, codes[name], probabilities[name], attributes,
                                     trained, dlib_threshold, fused)
               for name, pairs in (("lfw", lfw_pairs), ("celeba", celeba_pairs))}
    tables = _write_reports(results, out, figures, n_bootstrap)
    seconds["scoring"] = round(time.perf_counter() - tick, 1)
    _write_verifiers_and_scores(out, trained, fused, results)

    summary = {
        "datasets": {name: {"images": len(codes[name]), "detectors": codes[name].meta["detectors"],
                            "codes_seconds": codes[name].meta.get("seconds")}
                     for name in codes},
        "attribute_models": {key: {"name": m.name, "source": str(m.source)}
                             for key, m in attribute_models.items()},
        "framing_model": {"name": framing.name, "source": str(framing.source)},
        "settings": {k: list(v) if isinstance(v, tuple) else v
                     for k, v in vars(settings).items()},
        "chosen": {name: {**r.settings, "val_accuracy": 100 * r.val_accuracy,
                          "best_epoch": r.model.meta.get("best_epoch"),
                          "threshold": r.model.threshold} for name, r in trained.items()},
        "fused": {name: {"attribute_weight": r.weight, "val_accuracy": 100 * r.val_accuracy,
                         "threshold": r.threshold} for name, r in fused.items()},
        "dlib": {"threshold": dlib_threshold, "val_accuracy": 100 * dlib_val_accuracy,
                 "lfw_standard_threshold": 0.6},
        "results": tables,
        "seconds": {**seconds, "total": round(time.perf_counter() - started, 1)},
        "load_average": {"start": load_at_start, "end": list(os.getloadavg())},
        "torch_threads": torch.get_num_threads(),   # the verifiers train on one thread
    }
    write_json(out / "results.json", summary)
    return summary


def _check_benchmark_inputs(celeba: FaceDataset, celeba_pairs: VerificationPairs,
                            attribute_models: dict[str, Predictor], framing: Predictor) -> None:
    for key, model in attribute_models.items():
        if model.attributes != framing.attributes:
            raise ValueError(f"attribute model {key!r} ({model.name}) predicts other attributes "
                             f"than {framing.name!r}")
    if celeba.identities is None or celeba.split is None:
        raise ValueError("CelebA needs identities and the official split")
    row_of = {key: i for i, key in enumerate(celeba.keys)}
    pair_keys = np.concatenate([celeba_pairs.key1, celeba_pairs.key2])
    if any(key not in row_of or celeba.split[row_of[key]] != 2 for key in pair_keys):
        raise ValueError("the CelebA pairs use images outside CelebA's test split; the "
                         "verifiers are trained and tuned on the other people")


TITLES = {"lfw": "LFW View 2 (6,000 pairs, 10 folds)",
          "celeba": "CelebA test pairs (6,000 pairs, 10 folds)"}


def _write_reports(results: dict[str, PairScores], out: Path, figures: Path,
                   n_bootstrap: int) -> dict:
    """The metrics and differences tables and the ROC figure of each pair list; returns them
    for ``results.json``."""
    tables = {}
    for name, result in results.items():
        title = TITLES.get(name, name)
        metrics = metrics_table(result)
        differences = differences_table(result, n_bootstrap=n_bootstrap)
        write_table(out / f"{name}_metrics", metrics, title=f"{title}: verifiers (%)")
        write_table(out / f"{name}_differences", differences.set_index("comparison"),
                    title=f"{title}: paired differences a - b (points, 95 % bootstrap)")
        plot_variants_roc(result, figures / f"verification_roc_{name}.png", title)
        tables[name] = {"metrics": metrics.to_dict(orient="index"),
                        "differences": differences.to_dict(orient="records"),
                        "pair_images": result.detectors, "pairs": result.pairs.summary()}
    return tables


def _write_verifiers_and_scores(out: Path, trained: dict[str, TrainedVariant],
                                fused: dict[str, FusedVariant],
                                results: dict[str, PairScores]) -> None:
    """``tuning.*`` (every setting tried), ``verifiers/`` and ``scores.npz``."""
    import pandas as pd
    tuning = pd.DataFrame([{"variant": name, **row, "val_accuracy": 100 * row["val_accuracy"]}
                           for name, result in {**trained, **fused}.items()
                           for row in result.tried])
    write_table(out / "tuning", tuning.set_index("variant"),
                title="Validation accuracy (%) of each setting tried (CelebA val pairs)")
    for name, result in trained.items():
        save_verifier(result.model, out / "verifiers" / name)
    arrays = {f"{ds}/{variant}": s for ds, r in results.items() for variant, s in r.scores.items()}
    arrays.update({f"{ds}/same": r.pairs.same for ds, r in results.items()})
    arrays.update({f"{ds}/fold": r.pairs.fold for ds, r in results.items()})
    write_npz(out / "scores.npz", arrays)
