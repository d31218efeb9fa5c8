"""The per-image random draws of an epoch and where each output pixel comes from.

Draws are made for *every image of the training set* (indexed by image, not by batch
position), from (seed, "augment", epoch), so an image is augmented the same way
whatever the batch size, the number of DDP ranks or the framework that applies them.
``source_pixels`` and ``cutout_mask`` turn draws into gather indices and masks with
arithmetic operators only, so the same lines run on numpy, torch (any device) and MLX
arrays: each framework applies the draws on its own device, with one formula.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from cifar_lightning.core.seeds import derive_seed


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
        for name, most in (("crop_padding", 16), ("cutout", 32)):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or not 0 <= value <= most:
                raise ValueError(f"{name} must be a whole number of pixels in [0, {most}], got {value!r}")


@dataclass
class EpochDraws:
    """The random decisions of one epoch, one row per training image (numpy)."""

    shift: np.ndarray  # (N, 2) int32 crop offsets (dy, dx) in [0, 2 * padding]
    flip: np.ndarray  # (N,) int32, 1 where the image is mirrored
    cutout: np.ndarray  # (N, 2) int32 top-left corner of the cutout square


def _rng(seed: int, purpose: str, epoch: int) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, purpose, epoch))


def draw_epoch(aug: Augmentation, num_images: int, seed: int, epoch: int) -> EpochDraws:
    """The draws of `epoch` for every training image, from (seed, "augment", epoch)."""
    rng = _rng(seed, "augment", epoch)
    shift = rng.integers(0, 2 * aug.crop_padding + 1, (num_images, 2))
    if aug.flip == "alternating":
        # A fixed random half is mirrored on even epochs and the other half on odd
        # ones, so every image is seen both ways in any two consecutive epochs.
        base = _rng(seed, "flip_halves", 0).random(num_images) < 0.5
        flip = base ^ bool(epoch % 2)
    elif aug.flip == "random":
        flip = rng.random(num_images) < 0.5
    else:
        flip = np.zeros(num_images, dtype=bool)
    cutout = rng.integers(0, 32 - aug.cutout + 1, (num_images, 2))
    return EpochDraws(shift.astype(np.int32), flip.astype(np.int32), cutout.astype(np.int32))


def reflect_index(i, n: int):
    """Index `i` in [-(n - 1), 2n - 2] mirrored into [0, n - 1] without repeating the edge
    (numpy's and torch's "reflect" padding): -1 -> 1, n -> n - 2."""
    return (n - 1) - abs((n - 1) - abs(i))


def source_pixels(shift, flip, positions, padding: int, reflect: bool):
    """Where each output pixel of a padded, cropped and possibly mirrored image comes from.

    shift (B, 2) and flip (B,) are integer arrays of one framework; positions is that
    framework's arange(n) (n = 32). Returns (rows (B, n), cols (B, n), inside): output
    pixel (i, j) of image b is source pixel (rows[b, i], cols[b, j]); ``inside`` (B, n, n)
    is False where zero padding shows (constant mode), None when no padding can show.
    """
    n = positions.shape[0]
    rows = shift[:, 0:1] + positions[None, :] - padding  # (B, n), in the unpadded image
    mirrored = positions[None, :] + flip[:, None] * (n - 1 - 2 * positions[None, :])  # j, or n - 1 - j
    cols = shift[:, 1:2] + mirrored - padding
    inside = None
    if padding and not reflect:
        row_ok = (rows >= 0) & (rows < n)
        col_ok = (cols >= 0) & (cols < n)
        inside = row_ok[:, :, None] & col_ok[:, None, :]
    return reflect_index(rows, n), reflect_index(cols, n), inside


def cutout_mask(corner, positions, size: int):
    """(B, n, n) True inside each image's `size` x `size` square at corner (B, 2)."""
    y0, x0 = corner[:, 0:1], corner[:, 1:2]
    in_rows = (positions[None, :] >= y0) & (positions[None, :] < y0 + size)
    in_cols = (positions[None, :] >= x0) & (positions[None, :] < x0 + size)
    return in_rows[:, :, None] & in_cols[:, None, :]
