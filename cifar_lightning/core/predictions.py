"""Class probabilities as a user reads them: top-k, the predictions CSV, the printed summary.

numpy and the standard library only: both frameworks' prediction writers call
``write_predictions_csv`` with their probabilities as numpy arrays.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np


def top_k(probabilities: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(classes int64 (N, k), probabilities float (N, k)) of the `k` most probable classes per
    row of `probabilities` (N, C), most probable first; ties keep the lower class first (a
    stable sort), as ``argmax`` does for k = 1. Raises ValueError unless 1 <= k <= C."""
    n_classes = probabilities.shape[1]
    if not 1 <= k <= n_classes:
        raise ValueError(f"k must lie in [1, {n_classes}], got {k}")
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(probabilities, order, axis=1)


def csv_header(k: int) -> list[str]:
    """``input``, then ``class_1``, ``prob_1``, ..., ``class_k``, ``prob_k``."""
    return ["input"] + [f"{c}_{i}" for i in range(1, k + 1) for c in ("class", "prob")]


def write_predictions_csv(
    path: str | Path, names: list[str], probabilities: np.ndarray, class_names: list[str], k: int = 1
) -> Path:
    """Write one row per input: its name, then its `k` most probable class names with their
    probabilities (6 decimals, in [0, 1]). Written atomically (a temporary file in the same
    folder, then renamed): a reader never sees half a file, and an interrupted run leaves
    the previous file, if any, as it was."""
    path = Path(path)
    classes, probs = top_k(probabilities, k)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(csv_header(k))
            for name, row_classes, row_probs in zip(names, classes, probs):
                cells = [name]
                for c, p in zip(row_classes, row_probs):
                    cells += [class_names[c], f"{p:.6f}"]
                writer.writerow(cells)
        os.replace(tmp, path)
    except BaseException:  # Ctrl-C included: no temporary file is left behind
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_predictions_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a predictions CSV as dicts (for tests and users' scripts)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def summary(
    names: list[str],
    probabilities: np.ndarray,
    class_names: list[str],
    labels: np.ndarray | None = None,
    shown: int = 10,
) -> list[str]:
    """The lines ``predict.py`` prints: the first `shown` predictions, the count per predicted
    class, and the accuracy over the inputs whose label is known (labels >= 0)."""
    predicted = probabilities.argmax(axis=1)
    lines = []
    for name, c, p in list(zip(names, predicted, probabilities.max(axis=1)))[:shown]:
        lines.append(f"  {name}: {class_names[c]} ({100 * p:.1f}%)")
    if len(names) > shown:
        lines.append(f"  ... and {len(names) - shown} more")
    counts = Counter(class_names[c] for c in predicted)
    lines.append("predicted classes: " + ", ".join(f"{name} {n}" for name, n in counts.most_common()))
    if labels is not None and (labels >= 0).any():
        known = labels >= 0
        accuracy = float((predicted[known] == labels[known]).mean())
        lines.append(f"top-1 accuracy {100 * accuracy:.2f}% on the {int(known.sum())} inputs with a label")
    return lines
