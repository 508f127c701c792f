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
    from mtfap.data.transforms import normalize, preprocess

    spec = backbone.input_spec
    views = [preprocess(image, spec) for image in images]
    batch = normalize(torch.from_numpy(np.stack(views)).permute(0, 3, 1, 2), spec)
    maps = class_activation_maps(backbone, weights, batch)
    logits = maps.mean(dim=(2, 3)) + torch.as_tensor(bias, dtype=torch.float32)
    upsampled = upsample_maps(maps, spec.size)
    return views, upsampled.numpy(), torch.sigmoid(logits).numpy()
