"""Run logs (run.json), plots, and Results.md generated from committed logs.

Shared by both frameworks: the MLX trainer writes the same run.json schema.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import posixpath
import re
import shlex
import subprocess
import sys
import warnings
from importlib import metadata
from pathlib import Path, PurePosixPath

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
    """What the run ran on. `accelerator`: the device actually used, as its framework names
    it (torch: cpu, mps, cuda; MLX: cpu, metal, or cuda in its CUDA build; Results.md
    compares them by class, ``device_class``); `gpu`: the GPU's name where the framework
    reports one."""
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
    """Every run's run.json under `root` (those in `only`, when given), each with its
    folder as ``_path``; failed runs are skipped."""
    runs = []
    for path in sorted(Path(root).rglob("run.json")):
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


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


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


# ------------------------------------------------------------ devices
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


def _hardware(run: dict) -> str:
    """CPU (cores), operating system and device as recorded, the GPU's name where there is one."""
    h = run["hardware"]
    device = f"{h['accelerator']} ({h['gpu']})" if h.get("gpu") else h["accelerator"]
    return f"{h['cpu']} ({h['cpu_count']} cores), {h['os']}, {device}"


def _hardware_short(run: dict) -> str:
    """The GPU's name, else CPU (cores) and accelerator."""
    h = run["hardware"]
    return h.get("gpu") or f"{h['cpu']} ({h['cpu_count']} cores), {h['accelerator']}"


# ------------------------------------------------------------ times
OLD_TIME_MARK = "†"
OLD_TIME_NOTE = (f"{OLD_TIME_MARK} Logged before training, validation and test times were recorded apart "
                 "(`validation_time_s`, `test_time_s`): this train time also spans the validation passes, and in "
                 "PyTorch the final checkpoint save and the whole test pass, so no training images/s (n/a) can be "
                 "computed from it, and it is not comparable with the train time of newer runs.")  # fmt: skip


def has_split_times(run: dict) -> bool:
    """Whether run.json logs its spans apart: ``train_time_s`` (optimizer steps and the
    per-epoch checkpoint writes), ``validation_time_s`` and ``test_time_s`` (seconds).
    Older logs have ``train_time_s`` only, over other spans (see ``OLD_TIME_NOTE``)."""
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


def _time_cell(run: dict) -> str:
    """A run's train time in seconds, marked when it spans more than training; "-" for an evaluation."""
    if not run["epochs"]:
        return "-"
    return f"{run['train_time_s']:.0f} s" + ("" if has_split_times(run) else OLD_TIME_MARK)


def _mean_time_cell(runs: list[dict]) -> str:
    """Mean train time (s) of runs whose times mean the same span; "n/a" when they mix spans."""
    kinds = {has_split_times(r) for r in runs}
    if len(kinds) > 1:
        return f"n/a (old and new spans){OLD_TIME_MARK}"
    return f"{mean_std([r['train_time_s'] for r in runs])[0]:.0f} s" + ("" if kinds == {True} else OLD_TIME_MARK)


def _images_per_s_cell(runs: list[dict]) -> str:
    """Mean training images/s, or n/a when any run's log cannot give it."""
    rates = [train_images_per_s(r) for r in runs]
    return f"n/a{OLD_TIME_MARK}" if None in rates else f"{mean_std(rates)[0]:.0f}"


# ------------------------------------------------------------ rows of every run


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
        f"| {_time_cell(run)} | {limits_text(run['hyperparameters']) or '-'} | {code_text(run)} | {_hardware(run)} |"
    )


def _all_runs(runs: list[dict]) -> list[str]:
    """The table of every run, one row each, and the note on old time spans where one has them."""
    lines = ["## All runs", "",
             "| run | framework | model | dataset | epochs (steps) | test acc | test acc, no TTA | train time | limits "
             "| code | hardware |",
             "|---|---|---|---|---|---|---|---|---|---|---|", *[_run_row(r) for r in runs], ""]  # fmt: skip
    if any(r["epochs"] and not has_split_times(r) for r in runs):
        lines += [OLD_TIME_NOTE, ""]
    return lines


# ------------------------------------------------------------ accuracy targets
# hyper-parameters a run records beside its recipe's that say how a framework executed it
# (not what it trained), and the run's step count
EXECUTION_KEYS = {"precision", "channels_last", "device", "total_steps"}
MISSING = object()


def recipe_as_logged(model: str, hyperparameters: dict) -> dict:
    """The model's recipe (``recipes.get_recipe(model).to_dict()``) as a run's log records
    it. A log without ``units`` predates that field (commit fc0dacc), when recipes were
    written in torch's units: a recipe in other units is compared in torch's (lr and weight
    decay from ``recipes.sgd_args``). ValueError for an unknown model."""
    from .recipes import get_recipe, sgd_args

    recipe = get_recipe(model)
    expected = recipe.to_dict()
    if "units" not in hyperparameters:
        sgd = sgd_args(recipe)
        del expected["units"]
        expected.update(lr=sgd.lr, weight_decay=sgd.weight_decay)
    return expected


def _same(value, wanted) -> bool:
    """Equal, floats to 1e-9 relative (a value through JSON or another formula); bools only to bools."""
    if isinstance(value, bool) or isinstance(wanted, bool):
        return value is wanted
    if isinstance(value, (int, float)) and isinstance(wanted, (int, float)):
        return math.isclose(value, wanted, rel_tol=1e-9)
    return value == wanted


def recipe_differences(run: dict) -> list[str]:
    """Why a run is not its model's recipe trained on the full training set, one phrase each
    ("lr 46.0 (recipe 11.5)", "val_size 5000", "status interrupted"); [] for a finished
    training run whose every recorded hyper-parameter but the seed is the recipe's, with
    --val-size 0 and no --train-subset or --limit-*-batches. ValueError for an unknown model."""
    hp = {**RECORDED_SINCE, **run["hyperparameters"]}
    out = [] if run["epochs"] else ["an evaluation"]
    if run_status(run) != "finished":
        out.append(f"status {run_status(run)}")
    expected = recipe_as_logged(run["model"], hp)
    for key, wanted in expected.items():
        value = hp.get(key, MISSING)
        if key != "seed" and not _same(value, wanted):
            out.append(f"{key} {'not recorded' if value is MISSING else value} (recipe {wanted})")
    if hp.get("val_size", MISSING) != 0:
        out.append(f"val_size {hp.get('val_size', 'not recorded')}")
    out += [f"{key} {hp[key]}" for key in ("train_subset", *RECORDED_SINCE) if hp.get(key)]
    others = set(hp) - set(expected) - EXECUTION_KEYS - {"val_size", "train_subset", *RECORDED_SINCE}
    return out + [f"{key} {hp[key]}" for key in sorted(others)]  # e.g. --dropout: another architecture


def recipe_runs(runs: list[dict], model: str, dataset: str) -> list[dict]:
    """The runs of `model`'s recipe itself on the whole training set of `dataset`
    (``recipe_differences`` empty), in the order given."""
    return [r for r in runs if r["model"] == model and r["dataset"] == dataset and not recipe_differences(r)]


def targets_section(runs: list[dict]) -> list[str]:
    """Each declared target (``recipes.TARGETS``) against what runs of the recipe reached."""
    from .recipes import TARGETS

    lines = ["## Accuracy targets", "",
             "Targets are declared in `cifar_lightning/core/recipes.py` (`TARGETS`) with their sources. Counted: "
             "finished training runs whose every recorded hyper-parameter but the seed is the recipe's "
             "(`RECIPES`), on the full training set (`--val-size 0`, no `--train-subset`, no `--limit-*-batches`), "
             "one run per seed. Code: the commit the counted runs were trained at (\"+changes\": with uncommitted "
             "changes); later commits may train the recipe differently.", "",
             "| model | dataset | target | source | framework | runs | mean | best | met (mean) | code | hardware |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for t in TARGETS:
        by_fw: dict[str, list[dict]] = {}
        for r in recipe_runs(runs, t.model, t.dataset):
            by_fw.setdefault(r["framework"], []).append(r)
        head = f"| {t.model} | {t.dataset} | {_pct(t.accuracy)} | {t.source}"
        if not by_fw:
            lines.append(f"{head} | - | 0 | - | - | no run of the recipe yet | - | - |")
        for fw, rs in sorted(by_fw.items()):
            rs = one_per_seed(rs)
            accs = [r["test_accuracy"] for r in rs]
            mean = sum(accs) / len(accs)
            codes = "; ".join(sorted({code_note(r) for r in rs}))
            hardware = "; ".join(sorted({_hardware_short(r) for r in rs}))
            lines.append(f"{head} | {fw} | {len(rs)} | {_pct(mean)} | {_pct(max(accs))} "
                         f"| {'yes' if mean >= t.accuracy else 'no'} | {codes} | {hardware} |")  # fmt: skip
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


def render_results(runs: list[dict], benchmarks: dict | None = None,
                   plot_paths: dict[tuple, Path] | None = None) -> str:  # fmt: skip
    """Results.md's text. `plot_paths`: where each PyTorch-vs-MLX group's curves are, as
    the report names them (default ``comparison_plot_paths``: beside the runs)."""
    lines = [
        "# Results",
        "",
        "Generated by `python scripts/report.py` from the `run.json` logs committed under `runs/`;",
        "do not edit by hand. Every figure below was measured on the hardware its row names.",
        "How the runs were made and what they show: `Conclusion.md`.",
        "",
    ]
    lines += _all_runs(runs)
    lines += targets_section(runs)
    lines += _group_summary(runs)
    lines += pytorch_vs_mlx_section(runs, plot_paths)
    if len(runs) > 1:
        lines += _side_by_side(runs)
    for run in runs:
        lines += [f"## `{run['_path']}`", "", f"- seed {run['seed']}, {run['parameters']:,} parameters, "
                  f"code {code_note(run)}"]
        if has_split_times(run):
            lines.append(f"- train {run['train_time_s']:.1f} s, validation {run['validation_time_s']:.1f} s, "
                         f"test {run['test_time_s']:.1f} s")  # fmt: skip
        if run.get("note"):
            lines.append(f"- {run['note']}")
        lines += ["", "| class | accuracy |", "|---|---|"]
        lines += [f"| {k} | {_pct(v)} |" for k, v in run["per_class_accuracy"].items()]
        lines.append("")
    if benchmarks is not None:
        lines += render_benchmarks(benchmarks)
    return "\n".join(lines).rstrip() + "\n"


# ------------------------------------------------------------ repeated runs


def _configuration(run: dict) -> tuple:
    """What makes training runs repeats of each other: framework, model, data, length,
    hardware (``_hardware_short``) and every hyper-parameter but the seed (``_hp_key``)."""
    return (run["framework"], run["model"], run["dataset"], _length(run), _hardware_short(run), _hp_key(run))


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


def _hp_key(run: dict) -> str:
    """Every hyper-parameter but the framework-specific ones and the seed, as sorted JSON."""
    hp = {k: v for k, v in {**RECORDED_SINCE, **run["hyperparameters"]}.items() if k not in FRAMEWORK_ONLY_KEYS}
    return json.dumps(hp, sort_keys=True)


def comparison_key(run: dict) -> tuple:
    """(model, dataset, length, ``machine_and_device``, hyper-parameters as JSON): runs with
    equal keys are the same experiment up to framework and seed, on one machine and one
    class of device (torch's mps and MLX's metal alike)."""
    return (run["model"], run["dataset"], _length(run), machine_and_device(run), _hp_key(run))


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for a single value)."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _mean_spread(values: list[float]) -> str:
    """"mean ± std" in percent and points; the value alone for a single run (no spread to give)."""
    if len(values) == 1:
        return _pct(values[0])
    m, sd = mean_std(values)
    return f"{_pct(m)} ± {100 * sd:.2f}"


def pytorch_vs_mlx_groups(runs: list[dict]) -> dict[tuple, dict[str, list[dict]]]:
    """Training runs (not evaluations) grouped by ``comparison_key`` and framework, one per
    seed, kept where both frameworks ran."""
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for r in training_runs(runs):
        groups.setdefault(comparison_key(r), {}).setdefault(r["framework"], []).append(r)
    both = {k: g for k, g in groups.items() if {"pytorch", "mlx"} <= set(g)}
    return {k: {fw: one_per_seed(rs) for fw, rs in g.items()} for k, g in both.items()}


ALPHA = 0.05  # two-sided significance level of the gap verdict: a 95% test


def gap_verdict(a: list[float], b: list[float]) -> str:
    """Whether mean(b) - mean(a) (accuracies as fractions; said in points) is larger than
    seed noise: Welch's unequal-variances t-test, two-sided at 95% (``scipy.stats.ttest_ind``
    with ``equal_var=False``; Welch-Satterthwaite degrees of freedom). No verdict, said so,
    with fewer than two runs on a side or no spread on either side."""
    from scipy import stats

    gap = f"{100 * (np.mean(b) - np.mean(a)):+.2f} points"
    if min(len(a), len(b)) < 2:
        who = "each framework has" if max(len(a), len(b)) < 2 else "one framework has"
        return f"{gap}; no verdict: {who} one run, and Welch's t-test needs two or more (seeds) per framework"
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return (f"{gap}; no verdict: every run of each framework reached the same accuracy, so there is no "
                "seed noise to test the gap against (Welch's t-test is undefined)")  # fmt: skip
    with warnings.catch_warnings():  # one side without spread (equal runs) is a valid case, not a precision loss
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        res = stats.ttest_ind(b, a, equal_var=False)
    verdict = "a real gap (p < 0.05)" if res.pvalue < ALPHA else "not established: within seed noise (p >= 0.05)"
    return (f"{gap}; Welch's t-test (two-sided, 95%): t = {res.statistic:.2f}, {res.df:.1f} degrees of freedom, "
            f"p = {res.pvalue:.3g}: {verdict}")  # fmt: skip


# ------------------------------------------------------------ paired runs (same initial weights)
INITIAL_WEIGHTS = ("checkpoints", "initial.pt")  # where fit.py saves the weights it starts from
SAME_DIFFERENCE = 1e-9  # differences closer than this are equal (float noise; accuracies are k / test images)
PAIRING_TEXT = (
    "Paired runs: each MLX run below was started from its PyTorch run's initial weights "
    "(`--weights <PyTorch run>/checkpoints/initial.pt` in its command) with the same seed, so both saw the same "
    "batches: the data order and the augmentation draws come from the seed in both frameworks. The two runs of a "
    "pair differ only by the framework's arithmetic and its own random streams (such as dropout), so the "
    "seed-to-seed spread (initial weights, data order) cancels in their difference, and the paired t-test "
    "(`scipy.stats.ttest_rel`) tests the mean of the differences against their own spread."
)  # fmt: skip


def weights_argument(run: dict) -> str | None:
    """The path a run's recorded ``command`` gave to ``--weights`` (``--weights PATH`` or
    ``--weights=PATH``); None without one, or without a recorded command."""
    command = run.get("command")
    if not command:
        return None
    try:
        argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    except ValueError:  # unbalanced quotes: read it as plain words
        argv = str(command).split()
    for i, arg in enumerate(argv):
        if arg == "--weights" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--weights="):
            return arg.split("=", 1)[1]
    return None


def initial_weights_folder(run: dict) -> str | None:
    """The run folder whose ``checkpoints/initial.pt`` the run's ``--weights`` loaded, as
    written in its command (normalised: no "./", no trailing "/"); None when the run loaded
    no weights or other ones (a final checkpoint, an .npz)."""
    weights = weights_argument(run)
    if weights is None:
        return None
    path = PurePosixPath(posixpath.normpath(weights))
    return path.parent.parent.as_posix() if path.parts[-2:] == INITIAL_WEIGHTS else None


def same_folder(written: str, folder: str) -> bool:
    """Whether a folder as a command wrote it (relative to the repository, where the runners
    are started, or absolute) names a run's folder (``_path``: relative to the repository as
    ``scripts/report.py`` reads it, or absolute). Both normalised; an absolute path names a
    relative one when its trailing parts are that relative path."""
    a, b = PurePosixPath(posixpath.normpath(written)), PurePosixPath(posixpath.normpath(folder))
    if a == b:
        return True
    if a.is_absolute() == b.is_absolute():
        return False
    absolute, relative = (a, b) if a.is_absolute() else (b, a)
    parts = relative.parts
    return bool(parts) and ".." not in parts and absolute.parts[-len(parts):] == parts


def paired_runs(group: dict[str, list[dict]]) -> list[tuple[dict, dict]]:
    """(PyTorch run, MLX run) pairs of a ``pytorch_vs_mlx_groups`` group, by seed: an MLX
    run is paired with the PyTorch run of the same seed whose folder's
    ``checkpoints/initial.pt`` its command loaded with ``--weights`` (``initial_weights_folder``,
    ``same_folder``). Same initial weights and seed mean the same batches in both frameworks.
    Each run is in at most one pair (one run per seed per framework)."""
    pairs = []
    for m in group.get("mlx", []):
        folder = initial_weights_folder(m)
        if folder is None:
            continue
        twins = [t for t in group.get("pytorch", []) if t["seed"] == m["seed"] and same_folder(folder, t["_path"])]
        if twins:
            pairs.append((twins[0], m))
    seed_order = lambda p: (0, p[0]["seed"]) if isinstance(p[0]["seed"], int) else (1, 0)  # noqa: E731
    return sorted(pairs, key=lambda p: (*seed_order(p), p[0]["_path"]))


def paired_verdict(pytorch: list[float], mlx: list[float]) -> str:
    """Whether the mean of the paired differences mlx[i] - pytorch[i] (accuracies as
    fractions; said in points) is larger than their spread: the paired t-test
    (``scipy.stats.ttest_rel``), two-sided at 95%, n - 1 degrees of freedom. No verdict,
    said so, from one pair, or when every pair differs by the same amount (no spread: the
    test is undefined)."""
    from scipy import stats

    if len(pytorch) != len(mlx) or not pytorch:
        raise ValueError(f"paired_verdict needs pairs, got {len(pytorch)} PyTorch and {len(mlx)} MLX values")
    diffs = np.asarray(mlx, dtype=float) - np.asarray(pytorch, dtype=float)
    gap = f"{100 * diffs.mean():+.2f} points"
    if len(diffs) == 1:
        return f"{gap}; no verdict from one pair: the paired t-test needs two or more pairs (seeds)"
    if np.ptp(diffs) < SAME_DIFFERENCE:
        return (f"{gap}; no verdict: every pair differs by the same amount, so the differences have no spread "
                "to test their mean against (the paired t-test is undefined)")  # fmt: skip
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        res = stats.ttest_rel(mlx, pytorch)
    verdict = ("a real gap (p < 0.05)" if res.pvalue < ALPHA
               else "not established: within the spread of the paired differences (p >= 0.05)")  # fmt: skip
    return (f"{gap}; paired t-test (two-sided, 95%): t = {res.statistic:.2f}, {len(diffs) - 1} degrees of freedom, "
            f"p = {res.pvalue:.3g}: {verdict}")  # fmt: skip


def _loss(run: dict) -> str:
    return "n/a" if run.get("test_loss") is None else f"{run['test_loss']:.4f}"


def _paired_lines(pairs: list[tuple[dict, dict]]) -> list[str]:
    """What pairing means, one row per pair, and the mean difference with its standard deviation."""
    lines = [PAIRING_TEXT, "",
             "| seed | PyTorch test acc | MLX test acc | MLX - PyTorch (points) | PyTorch test loss | MLX test loss "
             "| PyTorch run | MLX run |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for t, m in pairs:
        lines.append(f"| {t['seed']} | {_pct(t['test_accuracy'])} | {_pct(m['test_accuracy'])} "
                     f"| {100 * (m['test_accuracy'] - t['test_accuracy']):+.2f} | {_loss(t)} | {_loss(m)} "
                     f"| `{t['_path']}` | `{m['_path']}` |")  # fmt: skip
    diffs = [m["test_accuracy"] - t["test_accuracy"] for t, m in pairs]
    mean, sd = mean_std(diffs)
    if len(diffs) > 1:
        summary = (f"over {len(pairs)} pairs: {100 * mean:+.2f} ± {100 * sd:.2f} points (mean ± standard deviation "
                   "of the differences)")  # fmt: skip
    else:
        summary = f"over 1 pair: {100 * mean:+.2f} points (one pair: no spread)"
    return lines + ["", f"Difference, MLX - PyTorch, {summary}."]


def _group_runs(group: dict[str, list[dict]]) -> list[dict]:
    """Every run of a PyTorch-vs-MLX group, both frameworks'."""
    return [r for rs in group.values() for r in rs]


def _common_folder(runs: list[dict]) -> str:
    """The deepest folder holding every run's folder ("." when they share none)."""
    return Path(os.path.commonpath([r["_path"] for r in runs]) or ".").as_posix()


def _comparison_title(key: tuple, group: dict[str, list[dict]]) -> str:
    """Model, data, length, machine and device class, the runs' common folder and their code."""
    model, dataset, length, machine, _ = key
    runs = _group_runs(group)
    codes = ", ".join(sorted({code_text(r) for r in runs}))
    return f"PyTorch vs MLX: {model}, {dataset}, {length}, {machine}: `{_common_folder(runs)}`, code {codes}"


def _distinguishing(key: tuple, keys: list[tuple]) -> str:
    """This key's values of the hyper-parameters whose values differ among `keys`."""
    hps = [json.loads(k[-1]) for k in keys]
    names = sorted({n for hp in hps for n in hp if len({json.dumps(h.get(n, "not recorded")) for h in hps}) > 1})
    mine = json.loads(key[-1])
    return ", ".join(f"{n} {mine.get(n, 'not recorded')}" for n in names)


def comparison_headings(groups: dict[tuple, dict[str, list[dict]]]) -> dict[tuple, str]:
    """Each group's heading, unique: model, data, length, machine and device class, the
    runs' common folder and code (``code_text``); groups that would still share one
    (the same folder and code) also name the hyper-parameters that set them apart."""
    titles = {key: _comparison_title(key, g) for key, g in groups.items()}
    out = {}
    for key, title in titles.items():
        clash = [k for k, t in titles.items() if t == title]
        out[key] = f"{title} ({_distinguishing(key, clash)})" if len(clash) > 1 else title
    return out


def comparison_plot_paths(groups: dict[tuple, dict[str, list[dict]]], folder: Path | None = None) -> dict[tuple, Path]:
    """Where each group's curves go: beside its runs (``pytorch-vs-mlx.png`` in their common
    folder) or, given `folder`, in it (``pytorch-vs-mlx_<common folder>.png``). Groups that
    would share a file get "-2", "-3", ... in the order given."""
    out: dict[tuple, Path] = {}
    seen: dict[Path, int] = {}
    for key, g in groups.items():
        common = _common_folder(_group_runs(g))
        if folder is None:
            path = Path(common) / "pytorch-vs-mlx.png"
        else:
            path = Path(folder) / f"pytorch-vs-mlx_{re.sub(r'[^A-Za-z0-9._-]+', '_', common).strip('_.')}.png"
        seen[path] = seen.get(path, 0) + 1
        out[key] = path if seen[path] == 1 else path.with_name(f"{path.stem}-{seen[path]}.png")
    return out


def _framework_row(framework: str, runs: list[dict]) -> str:
    """One framework's row of a PyTorch-vs-MLX table."""
    accs = [r["test_accuracy"] for r in runs]
    folders = sorted({Path(r["_path"]).parent.as_posix() for r in runs})
    return (f"| {framework} | {len(runs)} | {', '.join(str(r['seed']) for r in runs)} | {_mean_spread(accs)} "
            f"| {_pct(min(accs))} | {_pct(max(accs))} | {_mean_time_cell(runs)} | {_images_per_s_cell(runs)} "
            f"| {', '.join(sorted({code_text(r) for r in runs}))} | {'; '.join(sorted({_hardware(r) for r in runs}))} "
            f"| {', '.join(f'`{f}`' for f in folders)} |")  # fmt: skip


def pytorch_vs_mlx_section(runs: list[dict], plot_paths: dict[tuple, Path] | None = None) -> list[str]:
    """One section per ``pytorch_vs_mlx_groups`` group: both frameworks' rows, the gap
    verdict, the plot's path (``plot_paths``, default ``comparison_plot_paths``) and
    per-class means. The verdict: Welch's test (``gap_verdict``) for a group without pairs;
    where runs started from the same weights (``paired_runs``) a table of the pairs and the
    paired test (``paired_verdict``), which is the verdict when every run is in a pair
    (otherwise Welch's test over every run follows it)."""
    groups = pytorch_vs_mlx_groups(runs)
    headings = comparison_headings(groups)
    plots = plot_paths if plot_paths is not None else comparison_plot_paths(groups)
    lines = []
    for key, g in groups.items():
        lines += [f"## {headings[key]}", "",
                  "| framework | runs | seeds | test acc, mean ± std (points) | min | max | train time, mean "
                  "| train images/s | code | hardware | runs in |",
                  "|---|---|---|---|---|---|---|---|---|---|---|",
                  _framework_row("pytorch", g["pytorch"]), _framework_row("mlx", g["mlx"])]  # fmt: skip
        if not all(has_split_times(r) for r in _group_runs(g)):
            lines += ["", OLD_TIME_NOTE]
        accs = {fw: [r["test_accuracy"] for r in g[fw]] for fw in ("pytorch", "mlx")}
        curves = f"Curves of every run: `{plots[key].as_posix()}`."
        pairs = paired_runs(g)
        if not pairs:
            lines += ["", f"MLX minus PyTorch, test accuracy: {gap_verdict(accs['pytorch'], accs['mlx'])}. {curves}"]
        else:
            paired = paired_verdict([t["test_accuracy"] for t, _ in pairs], [m["test_accuracy"] for _, m in pairs])
            lines += ["", *_paired_lines(pairs), ""]
            if 2 * len(pairs) == len(_group_runs(g)):  # every run is in a pair: the paired test is the verdict
                lines.append(f"MLX minus PyTorch, test accuracy, paired: {paired}. {curves}")
            else:
                unpaired = len(_group_runs(g)) - 2 * len(pairs)
                lines += [f"Paired, the {len(pairs)} pair{'s' * (len(pairs) > 1)} above: {paired}.", "",
                          f"MLX minus PyTorch, test accuracy, every run of the table taken as an independent sample "
                          f"({unpaired} of them in no pair): {gap_verdict(accs['pytorch'], accs['mlx'])}. "
                          f"{curves}"]  # fmt: skip
        lines += ["", "| class | PyTorch, mean | MLX, mean | MLX - PyTorch |", "|---|---|---|---|"]
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
