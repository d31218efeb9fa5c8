"""The core's per-epoch draws applied to uint8 image tensors on their own device.

``augment`` crops (after zero or reflect padding) and mirrors a whole batch of uint8
images with one gather and one mask, computed by the core's ``source_pixels``; ``cutout``
then zeroes a square of the normalised images, i.e. writes the dataset's mean as
airbench's ``batch_cutout`` does, with the core's ``cutout_mask``. The MLX loader applies
the same formulas to MLX arrays, so the batches are equal across frameworks and devices
(the uint8 ones bit for bit).
"""

from __future__ import annotations

import torch

from cifar_lightning.core.draws import Augmentation, EpochDraws, cutout_mask, source_pixels

__all__ = ["Augmentation", "EpochDraws", "augment", "cutout", "normalize", "draws_on"]


def draws_on(draws: EpochDraws, device) -> dict[str, torch.Tensor]:
    """One epoch's draws as int32 tensors on `device` (uploaded once an epoch)."""
    return {name: torch.from_numpy(getattr(draws, name)).to(device) for name in ("shift", "flip", "cutout")}


def augment(images: torch.Tensor, shift: torch.Tensor, flip: torch.Tensor, aug: Augmentation) -> torch.Tensor:
    """uint8 (B, 3, 32, 32) -> uint8 (B, 3, 32, 32): each image padded by
    ``aug.crop_padding`` (zeros or reflection, ``aug.pad_mode``) and cropped at its `shift`
    (B, 2), then mirrored where `flip` (B,) is 1; all on the images' device."""
    b, c, n, _ = images.shape
    positions = torch.arange(n, device=images.device, dtype=shift.dtype)
    rows, cols, inside = source_pixels(shift, flip, positions, aug.crop_padding, aug.pad_mode == "reflect")
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    out = images[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]
    if inside is not None:
        out = out.masked_fill(~inside[:, None], 0)
    return out


def cutout(images: torch.Tensor, corner: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised float (B, 3, n, n) with a `size` x `size` square at each image's `corner`
    (B, 2) set to 0, the dataset's mean (airbench's cutout writes 0 after normalising)."""
    positions = torch.arange(images.shape[-1], device=images.device, dtype=corner.dtype)
    return images.masked_fill(cutout_mask(corner, positions, size)[:, None], 0.0)


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32, per channel (x / 255 - mean) / std, on the images' device."""
    mean = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255 - mean) / std
