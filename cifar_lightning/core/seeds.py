"""Independent random streams derived from one seed (numpy only).

Every random stream of a run (the stratified split, each epoch's shuffle, each epoch's
augmentation draws) is seeded from (seed, purpose, epoch) through numpy's
``SeedSequence``, which hashes its inputs: nearby seeds and epochs give unrelated
streams. (Seeding a generator with ``seed + epoch`` would give seed s in epoch e the
data order of seed s + 1 in epoch e - 1.)
"""

from __future__ import annotations

import numpy as np

PURPOSES = ("split", "shuffle", "augment", "flip_halves", "whiten_bias")  # append only: an index seeds each


def derive_seed(seed: int, purpose: str, epoch: int = 0) -> int:
    """A 63-bit seed for `purpose` (one of ``PURPOSES``) in
    `epoch` (0 or more), for ``torch.Generator.manual_seed`` or ``np.random.default_rng``.
    Raises ValueError for an unknown purpose or a negative seed or epoch."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown random-stream purpose {purpose!r}: expected one of {list(PURPOSES)}")
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be 0 or more, got seed {seed}, epoch {epoch}")
    words = np.random.SeedSequence(seed, spawn_key=(PURPOSES.index(purpose), epoch)).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])
