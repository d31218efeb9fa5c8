"""A run's figures: its confusion matrix (or, above 20 classes, its per-class accuracy and
most confused pairs) and training curves. matplotlib is imported inside each function, on
first use. Figures across runs (Results.md's): ``cifar_lightning.report.plots``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cifar_lightning.core.run.files import read_metrics_csv

MATRIX_MAX_CLASSES = 20  # above this a matrix's cells and labels cannot be read at any page size


def most_confused_pairs(matrix: np.ndarray, class_names: list[str], k: int = 20) -> list[tuple[str, str, int]]:
    """The `k` largest off-diagonal counts as (true class, predicted class, count), largest first."""
    off = np.array(matrix, dtype=np.int64, copy=True)
    np.fill_diagonal(off, -1)
    order = np.argsort(-off, axis=None, kind="stable")[:k]
    pairs = [(class_names[i], class_names[j], int(off[i, j])) for i, j in zip(*np.unravel_index(order, off.shape))]
    return [p for p in pairs if p[2] > 0]


def plot_confusion(matrix: np.ndarray, class_names: list[str], path: str | Path, title: str) -> None:
    """Up to 20 classes: the confusion matrix (rows true, columns predicted) with counts.
    More (CIFAR-100): per-class accuracy sorted, and the 20 most confused pairs named."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix)
    n = len(class_names)
    if n <= MATRIX_MAX_CLASSES:
        fig, ax = plt.subplots(figsize=(max(6, n * 0.6), max(5, n * 0.5)))
        im = ax.imshow(matrix, cmap="Blues")
        ax.set(xlabel="predicted", ylabel="true", title=title)
        ax.set_xticks(range(n), class_names, rotation=45, ha="right")
        ax.set_yticks(range(n), class_names)
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    int(matrix[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if matrix[i, j] > matrix.max() / 2 else "black",
                )
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return
    totals = matrix.sum(axis=1)
    accuracy = np.divide(np.diag(matrix), totals, out=np.zeros(n), where=totals > 0)
    order = np.argsort(accuracy, kind="stable")
    pairs = most_confused_pairs(matrix, class_names)
    fig, (a, b) = plt.subplots(1, 2, figsize=(14, max(8, n * 0.16)), gridspec_kw={"width_ratios": [1, 1.2]})
    a.barh(range(n), 100 * accuracy[order], color="tab:blue")
    a.set_yticks(range(n), [class_names[i] for i in order], fontsize=7)
    a.set(xlabel="test accuracy (%)", title="per class, worst at the bottom", ylim=(-0.7, n - 0.3), xlim=(0, 100))
    a.grid(axis="x", alpha=0.3)
    b.barh(range(len(pairs)), [c for _, _, c in pairs][::-1] if pairs else [], color="tab:red")
    b.set_yticks(range(len(pairs)), [f"{t} -> {p}" for t, p, _ in pairs][::-1], fontsize=9)
    b.set(xlabel="test images (true -> predicted)", title=f"the {len(pairs)} most confused pairs")
    b.grid(axis="x", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


FEW_POINTS = 30  # below this, curves draw a marker at every logged point


def val_label(val_size: int | None) -> str:
    """What "val/acc" measured: the test set when no validation split was held out."""
    return "val/acc (the test set: --val-size 0)" if not val_size else f"val/acc ({val_size} held-out images)"


def plot_curves(metrics_csv: str | Path, path: str | Path, title: str, val_size: int | None = 0) -> None:
    """Training loss per logged step and validation accuracy per epoch from a metrics.csv;
    a marker at each point when there are few, integer step ticks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = read_metrics_csv(metrics_csv)
    series = lambda key, shift=0: [(int(r["step"]) + shift, float(r[key])) for r in rows if r.get(key)]  # noqa: E731
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    curves = (
        (a, "train/loss_step", "training loss, per step", 0),
        (a, "train/loss_epoch", "training loss, epoch mean", 0),
        (b, "val/acc", val_label(val_size), 1),
    )
    for ax, key, label, shift in curves:
        pts = series(key, shift)
        if pts:
            few = len(pts) < FEW_POINTS or key != "train/loss_step"
            ax.plot(*zip(*pts), label=label, marker="o" if few else None, markersize=4)
    if not series("val/acc"):
        say_no_validation(b)
    a.set(xlabel="optimizer step (0-based)", ylabel="loss (per image)")
    b.set(xlabel="optimizer steps done", ylabel="accuracy")
    for ax in (a, b):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    finish_figure(fig, (a, b), title, path)


def say_no_validation(ax) -> None:
    """Say in the validation panel why it is empty (runs with --limit-val-batches 0)."""
    ax.text(0.5, 0.5, "no validation rows (validation was skipped)", transform=ax.transAxes, ha="center")


def finish_figure(fig, axes, title: str, path: str | Path) -> None:
    """Legends, grid and title; save at 100 dpi and close."""
    import matplotlib.pyplot as plt

    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
