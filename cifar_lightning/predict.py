"""Prediction with Lightning: ``Trainer.predict`` over a user's images, a CSV prediction writer.

``predict`` is what ``scripts/predict.py`` runs for the PyTorch side; the MLX side
(``cifar_mlx_adapter.predict``) has the same signature and writes the same CSV.
"""

from __future__ import annotations

import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from cifar_lightning.core.model_card import ModelCard
from cifar_lightning.core.predictions import write_predictions_csv
from cifar_lightning.data import normalize


class UInt8Batches(torch.utils.data.Dataset):
    """Batch `i` of uint8 RGB images (N, 32, 32, 3) as normalised float32 (B, 3, 32, 32):
    ``(x / 255 - mean) / std`` per channel, as the training loaders feed the model. Use it
    with ``DataLoader(..., batch_size=None)`` (each item already is a batch)."""

    def __init__(self, images: np.ndarray, batch_size: int, mean, std):
        self.images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        self.batch_size, self.mean, self.std = batch_size, mean, std

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, i: int) -> torch.Tensor:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return normalize(self.images[i * self.batch_size : (i + 1) * self.batch_size], self.mean, self.std)


class CSVPredictionWriter(BasePredictionWriter):
    """Collects ``predict_step``'s probabilities at the epoch's end (``probabilities``: float32
    (N, num_classes) numpy) and, when `path` is given, writes the predictions CSV there
    (``core.predictions.write_predictions_csv``: atomic; columns input, class_1, prob_1, ...)."""

    def __init__(self, names: list[str], class_names: list[str], top_k: int = 1, path=None):
        super().__init__(write_interval="epoch")
        self.names, self.class_names, self.top_k, self.path = names, class_names, top_k, path
        self.probabilities: np.ndarray | None = None

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        self.probabilities = torch.cat([p.float().cpu() for p in predictions]).numpy()
        if self.path is not None:
            write_predictions_csv(self.path, self.names, self.probabilities, self.class_names, self.top_k)


def build_classifier(card: ModelCard, weights: str, tta: bool | None = None):
    """A CIFARClassifier of the checkpoint's model with its weights (either framework's file),
    in eval mode; `tta` None keeps the recipe's choice. Raises WeightsMismatchError (one line,
    the first key that does not fit) when the weights are of another model or class count."""
    from cifar_lightning.core.recipes import module_recipe
    from cifar_lightning.module import CIFARClassifier
    from cifar_lightning.weights import load_into_torch

    module = CIFARClassifier(
        card.model, card.num_classes, recipe=card.recipe, class_names=card.class_names, model_kwargs=card.model_kwargs
    )
    load_into_torch(module.model, weights)
    if tta is not None:
        module.recipe = module_recipe(card.model, card.recipe, False).with_overrides(tta=tta)
    return module.eval()


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
    normalised with the checkpoint's mean and std, from ``Trainer.predict`` with
    ``CIFARClassifier.predict_step``; the CSV goes to `output` when given. Runs on the
    best accelerator (cuda, then mps) unless `cpu`."""
    import warnings

    import lightning as L

    from cifar_lightning.backend import check_accelerator, quiet_lightning

    quiet_lightning()
    # the writer needs no batch indices (it writes once, in order): Lightning's note that it
    # cannot infer them from a loader of whole batches is no news
    warnings.filterwarnings("ignore", message="Couldn't infer the batch indices")
    module = build_classifier(card, weights, tta)
    writer = CSVPredictionWriter(names, card.class_names, top_k, output)
    loader = torch.utils.data.DataLoader(UInt8Batches(images, batch_size, card.mean, card.std), batch_size=None)
    trainer = L.Trainer(
        accelerator="cpu" if cpu else check_accelerator("auto"),
        devices=1,
        logger=False,
        callbacks=[writer],
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
    )
    trainer.predict(module, dataloaders=loader, return_predictions=True)
    return writer.probabilities
