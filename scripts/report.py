"""Regenerate Results.md from the run logs (run.json) committed under runs/. Also installed as cifar-report.

python scripts/report.py            # writes Results.md from the committed logs
python scripts/report.py --check    # exit 1 if Results.md is out of date
python scripts/report.py --all --output MyResults.md   # your own runs too
"""

import sys
from pathlib import Path

from cifar_lightning.cli.report import main, tracked_run_logs  # noqa: F401  (tests import it from here)

if __name__ == "__main__":
    sys.exit(main(root=Path(__file__).resolve().parents[1]))
