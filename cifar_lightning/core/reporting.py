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


def hardware_info(accelerator: str, gpu: str | None = None) -> dict:
    """What the run ran on; `accelerator` is the one actually used (cpu, mps, cuda, metal),
    `gpu` the GPU's name where the framework reports one."""
    info = {
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "accelerator": accelerator,
    }
    if gpu:
        info["gpu"] = gpu
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
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if matrix[i, j] > matrix.max() / 2 else "black")  # fmt: skip
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


def read_metrics_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


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
    curves = ((a, "train/loss_step", "training loss, per step", 0),
              (a, "train/loss_epoch", "training loss, epoch mean", 0),
              (b, "val/acc", val_label(val_size), 1))  # fmt: skip
    for ax, key, label, shift in curves:
        pts = series(key, shift)
        if pts:
            few = len(pts) < FEW_POINTS or key != "train/loss_step"
            ax.plot(*zip(*pts), label=label, marker="o" if few else None, markersize=4)
    if not series("val/acc"):
        b.text(0.5, 0.5, "no validation rows (validation was skipped)", transform=b.transAxes, ha="center")
    a.set(xlabel="optimizer step (0-based)", ylabel="loss (per image)")
    b.set(xlabel="optimizer steps done", ylabel="accuracy")
    for ax in (a, b):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
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


def load_runs(root: str | Path, only: set[Path] | None = None) -> list[dict]:
    """Every finished run's run.json under `root` (those in `only`, when given), each with
    its folder as ``_path``; failed runs are skipped."""
    runs = []
    for path in sorted(Path(root).rglob("run.json")):
        if only is not None and path.resolve() not in only:
            continue
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


def limits_text(hyperparameters: dict) -> str:
    """The flags that made a run smaller than its recipe ("" for none): a training subset,
    or batch limits (then the test accuracy is that of part of the test set)."""
    hp = hyperparameters
    parts = [f"--train-subset {hp['train_subset']}" if hp.get("train_subset") else ""]
    parts += [f"--limit-{kind}-batches {hp[f'limit_{kind}_batches']}" for kind in ("train", "val", "test")
              if hp.get(f"limit_{kind}_batches") is not None]  # fmt: skip
    return ", ".join(p for p in parts if p)


def _run_row(run: dict) -> str:
    extra = run.get("test_accuracy_no_tta")
    return (
        f"| `{run['_path']}` | {run['framework']} | {run['model']} | {run['dataset']} | {_length(run)} "
        f"| {_pct(run['test_accuracy'])} | {_pct(extra) if extra is not None else '-'} "
        f"| {run['train_time_s']:.0f} s | {limits_text(run['hyperparameters']) or '-'} | {_hardware(run)} |"
    )


def full_length_runs(runs: list[dict], model: str, dataset: str) -> list[dict]:
    """Training runs of `model` on `dataset` at its recipe's length, on the whole training
    set (no --train-subset, no --limit-train-batches, no --limit-test-batches)."""
    from .recipes import get_recipe

    epochs = get_recipe(model).epochs
    return [r for r in training_runs(runs) if r["model"] == model and r["dataset"] == dataset
            and r["epochs"] == epochs and not any(r["hyperparameters"].get(k) for k in
            ("train_subset", "limit_train_batches", "limit_test_batches"))]  # fmt: skip


def targets_section(runs: list[dict]) -> list[str]:
    """Each declared target (``recipes.TARGETS``) against what full-length runs reached."""
    from .recipes import TARGETS

    lines = ["## Accuracy targets", "",
             "Targets are declared in `cifar_lightning/recipes.py` (`TARGETS`) with their sources. Achieved: "
             "test accuracy of the runs that trained the recipe's full length on the full training set, "
             "one run per seed.", "",
             "| model | dataset | target | source | framework | runs | mean | best | met (mean) | hardware |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for t in TARGETS:
        by_fw: dict[str, list[dict]] = {}
        for r in full_length_runs(runs, t.model, t.dataset):
            by_fw.setdefault(r["framework"], []).append(r)
        head = f"| {t.model} | {t.dataset} | {_pct(t.accuracy)} | {t.source}"
        if not by_fw:
            lines.append(f"{head} | - | 0 | - | - | no full-length run yet | - |")
        for fw, rs in sorted(by_fw.items()):
            rs = one_per_seed(rs)
            accs = [r["test_accuracy"] for r in rs]
            mean = sum(accs) / len(accs)
            hardware = "; ".join(sorted({_hardware_short(r) for r in rs}))
            lines.append(f"{head} | {fw} | {len(rs)} | {_pct(mean)} | {_pct(max(accs))} "
                         f"| {'yes' if mean >= t.accuracy else 'no'} | {hardware} |")  # fmt: skip
    return lines + [""]


def render_benchmarks(report: dict) -> list[str]:
    """The table of ``scripts/benchmark.py``'s JSON report."""
    h = report["hardware"]
    lines = [f"## Benchmarks ({h['cpu']}, {h['cpu_count']} cores, {h['os']})", "",
             "Measured by `python scripts/benchmark.py` (figures in `runs/benchmarks.json`), one case at a time. "
             "Ratio: images/s over the row named in the last column, measured in the same pass. Time: the "
             "timed part of the case (imports: a fresh interpreter).", "",
             "| case | images/s | time | peak memory | run length | ratio | against |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in report["rows"]:
        length = (f"{r['steps']} steps of {r['batch_size']}" if "steps" in r
                  else f"{r['images']} images" if "images" in r else "-")  # fmt: skip
        rate = f"{r['images_per_s']:.1f}" if "images_per_s" in r else "-"
        seconds = f"{r['seconds']:.1f} s" if "seconds" in r else "-"
        lines.append(f"| {r['case']} | {rate} | {seconds} | {r['peak_mb']:.0f} MB | {length} "
                     f"| {r.get('ratio', '-')} | {r.get('reference') or '-'} |")  # fmt: skip
    return lines + [""]


def render_results(runs: list[dict], benchmarks: dict | None = None) -> str:
    lines = [
        "# Results",
        "",
        "Generated by `python scripts/report.py` from the `run.json` logs committed under `runs/`;",
        "do not edit by hand. Every figure below was measured on the hardware its row names.",
        "How the runs were made and what they show: `Conclusion.md`.",
        "",
        "## All runs",
        "",
        "| run | framework | model | dataset | epochs (steps) | test acc | test acc, no TTA | train time | limits "
        "| hardware |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *[_run_row(r) for r in runs],
        "",
    ]
    lines += targets_section(runs)
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
    if benchmarks is not None:
        lines += render_benchmarks(benchmarks)
    return "\n".join(lines).rstrip() + "\n"


def _hardware_short(run: dict) -> str:
    h = run["hardware"]
    return h.get("gpu") or f"{h['cpu']} ({h['cpu_count']} cores), {h['accelerator']}"


def _configuration(run: dict) -> tuple:
    """What makes training runs repeats of each other: the framework and ``comparison_key``
    (model, data, length, hardware, every hyper-parameter but the seed)."""
    return (run["framework"], *comparison_key(run))


def training_runs(runs: list[dict]) -> list[dict]:
    """Runs that trained (``epochs`` > 0); evaluations (``--test-only``) are never
    averaged with each other or with training runs."""
    return [r for r in runs if r["epochs"]]


def one_per_seed(runs: list[dict]) -> list[dict]:
    """The first run (by folder) of each seed: repeated runs differ in their seed; a
    same-seed rerun is a reproducibility check (``same_seed_reruns``), not another sample."""
    chosen: dict = {}
    for r in sorted(runs, key=lambda r: r["_path"]):
        chosen.setdefault(r["seed"], r)
    return list(chosen.values())


def configurations(runs: list[dict]) -> dict[tuple, list[dict]]:
    """Training runs grouped by ``_configuration``, all runs of each group kept."""
    groups: dict[tuple, list[dict]] = {}
    for r in training_runs(runs):
        groups.setdefault(_configuration(r), []).append(r)
    return groups


def same_seed_reruns(runs: list[dict]) -> list[list[dict]]:
    """Groups of two or more training runs of one configuration with one seed."""
    out = []
    for group in configurations(runs).values():
        by_seed: dict = {}
        for r in group:
            by_seed.setdefault(r["seed"], []).append(r)
        out += [sorted(g, key=lambda r: r["_path"]) for g in by_seed.values() if len(g) > 1]
    return out


def _group_summary(runs: list[dict]) -> list[str]:
    """Mean test accuracy of repeated runs of one configuration (distinct seeds), and the
    same-seed reruns as a reproducibility check."""
    repeated = {k: one_per_seed(g) for k, g in configurations(runs).items()}
    repeated = {k: g for k, g in repeated.items() if len(g) > 1}
    lines = []
    if repeated:
        lines += ["## Repeated runs (distinct seeds)", "",
                  "One run per seed of one configuration (same framework, model, data, length, hardware and "
                  "hyper-parameters); evaluations are not included.", "",
                  "| framework | model | dataset | epochs (steps) | hardware | runs | seeds | mean test acc | min | max "
                  "| mean, no TTA |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for (framework, model, dataset, epochs, hw, _), g in repeated.items():
            accs = [r["test_accuracy"] for r in g]
            plain = [r["test_accuracy_no_tta"] for r in g if r.get("test_accuracy_no_tta") is not None]
            seeds = ", ".join(str(r["seed"]) for r in g)
            lines.append(f"| {framework} | {model} | {dataset} | {epochs} | {hw} | {len(g)} | {seeds} "
                         f"| {_pct(sum(accs) / len(accs))} | {_pct(min(accs))} | {_pct(max(accs))} "
                         f"| {_pct(sum(plain) / len(plain)) if plain else '-'} |")  # fmt: skip
        lines.append("")
    reruns = same_seed_reruns(runs)
    if reruns:
        lines += ["## Same-seed reruns (reproducibility check)", "",
                  "Runs of one configuration with the same seed: their spread is run-to-run nondeterminism, "
                  "not seed noise, and they count once in the tables above.", "",
                  "| framework | model | epochs (steps) | seed | runs | test accuracies | largest difference |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for g in reruns:
            accs = [r["test_accuracy"] for r in g]
            lines.append(f"| {g[0]['framework']} | {g[0]['model']} | {_length(g[0])} | {g[0]['seed']} | {len(g)} "
                         f"| {', '.join(_pct(a) for a in accs)} | {100 * (max(accs) - min(accs)):.2f} points |")  # fmt: skip
        lines.append("")
    return lines


def _side_by_side(runs: list[dict]) -> list[str]:
    """Per-class accuracy of each training configuration (mean over its distinct seeds), one
    column each."""
    by_dataset: dict[str, dict[tuple, list[dict]]] = {}
    for key, group in configurations(runs).items():
        by_dataset.setdefault(group[0]["dataset"], {})[key] = one_per_seed(group)
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
FRAMEWORK_ONLY_KEYS = ("seed", "precision", "channels_last", "device")
# hyper-parameters newer runs record; older logs lack them and ran with these values
RECORDED_SINCE = {"limit_train_batches": None, "limit_val_batches": None, "limit_test_batches": None}


def comparison_key(run: dict) -> tuple:
    """Runs with equal keys are the same experiment up to framework and seed: same model,
    data, length, hardware and every hyper-parameter except the framework-specific ones."""
    hp = {k: v for k, v in {**RECORDED_SINCE, **run["hyperparameters"]}.items() if k not in FRAMEWORK_ONLY_KEYS}
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
    """Training runs (not evaluations) grouped by ``comparison_key``, one per seed, kept
    where both frameworks ran."""
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for (framework, *key), rs in configurations(runs).items():
        groups.setdefault(tuple(key), {})[framework] = one_per_seed(rs)
    return {k: g for k, g in groups.items() if {"pytorch", "mlx"} <= set(g)}


# Student's t, two-sided 95% critical values by degrees of freedom (any statistics table)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       12: 2.179, 14: 2.145, 16: 2.120, 20: 2.086, 30: 2.042}  # fmt: skip


def t95(df: int) -> float:
    """The 95% two-sided critical value of Student's t for `df` degrees of freedom (the
    table's next smaller df where it has no entry, which errs on the strict side; 1.96 above 30)."""
    if df > 30:
        return 1.96
    return T95[max(k for k in T95 if k <= df)]


def gap_verdict(a: list[float], b: list[float]) -> str:
    """Whether mean(b) - mean(a) is larger than seed noise: a two-sample t-test at 95%
    (standard error of the difference sqrt(sa^2/na + sb^2/nb), na + nb - 2 degrees of freedom)."""
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    if len(a) < 2 or len(b) < 2:
        return f"{100 * (mb - ma):+.2f} points; one run per framework cannot tell seed noise from a gap"
    se = (sa**2 / len(a) + sb**2 / len(b)) ** 0.5
    critical = t95(len(a) + len(b) - 2)
    inside = abs(mb - ma) <= critical * se
    return (f"{100 * (mb - ma):+.2f} points, standard error {100 * se:.2f}; a t-test at 95% with "
            f"{len(a) + len(b) - 2} degrees of freedom needs {critical:.2f} standard errors "
            f"({100 * critical * se:.2f} points): " + ("within seed noise" if inside else "larger than seed noise"))


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

    from matplotlib.ticker import MaxNLocator

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
    a.set(xlabel="optimizer step (0-based)", ylabel="training loss (per image)")
    b.set(xlabel="optimizer steps done", ylabel=val_label(next(iter(groups.values()))[0]["hyperparameters"].get("val_size")))
    for ax in (a, b):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _finish_figure(fig, (a, b), title, path)
