"""Train a CIFAR-10/100 classifier natively in Apple MLX (Metal or CUDA GPU, or --cpu); also installed as cifar-fit-mlx.

python scripts/fit_mlx.py                                   # SmallCNN, its recipe
python scripts/fit_mlx.py --weights runs/<a fit.py run>/checkpoints/final.ckpt --test-only
"""

from cifar_lightning.cli.fit_mlx import command

if __name__ == "__main__":
    command()
