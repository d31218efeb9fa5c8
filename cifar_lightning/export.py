"""A checkpoint's model exported from torch: ONNX (``torch.onnx.export``) and ``torch.export`` (.pt2).

Both take what a user has, uint8 RGB images (N, 32, 32, 3) with any N, and return float32
logits (N, num_classes): the conversion to float, the scaling to [0, 1], the per-channel
normalisation with the checkpoint's mean and std and the NHWC -> NCHW transpose are inside
the graph (``UInt8Classifier``). Test-time augmentation is not: an export is the plain model.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import torch

from cifar_lightning.core.model_card import ModelCard


class UInt8Classifier(torch.nn.Module):
    """`model` (float32 (N, 3, 32, 32) normalised -> logits) behind its input pipeline:
    uint8 (N, 32, 32, 3) RGB -> float32 logits (N, num_classes)."""

    def __init__(self, model: torch.nn.Module, mean, std):
        super().__init__()
        self.model = model
        # (x / 255 - mean) / std  ==  (x - 255 mean) / (255 std): one subtraction, one division
        self.register_buffer("offset", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        self.register_buffer("scale", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).to(torch.float32)
        return self.model((x - self.offset) / self.scale)


def source_model(card: ModelCard, weights: str) -> UInt8Classifier:
    """The checkpoint's torch model (float32, eval mode, on the CPU) behind its input pipeline."""
    from cifar_lightning.models import build_model
    from cifar_lightning.weights import load_into_torch

    model = build_model(card.model, card.num_classes, **card.model_kwargs)
    load_into_torch(model, weights)
    return UInt8Classifier(model, card.mean, card.std).eval()


def example_batch(n: int = 8) -> torch.Tensor:
    """A uint8 example input; its batch size is marked dynamic, so any N runs (N = 1 too)."""
    return torch.zeros((n, 32, 32, 3), dtype=torch.uint8)


def dynamic_batch() -> tuple:
    return ({0: torch.export.Dim("batch", min=1)},)


def export_onnx(card: ModelCard, weights: str, path: str) -> None:
    """One self-contained .onnx file (weights inside: ``external_data=False``), input
    ``images`` uint8 (batch, 32, 32, 3), output ``logits`` float32 (batch, num_classes),
    through the dynamo exporter (torch's default since 2.9); the card's metadata (class
    names, normalisation, model, source checkpoint) as the model's ``metadata_props``."""
    import onnx

    model = source_model(card, weights)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress
        torch.onnx.export(
            model,
            (example_batch(),),
            path,
            dynamo=True,
            external_data=False,
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=dynamic_batch(),
        )
    proto = onnx.load(path)
    onnx.helper.set_model_props(proto, {k: json.dumps(v) for k, v in export_metadata(card).items()})
    onnx.checker.check_model(proto)
    onnx.save(proto, path)


def export_pt2(card: ModelCard, weights: str, path: str) -> None:
    """A ``torch.export`` program (.pt2) with a dynamic batch; the card's metadata in the
    archive as ``extra/metadata.json`` (``torch.export.load(path, extra_files={"metadata.json":
    ""})`` reads it back)."""
    program = torch.export.export(source_model(card, weights), (example_batch(),), dynamic_shapes=dynamic_batch())
    torch.export.save(program, path, extra_files={"metadata.json": json.dumps(export_metadata(card))})


def export_metadata(card: ModelCard) -> dict:
    return {
        **card.metadata(),
        "normalisation": "inside the graph: feed uint8 RGB images",
        "output": "float32 logits (N, num_classes); softmax gives probabilities",
    }


def onnx_runner(path: str):
    """uint8 (N, 32, 32, 3) numpy -> logits numpy, through onnxruntime on the CPU; and the
    model's metadata (dict)."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    return (lambda images: session.run(["logits"], {"images": images})[0]), meta


def pt2_runner(path: str):
    """uint8 (N, 32, 32, 3) numpy -> logits numpy, through the loaded ``torch.export``
    program; and its metadata (dict)."""
    extra = {"metadata.json": ""}
    module = torch.export.load(path, extra_files=extra).module()

    def run(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(images)).numpy()

    return run, json.loads(extra["metadata.json"])


def source_runner(card: ModelCard, weights: str):
    """uint8 (N, 32, 32, 3) numpy -> logits numpy of the checkpoint's own torch model, fed as
    training and prediction feed it (``augment.normalize``), not through ``UInt8Classifier``:
    the verification then also checks the export's own input pipeline."""
    from cifar_lightning.data import normalize

    model = source_model(card, weights).model

    def run(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(normalize(torch.from_numpy(images).permute(0, 3, 1, 2), card.mean, card.std)).numpy()

    return run


EXPORTERS = {"onnx": (export_onnx, onnx_runner), "torch-export": (export_pt2, pt2_runner)}
