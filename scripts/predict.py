"""Classify images with a checkpoint of either framework; write a CSV of the top classes.

    python scripts/predict.py --weights runs/<run>/checkpoints/final.ckpt photos/ cat.jpg
    python scripts/predict.py --weights runs/<run>/checkpoints/final.npz cifar10:test --top-k 3
"""

import sys

from cifar_mlx_adapter.blas import restart_with_openblas
from cifar_lightning.cli.predict import choose_framework, main, parser

if __name__ == "__main__":
    try:
        framework = choose_framework(parser().parse_known_args()[0].weights, parser().parse_known_args()[0].framework)
    except Exception:  # a bad flag or file: main says so in one line
        framework = None
    if framework == "mlx":
        # mlx[cpu] on Linux ships a slow reference BLAS: start again, once, with OpenBLAS
        # preloaded (before MLX is imported); a no-op on macOS
        restart_with_openblas(sys.argv)
    main()
