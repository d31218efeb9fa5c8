"""The fast net's whitening filters, from training patches (framework-neutral numpy)."""

from __future__ import annotations

import math

import numpy as np

from cifar_lightning.core.seeds import derive_seed
from cifar_lightning.core.spec import FAST

# the one line both frameworks' classifiers refuse to train with when the fast net's whitening
# filters are not set and the trainer has no CIFAR datamodule to set them from
WHITENING_NOT_SET = (
    "the fast net's whitening filters are not set and the trainer has no CIFAR data to set them from: "
    "fit with datamodule={dm}(...) (its first training images give them), or load weights or call "
    "init_whitening(model, images) first"
)


def whitening_filters(images: np.ndarray, kernel: int = 2, eps: float = 5e-4) -> np.ndarray:
    """Filters (2 * 3 * k * k, 3, k, k) that decorrelate the k x k patches of `images`.

    `images` are normalised float images (N, 3, H, W). Each filter is an eigenvector
    of the patch covariance scaled by 1 / sqrt(eigenvalue + eps), largest first,
    followed by the same filters negated (so a following GELU loses no sign).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W), got {images.shape}")
    windows = np.lib.stride_tricks.sliding_window_view(images.astype(np.float32), (kernel, kernel), axis=(2, 3))
    patches = windows.transpose(0, 2, 3, 1, 4, 5).reshape(-1, 3 * kernel * kernel)  # (N * positions, 3kk)
    covariance = (patches.T.astype(np.float64) @ patches) / len(patches)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]
    filters = (eigenvectors / np.sqrt(eigenvalues + eps)).T.reshape(-1, 3, kernel, kernel)
    return np.concatenate([filters, -filters]).astype(np.float32)


def initial_bias(kind: str, seed: int, width: int, fan_in: int) -> np.ndarray:
    """The whitening conv's starting bias, float32 (width,): "zeros" (airbench94), or
    "uniform": U(-1/sqrt(fan_in), 1/sqrt(fan_in)), the bound of ``torch.nn.Conv2d``'s default
    bias initialisation (airbench94_muon keeps it), drawn from `seed`'s own stream so both
    frameworks start from the same bias. `fan_in` is in_channels x kernel x kernel (12 for
    the fast net: bound 0.289). ValueError for another kind."""
    if kind == "zeros":
        return np.zeros(width, np.float32)
    if kind == "uniform":
        bound = 1 / math.sqrt(fan_in)
        return np.random.default_rng(derive_seed(seed, "whiten_bias")).uniform(-bound, bound, width).astype(np.float32)
    raise ValueError(f"whitening bias init {kind!r}: expected 'zeros' or 'uniform'")


def starting_bias(recipe) -> np.ndarray:
    """The fast net's whitening bias at the start of a run of `recipe` (a ``Recipe``): its
    ``whiten_bias_init`` drawn from its seed (``initial_bias``), float32 (24,)."""
    fan_in = 3 * FAST["whiten_kernel"] ** 2
    return initial_bias(recipe.whiten_bias_init, recipe.seed, FAST["whiten_width"], fan_in)
