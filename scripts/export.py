"""Export a checkpoint's model to ONNX, torch.export (.pt2) or MLX (.mlxfn), and verify it.

    python scripts/export.py --weights runs/<run>/checkpoints/final.ckpt --format onnx --output model.onnx
    python scripts/export.py --weights runs/<run>/checkpoints/final.npz --format mlx --output model.mlxfn
"""

import sys

from cifar_mlx_adapter.blas import restart_with_openblas
from cifar_lightning.cli.export import main

if __name__ == "__main__":
    if "mlx" in sys.argv[1:]:  # --format mlx: OpenBLAS for mlx[cpu] on Linux (a no-op on macOS)
        restart_with_openblas(sys.argv)
    main()
