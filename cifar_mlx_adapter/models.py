"""The model spec of ``cifar_lightning.core.spec`` built natively in MLX (NHWC input).

Every parameter and BatchNorm statistic has the torch model's name; lists stand
where torch uses nn.Sequential so the indices match (``layer2.0.shortcut.1``).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from cifar_lightning.core.spec import FAST, RESNET18, SMALL_CNN, check_model_name


def _selection(n: int, kept: int, dtype) -> mx.array:
    """(n, kept) 0/1 matrix keeping the first `kept` of n positions; built from numpy so a
    traced graph holds it as a constant (mx.eye is a scatter, which shapeless export refuses)."""
    return mx.array(np.eye(n, kept, dtype=np.float32)).astype(dtype)


class MaxPool2d(nn.Module):
    """Non-overlapping max-pool (kernel = stride) whose gradient goes to the *first*
    maximum of each window, as torch's does. mlx.nn.MaxPool2d routes the gradient of
    tied maxima differently; SmallCNN makes exact ties (pixels whose features are all
    zero leave the 1x1 skip conv as its bias), and on small batches that difference
    grows into visibly different training curves."""

    def __init__(self, kernel: int):
        super().__init__()
        self.kernel = kernel

    shapeless = False  # True while exporting (cifar_mlx_adapter.export): see __call__

    def __call__(self, x: mx.array) -> mx.array:
        _, h, w, _ = x.shape
        k = self.kernel
        # floor mode, as torch: the last rows and columns that fill no window are dropped.
        # Training slices them off. A shapeless export (mx.export_function(shapeless=True))
        # must not write the batch size into the graph, which a slice does: there a 0/1
        # selection matmul drops them, copying the kept values exactly (x * 1 + 0s), at the
        # cost of a matmul that training need not pay.
        if h % k and not self.shapeless:
            x = x[:, : h // k * k]
        elif h % k:
            x = (x.transpose(0, 2, 3, 1) @ _selection(h, h // k * k, x.dtype)).transpose(0, 3, 1, 2)
        if w % k and not self.shapeless:
            x = x[:, :, : w // k * k]
        elif w % k:
            x = (x.transpose(0, 1, 3, 2) @ _selection(w, w // k * k, x.dtype)).transpose(0, 1, 3, 2)
        h, w = h // k * k, w // k * k
        windows = mx.unflatten(mx.unflatten(x, 1, (h // k, k)), 3, (w // k, k)).transpose(0, 1, 3, 5, 2, 4)
        windows = mx.flatten(windows, -2, -1)  # (n, h/k, w/k, c, k*k), row-major within the window, as torch
        first = mx.stop_gradient(mx.argmax(windows, axis=-1, keepdims=True))
        return mx.take_along_axis(windows, first, axis=-1).squeeze(-1)


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int = 10, dropout: float = SMALL_CNN["dropout"]):
        super().__init__()
        c_in = 3
        for i, width in enumerate(SMALL_CNN["widths"], start=1):
            setattr(self, f"conv{2 * i - 1}", nn.Conv2d(c_in, width, 3, padding=1))
            setattr(self, f"bn{2 * i - 1}", nn.BatchNorm(width))
            setattr(self, f"conv{2 * i}", nn.Conv2d(width, width, 3, padding=1))
            setattr(self, f"bn{2 * i}", nn.BatchNorm(width))
            setattr(self, f"skip{i}", nn.Conv2d(width, width, 1))
            c_in = width
        self.pool = MaxPool2d(2)
        self.drop = nn.Dropout(dropout)
        self.fc1 = nn.Linear(c_in * 4 * 4, SMALL_CNN["hidden"])
        self.fc2 = nn.Linear(SMALL_CNN["hidden"], num_classes)

    def __call__(self, x: mx.array) -> mx.array:
        for i in range(1, 4):
            x = nn.relu(getattr(self, f"bn{2 * i - 1}")(getattr(self, f"conv{2 * i - 1}")(x)))
            x = getattr(self, f"skip{i}")(x) + nn.relu(getattr(self, f"bn{2 * i}")(getattr(self, f"conv{2 * i}")(x)))
            x = self.drop(self.pool(x))
        # flatten in torch's (C, H, W) order so fc1's weight means the same in both frameworks
        x = mx.flatten(x.transpose(0, 3, 1, 2), 1)
        return self.fc2(nn.relu(self.fc1(x)))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm(c_out)
        self.shortcut = []
        if stride != 1 or c_in != c_out:
            self.shortcut = [nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm(c_out)]

    def __call__(self, x: mx.array) -> mx.array:
        out = nn.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        for layer in self.shortcut:
            x = layer(x)
        return nn.relu(out + x)


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm(64)
        c_in = 64
        for i, (width, blocks, stride) in enumerate(zip(*RESNET18.values()), start=1):
            setattr(
                self,
                f"layer{i}",
                [BasicBlock(c_in if b == 0 else width, width, stride if b == 0 else 1) for b in range(blocks)],
            )
            c_in = width
        self.fc = nn.Linear(c_in, num_classes)

    def __call__(self, x: mx.array) -> mx.array:
        x = nn.relu(self.bn1(self.conv1(x)))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                x = block(x)
        return self.fc(x.mean(axis=(1, 2)))


def _fast_norm(width: int) -> nn.BatchNorm:
    norm = nn.BatchNorm(width, eps=FAST["bn_eps"], momentum=FAST["bn_momentum"])
    norm.freeze(keys=["weight"], recurse=False)  # scale frozen at 1: only the bias learns
    return norm


def _fast_conv(c_in: int, c_out: int) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    # identity on the first input channels (torch.nn.init.dirac_), in (out, kh, kw, in) layout
    n = min(c_in, c_out)
    eye = mx.zeros((c_out, 3, 3, c_in))
    eye[mx.arange(n), 1, 1, mx.arange(n)] = 1.0
    conv.weight = mx.concatenate([eye[:n], conv.weight[n:]]) if n < c_out else eye
    return conv


class ConvGroup(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1, self.norm1 = _fast_conv(c_in, c_out), _fast_norm(c_out)
        self.conv2, self.norm2 = _fast_conv(c_out, c_out), _fast_norm(c_out)
        self.pool = MaxPool2d(2)

    def __call__(self, x: mx.array) -> mx.array:
        x = nn.gelu(self.norm1(self.pool(self.conv1(x))))
        return nn.gelu(self.norm2(self.conv2(x)))


class FastNet(nn.Module):
    """airbench94's net; its whitening filters come from ``init_whitening`` (which
    ``MLXClassifier`` calls at the start of fit when they are not set yet) or from loaded
    weights (``weights.load_weights``): ``whitening_set`` says whether either happened.
    `logit_scale` and `head_std` as in ``cifar_lightning.models.FastNet``."""

    def __init__(self, num_classes: int = 10, logit_scale: float = FAST["logit_scale"], head_std: float | None = None):
        super().__init__()
        k, width = FAST["whiten_kernel"], FAST["whiten_width"]
        self.whiten = nn.Conv2d(3, width, k, bias=True)
        self.whiten.bias = mx.zeros((width,))
        self.whiten.freeze(keys=["weight"], recurse=False)
        self.whitening_set = False  # True once init_whitening ran or weights were loaded (not a weight)
        c_in = width
        for i, w in enumerate(FAST["widths"], start=1):
            setattr(self, f"block{i}", ConvGroup(c_in, w))
            c_in = w
        self.head = nn.Linear(c_in, num_classes, bias=False)
        if head_std is not None:  # torch's Tensor.std: the unbiased estimate
            w = self.head.weight
            self.head.weight = w * (head_std / mx.sqrt(mx.var(w, ddof=1)))
        self._logit_scale = logit_scale  # underscore: not a parameter
        self.pool = MaxPool2d(3)

    def __call__(self, x: mx.array) -> mx.array:
        x = self.block3(self.block2(self.block1(nn.gelu(self.whiten(x)))))
        return self.head(mx.flatten(self.pool(x), 1)) * self._logit_scale


def init_whitening(model: FastNet, images_nchw, bias=None) -> None:
    """Set the whitening filters from normalised float images (N, 3, 32, 32), and the bias to
    `bias` (float32 (24,), e.g. ``core.whitening.initial_bias``) when given, as torch does:
    in the parameters' own dtype (torch copies into them), so a model in half (bf16-true)
    stays in half."""
    from cifar_lightning.core.whitening import whitening_filters

    filters = whitening_filters(np.asarray(images_nchw), kernel=FAST["whiten_kernel"])
    model.whiten.weight = mx.array(filters.transpose(0, 2, 3, 1)).astype(model.whiten.weight.dtype)
    if bias is not None:
        model.whiten.bias = mx.array(np.asarray(bias, np.float32)).astype(model.whiten.bias.dtype)
    model.whitening_set = True


_BUILDERS = {"small_cnn": SmallCNN, "resnet18": ResNet18, "fast": FastNet}


def build_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """The MLX model `name` (see ``cifar_lightning.core.spec.MODEL_NAMES``) with `num_classes` outputs."""
    return _BUILDERS[check_model_name(name)](num_classes=num_classes, **kwargs)


def count_parameters(model: nn.Module) -> int:
    """All parameters, frozen ones included (as torch's ``model.parameters()`` counts them),
    BatchNorm running statistics excluded."""
    return sum(v.size for k, v in tree_flatten(model.parameters()) if not k.endswith(("running_mean", "running_var")))
