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
    lr: float  # peak learning rate, in `units`
    momentum: float
    weight_decay: float  # in `units`
    schedule: str  # "onecycle" or "linear_warmup_decay"
    nesterov: bool = False
    # "torch": lr per optimizer step and coupled (L2) weight decay, as torch's SGD takes them;
    # "airbench": lr per 1024 examples of a summed loss and weight decay per 1024 examples,
    # decoupled from lr (see `sgd_args`)
    units: str = "torch"
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


RECIPES = {
    # The original project's ResNet-18 recipe (40 epochs, OneCycle to 0.1, torch's momentum cycling).
    "resnet18": Recipe(epochs=40, batch_size=64, lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="onecycle"),
    # The same recipe shape, shorter: SmallCNN converges in fewer epochs.
    "small_cnn": Recipe(epochs=20, batch_size=128, lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="onecycle"),
    # airbench94's recipe (github.com/KellerJordan/cifar10-airbench, airbench94.py: 94.01% in 9.9
    # epochs), in its own units: lr 11.5 per 1024 examples, weight decay 0.0153 per 1024 examples.
    "fast": Recipe(
        epochs=9.9,
        batch_size=1024,
        lr=11.5,
        momentum=0.85,
        nesterov=True,
        weight_decay=0.0153,
        units="airbench",
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


@dataclass(frozen=True)
class SGDArgs:
    """What torch's SGD (and the MLX twin) takes, derived from a recipe by `sgd_args`.

    ``lr`` and ``weight_decay`` are for the base parameter group at the schedule's peak;
    BatchNorm biases learn ``bias_lr`` (the recipe's ``bias_lr_scale`` times faster) with
    ``bias_weight_decay``, so that lr x weight_decay, the fraction a weight shrinks per
    step, is the same in both groups.
    """

    lr: float
    weight_decay: float
    momentum: float
    nesterov: bool
    bias_lr: float
    bias_weight_decay: float


def sgd_args(recipe: Recipe, examples_per_step: int | None = None) -> SGDArgs:
    """The optimiser's arguments from the recipe's numbers, in one place for both frameworks.

    ``units="torch"``: lr and weight decay are torch's, as given; a changed batch size
    changes neither (the loss is a mean, so the step is per batch).
    ``units="airbench"`` (airbench94.py's convention, summed loss): with the momentum's
    "kilostep" scale k = 1024 (1 + 1 / (1 - momentum)), torch's lr is lr / k, and the
    per-step shrink lr_torch x wd_torch is weight_decay x examples_per_step / k. So a
    larger batch takes the same step per example and decays more per step, in proportion;
    a changed momentum rescales both through k. `examples_per_step` counts the images of
    one optimizer step over all processes and accumulated batches (default: the recipe's
    batch_size, one process without accumulation).
    """
    if recipe.units == "torch":
        lr, weight_decay = recipe.lr, recipe.weight_decay
    elif recipe.units == "airbench":
        kilostep = 1024 * (1 + 1 / (1 - recipe.momentum))
        lr = recipe.lr / kilostep
        weight_decay = recipe.weight_decay * (examples_per_step or recipe.batch_size) / kilostep / lr
    else:
        raise ValueError(f"unknown recipe units {recipe.units!r}: expected 'torch' or 'airbench'")
    scale = recipe.bias_lr_scale
    return SGDArgs(lr, weight_decay, recipe.momentum, recipe.nesterov, lr * scale, weight_decay / scale)


@dataclass(frozen=True)
class Target:
    """An accuracy a model's recipe should reach on a dataset (test set, a fraction), with
    where the number comes from. Results.md sets each against the runs that trained the
    recipe's full length on the full training set."""

    model: str
    dataset: str
    accuracy: float
    source: str


TARGETS = (
    Target("fast", "cifar10", 0.9401, "airbench94's published mean over repeated runs, 9.9 epochs "
                                      "(github.com/KellerJordan/cifar10-airbench, airbench94.py)"),  # fmt: skip
    Target("resnet18", "cifar10", 0.92, "the original project's ResNet-18 recipe, 40 epochs, PyTorch on MPS "
                                        "(its MLX run reached 94%)"),  # fmt: skip
)


def get_recipe(model: str) -> Recipe:
    try:
        return RECIPES[model]
    except KeyError:
        raise ValueError(f"unknown model {model!r}: expected one of {sorted(RECIPES)}") from None


def module_recipe(name: str, recipe: dict | None, own_model: bool) -> Recipe:
    """The recipe a module trains with: `recipe` (a dict of ``Recipe`` fields) when given,
    else the zoo model `name`'s own. A model of the user's own has no recipe of its own:
    ValueError unless `recipe` is given."""
    if recipe:
        return Recipe(**recipe)
    if own_model:
        raise ValueError(f"a model of your own ({name}) needs recipe=..., e.g. get_recipe('small_cnn').to_dict()")
    return get_recipe(name)


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
    peak = sgd_args(recipe).lr
    initial = peak / recipe.div_factor
    minimum = initial / recipe.final_div_factor
    warm_end = float(recipe.pct_start * total) - 1
    if step <= warm_end:
        pct = step / warm_end
        lr = _cos_anneal(initial, peak, pct)
        mom = _cos_anneal(recipe.max_momentum, recipe.base_momentum, pct)
    else:
        pct = (step - warm_end) / (total - 1 - warm_end)
        lr = _cos_anneal(peak, minimum, pct)
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
    """The base group's learning rate (torch's units) at 0-based optimizer step `step`."""
    if recipe.schedule == "onecycle":
        return _onecycle(recipe, step, total)[0]
    if recipe.schedule == "linear_warmup_decay":
        return sgd_args(recipe).lr * lr_factor_linear(recipe, step, total)
    raise ValueError(f"unknown schedule {recipe.schedule!r}: expected 'onecycle' or 'linear_warmup_decay'")


def momentum_at(recipe: Recipe, step: int, total: int) -> float:
    if recipe.schedule == "onecycle":
        return _onecycle(recipe, step, total)[1]
    return recipe.momentum


def averaging_decay(step: int, total: int) -> float:
    """Weight-averaging decay after `step` steps (airbench94's lookahead): 0.95^5 (step/total)^3."""
    return 0.95**5 * (step / total) ** 3
