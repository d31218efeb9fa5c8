"""RunBook: the Lightning callback that keeps a fit.py run safe and whole.

- Stops a diverging run at the first non-finite training loss (or non-finite weights
  about to be checkpointed), naming the step and the last good checkpoint, which is
  left untouched.
- Writes into every checkpoint (key ``"run"``) the settings that shaped the run, the
  training time so far and every random generator's state (torch's CPU generator
  and the accelerator's), so a resumed run is checked against its past, adds its
  time to the earlier segments', and draws the dropout masks the uninterrupted run
  would have drawn.
- On Ctrl-C prints the exact command that resumes the run.
"""

from __future__ import annotations

import math
import sys
import time

import lightning as L
import torch

from .core.errors import NonFiniteLossError, non_finite_message


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
    def __init__(self, settings: dict, resume_hint=None):
        self.settings = settings
        self.resume_hint = resume_hint  # callable(checkpoint path) -> command, or None
        self.earlier_time = 0.0  # training time of the segments before a resume, in seconds
        self._start = None

    # ------------------------------------------------------------- time
    def on_train_start(self, trainer, pl_module):
        self._start = time.perf_counter()

    def train_time(self) -> float:
        """Seconds of training, all segments of the run together."""
        return self.earlier_time + (time.perf_counter() - self._start if self._start is not None else 0.0)

    # -------------------------------------------------------- divergence
    def last_checkpoint(self, trainer) -> str | None:
        cb = trainer.checkpoint_callback
        return getattr(cb, "last_model_path", None) or None

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
        checkpoint["run"] = {"settings": self.settings, "train_time_s": self.train_time(), "rng": rng_states()}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        run = checkpoint.get("run", {})
        self.earlier_time = run.get("train_time_s", 0.0)
        if "rng" in run:
            set_rng_states(run["rng"])

    # ----------------------------------------------------------- Ctrl-C
    def on_exception(self, trainer, pl_module, exception):
        if not isinstance(exception, KeyboardInterrupt) or trainer.global_rank != 0:
            return
        last = self.last_checkpoint(trainer)
        if last and self.resume_hint:
            print(f"\ninterrupted; resume with:\n  {self.resume_hint(last)}", file=sys.stderr, flush=True)
        else:
            print("\ninterrupted before the first checkpoint: nothing to resume", file=sys.stderr, flush=True)


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
