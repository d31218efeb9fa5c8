"""Command-line flags shared by scripts/fit.py and scripts/fit_mlx.py."""

from __future__ import annotations

import argparse
import sys

from .datasets import DATASETS, CIFARDataError
from .spec import MODEL_NAMES
from .weights import WeightsMismatchError


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit status 2."""


def common_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--dataset", default="cifar10", choices=sorted(DATASETS))
    p.add_argument("--model", default="small_cnn", choices=MODEL_NAMES)
    p.add_argument("--epochs", type=float, help="training epochs (default: the model's recipe)")
    p.add_argument("--batch-size", type=int, help="(default: the model's recipe)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the model's recipe)")
    p.add_argument("--momentum", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--seed", type=int, help="(default: the model's recipe)")
    p.add_argument("--data-dir", default="data", help="folder holding cifar-10-batches-py/ or cifar-100-python/")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading missing data")
    p.add_argument("--val-size", type=int, default=0, help="hold out N training images for validation")
    p.add_argument("--train-subset", type=int, help="train on the first N training images only (quick runs)")
    p.add_argument("--output-dir", default=None, help="run folder (default: runs/<framework>-<model>-<dataset>)")
    p.add_argument("--resume", metavar="CKPT", help="continue an interrupted run from its checkpoint")
    p.add_argument("--weights", metavar="PATH", help="start from weights saved by either framework")
    p.add_argument("--test-only", action="store_true", help="evaluate --weights on the test set, no training")
    p.add_argument("--no-tta", action="store_true", help="evaluate without test-time augmentation")
    p.add_argument("--dropout", type=float, metavar="P",
                   help="small_cnn's dropout probability (default: 0.25; 0 turns it off)")  # fmt: skip
    p.add_argument("--log-every-n-steps", type=int, metavar="N",
                   help="write a training-loss row to metrics.csv every N optimizer steps "
                        "(default: about 20 rows a run, at most every 50 steps)")  # fmt: skip
    return p


def model_kwargs(args: argparse.Namespace) -> dict:
    """Architecture options from the flags, passed to build_model in either framework."""
    if args.dropout is None:
        return {}
    if args.model != "small_cnn":
        raise UsageError(f"--dropout applies to --model small_cnn only, not {args.model}")
    if not 0 <= args.dropout < 1:
        raise UsageError(f"--dropout must lie in [0, 1), got {args.dropout}")
    return {"dropout": args.dropout}


def log_every_n_steps(args: argparse.Namespace, total_steps: int) -> int:
    """--log-every-n-steps, or about 20 rows a run (at most every 50 steps)."""
    if args.log_every_n_steps is None:
        return max(1, min(50, total_steps // 20))
    if args.log_every_n_steps < 1:
        raise UsageError(f"--log-every-n-steps must be a positive number of steps, got {args.log_every_n_steps}")
    return args.log_every_n_steps


def recipe_overrides(args: argparse.Namespace) -> dict:
    out = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "momentum": args.momentum,
        "weight_decay": args.weight_decay,
        "seed": args.seed,
    }
    if args.no_tta:
        out["tta"] = False
    for key in ("epochs", "batch_size", "lr"):
        if out[key] is not None and out[key] <= 0:
            raise UsageError(f"--{key.replace('_', '-')} must be positive, got {out[key]}")
    if args.test_only and not args.weights:
        raise UsageError("--test-only needs --weights PATH (a checkpoint of either framework)")
    if args.resume and args.weights:
        raise UsageError("--resume and --weights exclude each other: --resume restores the weights too")
    return out


def exit_with(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def run_cli(parser: argparse.ArgumentParser, run, argv: list[str] | None, callbacks: tuple,
            extra_errors: tuple = ()) -> dict:  # fmt: skip
    """Parse `argv` and call ``run(args, callbacks)``; bad input (missing data, wrong weights,
    bad flags, and `extra_errors`) ends as one line on stderr and exit status 2."""
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return run(args, callbacks)
    except (UsageError, CIFARDataError, WeightsMismatchError, FileNotFoundError, ValueError, *extra_errors) as e:
        exit_with(str(e))
