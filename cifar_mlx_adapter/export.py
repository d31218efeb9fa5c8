"""A checkpoint's model exported from MLX: ``mx.export_function`` (.mlxfn), shapeless batch.

The exported function takes uint8 RGB images (N, 32, 32, 3) with any N and returns a
1-tuple holding float32 logits (N, num_classes); the normalisation with the checkpoint's
mean and std is inside it. Its metadata (class names, normalisation, model, source
checkpoint) is stored in the .mlxfn file itself, as a JSON string (``export_function``'s
``metadata``, read back with ``mx.import_function(path, return_metadata=True)``).
No torch is imported (an MLX checkpoint is read with numpy).
"""

from __future__ import annotations

import json

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from cifar_lightning.core.data import EVAL_BATCH
from cifar_lightning.core.model_card import ModelCard
from cifar_mlx_adapter.data import normalize
from cifar_mlx_adapter.models import MaxPool2d, build_model
from cifar_mlx_adapter.weights import load_file


class MatmulLinear(nn.Linear):
    """nn.Linear as ``x @ W.T + b``. ``nn.Linear`` calls ``mx.addmm``, whose output shape an
    exported shapeless function keeps from the example batch in MLX 0.32.4: a larger batch
    then reads out of bounds (garbage logits, a crashed process). Only the export uses this."""

    def __call__(self, x: mx.array) -> mx.array:
        y = x @ self["weight"].T
        return y + self["bias"] if "bias" in self else y


def source_model(card: ModelCard, weights: str) -> nn.Module:
    """The checkpoint's MLX model with its weights, in eval mode, parameters evaluated."""
    model = build_model(card.model, card.num_classes, **card.model_kwargs)
    load_file(model, weights)
    model.eval()
    mx.eval(model.parameters())  # a lazy parameter would be traced as its initialiser's random draw
    return model


def logits_function(model: nn.Module, card: ModelCard):
    """uint8 (N, 32, 32, 3) MLX array -> float32 logits (N, num_classes)."""
    return lambda images: model(normalize(images, card.mean, card.std))


def export_mlxfn(card: ModelCard, weights: str, path: str) -> None:
    """Export the model behind its normalisation to `path` (.mlxfn), for any batch size."""
    model = source_model(card, weights)
    for _, layer in model.named_modules():
        if type(layer) is nn.Linear:
            layer.__class__ = MatmulLinear
        if isinstance(layer, MaxPool2d):
            layer.shapeless = True  # no slice that would write the example's batch size into the graph
    example = mx.zeros((8, 32, 32, 3), dtype=mx.uint8)
    metadata = {
        **card.metadata(),
        "normalisation": "inside the function: feed uint8 RGB images",
        "output": "a 1-tuple: float32 logits (N, num_classes); softmax gives probabilities",
    }
    mx.export_function(path, logits_function(model, card), example, shapeless=True, metadata=json.dumps(metadata))


def mlxfn_runner(path: str):
    """uint8 (N, 32, 32, 3) numpy -> logits numpy through the imported function; and its metadata."""
    function, metadata = mx.import_function(path, return_metadata=True)
    return (lambda images: np.array(function(mx.array(images))[0])), json.loads(metadata)


def source_runner(card: ModelCard, weights: str):
    """uint8 (N, 32, 32, 3) numpy -> logits numpy of the checkpoint's own MLX model, fed as
    prediction feeds it (``predict.PredictLoader``), not through the exported function."""
    from cifar_mlx_adapter.predict import PredictLoader

    model = source_model(card, weights)
    return lambda images: np.concatenate(
        [np.array(model(b)) for b in PredictLoader(images, EVAL_BATCH, card.mean, card.std)]
    )


EXPORTERS = {"mlx": (export_mlxfn, mlxfn_runner)}
