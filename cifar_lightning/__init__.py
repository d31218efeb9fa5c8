"""CIFAR-10/100 with PyTorch Lightning: one DataModule, one LightningModule, one model zoo."""

from .data import CIFARDataModule
from .datasets import CIFARDataError
from .models import build_model, count_parameters
from .module import CIFARClassifier
from .recipes import RECIPES, Recipe, get_recipe
from .spec import MODEL_NAMES

__all__ = [
    "CIFARClassifier", "CIFARDataError", "CIFARDataModule", "MODEL_NAMES", "RECIPES", "Recipe",
    "build_model", "count_parameters", "get_recipe",
]  # fmt: skip
__version__ = "0.1.0"
