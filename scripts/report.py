"""Regenerate Results.md from the run logs (run.json) committed under runs/.

    python scripts/report.py            # writes Results.md
    python scripts/report.py --check    # exit 1 if Results.md is out of date
"""

import argparse
import json
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default=str(ROOT / "runs"), help="folder searched for run.json logs (default: runs/)")
    p.add_argument("--output", default=str(ROOT / "Results.md"), help="the report to write (default: Results.md)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if the report is out of date")
    args = p.parse_args()
    args.runs, args.output = Path(args.runs).resolve(), Path(args.output).resolve()
    os.chdir(ROOT)  # run folders are named relative to the repository, as committed
    runs = load_runs(args.runs)
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
