"""Export a checkpoint's model to ONNX, torch.export (.pt2) or MLX (.mlxfn), and verify it. Also
installed as cifar-export.

python scripts/export.py --weights runs/<run>/checkpoints/final.ckpt --format onnx --output model.onnx
python scripts/export.py --weights runs/<run>/checkpoints/final.npz --format mlx --output model.mlxfn
"""

from cifar_lightning.cli.export import command

if __name__ == "__main__":
    command()
