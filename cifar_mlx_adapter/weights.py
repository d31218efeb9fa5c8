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

from cifar_lightning.core.errors import UsageError
from cifar_lightning.core.weights import (
    EXPECTED_WEIGHTS,
    check_weights,
    mlx_layout_to_torch,
    read_npz_model,
    torch_layout_to_mlx,
    weights_file_kind,
)


def mlx_state(model: nn.Module) -> dict[str, mx.array]:
    """Every parameter (frozen ones too) and BatchNorm statistic, by torch-compatible name."""
    return dict(tree_flatten(model.parameters()))


def _shapes(d: dict) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in d.items()}


def _numpy(tensor) -> np.ndarray:
    """A torch tensor as numpy; bfloat16, which numpy lacks, as float32 (exact)."""
    import torch

    tensor = tensor.detach().cpu()
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()


def torch_to_mlx(state_dict: dict, model: nn.Module | None = None) -> dict[str, mx.array]:
    """A torch state dict as MLX arrays; checked against `model` when given."""
    arrays = {k: _numpy(v) for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    weights = {k: mx.array(v) for k, v in torch_layout_to_mlx(arrays).items()}
    if model is not None:
        check_weights(_shapes(mlx_state(model)), _shapes(weights), what="torch weights for the MLX model")
    return weights


def mlx_to_torch(weights: dict, model=None) -> dict:
    """MLX arrays (or a model's ``mlx_state``) as a torch state dict; checked against the
    torch `model` when given."""
    import torch

    arrays = mlx_layout_to_torch(
        {k: np.array(v.astype(mx.float32) if v.dtype == mx.bfloat16 else v) for k, v in weights.items()}
    )  # numpy has no bfloat16
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    for key in [k for k in state if k.endswith("running_mean")]:
        state[key[: -len("running_mean")] + "num_batches_tracked"] = torch.tensor(0)
    if model is not None:
        check_weights(_shapes(model.state_dict()), _shapes(state), what="MLX weights for the torch model")
    return state


def load_weights(model: nn.Module, weights: dict[str, mx.array], what: str = "weights") -> None:
    """Put `weights` into `model`, each floating array in the dtype of the model's own
    (float32: the precision run.json records), as torch's ``load_state_dict`` copies;
    integer arrays as they are."""
    own = mlx_state(model)
    check_weights(_shapes(own), _shapes(weights), what=what)
    weights = {k: (v.astype(own[k].dtype) if _floating(v) and _floating(own[k]) else v) for k, v in weights.items()}
    model.update(tree_unflatten(list(weights.items())))
    mx.eval(model.parameters())
    if "whiten.weight" in weights and hasattr(model, "whitening_set"):  # the fast net's filters come with them
        model.whitening_set = True


def _floating(array) -> bool:
    return mx.issubdtype(array.dtype, mx.floating)


def load_file(model: nn.Module, path: str | Path) -> None:
    """Load either framework's weight file into `model`, recognised by its content: torch's
    .ckpt/.pt/.pth (read with torch, imported only then), MLX's .npz, or .safetensors in
    MLX layout (as ``mx.save_safetensors(path, mlx_state(model))`` writes it). Weights of
    any float width load as the model's float32. Raises UsageError (one line: the file,
    what it is, what was expected) or WeightsMismatchError naming the first offending key."""
    path = Path(path)
    kind, what = weights_file_kind(path)
    if kind is None:
        raise UsageError(f"{path}: {what}; {EXPECTED_WEIGHTS}")
    if kind == "torch":  # read with torch, which a torch file needs
        from cifar_lightning.weights import load_torch_state

        weights = torch_to_mlx(load_torch_state(path))
    elif kind == "npz":
        weights = _mlx_arrays(path, what, read_npz_model(path))
    else:
        weights = _mlx_arrays(path, what, None)
    load_weights(model, weights, what=str(path))


def _mlx_arrays(path: Path, what: str, arrays: dict | None) -> dict[str, mx.array]:
    """`arrays` (numpy, from an .npz) as MLX arrays, or those of the .safetensors file at `path`."""
    try:
        if arrays is None:
            arrays = mx.load(str(path), format="safetensors")
            arrays = {k[len("model.") :]: v for k, v in arrays.items() if k.startswith("model.")} or arrays
        return {k: mx.array(v) for k, v in arrays.items()}
    except Exception as e:  # any parse error of a damaged file; KeyboardInterrupt is no Exception
        raise UsageError(f"{path}: {what} that does not read ({type(e).__name__}); {EXPECTED_WEIGHTS}") from None
