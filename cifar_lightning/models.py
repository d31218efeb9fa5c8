"""The torch model zoo: one builder per name in ``spec.MODEL_NAMES``."""

from __future__ import annotations

import torch
from torch import nn

from cifar_lightning.core.spec import FAST, RESNET18, SMALL_CNN, check_model_name
from cifar_lightning.core.whitening import whitening_filters


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int = 10, dropout: float = SMALL_CNN["dropout"]):
        super().__init__()
        c_in = 3
        for i, width in enumerate(SMALL_CNN["widths"], start=1):
            setattr(self, f"conv{2 * i - 1}", nn.Conv2d(c_in, width, 3, padding=1))
            setattr(self, f"bn{2 * i - 1}", nn.BatchNorm2d(width))
            setattr(self, f"conv{2 * i}", nn.Conv2d(width, width, 3, padding=1))
            setattr(self, f"bn{2 * i}", nn.BatchNorm2d(width))
            setattr(self, f"skip{i}", nn.Conv2d(width, width, 1))
            c_in = width
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(dropout)
        self.fc1 = nn.Linear(c_in * 4 * 4, SMALL_CNN["hidden"])
        self.fc2 = nn.Linear(SMALL_CNN["hidden"], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, 4):
            x = torch.relu(getattr(self, f"bn{2 * i - 1}")(getattr(self, f"conv{2 * i - 1}")(x)))
            x = getattr(self, f"skip{i}")(x) + torch.relu(getattr(self, f"bn{2 * i}")(getattr(self, f"conv{2 * i}")(x)))
            x = self.drop(self.pool(x))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        c_in = 64
        for i, (width, blocks, stride) in enumerate(zip(*RESNET18.values()), start=1):
            layers = [BasicBlock(c_in if b == 0 else width, width, stride if b == 0 else 1) for b in range(blocks)]
            setattr(self, f"layer{i}", nn.Sequential(*layers))
            c_in = width
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def _fast_conv(c_in: int, c_out: int) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    with torch.no_grad():  # identity on the first input channels: the net starts close to a shallow one
        nn.init.dirac_(conv.weight[: min(c_in, c_out)])
    return conv


def _fast_norm(width: int) -> nn.BatchNorm2d:
    norm = nn.BatchNorm2d(width, eps=FAST["bn_eps"], momentum=FAST["bn_momentum"])
    norm.weight.requires_grad_(False)  # scale frozen at 1: only the bias learns
    return norm


class ConvGroup(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1, self.norm1 = _fast_conv(c_in, c_out), _fast_norm(c_out)
        self.conv2, self.norm2 = _fast_conv(c_out, c_out), _fast_norm(c_out)
        self.pool, self.act = nn.MaxPool2d(2), nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class FastNet(nn.Module):
    """airbench94's net. Its whitening filters come from ``init_whitening`` (which
    ``CIFARClassifier`` calls at the start of fit when they are not set yet) or from loaded
    weights: ``whitening_set`` says whether either happened.

    Args:
        logit_scale: the head's output is multiplied by this (airbench94: 1/9;
            airbench94_muon: 1/256, one over the head's input features).
        head_std: None keeps torch.nn.Linear's initialisation of the head; a number rescales
            the head's weight to that standard deviation (airbench94_muon: 1.0).
    """

    def __init__(self, num_classes: int = 10, logit_scale: float = FAST["logit_scale"], head_std: float | None = None):
        super().__init__()
        self.whiten = nn.Conv2d(3, FAST["whiten_width"], FAST["whiten_kernel"])
        self.whiten.weight.requires_grad_(False)
        nn.init.zeros_(self.whiten.bias)
        self.whitening_set = False  # True once init_whitening ran or weights were loaded (not a weight)
        self.register_load_state_dict_post_hook(_whitening_loaded)
        c_in = FAST["whiten_width"]
        for i, width in enumerate(FAST["widths"], start=1):
            setattr(self, f"block{i}", ConvGroup(c_in, width))
            c_in = width
        self.head = nn.Linear(c_in, num_classes, bias=False)
        if head_std is not None:
            with torch.no_grad():
                self.head.weight.mul_(head_std / self.head.weight.std())
        self.logit_scale = logit_scale
        self.act, self.pool = nn.GELU(), nn.MaxPool2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.act(self.whiten(x)))))
        return self.head(self.pool(x).flatten(1)) * self.logit_scale


def _whitening_loaded(model: FastNet, incompatible) -> None:
    """After ``load_state_dict`` (a checkpoint, --weights, a user's own): the filters are set
    unless the whitening weight was missing from what was loaded."""
    if not any(k.endswith("whiten.weight") for k in incompatible.missing_keys):
        model.whitening_set = True


def init_whitening(model: nn.Module, images: torch.Tensor, bias=None) -> None:
    """Set ``model.whiten``'s filters from normalised float images (N, 3, 32, 32), and its
    bias to `bias` (float32 (24,), e.g. ``core.whitening.initial_bias``) when given."""
    filters = whitening_filters(images.detach().cpu().numpy(), kernel=model.whiten.kernel_size[0])
    with torch.no_grad():
        model.whiten.weight.copy_(torch.from_numpy(filters))
        if bias is not None:
            model.whiten.bias.copy_(torch.as_tensor(bias))
    model.whitening_set = True


_BUILDERS = {"small_cnn": SmallCNN, "resnet18": ResNet18, "fast": FastNet}


def build_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """The torch model `name` (see ``spec.MODEL_NAMES``) with `num_classes` outputs."""
    return _BUILDERS[check_model_name(name)](num_classes=num_classes, **kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
