"""Your own CNN on CIFAR-10 through ``CIFARDataModule``, in PyTorch (Lightning) or in MLX.

The same network written twice, the same lines with mx for torch: a LightningModule under
``L.Trainer`` and an MLXModule under ``MLXTrainer``, with the same flags. The DataModule is
the library's: ``L.Trainer`` reads its torch DataLoaders (NCHW images); ``MLXTrainer`` makes
the same batches on MLX's device (NHWC images, MLX's convolution layout).

    python examples/own_cnn_cifar.py --framework mlx --data-dir data
    python examples/own_cnn_cifar.py --framework torch --data-dir data
"""

from __future__ import annotations

import argparse


def torch_model():
    import lightning as L
    import torch
    import torch.nn.functional as F
    from torch import nn

    class CNN(L.LightningModule):
        def __init__(self, lr: float = 0.05):
            super().__init__()
            self.save_hyperparameters()
            self.features = nn.Sequential(
                nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            )  # fmt: skip
            self.head = nn.Linear(64 * 8 * 8, 10)

        def forward(self, x):
            return self.head(self.features(x).flatten(1))

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self(x), y)
            self.log("train/loss", loss, prog_bar=True)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            logits = self(x)
            self.log("val/loss", F.cross_entropy(logits, y))
            self.log("val/acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)

    return CNN(), L.Trainer


def mlx_model():
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim

    from cifar_mlx_adapter.lightning import MLXModule, MLXTrainer

    class CNN(MLXModule):
        def __init__(self, lr: float = 0.05):
            super().__init__()
            self.save_hyperparameters()
            self.features = nn.Sequential(
                nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            )  # fmt: skip
            self.head = nn.Linear(64 * 8 * 8, 10)

        def forward(self, x):
            return self.head(self.features(x).flatten(1))

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = nn.losses.cross_entropy(self(x), y, reduction="mean")
            self.log("train/loss", loss, prog_bar=True)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            logits = self(x)
            self.log("val/loss", nn.losses.cross_entropy(logits, y, reduction="mean"))
            self.log("val/acc", (logits.argmax(1) == y).astype(mx.float32).mean(), prog_bar=True)

        def configure_optimizers(self):
            return optim.SGD(learning_rate=self.hparams.lr, momentum=0.9)

    return CNN(), MLXTrainer


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=["torch", "mlx"], default="mlx")
    parser.add_argument("--data-dir", default="data", help="folder holding cifar-10-batches-py/ (downloaded if absent)")
    parser.add_argument("--root", default="runs/examples/own_cnn", help="where logs and checkpoints go")
    parser.add_argument("--max-epochs", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--limit-val-batches", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--val-size", type=int, default=5000, help="training images held out for validation")
    args = parser.parse_args(argv)

    from cifar_lightning.data import CIFARDataModule

    # validation on training images held out, the test set left for the end
    dm = CIFARDataModule(data_dir=args.data_dir, batch_size=args.batch_size, val_size=args.val_size)
    model, Trainer = torch_model() if args.framework == "torch" else mlx_model()
    limit = int(args.limit_val_batches) if args.limit_val_batches > 1 else args.limit_val_batches
    flags = dict(max_epochs=args.max_epochs, max_steps=args.max_steps, limit_val_batches=limit)
    if args.framework == "torch":
        flags.update(accelerator="auto", devices=1)
    trainer = Trainer(default_root_dir=f"{args.root}/{args.framework}", **flags)
    trainer.fit(model, datamodule=dm)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    print(f"{args.framework}: {trainer.global_step} steps, {metrics}")
    return metrics


if __name__ == "__main__":
    main()
