"""cifar-report (scripts/report.py): regenerate Results.md from the run logs (run.json) under runs/.

    cifar-report            # writes Results.md from the committed logs
    cifar-report --check    # exit 1 if Results.md is out of date
    cifar-report --all --output MyResults.md   # your own runs too

Run from the repository's root (scripts/report.py is, wherever it is called from). In a git
checkout only the run.json files git tracks are read (your own runs under runs/ do not
change the published report until you commit them); --all reads every one. The
PyTorch-vs-MLX plots of the default report go beside their runs (committed with them);
those of any other report (--all, or another --output) go in a folder beside that report,
<output name>-plots/, so that no committed plot is ever overwritten.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from cifar_lightning.cli.flags import OneLineParser, exit_with
from cifar_lightning.core.run.folder import RUN_JSON
from cifar_lightning.report.grouping import pytorch_vs_mlx_groups
from cifar_lightning.report.logs import load_runs
from cifar_lightning.report.plots import plot_pytorch_vs_mlx
from cifar_lightning.report.results import (
    committed_path,
    comparison_headings,
    comparison_plot_paths,
    render_results,
)

REPORT = "Results.md"  # the default report, in the repository's root


def tracked_run_logs(folder: Path) -> set[Path] | None:
    """The run.json files git tracks under `folder`; None outside a git checkout."""
    try:
        r = subprocess.run(
            ["git", "-C", str(folder), "ls-files", "-z", "--full-name", "--", "."],
            capture_output=True,
            text=True,
            timeout=30,
        )
        top = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--show-toplevel"], capture_output=True, text=True, timeout=30
        )
    except OSError:
        return None
    if r.returncode or top.returncode:
        return None
    root = Path(top.stdout.strip())
    return {(root / name).resolve() for name in r.stdout.split("\0") if name.endswith(RUN_JSON)}


def plot_folder(output: Path, read_all: bool, root: Path) -> Path | None:
    """Where a report's PyTorch-vs-MLX plots go, relative to the report's folder: None for
    the default report of the tracked logs (beside the runs, where they are committed);
    otherwise "<output name>-plots" (`output` an absolute path)."""
    if output == root / REPORT and not read_all:
        return None
    return Path(f"{output.stem}-plots")


def write_plots(runs: list[dict], plots: dict, base: Path) -> None:
    """Draw each PyTorch-vs-MLX group's curves at ``base / plots[key]``."""
    groups = pytorch_vs_mlx_groups(runs)
    headings = comparison_headings(groups)
    for key, group in groups.items():
        path = base / plots[key]
        path.parent.mkdir(parents=True, exist_ok=True)
        plot_pytorch_vs_mlx(group, path, textwrap.fill(headings[key].replace("`", ""), 110))
        print(f"wrote {path}")


def main(argv: list[str] | None = None, root: str | Path | None = None) -> int:
    """Write (or --check) the report of the runs under `root` (default: the current folder,
    the repository's root); returns the exit status."""
    root = Path(root or Path.cwd()).resolve()
    p = OneLineParser(description="Regenerate Results.md from the run logs (run.json) under runs/.")
    p.add_argument("--runs", default=str(root / "runs"), help="folder searched for run.json logs (default: runs/)")
    p.add_argument(
        "--output",
        default=str(root / REPORT),
        help="the report to write (default: Results.md); another name puts its plots in <name>-plots/ beside it",
    )
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if the report is out of date")
    p.add_argument(
        "--all",
        action="store_true",
        help="read every run.json under --runs, not only those git tracks (default: tracked only, "
        "when the folder is in a git checkout); its plots go in <output name>-plots/",
    )
    args = p.parse_args(argv)
    typed = args.runs
    args.runs, args.output = Path(args.runs).resolve(), Path(args.output).resolve()
    if not args.runs.is_dir():  # a typo must not rewrite the report from no runs
        exit_with(f"--runs {typed}: no such folder; expected the folder of the run logs (run.json), e.g. runs/")
    os.chdir(root)  # run folders are named relative to the repository, as committed
    tracked = None if args.all else tracked_run_logs(args.runs)
    runs = load_runs(args.runs, tracked)
    if not runs:
        tracked_only = " that git tracks (--all reads the others too)" if tracked is not None else ""
        exit_with(
            f"--runs {typed}: holds no finished run's run.json{tracked_only}; expected a folder of runs; "
            f"{args.output.name} is left as it is"
        )
    for run in runs:  # paths relative to the repository, as committed
        run["_path"] = committed_path(Path(run["_path"]), root)
    bench = Path(args.runs) / "benchmarks.json"  # written by scripts/benchmark.py
    folder = plot_folder(args.output, args.all, root)
    plots = comparison_plot_paths(pytorch_vs_mlx_groups(runs), folder)
    gpu = [  # written by scripts/benchmark.py --gpu
        (committed_path(path, root), json.loads(path.read_text()))
        for path in sorted((Path(args.runs) / "gpu").glob("*.json"))
    ]
    more = [  # scripts/benchmark.py --output runs/benchmarks-<name>.json: further passes, a section each
        (committed_path(path, root), json.loads(path.read_text()))
        for path in sorted(Path(args.runs).glob("benchmarks-*.json"))
    ]
    text = render_results(runs, json.loads(bench.read_text()) if bench.exists() else None, plots, gpu, more)
    if args.check:
        current = Path(args.output).read_text() if Path(args.output).exists() else ""
        if current != text:
            print(f"{args.output} is out of date: run python scripts/report.py", file=sys.stderr)
            return 1
        return 0
    Path(args.output).write_text(text)
    write_plots(runs, plots, root if folder is None else args.output.parent)
    print(f"wrote {args.output} from {len(runs)} runs")
    return 0


def command() -> None:
    """The console script ``cifar-report``."""
    sys.exit(main())
