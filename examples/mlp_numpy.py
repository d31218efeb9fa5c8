"""Your own MLP on tabular numpy data, trained in MLX with Lightning's API.

The data are made here: 3 classes in 8 features (Gaussian blobs), 960 rows to train on and
240 to validate on, as numpy arrays cut into batches. ``EarlyStopping`` stops once the
validation loss stops improving; ``ModelCheckpoint`` keeps the two best checkpoints by
validation loss. Metrics go to ``<root>/lightning_logs/version_N/metrics.csv``.

    python examples/mlp_numpy.py --root runs/examples/mlp
"""

from __future__ import annotations

import argparse

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

from cifar_mlx_adapter.lightning import EarlyStopping, MLXModule, MLXTrainer, ModelCheckpoint


class MLP(MLXModule):
    def __init__(self, features: int = 8, hidden: int = 64, classes: int = 3, lr: float = 0.05):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.losses.cross_entropy(self(x), y, reduction="mean")
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val/loss", nn.losses.cross_entropy(logits, y, reduction="mean"), prog_bar=True)
        self.log("val/acc", (logits.argmax(axis=1) == y).astype(mx.float32).mean(), prog_bar=True)

    def configure_optimizers(self):
        return optim.SGD(learning_rate=self.hparams.lr, momentum=0.9)


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(features float32 (n, 8), labels int64 (n,)): 3 Gaussian blobs, centres fixed by seed 0."""
    centres = np.random.default_rng(0).normal(size=(3, 8))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    x = centres[y] + 1.5 * rng.normal(size=(n, 8))
    return x.astype(np.float32), y.astype(np.int64)


def batches(x: np.ndarray, y: np.ndarray, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/examples/mlp", help="where logs and checkpoints go")
    parser.add_argument("--max-epochs", type=int, default=50)
    args = parser.parse_args(argv)
    mx.random.seed(0)
    train, val = batches(*blobs(960, seed=1), 32), batches(*blobs(240, seed=2), 60)
    model = MLP()
    best = ModelCheckpoint(monitor="val/loss", mode="min", save_top_k=2)
    trainer = MLXTrainer(
        max_epochs=args.max_epochs,
        callbacks=[EarlyStopping(monitor="val/loss", mode="min", patience=3), best],
        default_root_dir=args.root,
        enable_progress_bar=False,
    )
    trainer.fit(model, train, val)
    result = trainer.validate(model, val, ckpt_path=best.best_model_path, verbose=False)[0]
    print(f"stopped after {trainer.current_epoch} epochs; best checkpoint {best.best_model_path}: {result}")
    return {"epochs": trainer.current_epoch, "best": best.best_model_path, **result}


if __name__ == "__main__":
    main()
