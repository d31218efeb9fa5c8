"""Batched augmentation of uint8 image tensors (N, 3, 32, 32) with tensor ops.

Random decisions are drawn per epoch for *every image of the training set*
(indexed by image, not by batch position), so an image is augmented the same
way whatever the batch size, the number of DDP ranks or the framework that
consumes the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .seeds import derive_seed


@dataclass(frozen=True)
class Augmentation:
    crop_padding: int = 4  # pad this many pixels, then take a random 32x32 crop (0: off)
    pad_mode: str = "constant"  # "constant" (zeros, torchvision's RandomCrop) or "reflect" (airbench)
    flip: str = "random"  # "random", "alternating" (airbench: mirrored every other epoch) or "none"
    cutout: int = 0  # side of a zeroed square at a random position (0: off)

    def __post_init__(self):
        if self.flip not in ("random", "alternating", "none"):
            raise ValueError(f"flip must be 'random', 'alternating' or 'none', got {self.flip!r}")
        if self.pad_mode not in ("constant", "reflect"):
            raise ValueError(f"pad_mode must be 'constant' or 'reflect', got {self.pad_mode!r}")
        if not 0 <= self.crop_padding <= 16 or not 0 <= self.cutout <= 32:
            raise ValueError(f"crop_padding must lie in [0, 16] and cutout in [0, 32], got {self}")


@dataclass
class EpochDraws:
    """The random decisions of one epoch, one row per training image."""

    shift: torch.Tensor  # (N, 2) int64 crop offsets in [0, 2 * padding]
    flip: torch.Tensor  # (N,) bool
    cutout: torch.Tensor  # (N, 2) int64 top-left corner of the cutout square


def _generator(seed: int, purpose: str, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, purpose, epoch))


def draw_epoch(aug: Augmentation, num_images: int, seed: int, epoch: int) -> EpochDraws:
    """The draws of `epoch` for every training image, from (seed, "augment", epoch)."""
    g = _generator(seed, "augment", epoch)
    shift = torch.randint(0, 2 * aug.crop_padding + 1, (num_images, 2), generator=g)
    if aug.flip == "alternating":
        # A fixed random half is mirrored on even epochs and the other half on odd
        # ones, so every image is seen both ways in any two consecutive epochs.
        base = torch.rand(num_images, generator=_generator(seed, "flip_halves", 0)) < 0.5
        flip = base ^ bool(epoch % 2)
    elif aug.flip == "random":
        flip = torch.rand(num_images, generator=g) < 0.5
    else:
        flip = torch.zeros(num_images, dtype=torch.bool)
    cutout = torch.randint(0, 32 - aug.cutout + 1, (num_images, 2), generator=g)
    return EpochDraws(shift, flip, cutout)


def crop(images: torch.Tensor, shift: torch.Tensor, padding: int, mode: str) -> torch.Tensor:
    """Pad by `padding`, then cut the 32x32 window at each image's (dy, dx)."""
    if padding == 0:
        return images
    n, c, h, w = images.shape
    if mode == "reflect":  # reflect padding is not implemented for uint8
        padded = F.pad(images.float(), (padding,) * 4, mode="reflect").to(images.dtype)
    else:
        padded = F.pad(images, (padding,) * 4)
    rows = (shift[:, 0, None] + torch.arange(h))[:, None, :, None]  # (N, 1, H, 1)
    cols = (shift[:, 1, None] + torch.arange(w))[:, None, None, :]  # (N, 1, 1, W)
    return padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


def flip_where(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask[:, None, None, None], images.flip(-1), images)


def cut_out(images: torch.Tensor, corner: torch.Tensor, size: int) -> torch.Tensor:
    ys = torch.arange(images.shape[-2])[None, :, None]
    xs = torch.arange(images.shape[-1])[None, None, :]
    y0, x0 = corner[:, 0, None, None], corner[:, 1, None, None]
    inside = (ys >= y0) & (ys < y0 + size) & (xs >= x0) & (xs < x0 + size)  # (N, H, W)
    return images.masked_fill(inside[:, None], 0)


def augment(images: torch.Tensor, draws: EpochDraws, index: torch.Tensor, aug: Augmentation) -> torch.Tensor:
    """Augment the uint8 batch `images`, whose rows are training images `index`."""
    images = crop(images, draws.shift[index], aug.crop_padding, aug.pad_mode)
    images = flip_where(images, draws.flip[index])
    if aug.cutout:
        images = cut_out(images, draws.cutout[index], aug.cutout)
    return images


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32, per channel (x / 255 - mean) / std."""
    mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (images.float() / 255 - mean) / std
