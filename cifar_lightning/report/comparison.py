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
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

COMPARE_JSON = "compare.json"  # the settings a comparison folder was made with (cifar-compare writes it)
LIMITS = (
    "A comparison speaks for the machine, the device class and the versions it names: one on a "
    "CPU says nothing about Metal or CUDA, and a Mac's figures change with its chip, its power "
    "source and its load."
)


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
    """The comparison's figures (see the module's docstring) over `pairs`; the speed ratios
    over the pairs whose runs both measured steps past their warm-up (None: no such pair)."""
    t, m = zip(*pairs)
    timed = [(a, b) for a, b in pairs if _images_per_s(a) and _images_per_s(b)]

    def ratio(value):
        return geometric_ratio([value(a) for a, _ in timed], [value(b) for _, b in timed]) if timed else None

    return {
        "pairs": len(pairs),
        "accuracy": paired_difference([r["test_accuracy"] for r in t], [r["test_accuracy"] for r in m]),
        "throughput": ratio(_images_per_s),
        "epoch_time": ratio(_epoch_s),
        "memory": geometric_ratio([_peak(r)[1] for r in t], [_peak(r)[1] for r in m]),
        "memory_counters": [_peak(t[0])[0], _peak(m[0])[0]],
    }


def machine_text(hardware: dict) -> str:
    """The machine as a user compares machines: the CPU or chip and its cores, the memory,
    the GPU (its name, or a Mac's GPU core count), macOS and the power source where known."""
    parts = [f"{hardware.get('cpu', 'unknown')} ({hardware.get('cpu_count', 'unknown')} cores)"]
    memory = hardware.get("memory_bytes")
    parts.append(f"{memory / 2**30:.0f} GiB memory" if isinstance(memory, (int, float)) else "memory unknown")
    if hardware.get("gpu"):
        parts.append(f"GPU {hardware['gpu']}")
    if "gpu_cores" in hardware:
        parts += [f"{hardware['gpu_cores']} GPU cores", f"macOS {hardware.get('macos')}", f"on {hardware.get('power')}"]
    parts.append(hardware.get("os", ""))
    return ", ".join(p for p in parts if p)


def _ci(figure: dict, fmt: str) -> str:
    ci = figure.get("ci95")
    return f"95% CI {fmt.format(ci[0])} to {fmt.format(ci[1])}" if ci else "no interval from one pair"


def _ratio_line(what: str, figure: dict | None) -> str:
    if figure is None:
        return f"- {what}: not measured (no pair of runs took steps past their warm-up)."
    return f"- {what}: {figure['ratio']:.2f}x ({_ci(figure, '{:.2f}x')}, {figure['n']} pair{'s' * (figure['n'] != 1)})."


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def render(title: str, runs: list[dict], settings: dict | None = None) -> str:
    """The comparison's Markdown: per seed both accuracies, throughputs and peaks, then the
    paired figures with the hardware and versions that produced them, and their limits."""
    pairs = pairs_of(runs)
    lines = [f"## {title}", ""]
    if settings:
        lines += [f"`{settings['command']}`", ""]
    if not pairs:
        return "\n".join(lines + ["No seed has both runs finished yet.", ""])
    lines += [
        "| seed | PyTorch accuracy | MLX accuracy | PyTorch images/s (median, IQR) | MLX images/s (median, IQR) "
        "| PyTorch s/epoch | MLX s/epoch | PyTorch peak memory | MLX peak memory |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t, m in pairs:
        cells = [str(t["seed"]), f"{100 * t['test_accuracy']:.2f}%", f"{100 * m['test_accuracy']:.2f}%"]
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
        cells += [f"{_mib(_peak(r)[1])} ({_peak(r)[0]})" for r in (t, m)]
        lines.append("| " + " | ".join(cells) + " |")
    s = summary(pairs)
    acc = s["accuracy"]
    p = f", paired t-test p = {acc['p']:.3g}" if acc["p"] is not None else ""
    ci = "" if acc["ci95"] is None else f", 95% CI {100 * acc['ci95'][0]:+.2f} to {100 * acc['ci95'][1]:+.2f}"
    t0, m0 = pairs[0]
    lines += [
        "",
        f"- Accuracy, MLX - PyTorch over {s['pairs']} pair{'s' * (s['pairs'] != 1)}: "
        f"{100 * acc['mean']:+.2f} points{ci}{p}.",
        _ratio_line(
            "Throughput MLX / PyTorch (training images per second after the warm-up, geometric mean)", s["throughput"]
        ),
        _ratio_line("Epoch time MLX / PyTorch (seconds of an epoch's steps)", s["epoch_time"]),
        f"- Peak memory MLX / PyTorch ({s['memory_counters'][1]} / {s['memory_counters'][0]}): "
        f"{s['memory']['ratio']:.2f}x ({_ci(s['memory'], '{:.2f}x')}).",
        f"- Hardware: {machine_text(t0['hardware'])}; PyTorch on {t0['hardware']['accelerator']}, MLX on "
        f"{m0['hardware']['accelerator']}. Versions: torch {t0['versions'].get('torch')}, Lightning "
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
    for t, m in pairs:
        b.plot([0, 1], [100 * t["test_accuracy"], 100 * m["test_accuracy"]], marker="o", color="tab:gray")
    b.set(xticks=[0, 1], xticklabels=["PyTorch", "MLX"], ylabel="test accuracy (%)", xlim=(-0.3, 1.3))
    a.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def read_comparison(folder: str | Path) -> tuple[dict, list[dict]]:
    """(settings from compare.json, the run.json records of its runs) of a comparison folder."""
    folder = Path(folder)
    settings = json.loads((folder / COMPARE_JSON).read_text())
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob("*-seed*/run.json"))]
    return settings, runs
