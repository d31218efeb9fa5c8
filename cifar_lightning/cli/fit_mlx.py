"""cifar-fit-mlx (scripts/fit_mlx.py): the same run as cifar-fit, natively in Apple MLX
(Metal or CUDA GPU, or --cpu); data-parallel over several processes when started by
``mlx.launch``.

    cifar-fit-mlx                                    # SmallCNN, its recipe
    cifar-fit-mlx --weights runs/<a fit.py run>/checkpoints/final.ckpt --test-only
"""

from __future__ import annotations

import argparse
import sys

from cifar_lightning.cli.flags import common_parser, run_cli


def parser() -> argparse.ArgumentParser:
    p = common_parser(
        "Train a CIFAR classifier natively in Apple MLX. Data-parallel over several processes "
        "when started by mlx.launch (two on this machine: mlx.launch -n 2 scripts/fit_mlx.py; "
        "two Macs: --hostfile; NVIDIA GPUs with mlx[cuda]: --backend nccl), as fit.py --devices "
        "is for torch."
    )
    p.add_argument(
        "--cpu",
        action="store_true",
        help="run on the CPU instead of the GPU MLX reports (Metal on a Mac, CUDA with mlx[cuda]) "
        "(default: the GPU when there is one)",
    )
    p.add_argument(
        "--precision",
        default="32-true",
        help="Lightning precision: 32-true, 16-mixed, bf16-mixed, 16-true or bf16-true, fit.py's names but "
        "64-true (*-mixed: float32 weights and optimiser state, the training step computed in half; 16-mixed "
        "scales the loss as torch.amp.GradScaler; *-true: half weights); on the CPU 16-mixed runs as bf16-mixed, "
        "as Lightning runs it, and 16-true is refused (MLX's CPU float16 sums overflow); run.json records the "
        "one used (default: 32-true)",
    )
    p.add_argument(
        "--memory-limit",
        type=float,
        metavar="GB",
        help="cap MLX's Metal memory at this many GB (default: MLX's own limit)",
    )
    return p


def backend(args: argparse.Namespace):
    """The MLX backend of fit_mlx.py's own flags."""
    from cifar_mlx_adapter.backend import MLXBackend

    return MLXBackend(cpu=args.cpu, memory_limit=args.memory_limit, precision=args.precision)


def main(argv: list[str] | None = None, callbacks: tuple = ()) -> dict:
    """Run fit_mlx.py's command line `argv` (default: ``sys.argv[1:]``) with extra MLX
    `callbacks` (``cifar_mlx_adapter.Callback``); returns run.json's record on rank 0, {} on
    the other ranks (SystemExit with the exit status on a bad flag, a diverged run, a lost
    process or Ctrl-C)."""
    return run_cli(parser(), backend, argv, callbacks)


def command() -> None:
    """The console script ``cifar-fit-mlx``: on Linux it starts itself again, once, with
    OpenBLAS preloaded for mlx[cpu] (``cifar_mlx_adapter.blas``), before MLX is imported."""
    from cifar_mlx_adapter.blas import restart_with_openblas

    restart_with_openblas(sys.argv)
    main()


if __name__ == "__main__":  # python -m cifar_lightning.cli.fit..., as cifar-compare starts a run
    command()
