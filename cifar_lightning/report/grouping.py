"""Which runs count together in Results.md: the runs of a model's recipe itself (toward its
accuracy target), repeats of one configuration (one run per seed, same-seed reruns apart),
and the groups of PyTorch and MLX runs of one experiment on one machine and device class.
"""

from __future__ import annotations

import json
import math

from cifar_lightning.report.logs import RECORDED_SINCE, hardware_short, length_text, machine_and_device, run_status

# hyper-parameters a run records beside its recipe's that say how a framework executed it
# (not what it trained), and the run's step count
EXECUTION_KEYS = {"precision", "channels_last", "device", "total_steps"}
MISSING = object()


def run_recipe(run: dict) -> str:
    """The name in ``RECIPES`` of the recipe a run trained with ("fast", "fast_muon", ...):
    recorded as ``hyperparameters.recipe``; logs older than that field trained their model's own."""
    return run["hyperparameters"].get("recipe") or run["model"]


# recipe fields added since the first logs, at the value every run before them trained with
# (whiten_bias_init: each whitening bias started at zero until airbench94_muon's init was matched)
RECIPE_FIELDS_SINCE = {"whiten_bias_init": "zeros"}


def _examples_per_step(run: dict, hyperparameters: dict) -> int:
    """Images of one optimizer step of the run: its effective batch (logs before the
    ``processes`` field ran one process)."""
    return (run.get("processes") or {}).get("effective_batch_size") or hyperparameters["batch_size"]


def _parts_as_logged(parts: list, examples_per_step: int) -> list[dict]:
    """Optimiser parts in torch's units for the run's step (a ``weight_decay_per_example``
    resolved into ``weight_decay``: the same decay, however a record wrote it), with the
    fields their kind reads only, through JSON."""
    from cifar_lightning.core.recipes import OptimizerPart, parts_record

    made = [p if isinstance(p, OptimizerPart) else OptimizerPart(**p) for p in parts]
    return json.loads(json.dumps(parts_record([p.resolved(examples_per_step) for p in made])))


def recipe_as_logged(name: str, hyperparameters: dict, examples_per_step: int | None = None) -> dict:
    """The recipe `name` (``recipes.get_recipe(name).to_dict()``) as a run's log records
    it, through JSON (tuples become lists), its optimiser parts for a step of
    `examples_per_step` images (default: the recipe's batch). A log without ``units``
    predates that field (commit fc0dacc), when recipes were written in torch's units: a
    recipe in other units is compared in torch's (lr and weight decay from
    ``recipes.sgd_args``). ValueError for an unknown recipe."""
    from cifar_lightning.core.recipes import get_recipe, sgd_args

    recipe = get_recipe(name)
    expected = json.loads(json.dumps(recipe.to_dict()))
    if expected.get("optimizers"):
        expected["optimizers"] = _parts_as_logged(recipe.optimizers, examples_per_step or recipe.batch_size)
    if "units" not in hyperparameters and "units" in expected:  # a recipe of optimiser parts records none
        sgd = sgd_args(recipe)
        del expected["units"]
        expected.update(lr=sgd.lr, weight_decay=sgd.weight_decay)
    return expected


def _same(value, wanted) -> bool:
    """Equal, floats to 1e-9 relative (a value through JSON or another formula); bools only to bools."""
    if isinstance(value, bool) or isinstance(wanted, bool):
        return value is wanted
    if isinstance(value, (int, float)) and isinstance(wanted, (int, float)):
        return math.isclose(value, wanted, rel_tol=1e-9)
    return value == wanted


def logged_hyperparameters(run: dict) -> dict:
    """A run's hyper-parameters as today's records write them: the fields added since its
    log was written at their value before (``RECORDED_SINCE``, ``RECIPE_FIELDS_SINCE``), the
    recipe fields that do not apply to it left out (``recipes.recipe_fields_that_apply``), and
    optimiser parts in torch's units for the run's step with the fields their kind reads
    only (records before commit cbf7d55 wrote every field; ``_parts_as_logged``)."""
    from cifar_lightning.core.recipes import recipe_fields_that_apply

    hp = recipe_fields_that_apply({**RECORDED_SINCE, **RECIPE_FIELDS_SINCE, **run["hyperparameters"]})
    if hp.get("optimizers"):
        hp["optimizers"] = _parts_as_logged(hp["optimizers"], _examples_per_step(run, hp))
    return hp


def recipe_differences(run: dict) -> list[str]:
    """Why a run is not its model's recipe trained on the full training set, one phrase each
    ("lr 46.0 (recipe 11.5)", "val_size 5000", "status interrupted"); [] for a finished
    training run whose every recorded hyper-parameter but the seed is the recipe's, with
    --val-size 0 and no --train-subset or --limit-*-batches. ValueError for an unknown model."""
    hp = logged_hyperparameters(run)
    out = [] if run["epochs"] else ["an evaluation"]
    if run_status(run) != "finished":
        out.append(f"status {run_status(run)}")
    expected = recipe_as_logged(run_recipe(run), hp, _examples_per_step(run, hp))
    for key, wanted in expected.items():
        value = hp.get(key, MISSING)
        if key != "seed" and not _same(value, wanted):
            out.append(f"{key} {'not recorded' if value is MISSING else value} (recipe {wanted})")
    if hp.get("val_size", MISSING) != 0:
        out.append(f"val_size {hp.get('val_size', 'not recorded')}")
    out += [f"{key} {hp[key]}" for key in ("train_subset", *RECORDED_SINCE) if hp.get(key)]
    others = set(hp) - set(expected) - EXECUTION_KEYS - {"recipe", "val_size", "train_subset", *RECORDED_SINCE}
    return out + [f"{key} {hp[key]}" for key in sorted(others)]  # e.g. --dropout: another architecture


def recipe_runs(runs: list[dict], recipe: str, dataset: str) -> list[dict]:
    """The runs of the recipe `recipe` itself on the whole training set of `dataset`
    (``recipe_differences`` empty), in the order given."""
    return [r for r in runs if run_recipe(r) == recipe and r["dataset"] == dataset and not recipe_differences(r)]


def _configuration(run: dict) -> tuple:
    """What makes training runs repeats of each other: framework, model, data, length,
    hardware (``hardware_short``) and every hyper-parameter but the seed (``_hp_key``)."""
    return (run["framework"], run["model"], run["dataset"], length_text(run), hardware_short(run), _hp_key(run))


def training_runs(runs: list[dict]) -> list[dict]:
    """Runs that trained (``epochs`` > 0); evaluations (``--test-only``) are never
    averaged with each other or with training runs."""
    return [r for r in runs if r["epochs"]]


def one_per_seed(runs: list[dict]) -> list[dict]:
    """The first run (by folder) of each seed: repeated runs differ in their seed; a
    same-seed rerun is a reproducibility check (``same_seed_reruns``), not another sample."""
    chosen: dict = {}
    for r in sorted(runs, key=lambda r: r["_path"]):
        chosen.setdefault(r["seed"], r)
    return list(chosen.values())


def configurations(runs: list[dict]) -> dict[tuple, list[dict]]:
    """Training runs grouped by ``_configuration``, all runs of each group kept."""
    groups: dict[tuple, list[dict]] = {}
    for r in training_runs(runs):
        groups.setdefault(_configuration(r), []).append(r)
    return groups


def same_seed_reruns(runs: list[dict]) -> list[list[dict]]:
    """Groups of two or more training runs of one configuration with one seed."""
    out = []
    for group in configurations(runs).values():
        by_seed: dict = {}
        for r in group:
            by_seed.setdefault(r["seed"], []).append(r)
        out += [sorted(g, key=lambda r: r["_path"]) for g in by_seed.values() if len(g) > 1]
    return out


FRAMEWORK_ONLY_KEYS = ("seed", "precision", "channels_last", "device")


def _hp_key(run: dict) -> str:
    """Every hyper-parameter but the framework-specific ones and the seed, as sorted JSON."""
    hp = {k: v for k, v in logged_hyperparameters(run).items() if k not in FRAMEWORK_ONLY_KEYS}
    return json.dumps(hp, sort_keys=True)


def comparison_key(run: dict) -> tuple:
    """(model, dataset, length, ``machine_and_device``, hyper-parameters as JSON): runs with
    equal keys are the same experiment up to framework and seed, on one machine and one
    class of device (torch's mps and MLX's metal alike)."""
    return (run["model"], run["dataset"], length_text(run), machine_and_device(run), _hp_key(run))


def pytorch_vs_mlx_groups(runs: list[dict]) -> dict[tuple, dict[str, list[dict]]]:
    """Training runs (not evaluations) grouped by ``comparison_key`` and framework, one per
    seed, kept where both frameworks ran."""
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for r in training_runs(runs):
        groups.setdefault(comparison_key(r), {}).setdefault(r["framework"], []).append(r)
    both = {k: g for k, g in groups.items() if {"pytorch", "mlx"} <= set(g)}
    return {k: {fw: one_per_seed(rs) for fw, rs in g.items()} for k, g in both.items()}
