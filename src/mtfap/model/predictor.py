"""A trained model ready for faces: :class:`Predictor`, the object ``mtfap.load_model`` returns.

Whatever the model came from (a train run, heads fitted on frozen features, a model shipped
inside the package), a predictor is the same thing: a network (backbone + heads) with its
:class:`~mtfap.model.spec.ModelSpec`, a name and a version. It takes face images framed like its
training images (``align`` makes such a face from a photo and its landmarks) and gives the
attribute probabilities, the decisions at its thresholds, the shared features, and the identity
descriptor of a face chip.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from mtfap.data.transforms import normalize, preprocess
from mtfap.faces.align import AlignmentTemplate
from mtfap.model.identity import IdentityEncoder
from mtfap.model.inference import view_logits
from mtfap.model.network import AttributeModel
from mtfap.model.spec import ModelSpec


def _as_rgb_array(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"a face image must be uint8 RGB (H, W, 3) or a PIL image, got "
                         f"{array.dtype} {array.shape}")
    return array


def _as_list(images) -> list:
    if isinstance(images, np.ndarray) and images.ndim == 3:
        return [images]
    if isinstance(images, Image.Image):
        return [images]
    return list(images)


class Predictor:
    """Face images in, the k attribute probabilities out (and features, identity descriptors).

    Parameters
    ----------
    model : the network, put in eval mode on ``device``.
    spec : its description (attributes, views, thresholds, alignment template).
    name, version : how the model is called (``mtfap models``) and which build it is.
    source : where it was loaded from (a run folder, a package resource).
    card : the model card's figures (accuracy, calibration), when known.
    """

    def __init__(self, model: AttributeModel, spec: ModelSpec, *, name: str, version: str = "",
                 source: str = "", card: dict | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 64):
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.spec, self.name, self.version, self.source = spec, name, version, source
        self.card = card or {}
        self.batch_size = int(batch_size)
        self._identity = None

    def __repr__(self) -> str:
        return (f"Predictor({self.name!r}, version={self.version!r}, backbone="
                f"{self.spec.backbone!r}, heads={self.spec.heads!r}, "
                f"{len(self.attributes)} attributes)")

    # --- what the model is --------------------------------------------------------------------
    @property
    def attributes(self) -> list[str]:
        return list(self.spec.attributes)

    @property
    def input_spec(self):
        """The backbone's ``InputSpec``: input size, normalisation, centre crop."""
        return self.model.backbone.input_spec

    @property
    def thresholds(self) -> np.ndarray:
        """Per-attribute decision thresholds (0.5 unless the model's card chose others)."""
        if self.spec.thresholds is None:
            return np.full(len(self.attributes), 0.5)
        return np.asarray(self.spec.thresholds, dtype=np.float64)

    @property
    def template(self):
        """The alignment template (``mtfap.faces.AlignmentTemplate``) of the training images,
        or None when the model does not know it."""
        return None if self.spec.template is None else AlignmentTemplate.from_dict(self.spec.template)

    # --- images to tensors --------------------------------------------------------------------
    def prepare(self, images) -> torch.Tensor:
        """Normalised input tensor (N, 3, H, W) of face images framed like the training images
        (uint8 RGB arrays (H, W, 3), an array (N, H, W, 3), or PIL images): each is centre-cropped
        and resized as in training (``mtfap.data.transforms.preprocess``)."""
        images = _as_list(images)
        if not images:
            h, w = self.input_spec.size
            return torch.zeros(0, 3, h, w)
        arrays = [preprocess(Image.fromarray(_as_rgb_array(image)), self.input_spec)
                  for image in images]
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        return normalize(batch, self.input_spec)

    def _batches(self, images):
        images = _as_list(images)
        for first in range(0, len(images), self.batch_size):
            yield self.prepare(images[first:first + self.batch_size]).to(self.device)

    # --- predictions --------------------------------------------------------------------------
    @torch.no_grad()
    def predict_tensor(self, batch: torch.Tensor, scales: Sequence[float] | None = None,
                       flip: bool | None = None) -> torch.Tensor:
        """Logits (N, k) of a normalised batch, averaged over the model's test-time views
        (or the ``scales`` / ``flip`` given)."""
        return view_logits(self.model, batch.to(self.device),
                           scales=self.spec.test_scales if scales is None else scales,
                           flip=self.spec.flip_test if flip is None else flip)

    def predict_logits(self, images) -> np.ndarray:
        """Logits (N, k) of face images (see :meth:`prepare` for the forms accepted)."""
        parts = [self.predict_tensor(batch).cpu().numpy() for batch in self._batches(images)]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.attributes)), np.float32)

    def predict_proba(self, images) -> np.ndarray:
        """Probabilities (N, k) that each face has each attribute."""
        logits = self.predict_logits(images).astype(np.float64)
        return 1.0 / (1.0 + np.exp(-logits))

    def decide(self, probabilities: np.ndarray) -> np.ndarray:
        """Boolean decisions (N, k) at the model's thresholds."""
        return np.asarray(probabilities) >= self.thresholds

    @torch.no_grad()
    def features(self, images) -> np.ndarray:
        """The backbone's shared features (N, d): the GAP vector the heads read."""
        parts = [self.model.backbone(batch).float().cpu().numpy() for batch in self._batches(images)]
        return np.concatenate(parts) if parts else np.zeros((0, self.model.backbone.feature_dim))

    # --- identity -----------------------------------------------------------------------------
    @property
    def identity(self):
        """The identity encoder (:class:`~mtfap.model.identity.IdentityEncoder`): dlib's
        128-D face descriptor on dlib's own face chips, loaded on first use."""
        if self._identity is None:
            self._identity = IdentityEncoder(device=self.device)
        return self._identity

    def embed(self, chips) -> np.ndarray:
        """Identity descriptors (N, 128) of face chips aligned with ``identity.template``
        (dlib's 150 px chip geometry): faces of one person lie within about 0.6 of each other."""
        return self.identity.embed(chips)
