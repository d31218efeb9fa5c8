"""Run logs (run.json), plots, and Results.md generated from committed logs.

Shared by both frameworks: the MLX trainer writes the same run.json schema.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

RUN_SCHEMA_KEYS = (
    "framework", "versions", "hardware", "dataset", "model", "parameters", "hyperparameters", "seed",
    "epochs", "train_time_s", "test_accuracy", "per_class_accuracy", "final_train_loss", "checkpoint",
)  # fmt: skip


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


def hardware_info(accelerator: str) -> dict:
    """What the run ran on; `accelerator` is the one actually used (cpu, mps, cuda, metal)."""
    info = {
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "accelerator": accelerator,
    }
    if accelerator == "cuda":
        import torch

        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def package_versions(*names: str) -> dict:
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def write_json_atomic(path: str | Path, data: dict) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def per_class_dict(values, class_names: list[str]) -> dict[str, float]:
    return {name: round(float(v), 6) for name, v in zip(class_names, values)}


def plot_confusion(matrix: np.ndarray, class_names: list[str], path: str | Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(class_names)
    fig, ax = plt.subplots(figsize=(max(6, n * 0.5), max(5, n * 0.45)))
    im = ax.imshow(matrix, cmap="Blues")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 20:
        ax.set_xticks(range(n), class_names, rotation=45, ha="right")
        ax.set_yticks(range(n), class_names)
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def read_metrics_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def plot_curves(metrics_csv: str | Path, path: str | Path, title: str) -> None:
    """Training loss per step and validation accuracy per epoch from a metrics.csv."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics_csv(metrics_csv)
    series = lambda key: [(float(r["step"]), float(r[key])) for r in rows if r.get(key)]  # noqa: E731
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax in (("train/loss_step", a), ("train/loss", a), ("val/acc", b)):
        pts = series(key)
        if pts:
            ax.plot(*zip(*pts), label=key, marker="o" if key == "val/acc" else None, markersize=3)
    a.set_xlabel("step")
    a.set_ylabel("loss")
    b.set_xlabel("step")
    b.set_ylabel("accuracy")
    _finish_figure(fig, (a, b), title, path)


def _finish_figure(fig, axes, title: str, path: str | Path) -> None:
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


def final_train_loss(metrics_csv: str | Path) -> float | None:
    rows = [r for r in read_metrics_csv(metrics_csv) if r.get("train/loss_epoch")]
    return float(rows[-1]["train/loss_epoch"]) if rows else None


# ------------------------------------------------------------------ Results.md


def load_runs(root: str | Path) -> list[dict]:
    runs = []
    for path in sorted(Path(root).rglob("run.json")):
        run = json.loads(path.read_text())
        if run.get("status") == "failed":  # a diverged run is evidence of nothing but its failure
            continue
        run["_path"] = path.parent.as_posix()
        runs.append(run)
    return runs


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _hardware(run: dict) -> str:
    h = run["hardware"]
    device = f"{h['accelerator']} ({h['gpu']})" if h.get("gpu") else h["accelerator"]
    return f"{h['cpu']} ({h['cpu_count']} cores), {h['os']}, {device}"


def _length(run: dict) -> str:
    """How long it trained: epochs and optimizer steps, or "test only" for --test-only runs."""
    if not run["epochs"]:
        return "test only"
    return f"{run['epochs']} ({run['hyperparameters']['total_steps']} steps)"


def _run_row(run: dict) -> str:
    extra = run.get("test_accuracy_no_tta")
    return (
        f"| `{run['_path']}` | {run['framework']} | {run['model']} | {run['dataset']} | {_length(run)} "
        f"| {_pct(run['test_accuracy'])} | {_pct(extra) if extra is not None else '-'} "
        f"| {run['train_time_s']:.0f} s | {_hardware(run)} |"
    )


def render_results(runs: list[dict], extra_sections: list[str] = ()) -> str:
    lines = [
        "# Results",
        "",
        "Generated by `python scripts/report.py` from the `run.json` logs committed under `runs/`;",
        "do not edit by hand. Every figure below was measured on the hardware its row names.",
        "",
        "## All runs",
        "",
        "| run | framework | model | dataset | epochs (steps) | test acc | test acc, no TTA | train time | hardware |",
        "|---|---|---|---|---|---|---|---|---|",
        *[_run_row(r) for r in runs],
        "",
    ]
    lines += _group_summary(runs)
    lines += pytorch_vs_mlx_section(runs)
    if len(runs) > 1:
        lines += _side_by_side(runs)
    for run in runs:
        lines += [f"## `{run['_path']}`", "", f"- seed {run['seed']}, {run['parameters']:,} parameters"]
        if run.get("note"):
            lines.append(f"- {run['note']}")
        lines += ["", "| class | accuracy |", "|---|---|"]
        lines += [f"| {k} | {_pct(v)} |" for k, v in run["per_class_accuracy"].items()]
        lines.append("")
    lines += list(extra_sections)
    return "\n".join(lines).rstrip() + "\n"


def _hardware_short(run: dict) -> str:
    h = run["hardware"]
    return h.get("gpu") or f"{h['cpu']} ({h['cpu_count']} cores), {h['accelerator']}"


def _configuration(run: dict) -> tuple:
    """What makes runs repeats of each other (only the seed may differ)."""
    return (run["framework"], run["model"], run["dataset"], _length(run), _hardware_short(run),
            run["hyperparameters"].get("train_subset"))  # fmt: skip


def _group_summary(runs: list[dict]) -> list[str]:
    """Mean test accuracy of repeated runs of one configuration (seeds differ)."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault(_configuration(r), []).append(r)
    repeated = {k: g for k, g in groups.items() if len(g) > 1}
    if not repeated:
        return []
    lines = ["## Repeated runs (different seeds)", "",
             "| framework | model | dataset | epochs (steps) | hardware | runs | mean test acc | min | max | mean, no TTA |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (framework, model, dataset, epochs, hw, _), g in repeated.items():
        accs = [r["test_accuracy"] for r in g]
        plain = [r["test_accuracy_no_tta"] for r in g if r.get("test_accuracy_no_tta") is not None]
        lines.append(f"| {framework} | {model} | {dataset} | {epochs} | {hw} | {len(g)} | {_pct(sum(accs) / len(accs))} "
                     f"| {_pct(min(accs))} | {_pct(max(accs))} | {_pct(sum(plain) / len(plain)) if plain else '-'} |")  # fmt: skip
    return lines + [""]


def _side_by_side(runs: list[dict]) -> list[str]:
    """Per-class accuracy of each configuration (mean over its seeds), one column each."""
    by_dataset: dict[str, dict[tuple, list[dict]]] = {}
    for r in runs:
        by_dataset.setdefault(r["dataset"], {}).setdefault(_configuration(r), []).append(r)
    lines = []
    for dataset, groups in by_dataset.items():
        if len(groups) < 2:
            continue
        classes = list(next(iter(groups.values()))[0]["per_class_accuracy"])
        header = [f"{fw} {model}, {ep}, {hw}" + (f", {len(g)} runs" if len(g) > 1 else "")
                  for (fw, model, _, ep, hw, _), g in groups.items()]  # fmt: skip
        lines += [f"## Side by side: {dataset}", "", "| class | " + " | ".join(header) + " |",
                  "|---|" + "---|" * len(groups)]  # fmt: skip
        for c in ["overall", *classes]:
            cells = []
            for g in groups.values():
                vals = [r["test_accuracy"] if c == "overall" else r["per_class_accuracy"][c] for r in g]
                cells.append(_pct(sum(vals) / len(vals)))
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


# ------------------------------------------------------------ PyTorch vs MLX
FRAMEWORK_ONLY_KEYS = ("seed", "precision", "channels_last", "device", "limit_train_batches")


def comparison_key(run: dict) -> tuple:
    """Runs with equal keys are the same experiment up to framework and seed: same model,
    data, length, hardware and every hyper-parameter except the framework-specific ones."""
    hp = {k: v for k, v in run["hyperparameters"].items() if k not in FRAMEWORK_ONLY_KEYS}
    return (run["model"], run["dataset"], _length(run), _hardware_short(run), json.dumps(hp, sort_keys=True))


def train_images_per_s(run: dict) -> float:
    """Training images per second of wall time: steps x batch size / train_time_s (which
    includes each epoch's validation pass, in both frameworks alike)."""
    hp = run["hyperparameters"]
    return hp["total_steps"] * hp["batch_size"] / run["train_time_s"]


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for a single value)."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def pytorch_vs_mlx_groups(runs: list[dict]) -> dict[tuple, dict[str, list[dict]]]:
    """Training runs (not evaluations) grouped by ``comparison_key``, kept where both frameworks ran."""
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for r in runs:
        if r["epochs"]:
            groups.setdefault(comparison_key(r), {}).setdefault(r["framework"], []).append(r)
    return {k: g for k, g in groups.items() if {"pytorch", "mlx"} <= set(g)}


def gap_verdict(a: list[float], b: list[float]) -> str:
    """Whether mean(b) - mean(a) lies within two standard errors of the difference."""
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    if len(a) < 2 or len(b) < 2:
        return f"{100 * (mb - ma):+.2f} points; one run per framework cannot tell seed noise from a gap"
    se = (sa**2 / len(a) + sb**2 / len(b)) ** 0.5
    inside = abs(mb - ma) <= 2 * se
    return (f"{100 * (mb - ma):+.2f} points, two standard errors {100 * 2 * se:.2f}: "
            + ("within seed noise" if inside else "larger than seed noise"))  # fmt: skip


def comparison_plot_path(group: dict[str, list[dict]]) -> Path:
    """Where a comparison's curves go: beside its runs, in their common folder."""
    folders = [r["_path"] for rs in group.values() for r in rs]
    return Path(os.path.commonpath(folders)) / "pytorch-vs-mlx.png"


def pytorch_vs_mlx_section(runs: list[dict]) -> list[str]:
    lines = []
    for (model, dataset, length, hardware, _), g in pytorch_vs_mlx_groups(runs).items():
        lines += [f"## PyTorch vs MLX: {model}, {dataset}, {length}, {hardware}", "",
                  "| framework | runs | seeds | test acc, mean ± std | min | max | train time, mean | train images/s | "
                  "hardware | runs in |",
                  "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for fw in ("pytorch", "mlx"):
            rs = g[fw]
            m, sd = mean_std([r["test_accuracy"] for r in rs])
            accs = [r["test_accuracy"] for r in rs]
            folders = sorted({Path(r["_path"]).parent.as_posix() for r in rs})
            lines.append(
                f"| {fw} | {len(rs)} | {', '.join(str(r['seed']) for r in rs)} | {_pct(m)} ± {100 * sd:.2f} "
                f"| {_pct(min(accs))} | {_pct(max(accs))} | {mean_std([r['train_time_s'] for r in rs])[0]:.0f} s "
                f"| {mean_std([train_images_per_s(r) for r in rs])[0]:.0f} | {_hardware(rs[0])} "
                f"| {', '.join(f'`{f}`' for f in folders)} |"
            )  # fmt: skip
        accs = {fw: [r["test_accuracy"] for r in g[fw]] for fw in ("pytorch", "mlx")}
        lines += ["", f"MLX minus PyTorch: {gap_verdict(accs['pytorch'], accs['mlx'])}. "
                  f"Curves of every run: `{comparison_plot_path(g).as_posix()}`.", "",
                  "| class | PyTorch, mean | MLX, mean | MLX - PyTorch |", "|---|---|---|---|"]  # fmt: skip
        for c in g["pytorch"][0]["per_class_accuracy"]:
            pt = mean_std([r["per_class_accuracy"][c] for r in g["pytorch"]])[0]
            ml = mean_std([r["per_class_accuracy"][c] for r in g["mlx"]])[0]
            lines.append(f"| {c} | {_pct(pt)} | {_pct(ml)} | {100 * (ml - pt):+.2f} |")
        lines.append("")
    return lines


def plot_pytorch_vs_mlx(groups: dict[str, list[dict]], path: str | Path, title: str) -> None:
    """Training loss per step and validation accuracy per epoch of every run of one
    PyTorch-vs-MLX comparison on one figure, one colour per framework."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"pytorch": "tab:red", "mlx": "tab:blue"}
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for fw, rs in groups.items():
        for i, r in enumerate(rs):
            rows = read_metrics_csv(Path(r["_path"]) / "metrics.csv")
            label = f"{fw}" if i == 0 else None
            loss = [(int(x["step"]), float(x["train/loss_step"])) for x in rows if x.get("train/loss_step")]
            acc = [(int(x["step"]) + 1, float(x["val/acc"])) for x in rows if x.get("val/acc")]
            if loss:
                a.plot(*zip(*loss), color=colours[fw], alpha=0.6, linewidth=1, label=label,
                       marker="o" if len(loss) < 30 else None, markersize=4)  # few points: show each
            if acc:
                b.plot(*zip(*acc), color=colours[fw], alpha=0.8, marker="o", label=label)
    a.set(xlabel="optimizer step", ylabel="training loss (per image)")
    b.set(xlabel="optimizer steps done", ylabel="val/acc (the test set when --val-size is 0)")
    _finish_figure(fig, (a, b), title, path)
