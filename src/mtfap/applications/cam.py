"""Class activation maps (paper Sec. 5.3, eq. 15-16, Fig. 8).

With a GAP backbone and linear heads the logit of attribute c is

    f_c(x) = sum_k w_kc * mean_{x,y} g_k(x, y) + b_c = mean_{x,y} A_c(x, y) + b_c,
    A_c(x, y) = sum_k w_kc g_k(x, y),                                              (eq. 15-16)

so the map A_c says where in the face the evidence for attribute c lies, and its spatial mean
is exactly the logit minus the bias. The map is upsampled bilinearly to the network input and
overlaid on the image the network saw.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mtfap.data.transforms import normalize, preprocess
from mtfap.io import save_figure


@torch.no_grad()
def class_activation_maps(backbone, weight_matrix, images: torch.Tensor) -> torch.Tensor:
    """A_c for every image and every column of ``weight_matrix`` (eq. 15-16).

    Parameters
    ----------
    backbone : a ``Backbone`` (``forward_features(x) -> (N, d, h, w)``).
    weight_matrix : (d, m) head weights W, one column per attribute to map.
    images : (N, 3, H, W) images normalised for the backbone.

    Returns
    -------
    (N, m, h, w) maps at the resolution of the last feature map.
    """
    weights = torch.as_tensor(weight_matrix, dtype=torch.float32)
    feature_maps = backbone.forward_features(images).float()
    if feature_maps.shape[1] != weights.shape[0]:
        raise ValueError(f"the backbone gives {feature_maps.shape[1]}-channel feature maps but "
                         f"the heads have {weights.shape[0]} input features; the heads were "
                         "fitted on another backbone")
    return torch.einsum("nkhw,kc->nchw", feature_maps, weights)


def upsample_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of (N, m, h, w) maps to (N, m, *size)."""
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)


def normalise_map(activation: np.ndarray) -> np.ndarray:
    """Rescale one map to [0, 1] (min to max); a constant map becomes all zeros."""
    activation = np.asarray(activation, dtype=np.float64)
    span = activation.max() - activation.min()
    return (activation - activation.min()) / span if span > 0 else np.zeros_like(activation)


def overlay(image: np.ndarray, activation: np.ndarray, alpha: float = 0.5,
            cmap: str = "jet") -> np.ndarray:
    """An RGB float image in [0, 1]: ``image`` blended with the coloured, normalised map.

    image : (H, W, 3) uint8 or float in [0, 1]; activation : (H, W) map of the same size.
    """
    import matplotlib

    image = np.asarray(image)
    if image.dtype == np.uint8:
        image = image.astype(np.float64) / 255
    if image.shape[:2] != np.shape(activation):
        raise ValueError(f"image is {image.shape[:2]} but the map is {np.shape(activation)}; "
                         "upsample the map to the image first")
    heat = matplotlib.colormaps[cmap](normalise_map(activation))[..., :3]
    return (1 - alpha) * image + alpha * heat


def plot_cam_grid(images, maps, attributes, path: str | Path, probabilities=None,
                  image_names=None, alpha: float = 0.5, svg: bool = False) -> list[Path]:
    """Fig. 8: a grid of images (rows) x [input, one overlay per attribute] (columns).

    images : N arrays (H, W, 3), the network's view of each face.
    maps : (N, m, H, W) upsampled maps; attributes : m names.
    probabilities : optional (N, m) predicted probabilities, shown in the column titles.
    image_names : optional N labels for the rows.
    """
    import matplotlib.pyplot as plt

    maps = np.asarray(maps)
    n_images, n_attrs = maps.shape[:2]
    fig, axes = plt.subplots(n_images, n_attrs + 1, squeeze=False,
                             figsize=(1.9 * (n_attrs + 1), 2.1 * n_images))
    for i in range(n_images):
        axes[i, 0].imshow(images[i])
        axes[i, 0].set_title(image_names[i] if image_names is not None else "input", fontsize=8)
        for c in range(n_attrs):
            axes[i, c + 1].imshow(overlay(images[i], maps[i, c], alpha))
            title = attributes[c]
            if probabilities is not None:
                title += f"\np = {float(probabilities[i][c]):.2f}"
            axes[i, c + 1].set_title(title, fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle("Class activation maps A_c = sum_k w_kc g_k (red = evidence for the attribute)",
                 fontsize=10)
    return save_figure(fig, path, svg=svg)


def attribute_maps(backbone, weights, bias, images) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Maps of the chosen attributes for PIL images, at the network's input resolution.

    Each image is centre-cropped and resized as the pipeline does for ``backbone.input_spec``.

    Parameters
    ----------
    weights : (d, m) head weights of the m attributes to map; bias : (m,).
    images : PIL images.

    Returns
    -------
    views : the m uint8 (H, W, 3) images the network saw; maps : (N, m, H, W) upsampled A_c;
    probabilities : (N, m) sigmoid(mean A_c + b_c), i.e. the model's prediction.
    """
    spec = backbone.input_spec
    views = [preprocess(image, spec) for image in images]
    batch = normalize(torch.from_numpy(np.stack(views)).permute(0, 3, 1, 2), spec)
    maps = class_activation_maps(backbone, weights, batch)
    logits = maps.mean(dim=(2, 3)) + torch.as_tensor(bias, dtype=torch.float32)
    upsampled = upsample_maps(maps, spec.size)
    return views, upsampled.numpy(), torch.sigmoid(logits).numpy()


def feature_layers(backbone) -> dict[str, torch.nn.Module]:
    """The layers of ``backbone`` a gradient-weighted map can be taken at, by name: the output
    of each stage of its residual blocks (``blocks.N``), when it has ``blocks``."""
    blocks = getattr(backbone, "blocks", None)
    if blocks is None:
        return {}
    return {f"blocks.{i}": block for i, block in enumerate(blocks)}


def default_gradcam_layer(backbone, min_side: int = 16) -> str:
    """The block whose output is the last map with at least ``min_side`` cells a side at the
    input size: fine enough to tell the eyes from the mouth, deep enough to mean something
    (dlib's network: the end of its 64-channel stage, 17 x 17 at 150 px; measured in
    benchmarks/bench_cam_regions.py against the 8 x 8 stage after it)."""
    layers = feature_layers(backbone)
    if not layers:
        raise ValueError(f"{type(backbone).__name__} has no `blocks` to take a map at")
    sizes, handles = {}, []
    for name, module in layers.items():
        handles.append(module.register_forward_hook(
            lambda _m, _i, out, name=name: sizes.__setitem__(name, out.shape[-1])))
    h, w = backbone.input_spec.size
    with torch.no_grad():
        backbone(torch.zeros(1, 3, h, w))
    for handle in handles:
        handle.remove()
    fine = [name for name, side in sizes.items() if side >= min_side]
    return fine[-1] if fine else next(iter(layers))


def gradient_maps(model, images: torch.Tensor, columns, layer: str,
                  weighting: str = "element") -> torch.Tensor:
    """Gradient-weighted maps of attributes ``columns`` at backbone ``layer``.

    For attribute c with logit f_c and the layer's activations a_k(x, y):

    - ``weighting="channel"``: Grad-CAM (Selvaraju et al., ICCV 2017),
      ``relu(sum_k mean_xy(d f_c / d a_k) a_k(x, y))``;
    - ``weighting="element"``: HiResCAM (Draelos and Carin, 2020),
      ``relu(sum_k (d f_c / d a_k)(x, y) a_k(x, y))``: each cell keeps its own gradient, so
      the map sums to the logit's first-order share of each place. It is the paper's CAM when
      the layer is the last one (then the gradient is the head weight everywhere).

    At an earlier layer than the last, the map resolves facial parts that the paper's CAM
    (eq. 15-16, a 2 x 2 map at 150 px for dlib's network) cannot.

    Returns (N, m, h, w) maps at the layer's resolution.
    """
    if weighting not in ("channel", "element"):
        raise ValueError(f"weighting must be 'channel' or 'element', got {weighting!r}")
    module = feature_layers(model.backbone)[layer]
    saved = {}

    def keep(_module, _inputs, output):
        output.retain_grad()
        saved["a"] = output

    handle = module.register_forward_hook(keep)
    try:
        maps = []
        for column in columns:
            model.zero_grad(set_to_none=True)
            with torch.enable_grad():
                logits = model(images)
                logits[:, column].sum().backward()
            activation, gradient = saved["a"].detach(), saved["a"].grad.detach()
            if weighting == "channel":
                gradient = gradient.mean(dim=(2, 3), keepdim=True)
            maps.append(torch.relu((gradient * activation).sum(dim=1)))
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    return torch.stack(maps, dim=1)


MAP_KINDS = ("hirescam", "gradcam", "cam")


def predictor_maps(predictor, faces, attributes, kind: str = "hirescam", layer: str | None = None):
    """Maps of ``attributes`` over face images (framed like the model's training images) at
    the network's input resolution: ``kind`` "cam" (the paper's, eq. 15-16), "gradcam" or
    "hirescam" (:func:`gradient_maps` at ``layer``, default :func:`default_gradcam_layer`).

    Returns the views the network saw (uint8 (H, W, 3) each) and the maps (N, m, H, W).
    """
    spec = predictor.input_spec
    columns = [predictor.attributes.index(a) for a in attributes]
    batch = predictor.prepare(faces)
    views = [preprocess(Image.fromarray(np.asarray(face)), spec) for face in faces]
    model = predictor.model
    if kind == "cam":
        weights, _ = model.heads.linear_map()
        maps = class_activation_maps(model.backbone, weights[:, columns], batch)
    elif kind in ("gradcam", "hirescam"):
        maps = gradient_maps(model, batch, columns, layer or default_gradcam_layer(model.backbone),
                             "channel" if kind == "gradcam" else "element")
    else:
        raise ValueError(f"map kind must be one of {', '.join(MAP_KINDS)}, got {kind!r}")
    return views, upsample_maps(maps.float(), spec.size).detach().numpy()
