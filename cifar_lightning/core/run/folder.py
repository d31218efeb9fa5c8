"""A run's folder and its book-keeping, the same for both frameworks (standard library only).

Each run, evaluations included, writes into a folder of its own; a folder that holds
a run is never written into again unless the user says so (``--overwrite``) or
continues that very run (``--resume``, which checks that every setting that shapes
the run matches the checkpoint's). A resumed run keeps the rows of ``metrics.csv``
(on disk from its start, so a run cut again loses none) and the training time of its
earlier segments.
"""

from __future__ import annotations

import csv
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

from cifar_lightning.core.errors import ExitCode, UsageError
from cifar_lightning.core.spec import SMALL_CNN

# the files a run writes into its folder, named once for both frameworks
RUN_JSON, METRICS_CSV, CHECKPOINTS = "run.json", "metrics.csv", "checkpoints"
HPARAMS_YAML, CURVES_PNG, CONFUSION_PNG = "hparams.yaml", "curves.png", "confusion.png"
RUN_FILES = (RUN_JSON, METRICS_CSV, CHECKPOINTS)  # what makes a folder a run's
RUN_OUTPUTS = (*RUN_FILES, HPARAMS_YAML, CURVES_PNG, CONFUSION_PNG)  # everything a run writes there


class RunPaths:
    """The paths inside a run folder: run.json, metrics.csv, checkpoints/ (initial, last and
    final weights), hparams.yaml (Lightning's), curves.png, confusion.png."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.run_json = self.folder / RUN_JSON
        self.metrics_csv = self.folder / METRICS_CSV
        self.checkpoints = self.folder / CHECKPOINTS
        self.curves = self.folder / CURVES_PNG
        self.confusion = self.folder / CONFUSION_PNG

    def checkpoint(self, name: str, suffix: str) -> Path:
        """checkpoints/<name><suffix>: "initial", "last" or "final", ".pt", ".ckpt" or ".npz"."""
        return self.checkpoints / f"{name}{suffix}"


def default_run_folder(framework: str, config) -> Path:
    """runs/<framework>-<model>-<dataset>[-test]-<date>-<time>, made unique with -2, -3, ..."""
    kind = "-test" if config.test_only else ""
    base = Path("runs") / f"{framework}-{config.model}-{config.dataset}{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder


def resume_folder(checkpoint: str | Path) -> Path:
    """The run folder a checkpoint belongs to (<run>/checkpoints/<file>)."""
    return Path(checkpoint).resolve().parent.parent


def _finished(folder: Path) -> bool:
    try:
        return json.loads((folder / "run.json").read_text()).get("status") == "finished"
    except (OSError, ValueError):
        return False


def choose_run_folder(framework: str, config) -> Path:
    """The folder this run will write into (not yet created: see ``claim_run_folder``);
    raises UsageError rather than touch another run."""
    if config.resume:
        folder = resume_folder(config.resume)
        if config.output_dir and Path(config.output_dir).resolve() != folder:
            raise UsageError(f"--resume continues the run in {folder}; drop --output-dir {config.output_dir}")
        if _finished(folder):
            raise UsageError(
                f"--resume {config.resume}: the run in {folder} has finished (its run.json says so); "
                "evaluate it with --test-only --weights, or start a new run"
            )
        return folder
    if config.output_dir is None:
        folder = default_run_folder(framework, config)
    else:
        folder = Path(config.output_dir)
        held = [name for name in RUN_FILES if (folder / name).exists()]
        if held and not config.overwrite:
            last = sorted(folder.glob("checkpoints/last.*"))
            if "run.json" in held:
                what = "a finished run"
            elif last:
                what = f"an unfinished run (resume it with --resume {last[0]})"
            else:
                what = "a run that stopped before its first checkpoint (nothing to resume)"
            raise UsageError(
                f"--output-dir {folder} already holds {what}: choose a new folder, or add --overwrite to replace it"
            )
    return folder


def claim_run_folder(folder: Path, framework: str, config) -> Path:
    """Create the run folder once every check has passed (so refused runs leave nothing);
    with --overwrite, remove the run it held. A default folder taken meanwhile (by a run
    that waited for the same lock) is replaced by a fresh name."""
    if config.resume:
        return folder
    if config.output_dir is None:
        if folder.exists():
            folder = default_run_folder(framework, config)
    else:
        remove_files(folder, RUN_FILES)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def remove_files(folder: Path, names) -> None:
    """Remove the files and folders `names` from `folder`, where they exist."""
    for name in names:
        target = folder / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


# ------------------------------------------------------------------ resume
FLAG_NAMES = {
    "limit_train_batches": "--limit-train-batches",
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "momentum": "--momentum",
    "weight_decay": "--weight-decay",
    "seed": "--seed",
    "model": "--model",
    "dataset": "--dataset",
    "train_subset": "--train-subset",
    "val_size": "--val-size",
    "dropout": "--dropout",
    "optimizer": "--optimizer",
    "precision": "--precision",
}


def run_settings(config, recipe: dict, world_size: int = 1, precision: str = "32-true") -> dict:
    """Every setting that shapes training (not evaluation): what a resumed run must share,
    the number of processes (each takes its share of every step) and the precision (the
    backend's, as it trains: a run on MLX's CPU records 16-mixed as bf16-mixed) included. As plain JSON
    values (tuples as lists), the form they take in either framework's checkpoint, so the
    settings of a run compare equal to themselves read back from its file."""
    shaping = {k: v for k, v in recipe.items() if k != "tta"}
    settings = {
        "model": config.model,
        "dataset": config.dataset,
        "train_subset": config.train_subset,
        "world_size": world_size,
        "val_size": config.val_size,
        "dropout": config.dropout,
        "optimizer": config.optimizer or "sgd",
        "limit_train_batches": config.limit_train_batches,
        "precision": precision,
        **shaping,
    }
    return json.loads(json.dumps(settings))


def check_resume_settings(saved: dict, now: dict, checkpoint: str | Path) -> None:
    """Raise UsageError naming every setting whose value differs from the checkpoint's run
    (another --optimizer alone when that differs: the recipe's numbers follow from it; an
    optimiser part by its index, kind and the fields that differ)."""
    saved, now = _effective(saved), _effective(now)
    differ = [k for k in now if k in saved and saved[k] != now[k]]
    if "optimizer" in differ:
        differ = ["optimizer"]
    if differ:
        listed = ", ".join(_setting_change(k, saved[k], now[k]) for k in differ)
        raise UsageError(f"--resume {checkpoint} was trained with other settings: {listed}; resume with the run's own")


def _effective(settings: dict) -> dict:
    """`settings` with a default left unset given its value: SmallCNN's dropout (None: the
    spec's), so a run started without --dropout resumes with --dropout at the default."""
    if settings.get("model") == "small_cnn" and settings.get("dropout", 0) is None:
        return {**settings, "dropout": SMALL_CNN["dropout"]}
    return settings


def _shown(value) -> str:
    return "not given" if value is None else str(value)


def _setting_change(key: str, there, here) -> str:
    if key == "optimizers" and isinstance(there, list) and isinstance(here, list) and len(there) == len(here):
        return ", ".join(
            f"optimizer part {i} ({a.get('kind')}) {field} {a.get(field)} there, {b.get(field)} here"
            for i, (a, b) in enumerate(zip(there, here))
            for field in dict.fromkeys([*a, *b])
            if a.get(field) != b.get(field)
        )
    if key == "world_size":
        return (
            f"{there} process{'es' if there != 1 else ''} there, {here} here (fit.py: --devices x --num-nodes; "
            "fit_mlx.py: mlx.launch -n)"
        )
    return f"{FLAG_NAMES.get(key, key)} {_shown(there)} there, {_shown(here)} here"


def script_path(name: str) -> str:
    """How the user called the script `name` (so a printed command runs from their folder);
    scripts/<name> when it was called from Python (the tests)."""
    called = sys.argv[0] if sys.argv else ""
    return called if Path(called).name == name else f"scripts/{name}"


def resume_command(script: str, argv: list[str], checkpoint: str | Path, launcher: str = "python") -> str:
    """The command that continues this run from `checkpoint` (earlier --resume and
    --output-dir dropped: the run continues in the checkpoint's folder), started by
    `launcher` (``runs.launcher``: python, or mlx.launch for several MLX processes)."""
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--resume", "--output-dir"):
            skip = True
            continue
        if a.startswith(("--resume=", "--output-dir=")) or a == "--overwrite":
            continue
        kept.append(a)
    return shlex.join([*launcher.split(), script_path(script), *kept, "--resume", str(checkpoint)])


# ------------------------------------------------------------------ Ctrl-C


def interrupted(folder: Path, config, last_checkpoint, resume: str) -> None:
    """After Ctrl-C: print `resume`, the command that resumes from `last_checkpoint` (a
    training run's); with nothing to resume (an evaluation, or no checkpoint yet), remove
    what the run wrote into its folder unless it continues an earlier run (--resume), so no
    half-made run is left behind. Then exit with status 130, in both frameworks."""
    if not config.test_only and last_checkpoint and Path(last_checkpoint).is_file():
        print(f"\ninterrupted; resume with:\n  {resume}", file=sys.stderr, flush=True)
    else:
        if not config.resume:
            discard_run_outputs(folder)
        print("\ninterrupted before the first checkpoint: nothing to resume, nothing kept", file=sys.stderr, flush=True)
    raise SystemExit(ExitCode.INTERRUPTED)


def discard_run_outputs(folder: Path) -> None:
    """Remove what a run writes into `folder` (``RUN_OUTPUTS``), and the folder once empty;
    anything else a user keeps there stays."""
    remove_files(folder, RUN_OUTPUTS)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


# ----------------------------------------------------------------- history
def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def keep_history(path: Path, earlier: list[dict], before_step: int) -> list[str]:
    """Put back in front of metrics.csv the rows an earlier segment logged for steps before
    `before_step` (those the checkpoint covers; later ones are trained again). Returns the
    file's columns as written (none when there was nothing to put back)."""
    earlier = [r for r in earlier if r.get("step") not in (None, "") and int(r["step"]) < before_step]
    if not earlier:
        return []
    rows = earlier + read_rows(path)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
    return keys
