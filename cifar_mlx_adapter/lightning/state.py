"""State a trainer saves and puts back: MLX's global random key and each submodule's mode."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np


def set_random_key(key) -> None:
    """Make MLX's global random key equal `key` (uint32 (2,), as saved from ``mx.random.state[0]``).

    ``mx.random.state`` cannot be assigned to; ``mx.random.seed(s)`` sets the key to
    (s >> 32, s & 0xFFFFFFFF), so seeding with the key's two words restores it exactly.
    """
    hi, lo = (int(v) for v in np.asarray(key, dtype=np.uint32).reshape(2))
    mx.random.seed((hi << 32) | lo)


def module_modes(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    """Every submodule with its training flag, parents before children."""
    named = sorted(model.named_modules(), key=lambda item: item[0].count(".") + (item[0] != ""))
    return [(m, m.training) for _, m in named]


def restore_modes(modes: list[tuple[nn.Module, bool]]) -> None:
    """Put each submodule back in the mode ``module_modes`` captured (as Lightning's
    evaluation loop does), so a layer the user froze with ``.eval()`` stays frozen."""
    for m, training in modes:  # parents first: a child's own flag overrides its parent's recursive call
        m.train(training)
