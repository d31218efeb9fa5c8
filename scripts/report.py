"""Regenerate Results.md from the run logs (run.json) committed under runs/.

    python scripts/report.py            # writes Results.md
    python scripts/report.py --check    # exit 1 if Results.md is out of date
"""

import argparse
import sys
from pathlib import Path

from cifar_lightning.reporting import load_runs, render_results

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default=str(ROOT / "runs"))
    p.add_argument("--output", default=str(ROOT / "Results.md"))
    p.add_argument("--check", action="store_true")
    args = p.parse_args()
    runs = load_runs(args.runs)
    for run in runs:  # paths relative to the repository, as committed
        run["_path"] = Path(run["_path"]).resolve().relative_to(ROOT).as_posix() if ROOT in Path(run["_path"]).resolve().parents else run["_path"]
    sections = []
    for extra in sorted(Path(args.runs).glob("*.md")):  # e.g. benchmark tables written by scripts
        sections.append(extra.read_text())
    text = render_results(runs, sections)
    if args.check:
        current = Path(args.output).read_text() if Path(args.output).exists() else ""
        if current != text:
            print(f"{args.output} is out of date: run python scripts/report.py", file=sys.stderr)
            return 1
        return 0
    Path(args.output).write_text(text)
    print(f"wrote {args.output} from {len(runs)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
