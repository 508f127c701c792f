"""The network of MTFAP: a backbone (block 1, image -> GAP features) and the heads (block 2,
features -> k logits), built from a :class:`~mtfap.model.spec.ModelSpec`."""

from __future__ import annotations

import torch
from torch import nn

from mtfap.backbones import create_backbone
from mtfap.heads.registry import make_torch_heads
from mtfap.heads.torch_base import LinearHeads
from mtfap.model.spec import ModelSpec


class AttributeModel(nn.Module):
    """Backbone (image -> GAP features) followed by the heads (features -> k logits)."""

    def __init__(self, backbone: nn.Module, heads: nn.Module):
        super().__init__()
        self.backbone, self.heads = backbone, heads

    def forward(self, images: torch.Tensor, freeze_backbone: bool = False) -> torch.Tensor:
        if freeze_backbone:
            with torch.no_grad():
                features = self.backbone(images)
        else:
            features = self.backbone(images)
        return self.heads(features.float())


def build_model(spec: ModelSpec, *, pretrained: bool | str = False,
                backbone: nn.Module | None = None, linear_map=None) -> AttributeModel:
    """The backbone named by ``spec`` (or the one given) and the heads on its features.

    pretrained : the backbone's starting weights (``create_backbone``); a trained model's
        weights are loaded afterwards, so False skips reading the packaged ones.
    linear_map : (W (d, k), b (k,)) for ``spec.heads == "linear"`` (heads stored as their
        linear map); zeros when not given (weights loaded afterwards).
    """
    if backbone is None:
        backbone = create_backbone(spec.backbone, pretrained=pretrained, **spec.backbone_args)
    if spec.heads == "linear":
        d, k = backbone.feature_dim, len(spec.attributes)
        W, b = linear_map if linear_map is not None else (torch.zeros(d, k), torch.zeros(k))
        heads = LinearHeads(W, b, spec.attributes)
    else:
        heads = make_torch_heads(spec.heads, backbone.feature_dim, spec.attributes,
                                 **spec.heads_params)
    return AttributeModel(backbone, heads)
