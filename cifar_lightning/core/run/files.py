"""The files a run writes about itself, as both frameworks write them: run.json's fields
(``RUN_SCHEMA_KEYS``, per-class accuracy, the final training loss, the flags that limited
the run), written atomically, and metrics.csv read back. What it ran on: ``provenance``;
its plots: ``plots``; Results.md from the logs: ``cifar_lightning.report``.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

RUN_SCHEMA_KEYS = (
    "framework",
    "versions",
    "hardware",
    "dataset",
    "model",
    "parameters",
    "hyperparameters",
    "seed",
    "epochs",
    "train_time_s",
    "validation_time_s",
    "test_time_s",
    "test_accuracy",
    "per_class_accuracy",
    "final_train_loss",
    "checkpoint",
)


def write_json_atomic(path: str | Path, data: dict) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def per_class_dict(values, class_names: list[str]) -> dict[str, float]:
    return {name: round(float(v), 6) for name, v in zip(class_names, values)}


def read_metrics_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def final_train_loss(metrics_csv: str | Path) -> float | None:
    rows = [r for r in read_metrics_csv(metrics_csv) if r.get("train/loss_epoch")]
    return float(rows[-1]["train/loss_epoch"]) if rows else None


def limits_text(hyperparameters: dict) -> str:
    """The flags that made a run smaller than its recipe ("" for none): a training subset,
    or batch limits (then the test accuracy is that of part of the test set). Skipping
    validation (--limit-val-batches 0) is none: training and the test are whole."""
    hp = hyperparameters
    parts = [f"--train-subset {hp['train_subset']}" if hp.get("train_subset") else ""]
    limits = {kind: hp.get(f"limit_{kind}_batches") for kind in ("train", "val", "test")}
    parts += [
        f"--limit-{kind}-batches {n}" for kind, n in limits.items() if n is not None and not (kind == "val" and n == 0)
    ]
    return ", ".join(p for p in parts if p)
