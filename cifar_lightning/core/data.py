"""CIFARData: the data both frameworks train on, as numpy arrays and index plans.

It reads and checks the official files once, makes the split, and says for any epoch
and rank which images form each batch and how each is augmented. It moves no pixels:
the torch DataModule (``cifar_lightning.data``) and the MLX loader
(``cifar_mlx_adapter.data``) upload the uint8 images to their device once and apply
the same plan there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cifar_lightning.core.datasets import (
    CIFARDataError,
    dataset_info,
    dataset_present,
    download,
    read_class_names,
    read_split,
)
from cifar_lightning.core.draws import Augmentation, EpochDraws, draw_epoch
from cifar_lightning.core.seeds import derive_seed

EVAL_BATCH = 500  # images per evaluation batch: the test set in 20, the memory of a training batch or so


def augmentation_mismatch(data, recipe) -> str | None:
    """One line when `data` (a CIFARData) augments its training batches otherwise than
    `recipe` (a ``Recipe``) asks, naming both and the keyword arguments that match the
    recipe; None when they agree. The scripts build their data from the recipe; a user who
    builds a DataModule with its defaults for the fast net (crop 4, zero padding, random
    flip) would otherwise train it under another augmentation than its recipe's (airbench94's
    reflect-pad 2 and alternating flip) without knowing."""
    if data.augmentation == recipe.augmentation:
        return None
    from dataclasses import asdict

    wanted = ", ".join(f"{k}={v!r}" for k, v in asdict(recipe.augmentation).items())
    return (
        f"the datamodule augments with {data.augmentation}, the model's recipe with "
        f"{recipe.augmentation}: pass {wanted} to CIFARDataModule or CIFARData to train as the scripts do"
    )


def stratified_split(labels: np.ndarray, holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, holdout_idx): sorted int64 indices; `holdout` of them keep the classes'
    proportions, drawn from (seed, "split"). Each class holds out floor(its exact share);
    the images left over go to the classes with the largest remainders, ties broken at
    random by the seed (not by class number). Raises ValueError unless 0 <= holdout < len(labels)."""
    if not 0 <= holdout < len(labels):
        raise ValueError(f"val_size must lie in [0, {len(labels) - 1}], got {holdout}")
    rng = np.random.default_rng(derive_seed(seed, "split"))
    classes, counts = np.unique(labels, return_counts=True)
    exact = holdout * counts / len(labels)
    quota = np.floor(exact).astype(int)
    shuffled = rng.permutation(len(classes))  # a stable sort of shuffled classes breaks ties at random
    by_remainder = shuffled[np.argsort(-(exact - quota)[shuffled], kind="stable")]
    for i in by_remainder[: holdout - quota.sum()]:
        quota[i] += 1
    held = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    held = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(len(labels)), held), held


class EpochSampler:
    """Which images one rank sees in one epoch, reshuffled from (seed, "shuffle", epoch).

    Lightning calls ``set_epoch`` on a loader's ``sampler`` at every epoch start (also
    after a resume), as it does for a DistributedSampler. With shuffling and several
    ranks every rank gets an equal share (the remainder is dropped), so all ranks run
    the same number of steps; evaluation takes every world_size-th image.
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

    def indices(self) -> np.ndarray:
        """int64 (len(self),): this rank's images of the current epoch, in order."""
        if self.shuffle:
            order = np.random.default_rng(derive_seed(self.seed, "shuffle", self.epoch)).permutation(self.num_images)
        else:
            order = np.arange(self.num_images)
        if self.shuffle and self.world_size > 1:
            order = order[: self.num_images - self.num_images % self.world_size]
        return order[self.rank :: self.world_size].astype(np.int64)


class BatchPlan:
    """The batches of one loader: ``len()`` batches of image indices per epoch, and the
    epoch's augmentation draws (for every image of the split; None without augmentation)."""

    def __init__(
        self, sampler: EpochSampler, batch_size: int, drop_last: bool, augmentation: Augmentation | None, seed: int
    ):
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last
        self.augmentation, self.seed = augmentation, seed

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self) -> tuple[np.ndarray, EpochDraws | None]:
        """(order, draws) of the sampler's current epoch."""
        draws = None
        if self.augmentation is not None:
            draws = draw_epoch(self.augmentation, self.sampler.num_images, self.seed, self.sampler.epoch)
        return self.sampler.indices(), draws

    def slices(self):
        """(start, stop) of each batch within the epoch's order."""
        return [(b * self.batch_size, (b + 1) * self.batch_size) for b in range(len(self))]


class CIFARData:
    """One CIFAR dataset, read and split: uint8 images (N, 3, 32, 32) and int64 labels (N,)
    per split, as numpy arrays, plus the per-epoch plans both frameworks follow.

    Args mirror ``CIFARDataModule``'s (it holds one of these): `val_size` 0 validates on
    the test set; N holds out N stratified training images from (seed, "split");
    `train_subset` keeps the first N training images. ``prepare_data`` downloads missing
    files when `download` is True (torchvision, imported only then). Raises
    ``CIFARDataError`` naming the file when the data is missing or malformed.
    """

    def __init__(
        self,
        dataset: str = "cifar10",
        data_dir: str | Path = "data",
        batch_size: int = 128,
        val_size: int = 0,
        seed: int = 0,
        eval_batch_size: int | None = None,
        augmentation: Augmentation = Augmentation(),
        train_subset: int | None = None,
        download: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        self.info = dataset_info(dataset)
        self.data_dir = Path(data_dir)
        self.batch_size, self.val_size, self.seed = batch_size, val_size, seed
        self.eval_batch_size = eval_batch_size or max(batch_size, EVAL_BATCH)
        self.augmentation, self.train_subset, self.download = augmentation, train_subset, download
        self.num_classes = self.info.num_classes
        self.mean, self.std = self.info.mean, self.info.std
        self.splits: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
        self._training_split = None  # read once; dropped after setup
        self._training_size: int | None = None

    @property
    def classes(self) -> list[str]:
        return read_class_names(self.data_dir, self.info.name)

    def present(self) -> bool:
        return dataset_present(self.data_dir, self.info.name)

    def prepare_data(self) -> None:
        """Download the files if they are missing and downloading is allowed; else, when
        they are missing, raise CIFARDataError naming the folder."""
        if self.present():
            return
        if self.download:
            download(self.info.name, self.data_dir)
        else:
            read_split(self.data_dir, self.info.name, train=True)  # raises the message naming the file
            raise CIFARDataError(f"incomplete {self.info.name} data in {self.data_dir / self.info.folder}")

    def training_split(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole training split (before the holdout and the subset), read once."""
        if self._training_split is None:
            self._training_split = read_split(self.data_dir, self.info.name, train=True)
            self._training_size = len(self._training_split[1])
        return self._training_split

    def training_set_size(self) -> int:
        """Images in the whole training split (before the holdout and the subset); downloads
        the files first when they are missing and downloading is allowed."""
        self.prepare_data()
        if self._training_size is None:
            self.training_split()
        return self._training_size

    def setup(self) -> None:
        """Read the files (once) and make the splits "train", "val" and "test"."""
        if self.splits is not None:
            return
        self.prepare_data()
        images, labels = self.training_split()
        test = read_split(self.data_dir, self.info.name, train=False)
        train_idx, val_idx = stratified_split(labels, self.val_size, self.seed)
        if self.train_subset:
            train_idx = train_idx[: self.train_subset]
        self.splits = {"train": (np.ascontiguousarray(images[train_idx]), labels[train_idx]), "test": test}
        self.splits["val"] = (images[val_idx], labels[val_idx]) if len(val_idx) else test
        self._training_split = None

    def plan(self, split: str, rank: int = 0, world_size: int = 1, shuffle: bool | None = None) -> BatchPlan:
        """The batches of `split` ("train", "val" or "test") for one rank: training batches
        are augmented and full (the last partial batch is dropped) and, unless `shuffle` is
        False, shuffled each epoch; evaluation batches keep the split's order."""
        self.setup()
        train = split == "train"
        num = len(self.splits[split][1])
        shuffle = train if shuffle is None else shuffle
        sampler = EpochSampler(num, shuffle=shuffle, seed=self.seed, rank=rank, world_size=world_size)
        plan = BatchPlan(
            sampler,
            self.batch_size if train else self.eval_batch_size,
            drop_last=train,
            augmentation=self.augmentation if train else None,
            seed=self.seed,
        )
        if train and len(plan) == 0:
            raise ValueError(f"batch_size {self.batch_size} exceeds the {len(sampler)} training images of this rank")
        return plan

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, 3, H, W) -> float32, per channel (x / 255 - mean) / std."""
        mean = np.asarray(self.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(1, -1, 1, 1)
        return (images.astype(np.float32) / 255 - mean) / std
