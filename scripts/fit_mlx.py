"""Train a CIFAR-10/100 classifier natively in Apple MLX (Metal GPU, or --cpu).

    python scripts/fit_mlx.py                                   # SmallCNN, its recipe
    python scripts/fit_mlx.py --weights runs/torch-small_cnn-cifar10/checkpoints/final.ckpt --test-only
"""

from cifar_mlx_adapter.runner import main

if __name__ == "__main__":
    main()
