"""Compare PyTorch and MLX on this machine: speed, memory and accuracy from the same weights and
batches. Also installed as cifar-compare.

python scripts/compare.py --model resnet18 --seeds 3            # on a Mac: MPS against Metal
python scripts/compare.py --model small_cnn --seeds 3 --epochs 2 --device cpu --data-dir D --no-download
"""

from cifar_lightning.cli.compare import command

if __name__ == "__main__":
    command()
