"""The torch half of a run (``core.run.lifecycle.run``): Lightning's Trainer on cpu, mps or
cuda, on one or more processes (Lightning's DDP), with this package's DataModule, module
and callbacks. Everything else of a run (folder, lock, resume checks, Ctrl-C, divergence,
record) is the lifecycle's, the same for MLX.

    from cifar_lightning.backend import TorchBackend
    from cifar_lightning.core.run import RunConfig, run
    result = run(RunConfig(model="fast", data_dir="data"), TorchBackend(accelerator="mps"))
"""

from __future__ import annotations

import math
import os
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

from cifar_lightning.core.errors import UsageError
from cifar_lightning.core.run.backend import ProcessState, RunFacts, cpu_precision
from cifar_lightning.core.run.folder import RunPaths, keep_history, read_rows
from cifar_lightning.core.run.provenance import PACKAGES, package_versions
from cifar_lightning.core.spec import FAST

PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true")
# Lightning's DDP launcher starts the other processes by running the same command again;
# rank 0 names its (checked, claimed and locked) run folder in this variable, which they inherit.
DDP_RUN_FOLDER_ENV = "CIFAR_DDP_RUN_FOLDER"
EXPECTED_RESUME = "expected a fit.py checkpoint such as <run>/checkpoints/last.ckpt"
# what the step clock waits for the device with, by accelerator (CUDA and MPS run asynchronously)
SYNCHRONIZERS = {
    "cuda": "torch.cuda.synchronize",
    "mps": "torch.mps.synchronize",
    "cpu": "none: torch computes synchronously on a CPU",
}


def ddp_worker_folder() -> Path | None:
    """In a DDP process started by rank 0's launcher: rank 0's run folder; else None."""
    folder = os.environ.get(DDP_RUN_FOLDER_ENV)
    return Path(folder) if folder else None


def channels_last_default(accelerator: str) -> bool:
    """NHWC where it is the faster layout for convolutions: the CPU (measured in
    runs/benchmarks.json) and CUDA (NVIDIA's advice for tensor cores); NCHW on MPS."""
    return accelerator in ("cpu", "cuda")


def check_accelerator(name: str) -> str:
    """The accelerator that will be used; one clear line if the one asked for is absent."""
    import torch

    if name == "mps" and not torch.backends.mps.is_available():
        raise UsageError(
            "--accelerator mps: MPS is not available here (it needs Apple silicon, macOS 12.3+ "
            "and a torch build with MPS); use --accelerator cpu or auto"
        )
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--accelerator cuda: no CUDA GPU is visible to torch; use --accelerator cpu or auto")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    return name


def cuda_device_name() -> str:
    """The name of the GPU torch computes on: its current device, counted among those
    ``CUDA_VISIBLE_DEVICES`` leaves visible (index 0 there may be the machine's GPU 3)."""
    import torch

    return torch.cuda.get_device_name(torch.cuda.current_device())


def make_datamodule(config, recipe):
    """The CIFARDataModule the run's settings and its recipe describe."""
    from cifar_lightning.data import CIFARDataModule

    return CIFARDataModule(**config.data_kwargs(recipe), **asdict(recipe.augmentation))


def quiet_lightning() -> None:
    """Keep out of a run's output what Lightning prints on every run that is no news here:
    its information lines (seed, GPU/TPU availability, its cloud-logging tip, "fit stopped",
    its own Ctrl-C line: the run prints what trains where and how it ended), "exists and is
    not empty" about the run folder the lifecycle made itself (it holds
    checkpoints/initial.pt; a resumed run's history is kept by ``keep_history``), and a
    deprecation inside Lightning's own pytree helper. Warnings about real problems still
    print."""
    import logging
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in (
        r"Checkpoint directory .* exists and is not empty",
        r"Experiment logs directory .* exists and is not empty",
        r".*isinstance\(treespec, LeafSpec\)",
    ):
        warnings.filterwarnings("ignore", message=message)


def keep_logged_rows(logger, metrics_csv: Path, history: list[dict], resumed_step: int) -> None:
    """A resumed run's metrics.csv holds the earlier segments' rows from the start: Lightning's
    CSV logger removes the file as it opens it (its ``_ExperimentWriter``), so it is opened
    now, the rows of the steps the checkpoint covers (`history`, read before) are written back
    at once, and the logger is told their columns, so it appends to them (and rewrites them
    whole when its columns grow). A run cut again keeps every segment's rows on disk."""
    writer = logger.experiment  # opening it removes the old file
    header = keep_history(metrics_csv, history, resumed_step)
    if header:
        writer.metrics_keys = header


def read_torch_checkpoint(path: str | Path, flag: str) -> dict:
    """A Lightning checkpoint of fit.py, loaded safely (``weights_only=True``: no code in it
    runs). Anything else is a UsageError of one line, ``<flag> <file>: <what it is>;
    expected ...``: the other framework's checkpoint, bare weights (no training state), or
    a file that is no checkpoint at all (recognised by content, whatever its name)."""
    from cifar_lightning.core.weights import weights_file_kind
    from cifar_lightning.weights import load_torch_file

    kind, what = weights_file_kind(path)
    if kind == "npz" and what == "an MLX checkpoint":
        what += " (resume it with scripts/fit_mlx.py)"
    elif kind in ("npz", "safetensors"):
        what += ": weights without training state (start from them with --weights)"
    if kind != "torch":
        raise UsageError(f"{flag} {path}: {what}; {EXPECTED_RESUME}")
    try:
        checkpoint = load_torch_file(path, EXPECTED_RESUME)
    except UsageError as e:
        raise UsageError(f"{flag} {e}") from None
    if not isinstance(checkpoint, dict):
        raise UsageError(f"{flag} {path}: a PyTorch file holding a {type(checkpoint).__name__}; {EXPECTED_RESUME}")
    if not {"state_dict", "optimizer_states", "global_step", "epoch"} <= checkpoint.keys():
        held = "a Lightning checkpoint" if "state_dict" in checkpoint else "a PyTorch file"
        raise UsageError(
            f"{flag} {path}: {held} of weights without training state (start from them with "
            f"--weights); {EXPECTED_RESUME}"
        )
    return checkpoint


def torch_numerics(trainer, channels_last: bool, compiled: bool = False) -> dict:
    """The precision Lightning used (``16-mixed`` on CPU runs as ``bf16-mixed``), the
    float32 matmul precision, TF32 and cuDNN switches, and the memory format."""
    import torch

    return {
        "precision": str(trainer.precision),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "cudnn_enabled": torch.backends.cudnn.enabled,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "memory_format": "channels_last" if channels_last else "contiguous",
        "compiled": compiled,
    }


def torch_processes(trainer, batch_size: int) -> dict:
    """Devices, strategy, world size and the effective batch (images per optimizer step,
    over all processes and accumulated batches)."""
    world = trainer.world_size
    accumulate = trainer.accumulate_grad_batches
    return {
        "devices": trainer.num_devices,
        "num_nodes": trainer.num_nodes,
        # Lightning's registry names: single_device, ddp, fsdp, deepspeed, ... (as MLX's record says single_device)
        "strategy": getattr(trainer.strategy, "strategy_name", None)
        or type(trainer.strategy).__name__.removesuffix("Strategy").lower(),
        "world_size": world,
        "accumulate_grad_batches": accumulate,
        "batch_size_per_process": batch_size,
        "effective_batch_size": batch_size * world * accumulate,
    }


@dataclass
class TorchBackend(ProcessState):
    """scripts/fit.py's options (see its ``--help``): `accelerator` auto, cpu, mps or cuda;
    `devices` per machine ("auto" or a number) and `num_nodes` machines; a Lightning
    `precision` and `strategy`; `channels_last` (None: on for cpu and cuda, off for mps);
    `compile` with torch.compile."""

    accelerator: str = "auto"
    devices: str = "auto"
    precision: str = "32-true"
    strategy: str = "auto"
    num_nodes: int = 1
    channels_last: bool | None = None
    compile: bool = False

    framework = "pytorch"
    script = "fit.py"
    checkpoint_suffix = ".ckpt"
    initial_name = "initial.pt"

    def validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise UsageError(f"--precision {self.precision}: expected one of {', '.join(PRECISIONS)}")
        devices = str(self.devices)
        if devices != "auto" and not (devices.isdigit() and int(devices) >= 1):
            raise UsageError(f"--devices {devices}: expected a positive number of devices, or auto")
        if self.num_nodes < 1:
            raise UsageError(f"--num-nodes {self.num_nodes}: expected a positive number of machines")
        from lightning.pytorch.strategies import StrategyRegistry

        if self.strategy not in ["auto", *StrategyRegistry.available_strategies()]:
            raise UsageError(
                f"--strategy {self.strategy}: expected auto, ddp, ddp_spawn, fsdp or another of "
                "Lightning's registered strategies"
            )

    def start(self):
        import torch

        self.device = check_accelerator(self.accelerator)
        if self.device == "cpu":  # Lightning would change 16-mixed too; said before the first line, as MLX says it
            self.precision = cpu_precision(self.precision)
        self.synchronized_by = SYNCHRONIZERS[self.device]
        if self.channels_last is None:
            self.channels_last = channels_last_default(self.device)
        devices = str(self.devices)
        per_machine = int(devices) if devices.isdigit() else torch.cuda.device_count() if self.device == "cuda" else 1
        self.world_size, self.machines = per_machine * self.num_nodes, self.num_nodes
        self.rank = 0 if ddp_worker_folder() is None else 1  # a worker's own rank is known once its trainer is
        self.resumed_step = 0
        return nullcontext()

    # ----------------------------------------------------------- before fit
    def read_resume(self, path: str) -> dict:
        checkpoint = read_torch_checkpoint(path, "--resume")
        self.resumed_step = checkpoint["global_step"]
        return checkpoint.get("run", {}).get("settings", {})

    def read_card(self, path: str):
        from cifar_lightning.weights import card_or_none

        return card_or_none(path)

    def make_data(self, config, recipe):
        return make_datamodule(config, recipe)

    def seed(self, seed: int) -> None:
        import lightning as L

        quiet_lightning()
        L.seed_everything(seed, workers=True)

    def make_module(self, config, recipe, data):
        from cifar_lightning.module import CIFARClassifier

        # the trainer runs ceil(epochs); the module stops at epochs
        return CIFARClassifier(
            config.model,
            data.num_classes,
            recipe=recipe.to_dict(),
            class_names=data.classes,
            model_kwargs=config.model_kwargs(),
            channels_last=self.channels_last,
            compile=self.compile,
            epochs=recipe.epochs,
        )

    def count_parameters(self, module) -> int:
        from cifar_lightning.models import count_parameters

        return count_parameters(module.model)

    def load_weights(self, module, path: str) -> None:
        from cifar_lightning.weights import load_into_torch

        load_into_torch(module.model, path)

    def init_whitening(self, module, data, bias) -> None:
        from cifar_lightning.models import init_whitening

        init_whitening(module.model, data.normalize(data.train_images[: FAST["whiten_images"]]), bias)

    def share_folder(self, folder: Path | None) -> Path:
        worker = ddp_worker_folder()
        if worker is not None:  # a DDP process started by rank 0: the folder is rank 0's
            return worker
        if self.world_size > 1:  # tell the processes Lightning is about to launch which folder is theirs
            os.environ[DDP_RUN_FOLDER_ENV] = str(folder.resolve())
        return folder

    def save_initial(self, module, path: Path) -> None:
        import torch

        torch.save(module.model.state_dict(), path)

    def make_trainer(self, config, recipe, data, folder, settings, steps, callbacks, timing):
        import lightning as L
        from lightning.pytorch.callbacks import ModelCheckpoint
        from lightning.pytorch.loggers import CSVLogger

        from cifar_lightning.callbacks import InferenceRecord, LookaheadAveraging, RunBook, StepLossBar
        from cifar_lightning.core.model_card import inference_record

        paths = RunPaths(folder)
        self._book = RunBook(settings)
        # one file, checkpoints/last.ckpt, replaced at every epoch's end (no epochNNN.ckpt beside it)
        last = ModelCheckpoint(dirpath=paths.checkpoints, filename="last", save_top_k=1, enable_version_counter=False)
        architecture = {**recipe.model_kwargs, **config.model_kwargs()}  # e.g. fast_muon's head scale
        record = inference_record(config.model, data.num_classes, data.classes, config.dataset, architecture)
        ours = [last, self._book, InferenceRecord(record), StepLossBar()]
        if recipe.average_every:
            ours.append(LookaheadAveraging(recipe.average_every))
        history = read_rows(paths.metrics_csv) if config.resume else []  # before the CSV logger removes the file
        trainer = L.Trainer(
            accelerator=self.device,
            devices=self.devices,
            num_nodes=self.num_nodes,
            strategy=self.strategy,
            precision=self.precision,
            max_epochs=math.ceil(recipe.epochs),
            callbacks=[*ours, *callbacks, *([timing] if timing else [])],
            logger=CSVLogger(folder, name="", version=""),
            default_root_dir=folder,
            num_sanity_val_steps=0,
            log_every_n_steps=config.log_every(steps),
            limit_train_batches=config.limit_train_batches,
            limit_val_batches=config.limit_val_batches,
            limit_test_batches=config.limit_test_batches,
            # its FLOPs column reads 0 for these nets; the run's first line says what trains
            enable_model_summary=False,
        )
        self.rank = trainer.global_rank
        self._steps = 0
        if config.resume and self.rank == 0:
            keep_logged_rows(trainer.logger, paths.metrics_csv, history, self.resumed_step)
        return trainer

    # ------------------------------------------------------ speed and memory
    def sync(self) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
        elif self.device == "mps":
            torch.mps.synchronize()

    def memory_counters(self) -> dict:
        import torch

        from cifar_lightning.core.run.memory import macos_counters, process_peak_rss

        if self.device == "cuda":
            counters = {
                "torch.cuda.max_memory_allocated": torch.cuda.max_memory_allocated,
                "torch.cuda.max_memory_reserved": torch.cuda.max_memory_reserved,
            }
        elif self.device == "mps":  # MPS keeps no peak: sampled
            counters = {
                "torch.mps.current_allocated_memory": torch.mps.current_allocated_memory,
                "torch.mps.driver_allocated_memory": torch.mps.driver_allocated_memory,
            }
        else:
            counters = {"process_peak_rss": process_peak_rss}
        return {**counters, **macos_counters()}  # on macOS the process's physical footprint beside them

    def reset_memory_peak(self) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()

    def step_callback(self, clock, memory):
        from cifar_lightning.callbacks import StepTiming

        return StepTiming(clock, memory)

    # ------------------------------------------------------- fit and test
    def fit(self, trainer, module, data, resume: str | None) -> None:
        trainer.fit(module, datamodule=data, ckpt_path=resume, weights_only=True)
        self._steps = module.total_training_steps()  # per rank, as the trainer counts them

    def save_final(self, trainer, module, path: Path) -> Path:
        trainer.save_checkpoint(path, weights_only=False)  # the full state, as last.ckpt holds it
        return path

    def test(self, trainer, module, data) -> dict:
        results = trainer.test(module, datamodule=data, verbose=False, weights_only=True)[0]
        results["per_class_accuracy"] = module.per_class_accuracy.numpy()
        results["confusion_matrix"] = module.confusion_matrix.numpy()
        if not module.recipe.tta:
            results.pop("test/acc_no_tta", None)
        return results

    def settle(self, trainer) -> None:
        # the earlier segments' rows are on disk since the resume began (``keep_logged_rows``): flush this one's
        if self.rank == 0 and trainer.logger is not None:
            trainer.logger.save()

    def last_checkpoint(self, trainer) -> str | None:
        return self._book.last_checkpoint(trainer)

    def times(self, trainer) -> dict:
        return {"train": self._book.train_time(), "validation": self._book.validation_time()}

    def interrupted(self, error: BaseException) -> bool:
        # Lightning ends a Ctrl-C with its own shutdown and sys.exit(1); other exits pass through
        return isinstance(error, KeyboardInterrupt) or (isinstance(error, SystemExit) and self._book.interrupted)

    def describe_failure(self, error: BaseException) -> str:
        return f"rank {self.rank} of {self.world_size} failed: {type(error).__name__}: {error}"

    def facts(self, config, trainer, module) -> RunFacts:
        import torch

        return RunFacts(
            accelerator=self.device,
            gpu=cuda_device_name() if self.device == "cuda" else None,
            versions=package_versions(*PACKAGES["pytorch"]),
            numerics=torch_numerics(trainer, module.memory_format == torch.channels_last, module.compiled),
            processes=torch_processes(trainer, module.recipe.batch_size),
            parameters=self.count_parameters(module),
            steps=self._steps,
            execution=config.model_kwargs(),
        )

    def launcher(self) -> str:
        return "python"

    def flags(self) -> list[str]:
        out = ["--accelerator", self.accelerator]
        for name, default in (("devices", "auto"), ("precision", "32-true"), ("strategy", "auto"), ("num_nodes", 1)):
            if getattr(self, name) != default:
                out += ["--" + name.replace("_", "-"), str(getattr(self, name))]
        if self.compile:
            out.append("--compile")
        return out
