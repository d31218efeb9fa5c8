"""The MLX half of a run (``core.run.lifecycle.run``): ``MLXTrainer`` on Metal, CUDA
(``mlx[cuda]``) or the CPU, on one process or several started by ``mlx.launch``
(``cifar_mlx_adapter.distributed``). Everything else of a run (folder, lock, resume checks,
Ctrl-C, divergence, record) is the lifecycle's, the same for torch.

Several processes: every rank checks the settings and reads the data; rank 0 alone takes
the training lock, claims and writes the run folder (metrics.csv, checkpoints, run.json
with the process layout) and tells the others its name. A rank that fails prints one line
naming itself and its error and exits non-zero; the others lose it at their next exchange,
say so in one line each and exit non-zero; rank 0 then leaves run.json marked failed
(resumable from the last checkpoint), never finished.

    from cifar_mlx_adapter.backend import MLXBackend
    from cifar_lightning.core.run import RunConfig, run
    result = run(RunConfig(model="fast", data_dir="data"), MLXBackend())
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifar_lightning.core.errors import UsageError
from cifar_lightning.core.run.backend import ProcessState, RunFacts
from cifar_lightning.core.run.backend import cpu_precision as core_cpu_precision
from cifar_lightning.core.run.provenance import PACKAGES, package_versions
from cifar_lightning.core.run.record import launcher
from cifar_lightning.core.spec import FAST
from cifar_mlx_adapter import blas

EXPECTED_RESUME = "expected a fit_mlx.py checkpoint such as <run>/checkpoints/last.npz"


def read_mlx_checkpoint(path: str | Path, flag: str) -> dict:
    """The metadata of an MLXTrainer checkpoint (.npz read without pickle). Anything else is
    a UsageError of one line, ``<flag> <file>: <what it is>; expected ...``: the other
    framework's checkpoint, bare weights (no training state), or a file that is no
    checkpoint at all (recognised by content, whatever its name)."""
    from cifar_lightning.core.weights import weights_file_kind

    kind, what = weights_file_kind(path)
    if kind == "torch":
        what += " (resume it with scripts/fit.py)"
    elif kind == "safetensors" or what == "an .npz of weights":
        what += ": weights without training state (start from them with --weights)"
    if what != "an MLX checkpoint":
        raise UsageError(f"{flag} {path}: {what}; {EXPECTED_RESUME}")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
    except Exception as e:  # any parse error of a damaged file; KeyboardInterrupt is no Exception
        what = (
            "an .npz holding pickled objects (refused: nothing in it was run)"
            if "pickle" in str(e)
            else f"an MLX checkpoint that does not read ({type(e).__name__})"
        )
        raise UsageError(f"{flag} {path}: {what}; {EXPECTED_RESUME}") from None
    if not isinstance(meta, dict) or not {"global_step", "epoch", "total_steps"} <= meta.keys():
        raise UsageError(f"{flag} {path}: an .npz whose meta is not fit_mlx.py's; {EXPECTED_RESUME}")
    return meta


def best_device() -> str:
    """The device an MLX run takes unless told --cpu, as run.json records it: "metal" (Apple
    GPU), "cuda" (an NVIDIA GPU through mlx[cuda]) or "cpu" (an MLX build without a GPU
    backend, such as mlx[cpu] on Linux). Sets nothing."""
    import mlx.core as mx

    if not mx.is_available(mx.gpu):
        return "cpu"
    return "metal" if mx.metal.is_available() else "cuda"


def setup_device(cpu: bool = False, memory_limit: float | None = None) -> str:
    """Make MLX's default device the run's and return its name as run.json records it:
    `cpu`, else ``best_device()``. `memory_limit` caps MLX's memory at that many GB."""
    import mlx.core as mx

    if memory_limit is not None:
        mx.set_memory_limit(int(memory_limit * 2**30))
    device = "cpu" if cpu else best_device()
    mx.set_default_device(mx.cpu if device == "cpu" else mx.gpu)
    return device


def mlx_cuda_device_name() -> str | None:
    """The GPU's name as MLX's CUDA build reports the device it computes on
    (``mx.device_info(mx.gpu)["device_name"]``), None where it names none."""
    import mlx.core as mx

    return mx.device_info(mx.gpu).get("device_name")


def make_data(config, recipe):
    """The framework-neutral CIFARData the run's settings and its recipe describe (no torch)."""
    from cifar_lightning.core.data import CIFARData

    return CIFARData(**config.data_kwargs(recipe), augmentation=recipe.augmentation)


def cpu_precision(precision: str) -> str:
    """The precision a run on MLX's CPU trains in: ``core.run.backend.cpu_precision``'s (16-mixed
    as bf16-mixed, as Lightning runs it), and "16-true" refused (UsageError): MLX's CPU float16
    sums overflow (MLX 0.32: BatchNorm's batch variance of 50 CIFAR images is inf in float16,
    so training stops at its first steps); bfloat16 has float32's range."""
    if precision == "16-true":
        raise UsageError(
            "--precision 16-true on the CPU: MLX's CPU float16 sums overflow (BatchNorm's statistics "
            "become inf); expected bf16-true there, or a GPU"
        )
    return core_cpu_precision(precision)


def mlx_numerics(precision: str = "32-true") -> dict:
    """The run's precision (Lightning's name: "32-true"; "bf16-mixed" or "16-mixed": float32
    weights, the training step computed in half; "bf16-true" or "16-true": half weights),
    NHWC, with its step compiled."""
    return {"precision": precision, "memory_format": "channels_last", "compiled": True}  # mx.compile


def mlx_processes(batch_size: int, world_size: int = 1, num_nodes: int = 1, devices: int = 1) -> dict:
    """The MLX trainer's layout, in the fields torch's runs record: one process per device,
    `devices` of them on each of `num_nodes` machines; several processes train
    data-parallel over ``mx.distributed`` (strategy "ddp", as Lightning names it)."""
    strategy = "ddp" if world_size > 1 else "single_device"
    return {
        "devices": devices,
        "num_nodes": num_nodes,
        "strategy": strategy,
        "world_size": world_size,
        "accumulate_grad_batches": 1,
        "batch_size_per_process": batch_size,
        "effective_batch_size": batch_size * world_size,
    }


@dataclass
class MLXBackend(ProcessState):
    """scripts/fit_mlx.py's options (see its ``--help``): `cpu` trains on the CPU instead of
    the GPU MLX reports; `memory_limit` caps MLX's memory (GB); `precision` is one of
    Lightning's names MLX has (``cifar_mlx_adapter.lightning.precision.PRECISION_NAMES``: fit.py's
    but 64-true)."""

    cpu: bool = False
    memory_limit: float | None = None
    precision: str = "32-true"

    framework = "mlx"
    synchronized_by = "mx.eval"  # of the model's and the optimiser's state: MLX computes lazily
    script = "fit_mlx.py"
    checkpoint_suffix = ".npz"
    initial_name = "initial.npz"

    def validate(self) -> None:
        import math

        from cifar_mlx_adapter.lightning.precision import PRECISION_NAMES

        if self.precision not in PRECISION_NAMES:
            why = (
                " (MLX's GPU has no float64, and its trainers take no float64 setting)"
                if self.precision == "64-true"
                else ""
            )
            raise UsageError(f"--precision {self.precision}{why}: expected one of {', '.join(PRECISION_NAMES)}")
        if self.memory_limit is None:
            return
        if not math.isfinite(self.memory_limit):
            raise UsageError(f"--memory-limit must be a finite number, got {self.memory_limit}")
        if self.memory_limit <= 0:
            raise UsageError(f"--memory-limit must be a positive number of GB, got {self.memory_limit}")

    @contextmanager
    def start(self):
        from cifar_mlx_adapter.distributed import describe_failure, join_processes, layout

        group = join_processes()  # a group of one unless mlx.launch started several processes
        self.group = group if group.size() > 1 else None
        self.rank, self.world_size = group.rank(), group.size()
        self.machines, self._here = layout(group) if self.group is not None else (1, 1)
        self.device = setup_device(self.cpu, self.memory_limit)
        if self.device == "cpu":
            self.precision = cpu_precision(self.precision)
            from cifar_mlx_adapter.blas import slow_blas_warning

            warning = slow_blas_warning()
            if warning:
                print(warning, file=sys.stderr, flush=True)
        if self.group is None:
            yield self
            return
        try:
            yield self
        except Exception as e:  # one line naming this rank (KeyboardInterrupt and SystemExit pass)
            raise describe_failure(e, self.rank, self.world_size) from None

    # ----------------------------------------------------------- before fit
    def read_resume(self, path: str) -> dict:
        meta = read_mlx_checkpoint(path, "--resume")
        self.resumed_step = int(meta["global_step"])
        return meta.get("settings", {})

    def read_card(self, path: str):
        from cifar_lightning.weights import card_or_none  # imports torch for a torch file only

        return card_or_none(path)

    def make_data(self, config, recipe):
        return make_data(config, recipe)

    def seed(self, seed: int) -> None:
        import mlx.core as mx

        mx.random.seed(seed)

    def make_module(self, config, recipe, data):
        from cifar_mlx_adapter.module import MLXClassifier

        self._module = MLXClassifier(
            config.model,
            data.num_classes,
            recipe=recipe.to_dict(),
            class_names=data.classes,
            model_kwargs=config.model_kwargs(),
        )
        return self._module

    def count_parameters(self, module) -> int:
        from cifar_mlx_adapter.models import count_parameters

        return count_parameters(module.model)

    def load_weights(self, module, path: str) -> None:
        from cifar_mlx_adapter.weights import load_file

        load_file(module.model, path)

    def init_whitening(self, module, data, bias) -> None:
        from cifar_mlx_adapter.models import init_whitening

        init_whitening(module.model, data.normalize(data.splits["train"][0][: FAST["whiten_images"]]), bias)

    def share_folder(self, folder: Path | None) -> Path:
        if self.group is None:
            return folder
        from cifar_mlx_adapter.distributed import broadcast_text

        # the others learn rank 0's folder (they write nothing into it)
        return Path(broadcast_text(str(Path(folder).resolve()) if self.rank == 0 else None, self.group))

    def save_initial(self, module, path: Path) -> None:
        from cifar_mlx_adapter.weights import mlx_state

        np.savez(path, **{k: np.array(v) for k, v in mlx_state(module.model).items()})

    def make_trainer(self, config, recipe, data, folder, settings, steps, callbacks, timing):
        from cifar_lightning.core.model_card import inference_record
        from cifar_mlx_adapter.callbacks import LookaheadAveraging
        from cifar_mlx_adapter.trainer import MLXTrainer

        ours = [LookaheadAveraging(recipe.average_every)] if recipe.average_every else []
        architecture = {**recipe.model_kwargs, **config.model_kwargs()}  # e.g. fast_muon's head scale
        inference = inference_record(config.model, data.num_classes, data.classes, config.dataset, architecture)
        callbacks = [*callbacks, *ours, *([timing] if timing else [])]
        self._trainer = MLXTrainer(
            max_epochs=recipe.epochs,
            callbacks=callbacks,
            default_root_dir=folder,
            log_every_n_steps=config.log_every(steps),
            limit_train_batches=config.limit_train_batches,
            limit_val_batches=config.limit_val_batches,
            limit_test_batches=config.limit_test_batches,
            checkpoint_meta={"settings": settings, "inference": inference},
            group=self.group,
            precision=self.precision,
        )
        return self._trainer

    # ------------------------------------------------------ speed and memory
    def sync(self) -> None:
        import mlx.core as mx

        optimizer = getattr(self._trainer, "optimizer", None)
        mx.eval(self._module.model.parameters(), optimizer.state if optimizer is not None else [])

    def memory_counters(self) -> dict:
        import mlx.core as mx

        from cifar_lightning.core.run.memory import macos_counters, process_peak_rss

        counters = {"mx.get_peak_memory": mx.get_peak_memory, "mx.get_cache_memory": mx.get_cache_memory}
        if self.device == "cpu":  # the counter torch's CPU runs record too, first: the one a comparison divides
            counters = {"process_peak_rss": process_peak_rss, **counters}
        return {**counters, **macos_counters()}  # on macOS the process's physical footprint beside them

    def reset_memory_peak(self) -> None:
        import mlx.core as mx

        mx.reset_peak_memory()

    def step_callback(self, clock, memory):
        from cifar_mlx_adapter.callbacks import StepTiming

        return StepTiming(clock, memory)

    # ------------------------------------------------------- fit and test
    def fit(self, trainer, module, data, resume: str | None) -> None:
        trainer.fit(module, data, ckpt_path=resume)

    def save_final(self, trainer, module, path: Path) -> Path:
        return trainer.save_checkpoint(path, module)

    def test(self, trainer, module, data) -> dict:
        return trainer.test(module, data, verbose=False)

    def settle(self, trainer) -> None:
        pass  # MLXTrainer keeps the rows of earlier segments itself

    def last_checkpoint(self, trainer) -> str | None:
        return trainer.last_checkpoint

    def times(self, trainer) -> dict:
        return {"train": trainer.train_time_s, "validation": trainer.validation_time_s}

    def interrupted(self, error: BaseException) -> bool:
        return isinstance(error, KeyboardInterrupt)

    def describe_failure(self, error: BaseException) -> str:
        from cifar_mlx_adapter.distributed import describe_failure

        return str(describe_failure(error, self.rank, self.world_size))

    def facts(self, config, trainer, module) -> RunFacts:
        return RunFacts(
            accelerator=self.device,
            gpu=mlx_cuda_device_name() if self.device == "cuda" else None,
            versions=package_versions(*PACKAGES["mlx"]),
            numerics={**mlx_numerics(self.precision), **({"blas": blas.in_use()} if self.device == "cpu" else {})},
            processes=self._processes(module.recipe.batch_size),
            parameters=self.count_parameters(module),
            steps=trainer.total_steps,
            execution={"device": self.device, **config.model_kwargs()},
        )

    def _processes(self, batch_size: int) -> dict:
        return mlx_processes(batch_size, self.world_size, self.machines, self._here)

    def launcher(self) -> str:
        # the layout as run.json records it: mlx.launch -n N on one machine, --hostfile on several
        return launcher("mlx", {"world_size": self.world_size, "devices": self._here, "num_nodes": self.machines})

    def flags(self) -> list[str]:
        out = ["--cpu"] if self.cpu else []
        out += ["--precision", self.precision] if self.precision != "32-true" else []
        return out + (["--memory-limit", str(self.memory_limit)] if self.memory_limit is not None else [])
