"""Per-model training recipes and the schedule formulas, written once.

Framework-neutral (plain Python): the Lightning module and the MLX module both
read their numbers and per-step learning rate / momentum from here, so the two
frameworks cannot silently drift apart.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, replace

from cifar_lightning.core.draws import Augmentation
from cifar_lightning.core.spec import parameter_role

OPTIMIZER_KINDS = ("sgd", "adamw", "muon")
# Newton-Schulz coefficients (a, b, c) of airbench94_muon.py's zeropower_via_newtonschulz5, for both frameworks' Muon
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
# what each part of a recipe may own, by role (``spec.parameter_role``)
ROLES = ("filters", "norm_bias", "whiten_bias", "head", "other")


@dataclass(frozen=True)
class OptimizerPart:
    """One optimiser of a recipe and the parameters it owns, chosen by role.

    Every number is in torch's units, as ``torch.optim`` takes it:

    - ``lr``: the learning rate at the schedule's peak, per optimizer step.
    - ``weight_decay``: "sgd": the L2 coefficient added to the gradient (torch.optim.SGD,
      coupled: a weight shrinks by lr x weight_decay per step); "adamw": decoupled
      (torch.optim.AdamW: p *= 1 - lr x weight_decay before the Adam step); "muon": none
      (airbench94_muon decays no filter; its rescaling fixes their norm instead): a Muon
      part given a weight decay is refused.
    - ``weight_decay_per_example``: > 0 instead of ``weight_decay``: the per-step shrink
      lr x weight_decay is this many times the images of one optimizer step (over all
      processes), airbench94_muon's ``wd = 2e-6 * batch_size`` written as ``weight_decay =
      wd / lr``; ``optimizer_parts`` resolves it into ``weight_decay`` for the run's batch.
    - ``momentum``: SGD's and Muon's momentum; AdamW's beta1 (``beta2``, ``eps`` are AdamW's,
      which always corrects both moments' bias, as torch's does).
    - ``ns_steps``, ``ns_dtype``: Muon's Newton-Schulz iterations and the dtype they run in
      ("bfloat16" as published, or "float32").
    - ``decay_epochs``: 0 follows the recipe's schedule over the whole run; > 0 is a schedule
      of its own, linear from lr to 0 over this many epochs (airbench94_muon's whitening
      bias, which is frozen when its rate reaches 0).
    """

    kind: str
    roles: tuple[str, ...]
    lr: float
    weight_decay: float = 0.0
    momentum: float = 0.0
    nesterov: bool = False
    beta2: float = 0.999
    eps: float = 1e-8
    ns_steps: int = 3
    ns_dtype: str = "bfloat16"
    decay_epochs: float = 0.0
    weight_decay_per_example: float = 0.0

    def __post_init__(self):
        # one role may come as a bare string ("head"), not split into letters
        object.__setattr__(self, "roles", (self.roles,) if isinstance(self.roles, str) else tuple(self.roles))
        if self.kind not in OPTIMIZER_KINDS:
            raise ValueError(f"unknown optimizer {self.kind!r}: expected one of {list(OPTIMIZER_KINDS)}")
        unknown = [r for r in self.roles if r not in ROLES]
        if unknown or not self.roles:
            raise ValueError(f"optimizer roles {list(self.roles)}: expected one or more of {list(ROLES)}")
        if self.ns_dtype not in ("bfloat16", "float32"):
            raise ValueError(f"ns_dtype {self.ns_dtype!r}: expected 'bfloat16' or 'float32'")
        if self.kind == "muon" and (self.weight_decay or self.weight_decay_per_example):
            raise ValueError(
                f"a muon part takes no weight decay, got weight_decay {self.weight_decay}, "
                f"weight_decay_per_example {self.weight_decay_per_example}; expected 0 (Muon "
                "rescales each filter bank to a fixed norm instead)"
            )
        if self.weight_decay and self.weight_decay_per_example:
            raise ValueError(
                f"weight_decay {self.weight_decay} and weight_decay_per_example "
                f"{self.weight_decay_per_example} both given; expected one of them"
            )
        if self.weight_decay_per_example and not self.lr > 0:
            raise ValueError(f"weight_decay_per_example needs a positive lr (it is divided by it), got lr {self.lr}")

    def resolved(self, examples_per_step: int) -> "OptimizerPart":
        """This part in torch's units for a step of `examples_per_step` images: a
        ``weight_decay_per_example`` becomes the ``weight_decay`` whose per-step shrink
        lr x weight_decay is weight_decay_per_example x examples_per_step."""
        if not self.weight_decay_per_example:
            return self
        decay = self.weight_decay_per_example * examples_per_step / self.lr
        return replace(self, weight_decay=decay, weight_decay_per_example=0.0)


# OptimizerPart fields a kind does not read, left out of records (their defaults come back on reading)
_UNUSED_BY_KIND = {
    "sgd": ("beta2", "eps", "ns_steps", "ns_dtype"),
    "adamw": ("nesterov", "ns_steps", "ns_dtype"),
    "muon": ("weight_decay", "weight_decay_per_example", "beta2", "eps"),
}


def parts_record(parts) -> list[dict]:
    """Optimiser parts (``OptimizerPart`` or their dicts, as any record holds them) as a
    record writes them: each with the fields its kind reads only."""
    out = []
    for part in parts:
        d = asdict(part if isinstance(part, OptimizerPart) else OptimizerPart(**part))
        unused = _UNUSED_BY_KIND[d["kind"]] + (() if d["weight_decay_per_example"] else ("weight_decay_per_example",))
        out.append({k: v for k, v in d.items() if k not in unused})
    return out


# fields that apply to some recipes only (``Recipe.inapplicable``)
PART_HELD_FIELDS = ("lr", "momentum", "weight_decay", "nesterov", "units", "bias_lr_scale")
ONECYCLE_FIELDS = ("pct_start", "div_factor", "final_div_factor", "cycle_momentum", "base_momentum", "max_momentum")
LINEAR_FIELDS = ("warmup_frac", "start_factor", "end_factor")
LOSS_REDUCTIONS = ("mean", "sum")
SCHEDULES = ("onecycle", "linear_warmup_decay")
UNITS = ("torch", "airbench")  # see ``sgd_args``
WHITEN_BIAS_INITS = ("zeros", "uniform")  # see ``whitening.initial_bias``


@dataclass(frozen=True)
class Loss:
    """A recipe's training loss: cross-entropy with `label_smoothing` s (the target puts
    1 - s + s/K on the label and s/K on each of the K classes, as torch's
    ``F.cross_entropy`` and MLX's ``nn.losses.cross_entropy`` both take it), reduced over
    the batch by `reduction`: "mean", or "sum" (airbench94's, whose learning rate is then
    per example: see ``sgd_args``)."""

    label_smoothing: float = 0.0
    reduction: str = "mean"

    def __post_init__(self):
        if not isinstance(self.label_smoothing, numbers.Real) or not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be a number in [0, 1), got {self.label_smoothing!r}")
        if self.reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {self.reduction!r}")

    @property
    def summed(self) -> bool:
        """Whether the batch's loss is a sum (its gradient grows with the batch)."""
        return self.reduction == "sum"


@dataclass(frozen=True)
class Recipe:
    """How a model trains, in parts that both frameworks read:

    - data augmentation: ``augmentation`` (``draws.Augmentation``: crop, flip, cutout);
    - the loss: ``loss`` (``Loss``: label smoothing, mean or summed over the batch);
    - the schedule: ``schedule`` and its fields below (``lr_at``, ``part_lr_at``,
      ``momentum_at`` give each step's values);
    - one or more optimisers, each owning parameters by role: ``optimizer_parts``
      (``OptimizerPart``; a recipe without ``optimizers`` has SGD from its flat fields);
    - the fast net's extras (whitening bias, weight averaging, TTA), the seed and the
      architecture options the recipe changes (``model_kwargs``).

    The fields stay flat, so a record (``to_dict``) of any run, old or new, reads back as
    the recipe it trained with. The augmentation and loss parts, the schedule's kind and the
    units are checked when the recipe is made (ValueError names the bad field); the numbers a
    script takes from flags are checked there (``cli``).
    """

    epochs: float  # may be fractional: training stops after ceil(epochs * steps_per_epoch) steps
    batch_size: int
    schedule: str  # "onecycle" or "linear_warmup_decay"
    # one SGD's numbers, when the recipe has no optimiser parts (0 in a record that omits them)
    lr: float = 0.0  # peak learning rate, in `units`
    momentum: float = 0.0
    weight_decay: float = 0.0  # in `units`
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
    # the whitening bias's start: "zeros" (airbench94) or "uniform", nn.Conv2d's default
    # U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (airbench94_muon), drawn from the seed (``whitening.initial_bias``)
    whiten_bias_init: str = "zeros"
    average_every: int = 0  # weight averaging every N steps (0: off)
    tta: bool = False
    # augmentation (see cifar_lightning.data)
    crop_padding: int = 4
    pad_mode: str = "constant"
    flip: str = "random"  # "random", "alternating" or "none"
    cutout: int = 0
    seed: int = 1111
    # optimisers as parts (``OptimizerPart``); empty: one SGD from the flat fields above
    # (lr, momentum, weight_decay, nesterov, units, bias_lr_scale), see ``optimizer_parts``
    optimizers: tuple = ()
    # architecture options the recipe changes (``build_model`` keyword arguments)
    model_kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        parts = tuple(p if isinstance(p, OptimizerPart) else OptimizerPart(**p) for p in self.optimizers)
        object.__setattr__(self, "optimizers", parts)
        object.__setattr__(self, "model_kwargs", dict(self.model_kwargs or {}))
        _ = self.augmentation, self.loss  # made here to check the fields they come from
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if self.units not in UNITS:
            raise ValueError(f"units must be one of {list(UNITS)}, got {self.units!r}")
        if self.whiten_bias_init not in WHITEN_BIAS_INITS:
            raise ValueError(
                f"whiten_bias_init must be one of {list(WHITEN_BIAS_INITS)}, got {self.whiten_bias_init!r}"
            )
        for part in self.optimizers:  # the bias is frozen when its own schedule reaches 0: one length for both
            if "whiten_bias" in part.roles and part.decay_epochs and part.decay_epochs != self.whiten_bias_epochs:
                raise ValueError(
                    f"the whitening bias's part decays over {part.decay_epochs} epochs but "
                    f"whiten_bias_epochs is {self.whiten_bias_epochs}; expected the same number "
                    "(it trains until its rate reaches 0, then freezes)"
                )

    @property
    def augmentation(self) -> Augmentation:
        """The data augmentation part: crop padding and mode, flip, cutout."""
        return Augmentation(self.crop_padding, self.pad_mode, self.flip, self.cutout)

    @property
    def loss(self) -> Loss:
        """The loss part: label smoothing and the batch's reduction."""
        return Loss(self.label_smoothing, self.loss_reduction)

    def inapplicable(self) -> set[str]:
        """The fields that do not shape this recipe's training, so its record leaves them out:
        the one-SGD numbers when optimiser parts hold them, the other schedule's fields,
        OneCycle's momentum cycle when it does not cycle, the whitening bias's start without
        whitening."""
        out = set(PART_HELD_FIELDS) if self.optimizers else set()
        out |= set(LINEAR_FIELDS) if self.schedule == "onecycle" else set(ONECYCLE_FIELDS)
        if not self.cycle_momentum:
            out |= {"base_momentum", "max_momentum"}
        if not self.whiten_bias_epochs:
            out.add("whiten_bias_init")
        return out

    def to_dict(self) -> dict:
        """The recipe as plain values, the fields that apply only (``inapplicable``); a
        recipe without parts or model options records none. ``Recipe(**record)`` reads any
        record back, an older one of every field too (``recipe_fields_that_apply`` is the
        one reader of old records' fields)."""
        out = asdict(self)
        for key in ("optimizers", "model_kwargs"):
            if not out[key]:
                del out[key]
        for key in self.inapplicable():
            out.pop(key, None)
        if "optimizers" in out:
            out["optimizers"] = parts_record(self.optimizers)
        return out

    def with_overrides(self, **kwargs) -> "Recipe":
        """A copy with the given fields replaced (None: kept). With optimiser parts, lr,
        momentum and weight_decay go to the single part; a recipe of several parts raises
        ValueError for them (which part would a single number mean?)."""
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        part_keys = {k: kwargs.pop(k) for k in ("lr", "momentum", "weight_decay") if k in kwargs}
        if part_keys and self.optimizers:
            if len(self.optimizers) > 1:
                flags = ", ".join("--" + k.replace("_", "-") for k in part_keys)
                raise ValueError(
                    f"{flags}: this recipe has {len(self.optimizers)} optimizers "
                    f"({', '.join(p.kind for p in self.optimizers)}), each with its own numbers; "
                    "expected a recipe of one optimizer: drop the flag, or change the parts' "
                    "numbers in RECIPES (cifar_lightning/core/recipes.py)"
                )
            kwargs["optimizers"] = (replace(self.optimizers[0], **part_keys),)
        elif part_keys:
            kwargs.update(part_keys)
        return replace(self, **kwargs)


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


def adamw_recipe(recipe: Recipe) -> Recipe:
    """`recipe` with AdamW on every parameter, at torch.optim.AdamW's defaults (lr 1e-3 as the
    schedule's peak, betas (0.9, 0.999), eps 1e-8, decoupled weight decay 1e-2) and the
    recipe's own schedule, loss, augmentation and length. OneCycle's momentum cycle is
    off: torch's OneCycleLR would cycle AdamW's beta1, which these defaults hold fixed.
    The flat SGD fields are zeroed, so a record cannot be read as SGD's."""
    adamw = OptimizerPart("adamw", ROLES, lr=1e-3, weight_decay=1e-2, momentum=0.9, beta2=0.999, eps=1e-8)
    return replace(
        recipe,
        lr=0.0,
        momentum=0.0,
        weight_decay=0.0,
        nesterov=False,
        units="torch",
        bias_lr_scale=1.0,
        cycle_momentum=False,
        optimizers=(adamw,),
    )


# airbench94_muon.py (github.com/KellerJordan/cifar10-airbench, 94.01% mean over 200 runs in
# 8 epochs), as it differs from airbench94 (the "fast" recipe):
#   batch_size = 2000; total_train_steps = ceil(8 * len(train_loader))      -> batch 2000, 8 epochs
#   lr = initial_lr * (1 - step / total_train_steps)                       -> linear to 0, no warm-up
#   whiten bias: lr 0.053 * (1 - step / whiten_bias_train_steps), 3 epochs -> its own schedule, then frozen
#   no LookaheadState, no lookahead update                                 -> average_every 0
#   Muon(filter_params, lr=0.24, momentum=0.6, nesterov=True)              -> 4-D filters on Muon
#   SGD(..., momentum=0.85, nesterov=True): bias_lr = 0.053, head_lr = 0.67,
#     weight_decay = wd / lr with wd = 2e-6 * batch_size                   -> three SGD parts, their decay
#                                                                             per example of the step
#   self.head(x) / x.size(-1) (256 features, not airbench94's 1/9)         -> logit_scale 1/256
#   reset(): head.weight *= 1 / head.weight.std()                          -> head_std 1.0
#   reset(): nn.Conv2d.reset_parameters() on the whitening conv            -> whiten_bias_init "uniform"
#     (airbench94's own Conv zeroes that bias)
# What stays as airbench94: label smoothing 0.2 on a summed loss, BatchNorm (momentum 0.6 in
# airbench's convention, eps 1e-12, frozen scale), dirac-initialised convs, whitening filters
# from the first 5000 training images (of the training split: with --val-size, the images
# left after the held-out ones), flip alternating by epoch, translate 2 (reflect), TTA level 2.
# Published, not copied: the net runs in float16 there and in float32 here; the whitening
# filters come ordered by descending eigenvalue here (ascending there), a relabelling of
# channels that the randomly initialised layers after them cannot tell apart.
_MUON_DECAY = 2e-6  # per example of a step: lr x weight_decay = 2e-6 x batch (0.004 at batch 2000), each SGD part
RECIPES["fast_muon"] = replace(
    RECIPES["fast"],
    epochs=8,
    batch_size=2000,
    lr=0.0,
    momentum=0.0,
    weight_decay=0.0,
    units="torch",
    bias_lr_scale=1.0,  # the parts hold them
    warmup_frac=0.0,
    start_factor=1.0,
    end_factor=0.0,
    average_every=0,
    whiten_bias_init="uniform",
    optimizers=(
        OptimizerPart("muon", ("filters",), lr=0.24, momentum=0.6, nesterov=True, ns_steps=3, ns_dtype="bfloat16"),
        OptimizerPart(
            "sgd", ("norm_bias",), lr=0.053, weight_decay_per_example=_MUON_DECAY, momentum=0.85, nesterov=True
        ),
        OptimizerPart(
            "sgd",
            ("whiten_bias",),
            lr=0.053,
            weight_decay_per_example=_MUON_DECAY,
            momentum=0.85,
            nesterov=True,
            decay_epochs=3,
        ),
        OptimizerPart("sgd", ("head",), lr=0.67, weight_decay_per_example=_MUON_DECAY, momentum=0.85, nesterov=True),
    ),
    model_kwargs={"logit_scale": 1 / 256, "head_std": 1.0},
)
for _model in ("small_cnn", "resnet18", "fast"):
    RECIPES[f"{_model}_adamw"] = adamw_recipe(RECIPES[_model])


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


def optimizer_parts(recipe: Recipe, examples_per_step: int | None = None) -> tuple[OptimizerPart, ...]:
    """The recipe's optimisers in torch's units, the first owning the base group (whose
    learning rate runs log as ``lr``). A recipe without parts has one SGD from its flat
    fields through ``sgd_args``, and, with ``bias_lr_scale`` != 1, a second SGD for the
    BatchNorm biases. A part's ``weight_decay_per_example`` is resolved for `examples_per_step`
    images (default: the recipe's batch size, one process)."""
    if recipe.optimizers:
        return tuple(p.resolved(examples_per_step or recipe.batch_size) for p in recipe.optimizers)
    a = sgd_args(recipe, examples_per_step)
    base = OptimizerPart("sgd", ROLES, a.lr, a.weight_decay, a.momentum, a.nesterov)
    if recipe.bias_lr_scale == 1:
        return (base,)
    biases = OptimizerPart("sgd", ("norm_bias",), a.bias_lr, a.bias_weight_decay, a.momentum, a.nesterov)
    return (replace(base, roles=tuple(r for r in ROLES if r != "norm_bias")), biases)


def optimized_parameters(trainable: dict[str, int], recipe: Recipe, has_whiten_bias: bool) -> dict[str, int]:
    """The parameters the recipe's optimisers hold, {name: number of dimensions}: the
    trainable ones, and the whitening bias (``whiten.bias``, 1-D) even while it is frozen
    when the recipe trains it in its first ``whiten_bias_epochs``: the optimiser is made
    once, so it holds the bias from the start, and a run resumed after the freeze has
    the optimiser state of the run it continues."""
    out = dict(trainable)
    if has_whiten_bias and recipe.whiten_bias_epochs:
        out.setdefault("whiten.bias", 1)
    return out


def route_parameters(ndims: dict[str, int], parts: tuple[OptimizerPart, ...]) -> dict[str, int]:
    """Which part owns each trainable parameter: {name: index into `parts`}, by the
    parameter's role (``spec.parameter_role`` from its name and number of dimensions).
    Both frameworks route with this one function. ValueError when a role is owned twice
    or a parameter's role by no part."""
    owner: dict[str, int] = {}
    for i, part in enumerate(parts):
        for role in part.roles:
            if role in owner:
                raise ValueError(f"role {role!r} is owned by optimizer parts {owner[role]} and {i}; expected one")
            owner[role] = i
    out = {}
    for name, ndim in ndims.items():
        role = parameter_role(name, ndim)
        if role not in owner:
            raise ValueError(
                f"parameter {name} (role {role!r}) belongs to no optimizer of the recipe; its parts own {sorted(owner)}"
            )
        out[name] = owner[role]
    return out


@dataclass(frozen=True)
class Target:
    """An accuracy a recipe (a name of ``RECIPES``) should reach on a dataset (test set, a
    fraction), with where the number comes from. Results.md sets each against the runs
    that trained the recipe's full length on the full training set."""

    recipe: str
    dataset: str
    accuracy: float
    source: str


TARGETS = (
    Target(
        "fast",
        "cifar10",
        0.9401,
        "airbench94's published mean over repeated runs, 9.9 epochs "
        "(github.com/KellerJordan/cifar10-airbench, airbench94.py)",
    ),
    Target(
        "fast_muon",
        "cifar10",
        0.9401,
        "airbench94_muon's published mean over 200 runs, 8 epochs "
        "(github.com/KellerJordan/cifar10-airbench, airbench94_muon.py)",
    ),
    Target(
        "resnet18",
        "cifar10",
        0.92,
        "the original project's ResNet-18 recipe, 40 epochs, PyTorch on MPS (its MLX run reached 94%)",
    ),
)


def recipe_name(model: str, optimizer: str | None = None) -> str:
    """The name in ``RECIPES`` of `model`'s recipe with `optimizer` ("sgd", "adamw", "muon";
    None or the model's own: the model's recipe itself, e.g. "fast"; otherwise e.g.
    "fast_muon", "small_cnn_adamw")."""
    if optimizer is None or (model in RECIPES and optimizer == optimizer_parts(RECIPES[model])[0].kind):
        return model
    return f"{model}_{optimizer}"


def optimizers_for(model: str) -> list[str]:
    """The optimisers `model` has a recipe with (its own first)."""
    own = optimizer_parts(RECIPES[model])[0].kind
    return [own] + [k for k in OPTIMIZER_KINDS if k != own and f"{model}_{k}" in RECIPES]


def get_recipe(model: str, optimizer: str | None = None) -> Recipe:
    """`model`'s recipe (a name of ``RECIPES``: "small_cnn", "fast_muon", ...) or, with
    `optimizer`, the model's recipe for that optimiser. ValueError names what exists."""
    if model not in RECIPES:
        raise ValueError(f"unknown model {model!r}: expected one of {sorted(RECIPES)}")
    name = recipe_name(model, optimizer)
    if name not in RECIPES:
        raise ValueError(
            f"--optimizer {optimizer}: {model} has no recipe with it; expected one of {optimizers_for(model)}"
        )
    return RECIPES[name]


def recipe_fields_that_apply(hyperparameters: dict) -> dict:
    """A record's hyper-parameters (run.json's, a checkpoint's) without the recipe fields
    that do not apply to the recipe it records (``Recipe.inapplicable``): records written
    before the record left them out hold every field, and read this way they compare with
    today's. Nothing is added; a record no Recipe reads is returned as it is."""
    from dataclasses import fields

    names = {f.name for f in fields(Recipe)}
    try:
        drop = Recipe(**{k: v for k, v in hyperparameters.items() if k in names}).inapplicable()
    except (TypeError, ValueError):
        return dict(hyperparameters)
    return {k: v for k, v in hyperparameters.items() if k not in drop}


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


def _onecycle(recipe: Recipe, step: int, total: int, peak: float) -> tuple[float, float]:
    """(lr, momentum) of torch.optim.lr_scheduler.OneCycleLR, cosine, two phases."""
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
    base = optimizer_parts(recipe)[0].lr
    if recipe.schedule == "onecycle":
        return _onecycle(recipe, step, total, base)[0]
    if recipe.schedule == "linear_warmup_decay":
        return base * lr_factor_linear(recipe, step, total)
    raise ValueError(f"unknown schedule {recipe.schedule!r}: expected 'onecycle' or 'linear_warmup_decay'")


def part_lr_at(recipe: Recipe, part: OptimizerPart, step: int, total: int, steps_per_epoch: int) -> float:
    """`part`'s learning rate at 0-based optimizer step `step` of `total`: the recipe's
    schedule scaled to the part's peak, or, with ``decay_epochs``, linear from the peak to 0
    over ``total_steps(decay_epochs, steps_per_epoch)`` steps and 0 after."""
    if part.decay_epochs:
        return part.lr * max(0.0, 1 - step / total_steps(part.decay_epochs, steps_per_epoch))
    if recipe.schedule == "onecycle":
        return _onecycle(recipe, step, total, part.lr)[0]
    if recipe.schedule == "linear_warmup_decay":
        return part.lr * lr_factor_linear(recipe, step, total)
    raise ValueError(f"unknown schedule {recipe.schedule!r}: expected 'onecycle' or 'linear_warmup_decay'")


def momentum_at(recipe: Recipe, step: int, total: int) -> float:
    """SGD's momentum at step `step`: OneCycle's cycle (when the recipe cycles it), else the recipe's."""
    if recipe.schedule == "onecycle":
        return _onecycle(recipe, step, total, 1.0)[1]
    return recipe.momentum


def cycles_momentum(recipe: Recipe) -> bool:
    """Whether SGD's momentum follows OneCycle's cycle (``momentum_at``) rather than the part's."""
    return recipe.schedule == "onecycle" and recipe.cycle_momentum


def averaging_decay(step: int, total: int) -> float:
    """Weight-averaging decay after `step` steps (airbench94's lookahead): 0.95^5 (step/total)^3."""
    return 0.95**5 * (step / total) ** 3
