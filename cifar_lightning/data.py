"""CIFARDataModule: the Lightning face of the data both frameworks consume.

The whole split is uploaded to the training device once, as uint8; each epoch's
order and augmentation draws (``core.data``, ``core.draws``) are uploaded once an
epoch, and every batch is gathered, augmented and normalised there with a few tensor
ops. The loaders are plain iterables, not DataLoaders, so Lightning adds no
DistributedSampler: each loader shards by rank itself.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from cifar_lightning.core.data import BatchPlan, CIFARData, EpochSampler, stratified_split
from cifar_lightning.core.draws import Augmentation, EpochDraws, cutout_mask, source_pixels
from cifar_lightning.core.plain import to_plain

__all__ = ["CIFARBatchLoader", "CIFARDataModule", "EpochSampler", "augment", "cutout", "normalize", "stratified_split"]


# ------------------------------------------------------------ augmentation
# The core's per-epoch draws applied to uint8 image tensors on their own device.
#
# ``augment`` crops (after zero or reflect padding) and mirrors a whole batch of uint8
# images with one gather and one mask, computed by the core's ``source_pixels``; ``cutout``
# then zeroes a square of the normalised images, i.e. writes the dataset's mean as
# airbench's ``batch_cutout`` does, with the core's ``cutout_mask``. The MLX loader applies
# the same formulas to MLX arrays, so the batches are equal across frameworks and devices
# (the uint8 ones bit for bit).


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


class CIFARBatchLoader:
    """Yields (float32 images (B, 3, 32, 32) normalised, int64 labels (B,)) on the device
    the images live on, following a ``core.data.BatchPlan``."""

    batch_sampler = None  # Lightning inspects DataLoader-like attributes; batching is ours

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, plan: BatchPlan, mean, std):
        self.images, self.labels, self.plan = images, labels, plan
        self.mean, self.std = mean, std
        self.sampler = plan.sampler  # Lightning calls sampler.set_epoch

    def __len__(self) -> int:
        return len(self.plan)

    def _batches(self):
        """(uint8 images (B, 3, 32, 32) cropped and mirrored, labels (B,), cutout corners (B, 2)
        or None) of each batch of the epoch."""
        device = self.images.device
        order, draws = self.plan.epoch()
        order = torch.from_numpy(order).to(device)
        draws = draws_on(draws, device) if draws is not None else None
        for start, stop in self.plan.slices():
            index = order[start:stop]
            images, corners = self.images[index], None
            if draws is not None:
                images = augment(images, draws["shift"][index], draws["flip"][index], self.plan.augmentation)
                corners = draws["cutout"][index] if self.plan.augmentation.cutout else None
            yield images, self.labels[index], corners

    def uint8_batches(self):
        """The cropped and mirrored uint8 batches (B, 3, 32, 32) and labels, before
        normalisation (cutout comes after it: it writes the mean)."""
        for images, labels, _ in self._batches():
            yield images, labels

    def __iter__(self):
        for images, labels, corners in self._batches():
            images = normalize(images, self.mean, self.std)
            if corners is not None:
                images = cutout(images, corners, self.plan.augmentation.cutout)
            yield images, labels


class CIFARDataModule(L.LightningDataModule):
    """CIFAR-10/100 from the official python layout, batched and augmented in memory.

    Args:
        dataset: "cifar10" or "cifar100"; ValueError otherwise.
        data_dir: folder holding ``cifar-10-batches-py/`` or ``cifar-100-python/`` (str or
            Path; saved as str). Missing data is downloaded there (torchvision's address and
            md5) unless ``download=False``, which raises ``CIFARDataError`` naming the folder.
        batch_size: training images per process per step; ValueError below 1. Evaluation
            batches hold ``eval_batch_size`` images (default max(batch_size, ``core.data.EVAL_BATCH``)).
        val_size: 0 (default) trains on all training images and validates on the test set,
            as the original project did; N holds out N training images, stratified by class,
            drawn from (seed, "split"), and keeps the test set for ``test``.
        seed: seeds the split, each epoch's shuffle and each epoch's augmentation draws,
            as independent streams (``seeds.derive_seed``).
        crop_padding, pad_mode, flip, cutout: the augmentation (``augment.Augmentation``).
        train_subset: train on the first N images of the training split only.
        num_workers: accepted for DataModule compatibility; batches are built with tensor
            ops in the main process.

    Loaders yield (images float32 (B, 3, 32, 32), normalised per channel with the dataset's
    mean and std; labels int64 (B,)). The training loader drops its last partial batch;
    under DDP each process takes every world_size-th image of the epoch's order (equal
    shares), and evaluation loaders split the set the same way; the Trainer's flags that
    change a loader's batches are honoured: ``use_distributed_sampler=False`` (no sharding),
    ``overfit_batches`` (no shuffling), ``limit_*_batches`` (Lightning stops the loader).
    The reader checks shapes,
    dtypes, label range and counts and raises ``CIFARDataError`` naming the file.
    """

    def __init__(
        self,
        dataset: str = "cifar10",
        data_dir: str | Path = "data",
        batch_size: int = 128,
        val_size: int = 0,
        download: bool = True,
        seed: int = 0,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
        crop_padding: int = 4,
        pad_mode: str = "constant",
        flip: str = "random",
        cutout: int = 0,
        train_subset: int | None = None,
    ):
        given = dict(locals())
        super().__init__()
        # checkpoints keep plain types only (they load with weights_only=True): a Path becomes str
        self.save_hyperparameters({k: to_plain(v, k) for k, v in given.items() if k not in ("self", "__class__")})
        self.augmentation = Augmentation(crop_padding, pad_mode, flip, cutout)
        self.data = CIFARData(
            dataset,
            data_dir,
            batch_size=batch_size,
            val_size=val_size,
            seed=seed,
            eval_batch_size=eval_batch_size,
            augmentation=self.augmentation,
            train_subset=train_subset,
            download=download,
        )
        self.info, self.data_dir, self.num_classes = self.data.info, self.data.data_dir, self.data.num_classes
        # num_workers is accepted for DataModule compatibility; batches are built on the
        # training device with tensor ops, in the main process.
        self._on_device: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def classes(self) -> list[str]:
        return self.data.classes

    def prepare_data(self) -> None:
        """Download (once, one process) if the data is missing and ``download`` is True
        (torchvision's address and md5); else raise CIFARDataError naming the folder."""
        self.data.prepare_data()

    def _rank(self) -> tuple[int, int]:
        """(rank, world size) to shard by: the trainer's, unless it was told not to shard
        (``Trainer(use_distributed_sampler=False)``: every process reads the whole split)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or not getattr(trainer._accelerator_connector, "use_distributed_sampler", True):
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _shuffle_training(self) -> bool:
        """False under ``Trainer(overfit_batches=N)``: the same first batches every epoch, as
        Lightning makes a DataLoader's sampler sequential for it."""
        trainer = getattr(self, "trainer", None)
        return not (trainer is not None and trainer.overfit_batches)

    def _device(self) -> torch.device:
        """The device batches are made on: the trainer's, else the CPU."""
        trainer = getattr(self, "trainer", None)
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def setup(self, stage: str | None = None) -> None:
        self.data.setup()

    def training_set_size(self) -> int:
        """Images in the dataset's whole training split (before --val-size and --train-subset);
        downloads the data first if it is missing and downloading is allowed."""
        return self.data.training_set_size()

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (N, 3, 32, 32) and int64 labels (N,) of "train", "val" or "test" on the CPU."""
        self.setup()
        images, labels = self.data.splits[name]
        return torch.from_numpy(images), torch.from_numpy(labels)

    @property
    def train_images(self) -> torch.Tensor:
        """The uint8 training images (N, 3, 32, 32) on the CPU, e.g. for the whitening initialiser."""
        return self.split("train")[0]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return normalize(images, self.info.mean, self.info.std)

    def _loader(self, split: str) -> CIFARBatchLoader:
        rank, world = self._rank()
        plan = self.data.plan(split, rank, world, shuffle=self._shuffle_training() if split == "train" else None)
        device = self._device()
        key = (split, str(device))
        if key not in self._on_device:  # uploaded once per split and device
            images, labels = self.split(split)
            self._on_device[key] = (images.to(device), labels.to(device))
        return CIFARBatchLoader(*self._on_device[key], plan, self.info.mean, self.info.std)

    def train_dataloader(self) -> CIFARBatchLoader:
        return self._loader("train")

    def val_dataloader(self) -> CIFARBatchLoader:
        return self._loader("val")

    def test_dataloader(self) -> CIFARBatchLoader:
        return self._loader("test")

    def predict_dataloader(self) -> CIFARBatchLoader:
        return self._loader("test")
