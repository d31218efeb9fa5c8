"""Weight files of either framework, checked against the model they load into.

torch files: Lightning checkpoints (``.ckpt``, keys prefixed ``model.``) or plain
state dicts (``.pt``/``.pth``). MLX files: ``.npz`` written by
``cifar_mlx_adapter`` (MLX layout; converted here with numpy only, so torch
users need no MLX to read them).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np

from .errors import CIFARError, UsageError


class WeightsMismatchError(CIFARError, ValueError):
    """Weights that do not fit the model: names the first offending key and both shapes."""


def check_weights(expected: dict[str, tuple], given: dict[str, tuple], what: str = "weights") -> None:
    """Raise WeightsMismatchError at the first key missing, extra or of another shape."""
    for key, shape in expected.items():
        if key not in given:
            raise WeightsMismatchError(f"{what}: missing key {key!r} (model expects shape {tuple(shape)})")
        if tuple(given[key]) != tuple(shape):
            raise WeightsMismatchError(
                f"{what}: key {key!r} has shape {tuple(given[key])}, the model expects {tuple(shape)} "
                "(another model or number of classes?)"
            )
    for key in given:
        if key not in expected:
            raise WeightsMismatchError(f"{what}: unexpected key {key!r} of shape {tuple(given[key])} (another model?)")


def is_conv_weight(key: str, array) -> bool:
    return key.endswith("weight") and array.ndim == 4


def mlx_layout_to_torch(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Conv weights (out, kh, kw, in) -> (out, in, kh, kw); everything else as is."""
    return {k: (np.transpose(v, (0, 3, 1, 2)) if is_conv_weight(k, v) else v) for k, v in weights.items()}


def torch_layout_to_mlx(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Conv weights (out, in, kh, kw) -> (out, kh, kw, in); everything else as is."""
    return {k: (np.transpose(v, (0, 2, 3, 1)) if is_conv_weight(k, v) else v) for k, v in weights.items()}


def read_npz_model(path: str | Path) -> dict[str, np.ndarray]:
    """The model arrays of an MLX checkpoint (keys ``model.<name>``) or a bare weights .npz."""
    try:  # allow_pickle=False: an .npz holding pickled objects is refused, and nothing in it runs
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise UsageError(f"{path} is not a weights file of plain arrays (.npz): {type(e).__name__}") from None
    model = {k[len("model.") :]: v for k, v in arrays.items() if k.startswith("model.")}
    return model or arrays


def load_torch_file(path: str | Path):
    """``torch.load(weights_only=True)`` on the CPU: a file that needs arbitrary pickle, or is
    no torch file at all, raises UsageError, and no code in it runs."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise UsageError(f"{path} is no weights file that loads without running code (a PyTorch file that "
                         f"needs pickle, or no weights file at all: {type(e).__name__}); nothing in it was run") from None  # fmt: skip


def load_torch_state(path: str | Path) -> dict:
    """A torch state dict for the bare model from either framework's file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"weights file {path} does not exist")
    if path.suffix == ".npz":
        state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in mlx_layout_to_torch(read_npz_model(path)).items()}
        for key in [k for k in state if k.endswith("running_mean")]:  # MLX keeps no batch counter
            state[key[: -len("running_mean")] + "num_batches_tracked"] = torch.tensor(0)
        return state
    checkpoint = load_torch_file(path)
    if not isinstance(checkpoint, dict):
        raise UsageError(f"{path} holds a {type(checkpoint).__name__}, not a state dict or checkpoint")
    state = checkpoint.get("state_dict", checkpoint)
    if any(k.startswith("model.") for k in state):
        state = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    return state


def load_into_torch(model, path: str | Path) -> None:
    state = load_torch_state(path)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_weights(expected, {k: tuple(v.shape) for k, v in state.items()}, what=str(path))
    model.load_state_dict(state)
