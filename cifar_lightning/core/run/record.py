"""What both scripts share around a run (standard library only): the recipe and data
checks before anything is made, run.json and plots after, the failure record.

Each framework's runner (``cifar_lightning.runner``, ``cifar_mlx_adapter.runner``)
builds its data and model and calls these, so both write the same record.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import replace
from pathlib import Path

from cifar_lightning.cli.flags import recipe_overrides
from cifar_lightning.core.errors import UsageError
from cifar_lightning.core.recipes import get_recipe, recipe_name, total_steps
from cifar_lightning.core.run.folder import choose_run_folder


def prepare(args: argparse.Namespace, framework: str, make_data, world_size: int = 1, choose_folder: bool = True):
    """The recipe (with the flags' overrides), the data made by ``make_data(args, recipe)``
    (a CIFARDataModule or a CIFARData: anything with ``training_set_size`` and ``setup``)
    and the run folder (None with `choose_folder` False: an MLX rank other than 0, which
    learns rank 0's).

    Checks the flags that need the data's size (--val-size, --train-subset, --batch-size
    per process) before the run folder is made, so bad input leaves nothing behind."""
    try:
        recipe = get_recipe(args.model, args.optimizer).with_overrides(**recipe_overrides(args))
    except ValueError as e:  # no such recipe, or a flag a recipe of several optimisers cannot take
        raise UsageError(str(e)) from None
    if args.muon_dtype:
        parts = recipe.optimizers
        if not any(p.kind == "muon" for p in parts):
            raise UsageError(f"--muon-dtype applies to a recipe with Muon (--model fast --optimizer muon), "
                             f"not {recipe_name(args.model, args.optimizer)}")  # fmt: skip
        recipe = replace(recipe, optimizers=tuple(replace(p, ns_dtype=args.muon_dtype) if p.kind == "muon" else p
                                                  for p in parts))  # fmt: skip
    if args.momentum is not None and recipe.schedule == "onecycle" and recipe.cycle_momentum:
        raise UsageError(f"--momentum has no effect on {args.model}: its OneCycle schedule cycles momentum "
                         f"{recipe.max_momentum} -> {recipe.base_momentum} -> {recipe.max_momentum}")  # fmt: skip
    check_weights_architecture(args, recipe)
    dm = make_data(args, recipe)
    n_train = dm.training_set_size()  # reads the data (downloading it first if allowed)
    if args.val_size >= n_train:
        raise UsageError(f"--val-size {args.val_size} leaves no training images: {args.dataset} has {n_train}")
    left = n_train - args.val_size
    if args.train_subset and args.train_subset > left:
        raise UsageError(f"--train-subset {args.train_subset} exceeds the {left} training images left "
                         f"after --val-size {args.val_size}")  # fmt: skip
    per_rank = (args.train_subset or left) // world_size
    if not args.test_only and recipe.batch_size > per_rank:
        ranks = f" per process ({world_size} processes)" if world_size > 1 else ""
        raise UsageError(f"--batch-size {recipe.batch_size} exceeds the {per_rank} training images{ranks}")
    dm.setup()
    if not args.test_only:
        try:
            planned_steps(args, recipe, dm, world_size)
        except OverflowError:
            raise UsageError(f"--epochs {args.epochs}: more optimizer steps than can be counted; expected a "
                             "number of epochs a run can train") from None  # fmt: skip
    out = choose_run_folder(framework, args) if choose_folder else None
    return recipe, dm, out


def check_weights_architecture(args: argparse.Namespace, recipe) -> None:
    """Refuse --weights whose checkpoint records a head scale other than this run's recipe
    (a fast_muon checkpoint under the fast recipe's 1/9, or the reverse): its logits, loss
    and any further training would be off by the ratio. Bare weights record nothing and
    pass. Raises UsageError naming the file and the flag to add."""
    if not args.weights:
        return
    from cifar_lightning.core.model_card import read_model_card
    from cifar_lightning.core.recipes import RECIPES

    try:
        card = read_model_card(args.weights)
    except UsageError:  # bare weights (initial.pt, .safetensors): no architecture recorded
        return
    theirs, ours = card.model_kwargs.get("logit_scale"), recipe.model_kwargs.get("logit_scale")
    if card.model != args.model or theirs == ours:
        return
    fits = [name for name, r in RECIPES.items()
            if name.startswith(args.model) and r.model_kwargs.get("logit_scale") == theirs]  # fmt: skip
    hint = f" (the {fits[0]} recipe: --optimizer {fits[0][len(args.model) + 1:] or 'sgd'})" if fits else ""
    raise UsageError(f"--weights {args.weights}: trained with logits scaled by {theirs or 'the model default'}, "
                     f"this run scales them by {ours or 'the model default'}; expected the checkpoint's own "
                     f"recipe{hint}")  # fmt: skip


def planned_steps(args: argparse.Namespace, recipe, data, world_size: int = 1) -> int:
    """Optimizer steps the run will make as one process counts them (for the log interval):
    the recipe's epochs of the training plan (one rank's of `world_size`), cut by
    --limit-train-batches. `data` is a CIFARData or a CIFARDataModule (its ``.data``)."""
    per_epoch = len(getattr(data, "data", data).plan("train", 0, world_size))
    return total_steps(recipe.epochs, min(per_epoch, args.limit_train_batches or per_epoch))


def load_weights_flag(load) -> None:
    """Run `load` (which reads --weights); its UsageError names the flag."""
    try:
        load()
    except UsageError as e:
        raise UsageError(f"--weights {e}") from None


def launcher(framework: str, processes: dict | None = None) -> str:
    """What starts a run of this layout (``provenance`` "processes"): ``python``, or for MLX
    on several processes ``mlx.launch -n N`` (one machine) or ``mlx.launch --hostfile
    HOSTFILE`` (several); torch's processes are flags of fit.py (--devices, --num-nodes)."""
    if framework == "mlx" and processes and processes.get("world_size", 1) > 1:
        return (f"mlx.launch -n {processes['devices']}" if processes.get("num_nodes", 1) == 1
                else "mlx.launch --hostfile HOSTFILE")  # fmt: skip
    return "python"


def run_command(framework: str, args, processes: dict | None = None) -> str:
    """The command a run.json records, as run from the repository's root."""
    script = f"scripts/{'fit_mlx' if framework == 'mlx' else 'fit'}.py"
    return f"{launcher(framework, processes)} {script} " + shlex.join(args.argv)


def record_failure(args, out: Path, framework: str, message: str, checkpoint, processes: dict | None = None) -> None:
    """run.json of a run that did not finish: marked failed, never read as a result."""
    from cifar_lightning.core.run.files import write_json_atomic

    write_json_atomic(out / "run.json", {
        "status": "failed", "error": message, "framework": framework, "dataset": args.dataset, "model": args.model,
        "last_good_checkpoint": str(checkpoint) if checkpoint else None,
        "command": run_command(framework, args, processes),
    })  # fmt: skip


def announce_run(out: Path, model: str, parameters: int, device: str, test_only: bool, recipe: str = "") -> None:
    """The line both scripts print before they train or evaluate; a recipe other than the
    model's own (e.g. fast_muon) is named."""
    what = "evaluating" if test_only else "training"
    named = f" with the {recipe} recipe" if recipe and recipe != model else ""
    print(f"{what} {model}{named} ({parameters:,} parameters) on {device}, into {out}", flush=True)


def where_text(device: str, world_size: int = 1, machines: int = 1) -> str:
    """Where a run trains, as both scripts' first line says it: "cpu", or "2 processes (1
    machine, cpu)"."""
    if world_size == 1:
        return device
    return f"{world_size} processes ({machines} machine{'s' if machines > 1 else ''}, {device})"


def print_outputs(out: Path) -> None:
    """Where a run's record, plots and checkpoints were written."""
    names = [n for n in ("run.json", "metrics.csv", "curves.png", "confusion.png", "checkpoints") if (out / n).exists()]
    print(f"run folder {out}: " + ", ".join(names))


def finish(args, out: Path, dm, recipe, *, framework: str, versions: dict, accelerator: str, parameters: int,
           steps: int, times: dict, test: dict, checkpoint, numerics: dict, processes: dict,
           gpu: str | None = None) -> dict:  # fmt: skip
    """Write run.json and the plots of one run (either framework); print the summary.

    `times` holds seconds, all segments of a resumed run together, over the same spans in
    both frameworks: "train" (optimizer steps and the per-epoch checkpoints, validation
    excluded), "validation" (the validation passes during fit) and "test" (the final test
    pass). An evaluation (--test-only) trained nothing: 0 steps and 0 s of training.

    `numerics` and `processes` say what was in effect (``provenance``): the precision
    actually used, matmul/TF32/cuDNN switches, memory format; devices, strategy, world
    size and the effective batch size."""
    from cifar_lightning.core.run import files, plots, provenance
    from cifar_lightning.core.run.provenance import code_version

    classes = dm.classes
    metrics_csv = out / "metrics.csv"
    record = {
        "framework": framework,
        "versions": versions,
        "hardware": provenance.hardware_info(accelerator, gpu),
        "code": code_version(),
        "numerics": numerics,
        "processes": processes,
        "dataset": args.dataset,
        "model": args.model,
        "parameters": parameters,
        "hyperparameters": {**recipe.to_dict(), "recipe": recipe_name(args.model, args.optimizer),
                            "val_size": args.val_size, "train_subset": args.train_subset,
                            "limit_train_batches": args.limit_train_batches,
                            "limit_val_batches": args.limit_val_batches,
                            "limit_test_batches": args.limit_test_batches,
                            "total_steps": 0 if args.test_only else steps, **getattr(args, "extra_hparams", {})},  # fmt: skip
        "status": "finished",
        "seed": recipe.seed,
        "epochs": 0 if args.test_only else recipe.epochs,
        "train_time_s": round(times["train"], 2),
        "validation_time_s": round(times["validation"], 2),
        "test_time_s": round(times["test"], 2),
        "test_accuracy": round(test["test/acc"], 6),
        "test_loss": round(test["test/loss"], 6),
        "test_accuracy_no_tta": round(test["test/acc_no_tta"], 6) if "test/acc_no_tta" in test else None,
        "per_class_accuracy": files.per_class_dict(test["per_class_accuracy"], classes),
        "final_train_loss": files.final_train_loss(metrics_csv) if metrics_csv.exists() else None,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "command": run_command(framework, args, processes),
    }
    files.write_json_atomic(out / "run.json", record)
    limits = files.limits_text(record["hyperparameters"])
    title = f"{framework} {args.model} on {args.dataset}: {100 * record['test_accuracy']:.2f}%"
    title += f" ({limits})" if limits else ""
    plots.plot_confusion(test["confusion_matrix"], classes, out / "confusion.png", title)
    if metrics_csv.exists() and not args.test_only:  # an evaluation has no curves
        plots.plot_curves(metrics_csv, out / "curves.png", title, args.val_size)
    print_summary(record)
    print_outputs(out)
    return record


def print_summary(record: dict) -> None:
    from cifar_lightning.core.run.files import limits_text

    print(f"\ntest accuracy {100 * record['test_accuracy']:.2f}%", end="")
    limits = limits_text(record["hyperparameters"])
    if limits:
        print(f" (a smaller run: {limits})", end="")
    if record.get("test_accuracy_no_tta") is not None:
        print(f" (without TTA {100 * record['test_accuracy_no_tta']:.2f}%)", end="")
    if record["epochs"]:
        print(f", trained in {record['train_time_s']:.0f} s (validation {record['validation_time_s']:.0f} s, "
              f"test {record['test_time_s']:.0f} s)")  # fmt: skip
    else:
        print(f", evaluation only (test {record['test_time_s']:.0f} s)")
    for name, acc in record["per_class_accuracy"].items():
        print(f"  {name:>12s} {100 * acc:6.2f}%")
