"""Batches for MLXTrainer from any source a Lightning user has.

- any re-iterable of batches (a list of tuples, a generator-making object, a torch
  ``DataLoader``) whose leaves are numpy arrays, MLX arrays or torch tensors: leaves become
  ``mx.array`` (torch tensors through ``.numpy()``, a view for CPU tensors); other leaves
  (strings, ints) pass through;
- a ``LightningDataModule`` (the user's own included) or any object with its methods:
  ``prepare_data()`` on rank 0, ``setup(stage)`` on every process, then
  ``train_dataloader()``/``val_dataloader()``/... as Lightning calls them
  (lightning/pytorch/trainer/connectors/data_connector.py);
- the library's ``CIFARDataModule`` or ``CIFARData``: batches augmented on MLX's device
  (``cifar_mlx_adapter.data``), the same batches the torch side sees.

Several processes: the on-device CIFAR loaders take each rank's share of the images
(torch's DDP plan); any other source gives rank r of N the batches r, r+N, r+2N, ... (a
torch DataLoader keeps its own sampler: give it a DistributedSampler for a per-image split).
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np

from cifar_lightning.core.data import CIFARData


def to_mlx(tree):
    """Every numpy array, torch tensor or number-array leaf of a nested tuple/list/dict as
    ``mx.array``; MLX arrays and other leaves unchanged."""
    kind = type(tree)  # the common batches first (a step's host time): arrays, plain tuples and lists of them
    if kind is mx.array:
        return tree
    if kind is np.ndarray:
        return mx.array(tree)
    if kind is tuple or kind is list:
        return kind([to_mlx(v) for v in tree])
    if isinstance(tree, mx.array):
        return tree
    if isinstance(tree, np.ndarray):
        return mx.array(tree)
    if type(tree).__module__.startswith("torch") and hasattr(tree, "numpy"):
        return mx.array(tree.detach().cpu().numpy())
    if isinstance(tree, dict):
        return {k: to_mlx(v) for k, v in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # a namedtuple keeps its type
        return type(tree)(*(to_mlx(v) for v in tree))
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_mlx(v) for v in tree)
    return tree


def length_of(source) -> float:
    """len(source), or inf when it has none (an iterable dataset)."""
    try:
        return len(source)
    except TypeError:
        return math.inf


def limit_batches(length: float, limit, stage: str) -> float:
    """Lightning's ``_parse_num_batches``: an int is a count, a float a fraction of `length`
    (0 < fraction; 1.0 all); a fraction that leaves no batch is refused."""
    if limit is None:
        return length
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit < 0:
        raise ValueError(f"limit_{stage}_batches must be an int >= 0 or a float in [0, 1], got {limit!r}")
    if isinstance(limit, float) and limit > 1.0:
        raise ValueError(f"limit_{stage}_batches as a fraction must be in [0, 1], got {limit!r}")
    if length == 0:
        return 0
    if isinstance(limit, int):
        return min(length, limit)
    if length == math.inf:
        if limit != 1.0:
            raise ValueError(f"limit_{stage}_batches must be 1.0 or an int for a source without a length")
        return length
    n = int(length * limit)
    if n == 0 and limit > 0:
        raise ValueError(
            f"You requested to check {limit} of the `{stage}_dataloader` but {limit} * {length} < 1. "
            f"Please increase the `limit_{stage}_batches` argument. Try at least "
            f"`limit_{stage}_batches={1.0 / length}`"
        )
    return n


class Batches:
    """One split's batches as MLX trees, re-iterable: `source`'s batches converted, or the
    rank's share of them (every N-th batch) with several processes."""

    def __init__(self, source, rank: int = 0, world_size: int = 1):
        if isinstance(source, (mx.array, np.ndarray)) or not hasattr(source, "__iter__"):
            raise TypeError(f"expected an iterable of batches (a list, a DataLoader, ...), got {type(source).__name__}")
        self.source, self.rank, self.world_size = source, rank, world_size
        self.sampler = getattr(source, "sampler", None)

    def __len__(self) -> int:
        n = length_of(self.source)
        if n == math.inf:
            raise TypeError("this source has no length")
        return len(range(self.rank, n, self.world_size)) if self.world_size > 1 else n

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def unconverted(self):
        """The rank's batches as the source gives them, each for ``to_mlx`` (the training loop
        converts a batch while the step before it runs)."""
        if self.world_size == 1:
            return iter(self.source)
        return (batch for i, batch in enumerate(self.source) if i % self.world_size == self.rank)

    def __iter__(self):
        return map(to_mlx, self.unconverted())


class CIFARBatches:
    """The on-device CIFAR loader of one split, with ``set_epoch``."""

    def __init__(self, loader):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.loader.sampler.set_epoch(epoch)

    def __iter__(self):
        return iter(self.loader)


def cifar_core(data) -> CIFARData | None:
    """The ``CIFARData`` of a ``CIFARDataModule`` or itself; None for any other source."""
    core = getattr(data, "data", data)
    return core if isinstance(core, CIFARData) else None


_LOADER_OF = {"train": "train_dataloader", "val": "val_dataloader", "test": "test_dataloader", "predict": None}


class DataSource:
    """Where one call's batches come from: loaders given, a datamodule, or the module's own
    ``*_dataloader`` methods (as Lightning allows on a LightningModule)."""

    def __init__(self, module, loaders: dict, datamodule, rank: int, world_size: int, group=None):
        self.module, self.loaders, self.datamodule = module, loaders, datamodule
        self.rank, self.world_size, self.group = rank, world_size, group
        self._mlx_cifar = None

    def prepare(self, stage: str) -> None:
        """``prepare_data`` (rank 0; the others wait for it) then ``setup(stage)``, Lightning's order."""
        dm = self.datamodule
        if dm is None or cifar_core(dm) is not None:  # CIFAR's files are fetched when its batches are made
            return
        if hasattr(dm, "prepare_data") and self.rank == 0:
            dm.prepare_data()
        if self.group is not None:  # the others wait until rank 0 has the files
            mx.eval(mx.distributed.all_sum(mx.array(1), group=self.group))
        if hasattr(dm, "setup"):
            dm.setup(stage=stage)  # by keyword, as Lightning's _call_lightning_datamodule_hook

    def batches(self, split: str):
        """The split's batches (``Batches`` or ``CIFARBatches``), or None where there are none."""
        if split in self.loaders and self.loaders[split] is not None:
            source = self.loaders[split]
            if isinstance(source, CIFARBatches):  # already the rank's share, on the device
                return source
            core = cifar_core(source)
            return self._cifar(core, split) if core is not None else Batches(source, self.rank, self.world_size)
        dm = self.datamodule
        if dm is not None and cifar_core(dm) is not None:
            return self._cifar(cifar_core(dm), split)
        owner = dm if dm is not None else self.module
        method = _LOADER_OF[split] or "predict_dataloader"
        if owner is None or not hasattr(owner, method):
            return None
        source = getattr(owner, method)()
        return None if source is None else Batches(source, self.rank, self.world_size)

    def _cifar(self, core: CIFARData, split: str):
        from cifar_mlx_adapter.data import MLXData

        if self._mlx_cifar is None or self._mlx_cifar.data is not core:
            core.prepare_data()
            self._mlx_cifar = MLXData(core)
        split = "test" if split == "predict" else split
        return CIFARBatches(self._mlx_cifar.loader(split, self.rank, self.world_size))
