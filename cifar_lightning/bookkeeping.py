"""RunBook: the Lightning callback that keeps a fit.py run safe and whole.

- Stops a diverging run at the first non-finite training loss (or non-finite weights
  about to be checkpointed), naming the step and the last good checkpoint, which is
  left untouched.
- Measures the training time (``on_train_start`` to ``on_train_end``, the validation
  passes during fit kept apart), the spans MLX's trainer measures.
- Writes into every checkpoint (key ``"run"``) the settings that shaped the run, the
  training and validation time so far and every random generator's state (torch's CPU generator
  and the accelerator's), so a resumed run is checked against its past, adds its
  time to the earlier segments', and draws the dropout masks the uninterrupted run
  would have drawn.
- Notes a Ctrl-C (Lightning then exits with status 1 after its own shutdown), so the
  runner can print the command that resumes the run and exit with 130.
"""

from __future__ import annotations

import math
import time

import lightning as L
import torch

from cifar_lightning.core.errors import NonFiniteLossError, non_finite_message


def rng_states() -> dict:
    """torch's global generators: CPU, and CUDA's or MPS's when present."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if torch.backends.mps.is_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_rng_states(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "mps" in state and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])


class RunBook(L.Callback):
    def __init__(self, settings: dict):
        self.settings = settings
        self.earlier_time = 0.0  # training seconds of the segments before a resume
        self.earlier_validation = 0.0  # their validation seconds
        self.interrupted = False  # Ctrl-C reached the trainer
        self._start: float | None = None  # this segment's training span
        self._end: float | None = None
        self._validation = 0.0  # validation seconds within this segment
        self._validation_start: float | None = None

    # ------------------------------------------------------------- time
    def on_train_start(self, trainer, pl_module):
        self._start, self._end, self._validation = time.perf_counter(), None, 0.0

    def on_train_end(self, trainer, pl_module):
        self._end = time.perf_counter()

    def on_validation_start(self, trainer, pl_module):
        if self._start is not None and self._end is None:  # within fit's span, not a later test
            self._validation_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module):
        if self._validation_start is not None:
            self._validation += time.perf_counter() - self._validation_start
            self._validation_start = None

    def train_time(self) -> float:
        """Seconds of training (optimizer steps and per-epoch checkpoints; validation
        excluded), all segments of the run together. A resumed run that had nothing left to
        train (Lightning skips ``on_train_start``) adds nothing."""
        if self._start is None:
            return self.earlier_time
        end = self._end if self._end is not None else time.perf_counter()
        return self.earlier_time + (end - self._start - self._validation)

    def validation_time(self) -> float:
        """Seconds of validation during fit, all segments together."""
        return self.earlier_validation + self._validation

    # -------------------------------------------------------- divergence
    def last_checkpoint(self, trainer) -> str | None:
        """checkpoints/last.ckpt once the run (or the one it resumes) has written it, else None."""
        cb = trainer.checkpoint_callback
        return getattr(cb, "best_model_path", None) or getattr(cb, "last_model_path", None) or None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss).all():
            raise NonFiniteLossError(non_finite_message(float(loss.detach().float().mean()), trainer.global_step - 1,
                                                        self.last_checkpoint(trainer)))  # fmt: skip

    # ------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        # the last step before a checkpoint can break the weights after its (finite) loss was
        # computed: raising here, before the file is written, keeps the last good checkpoint
        for name, p in pl_module.named_parameters():
            if not torch.isfinite(p).all():
                message = non_finite_message(math.nan, trainer.global_step - 1, self.last_checkpoint(trainer))
                raise NonFiniteLossError(f"{message} ({name} is not finite)")
        checkpoint["run"] = {"settings": self.settings, "train_time_s": self.train_time(),
                             "validation_time_s": self.validation_time(), "rng": rng_states()}  # fmt: skip

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        run = checkpoint.get("run", {})
        self.earlier_time = run.get("train_time_s", 0.0)
        self.earlier_validation = run.get("validation_time_s", 0.0)
        if "rng" in run:
            set_rng_states(run["rng"])

    # ----------------------------------------------------------- Ctrl-C
    def on_exception(self, trainer, pl_module, exception):
        if isinstance(exception, KeyboardInterrupt):
            self.interrupted = True


# ------------------------------------------- what run.json records of a torch run


def torch_numerics(trainer, channels_last: bool, compiled: bool = False) -> dict:
    """The precision Lightning used (``16-mixed`` on CPU runs as ``bf16-mixed``), the
    float32 matmul precision, TF32 and cuDNN switches, and the memory format."""
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


class InferenceRecord(L.Callback):
    """Writes into every checkpoint (key ``"inference"``) what predicting with it needs: the
    model, its classes and their names, the dataset and its normalisation
    (``core.model_card.inference_record``), so predict.py and export.py need no data folder."""

    def __init__(self, record: dict):
        self.record = record

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        checkpoint["inference"] = self.record
