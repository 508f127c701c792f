"""The training configuration: one typed object, from a TOML/YAML file plus command-line overrides.

A run is fully described by a :class:`TrainConfig`. ``load_config("run.toml", overrides)`` reads a
file (flat keys; ``heads_params`` and ``backbone_args`` are tables), applies ``key=value``
overrides, checks every key and value, and the trainer saves the resolved result as
``config.json`` in the run directory, so a run can always be repeated from its own folder.
"""

from __future__ import annotations

import json
import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

import tomllib
import yaml

from mtfap.data.transforms import Augmentation
from mtfap.errors import did_you_mean
from mtfap.heads.params import TORCH, check_params, read_value
from mtfap.io import write_json
from mtfap.model.spec import ModelSpec

# Keys that change how a run is executed, not what it computes: a checkpoint may be resumed
# with other values of these (another machine, more workers, a longer step budget).
EXECUTION_KEYS = frozenset({"output_dir", "num_workers", "cache_dir", "device", "max_steps",
                            "progress"})


@dataclass
class TrainConfig:
    """Everything a training run depends on.

    Data
        data : path of a dataset any reader understands (``mtfap.data.open_dataset``).
        attributes : the attributes to learn; None = all of the dataset's.
        cache_dir : where decoded, resized images are cached (None = the pipeline's default).
        num_workers : DataLoader worker processes.
        skip_bad_images : leave out, with a warning, the images that cannot be decoded
            (corrupt, truncated, over the pixel limit) instead of stopping at the first.
        scarce_fraction, scarce_count, scarce_seed : the scarce-label setting (the paper's
            motivating case): only ``scarce_fraction`` of the train and val labels of the
            ``scarce_count`` rarest attributes are kept, the rest missing; test labels whole
            (``mtfap.data.splits.scarce_setting``). None = all labels.
    Model
        backbone, pretrained, backbone_args : the backbone is
            ``create_backbone(backbone, pretrained, **backbone_args)``.
        heads : ``independent`` (eq. 1), ``lowrank_sparse`` (eq. 3, Algorithms 1-2) or ``graph``
            (eq. 6-14, Algorithm 3).
        heads_params : keyword arguments of ``make_torch_heads`` (regularisation weights, solver,
            task groups, ...), checked against their declaration in ``mtfap.heads.params``.
        init : start from a trained model (a shipped model's name, an exported model's folder
            or a run folder): its backbone and its heads (as their linear map on the raw
            features, ``TorchIndependentHeads.start_from``), instead of ``pretrained``'s
            backbone and new heads. Needs the same backbone, backbone_args and attributes, and
            ``heads = "independent"``. None = no such start.
    Optimisation
        optimizer : ``sgd`` (with ``momentum``) or ``adamw`` for the backbone and the heads.
        lr, weight_decay : peak learning rate; weight decay on the backbone only (the heads are
            regularised by Omega(W)).
        head_lr_scale : the heads learn at ``head_lr_scale * lr`` (new heads on a pretrained
            backbone usually want a larger step than the backbone).
        schedule : ``cosine`` (to 0), ``step`` (times ``step_gamma`` every ``step_epochs``) or
            ``none``, after a linear warm-up of ``warmup_epochs``.
        grad_clip_norm : clip the global gradient norm (None = no clipping).
        label_smoothing : train against targets e / 2 and 1 - e / 2 instead of 0 and 1
            (0 = none); the validation and the test score the true labels.
        positive_weight_power : p; the loss of attribute j's positive labels is weighted by
            ``(negatives_j / positives_j) ** p``, counted over the known training labels: 0 =
            no weighting, 1 = positives and negatives weigh the same in total (the rare
            attributes' positives weigh most), 0.5 = between the two.
        ema_decay : keep an exponential moving average of the weights (backbone and heads),
            ``ema = decay * ema + (1 - decay) * weights`` after every optimiser step; the
            average is what each epoch validates, what ``best.pt`` keeps and what the run
            delivers, and the raw weights' validation accuracy is recorded beside it
            (``val_mean_accuracy_raw``). None = no average.
        epochs, batch_size : ``batch_size`` is the global batch, split over processes.
        freeze_backbone_epochs : train only the heads for this many first epochs.
        frozen_layers : keep the backbone's first N layers (``Backbone.ordered_layers``; for
            ``dlib_face_resnet`` 1 = the stem, 1 + k = the stem and the first k of the 14
            residual blocks) at their starting weights for the whole run: no gradient is
            computed through them, so a step costs less. 0 = train the whole backbone.
        max_steps : stop after this many optimiser steps (smoke tests); None = all epochs.
        time_budget_minutes : stop after this much wall time (data loading, training, the
            validation of each epoch and checkpoints included) and let the schedule run on the
            fraction of the budget used, whichever of it and ``epochs`` ends first; the last
            epoch may then be partial. The run adapts to the machine's speed, so the number of
            steps (and the result) is not reproducible to the bit. None = epochs only.
        augmentation : settings of ``mtfap.data.transforms.Augmentation`` (``flip_prob``,
            ``scale``, ``max_shift``, ``brightness``, ``contrast``); empty = its defaults.
    Execution
        seed, device (``auto``/``cpu``/``cuda``), amp (``auto`` = bf16 autocast where it is
        fast: GPUs, and CPUs with AMX or AVX512-BF16; ``bf16`` everywhere, slow on other CPUs;
        ``off``),
        channels_last (NHWC memory layout for the backbone: faster convolutions on CPUs and
        GPUs, same results up to rounding), flip_test (average the logits of each image and its
        mirror at evaluation), output_dir, progress (show progress bars).
    """

    data: str = ""
    attributes: list[str] | None = None
    cache_dir: str | None = None
    num_workers: int = 0
    skip_bad_images: bool = False

    backbone: str = "compact"
    pretrained: bool | str = False
    backbone_args: dict = field(default_factory=dict)
    heads: Literal["independent", "lowrank_sparse", "graph"] = "lowrank_sparse"
    heads_params: dict = field(default_factory=dict)
    init: str | None = None

    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    head_lr_scale: float = 1.0
    schedule: Literal["cosine", "step", "none"] = "cosine"
    step_epochs: int = 10
    step_gamma: float = 0.1
    warmup_epochs: float = 0.0
    grad_clip_norm: float | None = None
    ema_decay: float | None = None
    label_smoothing: float = 0.0
    positive_weight_power: float = 0.0
    epochs: int = 10
    batch_size: int = 64
    freeze_backbone_epochs: int = 0
    frozen_layers: int = 0
    max_steps: int | None = None
    time_budget_minutes: float | None = None
    augmentation: dict = field(default_factory=dict)
    scarce_fraction: float | None = None
    scarce_count: int = 20
    scarce_seed: int = 0

    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "bf16", "off"] = "auto"
    channels_last: bool = True
    flip_test: bool = False
    output_dir: str = "runs/mtfap"
    progress: bool = True

    def __post_init__(self):
        for f in fields(self):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), _HINTS[f.name]))
        if self.data and self.data != "synthetic" and Path(self.data).exists():
            # Where the data is, whatever folder the run is later opened from (evaluate, resume).
            self.data = str(Path(self.data).resolve())
        try:  # the same check as fit-heads, sweep and compare make
            self.heads_params = check_params(self.heads, self.heads_params, TORCH)
        except ValueError as exc:
            raise ValueError(f"config heads_params: {exc}") from None
        positive = ("lr", "epochs", "batch_size", "step_epochs", "head_lr_scale")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"config {name} must be > 0, got {getattr(self, name)!r}")
        for name in ("weight_decay", "momentum", "warmup_epochs", "num_workers",
                     "freeze_backbone_epochs", "frozen_layers", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"config {name} must be >= 0, got {getattr(self, name)!r}")
        try:
            self.make_augmentation()
        except TypeError as err:
            known = ", ".join(f.name for f in fields(Augmentation))
            raise ValueError(f"config augmentation: {err}; known settings are {known}") from None
        for name in ("max_steps", "time_budget_minutes"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"config {name} must be > 0 or None, got "
                                 f"{getattr(self, name)!r}")
        if self.scarce_fraction is not None and not 0 <= self.scarce_fraction <= 1:
            raise ValueError(f"config scarce_fraction must be in [0, 1] or None, got "
                             f"{self.scarce_fraction!r}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"config ema_decay must be between 0 and 1 (for example 0.999) or "
                             f"None, got {self.ema_decay!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"config label_smoothing must be in [0, 1) (for example 0.1), got "
                             f"{self.label_smoothing!r}")
        if not 0 <= self.positive_weight_power <= 1:
            raise ValueError(f"config positive_weight_power must be in [0, 1] (0 = no weighting, "
                             f"for example 0.5), got {self.positive_weight_power!r}")
        if self.init is not None and self.heads != "independent":
            raise ValueError(f"config init (start from a trained model) needs heads = "
                             f"\"independent\", got {self.heads!r}")
        if self.scarce_count < 1:
            raise ValueError(f"config scarce_count must be >= 1, got {self.scarce_count!r}")

    def make_augmentation(self) -> Augmentation:
        """The training ``Augmentation`` of ``augmentation`` (lists read as tuples)."""
        return Augmentation(**{k: tuple(v) if isinstance(v, list) else v
                               for k, v in self.augmentation.items()})

    def model_spec(self, attributes) -> ModelSpec:
        """The description of the model this config trains (saved as the run's ``model.json``);
        ``attributes`` are the dataset's when the config does not choose them."""
        return ModelSpec(backbone=self.backbone, heads=self.heads,
                         attributes=list(self.attributes or attributes),
                         backbone_args=dict(self.backbone_args),
                         heads_params=dict(self.heads_params), flip_test=self.flip_test)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        """Write the resolved config as JSON (atomically)."""
        return write_json(path, self.to_dict())

    def differences(self, other: "TrainConfig", ignore=EXECUTION_KEYS) -> dict:
        """``{key: (self value, other value)}`` for every key that differs, except ``ignore``."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: (mine[k], theirs.get(k)) for k in mine
                if k not in ignore and mine[k] != theirs.get(k)}


_HINTS = typing.get_type_hints(TrainConfig)
FIELD_NAMES = tuple(f.name for f in fields(TrainConfig))


# Plain annotations: how to name them in an error, and which values they accept (bool is an
# int in Python, but True is no epoch count).
_PLAIN_TYPES = {
    dict: ("a table of key = value", lambda v: isinstance(v, dict)),
    bool: ("true or false", lambda v: isinstance(v, bool)),
    int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: ("a finite number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)),
    str: ("a string", lambda v: isinstance(v, str)),
}


def _coerce(name: str, value, hint):
    """Check ``value`` against the annotation ``hint``; convert harmless cases (int -> float)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(name, value, option)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(errors[0])
    if origin is Literal:
        if value not in args:
            raise ValueError(f"config {name}={value!r} is not one of {', '.join(map(str, args))}."
                             + did_you_mean(value, args))
        return value
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"config {name} must be a list of names, got {value!r}")
        return list(value)
    if hint in _PLAIN_TYPES:
        what, accepts = _PLAIN_TYPES[hint]
        if not accepts(value):
            raise ValueError(f"config {name} must be {what}, got {value!r}")
        return hint(value)  # int -> float; a copy of a dict
    raise TypeError(f"unsupported config annotation {hint!r} for {name}")


def check_keys(keys, where: str) -> None:
    """Unknown keys raise, naming ``where`` they came from and the closest known key."""
    for key in keys:
        if key not in FIELD_NAMES:
            raise ValueError(f"{where}: unknown config key {key!r}.{did_you_mean(key, FIELD_NAMES)}"
                             f" Known keys: {', '.join(FIELD_NAMES)}")


def read_config_file(path: str | Path) -> dict:
    """The key/value table of a ``.toml``, ``.yaml``/``.yml`` or ``.json`` config file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise ValueError(f"{path}: config files must end in .toml, .yaml, .yml or .json")
    try:
        text = path.read_text(encoding="utf-8")
        if suffix == ".toml":
            table = tomllib.loads(text)
        elif suffix == ".json":
            table = json.loads(text)
        else:
            table = yaml.safe_load(text) or {}
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") \
            from None
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError, RecursionError) as exc:
        first = " ".join(str(exc).split())
        raise ValueError(f"{path}: cannot parse config: {first}") from None
    if not isinstance(table, dict):
        raise ValueError(f"{path}: a config file must be a table of key = value")
    check_keys(table, str(path))
    return table


def parse_override(text: str, table: str | None = None) -> tuple[str, object]:
    """``"key=value"`` -> (key, value), the value read as YAML (numbers, booleans, lists;
    ``1e-3`` is a number, see ``mtfap.heads.params.read_value``), or kept as text for keys that
    take text (``output_dir=2024`` is a folder name).

    With ``table`` (e.g. ``"heads_params"``) the key is an entry of that table (``--param``).
    """
    flag, example = ("--param", "lam=0.01") if table else ("--set", "lr=0.05")
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"{flag} {text!r}: expected key=value, for example {flag} {example}")
    if table:
        key = f"{table}.{key}"
    top = key.split(".")[0]
    check_keys([top], f"{flag} {text!r}")
    hint = _HINTS[top]
    if "." not in key and (hint is str or typing.get_origin(hint) is Literal):
        return key, raw.strip()
    if "." not in key and set(typing.get_args(hint)) == {str, type(None)}:  # text or null
        return key, None if raw.strip().lower() in ("null", "none", "~", "") else raw.strip()
    return key, read_value(raw)


def merge_overrides(table: dict, overrides) -> dict:
    """Apply (key, value) pairs; ``heads_params.lam=0.1`` sets one entry of a table key."""
    table = {k: (dict(v) if isinstance(v, dict) else v) for k, v in table.items()}
    for key, value in overrides:
        top, _, sub = key.partition(".")
        check_keys([top], f"override {key!r}")
        if sub:
            if _HINTS[top] is not dict or not isinstance(table.setdefault(top, {}), dict):
                raise ValueError(f"override {key!r}: {top} is not a table of key = value")
            table[top][sub] = value
        else:
            table[key] = value
    return table


def load_config(path: str | Path | None = None, overrides=(), source: str | Path | None = None
                ) -> TrainConfig:
    """A :class:`TrainConfig` from an optional file and (key, value) overrides applied in order.

    A bad value is a ValueError that names the file it may come from (``path``, or ``source``
    when the caller read the file itself and passes its table among the overrides).
    """
    table = read_config_file(path) if path is not None else {}
    try:
        return TrainConfig(**merge_overrides(table, overrides))
    except ValueError as exc:
        where = path or source
        if where is None:
            raise
        raise ValueError(f"{exc} (the settings of {where} and the command line)") from None


def config_from_dict(table: dict, where: str = "config") -> TrainConfig:
    """Rebuild a config saved by :meth:`TrainConfig.to_dict` (for example from a checkpoint)."""
    check_keys(table, where)
    return TrainConfig(**table)
