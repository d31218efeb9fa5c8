"""The core's per-epoch draws applied to uint8 image tensors on their own device.

``augment`` crops (after zero or reflect padding), mirrors and cuts out a whole batch
with one gather and two masks, computed by the core's ``source_pixels`` and
``cutout_mask`` (the MLX loader applies the same formulas to MLX arrays), so the
batches are equal bit for bit across frameworks and devices.
"""

from __future__ import annotations

import torch

from .core.draws import Augmentation, EpochDraws, cutout_mask, source_pixels

__all__ = ["Augmentation", "EpochDraws", "augment", "normalize", "draws_on"]


def draws_on(draws: EpochDraws, device) -> dict[str, torch.Tensor]:
    """One epoch's draws as int32 tensors on `device` (uploaded once an epoch)."""
    return {name: torch.from_numpy(getattr(draws, name)).to(device) for name in ("shift", "flip", "cutout")}


def augment(images: torch.Tensor, shift: torch.Tensor, flip: torch.Tensor, corner: torch.Tensor,
            aug: Augmentation) -> torch.Tensor:  # fmt: skip
    """uint8 (B, 3, 32, 32) -> uint8 (B, 3, 32, 32): each image padded by
    ``aug.crop_padding`` and cropped at its `shift` (B, 2), mirrored where `flip` (B,) is 1,
    and zeroed inside its cutout square at `corner` (B, 2); all on the images' device."""
    b, c, n, _ = images.shape
    positions = torch.arange(n, device=images.device, dtype=shift.dtype)
    rows, cols, inside = source_pixels(shift, flip, positions, aug.crop_padding, aug.pad_mode == "reflect")
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    out = images[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]
    if inside is not None:
        out = out.masked_fill(~inside[:, None], 0)
    if aug.cutout:
        out = out.masked_fill(cutout_mask(corner, positions, aug.cutout)[:, None], 0)
    return out


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32, per channel (x / 255 - mean) / std, on the images' device."""
    mean = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255 - mean) / std
