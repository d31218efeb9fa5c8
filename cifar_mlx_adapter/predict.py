"""Prediction in MLX: ``MLXTrainer.predict`` over a user's images, a CSV prediction writer.

The same signature and CSV as ``cifar_lightning.predict``; no torch is imported (an MLX
checkpoint is read with numpy; a torch checkpoint given with ``--framework mlx`` is read
with torch, imported then only).
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from cifar_lightning.core.model_card import ModelCard
from cifar_lightning.core.predictions import write_predictions_csv
from cifar_mlx_adapter.data import normalize
from cifar_mlx_adapter.trainer import BasePredictionWriter, MLXTrainer


class PredictLoader:
    """uint8 RGB images (N, 32, 32, 3) as batches of normalised float32 NHWC MLX arrays
    (B, 32, 32, 3): ``(x / 255 - mean) / std`` per channel, as the training loaders feed
    the model. Uploaded one batch at a time."""

    def __init__(self, images: np.ndarray, batch_size: int, mean, std):
        self.images, self.batch_size, self.mean, self.std = images, batch_size, mean, std

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __iter__(self):
        for start in range(0, len(self.images), self.batch_size):
            yield normalize(mx.array(self.images[start : start + self.batch_size]), self.mean, self.std)


class CSVPredictionWriter(BasePredictionWriter):
    """As ``cifar_lightning.predict.CSVPredictionWriter``: ``probabilities`` float32 (N,
    num_classes) numpy, and the CSV at `path` when given (atomic)."""

    def __init__(self, names: list[str], class_names: list[str], top_k: int = 1, path=None):
        self.names, self.class_names, self.top_k, self.path = names, class_names, top_k, path
        self.probabilities: np.ndarray | None = None

    def write_on_epoch_end(self, trainer, module, predictions, batch_indices):
        self.probabilities = np.concatenate([np.array(p, dtype=np.float32) for p in predictions])
        if self.path is not None:
            write_predictions_csv(self.path, self.names, self.probabilities, self.class_names, self.top_k)


def build_classifier(card: ModelCard, weights: str, tta: bool | None = None):
    """An MLXClassifier of the checkpoint's model with its weights (either framework's file);
    `tta` None keeps the recipe's choice. Raises WeightsMismatchError (one line, the first key
    that does not fit) when the weights are of another model or class count."""
    from cifar_lightning.core.recipes import module_recipe
    from cifar_mlx_adapter.module import MLXClassifier
    from cifar_mlx_adapter.weights import load_file

    module = MLXClassifier(
        card.model, card.num_classes, recipe=card.recipe, class_names=card.class_names, model_kwargs=card.model_kwargs
    )
    load_file(module.model, weights)
    if tta is not None:
        module.recipe = module_recipe(card.model, card.recipe, False).with_overrides(tta=tta)
    return module


def predict(
    card: ModelCard,
    weights: str,
    images: np.ndarray,
    names: list[str],
    *,
    top_k: int = 1,
    output=None,
    batch_size: int = 256,
    tta: bool | None = None,
    cpu: bool = False,
    progress: bool = False,
) -> np.ndarray:
    """Class probabilities float32 (N, num_classes) of uint8 RGB `images` (N, 32, 32, 3),
    normalised with the checkpoint's mean and std, from ``MLXTrainer.predict`` with
    ``MLXClassifier.predict_step``; the CSV goes to `output` when given. Runs on MLX's GPU
    when there is one, unless `cpu`."""
    if cpu or not mx.is_available(mx.gpu):
        mx.set_default_device(mx.cpu)
    module = build_classifier(card, weights, tta)
    writer = CSVPredictionWriter(names, card.class_names, top_k, output)
    trainer = MLXTrainer(callbacks=[writer], enable_progress_bar=progress, enable_checkpointing=False)
    trainer.predict(module, dataloaders=PredictLoader(images, batch_size, card.mean, card.std))
    return writer.probabilities
