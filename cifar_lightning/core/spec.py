"""The model spec both frameworks build: names and architecture numbers, written once.

Parameter names are the contract between the torch and MLX builders: both
name every parameter and BatchNorm buffer identically (``conv1.weight``,
``layer2.0.shortcut.1.running_mean``, ``block1.norm1.bias``, ...). Shapes agree
except conv weights, which are (out, in, kh, kw) in torch and (out, kh, kw, in)
in MLX. ``tests/test_mlx_models.py`` checks this name by name.
"""

from __future__ import annotations

MODEL_NAMES = ("small_cnn", "resnet18", "fast")

# SmallCNN (the original MLX project's): 3 blocks of two 3x3 convs, a 1x1 skip,
# BN, max-pool and dropout; then a 2048 -> 128 -> classes head.
SMALL_CNN = {"widths": (32, 64, 128), "hidden": 128, "dropout": 0.25}

# CIFAR ResNet-18: 3x3 stem, no max-pool, four stages of two BasicBlocks.
RESNET18 = {"widths": (64, 128, 256, 512), "blocks": (2, 2, 2, 2), "strides": (1, 2, 2, 2)}

# airbench94's net: frozen 2x2 whitening conv (3 -> 24, each filter paired with
# its negative), three conv groups, max-pool 3, a bias-free linear head scaled by 1/9.
FAST = {
    "whiten_kernel": 2,
    "whiten_width": 24,
    "widths": (64, 256, 256),
    "bn_momentum": 0.4,  # torch convention: running = (1 - m) * running + m * batch
    "bn_eps": 1e-12,
    "logit_scale": 1 / 9,
    "whiten_images": 5000,  # the first training images whose 2x2 patches give the whitening filters
}


def check_model_name(name: str) -> str:
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}: expected one of {list(MODEL_NAMES)}")
    return name


def is_norm_bias(name: str) -> bool:
    """BatchNorm biases of the fast net, which get the recipe's bias_lr_scale (they learn faster)."""
    return ".norm" in name and name.endswith(".bias")


# the classifier layer of each model: the head the fast Muon recipe gives its own learning rate
HEAD_PREFIXES = ("head.", "fc2.", "fc.")  # fast, small_cnn, resnet18


def parameter_role(name: str, ndim: int) -> str:
    """A trainable parameter's role, by which a recipe's optimiser parts choose their
    parameters (``recipes.OptimizerPart.roles``): "whiten_bias" (the fast net's whitening
    bias), "norm_bias" (its BatchNorm biases), "head" (the classifier layer), "filters"
    (any other 4-D convolution weight, in either framework's layout) or "other"."""
    if name == "whiten.bias":
        return "whiten_bias"
    if is_norm_bias(name):
        return "norm_bias"
    if name.startswith(HEAD_PREFIXES):
        return "head"
    return "filters" if ndim == 4 else "other"
