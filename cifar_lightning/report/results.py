"""Results.md's text from the run logs: the table of every run, the accuracy targets,
repeated runs and same-seed reruns, per-class accuracy side by side, one section per
PyTorch-vs-MLX group (with its pairs and its verdict), each run's classes, and the
benchmarks, and the GPU benchmarks (``scripts/benchmark.py --gpu``, runs/gpu/*.json); the
headings and plot paths of the PyTorch-vs-MLX groups.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from cifar_lightning.core.run.files import limits_text
from cifar_lightning.report.grouping import (
    configurations,
    one_per_seed,
    pytorch_vs_mlx_groups,
    recipe_runs,
    run_recipe,
    same_seed_reruns,
)
from cifar_lightning.report.logs import (
    code_note,
    code_text,
    hardware_short,
    has_split_times,
    length_text,
    train_images_per_s,
)
from cifar_lightning.report.pairing import paired_runs
from cifar_lightning.report.significance import gap_verdict, mean_std, paired_verdict


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _hardware(run: dict) -> str:
    """CPU (cores), operating system and device as recorded, the GPU's name where there is one."""
    h = run["hardware"]
    device = f"{h['accelerator']} ({h['gpu']})" if h.get("gpu") else h["accelerator"]
    return f"{h['cpu']} ({h['cpu_count']} cores), {h['os']}, {device}"


# ------------------------------------------------------------ times
OLD_TIME_MARK = "†"
OLD_TIME_NOTE = (
    f"{OLD_TIME_MARK} Logged before training, validation and test times were recorded apart "
    "(`validation_time_s`, `test_time_s`): this train time also spans the validation passes, and in "
    "PyTorch the final checkpoint save and the whole test pass, so no training images/s (n/a) can be "
    "computed from it, and it is not comparable with the train time of newer runs."
)


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


def _run_row(run: dict) -> str:
    extra = run.get("test_accuracy_no_tta")
    return (
        f"| `{run['_path']}` | {run['framework']} | {run['model']} | {run['dataset']} | {length_text(run)} "
        f"| {_pct(run['test_accuracy'])} | {_pct(extra) if extra is not None else '-'} "
        f"| {_time_cell(run)} | {limits_text(run['hyperparameters']) or '-'} | {code_text(run)} | {_hardware(run)} |"
    )


def _all_runs(runs: list[dict]) -> list[str]:
    """The table of every run, one row each, and the note on old time spans where one has them."""
    lines = [
        "## All runs",
        "",
        "| run | framework | model | dataset | epochs (steps) | test acc | test acc, no TTA | train time | limits "
        "| code | hardware |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *[_run_row(r) for r in runs],
        "",
    ]
    if any(r["epochs"] and not has_split_times(r) for r in runs):
        lines += [OLD_TIME_NOTE, ""]
    return lines


# ------------------------------------------------------------ accuracy targets


def targets_section(runs: list[dict]) -> list[str]:
    """Each declared target (``recipes.TARGETS``) against what runs of the recipe reached."""
    from cifar_lightning.core.recipes import TARGETS

    lines = [
        "## Accuracy targets",
        "",
        "Targets are declared in `cifar_lightning/core/recipes.py` (`TARGETS`) with their sources. Counted: "
        "finished training runs whose every recorded hyper-parameter but the seed is the recipe's "
        "(`RECIPES`), on the full training set (`--val-size 0`, no `--train-subset`, no `--limit-*-batches` "
        "but `--limit-val-batches 0`, which skips validation and changes no weight), "
        'one run per seed. Code: the commit the counted runs were trained at ("+changes": with uncommitted '
        "changes); later commits may train the recipe differently.",
        "",
        "| recipe | dataset | target | source | framework | runs | mean | best | met (mean) | code | hardware |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in TARGETS:
        by_fw: dict[str, list[dict]] = {}
        for r in recipe_runs(runs, t.recipe, t.dataset):
            by_fw.setdefault(r["framework"], []).append(r)
        head = f"| {t.recipe} | {t.dataset} | {_pct(t.accuracy)} | {t.source}"
        if not by_fw:
            lines.append(f"{head} | - | 0 | - | - | no run of the recipe yet | - | - |")
        for fw, rs in sorted(by_fw.items()):
            rs = one_per_seed(rs)
            accs = [r["test_accuracy"] for r in rs]
            mean = sum(accs) / len(accs)
            codes = "; ".join(sorted({code_note(r) for r in rs}))
            hardware = "; ".join(sorted({hardware_short(r) for r in rs}))
            lines.append(
                f"{head} | {fw} | {len(rs)} | {_pct(mean)} | {_pct(max(accs))} "
                f"| {'yes' if mean >= t.accuracy else 'no'} | {codes} | {hardware} |"
            )
    return lines + [""]


def committed_path(path: Path, root: Path) -> str:
    """`path` relative to the repository `root` (as it is committed), or as given when outside it."""
    return path.resolve().relative_to(root).as_posix() if root in path.resolve().parents else str(path)


def render_benchmarks(report: dict, path: str = "runs/benchmarks.json") -> list[str]:
    """The table of ``scripts/benchmark.py``'s JSON report, read from `path` (named in the text)."""
    h = report["hardware"]
    # a further file's section names the file in its heading too: two passes on one machine stay apart
    where = "" if path == "runs/benchmarks.json" else f": `{path}`"
    lines = [
        f"## Benchmarks ({h['cpu']}, {h['cpu_count']} cores, {h['os']}){where}",
        "",
        f"Measured by `python scripts/benchmark.py` (figures in `{path}`), one case at a time. "
        "Ratio: images/s over the row named in the last column, measured in the same pass. Time: the "
        "timed part of the case (imports: a fresh interpreter). A row run several times (its run length "
        "says how many) shows its run of median images/s, its runs alternating with those of the rows beside it, "
        "and its ratio the 95% interval that resampling those runs gives (scipy's bootstrap) in brackets.",
        "",
        "| case | images/s | time | peak memory | run length | ratio | against |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        length = (
            f"{r['steps']} steps of {r['batch_size']}"
            if "steps" in r
            else f"{r['images']} images"
            if "images" in r
            else "-"
        )
        if r.get("repeats", 1) > 1:
            length += f", median of {r['repeats']} runs"
        rate = f"{r['images_per_s']:.1f}" if "images_per_s" in r else "-"
        seconds = f"{r['seconds']:.1f} s" if "seconds" in r else "-"
        ratio = r.get("ratio", "-")
        if "ratio_interval" in r:
            ratio = f"{ratio} ({r['ratio_interval'][0]}-{r['ratio_interval'][1]})"
        lines.append(
            f"| {r['case']} | {rate} | {seconds} | {r['peak_mb']:.0f} MB | {length} "
            f"| {ratio} | {r.get('reference') or '-'} |"
        )
    return lines + [""]


def _rate(value) -> str:
    return "-" if value is None else f"{value:.0f}"


def _mb(value) -> str:
    return "-" if value is None else f"{value:.0f} MB"


def _part_status(part: dict | None) -> str | None:
    """None for a measured part; else the line that says why it holds no figures."""
    if part is None:
        return "not measured: the file predates this part"
    if part.get("status") == "skipped":
        return f"skipped: {part['reason']}"
    if part.get("status") == "failed":
        return f"failed: {part['error']}"
    return None


def _recipe_rows(recipes: dict) -> list[str]:
    lines = [
        "| recipe | flags | runs | test accuracy | seconds (airbench's protocol) | `train_time_s` "
        "| images/s (`throughput`) | peak memory | skipped seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in recipes.items():
        runs = entry.get("runs", [])
        s = entry.get("summary") or {}
        why = _part_status(entry)
        skipped = ", ".join(map(str, entry.get("skipped_seeds", []))) or "-"
        if why and not runs:
            lines.append(f"| {name} | `{entry.get('flags', '')}` | 0 | {why} | - | - | - | - | {skipped} |")
            continue
        peaks = [r["memory"]["peak_bytes"][r["memory"]["primary"]] / 2**20 for r in runs if r.get("memory")]

        def sd(key, scale=1):
            return f" ± {scale * s[key + '_sd']:.2f}" if s.get(key + "_sd") is not None else ""

        lines.append(
            f"| {name} | `{entry['flags']}` | {len(runs)} | {_pct(s['test_accuracy_mean'])}{sd('test_accuracy', 100)} "
            f"| {s['seconds_mean']:.2f} s{sd('seconds')} | {s['train_time_s_mean']:.2f} s "
            f"| {_rate(s['images_per_s_mean'])} | {_mb(max(peaks) if peaks else None)} | {skipped} |"
        )
    return lines


def render_gpu_benchmark(report: dict, path: str) -> list[str]:
    """The section of one ``scripts/benchmark.py --gpu`` JSON report (`path`: as named in the text)."""
    h = report["hardware"]
    where = h.get("gpu") or f"{h['cpu']} (CPU)"
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    lines = [
        f"## GPU benchmark: {where} (`{path}`)",
        "",
        f"Measured by `{report['command']}` ({report['setting']} setting, {report['created']}; "
        f"{report['wall_s']:.0f} s of a {report['budget_s']:.0f} s budget) with {versions}.",
    ]
    if report["setting"] != "full":
        lines.append("The smoke setting trains tiny subsets for a few steps: a test of the command, no measurement.")
    lines += [
        "",
        f"**Recipes.** Each row: the mean over its runs (± the standard deviation). Seconds: {report['protocol']}. "
        "`train_time_s`, `throughput` and `memory` as each run's run.json records them.",
        "",
        *_recipe_rows(report["recipes"]),
        "",
        "**Trainer.fit against the plain loop** (images/s after the case's warm-up steps; ratio: over the row named).",
        "",
    ]
    train = report.get("train")
    why = _part_status(train)
    if why:
        lines.append(why)
    else:
        lines += ["| case | device | images/s | steps | ratio | against |", "|---|---|---|---|---|---|"]
        for r in train["rows"]:
            if r.get("status") != "measured":
                lines.append(f"| {r['case']} | - | {_part_status(r)} | - | - | {r.get('reference') or '-'} |")
                continue
            lines.append(
                f"| {r['case']} | {r.get('device') or '-'} | {r['images_per_s']:.1f} | {r['steps']} of {r['batch_size']} "
                f"| {r.get('ratio', '-')} | {r.get('reference') or '-'} |"
            )
        if _part_status(train.get("mlx")):
            lines += ["", f"MLX's loops: {_part_status(train['mlx'])}."]
    lines += [
        "",
        "**Host reads per optimizer step** (calls that copy a value to the host: `.item()`, `.tolist()`, "
        "`bool()`, `float()`, ... on tensors and arrays) in a few steps of a run through the run lifecycle; "
        "the median step is an unlogged one, the largest a logged one.",
        "",
        "| loop | device | steps | reads per step (median) | most in a step | reads before / after the steps |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in (report.get("host_reads") or {}).items():
        loop = "Lightning `Trainer.fit`" if name == "pytorch" else "`MLXTrainer.fit`"
        why = _part_status(entry)
        if why:
            lines.append(f"| {loop} | - | - | {why} | - | - |")
            continue
        lines.append(
            f"| {loop} | {entry['device']} | {entry['steps']} | {entry['reads_per_step']} "
            f"| {entry['max_reads_in_a_step']} | {entry['before_steps']} / {entry['after_steps']} |"
        )
    lines += ["", "**PyTorch on CUDA against MLX on `mlx[cuda]`** (`scripts/compare.py`).", ""]
    compare = report.get("compare")
    why = _part_status(compare)
    if why:
        lines.append(why[0].upper() + why[1:] + ".")
    else:
        lines += ["| framework | runs | test accuracy | images/s | `train_time_s` |", "|---|---|---|---|---|"]
        for name, f in compare["frameworks"].items():
            rate = f"{f['images_per_s_mean']:.0f}" if f["images_per_s_mean"] else "-"
            lines.append(
                f"| {name} | {f['runs']} | {_pct(f['test_accuracy_mean']) if f['runs'] else '-'} | {rate} "
                f"| {f['train_time_s_mean'] if f['runs'] else '-'} s |"
            )
        lines += ["", f"MLX's images/s over PyTorch's: {compare['mlx_over_pytorch_images_per_s']}."]
    return lines + [""]


def render_results(
    runs: list[dict],
    benchmarks: dict | None = None,
    plot_paths: dict[tuple, Path] | None = None,
    gpu_benchmarks: list[tuple[str, dict]] = (),
    more_benchmarks: list[tuple[str, dict]] = (),
) -> str:
    """Results.md's text. `benchmarks`: runs/benchmarks.json's report; `more_benchmarks`: (path,
    report) of each further ``scripts/benchmark.py --output`` JSON (another machine, or cases
    measured again), a section each after it; `plot_paths`: where each PyTorch-vs-MLX group's
    curves are, as the report names them (default ``comparison_plot_paths``: beside the runs);
    `gpu_benchmarks`: (path, report) of each ``scripts/benchmark.py --gpu`` JSON, a section each."""
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
    lines += speed_comparisons_section(runs)
    if len(runs) > 1:
        lines += _side_by_side(runs)
    for run in runs:
        lines += [
            f"## `{run['_path']}`",
            "",
            f"- seed {run['seed']}, {run['parameters']:,} parameters, code {code_note(run)}",
        ]
        if has_split_times(run):
            lines.append(
                f"- train {run['train_time_s']:.1f} s, validation {run['validation_time_s']:.1f} s, "
                f"test {run['test_time_s']:.1f} s"
            )
        if run.get("note"):
            lines.append(f"- {run['note']}")
        lines += ["", "| class | accuracy |", "|---|---|"]
        lines += [f"| {k} | {_pct(v)} |" for k, v in run["per_class_accuracy"].items()]
        lines.append("")
    if benchmarks is not None:
        lines += render_benchmarks(benchmarks)
    for path, report in more_benchmarks:
        lines += render_benchmarks(report, path)
    for path, report in gpu_benchmarks:
        lines += render_gpu_benchmark(report, path)
    return "\n".join(lines).rstrip() + "\n"


# ------------------------------------------------------- speed comparisons
def speed_comparisons_section(runs: list[dict]) -> list[str]:
    """Every comparison folder among the runs (one ``cifar-compare`` made: its compare.json
    beside the runs), as ``report.comparison`` renders it; nothing without one."""
    from cifar_lightning.report.comparison import COMPARE_JSON, render

    folders: dict[Path, list[dict]] = {}
    for run in runs:
        parent = Path(run["_path"]).parent
        if (parent / COMPARE_JSON).is_file():
            folders.setdefault(parent, []).append(run)
    if not folders:
        return []
    lines = [
        "# Which framework is faster here: speed, memory and accuracy (`scripts/compare.py`)",
        "",
        "Each comparison trained, for every seed, a PyTorch run and then an MLX run from its initial "
        "weights (the same batches), one at a time on one machine; its folder holds `comparison.md` "
        "and `comparison.png`. Throughput counts training images per second after a stated warm-up, "
        "the clock read only once the device had finished; memory is each framework's peak by the "
        "counter named.",
        "",
    ]
    for folder, members in sorted(folders.items()):
        settings = json.loads((folder / COMPARE_JSON).read_text())
        lines += render(f"`{folder.as_posix()}`", members, settings).replace("## ", "### ", 1).splitlines()
        lines.append("")
    return lines


# ------------------------------------------------------------ repeated runs


def _group_summary(runs: list[dict]) -> list[str]:
    """Mean test accuracy of repeated runs of one configuration (distinct seeds), and the
    same-seed reruns as a reproducibility check."""
    repeated = {k: one_per_seed(g) for k, g in configurations(runs).items()}
    repeated = {k: g for k, g in repeated.items() if len(g) > 1}
    lines = []
    if repeated:
        lines += [
            "## Repeated runs (distinct seeds)",
            "",
            "One run per seed of one configuration (same framework, model, data, length, hardware and "
            "hyper-parameters); evaluations are not included.",
            "",
            "| framework | recipe | dataset | epochs (steps) | hardware | runs | seeds | mean test acc | min | max "
            "| mean, no TTA |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for (framework, _, dataset, epochs, hw, _), g in repeated.items():
            accs = [r["test_accuracy"] for r in g]
            plain = [r["test_accuracy_no_tta"] for r in g if r.get("test_accuracy_no_tta") is not None]
            seeds = ", ".join(str(r["seed"]) for r in g)
            lines.append(
                f"| {framework} | {run_recipe(g[0])} | {dataset} | {epochs} | {hw} | {len(g)} | {seeds} "
                f"| {_pct(sum(accs) / len(accs))} | {_pct(min(accs))} | {_pct(max(accs))} "
                f"| {_pct(sum(plain) / len(plain)) if plain else '-'} |"
            )
        lines.append("")
    reruns = same_seed_reruns(runs)
    if reruns:
        lines += [
            "## Same-seed reruns (reproducibility check)",
            "",
            "Runs of one configuration with the same seed: their spread is run-to-run nondeterminism, "
            "not seed noise, and they count once in the tables above.",
            "",
            "| framework | model | epochs (steps) | seed | runs | test accuracies | largest difference |",
            "|---|---|---|---|---|---|---|",
        ]
        for g in reruns:
            accs = [r["test_accuracy"] for r in g]
            lines.append(
                f"| {g[0]['framework']} | {g[0]['model']} | {length_text(g[0])} | {g[0]['seed']} | {len(g)} "
                f"| {', '.join(_pct(a) for a in accs)} | {100 * (max(accs) - min(accs)):.2f} points |"
            )
        lines.append("")
    return lines


def _processes_text(run: dict) -> str:
    """ ", 2 processes" for a data-parallel run; "" for one process (or a log without the field)."""
    world = (run.get("processes") or {}).get("world_size", 1)
    return f", {world} processes" if world > 1 else ""


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
        header = [
            f"{fw} {run_recipe(g[0])}, {ep}, {hw}" + _processes_text(g[0]) + (f", {len(g)} runs" if len(g) > 1 else "")
            for (fw, _, _, ep, hw, _), g in groups.items()
        ]
        lines += [
            f"## Side by side: {dataset}",
            "",
            "| class | " + " | ".join(header) + " |",
            "|---|" + "---|" * len(groups),
        ]
        for c in ["overall", *classes]:
            cells = []
            for g in groups.values():
                vals = [r["test_accuracy"] if c == "overall" else r["per_class_accuracy"][c] for r in g]
                cells.append(_pct(sum(vals) / len(vals)))
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


# ------------------------------------------------------------ PyTorch vs MLX


def _mean_spread(values: list[float]) -> str:
    """ "mean ± std" in percent and points; the value alone for a single run (no spread to give)."""
    if len(values) == 1:
        return _pct(values[0])
    m, sd = mean_std(values)
    return f"{_pct(m)} ± {100 * sd:.2f}"


PAIRING_TEXT = (
    "Paired runs: each MLX run below was started from its PyTorch run's initial weights "
    "(`--weights <PyTorch run>/checkpoints/initial.pt` in its command) with the same seed, so both saw the same "
    "batches: the data order and the augmentation draws come from the seed in both frameworks. The two runs of a "
    "pair differ only by the framework's arithmetic and its own random streams (such as dropout), so the "
    "seed-to-seed spread (initial weights, data order) cancels in their difference, and the paired t-test "
    "(`scipy.stats.ttest_rel`) tests the mean of the differences against their own spread."
)


def _loss(run: dict) -> str:
    return "n/a" if run.get("test_loss") is None else f"{run['test_loss']:.4f}"


def _paired_lines(pairs: list[tuple[dict, dict]]) -> list[str]:
    """What pairing means, one row per pair, and the mean difference with its standard deviation."""
    lines = [
        PAIRING_TEXT,
        "",
        "| seed | PyTorch test acc | MLX test acc | MLX - PyTorch (points) | PyTorch test loss | MLX test loss "
        "| PyTorch run | MLX run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t, m in pairs:
        lines.append(
            f"| {t['seed']} | {_pct(t['test_accuracy'])} | {_pct(m['test_accuracy'])} "
            f"| {100 * (m['test_accuracy'] - t['test_accuracy']):+.2f} | {_loss(t)} | {_loss(m)} "
            f"| `{t['_path']}` | `{m['_path']}` |"
        )
    diffs = [m["test_accuracy"] - t["test_accuracy"] for t, m in pairs]
    mean, sd = mean_std(diffs)
    if len(diffs) > 1:
        summary = (
            f"over {len(pairs)} pairs: {100 * mean:+.2f} ± {100 * sd:.2f} points (mean ± standard deviation "
            "of the differences)"
        )
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
    return (
        f"| {framework} | {len(runs)} | {', '.join(str(r['seed']) for r in runs)} | {_mean_spread(accs)} "
        f"| {_pct(min(accs))} | {_pct(max(accs))} | {_mean_time_cell(runs)} | {_images_per_s_cell(runs)} "
        f"| {', '.join(sorted({code_text(r) for r in runs}))} | {'; '.join(sorted({_hardware(r) for r in runs}))} "
        f"| {', '.join(f'`{f}`' for f in folders)} |"
    )


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
        lines += [
            f"## {headings[key]}",
            "",
            "| framework | runs | seeds | test acc, mean ± std (points) | min | max | train time, mean "
            "| train images/s | code | hardware | runs in |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            _framework_row("pytorch", g["pytorch"]),
            _framework_row("mlx", g["mlx"]),
        ]
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
                lines += [
                    f"Paired, the {len(pairs)} pair{'s' * (len(pairs) > 1)} above: {paired}.",
                    "",
                    f"MLX minus PyTorch, test accuracy, every run of the table taken as an independent sample "
                    f"({unpaired} of them in no pair): {gap_verdict(accs['pytorch'], accs['mlx'])}. "
                    f"{curves}",
                ]
        lines += ["", "| class | PyTorch, mean | MLX, mean | MLX - PyTorch |", "|---|---|---|---|"]
        for c in g["pytorch"][0]["per_class_accuracy"]:
            pt = mean_std([r["per_class_accuracy"][c] for r in g["pytorch"]])[0]
            ml = mean_std([r["per_class_accuracy"][c] for r in g["mlx"]])[0]
            lines.append(f"| {c} | {_pct(pt)} | {_pct(ml)} | {100 * (ml - pt):+.2f} |")
        lines.append("")
    return lines
