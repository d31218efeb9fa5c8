"""What a run ran with, as it was in effect (not as it was asked for): the library's git
commit, numerics and process layout. Written into every run.json by both frameworks."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def code_version() -> dict:
    """{"commit": 40-hex or None, "dirty": bool or None}: the checkout the library was
    imported from; dirty means tracked files differ from the commit (None outside git)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(REPOSITORY), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def torch_numerics(trainer, channels_last: bool) -> dict:
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
    }


def torch_processes(trainer, batch_size: int) -> dict:
    """Devices, strategy, world size and the effective batch (images per optimizer step,
    over all processes and accumulated batches)."""
    world = trainer.world_size
    accumulate = trainer.accumulate_grad_batches
    return {
        "devices": trainer.num_devices,
        "num_nodes": trainer.num_nodes,
        "strategy": type(trainer.strategy).__name__,
        "world_size": world,
        "accumulate_grad_batches": accumulate,
        "batch_size_per_process": batch_size,
        "effective_batch_size": batch_size * world * accumulate,
    }


def mlx_numerics() -> dict:
    """MLX trains in float32 throughout (no mixed precision), NHWC."""
    return {"precision": "32-true", "memory_format": "channels_last"}


def single_process(batch_size: int) -> dict:
    """The MLX trainer's layout: one process, one device."""
    return {"devices": 1, "num_nodes": 1, "strategy": "single_device", "world_size": 1,
            "accumulate_grad_batches": 1, "batch_size_per_process": batch_size,
            "effective_batch_size": batch_size}  # fmt: skip
