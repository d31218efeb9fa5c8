"""What a checkpoint says about the model it holds: what a prediction or an export needs.

Both scripts store an ``inference`` record in every checkpoint (fit.py: the top-level key
``"inference"`` of the .ckpt; fit_mlx.py: ``meta["inference"]`` of the .npz): the model's
name and options, the number of classes and their names, the dataset and its per-channel
normalisation, and the input the model takes. Checkpoints written before the record existed
are read too: the same facts come from their hyper-parameters (``hparams.class_names``, the
datamodule's ``dataset``; MLX: ``meta["hparams"]`` and ``meta["settings"]``), and the
normalisation from the dataset's constants (``datasets.DATASETS``).

Reading an MLX checkpoint needs numpy only; a torch checkpoint is read by the caller's
``load_torch`` (the torch wing's ``cifar_lightning.weights.load_torch_file``: torch with
``weights_only=True``, so nothing in it runs), which the core never imports.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cifar_lightning.core.datasets import DATASETS
from cifar_lightning.core.errors import UsageError
from cifar_lightning.core.spec import MODEL_NAMES
from cifar_lightning.core.weights import weights_file_kind

EXPECTED_CHECKPOINT = "expected a checkpoint of fit.py (.ckpt) or fit_mlx.py (.npz)"
INPUT = "uint8 RGB images (N, 32, 32, 3), values 0-255"


def inference_record(
    model: str, num_classes: int, class_names: list[str], dataset: str, model_kwargs: dict | None = None
) -> dict:
    """The plain dict both scripts store in their checkpoints (see the module's docstring).
    mean and std are per channel (R, G, B) on pixels scaled to [0, 1]: a model sees
    ``(x / 255 - mean) / std``."""
    info = DATASETS[dataset]
    return {
        "model": model,
        "num_classes": int(num_classes),
        "class_names": [str(n) for n in class_names],
        "dataset": dataset,
        "mean": list(info.mean),
        "std": list(info.std),
        "model_kwargs": dict(model_kwargs or {}),
        "input": INPUT,
    }


@dataclass(frozen=True)
class ModelCard:
    """The facts of one checkpoint. kind: "torch" (fit.py's .ckpt) or "npz" (fit_mlx.py's)."""

    path: str
    kind: str
    model: str
    num_classes: int
    class_names: list[str]
    dataset: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    model_kwargs: dict = field(default_factory=dict)
    recipe: dict | None = None  # the training recipe (its ``tta`` says whether tests used TTA)

    @property
    def framework(self) -> str:
        """The framework that wrote the checkpoint: "pytorch" or "mlx"."""
        return "pytorch" if self.kind == "torch" else "mlx"

    def metadata(self) -> dict:
        """Plain facts for an exported model's metadata."""
        return {
            "model": self.model,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "dataset": self.dataset,
            "mean": list(self.mean),
            "std": list(self.std),
            "input": INPUT,
            "source_checkpoint": self.path,
            "source_framework": self.framework,
        }


def _card(path: Path, kind: str, record: dict, recipe: dict | None) -> ModelCard:
    """A ModelCard from an inference record; UsageError naming the file when it is incomplete."""

    def bad(what: str) -> UsageError:
        return UsageError(f"{path}: a checkpoint whose {what}; {EXPECTED_CHECKPOINT}")

    model, k = record.get("model"), record.get("num_classes")
    if model not in MODEL_NAMES:
        raise bad(
            f"model is {model!r}, not one of {', '.join(MODEL_NAMES)} (a model of your own cannot be rebuilt "
            "from a checkpoint)"
        )
    if not isinstance(k, int) or k < 1:
        raise bad(f"number of classes is {k!r}")
    names = record.get("class_names")
    if not isinstance(names, list) or len(names) != k:
        raise bad(f"class names ({len(names) if isinstance(names, list) else 'none'}) do not match its {k} classes")
    dataset = record.get("dataset")
    if dataset not in DATASETS:
        raise bad(f"dataset is {dataset!r}, not one of {', '.join(DATASETS)}")
    mean = tuple(float(v) for v in record.get("mean") or DATASETS[dataset].mean)
    std = tuple(float(v) for v in record.get("std") or DATASETS[dataset].std)
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise bad(f"normalisation is mean {mean}, std {std}: expected 3 means and 3 positive deviations")
    return ModelCard(
        str(path),
        kind,
        model,
        k,
        [str(n) for n in names],
        dataset,
        mean,
        std,
        dict(record.get("model_kwargs") or {}),
        recipe,
    )


def _torch_card(path: Path, load_torch) -> ModelCard:
    if load_torch is None:
        raise ValueError(f"{path} is a torch file: read_model_card needs load_torch to read it")
    checkpoint = load_torch(path, EXPECTED_CHECKPOINT)
    if not isinstance(checkpoint, dict) or "hyper_parameters" not in checkpoint:
        raise UsageError(
            f"{path}: weights without the model's facts (model, class names, normalisation); {EXPECTED_CHECKPOINT}"
        )
    hparams = checkpoint["hyper_parameters"]
    record = checkpoint.get("inference")
    if not isinstance(record, dict):  # a checkpoint written before the record existed
        dataset = (checkpoint.get("datamodule_hyper_parameters") or {}).get("dataset") or (
            (checkpoint.get("run") or {}).get("settings") or {}
        ).get("dataset")
        record = {
            "model": hparams.get("model"),
            "num_classes": hparams.get("num_classes"),
            "class_names": hparams.get("class_names"),
            "dataset": dataset,
            "model_kwargs": {
                **((hparams.get("recipe") or {}).get("model_kwargs") or {}),
                **(hparams.get("model_kwargs") or {}),
            },
        }
    return _card(path, "torch", record, hparams.get("recipe"))


def _mlx_card(path: Path) -> ModelCard:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
    except Exception as e:  # any parse error of a damaged file; KeyboardInterrupt is no Exception
        raise UsageError(
            f"{path}: an MLX checkpoint that does not read ({type(e).__name__}); {EXPECTED_CHECKPOINT}"
        ) from None
    if not isinstance(meta, dict):
        raise UsageError(f"{path}: an .npz whose meta is not fit_mlx.py's; {EXPECTED_CHECKPOINT}")
    record = meta.get("inference")
    if not isinstance(record, dict):  # a checkpoint written before the record existed
        hparams, settings = meta.get("hparams") or {}, meta.get("settings") or {}
        record = {
            "model": hparams.get("model"),
            "num_classes": hparams.get("num_classes"),
            "class_names": hparams.get("class_names"),
            "dataset": settings.get("dataset"),
        }
    return _card(path, "npz", record, meta.get("recipe"))


def read_model_card(path: str | Path, load_torch=None) -> ModelCard:
    """The facts of the checkpoint at `path`, recognised by its content; a torch file is
    read with `load_torch(path, expected)` (``cifar_lightning.weights.load_torch_file``;
    ValueError without it). Raises UsageError (one line: the file, what it is, what was
    expected) for anything else: a missing file, a file of no weights format, bare weights
    without the model's facts (initial.pt, .safetensors, a plain .npz), a checkpoint of a
    model of the user's own."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file; {EXPECTED_CHECKPOINT}")
    kind, what = weights_file_kind(path)
    if kind == "torch":
        return _torch_card(path, load_torch)
    if what == "an MLX checkpoint":
        return _mlx_card(path)
    if kind is not None:
        what += " without the model's facts (model, class names, normalisation)"
    raise UsageError(f"{path}: {what}; {EXPECTED_CHECKPOINT}")
