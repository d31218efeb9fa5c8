"""MLX optimisers that follow torch's step for step: SGD, AdamW and Muon, one per recipe part."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten

from cifar_lightning.core.recipes import (
    NS_COEFFICIENTS,
    OptimizerPart,
    Recipe,
    cycles_momentum,
    momentum_at,
    optimized_parameters,
    optimizer_parts,
    part_lr_at,
    route_parameters,
)
from cifar_mlx_adapter.lightning.trainer import upcoming_learning_rate

_DTYPES = {"bfloat16": mx.bfloat16, "float32": mx.float32}


def _matmul(a: mx.array, b: mx.array) -> mx.array:
    """a @ b. On the CPU a bfloat16 product is computed in float32 and rounded to bfloat16
    once, as MLX's own CPU bfloat16 matmul does up to summation order, ~17x faster (2-core
    AVX2 x86-64, X X^T at (256, 2304) and the two products after it: 0.135 s against
    0.008 s). The GPU keeps its native bfloat16 matmul."""
    if a.dtype == mx.bfloat16 and mx.default_device().type == mx.DeviceType.cpu:
        return (a.astype(mx.float32) @ b.astype(mx.float32)).astype(mx.bfloat16)
    return a @ b


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


def newton_schulz(g: mx.array, steps: int = 3, dtype: str = "bfloat16", eps: float = 1e-7) -> mx.array:
    """As ``cifar_lightning.optim.newton_schulz``: X = g / (|g|_F + eps) in `dtype`, transposed
    when taller than wide, then `steps` times X <- a X + (b A + c A^2) X, A = X X^T.
    g is 2-D; the result has g's shape, in `dtype`."""
    a, b, c = NS_COEFFICIENTS
    x = g.astype(_DTYPES[dtype])
    x = x / (mx.sqrt(mx.sum(mx.square(x))) + eps)
    tall = g.shape[0] > g.shape[1]
    if tall:
        x = x.T
    for _ in range(steps):
        A = _matmul(x, x.T)
        x = a * x + _matmul(b * A + c * _matmul(A, A), x)
    return x.T if tall else x


class Muon(optim.Optimizer):
    """airbench94_muon.py's Muon, as ``cifar_lightning.optim.Muon``'s Muon groups: buf = m buf
    + g; g' = g + m buf (Nesterov) or buf; p <- p sqrt(out) / |p|_F; p <- p - lr NS(g'
    reshaped (out, -1)). Unlike mlx.optimizers.Muon it rescales the filters, runs
    Newton-Schulz in `ns_dtype` and has no weight decay.

    MLX keeps conv filters as (out, kh, kw, in), torch as (out, in, kh, kw): the rows are
    the same filters, the columns a permutation, which Newton-Schulz commutes with
    (X P (X P)^T = X X^T), so both frameworks take the same step up to rounding."""

    def __init__(
        self, learning_rate, momentum: float, nesterov: bool = True, ns_steps: int = 3, ns_dtype: str = "bfloat16"
    ):
        super().__init__()
        self._maybe_schedule("learning_rate", learning_rate)
        self.momentum, self.nesterov, self.ns_steps, self.ns_dtype = momentum, nesterov, ns_steps, ns_dtype

    def init_single(self, parameter: mx.array, state: dict):
        state["v"] = mx.zeros_like(parameter)

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict):
        v = self.momentum * state["v"] + gradient
        state["v"] = v
        g = gradient + self.momentum * v if self.nesterov else v
        out = parameter.shape[0]
        parameter = parameter * (out**0.5 / mx.sqrt(mx.sum(mx.square(parameter))))
        update = newton_schulz(g.reshape(out, -1), self.ns_steps, self.ns_dtype).reshape(g.shape)
        return parameter - self.learning_rate.astype(parameter.dtype) * update.astype(parameter.dtype)


def schedule_table(values: list[float]):
    """A schedule as a lookup table (exactly the neutral formula's values, in float32),
    indexable by the optimiser's traced step inside a compiled function."""
    table = mx.array(values, dtype=mx.float32)
    last = len(values) - 1
    return lambda step: table[mx.minimum(step, last).astype(mx.int32)]


def _make(part: OptimizerPart, lr, momentum) -> optim.Optimizer:
    if part.kind == "sgd":
        return SGD(lr, momentum, part.weight_decay, part.nesterov)
    if part.kind == "adamw":  # bias_correction=True: torch's AdamW always corrects; MLX's default does not
        return optim.AdamW(lr, [part.momentum, part.beta2], part.eps, part.weight_decay, bias_correction=True)
    return Muon(lr, part.momentum, part.nesterov, part.ns_steps, part.ns_dtype)


def trainable_ndims(model: nn.Module) -> dict[str, int]:
    """{name: number of dimensions} of the model's trainable parameters (torch's names)."""
    return {name: value.ndim for name, value in tree_flatten(model.trainable_parameters())}


def recipe_optimizer(
    recipe: Recipe,
    total_steps: int,
    steps_per_epoch: int,
    model: nn.Module,
    examples_per_step: int | None = None,
    prefix: str = "",
) -> optim.Optimizer:
    """The recipe's optimisers (``recipes.optimizer_parts``) over `model`'s trainable
    parameters, routed by ``recipes.route_parameters`` as torch's param groups are, each
    part's learning rate (and SGD's momentum, when OneCycle cycles it) a table of the
    neutral schedule (``recipes.part_lr_at``) over `total_steps` steps.

    One part is that optimiser; several are an ``mlx.optimizers.MultiOptimizer`` holding
    them last part first (so the first part, the base group, is its fallback and
    ``optimizers[-1]``; checkpoints of the two-group SGD keep their order).
    `examples_per_step`: images of one step over all processes (default: the recipe's
    batch size), which the summed-loss recipe's weight decay is per (``recipes.sgd_args``).
    `prefix`: where `model` sits in the module the optimiser updates (``MLXClassifier`` holds
    it as ``model.``): parameters are routed by `model`'s own names with or without it."""
    parts = optimizer_parts(recipe, examples_per_step)
    whiten = getattr(model, "whiten", None)
    owner = route_parameters(
        optimized_parameters(trainable_ndims(model), recipe, whiten is not None and "bias" in whiten), parts
    )
    steps = range(total_steps + 1)
    momentum = schedule_table([momentum_at(recipe, s, total_steps) for s in steps]) if cycles_momentum(recipe) else None
    made = [
        _make(
            p,
            schedule_table([part_lr_at(recipe, p, s, total_steps, steps_per_epoch) for s in steps]),
            momentum if momentum is not None else p.momentum,
        )
        for p in parts
    ]
    if len(parts) == 1:
        return made[0]
    order = list(range(len(parts)))[::-1]
    filters = [lambda path, _, i=i: owner.get(path, owner.get(path.removeprefix(prefix))) == i for i in order[:-1]]
    return optim.MultiOptimizer([made[i] for i in order], filters)


def scheduled_learning_rate(optimizer: optim.Optimizer) -> mx.array:
    """The base parameter group's learning rate for the step about to be taken (its schedule
    at the optimiser's step count; the fixed rate without one), float32 scalar: read inside
    ``training_step``, before the update, it is the rate ``base_learning_rate`` reads after
    it, as torch's ``param_groups[0]["lr"]`` reads inside the step."""
    base = optimizer.optimizers[-1] if hasattr(optimizer, "optimizers") else optimizer
    rate = upcoming_learning_rate(base)
    return mx.array(rate, dtype=mx.float32) if not isinstance(rate, mx.array) else rate.astype(mx.float32)


def base_learning_rate(optimizer: optim.Optimizer) -> mx.array:
    """The base parameter group's learning rate (a ``recipe_optimizer``'s last part, its
    fallback), float32 scalar: after a step, the rate that step used (MLX sets a scheduled
    rate from the step count before it updates), as torch's ``param_groups[0]["lr"]`` reads
    inside the step."""
    base = optimizer.optimizers[-1] if hasattr(optimizer, "optimizers") else optimizer
    return base.learning_rate
