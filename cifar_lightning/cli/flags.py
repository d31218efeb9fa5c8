"""Command-line flags shared by scripts/fit.py and scripts/fit_mlx.py, parsed once into a
``RunConfig`` (``core.run.config``), which the lifecycle checks before any data is read or
any model is built, with a message in the user's terms (the flag's name, what was given,
what is expected).
"""

from __future__ import annotations

import argparse
import sys

from cifar_lightning.core.datasets import DATASETS
from cifar_lightning.core.errors import CIFARError, ExitCode
from cifar_lightning.core.recipes import OPTIMIZER_KINDS
from cifar_lightning.core.run.config import RunConfig
from cifar_lightning.core.spec import MODEL_NAMES


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line ``error: ...`` and exit status 2 (no usage block):
    the parser of every command (fit, fit_mlx, compare, predict, export, report)."""

    def error(self, message: str):
        exit_with(f"{message} (see --help)")


def common_parser(description: str) -> argparse.ArgumentParser:
    p = OneLineParser(description=description)
    p.add_argument("--dataset", default="cifar10", choices=sorted(DATASETS), help="which CIFAR (default: cifar10)")
    p.add_argument(
        "--model",
        default="small_cnn",
        choices=MODEL_NAMES,
        help="the network, trained with its own recipe (default: small_cnn)",
    )
    p.add_argument(
        "--optimizer",
        choices=OPTIMIZER_KINDS,
        help="sgd: every model's own recipe; adamw: AdamW on every parameter at torch.optim.AdamW's "
        "defaults (lr 1e-3 per step at the schedule's peak, betas 0.9/0.999, decoupled weight "
        "decay 1e-2) under the model's schedule, for any model; muon: --model fast only, "
        "airbench94_muon's recipe (Muon lr 0.24 per step on the conv filters, Nesterov SGD on "
        "the rest, batch 2000, 8 epochs) (default: sgd)",
    )
    p.add_argument(
        "--muon-dtype",
        choices=("bfloat16", "float32"),
        help="the dtype of Muon's Newton-Schulz iterations (default: bfloat16, as published)",
    )
    p.add_argument(
        "--epochs",
        type=float,
        help="training epochs, may be fractional (default: the model's recipe: 20 small_cnn, "
        "40 resnet18, 9.9 fast, 8 fast with --optimizer muon)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        help="training images per process per optimizer step; with N processes (fit.py's "
        "--devices, mlx.launch -n for fit_mlx.py) the step sees N times as many (default: the model's recipe: "
        "128 small_cnn, 64 resnet18, 1024 fast, "
        "2000 fast with --optimizer muon)",
    )
    p.add_argument(
        "--lr",
        type=float,
        help="peak learning rate in the recipe's units: per optimizer step for small_cnn (0.05) and "
        "resnet18 (0.1) and for --optimizer adamw (1e-3); per 1024 examples of summed loss for "
        "fast (11.5, airbench94's unit); not for --optimizer muon, whose four optimisers have "
        "their own (default: the recipe's)",
    )
    p.add_argument(
        "--momentum",
        type=float,
        help="SGD momentum in [0, 1), for fast only (default: 0.85), or AdamW's beta1 (default: "
        "0.9); small_cnn and resnet18 with SGD cycle it 0.95 -> 0.85 -> 0.95 with OneCycle; not for "
        "--optimizer muon, whose four optimisers have their own",
    )
    p.add_argument(
        "--weight-decay",
        type=float,
        help="weight decay in the recipe's units: L2, as torch's SGD takes it, for small_cnn and "
        "resnet18 (5e-4); per 1024 examples and decoupled from --lr for fast (0.0153), so the "
        "per-step shrink grows with --batch-size; decoupled, as torch's AdamW takes it, for "
        "--optimizer adamw (1e-2); not for --optimizer muon, whose four optimisers have their own "
        "(default: the recipe's)",
    )
    p.add_argument(
        "--seed",
        type=int,
        help="seed of initialisation, data order, augmentation and dropout "
        "(default: the model's recipe: 1111 small_cnn and resnet18, "
        "0 fast)",
    )
    p.add_argument(
        "--data-dir", default="data", help="folder holding cifar-10-batches-py/ or cifar-100-python/ (default: data)"
    )
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading missing data")
    p.add_argument(
        "--val-size",
        type=int,
        default=0,
        help="hold out this many training images for validation; with 0, 'val/acc' is measured "
        "on the test set (default: 0)",
    )
    p.add_argument("--train-subset", type=int, help="train on the first N training images only (default: all)")
    p.add_argument(
        "--output-dir",
        default=None,
        help="run folder (default: a new runs/<framework>-<model>-<dataset>-<date>-<time>/)",
    )
    p.add_argument("--overwrite", action="store_true", help="let --output-dir replace a finished run")
    p.add_argument(
        "--resume",
        metavar="CKPT",
        help="continue an interrupted run from its checkpoint, in its folder (default: a new run)",
    )
    p.add_argument(
        "--weights",
        metavar="PATH",
        help="start from weights saved by either framework, e.g. another run's "
        "checkpoints/initial.pt or initial.npz (default: a fresh initialisation "
        "from --seed)",
    )
    p.add_argument("--test-only", action="store_true", help="evaluate --weights on the test set, no training")
    p.add_argument(
        "--no-tta",
        action="store_true",
        help="evaluate without test-time augmentation (on by default where the recipe uses it: fast)",
    )
    p.add_argument(
        "--dropout", type=float, metavar="P", help="small_cnn's dropout probability (default: 0.25; 0 turns it off)"
    )
    p.add_argument(
        "--log-every-n-steps",
        type=int,
        metavar="N",
        help="write a training-loss row to metrics.csv every N optimizer steps "
        "(default: about 20 rows a run, at most every 50 steps)",
    )
    p.add_argument(
        "--limit-train-batches",
        type=int,
        metavar="N",
        help="train on the first N batches of each epoch only, e.g. for a quick check (default: all)",
    )
    p.add_argument(
        "--limit-val-batches",
        type=int,
        metavar="N",
        help="validate on N batches only; 0 skips validation (default: all)",
    )
    p.add_argument(
        "--limit-test-batches",
        type=int,
        metavar="N",
        help="test on N batches only: the test accuracy is then that of a part of the test set (default: all)",
    )
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="if another training holds the machine's training lock, exit at once instead of waiting",
    )
    p.add_argument(
        "--lock-file",
        metavar="PATH",
        help="the training lock (default: $CIFAR_LOCK_FILE, else cifar-lightning-mlx.lock in the "
        "system's temporary folder; 'none' trains without it)",
    )
    return p


def run_config(args: argparse.Namespace, argv: list[str]) -> RunConfig:
    """The common flags as a RunConfig (the script's own flags are its backend's)."""
    shared = {f: getattr(args, f) for f in RunConfig.__dataclass_fields__ if hasattr(args, f)}
    return RunConfig(
        **shared, download=not args.no_download, tta=not args.no_tta, wait=not args.no_wait, argv=tuple(argv)
    )


def exit_with(message: str, code: int = ExitCode.USAGE) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def run_cli(parser: argparse.ArgumentParser, make_backend, argv: list[str] | None, callbacks: tuple) -> dict:
    """Parse `argv` into a RunConfig and the backend ``make_backend(args)`` makes, run it
    (``core.run.lifecycle.run``) and return its record ({} on a rank other than 0).

    The library's own errors (``CIFARError``: bad flags, missing data, wrong weights, a
    diverged run) end as one line on stderr and their exit status (``ExitCode``); any other
    exception is a bug and keeps its traceback.
    """
    from cifar_lightning.core.run.lifecycle import run

    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    try:
        result = run(run_config(args, argv), make_backend(args), callbacks)
    except KeyboardInterrupt:  # e.g. while waiting for the training lock: nothing was trained
        exit_with("interrupted", ExitCode.INTERRUPTED)
    except CIFARError as e:
        exit_with(str(e), e.exit_code)
    return result.record if result is not None else {}
