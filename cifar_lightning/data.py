"""CIFARDataModule: the one data pipeline both frameworks consume.

The whole split lives in memory as a uint8 tensor; each batch is gathered,
augmented and normalised with a few tensor ops (no per-image PIL transforms).
The loaders are plain iterables, not DataLoaders, so Lightning does not add a
DistributedSampler: each loader shards by rank itself.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch

from .augment import Augmentation, augment, draw_epoch, normalize
from .datasets import CIFARDataError, dataset_info, dataset_present, read_class_names, read_split
from .plain import to_plain
from .seeds import derive_seed


class EpochSampler:
    """Which images each rank sees in one epoch, reshuffled from (seed, "shuffle", epoch).

    Lightning calls ``set_epoch`` on a loader's ``sampler`` at every epoch start
    (also after a resume), exactly as it does for a DistributedSampler.
    """

    def __init__(self, num_images: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, {world_size - 1}], got {rank}")
        self.num_images, self.shuffle, self.seed = num_images, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.shuffle and self.world_size > 1:
            return self.num_images // self.world_size
        return len(range(self.rank, self.num_images, self.world_size))

    def indices(self) -> torch.Tensor:
        if self.shuffle:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, "shuffle", self.epoch))
            order = torch.randperm(self.num_images, generator=generator)
        else:
            order = torch.arange(self.num_images)
        if self.shuffle and self.world_size > 1:  # equal shares, so every rank runs the same number of steps
            order = order[: self.num_images - self.num_images % self.world_size]
        return order[self.rank :: self.world_size]


class CIFARBatchLoader:
    """Yields (float32 images (B, 3, 32, 32) normalised, int64 labels (B,))."""

    batch_sampler = None  # Lightning inspects DataLoader-like attributes; batching is ours

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        mean,
        std,
        sampler: EpochSampler,
        drop_last: bool = False,
        augmentation: Augmentation | None = None,
        seed: int = 0,
    ):
        self.images, self.labels = images, labels
        self.batch_size, self.mean, self.std = batch_size, mean, std
        self.sampler, self.drop_last = sampler, drop_last
        self.augmentation, self.seed = augmentation, seed

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        order = self.sampler.indices()
        draws = None
        if self.augmentation is not None:
            draws = draw_epoch(self.augmentation, len(self.images), self.seed, self.sampler.epoch)
        for b in range(len(self)):
            index = order[b * self.batch_size : (b + 1) * self.batch_size]
            images = self.images[index]
            if draws is not None:
                images = augment(images, draws, index, self.augmentation)
            yield normalize(images, self.mean, self.std), self.labels[index]


def stratified_split(labels: np.ndarray, holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, holdout_idx): sorted int64 indices; `holdout` of them keep the classes'
    proportions, drawn from (seed, "split"). Raises ValueError unless 0 <= holdout < len(labels)."""
    if not 0 <= holdout < len(labels):
        raise ValueError(f"val_size must lie in [0, {len(labels) - 1}], got {holdout}")
    rng = np.random.default_rng(derive_seed(seed, "split"))
    classes, counts = np.unique(labels, return_counts=True)
    exact = holdout * counts / len(labels)
    quota = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - quota), kind="stable")[: holdout - quota.sum()]:
        quota[i] += 1
    held = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    held = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(len(labels)), held), held


class CIFARDataModule(L.LightningDataModule):
    """CIFAR-10/100 from the official python layout, batched and augmented in memory.

    Args:
        dataset: "cifar10" or "cifar100"; ValueError otherwise.
        data_dir: folder holding ``cifar-10-batches-py/`` or ``cifar-100-python/`` (str or
            Path; saved as str). Missing data is downloaded there (torchvision's address and
            md5) unless ``download=False``, which raises ``CIFARDataError`` naming the folder.
        batch_size: training images per process per step; ValueError below 1. Evaluation
            batches hold ``eval_batch_size`` images (default max(batch_size, 500)).
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
    shares), and evaluation loaders split the set the same way. The reader checks shapes,
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
        self.info = dataset_info(dataset)
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        # checkpoints keep plain types only (they load with weights_only=True): a Path becomes str
        self.save_hyperparameters({k: to_plain(v, k) for k, v in given.items() if k not in ("self", "__class__")})
        self.data_dir = Path(data_dir)
        self.augmentation = Augmentation(crop_padding, pad_mode, flip, cutout)
        self.num_classes = self.info.num_classes
        # num_workers is accepted for DataModule compatibility; batches are built
        # with vectorised tensor ops in the main process, which is faster here.
        self._train = self._val = self._test = None
        self._training_split = None  # the raw training split, read once; dropped after setup

    @property
    def classes(self) -> list[str]:
        return read_class_names(self.data_dir, self.info.name)

    def prepare_data(self) -> None:
        """Download (once, one process) if the data is missing. Sets no state."""
        if dataset_present(self.data_dir, self.info.name):
            return
        if not self.hparams.download:
            read_split(self.data_dir, self.info.name, train=True)  # raises the message naming the folder
            raise CIFARDataError(f"incomplete {self.info.name} data in {self.data_dir / self.info.folder}")
        from torchvision.datasets import CIFAR10, CIFAR100
        from torchvision.datasets.utils import download_and_extract_archive

        source = CIFAR10 if self.info.name == "cifar10" else CIFAR100
        try:  # torchvision knows the address and verifies the archive's md5
            download_and_extract_archive(source.url, str(self.data_dir), filename=source.filename, md5=source.tgz_md5)
        except Exception as e:
            raise CIFARDataError(
                f"download of {self.info.name} into {self.data_dir.resolve()} failed ({type(e).__name__}: {e}); "
                f"without internet, pass --data-dir pointing at a folder holding {self.info.folder}/"
            ) from None

    def _rank(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def setup(self, stage: str | None = None) -> None:
        if self._train is not None:
            return
        images, labels = self._read_training_split()
        test = read_split(self.data_dir, self.info.name, train=False)
        train_idx, val_idx = stratified_split(labels, self.hparams.val_size, self.hparams.seed)
        if self.hparams.train_subset:
            train_idx = train_idx[: self.hparams.train_subset]
        as_tensors = lambda x, y: (torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y))  # noqa: E731
        self._train = as_tensors(images[train_idx], labels[train_idx])
        self._test = as_tensors(*test)
        self._val = as_tensors(images[val_idx], labels[val_idx]) if len(val_idx) else self._test
        self._training_split = None  # the split's tensors hold what is needed

    def training_set_size(self) -> int:
        """Images in the dataset's whole training split (before --val-size and --train-subset);
        downloads the data first if it is missing and downloading is allowed."""
        self.prepare_data()
        return len(self._read_training_split()[1])

    def _read_training_split(self) -> tuple[np.ndarray, np.ndarray]:
        if self._training_split is None:
            self._training_split = read_split(self.data_dir, self.info.name, train=True)
        return self._training_split

    @property
    def train_images(self) -> torch.Tensor:
        """The uint8 training images (N, 3, 32, 32), e.g. for the whitening initialiser."""
        self.setup()
        return self._train[0]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return normalize(images, self.info.mean, self.info.std)

    def _loader(self, split: str, train: bool) -> CIFARBatchLoader:
        self.setup()
        rank, world = self._rank()
        images, labels = getattr(self, split)
        hp = self.hparams
        return CIFARBatchLoader(
            images,
            labels,
            hp.batch_size if train else (hp.eval_batch_size or max(hp.batch_size, 500)),
            self.info.mean,
            self.info.std,
            EpochSampler(len(images), shuffle=train, seed=hp.seed, rank=rank, world_size=world),
            drop_last=train,
            augmentation=self.augmentation if train else None,
            seed=hp.seed,
        )

    def train_dataloader(self) -> CIFARBatchLoader:
        loader = self._loader("_train", train=True)
        if len(loader) == 0:
            raise ValueError(f"batch_size {loader.batch_size} exceeds the {len(loader.sampler)} training images of this rank")
        return loader

    def val_dataloader(self) -> CIFARBatchLoader:
        return self._loader("_val", train=False)

    def test_dataloader(self) -> CIFARBatchLoader:
        return self._loader("_test", train=False)

    def predict_dataloader(self) -> CIFARBatchLoader:
        return self._loader("_test", train=False)
