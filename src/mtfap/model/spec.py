"""A trained model's own small description: what to build and how to feed it.

A :class:`ModelSpec` is saved as ``model.json`` beside the weights of every model (a train run,
an exported or shipped model) and is all that is needed to rebuild the network: the backbone
and its arguments, the head method and its hyper-parameters, the attribute names, the test-time
views, the decision thresholds and the alignment template (the landmark geometry of the training
images, so that a photo is aligned into the framing the model was trained on).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from mtfap.errors import DataError, did_you_mean
from mtfap.heads.params import TORCH, check_params
from mtfap.io import write_json

SPEC_FORMAT = "mtfap-model"
SPEC_VERSION = 1


@dataclass
class ModelSpec:
    """What a model is, without its weights.

    backbone, backbone_args : ``create_backbone(backbone, **backbone_args)``.
    heads, heads_params : the head method (``mtfap.heads.METHODS``) and its hyper-parameters;
        ``"linear"`` for heads stored as their linear map (exported and shipped models, heads
        fitted on frozen features).
    attributes : the names of the k outputs, in order.
    flip_test, test_scales : the test-time views: the logits are averaged over centre zooms of
        these sides (fractions of the image side) and, with ``flip_test``, their mirrors.
    thresholds : per-attribute decision thresholds (None = 0.5 for all).
    template : the alignment template (``mtfap.faces.AlignmentTemplate.to_dict()``) measured on
        the training images, or None when unknown.
    """

    backbone: str
    heads: str
    attributes: list[str]
    backbone_args: dict = field(default_factory=dict)
    heads_params: dict = field(default_factory=dict)
    flip_test: bool = False
    test_scales: list[float] = field(default_factory=lambda: [1.0])
    thresholds: list[float] | None = None
    template: dict | None = None

    def __post_init__(self):
        for name in ("backbone", "heads"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a name, got {getattr(self, name)!r}")
        if not isinstance(self.attributes, (list, tuple)) or not self.attributes:
            raise ValueError("a model needs a list of at least one attribute")
        self.attributes = [str(a) for a in self.attributes]
        for name in ("backbone_args", "heads_params"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"{name} must be a mapping name -> value")
        if self.template is not None and not isinstance(self.template, dict):
            raise ValueError("template must be a mapping (an alignment template) or null")
        if self.heads != "linear":  # loaded values may only set what the heads declare
            self.heads_params = check_params(self.heads, self.heads_params, TORCH)
        if not isinstance(self.test_scales, (list, tuple)) or not all(
                isinstance(s, (int, float)) and not isinstance(s, bool) for s in self.test_scales):
            raise ValueError(f"test_scales must be a list of numbers, got {self.test_scales!r}")
        self.test_scales = [float(s) for s in self.test_scales]
        if not self.test_scales or not all(0 < s <= 1 for s in self.test_scales):
            raise ValueError(f"test_scales must be sides in (0, 1], got {self.test_scales}")
        if self.thresholds is not None:
            if not isinstance(self.thresholds, (list, tuple)) or not all(
                    isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t <= 1
                    for t in self.thresholds):
                raise ValueError("thresholds must be a list of numbers in [0, 1]")
            self.thresholds = [float(t) for t in self.thresholds]
            if len(self.thresholds) != len(self.attributes):
                raise ValueError(f"{len(self.thresholds)} thresholds for "
                                 f"{len(self.attributes)} attributes")

    def to_dict(self) -> dict:
        return {"format": SPEC_FORMAT, "version": SPEC_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, table: dict, where: str = "model description") -> "ModelSpec":
        """Rebuild a spec saved by :meth:`to_dict`; unknown or missing keys raise, naming
        ``where``."""
        table = dict(table)
        if table.pop("format", SPEC_FORMAT) != SPEC_FORMAT:
            raise DataError("not an mtfap model description", where)
        version = table.pop("version", SPEC_VERSION)
        if version != SPEC_VERSION:
            raise DataError(f"model description version {version} is not supported (this mtfap "
                            f"reads version {SPEC_VERSION})", where, hint="upgrade mtfap")
        names = [f.name for f in fields(cls)]
        for key in table:
            if key not in names:
                raise DataError(f"unknown key {key!r}.{did_you_mean(key, names)}", where)
        try:
            return cls(**table)
        except (TypeError, ValueError) as exc:
            raise DataError(f"invalid model description: {exc}", where) from None

    def save(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "ModelSpec":
        path = Path(path)
        try:
            table = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError("model description not found", path) from None
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read the model description ({exc})", path) from None
        if not isinstance(table, dict):
            raise DataError("a model description is a JSON object", path)
        return cls.from_dict(table, str(path))
