"""What a run ran with, as it was in effect (not as it was asked for): the library's git
commit, numerics and process layout. Written into every run.json by both frameworks;
the torch side's numerics and processes are read from its Trainer
(``cifar_lightning.runner``), with the same fields."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
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


def mlx_numerics() -> dict:
    """MLX trains in float32 throughout (no mixed precision), NHWC, with its step compiled."""
    return {"precision": "32-true", "memory_format": "channels_last", "compiled": True}  # mx.compile


def single_process(batch_size: int) -> dict:
    """The MLX trainer's layout: one process, one device."""
    return {"devices": 1, "num_nodes": 1, "strategy": "single_device", "world_size": 1,
            "accumulate_grad_batches": 1, "batch_size_per_process": batch_size,
            "effective_batch_size": batch_size}  # fmt: skip


def mlx_processes(batch_size: int, world_size: int = 1, num_nodes: int = 1, devices: int = 1) -> dict:
    """The MLX trainer's layout, in the fields torch's runs record: one process per device,
    `devices` of them on each of `num_nodes` machines; several processes train
    data-parallel over ``mx.distributed`` (strategy "ddp", as Lightning names it)."""
    if world_size == 1:
        return single_process(batch_size)
    return {"devices": devices, "num_nodes": num_nodes, "strategy": "ddp", "world_size": world_size,
            "accumulate_grad_batches": 1, "batch_size_per_process": batch_size,
            "effective_batch_size": batch_size * world_size}  # fmt: skip


def _cpu_model() -> str:
    if sys.platform == "darwin":
        try:
            return subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
        except OSError:
            pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_info(accelerator: str, gpu: str | None = None) -> dict:
    """What the run ran on. `accelerator`: the device actually used, as its framework names
    it (torch: cpu, mps, cuda; MLX: cpu, metal, or cuda in its CUDA build; Results.md
    compares them by class, ``device_class``); `gpu`: the GPU's name where the framework
    reports one."""
    info = {
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "accelerator": accelerator,
    }
    if gpu:
        info["gpu"] = gpu
    return info


def package_versions(*names: str) -> dict:
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out
