"""torch's reading of weight files of either framework (the core recognises them and reads
MLX's with numpy: ``cifar_lightning.core.weights``): ``torch.load(weights_only=True)``, so
nothing in a file runs, and any file turned into a state dict for the bare torch model.
torch is imported when a function needs it, so ``read_card`` of an MLX checkpoint (as the
MLX side calls it) loads no torch.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from cifar_lightning.core.errors import UsageError
from cifar_lightning.core.weights import (
    EXPECTED_WEIGHTS,
    check_weights,
    mlx_layout_to_torch,
    read_npz_model,
    read_safetensors,
    torch_layout_to_mlx,
    unreadable,
    weights_file_kind,
)


def load_torch_file(path: str | Path, expected: str = EXPECTED_WEIGHTS):
    """``torch.load(weights_only=True)`` on the CPU: a file that needs arbitrary pickle, or
    does not parse, raises UsageError (``<file>: <what it is>; <expected>``), and no code
    in it runs. Any parse error is caught (torch's weights-only unpickler raises
    IndexError, KeyError and more on files that are no torch files); KeyboardInterrupt
    is not."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        # torch names the classes and functions it refused (GLOBAL ..., add_safe_globals); other
        # errors, an unknown opcode included, come from a file that is damaged or no pickle at all
        if isinstance(e, pickle.UnpicklingError) and ("GLOBAL" in str(e) or "add_safe_globals" in str(e)):
            raise UsageError(
                f"{path}: a PyTorch file that needs pickle to load (refused: nothing in it was run); {expected}"
            ) from None
        raise unreadable(path, "a PyTorch file", e, expected) from None


def _state_dict_of(path: Path, checkpoint) -> dict:
    """The bare model's state dict from a Lightning checkpoint or a plain state dict."""
    import torch

    if not isinstance(checkpoint, dict):
        raise UsageError(
            f"{path}: a PyTorch file holding a {type(checkpoint).__name__}, not a state dict; {EXPECTED_WEIGHTS}"
        )
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, dict):
        raise UsageError(f"{path}: a PyTorch file whose state_dict is a {type(state).__name__}; {EXPECTED_WEIGHTS}")
    if any(isinstance(k, str) and k.startswith("model.") for k in state):
        state = {k[len("model.") :]: v for k, v in state.items() if isinstance(k, str) and k.startswith("model.")}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise UsageError(
                f"{path}: a PyTorch file that is no state dict ({key!r} holds a "
                f"{type(value).__name__}); {EXPECTED_WEIGHTS}"
            )
    return state


def load_torch_state(path: str | Path) -> dict:
    """A torch state dict for the bare model from either framework's file, recognised by
    its content; UsageError for any file that is no weights file, or does not parse."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file; {EXPECTED_WEIGHTS}")
    kind, what = weights_file_kind(path)
    if kind is None:
        raise UsageError(f"{path}: {what}; {EXPECTED_WEIGHTS}")
    if kind == "torch":
        return _state_dict_of(path, load_torch_file(path))
    arrays = read_npz_model(path) if kind == "npz" else read_safetensors(path)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in mlx_layout_to_torch(arrays).items()}
    for key in [k for k in state if k.endswith("running_mean")]:  # MLX keeps no batch counter
        state[key[: -len("running_mean")] + "num_batches_tracked"] = torch.tensor(0)
    return state


def load_into_torch(model, path: str | Path) -> None:
    """Load either framework's file into the torch `model`. ``load_state_dict`` copies each
    tensor into the model's own tensor, so the model keeps its dtype (float32 unless a
    --precision says otherwise): float16 or bfloat16 weights arrive upcast."""
    state = load_torch_state(path)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_weights(expected, {k: tuple(v.shape) for k, v in state.items()}, what=str(path))
    model.load_state_dict(state)


def read_card(path: str | Path):
    """The model card of a checkpoint of either framework (``core.model_card``), a torch
    file read with torch (imported then only). UsageError for bare weights and files of no
    checkpoint (one line, as ``read_model_card`` says it)."""
    from cifar_lightning.core.model_card import read_model_card

    return read_model_card(path, load_torch_file)


def card_or_none(path: str | Path):
    """``read_card``, or None for weights that record no model card (initial.pt,
    .safetensors), which a run may start from."""
    try:
        return read_card(path)
    except UsageError:
        return None


def write_mlx_weights(source: str | Path, target: str | Path) -> Path:
    """Write the weights of either framework's file `source` to `target` as an .npz in MLX's
    layout (conv weights (out, kh, kw, in); torch's ``num_batches_tracked`` counters, which MLX
    has no place for, left out), the form an MLX run saves its own initial weights in and reads
    with numpy alone: a run started from it never imports torch. The values are copied bit for
    bit (float32 stays float32; bfloat16, which numpy lacks, becomes float32, exactly). Written
    to a temporary file first, then renamed, so `target` is never half written. UsageError for
    a `source` that is no weights file."""
    import torch

    state = load_torch_state(source)
    arrays = {
        k: (v.detach().cpu().float() if v.dtype == torch.bfloat16 else v.detach().cpu()).numpy()
        for k, v in state.items()
        if not k.endswith("num_batches_tracked")
    }
    target = Path(target)
    partial = target.with_name(target.name + ".partial")
    with open(partial, "wb") as f:  # a file object: np.savez adds no ".npz" to its name
        np.savez(f, **torch_layout_to_mlx(arrays))
    partial.replace(target)
    return target
