"""Train a CIFAR-10/100 classifier natively in Apple MLX (Metal or CUDA GPU, or --cpu).

    python scripts/fit_mlx.py                                   # SmallCNN, its recipe
    python scripts/fit_mlx.py --weights runs/<a fit.py run>/checkpoints/final.ckpt --test-only
"""

import sys

from cifar_mlx_adapter.blas import restart_with_openblas

if __name__ == "__main__":
    # mlx[cpu] on Linux ships a slow reference BLAS: start again, once, with OpenBLAS
    # preloaded (before MLX is imported); a no-op on macOS
    restart_with_openblas(sys.argv)
    from cifar_mlx_adapter.runner import main

    main()
