"""The fast net's whitening filters, from training patches (framework-neutral numpy)."""

from __future__ import annotations

import numpy as np


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
