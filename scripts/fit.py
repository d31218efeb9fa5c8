"""Train a CIFAR-10/100 classifier with PyTorch Lightning (cpu, mps or cuda); also installed as cifar-fit.

python scripts/fit.py --accelerator mps                     # SmallCNN, its recipe
python scripts/fit.py --model fast --data-dir ../shared/data
"""

from cifar_lightning.cli.fit import command

if __name__ == "__main__":
    command()
