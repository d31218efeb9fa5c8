"""Per-model training recipes and the schedule formulas, written once.

Framework-neutral (plain Python): the Lightning module and the MLX module both
read their numbers and per-step learning rate / momentum from here, so the two
frameworks cannot silently drift apart.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class Recipe:
    epochs: float  # may be fractional: training stops after ceil(epochs * steps_per_epoch) steps
    batch_size: int
    lr: float  # peak learning rate, as torch's SGD sees it
    momentum: float
    weight_decay: float  # coupled (L2), as in torch's SGD
    schedule: str  # "onecycle" or "linear_warmup_decay"
    nesterov: bool = False
    # OneCycle (torch.optim.lr_scheduler.OneCycleLR semantics)
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    cycle_momentum: bool = True
    base_momentum: float = 0.85
    max_momentum: float = 0.95
    # linear warm-up then linear decay (the fast recipe), as factors of lr
    warmup_frac: float = 0.23
    start_factor: float = 0.2
    end_factor: float = 0.07
    # loss and parameter groups
    label_smoothing: float = 0.0
    loss_reduction: str = "mean"  # "sum" keeps the fast recipe's published numbers
    bias_lr_scale: float = 1.0  # BatchNorm biases: lr times this, same per-step decay
    # fast-recipe extras
    whiten_bias_epochs: int = 0  # epochs the whitening bias trains before freezing (0: no whitening)
    average_every: int = 0  # weight averaging every N steps (0: off)
    tta: bool = False
    # augmentation (see cifar_lightning.augment)
    crop_padding: int = 4
    pad_mode: str = "constant"
    flip: str = "random"  # "random", "alternating" or "none"
    cutout: int = 0
    seed: int = 1111

    def to_dict(self) -> dict:
        return asdict(self)

    def with_overrides(self, **kwargs) -> "Recipe":
        return replace(self, **{k: v for k, v in kwargs.items() if v is not None})


_KILOSTEP = 1024 * (1 + 1 / (1 - 0.85))  # airbench: lr 11.5 per 1024 examples, momentum 0.85

RECIPES = {
    # The original project's ResNet-18 recipe (40 epochs, OneCycle to 0.1, torch's momentum cycling).
    "resnet18": Recipe(epochs=40, batch_size=64, lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="onecycle"),
    # The same recipe shape, shorter: SmallCNN converges in fewer epochs.
    "small_cnn": Recipe(epochs=20, batch_size=128, lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="onecycle"),
    # airbench94's recipe (github.com/KellerJordan/cifar10-airbench, airbench94.py: 94.01% in 9.9
    # epochs); lr and weight decay are for a summed loss.
    "fast": Recipe(
        epochs=9.9,
        batch_size=1024,
        lr=11.5 / _KILOSTEP,
        momentum=0.85,
        nesterov=True,
        weight_decay=0.0153 * 1024 / 11.5,  # so that lr * weight_decay = 0.001996 per step
        schedule="linear_warmup_decay",
        label_smoothing=0.2,
        loss_reduction="sum",
        bias_lr_scale=64.0,
        whiten_bias_epochs=3,
        average_every=5,
        tta=True,
        crop_padding=2,
        pad_mode="reflect",
        flip="alternating",
        seed=0,
    ),
}


def get_recipe(model: str) -> Recipe:
    try:
        return RECIPES[model]
    except KeyError:
        raise ValueError(f"unknown model {model!r}: expected one of {sorted(RECIPES)}") from None


def total_steps(epochs: float, steps_per_epoch: int | float) -> int:
    """Optimizer steps of a run of `epochs` (may be fractional) epochs: ceil(epochs x steps).

    Both frameworks count a run's steps with this one function. The product is rounded
    to 9 decimals first, so float error cannot add a step (2.1 x 10 is 21.000000000000004
    in binary floating point, which must give 21 steps, not 22).
    """
    return math.ceil(round(epochs * steps_per_epoch, 9))


# ---------------------------------------------------------------- schedules
# Each returns the value for the optimizer step with index `step` (0-based),
# i.e. the value torch's scheduler holds when `step` scheduler.step() calls
# have been made.


def _cos_anneal(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def _onecycle(recipe: Recipe, step: int, total: int) -> tuple[float, float]:
    """(lr, momentum) of torch.optim.lr_scheduler.OneCycleLR, cosine, two phases."""
    initial = recipe.lr / recipe.div_factor
    minimum = initial / recipe.final_div_factor
    warm_end = float(recipe.pct_start * total) - 1
    if step <= warm_end:
        pct = step / warm_end
        lr = _cos_anneal(initial, recipe.lr, pct)
        mom = _cos_anneal(recipe.max_momentum, recipe.base_momentum, pct)
    else:
        pct = (step - warm_end) / (total - 1 - warm_end)
        lr = _cos_anneal(recipe.lr, minimum, pct)
        mom = _cos_anneal(recipe.base_momentum, recipe.max_momentum, pct)
    return lr, (mom if recipe.cycle_momentum else recipe.momentum)


def lr_factor_linear(recipe: Recipe, step: int, total: int) -> float:
    """The fast recipe: factor rises linearly start_factor -> 1, then falls to end_factor."""
    warmup = int(total * recipe.warmup_frac)
    if step < warmup:
        frac = step / warmup
        return recipe.start_factor * (1 - frac) + frac
    frac = (step - warmup) / (total - warmup)
    return (1 - frac) + recipe.end_factor * frac


def lr_at(recipe: Recipe, step: int, total: int) -> float:
    if recipe.schedule == "onecycle":
        return _onecycle(recipe, step, total)[0]
    if recipe.schedule == "linear_warmup_decay":
        return recipe.lr * lr_factor_linear(recipe, step, total)
    raise ValueError(f"unknown schedule {recipe.schedule!r}: expected 'onecycle' or 'linear_warmup_decay'")


def momentum_at(recipe: Recipe, step: int, total: int) -> float:
    if recipe.schedule == "onecycle":
        return _onecycle(recipe, step, total)[1]
    return recipe.momentum


def averaging_decay(step: int, total: int) -> float:
    """Weight-averaging decay after `step` steps (airbench94's lookahead): 0.95^5 (step/total)^3."""
    return 0.95**5 * (step / total) ** 3
