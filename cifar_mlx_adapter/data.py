"""Batches for MLX from the framework-neutral ``CIFARData``, made on MLX's device.

The uint8 images are uploaded once (NHWC, MLX's convolution layout); each epoch's
order and draws once an epoch; crop, flip, cutout and normalisation run as MLX ops
with the core's formulas (``core.draws``), the same ones the torch DataModule applies,
so both frameworks see the same batches bit for bit. No torch is imported here.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from cifar_lightning.core.data import BatchPlan, CIFARData
from cifar_lightning.core.draws import Augmentation, cutout_mask, source_pixels


def core_data(data) -> CIFARData:
    """The ``CIFARData`` behind `data`: a ``CIFARDataModule`` (its ``.data``) or a
    ``CIFARData`` itself. Raises TypeError for anything else."""
    core = getattr(data, "data", data)
    if not isinstance(core, CIFARData):
        raise TypeError(f"expected a CIFARDataModule or a CIFARData, got {type(data).__name__}")
    return core


def augment(images: mx.array, shift: mx.array, flip: mx.array, aug: Augmentation) -> mx.array:
    """uint8 (B, 32, 32, 3) -> uint8 (B, 32, 32, 3): as ``cifar_lightning.data.augment``
    (pad, crop at `shift`, mirror where `flip`), on NHWC MLX arrays."""
    b, n = images.shape[0], images.shape[1]
    positions = mx.arange(n, dtype=shift.dtype)
    rows, cols, inside = source_pixels(shift, flip, positions, aug.crop_padding, aug.pad_mode == "reflect")
    out = images[mx.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]
    zero = mx.zeros((), dtype=images.dtype)
    if inside is not None:
        out = mx.where(inside[..., None], out, zero)
    return out


def cutout(images: mx.array, corner: mx.array, size: int) -> mx.array:
    """As ``cifar_lightning.data.cutout`` on normalised NHWC images: the square is set to
    0, the dataset's mean."""
    positions = mx.arange(images.shape[1], dtype=corner.dtype)
    return mx.where(cutout_mask(corner, positions, size)[..., None], mx.zeros((), dtype=images.dtype), images)


def normalize(images: mx.array, mean, std) -> mx.array:
    """uint8 (N, H, W, 3) -> float32, per channel (x / 255 - mean) / std."""
    return (images.astype(mx.float32) / 255 - mx.array(mean, dtype=mx.float32)) / mx.array(std, dtype=mx.float32)


class MLXBatchLoader:
    """Yields (images float32 (B, 32, 32, 3) normalised, labels int32 (B,)) as MLX arrays."""

    def __init__(self, images: mx.array, labels: mx.array, plan: BatchPlan, mean, std):
        self.images, self.labels, self.plan, self.mean, self.std = images, labels, plan, mean, std
        self.sampler = plan.sampler  # set_epoch, as a Lightning loader's

    def __len__(self) -> int:
        return len(self.plan)

    def _batches(self):
        """(uint8 images (B, 32, 32, 3) cropped and mirrored, labels (B,), cutout corners (B, 2)
        or None) of each batch of the epoch."""
        order, draws = self.plan.epoch()
        order = mx.array(order.astype(np.int32))
        if draws is not None:
            shift, flip, corner = (mx.array(getattr(draws, k)) for k in ("shift", "flip", "cutout"))
        for start, stop in self.plan.slices():
            index = order[start:stop]
            images, corners = self.images[index], None
            if draws is not None:
                images = augment(images, shift[index], flip[index], self.plan.augmentation)
                corners = corner[index] if self.plan.augmentation.cutout else None
            yield images, self.labels[index], corners

    def uint8_batches(self):
        """The cropped and mirrored uint8 batches (B, 32, 32, 3) and labels, before
        normalisation (cutout comes after it: it writes the mean)."""
        for images, labels, _ in self._batches():
            yield images, labels

    def __iter__(self):
        for images, labels, corners in self._batches():
            images = normalize(images, self.mean, self.std)
            if corners is not None:
                images = cutout(images, corners, self.plan.augmentation.cutout)
            yield images, labels


class MLXData:
    """A ``CIFARData``'s splits uploaded to MLX's device once; loaders for each split."""

    def __init__(self, data: CIFARData):
        self.data = data
        self._arrays: dict[str, tuple[mx.array, mx.array]] = {}

    def loader(self, split: str, rank: int = 0, world_size: int = 1) -> MLXBatchLoader:
        """ "train" (shuffled, augmented, full batches), "val" or "test", as rank `rank` of
        `world_size` processes takes it: the core's per-rank plan (``CIFARData.plan``), the
        one torch's DDP follows (an equal share of each epoch's order for training, every
        world_size-th image for evaluation)."""
        data = self.data
        plan = data.plan(split, rank, world_size)  # reads and splits the data on first use
        if split not in self._arrays:
            images, labels = data.splits[split]
            self._arrays[split] = (
                mx.array(np.ascontiguousarray(images.transpose(0, 2, 3, 1))),
                mx.array(labels.astype(np.int32)),
            )
        return MLXBatchLoader(*self._arrays[split], plan, data.mean, data.std)
