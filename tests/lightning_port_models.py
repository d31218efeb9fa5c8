"""One small user model written twice: as a LightningModule and as an MLXModule, the same
lines with mx for torch (the port the README shows). Imported by the port tests."""

from __future__ import annotations

import lightning as L
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import torch
import torch.nn.functional as F

from cifar_mlx_adapter.lightning import MLXModule

FEATURES, HIDDEN, CLASSES = 8, 32, 3


class TorchMLP(L.LightningModule):
    def __init__(self, lr: float = 0.1, momentum: float = 0.9):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(FEATURES, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, CLASSES)
        )

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("train/acc", (logits.argmax(1) == y).float().mean())
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val/loss", F.cross_entropy(logits, y), prog_bar=True)
        self.log("val/acc", (logits.argmax(1) == y).float().mean())

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test/acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum)


class MLXMLP(MLXModule):
    def __init__(self, lr: float = 0.1, momentum: float = 0.9):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, CLASSES))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = nn.losses.cross_entropy(logits, y, reduction="mean")
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("train/acc", (logits.argmax(1) == y).astype(mx.float32).mean())
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val/loss", nn.losses.cross_entropy(logits, y, reduction="mean"), prog_bar=True)
        self.log("val/acc", (logits.argmax(1) == y).astype(mx.float32).mean())

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test/acc", (self(x).argmax(1) == y).astype(mx.float32).mean())

    def configure_optimizers(self):
        return optim.SGD(learning_rate=self.hparams.lr, momentum=self.hparams.momentum)


def copy_weights(torch_model: TorchMLP, mlx_model: MLXMLP) -> None:
    """The torch model's weights into the MLX one (nn.Linear is (out, in) in both)."""
    layers = [m for m in torch_model.net if isinstance(m, torch.nn.Linear)]
    targets = [m for m in mlx_model.net.layers if isinstance(m, nn.Linear)]
    for src, dst in zip(layers, targets):
        dst.weight = mx.array(src.weight.detach().numpy())
        dst.bias = mx.array(src.bias.detach().numpy())


def blobs(n: int, seed: int, noise: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """A 3-class problem in 8 features: class centres at random, Gaussian noise (float32, int64)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(size=(CLASSES, FEATURES)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=n)
    x = centres[y] + noise * rng.normal(size=(n, FEATURES)).astype(np.float32)
    return x.astype(np.float32), y.astype(np.int64)


def numpy_batches(x: np.ndarray, y: np.ndarray, batch_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]


def torch_loader(x: np.ndarray, y: np.ndarray, batch_size: int):
    from torch.utils.data import DataLoader, TensorDataset

    return DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=batch_size, shuffle=False)
