"""cifar-fit (scripts/fit.py): train a CIFAR classifier with PyTorch Lightning (cpu, mps or cuda).

cifar-fit --accelerator mps                      # SmallCNN, its recipe
cifar-fit --model fast --data-dir ../shared/data --no-download
"""

from __future__ import annotations

import argparse

from cifar_lightning.cli.flags import common_parser, run_cli


def parser() -> argparse.ArgumentParser:
    p = common_parser("Train a CIFAR classifier with PyTorch Lightning.")
    p.add_argument(
        "--accelerator",
        default="auto",
        choices=("auto", "cpu", "mps", "cuda"),
        help="where torch trains; auto: cuda, else mps, else cpu (default: auto)",
    )
    p.add_argument("--devices", default="auto", help="number of devices, or auto (default: auto)")
    p.add_argument(
        "--precision",
        default="32-true",
        help="Lightning precision: 32-true, 16-mixed, bf16-mixed, 16-true, bf16-true or 64-true; "
        "run.json records the one used (16-mixed runs as bf16-mixed on cpu) (default: 32-true)",
    )
    p.add_argument(
        "--strategy", default="auto", help="Lightning strategy, e.g. ddp for several devices (default: auto)"
    )
    p.add_argument(
        "--num-nodes",
        type=int,
        default=1,
        metavar="N",
        help="machines training together, each running --devices processes (Lightning's num_nodes; "
        "start the same command on every machine with MASTER_ADDR, MASTER_PORT, NODE_RANK set, "
        "see the README's multi-process section); --batch-size is per process (default: 1)",
    )
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="NHWC memory format for the convolutions; --no-channels-last keeps NCHW (default: on for "
        "cpu, where it trains the fast net 1.3x faster, and cuda, as NVIDIA recommends for "
        "convolutions on tensor cores; off for mps)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="compile the model with torch.compile (default: off; the first steps are slower while it "
        "compiles; results differ from eager mode by float rounding, and dropout draws other masks)",
    )
    return p


def backend(args: argparse.Namespace):
    """The torch backend of fit.py's own flags."""
    from cifar_lightning.backend import TorchBackend

    return TorchBackend(
        accelerator=args.accelerator,
        devices=args.devices,
        precision=args.precision,
        strategy=args.strategy,
        num_nodes=args.num_nodes,
        channels_last=args.channels_last,
        compile=args.compile,
    )


def main(argv: list[str] | None = None, callbacks: tuple = ()) -> dict:
    """Run fit.py's command line `argv` (default: ``sys.argv[1:]``) with extra Lightning
    `callbacks`; returns run.json's record (SystemExit with the exit status on a bad flag,
    a diverged run or Ctrl-C)."""
    return run_cli(parser(), backend, argv, callbacks)


def command() -> None:
    """The console script ``cifar-fit``."""
    main()


if __name__ == "__main__":  # python -m cifar_lightning.cli.fit..., as cifar-compare starts a run
    command()
