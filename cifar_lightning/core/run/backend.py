"""What a framework does for a run: the framework-shaped steps the lifecycle
(``lifecycle.run``) calls in order. ``cifar_lightning.backend.TorchBackend`` (Lightning) and
``cifar_mlx_adapter.backend.MLXBackend`` write these and nothing else of a run: the
folder, the lock, resume checks, Ctrl-C, divergence and the record are the lifecycle's.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


def cpu_precision(precision: str) -> str:
    """The precision a run on a CPU trains in, either framework: "16-mixed" runs as
    "bf16-mixed", as Lightning's Trainer runs it there (torch's CPU autocast has no float16;
    MLX's CPU float16 sums overflow), said in one warning line on stderr; others as given."""
    if precision != "16-mixed":
        return precision
    print("warning: --precision 16-mixed on the CPU runs as bf16-mixed, as Lightning runs it there", file=sys.stderr)
    return "bf16-mixed"


@dataclass(frozen=True)
class RunFacts:
    """What a run ran with, as run.json records it (``record.finish``): the device as its
    framework names it (torch: cpu, mps, cuda; MLX: cpu, metal, cuda), the GPU's name where
    the framework gives one, package versions, numerics in effect (``provenance``), the
    process layout, the model's parameter count, the optimizer steps one process took, and
    hyper-parameters of how the framework executed the recipe (e.g. MLX's ``device``)."""

    accelerator: str
    versions: dict
    numerics: dict
    processes: dict
    parameters: int
    steps: int
    gpu: str | None = None
    execution: dict = field(default_factory=dict)


@dataclass
class ProcessState:
    """Where a backend's process stands once ``start`` ran: its `rank` of `world_size`
    processes on `machines` machines, and the `device` it trains on as the first line names
    it, and the optimizer steps its ``--resume`` checkpoint had taken (`resumed_step`, set by
    ``read_resume``; 0 for a new run). Both backends are dataclasses built on it."""

    rank: int = field(default=0, init=False)
    world_size: int = field(default=1, init=False)
    machines: int = field(default=1, init=False)
    device: str = field(default="cpu", init=False)
    resumed_step: int = field(default=0, init=False)


class Backend(Protocol):
    """A framework's half of a run. Attributes: ``framework`` ("pytorch" or "mlx", as
    run.json names it), ``synchronized_by`` (what ``sync`` calls, once ``start`` ran),
    ``script`` (the command that starts it, for printed commands),
    ``checkpoint_suffix`` (".ckpt", ".npz"), ``initial_name`` ("initial.pt",
    "initial.npz"), ``precision`` (Lightning's name of the precision it trains in; ``start``
    may change it for the device, as MLX's CPU runs "16-mixed" as "bf16-mixed"). Set by
    ``start``: ``rank``, ``world_size``, ``machines`` and ``device`` (as the first line names it)."""

    framework: str
    precision: str
    synchronized_by: str
    script: str
    checkpoint_suffix: str
    initial_name: str
    rank: int
    world_size: int
    machines: int
    device: str

    def validate(self) -> None:
        """Check the backend's own options (UsageError naming the flag); nothing is made."""

    def start(self) -> AbstractContextManager:
        """Choose the device and join the processes training together; a context for the
        whole run (MLX: a rank's error becomes one line naming the rank)."""

    def read_resume(self, path: str) -> dict:
        """The settings saved in the run's checkpoint `path` (UsageError for a file that is
        no checkpoint of this framework); sets ``resumed_step``, the steps it had taken."""

    def make_data(self, config, recipe):
        """The data of the run: a CIFARDataModule or a CIFARData (``training_set_size``, ``setup``)."""

    def seed(self, seed: int) -> None: ...

    def make_module(self, config, recipe, data): ...

    def read_card(self, path: str):
        """The model card (``core.model_card.ModelCard``) of a checkpoint of either
        framework, or None for bare weights (initial.pt, .safetensors), which record none."""

    def count_parameters(self, module) -> int: ...

    def load_weights(self, module, path: str) -> None:
        """Load a file of either framework into the module's model (UsageError if it does not fit)."""

    def init_whitening(self, module, data, bias) -> None:
        """The fast net's whitening filters from the first training images, its bias `bias`."""

    def share_folder(self, folder: Path | None) -> Path:
        """Rank 0's run folder, known to every process."""

    def save_initial(self, module, path: Path) -> None: ...

    def make_trainer(
        self, config, recipe, data, folder: Path, settings: dict, steps: int, callbacks: tuple, timing
    ) -> Any:
        """The framework's trainer, its callbacks the recipe's, the user's `callbacks` and,
        last, `timing` (``step_callback``; None for an evaluation)."""

    def sync(self) -> None:
        """Wait for the device to finish the run's work so far (what the step clock reads
        after; its name, for the record, is ``synchronized_by``)."""

    def memory_counters(self) -> dict:
        """{name: function returning bytes} of the counters this device has, the one a
        comparison divides first (``memory.MemoryPeak``)."""

    def reset_memory_peak(self) -> None:
        """Reset the framework's own peak counter, as training starts."""

    def step_callback(self, clock, memory):
        """A callback of this framework's trainer that calls ``clock.epoch_start()`` as each
        training epoch starts, ``clock.recompiles_next(step, reason)`` before a step that
        compiles anew, and ``clock.step_end(images, last_of_epoch)`` after each optimizer step
        (``throughput.StepClock``); and keeps in every checkpoint the figures so far
        (``throughput.segment_state`` of `clock` and `memory`), which a resumed run continues
        (``throughput.continue_segments``)."""

    def fit(self, trainer, module, data, resume: str | None) -> None: ...

    def save_final(self, trainer, module, path: Path) -> Path: ...

    def test(self, trainer, module, data) -> dict:
        """{"test/acc", "test/loss", "per_class_accuracy", "confusion_matrix", "test/acc_no_tta" (with TTA)}."""

    def settle(self, trainer) -> None:
        """Before a record is written: the run's log flushed to disk (earlier segments' rows are
        there from the resume's start: torch puts them back as its trainer is made, MLX keeps them)."""

    def last_checkpoint(self, trainer) -> str | None: ...

    def times(self, trainer) -> dict:
        """Seconds of "train" and "validation", all segments of a resumed run together."""

    def interrupted(self, error: BaseException) -> bool:
        """Whether `error` ends a run stopped by Ctrl-C."""

    def describe_failure(self, error: BaseException) -> str:
        """The one line a failed run's record and its process print."""

    def facts(self, config, trainer, module) -> RunFacts:
        """What the finished run ran with; `execution` holds the settings beside the recipe
        that shaped it (``config.model_kwargs()``; MLX: its device too)."""

    def launcher(self) -> str:
        """What starts this layout again: "python", or "mlx.launch -n 2" and the like."""

    def flags(self) -> list[str]:
        """The backend's own flags, for a command that restarts the run."""
