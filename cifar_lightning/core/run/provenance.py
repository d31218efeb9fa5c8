"""What a run ran with, as it was in effect (not as it was asked for): the library's git
commit and the package versions (the machine: ``hardware``). Written into every run.json by both
frameworks; numerics and the process layout come from each backend
(``cifar_lightning.backend``, ``cifar_mlx_adapter.backend``), with the same fields."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[3]  # the checkout holding cifar_lightning/
# the packages each framework's run.json names the versions of (``versions``), besides Python
PACKAGES = {"pytorch": ("torch", "lightning", "torchmetrics", "torchvision"), "mlx": ("mlx", "numpy")}


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


def package_versions(*names: str) -> dict:
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out
