"""Weights and BatchNorm statistics, torch <-> MLX.

Names are identical in both frameworks (see ``cifar_lightning.core.spec``); only conv
weights change layout, (out, in, kh, kw) <-> (out, kh, kw, in). torch's
``num_batches_tracked`` counters have no MLX counterpart and are dropped/refilled.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from cifar_lightning.core.weights import (
    check_weights,
    load_torch_state,
    mlx_layout_to_torch,
    read_npz_model,
    torch_layout_to_mlx,
)


def mlx_state(model: nn.Module) -> dict[str, mx.array]:
    """Every parameter (frozen ones too) and BatchNorm statistic, by torch-compatible name."""
    return dict(tree_flatten(model.parameters()))


def _shapes(d: dict) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in d.items()}


def torch_to_mlx(state_dict: dict, model: nn.Module | None = None) -> dict[str, mx.array]:
    """A torch state dict as MLX arrays; checked against `model` when given."""
    arrays = {k: v.detach().cpu().numpy() for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    weights = {k: mx.array(v) for k, v in torch_layout_to_mlx(arrays).items()}
    if model is not None:
        check_weights(_shapes(mlx_state(model)), _shapes(weights), what="torch weights for the MLX model")
    return weights


def mlx_to_torch(weights: dict, model=None) -> dict:
    """MLX arrays (or a model's ``mlx_state``) as a torch state dict; checked against the
    torch `model` when given."""
    import torch

    arrays = mlx_layout_to_torch({k: np.array(v) for k, v in weights.items()})
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    for key in [k for k in state if k.endswith("running_mean")]:
        state[key[: -len("running_mean")] + "num_batches_tracked"] = torch.tensor(0)
    if model is not None:
        check_weights(_shapes(model.state_dict()), _shapes(state), what="MLX weights for the torch model")
    return state


def load_weights(model: nn.Module, weights: dict[str, mx.array], what: str = "weights") -> None:
    check_weights(_shapes(mlx_state(model)), _shapes(weights), what=what)
    model.update(tree_unflatten(list(weights.items())))
    mx.eval(model.parameters())


def load_file(model: nn.Module, path: str | Path) -> None:
    """Load either framework's weight file into `model`: .ckpt/.pt/.pth from torch (read with
    torch, imported only then), .npz from MLX, or .safetensors in MLX layout (as
    ``mx.save_safetensors(path, mlx_state(model))`` writes it). Raises UsageError or
    WeightsMismatchError naming the file and the first offending key."""
    path = Path(path)
    if path.suffix == ".npz":
        weights = {k: mx.array(v) for k, v in read_npz_model(path).items()}
    elif path.suffix == ".safetensors":
        arrays = mx.load(str(path))
        weights = {k[len("model.") :]: v for k, v in arrays.items() if k.startswith("model.")} or arrays
    else:
        weights = torch_to_mlx(load_torch_state(path))
    load_weights(model, weights, what=str(path))
