"""The machine a run ran on, as a user compares machines by, read with the system's own tools.

Every run.json's ``hardware``: the OS, the CPU (its model, the cores the process may use and
the machine's), the memory, the accelerator the run used (as its framework names it) and,
where there is one, the GPU's name as the framework names the device it uses. On a Mac also the chip (``sysctl -n machdep.cpu.brand_string``), the GPU's core count
(``system_profiler SPDisplaysDataType``), the macOS version and whether it ran on AC power
or on battery (``pmset -g batt``; a Mac on battery may run slower). A fact the system does
not give is recorded as ``"unknown"``, never guessed. The parsers take the tools' text, so
they are tested on the outputs the tools print.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

UNKNOWN = "unknown"


def _tool(*command: str) -> str | None:
    """What `command` prints, or None when it is absent, fails or hangs."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def gpu_cores(system_profiler_text: str | None) -> int | str:
    """The GPU core count in ``system_profiler SPDisplaysDataType``'s text ("Total Number of
    Cores: 40"), or "unknown"."""
    found = re.search(r"Total Number of Cores:\s*(\d+)", system_profiler_text or "")
    return int(found.group(1)) if found else UNKNOWN


def power_source(pmset_text: str | None) -> str:
    """ "AC Power" or "Battery Power" from ``pmset -g batt``'s first line ("Now drawing from
    'AC Power'"), or "unknown"."""
    found = re.search(r"Now drawing from '([^']+)'", pmset_text or "")
    return found.group(1) if found else UNKNOWN


def linux_memory_bytes(meminfo_text: str | None) -> int | str:
    """MemTotal of /proc/meminfo (in kB there) in bytes, or "unknown"."""
    found = re.search(r"^MemTotal:\s*(\d+)\s*kB", meminfo_text or "", re.M)
    return int(found.group(1)) * 1024 if found else UNKNOWN


def cpu_model() -> str:
    if sys.platform == "darwin":
        brand = (_tool("sysctl", "-n", "machdep.cpu.brand_string") or "").strip()
        if brand:
            return brand
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or UNKNOWN


def memory_bytes() -> int | str:
    if sys.platform == "darwin":
        text = (_tool("sysctl", "-n", "hw.memsize") or "").strip()
        return int(text) if text.isdigit() else UNKNOWN
    try:
        return linux_memory_bytes(Path("/proc/meminfo").read_text())
    except OSError:
        return UNKNOWN


def mac_facts() -> dict:
    """The facts a Mac user compares by (the chip is ``cpu``): GPU cores, macOS, power."""
    return {
        "gpu_cores": gpu_cores(_tool("system_profiler", "SPDisplaysDataType")),
        "macos": platform.mac_ver()[0] or UNKNOWN,
        "power": power_source(_tool("pmset", "-g", "batt")),
    }


def usable_cpu_count() -> int | str:
    """The CPUs this process may run on: ``os.process_cpu_count()`` (Python 3.13+), else the
    size of ``os.sched_getaffinity(0)`` (Linux), else the machine's ``os.cpu_count()``; a
    container or ``taskset`` may allow fewer than the machine has."""
    if hasattr(os, "process_cpu_count"):
        return os.process_cpu_count() or UNKNOWN
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or UNKNOWN


def nvidia_gpu_name() -> str | None:
    """The name ``nvidia-smi`` gives the GPU a CUDA process uses by default: the first one
    ``CUDA_VISIBLE_DEVICES`` names (an index or a UUID, both of which ``nvidia-smi -i``
    takes), else GPU 0; None without nvidia-smi."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    text = _tool("nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", visible or "0")
    return text.strip().splitlines()[0].strip() if text and text.strip() else None


def hardware_info(accelerator: str, gpu: str | None = None) -> dict:
    """What the run ran on. `accelerator`: the device actually used, as its framework names
    it (torch: cpu, mps, cuda; MLX: cpu, metal, or cuda in its CUDA build; Results.md
    compares them by class, ``device_class``); `gpu`: the GPU's name as the framework reports
    the device it uses (else, on cuda, nvidia-smi's for that device). ``cpu_count`` is the
    CPUs the process may use (``usable_cpu_count``), ``machine_cpu_count`` the machine's."""
    info = {
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": usable_cpu_count(),
        "machine_cpu_count": os.cpu_count() or UNKNOWN,
        "memory_bytes": memory_bytes(),
        "accelerator": accelerator,
    }
    if accelerator == "cuda":
        gpu = gpu or nvidia_gpu_name() or UNKNOWN
    if gpu:
        info["gpu"] = gpu
    if sys.platform == "darwin":
        info.update(mac_facts())
    return info
