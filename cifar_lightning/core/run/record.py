"""What a run writes about itself, the same in both frameworks: the finished run's run.json
and plots with the printed summary (``finish``), a failed run's record, the command a
record names, and the lines a run prints."""

from __future__ import annotations

import shlex
from pathlib import Path

from cifar_lightning.core.recipes import recipe_name
from cifar_lightning.core.run.folder import CHECKPOINTS, CONFUSION_PNG, CURVES_PNG, METRICS_CSV, RUN_JSON, RunPaths


def launcher(framework: str, processes: dict | None = None) -> str:
    """What starts a run of this layout (``provenance`` "processes"): ``python``, or for MLX
    on several processes ``mlx.launch -n N`` (one machine) or ``mlx.launch --hostfile
    HOSTFILE`` (several); torch's processes are flags of fit.py (--devices, --num-nodes)."""
    if framework == "mlx" and processes and processes.get("world_size", 1) > 1:
        return (
            f"mlx.launch -n {processes['devices']}"
            if processes.get("num_nodes", 1) == 1
            else "mlx.launch --hostfile HOSTFILE"
        )
    return "python"


def run_command(launcher: str, script: str, flags: list[str]) -> str:
    """The command a run.json records, as run from the repository's root."""
    return f"{launcher} scripts/{script} " + shlex.join(flags)


def record_failure(config, out: Path, framework: str, message: str, checkpoint, command: str) -> None:
    """run.json of a run that did not finish: marked failed, never read as a result."""
    from cifar_lightning.core.run.files import write_json_atomic

    write_json_atomic(
        RunPaths(out).run_json,
        {
            "status": "failed",
            "error": message,
            "framework": framework,
            "dataset": config.dataset,
            "model": config.model,
            "last_good_checkpoint": str(checkpoint) if checkpoint else None,
            "command": command,
        },
    )


def announce_run(
    out: Path,
    model: str,
    parameters: int,
    device: str,
    test_only: bool,
    recipe: str = "",
    epochs: float | None = None,
    steps: int | None = None,
    resumed_at: tuple[int, int] | None = None,
) -> None:
    """The line both scripts print before they train or evaluate: how long a training is
    (`epochs`, `steps`: optimizer steps of one process), and for a resumed run where it
    picks up (`resumed_at`: 0-based epoch, as the progress bar counts, and steps taken); a
    recipe other than the model's own (e.g. fast_muon) is named."""
    what = "evaluating" if test_only else "training"
    named = f" with the {recipe} recipe" if recipe and recipe != model else ""
    length = ""
    if not test_only and epochs is not None and steps is not None:
        length = f" for {epochs:g} epoch{'' if epochs == 1 else 's'} ({steps:,} step{'' if steps == 1 else 's'})"
    resumed = f", resuming at epoch {resumed_at[0]}, step {resumed_at[1]:,}" if resumed_at else ""
    print(f"{what} {model}{named} ({parameters:,} parameters){length} on {device}, into {out}{resumed}", flush=True)


def where_text(device: str, world_size: int = 1, machines: int = 1) -> str:
    """Where a run trains, as both scripts' first line says it: "cpu", or "2 processes (1
    machine, cpu)"."""
    if world_size == 1:
        return device
    return f"{world_size} processes ({machines} machine{'s' if machines > 1 else ''}, {device})"


def print_outputs(out: Path) -> None:
    """Where a run's record, plots and checkpoints were written."""
    names = [n for n in (RUN_JSON, METRICS_CSV, CURVES_PNG, CONFUSION_PNG, CHECKPOINTS) if (out / n).exists()]
    print(f"run folder {out}: " + ", ".join(names))


def finish(result, framework: str, command: str) -> dict:
    """Write run.json and the plots of a finished run (``lifecycle.RunResult``, either
    framework); print the summary; return the record.

    `result.times` holds seconds, all segments of a resumed run together, over the same
    spans in both frameworks: "train" (optimizer steps and the per-epoch checkpoints,
    validation excluded), "validation" (the validation passes during fit) and "test" (the
    final test pass). An evaluation (--test-only) trained nothing: 0 steps and 0 s of
    training. `result.facts` says what was in effect (``provenance``): the precision
    actually used, matmul/TF32/cuDNN switches, memory format; devices, strategy, world
    size and the effective batch size."""
    from cifar_lightning.core.run import files, hardware, plots, provenance

    config, recipe, facts, test, times = result.config, result.recipe, result.facts, result.test, result.times
    paths = RunPaths(result.folder)
    classes = result.class_names
    record = {
        "framework": framework,
        "versions": facts.versions,
        "hardware": hardware.hardware_info(facts.accelerator, facts.gpu),
        "code": provenance.code_version(),
        "numerics": facts.numerics,
        "processes": facts.processes,
        "dataset": config.dataset,
        "model": config.model,
        "parameters": facts.parameters,
        "hyperparameters": {
            **recipe.to_dict(),
            "recipe": recipe_name(config.model, config.optimizer),
            "val_size": config.val_size,
            "train_subset": config.train_subset,
            "limit_train_batches": config.limit_train_batches,
            "limit_val_batches": config.limit_val_batches,
            "limit_test_batches": config.limit_test_batches,
            "total_steps": 0 if config.test_only else facts.steps,
            **facts.execution,
        },
        "status": "finished",
        "seed": recipe.seed,
        "epochs": 0 if config.test_only else recipe.epochs,
        "train_time_s": round(times["train"], 2),
        "validation_time_s": round(times["validation"], 2),
        "test_time_s": round(times["test"], 2),
        "throughput": result.throughput,
        "memory": result.memory,
        "test_accuracy": round(test["test/acc"], 6),
        "test_loss": round(test["test/loss"], 6),
        "test_accuracy_no_tta": round(test["test/acc_no_tta"], 6) if "test/acc_no_tta" in test else None,
        "per_class_accuracy": files.per_class_dict(test["per_class_accuracy"], classes),
        "final_train_loss": files.final_train_loss(paths.metrics_csv) if paths.metrics_csv.exists() else None,
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
        "command": command,
    }
    files.write_json_atomic(paths.run_json, record)
    limits = files.limits_text(record["hyperparameters"])
    title = f"{framework} {config.model} on {config.dataset}: {100 * record['test_accuracy']:.2f}%"
    title += f" ({limits})" if limits else ""
    plots.plot_confusion(test["confusion_matrix"], classes, paths.confusion, title)
    if paths.metrics_csv.exists() and not config.test_only:  # an evaluation has no curves
        plots.plot_curves(paths.metrics_csv, paths.curves, title, config.val_size)
    print_summary(record)
    print_outputs(result.folder)
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
        print(
            f", trained in {record['train_time_s']:.0f} s (validation {record['validation_time_s']:.0f} s, "
            f"test {record['test_time_s']:.0f} s)"
        )
    else:
        print(f", evaluation only (test {record['test_time_s']:.0f} s)")
    for name, acc in record["per_class_accuracy"].items():
        print(f"  {name:>12s} {100 * acc:6.2f}%")
