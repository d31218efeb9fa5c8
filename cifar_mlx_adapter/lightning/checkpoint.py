"""A checkpoint as Lightning's: a plain dict (``epoch``, ``global_step``, ``state_dict``,
``optimizer_states``, ``loops``, ``callbacks``, ``hyper_parameters``, ...), stored as one
``.npz`` whose arrays are the dict's arrays and whose ``__meta__`` entry is the rest as
JSON. Written to a temporary file and renamed, so a cut never leaves half a file. The
file keeps the name asked for (``.ckpt`` as Lightning's), whatever its extension.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlx.core as mx
import numpy as np

_ARRAY = "__array__"


def _encode(value, arrays: dict):
    if isinstance(value, (mx.array, np.ndarray, np.generic)):
        key = f"a{len(arrays)}"
        dtype = str(value.dtype).split(".")[-1]
        if isinstance(value, mx.array):
            # numpy has no bfloat16: kept as float32 and cast back on load (exact)
            value = np.array(value.astype(mx.float32) if value.dtype == mx.bfloat16 else value)
        arrays[key] = np.asarray(value)
        return {_ARRAY: key, "dtype": dtype, "mlx": True}
    if isinstance(value, dict):
        return {str(k): _encode(v, arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v, arrays) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"a checkpoint holds arrays, numbers, strings, lists and dicts; got {type(value).__name__}")


def _decode(value, arrays):
    if isinstance(value, dict):
        if _ARRAY in value:
            array = mx.array(arrays[value[_ARRAY]])
            return array.astype(getattr(mx, value["dtype"])) if value["dtype"] == "bfloat16" else array
        return {k: _decode(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    return value


def save_checkpoint(checkpoint: dict, path: str | Path) -> Path:
    """Write `checkpoint` to `path` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    meta = _encode(checkpoint, arrays)
    arrays["__meta__"] = np.array(json.dumps(meta))
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict:
    """The dict ``save_checkpoint`` wrote. FileNotFoundError or one-line ValueError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("__meta__")))
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"checkpoint {path} is not an MLXTrainer checkpoint ({err})") from err
    return _decode(meta, arrays)
