"""MLX counterpart of cifar_lightning: same model spec, Lightning's hooks, weights that convert both ways."""

from cifar_mlx_adapter.convert import load_file, load_weights, mlx_state, mlx_to_torch, torch_to_mlx
from cifar_mlx_adapter.models import build_model, count_parameters, init_whitening
from cifar_mlx_adapter.module import MLXClassifier
from cifar_mlx_adapter.trainer import BasePredictionWriter, Callback, MLXTrainer, NonFiniteLossError

__all__ = [
    "BasePredictionWriter", "Callback", "MLXClassifier", "MLXTrainer", "NonFiniteLossError", "build_model", "count_parameters",
    "init_whitening", "load_file", "load_weights", "mlx_state", "mlx_to_torch", "torch_to_mlx",
]  # fmt: skip
