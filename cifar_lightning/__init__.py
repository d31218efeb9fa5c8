"""CIFAR-10/100 with PyTorch Lightning: one DataModule, one LightningModule, one model zoo.

``cifar_lightning.core`` is the framework-neutral part (numpy and the standard library
only): model spec, recipes and schedules, the data reader, splits and random draws, run
records and reports. Both the torch layer (this package) and the MLX layer
(``cifar_mlx_adapter``) build on it. The torch names below are imported on first use,
so ``import cifar_lightning.core`` loads neither torch nor Lightning.
"""

from importlib import import_module

from cifar_lightning.core.datasets import CIFARDataError
from cifar_lightning.core.recipes import RECIPES, Recipe, get_recipe
from cifar_lightning.core.spec import MODEL_NAMES

_TORCH_NAMES = {
    "CIFARClassifier": "cifar_lightning.module",
    "CIFARDataModule": "cifar_lightning.data",
    "build_model": "cifar_lightning.models",
    "count_parameters": "cifar_lightning.models",
}

__all__ = ["CIFARDataError", "MODEL_NAMES", "RECIPES", "Recipe", "get_recipe", *_TORCH_NAMES]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _TORCH_NAMES:
        return getattr(import_module(_TORCH_NAMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
