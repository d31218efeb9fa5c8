"""Regenerate Results.md from the run logs (run.json) committed under runs/.

    python scripts/report.py            # writes Results.md from the committed logs
    python scripts/report.py --check    # exit 1 if Results.md is out of date
    python scripts/report.py --all --output MyResults.md   # your own runs too

In a git checkout only the run.json files git tracks are read (your own runs under
runs/ do not change the published report until you commit them); --all reads every one.
"""

import argparse
import json
import subprocess
import os
import sys
from pathlib import Path

from cifar_lightning.core.reporting import (
    comparison_plot_path,
    load_runs,
    plot_pytorch_vs_mlx,
    pytorch_vs_mlx_groups,
    render_results,
)

ROOT = Path(__file__).resolve().parents[1]


def tracked_run_logs(folder: Path) -> set[Path] | None:
    """The run.json files git tracks under `folder`; None outside a git checkout."""
    try:
        r = subprocess.run(["git", "-C", str(folder), "ls-files", "-z", "--full-name", "--", "."],
                           capture_output=True, text=True, timeout=30)  # fmt: skip
        top = subprocess.run(["git", "-C", str(folder), "rev-parse", "--show-toplevel"],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
    except OSError:
        return None
    if r.returncode or top.returncode:
        return None
    root = Path(top.stdout.strip())
    return {(root / name).resolve() for name in r.stdout.split("\0") if name.endswith("run.json")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default=str(ROOT / "runs"), help="folder searched for run.json logs (default: runs/)")
    p.add_argument("--output", default=str(ROOT / "Results.md"), help="the report to write (default: Results.md)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if the report is out of date")
    p.add_argument("--all", action="store_true",
                   help="read every run.json under --runs, not only those git tracks (default: tracked only, "
                        "when the folder is in a git checkout)")  # fmt: skip
    args = p.parse_args()
    args.runs, args.output = Path(args.runs).resolve(), Path(args.output).resolve()
    os.chdir(ROOT)  # run folders are named relative to the repository, as committed
    runs = load_runs(args.runs, None if args.all else tracked_run_logs(args.runs))
    for run in runs:  # paths relative to the repository, as committed
        run["_path"] = Path(run["_path"]).resolve().relative_to(ROOT).as_posix() if ROOT in Path(run["_path"]).resolve().parents else run["_path"]
    bench = Path(args.runs) / "benchmarks.json"  # written by scripts/benchmark.py
    text = render_results(runs, json.loads(bench.read_text()) if bench.exists() else None)
    if args.check:
        current = Path(args.output).read_text() if Path(args.output).exists() else ""
        if current != text:
            print(f"{args.output} is out of date: run python scripts/report.py", file=sys.stderr)
            return 1
        return 0
    Path(args.output).write_text(text)
    for (model, dataset, length, hardware, _), group in pytorch_vs_mlx_groups(runs).items():
        path = ROOT / comparison_plot_path(group)
        plot_pytorch_vs_mlx(group, path, f"PyTorch vs MLX: {model} on {dataset}, {length}, {hardware}")
        print(f"wrote {path}")
    print(f"wrote {args.output} from {len(runs)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
