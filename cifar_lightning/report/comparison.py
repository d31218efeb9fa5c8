"""A speed and accuracy comparison of PyTorch and MLX on one machine, from the pairs of runs
``cifar-compare`` trains (the MLX run of a seed starts from the PyTorch run's initial
weights and sees the same batches): ``comparison.md`` and ``comparison.png`` in the
comparison's folder, and the section Results.md gives every committed comparison.

Statistics, over the seeds' pairs (scipy for the t distribution and test):

- accuracy: the paired differences MLX - PyTorch, their mean with a 95% confidence
  interval (t with n - 1 degrees of freedom) and the paired t-test (``ttest_rel``);
- throughput, epoch time and memory: the ratio MLX / PyTorch of each pair, summarised by
  the geometric mean with a 95% interval (the t interval of the mean log ratio,
  exponentiated), so that 2x faster and 2x slower average to 1x.

Only like is divided by like: the speed and memory ratios leave out a pair whose frameworks
ran on devices of different kinds (a CUDA GPU against a CPU), and the memory ratio a pair
whose measured process also held the other framework (``memory.frameworks_loaded``; for
records made before that field, an MLX run whose ``--weights`` was a torch file, which it
reads with torch), whose pages a process-wide counter counts; the table marks both. Facts
that differ between the runs (power source, chip, package versions, the code's commit) are
listed, since the figures pool them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path, PurePosixPath

import numpy as np

from cifar_lightning.report.logs import DEVICE_CLASSES, code_text
from cifar_lightning.report.pairing import weights_argument

COMPARE_JSON = "compare.json"  # the settings a comparison folder was made with (cifar-compare writes it)
LIMITS = (
    "A comparison speaks for the machine, the device class and the versions it names: one on a "
    "CPU says nothing about Metal or CUDA, and a Mac's figures change with its chip, its power "
    "source and its load."
)
NAMES = {"pytorch": "PyTorch", "mlx": "MLX"}
OTHER_FRAMEWORK = {"pytorch": "mlx", "mlx": "torch"}  # the module each framework's process should not hold
TORCH_FILES = (".pt", ".pth", ".ckpt")  # weights MLX reads with torch
PHYS_FOOTPRINT = "phys_footprint"  # macOS's physical footprint of the process, where a record has it
# the machine's facts a reader compares runs by, from run.json's hardware
CONDITION_FACTS = ("cpu", "cpu_count", "memory_bytes", "gpu", "gpu_cores", "macos", "power", "os")
ACCURACY_SPAN = 10.0  # points: the accuracy panel's axis spans at least this, so a small gap looks small


def paired_difference(pytorch: list[float], mlx: list[float]) -> dict:
    """{"n", "mean", "ci95" ([low, high] or None), "p" (paired t-test; None below 2 pairs or
    without spread)} of the differences mlx[i] - pytorch[i]."""
    from scipy import stats

    d = np.asarray(mlx, float) - np.asarray(pytorch, float)
    out = {"n": len(d), "mean": float(d.mean()), "ci95": None, "p": None}
    if len(d) > 1 and np.ptp(d) > 0:
        half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
        out["ci95"] = [float(d.mean() - half), float(d.mean() + half)]
        out["p"] = float(stats.ttest_rel(mlx, pytorch).pvalue)
    return out


def geometric_ratio(pytorch: list[float], mlx: list[float]) -> dict:
    """{"n", "ratio" (geometric mean of mlx[i] / pytorch[i]), "ci95" ([low, high] or None
    below 2 pairs)}: the t interval of the mean log ratio, exponentiated."""
    from scipy import stats

    logs = np.log(np.asarray(mlx, float) / np.asarray(pytorch, float))
    out = {"n": len(logs), "ratio": float(np.exp(logs.mean())), "ci95": None}
    if len(logs) > 1:
        half = stats.t.ppf(0.975, len(logs) - 1) * logs.std(ddof=1) / math.sqrt(len(logs))
        out["ci95"] = [float(np.exp(logs.mean() - half)), float(np.exp(logs.mean() + half))]
    return out


def pairs_of(runs: list[dict]) -> list[tuple[dict, dict]]:
    """(PyTorch run, MLX run) of each seed both finished, by seed; a run is a run.json record."""
    by_seed: dict = {}
    for r in runs:
        if r.get("status") == "finished":
            by_seed.setdefault(r["seed"], {})[r["framework"]] = r
    return [(s["pytorch"], s["mlx"]) for _, s in sorted(by_seed.items()) if {"pytorch", "mlx"} <= set(s)]


def like_with_like(torch_device: str, mlx_device: str) -> bool:
    """Whether PyTorch's device and MLX's (as run.json records them) are of one kind: both the
    CPU, both an NVIDIA GPU (cuda), or the Apple GPU (mps and metal)."""
    return DEVICE_CLASSES.get(torch_device, torch_device) == DEVICE_CLASSES.get(mlx_device, mlx_device)


def _devices(pair: tuple[dict, dict]) -> tuple[str, str]:
    return pair[0]["hardware"]["accelerator"], pair[1]["hardware"]["accelerator"]


def other_framework_held(run: dict) -> str | None:
    """What of the other framework the process whose memory `run` measured held, or None: from
    ``memory.frameworks_loaded``; in a record made before that field, an MLX run whose
    ``--weights`` named a torch file (.pt, .pth, .ckpt), which MLX reads with torch."""
    other = OTHER_FRAMEWORK[run["framework"]]
    loaded = (run.get("memory") or {}).get("frameworks_loaded")
    if loaded is not None:
        return f"{other} loaded too" if other in loaded else None
    weights = weights_argument(run)
    if run["framework"] == "mlx" and weights and PurePosixPath(weights).suffix in TORCH_FILES:
        return f"torch loaded too, to read --weights {PurePosixPath(weights).name}"
    return None


def _epoch_s(run: dict) -> float:
    epochs = (run.get("throughput") or {}).get("epoch_s") or []
    return float(np.mean(epochs)) if epochs else float("nan")


def _peak(run: dict) -> tuple[str, int]:
    memory = run.get("memory") or {}
    primary = memory.get("primary")
    return primary, (memory.get("peak_bytes") or {}).get(primary, 0)


def _images_per_s(run: dict) -> float | None:
    return (run.get("throughput") or {}).get("images_per_s")


def summary(pairs: list[tuple[dict, dict]]) -> dict:
    """The comparison's figures (see the module's docstring) over `pairs`: the accuracy over
    all; over the pairs on devices of one kind, the throughput ratio where both runs measured
    steps past their warm-up, the epoch-time ratio where both recorded an epoch's seconds,
    and the memory ratio where both measured processes held their own framework only (None:
    no such pair)."""
    t, m = zip(*pairs)
    alike = [p for p in pairs if like_with_like(*_devices(p))]
    timed = [(a, b) for a, b in alike if _images_per_s(a) and _images_per_s(b)]
    # an epoch's seconds are recorded whether or not its steps got past the clock's warm-up
    epoched = [(a, b) for a, b in alike if np.isfinite(_epoch_s(a)) and np.isfinite(_epoch_s(b))]
    clean = [(a, b) for a, b in alike if not other_framework_held(a) and not other_framework_held(b)]

    def ratio(value, among):
        return geometric_ratio([value(a) for a, _ in among], [value(b) for _, b in among]) if among else None

    return {
        "pairs": len(pairs),
        "accuracy": paired_difference([r["test_accuracy"] for r in t], [r["test_accuracy"] for r in m]),
        "throughput": ratio(_images_per_s, timed),
        "epoch_time": ratio(_epoch_s, epoched),
        "memory": ratio(lambda r: _peak(r)[1], clean),
        "memory_counters": [_peak(r)[0] for r in (clean or pairs)[0]],
    }


def machine_text(hardware: dict) -> str:
    """The machine as a user compares machines: the CPU or chip and the cores the run could
    use (of the machine's, where fewer), the memory, the GPU (its name, or a Mac's GPU core
    count), macOS and the power source where known."""
    cores, machine = hardware.get("cpu_count", "unknown"), hardware.get("machine_cpu_count")
    of = f" of {machine}" if machine not in (None, cores) else ""
    parts = [f"{hardware.get('cpu', 'unknown')} ({cores}{of} cores)"]
    memory = hardware.get("memory_bytes")
    parts.append(f"{memory / 2**30:.0f} GiB memory" if isinstance(memory, (int, float)) else "memory unknown")
    if hardware.get("gpu"):
        parts.append(f"GPU {hardware['gpu']}")
    if "gpu_cores" in hardware:
        parts += [f"{hardware['gpu_cores']} GPU cores", f"macOS {hardware.get('macos')}", f"on {hardware.get('power')}"]
    parts.append(hardware.get("os", ""))
    return ", ".join(p for p in parts if p)


def precision_of(run: dict) -> str:
    """The Lightning precision a run trained in (``numerics.precision`` of its run.json)."""
    return (run.get("numerics") or {}).get("precision", "an unrecorded precision")


def conditions(run: dict) -> dict[str, str]:
    """What a run ran under, as runs are compared by: the machine's facts (``CONDITION_FACTS``),
    the package versions and the code's commit."""
    hardware = run.get("hardware") or {}
    facts = {k: str(hardware[k]) for k in CONDITION_FACTS if k in hardware}
    facts.update({k: str(v) for k, v in (run.get("versions") or {}).items()})
    facts["code"] = code_text(run)
    return facts


def _whose(runs: list[dict]) -> str:
    """ "PyTorch seeds 0, 1; MLX seed 0" """
    seeds: dict[str, list[str]] = {}
    for r in runs:
        seeds.setdefault(NAMES.get(r["framework"], r["framework"]), []).append(str(r["seed"]))
    return "; ".join(f"{name} seed{'s' * (len(s) > 1)} {', '.join(s)}" for name, s in seeds.items())


def differing_conditions(pairs: list[tuple[dict, dict]]) -> list[str]:
    """Each fact (``conditions``) that differs between the pairs' runs, as "power AC Power
    (PyTorch seeds 0, 1; MLX seeds 0, 1), Battery Power (MLX seed 2)"; a fact is compared among
    the runs that record it (torch's version among the PyTorch runs)."""
    runs = [r for pair in pairs for r in pair]
    facts = [conditions(r) for r in runs]
    out = []
    for key in dict.fromkeys(k for f in facts for k in f):
        holders: dict[str, list[dict]] = {}
        for run, fact in zip(runs, facts):
            if key in fact:
                holders.setdefault(fact[key], []).append(run)
        if len(holders) > 1:
            out.append(f"{key} " + ", ".join(f"{value} ({_whose(rs)})" for value, rs in holders.items()))
    return out


def _ci(figure: dict, fmt: str) -> str:
    ci = figure.get("ci95")
    return f"95% CI {fmt.format(ci[0])} to {fmt.format(ci[1])}" if ci else "no interval from one pair"


def _ratio_line(what: str, figure: dict | None, missing: str = "no pair of runs took steps past their warm-up") -> str:
    if figure is None:
        return f"- {what}: not measured ({missing})."
    return f"- {what}: {figure['ratio']:.2f}x ({_ci(figure, '{:.2f}x')}, {figure['n']} pair{'s' * (figure['n'] != 1)})."


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def _memory_cell(run: dict) -> str:
    """The primary counter's peak and its name, macOS's phys_footprint beside it where the
    record has one, and a note when the process held the other framework."""
    counter, peak = _peak(run)
    notes = [counter]
    footprint = ((run.get("memory") or {}).get("peak_bytes") or {}).get(PHYS_FOOTPRINT)
    if footprint is not None:
        notes.append(f"{PHYS_FOOTPRINT} {_mib(footprint)}")
    held = other_framework_held(run)
    if held:
        notes.append(held)
    return f"{_mib(peak)} ({'; '.join(notes)})"


def _held_reasons(pairs: list[tuple[dict, dict]]) -> dict[str, list[dict]]:
    """The runs of `pairs` whose process held the other framework, by what it held."""
    reasons: dict[str, list[dict]] = {}
    for r in (r for pair in pairs for r in pair):
        if other_framework_held(r):
            reasons.setdefault(other_framework_held(r), []).append(r)
    return reasons


def _seeds(pairs: list[tuple[dict, dict]]) -> str:
    return f"seed{'s' * (len(pairs) > 1)} " + ", ".join(str(t["seed"]) for t, _ in pairs)


def render(title: str, runs: list[dict], settings: dict | None = None) -> str:
    """The comparison's Markdown: per seed both accuracies, throughputs and peaks, then the
    paired figures with the hardware and versions that produced them, and their limits."""
    pairs = pairs_of(runs)
    lines = [f"## {title}", ""]
    if settings:
        lines += [f"`{settings['command']}`", ""]
    if not pairs:
        return "\n".join(lines + ["No seed has both runs finished yet.", ""])
    images = "images/s: all measured steps (median, IQR of windows)"
    lines += [
        f"| seed | devices (PyTorch, MLX) | PyTorch accuracy | MLX accuracy | PyTorch {images} | MLX {images} "
        "| PyTorch s/epoch (mean) | MLX s/epoch (mean) | PyTorch peak memory (counter) | MLX peak memory (counter) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t, m in pairs:
        devices = ", ".join(_devices((t, m))) + ("" if like_with_like(*_devices((t, m))) else " (not of one kind)")
        cells = [str(t["seed"]), devices, f"{100 * t['test_accuracy']:.2f}%", f"{100 * m['test_accuracy']:.2f}%"]
        for r in (t, m):
            tp = r.get("throughput") or {}
            if tp.get("images_per_s") is None:
                cells.append("not measured (no step past the warm-up)")
                continue
            cells.append(
                f"{tp['images_per_s']:.1f} ({tp['median_images_per_s']:.1f}, "
                f"{tp['iqr_images_per_s'][0]:.1f}-{tp['iqr_images_per_s'][1]:.1f})"
            )
        cells += [f"{_epoch_s(t):.1f}", f"{_epoch_s(m):.1f}"]
        cells += [_memory_cell(r) for r in (t, m)]
        lines.append("| " + " | ".join(cells) + " |")
    s = summary(pairs)
    acc = s["accuracy"]
    p = f", paired t-test p = {acc['p']:.3g}" if acc["p"] is not None else ""
    ci = "" if acc["ci95"] is None else f", 95% CI {100 * acc['ci95'][0]:+.2f} to {100 * acc['ci95'][1]:+.2f}"
    t0, m0 = pairs[0]
    apart = [pair for pair in pairs if not like_with_like(*_devices(pair))]
    held = [pair for pair in pairs if pair not in apart and any(other_framework_held(r) for r in pair)]
    differ = differing_conditions(pairs)
    lines += [
        "",
        f"- Accuracy, MLX - PyTorch over {s['pairs']} pair{'s' * (s['pairs'] != 1)}: "
        f"{100 * acc['mean']:+.2f} points{ci}{p}.",
        _ratio_line(
            "Throughput MLX / PyTorch (training images per second after the warm-up, geometric mean)", s["throughput"]
        ),
        _ratio_line(
            "Epoch time MLX / PyTorch (seconds of an epoch's steps)",
            s["epoch_time"],
            "no pair of runs on devices of one kind recorded an epoch's seconds",
        ),
    ]
    if s["memory"] is None:
        lines.append("- Peak memory MLX / PyTorch: not stated: every pair is left out (below).")
    else:
        n = s["memory"]["n"]
        lines.append(
            f"- Peak memory MLX / PyTorch ({s['memory_counters'][1]} / {s['memory_counters'][0]}): "
            f"{s['memory']['ratio']:.2f}x ({_ci(s['memory'], '{:.2f}x')}, {n} pair{'s' * (n != 1)})."
        )
    if apart:
        lines.append(
            f"- Not of one kind, left out of the speed and memory ratios: {_seeds(apart)} (PyTorch on "
            f"{apart[0][0]['hardware']['accelerator']}, MLX on {apart[0][1]['hardware']['accelerator']}): a GPU "
            "against a CPU measures the devices, not the frameworks."
        )
    if held:
        lines.append(
            f"- Left out of the memory ratio: {_seeds(held)}, whose measured process held the other framework "
            "too ("
            + "; ".join(f"{_whose(runs)}: {why}" for why, runs in _held_reasons(held).items())
            + "): a process-wide counter counts its pages."
        )
    if any(_peak(r)[0].startswith("torch.mps.") for pair in pairs for r in pair):
        lines.append(
            "- PyTorch's memory on MPS, which keeps no peak, is sampled between steps (the largest of its samples "
            "at each reading of the step clock, the device idle): a peak inside a step is missed, so the ratio "
            "MLX / PyTorch, whose MLX side is a true peak, is an upper bound."
        )
    if any(PHYS_FOOTPRINT in ((r.get("memory") or {}).get("peak_bytes") or {}) for pair in pairs for r in pair):
        lines.append(
            f"- {PHYS_FOOTPRINT} (macOS's physical footprint of the process) is shown beside the counter each "
            "ratio divides."
        )
    if differ:
        lines.append(
            f"- Conditions that differ between the runs, which the figures above pool: {'; '.join(differ)}. "
            "The hardware line names seed "
            f"{t0['seed']}'s."
        )
    lines += [
        f"- Hardware: {machine_text(t0['hardware'])}; PyTorch on {t0['hardware']['accelerator']} in "
        f"{precision_of(t0)}, MLX on {m0['hardware']['accelerator']} in {precision_of(m0)}. Versions: torch {t0['versions'].get('torch')}, Lightning "
        f"{t0['versions'].get('lightning')}, MLX {m0['versions'].get('mlx')}, Python {t0['versions'].get('python')}.",
        f"- The clock: {t0['throughput']['synchronized_by']} (PyTorch), {m0['throughput']['synchronized_by']} (MLX); "
        f"{t0['throughput']['warmup_steps']} warm-up steps left out, windows of "
        f"{t0['throughput']['window_steps']} steps; {t0['throughput']['excluded']} excluded.",
        f"- {LIMITS}",
        "",
    ]
    return "\n".join(lines)


def plot(runs: list[dict], path: str | Path, title: str) -> None:
    """Throughput per framework per seed (left) and the accuracy pairs (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = pairs_of(runs)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    seeds = [t["seed"] for t, _ in pairs]
    x = np.arange(len(pairs))
    for i, (name, colour) in enumerate((("pytorch", "tab:red"), ("mlx", "tab:blue"))):
        rates = [_images_per_s(p[i]) or 0.0 for p in pairs]  # 0: not measured
        a.bar(x + (i - 0.5) * 0.4, rates, width=0.4, color=colour, label=name)
    a.set(xticks=x, xticklabels=[f"seed {s}" for s in seeds], ylabel="training images / s (after warm-up)")
    accuracies = []
    for t, m in pairs:
        accuracies += [100 * t["test_accuracy"], 100 * m["test_accuracy"]]
        b.plot([0, 1], accuracies[-2:], marker="o", color="tab:gray")
    b.set(
        xticks=[0, 1],
        xticklabels=["PyTorch", "MLX"],
        xlim=(-0.3, 1.3),
        ylim=accuracy_axis(accuracies),
        ylabel=f"test accuracy (%; the axis spans {np.ptp(accuracy_axis(accuracies)):g} points)",
    )
    a.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def accuracy_axis(accuracies: list[float]) -> tuple[float, float]:
    """The accuracy panel's y limits (percent): at least ``ACCURACY_SPAN`` points around the
    accuracies (more where they spread wider, with a point to spare), within 0-100, so a gap
    of tenths of a point looks as small as it is instead of filling the panel."""
    low, high = min(accuracies), max(accuracies)
    span = max(ACCURACY_SPAN, math.ceil(high - low) + 2)
    bottom = min(max(0.0, math.floor((low + high) / 2 - span / 2)), 100.0 - span)
    return bottom, bottom + span


def read_comparison(folder: str | Path) -> tuple[dict, list[dict]]:
    """(settings from compare.json, the run.json records of its runs) of a comparison folder."""
    folder = Path(folder)
    settings = json.loads((folder / COMPARE_JSON).read_text())
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob("*-seed*/run.json"))]
    return settings, runs
