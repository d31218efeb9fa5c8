"""MLX optimisers that follow torch's SGD and the recipe's schedules step for step."""

from __future__ import annotations

import mlx.core as mx
import mlx.optimizers as optim

from cifar_lightning.core.recipes import Recipe, lr_at, momentum_at, sgd_args
from cifar_lightning.core.spec import is_norm_bias


class SGD(optim.Optimizer):
    """torch.optim.SGD (dampening 0): d = g + wd * p; v = m * v + d; p -= lr * (d + m * v if
    nesterov else v). Unlike mlx.optimizers.SGD, momentum may be a schedule too."""

    def __init__(self, learning_rate, momentum, weight_decay: float = 0.0, nesterov: bool = False):
        super().__init__()
        self._maybe_schedule("learning_rate", learning_rate)
        self._maybe_schedule("momentum", momentum)
        self.weight_decay, self.nesterov = weight_decay, nesterov

    def init_single(self, parameter: mx.array, state: dict):
        state["v"] = mx.zeros_like(parameter)

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict):
        momentum = self.state["momentum"].astype(gradient.dtype)
        if self.weight_decay:
            gradient = gradient + self.weight_decay * parameter
        v = momentum * state["v"] + gradient
        state["v"] = v
        update = gradient + momentum * v if self.nesterov else v
        return parameter - self.learning_rate.astype(gradient.dtype) * update


def schedule_table(values: list[float]):
    """A schedule as a lookup table (exactly the neutral formula's values, in float32),
    indexable by the optimiser's traced step inside a compiled function."""
    table = mx.array(values, dtype=mx.float32)
    last = len(values) - 1
    return lambda step: table[mx.minimum(step, last).astype(mx.int32)]


def recipe_optimizer(recipe: Recipe, total_steps: int) -> optim.Optimizer:
    """SGD following `recipe` for `total_steps` steps; with bias_lr_scale, BatchNorm biases
    get their own group (lr x scale, weight decay / scale), as torch's param groups do.
    The arguments come from ``recipes.sgd_args``, as torch's do."""
    args = sgd_args(recipe)
    steps = range(total_steps + 1)
    lrs = [lr_at(recipe, s, total_steps) for s in steps]
    momenta = [momentum_at(recipe, s, total_steps) for s in steps]
    momentum = schedule_table(momenta) if recipe.cycle_momentum and recipe.schedule == "onecycle" else args.momentum

    def make(scale: float):
        return SGD(schedule_table([lr * scale for lr in lrs]), momentum, args.weight_decay / scale, args.nesterov)

    if recipe.bias_lr_scale == 1:
        return make(1.0)
    return optim.MultiOptimizer([make(recipe.bias_lr_scale), make(1.0)], [lambda path, _: is_norm_bias(path)])
