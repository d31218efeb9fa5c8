"""Host reads per training step, counted on the path the scripts run (fit.py's TorchBackend
with Lightning's Trainer, fit_mlx.py's MLXTrainer).

A host read copies a value computed on the device to Python: on MPS and CUDA (and with
MLX, which is lazy, on any device) it makes the host wait for every step queued before
it, so a loop that reads at every step measures those waits along with the framework.
Both frameworks read only at the steps that log (every ``log_every_n_steps``) and at an
epoch's end; the non-finite loss check keeps the first bad step on the device and looks
at it then.

Counted as reads: torch ``Tensor.item``, ``tolist``, ``numpy``, ``cpu``, ``__bool__``,
``__float__``, ``__int__``, ``__index__`` and ``torch.unique`` (the host needs its length;
torchmetrics' input checks call it for integer predictions); MLX ``array.item``, ``tolist``, ``__bool__``,
``__float__``, ``__int__``, ``__index__`` and numpy's ``np.array``/``np.asarray`` of an
MLX array. Not counted: waits that read nothing (``mx.eval``, ``torch.cuda.synchronize``:
the step clock's, every 10 steps in both frameworks) and ``mx.async_eval``, which does
not wait.

Faults this test was checked against (each makes it fail): the training loss on
Lightning's progress bar at every step (``prog_bar=True``: Lightning turns it into a
float at every batch's end); RunBook's per-step ``torch.isfinite(loss).all()`` check;
torchmetrics' NaN check in ``MeanMetric.update`` (the training loss's epoch mean); MLX's
NaN check reading its flag at every step.
"""

from __future__ import annotations

import functools

import lightning as L
import mlx.core as mx
import numpy as np
import torch

from cifar_lightning.cli.fit import main as fit_main
from cifar_lightning.cli.fit_mlx import main as fit_mlx_main
from cifar_mlx_adapter.lightning import Callback

TORCH_READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__")
MLX_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")


class HostReads:
    """Counts host reads (those the module docstring lists) while installed; a read made
    inside another (``float`` calling ``item``) counts once."""

    def __init__(self, monkeypatch):
        self.count = 0
        self._depth = 0
        for cls, names in ((torch.Tensor, TORCH_READS), (mx.array, MLX_READS)):
            for name in names:
                monkeypatch.setattr(cls, name, self._counted(getattr(cls, name)))
        monkeypatch.setattr(torch, "unique", self._counted(torch.unique))
        for name in ("array", "asarray"):
            convert = getattr(np, name)
            counted = self._counted(convert)
            monkeypatch.setattr(
                np,
                name,
                lambda a, *args, _c=convert, _n=counted, **kw: (_n if isinstance(a, mx.array) else _c)(a, *args, **kw),
            )

    def _counted(self, read):
        @functools.wraps(read)
        def counted(*args, **kwargs):
            self.count += self._depth == 0
            self._depth += 1
            try:
                return read(*args, **kwargs)
            finally:
                self._depth -= 1

        return counted


class TorchMarks(L.Callback):
    """The read count as each training batch starts: a step's reads are those up to the next
    batch's start (its logging comes after the callbacks' ``on_train_batch_end``)."""

    def __init__(self, reads):
        self.reads, self.marks = reads, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.marks.append(self.reads.count)


class MLXMarks(Callback):
    """The read count as each training batch starts, as ``TorchMarks``: the MLX trainer logs
    after the callbacks' ``on_train_batch_end`` too, in Lightning's order."""

    def __init__(self, reads):
        self.reads, self.marks = reads, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.marks.append(self.reads.count)


STEPS, LOG_EVERY = 10, 4
RUN = ["--model", "small_cnn", "--epochs", "1", "--batch-size", "10", "--train-subset", "100"]


def reads_per_step(framework, data, folder, monkeypatch) -> list[int]:
    """The reads of each step of a one-epoch run but the last (which ends the epoch)."""
    argv = ["--data-dir", str(data), "--no-download", *RUN, "--log-every-n-steps", str(LOG_EVERY)]
    argv += ["--output-dir", str(folder)]
    with monkeypatch.context() as spies:
        reads = HostReads(spies)
        marks = TorchMarks(reads) if framework == "torch" else MLXMarks(reads)
        if framework == "torch":
            fit_main([*argv, "--accelerator", "cpu"], callbacks=(marks,))
        else:
            fit_mlx_main([*argv, "--cpu"], callbacks=(marks,))
    steps = [b - a for a, b in zip(marks.marks, marks.marks[1:])]
    assert len(steps) >= STEPS - 1
    return steps[: STEPS - 1]


def test_both_frameworks_read_device_values_only_at_the_steps_that_log(cifar10_dir, tmp_path, monkeypatch):
    """10 steps logging every 4th (0-based steps 3 and 7): the other steps make no read, in
    both frameworks. A logged step reads the same values in both (the non-finite flag, the
    step loss, the learning rate), and torch reads the loss once more for its progress bar:
    Lightning's logger turns the logged tensor into a float after the callbacks ran and
    keeps the float to itself, where MLX's loop reads it once for the row and the bar."""
    torch_reads = reads_per_step("torch", cifar10_dir, tmp_path / "torch", monkeypatch)
    mlx_reads = reads_per_step("mlx", cifar10_dir, tmp_path / "mlx", monkeypatch)
    logged = [i for i in range(STEPS - 1) if (i + 1) % LOG_EVERY == 0]
    print("host reads per step: torch", torch_reads, "mlx", mlx_reads)
    for name, reads in (("torch", torch_reads), ("mlx", mlx_reads)):
        assert [n for i, n in enumerate(reads) if i not in logged] == [0] * (STEPS - 1 - len(logged)), (name, reads)
    assert [mlx_reads[i] for i in logged] == [3, 3]
    assert [torch_reads[i] for i in logged] == [4, 4]
