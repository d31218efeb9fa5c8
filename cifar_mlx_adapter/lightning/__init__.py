"""Lightning's API in MLX: ``MLXModule`` (a LightningModule that is an ``mlx.nn.Module``),
``MLXTrainer`` (``L.Trainer``'s arguments, loops and hook order), Lightning-signature
callbacks and loggers. Nothing here knows CIFAR; ``cifar_mlx_adapter.MLXClassifier`` is
one user of it. Importing it loads MLX but never torch.
"""

from cifar_mlx_adapter.lightning.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
)
from cifar_mlx_adapter.lightning.loggers import CSVLogger, Logger
from cifar_mlx_adapter.lightning.module import MisconfigurationException, MLXModule
from cifar_mlx_adapter.lightning.step import StepTraceError
from cifar_mlx_adapter.lightning.trainer import MLXTrainer

__all__ = [
    "CSVLogger",
    "Callback",
    "EarlyStopping",
    "LearningRateMonitor",
    "Logger",
    "MLXModule",
    "MLXTrainer",
    "MisconfigurationException",
    "ModelCheckpoint",
    "StepTraceError",
]
