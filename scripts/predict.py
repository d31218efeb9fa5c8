"""Classify images with a checkpoint of either framework; write a CSV of the top classes. Also
installed as cifar-predict.

python scripts/predict.py --weights runs/<run>/checkpoints/final.ckpt photos/ cat.jpg
python scripts/predict.py --weights runs/<run>/checkpoints/final.npz cifar10:test --top-k 3
"""

from cifar_lightning.cli.predict import command

if __name__ == "__main__":
    command()
