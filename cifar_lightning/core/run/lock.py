"""One training at a time on a machine: a lock file held while a run trains and tests.

Two trainings sharing a GPU (or a CPU) slow each other down and make every time and
throughput figure meaningless, so ``scripts/fit.py`` and ``scripts/fit_mlx.py`` hold
this lock for the whole run. It is an OS file lock (``filelock``, ``fcntl`` on Unix):
the kernel releases it when its process ends, so a killed run never leaves it stale.

Opting out: ``--lock-file none`` (or ``CIFAR_LOCK_FILE=none``) trains without it; a user
with two GPUs gives each GPU's runs their own lock file (``--lock-file /tmp/gpu1.lock``);
the tests point ``CIFAR_LOCK_FILE`` at a file of their own.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from cifar_lightning.core.errors import CIFARError, ExitCode

DEFAULT_NAME = "cifar-lightning-mlx.lock"


class TrainingLockBusy(CIFARError):
    """Another training holds the lock and --no-wait was given."""

    exit_code = ExitCode.BUSY


def lock_path(flag: str | None) -> Path | None:
    """The lock file to use: the flag, else $CIFAR_LOCK_FILE, else the temporary folder's; None: no lock."""
    value = flag or os.environ.get("CIFAR_LOCK_FILE") or str(Path(tempfile.gettempdir()) / DEFAULT_NAME)
    return None if value.lower() == "none" else Path(value)


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.with_name(path.name + ".json").read_text())
        return f"process {info['pid']}, run folder {info['run_folder']}"
    except (OSError, ValueError, KeyError):
        return "a process that left no details"


@contextmanager
def training_lock(path: Path | None, run_folder: str | Path, wait: bool = True):
    """Hold the machine's training lock at `path` for the body (no lock when `path` is None).

    Raises TrainingLockBusy at once when another process holds it and `wait` is False;
    otherwise prints one line naming the holder and waits for it.
    """
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = _holder(path)
        if not wait:
            raise TrainingLockBusy(
                f"another training is running ({holder}; lock {path}); without --no-wait this run would wait for it"
            ) from None
        print(f"waiting for another training to finish ({holder}; lock {path})", file=sys.stderr, flush=True)
        lock.acquire()
    try:
        info = {"pid": os.getpid(), "run_folder": str(run_folder), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        path.with_name(path.name + ".json").write_text(json.dumps(info))
        yield
    finally:
        lock.release()
