"""Evaluation metrics from logits, in numpy (the MLX path's; the torch path uses
torchmetrics, and tests/test_core.py checks that both give the same numbers).

logits: float (N, C); labels: integer (N,) in [0, C). Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import numpy as np


def predictions(logits: np.ndarray) -> np.ndarray:
    return np.asarray(logits).argmax(axis=1)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Plain (micro) accuracy: the fraction of images whose top logit is their label."""
    return float((predictions(logits) == np.asarray(labels)).mean())


def confusion_matrix(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 (C, C): rows true class, columns predicted class."""
    flat = np.asarray(labels, dtype=np.int64) * num_classes + predictions(logits)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """float32 (C,): recall of each class (0 for a class with no images, as torchmetrics)."""
    return per_class_accuracy_of(confusion_matrix(logits, labels, num_classes))


def _label_log_probs(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """float64 (N,): log softmax(logits) at each image's label."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return log_probs[np.arange(len(z)), np.asarray(labels)]


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of softmax(logits), computed in float64."""
    return float(-_label_log_probs(logits, labels).mean())


# Whole-set figures from counts: several processes each evaluate a share of the images and
# add up these sums (MLXTrainer), so every image counts once and the figures equal one
# process's (the cross-entropy up to the order its float64 terms are added in).
def evaluation_sums(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, float]:
    """(confusion matrix int64 (C, C), summed cross-entropy float64) of one share."""
    return confusion_matrix(logits, labels, num_classes), float(-_label_log_probs(logits, labels).sum())


def accuracy_of(confusion: np.ndarray) -> float:
    """Plain accuracy from a confusion matrix: its trace over its total (0 when empty)."""
    total = int(confusion.sum())
    return float(np.trace(confusion) / total) if total else 0.0


def per_class_accuracy_of(confusion: np.ndarray) -> np.ndarray:
    """float32 (C,): each class's recall from a confusion matrix (0 for a class with no images)."""
    totals = confusion.sum(axis=1)
    return np.divide(np.diag(confusion), totals, out=np.zeros(len(totals)), where=totals > 0).astype(np.float32)
