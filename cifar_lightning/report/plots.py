"""Results.md's figures across runs: the curves of every run of a PyTorch-vs-MLX comparison
on one figure (matplotlib, imported on first use)."""

from __future__ import annotations

from pathlib import Path

from cifar_lightning.core.run.files import read_metrics_csv
from cifar_lightning.core.run.folder import RunPaths
from cifar_lightning.core.run.plots import finish_figure, say_no_validation, val_label


def plot_pytorch_vs_mlx(groups: dict[str, list[dict]], path: str | Path, title: str) -> None:
    """Training loss per step and validation accuracy per epoch of every run of one
    PyTorch-vs-MLX comparison on one figure, one colour per framework."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    colours = {"pytorch": "tab:red", "mlx": "tab:blue"}
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    any_acc = False
    for fw, rs in groups.items():
        for i, r in enumerate(rs):
            rows = read_metrics_csv(RunPaths(r["_path"]).metrics_csv)
            label = f"{fw}" if i == 0 else None
            loss = [(int(x["step"]), float(x["train/loss_step"])) for x in rows if x.get("train/loss_step")]
            acc = [(int(x["step"]) + 1, float(x["val/acc"])) for x in rows if x.get("val/acc")]
            if loss:
                a.plot(
                    *zip(*loss),
                    color=colours[fw],
                    alpha=0.6,
                    linewidth=1,
                    label=label,
                    marker="o" if len(loss) < 30 else None,
                    markersize=4,
                )  # few points: show each
            if acc:
                any_acc = True
                b.plot(*zip(*acc), color=colours[fw], alpha=0.8, marker="o", label=label)
    if not any_acc:
        say_no_validation(b)
    a.set(xlabel="optimizer step (0-based)", ylabel="training loss (per image)")
    b.set(
        xlabel="optimizer steps done",
        ylabel=val_label(next(iter(groups.values()))[0]["hyperparameters"].get("val_size")),
    )
    for ax in (a, b):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    finish_figure(fig, (a, b), title, path)
