"""Per-image and per-batch transforms: the centre crop and resize of each backbone's input,
normalisation, the seeded training augmentation and the test-time zoom.

The path of one image::

    file --decode, centre crop, resize--> uint8 (H, W, 3)   [cached: mtfap.data.cache]
        --collate--> uint8 (N, 3, H, W) --/255, augment (train)--> float in [0, 1]
        --normalise--> (x - mean) / std                        [what a backbone sees]
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mtfap.backbones.base import InputSpec

# --------------------------------------------------------------------------------------------
# Per-image preprocessing (PIL) and per-batch normalisation (torch)
# --------------------------------------------------------------------------------------------

def _check_spec(spec: InputSpec) -> tuple[int, int]:
    height, width = (int(v) for v in spec.size)
    if height < 1 or width < 1:
        raise ValueError(f"InputSpec.size must be two positive pixel counts, got {spec.size}")
    if not 0.0 < spec.crop <= 1.0:
        raise ValueError(f"InputSpec.crop is the kept fraction of the shorter side and must be in "
                         f"(0, 1], got {spec.crop}")
    return height, width


def centre_crop_box(width: int, height: int, crop: float) -> tuple[float, float, float, float]:
    """The centred square (left, top, right, bottom) whose side is ``crop * min(width, height)``."""
    side = crop * min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


def preprocess(image: Image.Image, spec: InputSpec) -> np.ndarray:
    """Centre-crop a square (``spec.crop`` of the shorter side) and resize it to ``spec.size``.

    Returns uint8 (H, W, 3). Resizing is PIL's bilinear filter, which widens its support when
    shrinking, so it also anti-aliases downscaling. The crop is square: a non-square
    ``spec.size`` stretches it.
    """
    height, width = _check_spec(spec)
    box = centre_crop_box(*image.size, spec.crop)
    resized = image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR, box=box)
    return np.array(resized, dtype=np.uint8)


def jpeg_round_trip(image: Image.Image, quality: int) -> Image.Image:
    """``image`` saved as a JPEG of ``quality`` (1-95) and read back, as RGB."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def normalize(images: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """``(x - mean) / std`` per channel for a batch (N, 3, H, W).

    ``images`` is uint8 in [0, 255] (divided by 255 here) or float already in [0, 1].
    """
    x = images.float()
    mean = torch.tensor(spec.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    unit = 255.0 if images.dtype == torch.uint8 else 1.0
    # One fused pass: x / (unit std) - mean / std.
    return torch.addcmul(-mean / std, x, 1.0 / (unit * std))


# --------------------------------------------------------------------------------------------
# Seeded training augmentation on float batches in [0, 1]
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Augmentation:
    """Light, face-preserving augmentation: flip, small random crop/translation, brightness and
    contrast jitter.

    The draws of image ``i`` in epoch ``e`` come from a generator seeded by ``(seed, e, i)``,
    so a batch is the same whatever the batch composition, worker count or process.

    flip_prob : probability of a horizontal flip.
    scale : range of the side of the random square crop, as a fraction of the image side
        (zoom in by up to ``1 / scale[0]``).
    max_shift : extra translation beyond the image, as a fraction of the side (edges reflected).
    brightness, contrast : factors b, c drawn uniformly in ``[1 - value, 1 + value]``;
        ``x <- (b x - m) c + m`` with m the mean of ``b x`` over the image, then clipped to [0, 1].
    frame_prob : probability of showing only a window of the image, black outside: what a
        tight face crop (an ID photo, another detector's output, FairFace) looks like once
        aligned into a training framing that also shows hair, neck and background. The window
        is a square of side ``frame_side`` (fractions of the image side), centred at
        ``frame_centre`` (x, y fractions) moved by up to ``frame_jitter``, turned by up to
        ``frame_angle`` degrees. 0 (the default) draws nothing of it.
    blur_prob : probability of a Gaussian blur of standard deviation drawn uniformly in
        ``blur_sigma`` (fractions of the image side): the soft photos of webcams, small faces
        enlarged and out-of-focus shots. 0 (the default) blurs nothing.
    grey_prob : probability of turning the image grey (the luma of ITU-R BT.601, in all three
        channels). 0 (the default) turns nothing grey.
    jpeg_prob : probability of a JPEG round trip (Pillow) at a quality drawn uniformly from the
        integers in ``jpeg_quality``: the blocks and ringing of heavily compressed photos. 0 (the
        default) compresses nothing.
    cover_prob : probability of covering a rectangle of the image with one colour: the face
        masks, scarves, hands and microphones in front of faces in photos. Its area is drawn
        uniformly in ``cover_area`` (fractions of the image), its width-to-height ratio
        log-uniformly in ``cover_aspect``, its centre uniformly over the places where it fits
        and its colour uniformly (random erasing, Zhong et al., AAAI 2020). It is applied before
        the blur, grey and JPEG, which then apply to it as to the face. 0 (the default) covers
        nothing.
    cover_centre : ``(x0, y0, x1, y1)``, fractions of the image: draw the rectangle's centre
        uniformly in this box instead (the rectangle then moved inside the image where it
        overhangs), to cover one part of the face, such as the mouth and chin that a face mask
        hides. None (the default): anywhere it fits.
    cover_unlabel : attributes whose labels the training loss leaves out on covered images
        (read as missing), so that a model is not taught to guess what the rectangle hides.
        Applied by the training loader (``make_loader``), which knows the attributes' columns.
    """

    flip_prob: float = 0.5
    scale: tuple[float, float] = (0.85, 1.0)
    max_shift: float = 0.05
    brightness: float = 0.2
    contrast: float = 0.2
    frame_prob: float = 0.0
    frame_side: tuple[float, float] = (0.5, 0.8)
    frame_centre: tuple[float, float] = (0.5, 0.62)
    frame_jitter: float = 0.04
    frame_angle: float = 15.0
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.004, 0.02)
    grey_prob: float = 0.0
    jpeg_prob: float = 0.0
    jpeg_quality: tuple[int, int] = (10, 60)
    cover_prob: float = 0.0
    cover_area: tuple[float, float] = (0.05, 0.2)
    cover_aspect: tuple[float, float] = (0.5, 2.0)
    cover_centre: tuple[float, float, float, float] | None = None
    cover_unlabel: tuple[str, ...] = ()

    def __post_init__(self):
        low, high = self.scale
        if not (0 <= self.flip_prob <= 1 and 0 < low <= high <= 1 and self.max_shift >= 0
                and 0 <= self.brightness < 1 and 0 <= self.contrast < 1):
            raise ValueError(f"invalid augmentation settings {self}: need 0 <= flip_prob <= 1, "
                             "0 < scale[0] <= scale[1] <= 1, max_shift >= 0, "
                             "0 <= brightness, contrast < 1")
        side_low, side_high = self.frame_side
        if not (0 <= self.frame_prob <= 1 and 0 < side_low <= side_high
                and self.frame_jitter >= 0 and 0 <= self.frame_angle <= 90
                and len(self.frame_centre) == 2):
            raise ValueError(f"invalid augmentation settings {self}: need 0 <= frame_prob <= 1, "
                             "0 < frame_side[0] <= frame_side[1], frame_jitter >= 0, "
                             "0 <= frame_angle <= 90, frame_centre = (x, y)")
        sigma_low, sigma_high = self.blur_sigma
        if not (0 <= self.blur_prob <= 1 and 0 < sigma_low <= sigma_high <= 0.1
                and 0 <= self.grey_prob <= 1):
            raise ValueError(f"invalid augmentation settings {self}: need 0 <= blur_prob <= 1, "
                             "0 < blur_sigma[0] <= blur_sigma[1] <= 0.1 (fractions of the "
                             "side), 0 <= grey_prob <= 1")
        quality_low, quality_high = self.jpeg_quality
        if not (0 <= self.jpeg_prob <= 1 and 1 <= quality_low <= quality_high <= 95):
            raise ValueError(f"invalid augmentation settings {self}: need 0 <= jpeg_prob <= 1, "
                             "1 <= jpeg_quality[0] <= jpeg_quality[1] <= 95")
        area_low, area_high = self.cover_area
        aspect_low, aspect_high = self.cover_aspect
        if not (0 <= self.cover_prob <= 1 and 0 < area_low <= area_high <= 1
                and 0 < aspect_low <= aspect_high):
            raise ValueError(f"invalid augmentation settings {self}: need 0 <= cover_prob <= 1, "
                             "0 < cover_area[0] <= cover_area[1] <= 1, "
                             "0 < cover_aspect[0] <= cover_aspect[1]")
        if self.cover_centre is not None:
            box = tuple(self.cover_centre)
            if not (len(box) == 4 and 0 <= box[0] <= box[2] <= 1 and 0 <= box[1] <= box[3] <= 1):
                raise ValueError(f"invalid augmentation settings {self}: need cover_centre = "
                                 "(x0, y0, x1, y1) with 0 <= x0 <= x1 <= 1, 0 <= y0 <= y1 <= 1")
        if isinstance(self.cover_unlabel, str):
            raise ValueError(f"invalid augmentation settings {self}: cover_unlabel is a list of "
                             f"attribute names, such as [{self.cover_unlabel!r}]")

    def draw(self, indices, *, seed: int, epoch: int) -> np.ndarray:
        """Per-image parameters, (N, 6): flip, crop side s, shift x, shift y, brightness, contrast.

        The draws of each image come from its own generator; the framing (:meth:`frame_masks`)
        takes the next five numbers of the same stream, so these six do not change with it.
        """
        params = np.empty((len(indices), 6))
        for row, index in enumerate(indices):
            u = np.random.default_rng([seed, epoch, int(index)]).random(6)
            side = self.scale[0] + (self.scale[1] - self.scale[0]) * u[1]
            # In grid_sample coordinates the image spans [-1, 1]: a window of half-width s stays
            # inside when its centre is within 1 - s; max_shift (fraction of the side) adds 2x.
            reach = 1.0 - side + 2.0 * self.max_shift
            params[row] = (u[0] < self.flip_prob, side, reach * (2 * u[2] - 1),
                           reach * (2 * u[3] - 1), 1 + self.brightness * (2 * u[4] - 1),
                           1 + self.contrast * (2 * u[5] - 1))
        return params

    def __call__(self, images: torch.Tensor, indices, *, seed: int, epoch: int) -> torch.Tensor:
        """Augment float images (N, 3, H, W) in [0, 1]; ``indices`` are the dataset rows."""
        p = torch.as_tensor(self.draw(indices, seed=seed, epoch=epoch), dtype=images.dtype)
        flip = 1 - 2 * p[:, 0]  # -1 mirrors the x axis
        if self.scale != (1.0, 1.0) or self.max_shift > 0:
            # Output pixel (x, y) in [-1, 1]^2 samples input (flip s x + t_x, s y + t_y): crop,
            # translation and flip in one bilinear resampling.
            theta = torch.zeros(len(images), 2, 3, dtype=images.dtype)
            theta[:, 0, 0], theta[:, 0, 2] = flip * p[:, 1], p[:, 2]
            theta[:, 1, 1], theta[:, 1, 2] = p[:, 1], p[:, 3]
            x = _resample(images, theta)
        else:
            x = images.clone()
            flipped = torch.nonzero(flip < 0).flatten()
            x[flipped] = images[flipped].flip(-1)
        if self.brightness != 0 or self.contrast != 0:
            # (b x - m) c + m with m = mean(b x) = b mean(x) is one affine map a x + o per image.
            b, c = p[:, 4], p[:, 5]
            offset = (b * x.mean(dim=(1, 2, 3)) * (1 - c)).view(-1, 1, 1, 1)
            x = torch.addcmul(offset, x, (b * c).view(-1, 1, 1, 1)).clamp_(0.0, 1.0)
        if self.cover_prob > 0:
            x = self.cover(x, indices, seed=seed, epoch=epoch)
        if self.blur_prob > 0 or self.grey_prob > 0:
            x = self.degrade(x, indices, seed=seed, epoch=epoch)
        if self.jpeg_prob > 0:
            x = self.compress(x, indices, seed=seed, epoch=epoch)
        if self.frame_prob > 0:
            x = x * self.frame_masks(indices, x.shape[-2:], seed=seed, epoch=epoch).to(x.dtype)
        return x

    def degrade(self, images: torch.Tensor, indices, *, seed: int, epoch: int) -> torch.Tensor:
        """The blur and the grey of ``blur_prob`` and ``grey_prob``, each image drawn from the
        numbers of its stream after the framing's (so neither changes the other draws)."""
        draws = np.stack([np.random.default_rng([seed, epoch, int(index)]).random(14)[11:]
                          for index in indices])
        x = images.clone()
        low, high = self.blur_sigma
        for row in np.flatnonzero(draws[:, 0] < self.blur_prob):
            sigma = (low + (high - low) * draws[row, 1]) * min(x.shape[-2:])
            x[row] = gaussian_blur(x[row:row + 1], float(sigma))[0]
        grey = torch.as_tensor(draws[:, 2] < self.grey_prob)
        if grey.any():
            weights = x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            luma = (x[grey] * weights).sum(dim=1, keepdim=True)
            x[grey] = luma.expand(-1, 3, -1, -1)
        return x

    def compress(self, images: torch.Tensor, indices, *, seed: int, epoch: int) -> torch.Tensor:
        """The JPEG round trip of ``jpeg_prob``, drawn from the two numbers of each image's
        stream after the blur's and the grey's (so it changes none of the other draws)."""
        draws = np.stack([np.random.default_rng([seed, epoch, int(index)]).random(16)[14:]
                          for index in indices])
        x = images.clone()
        low, high = self.jpeg_quality
        for row in np.flatnonzero(draws[:, 0] < self.jpeg_prob):
            quality = low + min(int(draws[row, 1] * (high - low + 1)), high - low)
            pixels = (x[row] * 255).round().clamp(0, 255).to(torch.uint8)
            photo = jpeg_round_trip(Image.fromarray(pixels.permute(1, 2, 0).numpy()), quality)
            x[row] = torch.from_numpy(np.array(photo)).permute(2, 0, 1).to(x.dtype) / 255.0
        return x

    def cover(self, images: torch.Tensor, indices, *, seed: int, epoch: int) -> torch.Tensor:
        """The rectangles of ``cover_prob``, drawn from the eight numbers of each image's stream
        after the JPEG's (so it changes none of the other draws)."""
        draws = self._cover_draws(indices, seed=seed, epoch=epoch)
        x = images.clone()
        height, width = x.shape[-2:]
        (area_low, area_high), (aspect_low, aspect_high) = self.cover_area, self.cover_aspect
        for row in np.flatnonzero(draws[:, 0] < self.cover_prob):
            area = (area_low + (area_high - area_low) * draws[row, 1]) * height * width
            aspect = np.exp(np.log(aspect_low) + np.log(aspect_high / aspect_low) * draws[row, 2])
            w = min(width, max(1, round(float(np.sqrt(area * aspect)))))
            h = min(height, max(1, round(float(np.sqrt(area / aspect)))))
            if self.cover_centre is None:
                left = min(int(draws[row, 3] * (width - w + 1)), width - w)
                top = min(int(draws[row, 4] * (height - h + 1)), height - h)
            else:
                x0, y0, x1, y1 = self.cover_centre
                centre_x = (x0 + (x1 - x0) * draws[row, 3]) * width
                centre_y = (y0 + (y1 - y0) * draws[row, 4]) * height
                left = min(max(round(centre_x - w / 2), 0), width - w)
                top = min(max(round(centre_y - h / 2), 0), height - h)
            x[row, :, top:top + h, left:left + w] = x.new_tensor(draws[row, 5:8]).view(3, 1, 1)
        return x

    def covered(self, indices, *, seed: int, epoch: int) -> np.ndarray:
        """(N,) bool: which images :meth:`cover` paints (from the same draws)."""
        if self.cover_prob == 0:
            return np.zeros(len(indices), dtype=bool)
        return self._cover_draws(indices, seed=seed, epoch=epoch)[:, 0] < self.cover_prob

    @staticmethod
    def _cover_draws(indices, *, seed: int, epoch: int) -> np.ndarray:
        """The eight numbers of each image's stream after the JPEG's, (N, 8)."""
        return np.stack([np.random.default_rng([seed, epoch, int(index)]).random(24)[16:]
                         for index in indices])

    def frame_masks(self, indices, size, *, seed: int, epoch: int) -> torch.Tensor:
        """(N, 1, H, W) masks of the framing: 1 inside each image's window, 0 outside; all ones
        for the images not drawn to be framed (see ``frame_prob``)."""
        height, width = (int(v) for v in size)
        draws = np.stack([np.random.default_rng([seed, epoch, int(index)]).random(11)[6:]
                          for index in indices])
        framed = draws[:, 0] < self.frame_prob
        side = self.frame_side[0] + (self.frame_side[1] - self.frame_side[0]) * draws[:, 1]
        centre_x = self.frame_centre[0] + self.frame_jitter * (2 * draws[:, 2] - 1)
        centre_y = self.frame_centre[1] + self.frame_jitter * (2 * draws[:, 3] - 1)
        angle = np.radians(self.frame_angle * (2 * draws[:, 4] - 1))
        # Pixel centres as fractions of the image side, relative to the window's centre, turned
        # into the window's own axes.
        ys = (torch.arange(height, dtype=torch.float64) + 0.5) / height
        xs = (torch.arange(width, dtype=torch.float64) + 0.5) / width
        dx = xs.view(1, 1, -1) - torch.as_tensor(centre_x).view(-1, 1, 1)
        dy = ys.view(1, -1, 1) - torch.as_tensor(centre_y).view(-1, 1, 1)
        cos, sin = (torch.as_tensor(f(angle)).view(-1, 1, 1) for f in (np.cos, np.sin))
        half = torch.as_tensor(side / 2).view(-1, 1, 1)
        inside = ((cos * dx + sin * dy).abs() <= half) & ((-sin * dx + cos * dy).abs() <= half)
        inside |= torch.as_tensor(~framed).view(-1, 1, 1)
        return inside.unsqueeze(1).float()


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """``images`` (N, C, H, W) blurred by a Gaussian of standard deviation ``sigma`` pixels
    (separable, truncated at 3 sigma, edges reflected); the mean brightness is kept."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    x = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def centre_zoom(images: torch.Tensor, side: float) -> torch.Tensor:
    """The centre square of ``side`` (a fraction of the image side) of each image (N, C, H, W),
    resampled bilinearly to the full size: the test-time view that matches a training crop of
    that side (``Augmentation.scale``). ``side = 1`` returns the images unchanged."""
    if not 0 < side <= 1:
        raise ValueError(f"zoom side must be in (0, 1], got {side!r}")
    if side == 1:
        return images
    theta = images.new_tensor([[side, 0.0, 0.0], [0.0, side, 0.0]]).expand(len(images), 2, 3)
    return _resample(images, theta)


def _resample(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Bilinear resampling of ``images`` (N, C, H, W) through the affine maps ``theta`` (N, 2, 3)
    in grid_sample coordinates (the image spans [-1, 1]; pixel centres, edges reflected)."""
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)
