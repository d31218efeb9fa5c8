"""Plain Python values for hyper-parameters, so checkpoints load with ``weights_only=True``.

torch's safe unpickler (the default of ``torch.load`` since torch 2.6) accepts only
builtin containers and scalars; a ``pathlib.Path``, a numpy scalar or a dataclass in a
checkpoint's hyper-parameters makes ``load_from_checkpoint`` and ``fit(ckpt_path=...)``
fail. Constructors pass their arguments through ``to_plain`` before saving them.
"""

from __future__ import annotations

import dataclasses
import numbers
from os import PathLike


def to_plain(value, name: str = "value"):
    """`value` as str/int/float/bool/None, lists and str-keyed dicts of those.

    Paths become str, tuples lists, numpy scalars and arrays Python numbers and lists,
    dataclasses dicts. Raises TypeError naming `name` for anything else.
    """
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, PathLike):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return to_plain(value.tolist(), name)
    if isinstance(value, dict):
        return {str(k): to_plain(v, f"{name}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v, f"{name}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{name} must be built from str, numbers, bools, lists and dicts; got {type(value).__name__}")
