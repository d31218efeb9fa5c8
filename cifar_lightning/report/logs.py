"""Run logs read back: the run.json files under a folder (failed runs left out), and what a
log says in the terms Results.md uses (status, code, device class and machine, length, time
spans, training images/s), logs written before a field existed included.
"""

from __future__ import annotations

import json
from pathlib import Path

from cifar_lightning.core.run.folder import RUN_JSON


def load_runs(root: str | Path, only: set[Path] | None = None) -> list[dict]:
    """Every run's run.json under `root` (those in `only`, when given), each with its
    folder as ``_path``; failed runs are skipped."""
    runs = []
    for path in sorted(Path(root).rglob(RUN_JSON)):
        if only is not None and path.resolve() not in only:
            continue
        run = json.loads(path.read_text())
        if run_status(run) == "failed":  # a diverged run is evidence of nothing but its failure
            continue
        run["_path"] = path.parent.as_posix()
        runs.append(run)
    return runs


def run_status(run: dict) -> str:
    """A run.json's ``status`` ("finished", "failed"). Logs written before the field existed
    (commit 9dbcb7b added it with the failure record) have none: run.json was then written
    only after a run had trained and tested, so they read "finished"."""
    return run.get("status", "finished")


# hyper-parameters newer runs record; older logs lack them and ran with these values
RECORDED_SINCE = {"limit_train_batches": None, "limit_val_batches": None, "limit_test_batches": None}


def code_text(run: dict) -> str:
    """The code a run used: the commit's short hash (7 hex digits), with "+changes" when
    tracked files differed from it (" (changes unknown)" when that was not recorded);
    "unknown" when no commit was recorded (logs older than the ``code`` field, or a run
    outside a git checkout)."""
    code = run.get("code") or {}
    if not code.get("commit"):
        return "unknown"
    dirty = code.get("dirty")
    return code["commit"][:7] + ("+changes" if dirty else "" if dirty is False else " (changes unknown)")


def code_note(run: dict) -> str:
    """``code_text``, saying why a commit is unknown."""
    if not run.get("code"):
        return "unknown (recorded before commits were logged)"
    return code_text(run) if run["code"].get("commit") else "unknown (not run from a git checkout)"


DEVICE_CLASSES = {"cpu": "CPU", "mps": "Apple GPU", "metal": "Apple GPU", "cuda": "NVIDIA GPU"}


def device_class(hardware: dict) -> str:
    """The kind of device a run computed on, named alike in both frameworks: torch's "mps"
    and MLX's "metal" are the Apple GPU, "cuda" (torch, or MLX's CUDA build) an NVIDIA GPU,
    "cpu" the CPU; any other accelerator as recorded."""
    return DEVICE_CLASSES.get(hardware["accelerator"], hardware["accelerator"])


def machine_and_device(run: dict) -> str:
    """What two runs must share to be compared across frameworks: the device class and the
    machine (CPU model, cores, architecture, operating system). The GPU's name is left out:
    torch records it, MLX does not."""
    h = run["hardware"]
    machine = h.get("machine", "architecture unknown")
    return f"{device_class(h)}, {h['cpu']} ({h['cpu_count']} cores, {machine}), {h['os']}"


def hardware_short(run: dict) -> str:
    """The GPU's name, else CPU (cores) and accelerator."""
    h = run["hardware"]
    return h.get("gpu") or f"{h['cpu']} ({h['cpu_count']} cores), {h['accelerator']}"


def length_text(run: dict) -> str:
    """How long it trained: epochs and optimizer steps, or "test only" for --test-only runs."""
    if not run["epochs"]:
        return "test only"
    return f"{run['epochs']} ({run['hyperparameters']['total_steps']} steps)"


def has_split_times(run: dict) -> bool:
    """Whether run.json logs its spans apart: ``train_time_s`` (optimizer steps and the
    per-epoch checkpoint writes), ``validation_time_s`` and ``test_time_s`` (seconds).
    Older logs have ``train_time_s`` only, over other spans (see ``results.OLD_TIME_NOTE``)."""
    return run.get("validation_time_s") is not None and run.get("test_time_s") is not None


def train_images_per_s(run: dict) -> float | None:
    """Training images per second of training time: total_steps x effective batch size
    (``processes.effective_batch_size``, else ``batch_size``) / ``train_time_s``. None for
    an evaluation (no steps), a zero time, or a log without split times (its train time
    also spans validation, and in PyTorch the test pass)."""
    hp = run["hyperparameters"]
    if not has_split_times(run) or not hp.get("total_steps") or not run.get("train_time_s"):
        return None
    batch = (run.get("processes") or {}).get("effective_batch_size") or hp["batch_size"]
    return hp["total_steps"] * batch / run["train_time_s"]
