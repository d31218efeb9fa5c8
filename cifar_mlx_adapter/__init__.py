"""MLX counterpart of cifar_lightning: same model spec, Lightning's hooks, weights that convert both ways.

The names below are imported on first use, so ``import cifar_mlx_adapter`` loads no MLX
(``cifar_mlx_adapter.blas`` can prepare a process before MLX is loaded), as ``import
cifar_lightning`` loads no torch.
"""

from importlib import import_module

_MLX_NAMES = {
    "BasePredictionWriter": "cifar_mlx_adapter.trainer",
    "Callback": "cifar_mlx_adapter.trainer",
    "MLXClassifier": "cifar_mlx_adapter.module",
    "MLXTrainer": "cifar_mlx_adapter.trainer",
    "NonFiniteLossError": "cifar_mlx_adapter.trainer",
    "build_model": "cifar_mlx_adapter.models",
    "count_parameters": "cifar_mlx_adapter.models",
    "init_whitening": "cifar_mlx_adapter.models",
    "load_file": "cifar_mlx_adapter.weights",
    "load_weights": "cifar_mlx_adapter.weights",
    "mlx_state": "cifar_mlx_adapter.weights",
    "mlx_to_torch": "cifar_mlx_adapter.weights",
    "torch_to_mlx": "cifar_mlx_adapter.weights",
}

__all__ = sorted(_MLX_NAMES)


def __getattr__(name: str):
    if name in _MLX_NAMES:
        return getattr(import_module(_MLX_NAMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
