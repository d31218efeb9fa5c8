"""One run, training or evaluation, for either framework: the steps written once.

    from cifar_lightning.core.run import RunConfig, run
    from cifar_lightning.backend import TorchBackend         # or cifar_mlx_adapter.backend.MLXBackend
    result = run(RunConfig(model="small_cnn", epochs=1, data_dir="data"), TorchBackend(accelerator="cpu"))
    result.record["test_accuracy"], result.folder

``run`` checks the settings, the data and a resumed checkpoint before any folder is made;
holds the machine's training lock (rank 0) while it trains and tests; starts from
``--weights``, or the recipe's fresh initialisation (the fast net's whitening from
training images); saves the initial weights (so the other framework can start from
them), trains, saves the final checkpoint, tests, and writes run.json. A run that
diverges is recorded as failed and keeps its last good checkpoint (NonFiniteLossError);
Ctrl-C prints the command that resumes it and exits with status 130 (SystemExit), or,
before the first checkpoint, removes what the run wrote. Several processes (torch's DDP,
MLX's mx.distributed) run the same steps; rank 0 alone writes the folder and the record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from cifar_lightning.core.errors import ExitCode, NonFiniteLossError, UsageError
from cifar_lightning.core.recipes import RECIPES, Recipe, get_recipe, recipe_name, total_steps
from cifar_lightning.core.run import folder as run_folder
from cifar_lightning.core.run.backend import Backend, RunFacts
from cifar_lightning.core.run.config import RunConfig, validate
from cifar_lightning.core.run.lock import lock_path, training_lock
from cifar_lightning.core.run.memory import MemoryPeak
from cifar_lightning.core.run.record import announce_run, finish, record_failure, run_command, where_text
from cifar_lightning.core.run.throughput import StepClock
from cifar_lightning.core.whitening import starting_bias


@dataclass(frozen=True)
class RunResult:
    """A finished run: its settings, recipe, what it ran with (``RunFacts``), where it wrote,
    seconds per span ("train", "validation", "test"), the test figures (``Backend.test``),
    the checkpoint evaluated, and the record written to run.json (``record.finish``)."""

    config: RunConfig
    recipe: Recipe
    facts: RunFacts
    folder: Path
    class_names: list
    times: dict
    test: dict
    checkpoint: str | None
    throughput: dict | None = None
    memory: dict | None = None
    record: dict | None = None


def make_recipe(config: RunConfig) -> Recipe:
    """The recipe of the model and optimiser with the run's overrides; UsageError for a
    setting the recipe cannot take (naming the flag)."""
    try:
        recipe = get_recipe(config.model, config.optimizer).with_overrides(**config.recipe_overrides())
    except ValueError as e:  # no such recipe, or a flag a recipe of several optimisers cannot take
        raise UsageError(str(e)) from None
    if config.muon_dtype:
        parts = recipe.optimizers
        if not any(p.kind == "muon" for p in parts):
            raise UsageError(
                f"--muon-dtype applies to a recipe with Muon (--model fast --optimizer muon), "
                f"not {recipe_name(config.model, config.optimizer)}"
            )
        recipe = replace(
            recipe, optimizers=tuple(replace(p, ns_dtype=config.muon_dtype) if p.kind == "muon" else p for p in parts)
        )
    if config.momentum is not None and recipe.schedule == "onecycle" and recipe.cycle_momentum:
        raise UsageError(
            f"--momentum has no effect on {config.model}: its OneCycle schedule cycles momentum "
            f"{recipe.max_momentum} -> {recipe.base_momentum} -> {recipe.max_momentum}"
        )
    return recipe


def check_weights_architecture(config: RunConfig, recipe: Recipe, card) -> None:
    """Refuse --weights whose checkpoint (its model card `card`; None for bare weights,
    which record nothing) records a head scale other than this run's recipe (a fast_muon
    checkpoint under the fast recipe's 1/9, or the reverse): its logits, loss and any
    further training would be off by the ratio. UsageError naming the file and the flag."""
    if card is None:
        return
    theirs, ours = card.model_kwargs.get("logit_scale"), recipe.model_kwargs.get("logit_scale")
    if card.model != config.model or theirs == ours:
        return
    fits = [
        name
        for name, r in RECIPES.items()
        if name.startswith(config.model) and r.model_kwargs.get("logit_scale") == theirs
    ]
    hint = f" (the {fits[0]} recipe: --optimizer {fits[0][len(config.model) + 1 :] or 'sgd'})" if fits else ""
    raise UsageError(
        f"--weights {config.weights}: trained with logits scaled by {theirs or 'the model default'}, "
        f"this run scales them by {ours or 'the model default'}; expected the checkpoint's own "
        f"recipe{hint}"
    )


def check_data(config: RunConfig, recipe: Recipe, data, world_size: int) -> None:
    """The settings that need the data's size (--val-size, --train-subset, --batch-size per
    process, --epochs), checked before the run folder is made. Reads the data (downloading
    it first where allowed) and sets up the splits."""
    n_train = data.training_set_size()
    if config.val_size >= n_train:
        raise UsageError(f"--val-size {config.val_size} leaves no training images: {config.dataset} has {n_train}")
    left = n_train - config.val_size
    if config.train_subset and config.train_subset > left:
        raise UsageError(
            f"--train-subset {config.train_subset} exceeds the {left} training images left "
            f"after --val-size {config.val_size}"
        )
    per_rank = (config.train_subset or left) // world_size
    if not config.test_only and recipe.batch_size > per_rank:
        ranks = f" per process ({world_size} processes)" if world_size > 1 else ""
        raise UsageError(f"--batch-size {recipe.batch_size} exceeds the {per_rank} training images{ranks}")
    data.setup()
    if not config.test_only:
        try:
            planned_steps(config, recipe, data, world_size)
        except OverflowError:
            raise UsageError(
                f"--epochs {config.epochs}: more optimizer steps than can be counted; expected a "
                "number of epochs a run can train"
            ) from None


def planned_steps(config: RunConfig, recipe: Recipe, data, world_size: int = 1) -> int:
    """Optimizer steps the run will make as one process counts them (for the log interval):
    the recipe's epochs of the training plan (one rank's of `world_size`), cut by
    --limit-train-batches. `data` is a CIFARData or a CIFARDataModule (its ``.data``)."""
    return total_steps(recipe.epochs, steps_per_epoch(config, data, world_size))


def steps_per_epoch(config: RunConfig, data, world_size: int = 1) -> int:
    """Optimizer steps of one epoch as one process counts them: its training plan's batches,
    cut by --limit-train-batches."""
    per_epoch = len(getattr(data, "data", data).plan("train", 0, world_size))
    return min(per_epoch, config.limit_train_batches or per_epoch)


def resumed_at(config: RunConfig, backend: Backend, data) -> tuple[int, int] | None:
    """(epoch, step) where a --resume run picks up, as the first line says it: the 0-based
    epoch (as the progress bar counts) of the next step, and the steps already taken; None
    for a new run."""
    if not config.resume:
        return None
    step = backend.resumed_step
    return step // steps_per_epoch(config, data, backend.world_size), step


def _weights_flag(load):
    """Run `load` (which reads --weights) and return what it returns; its UsageError names the flag."""
    try:
        return load()
    except UsageError as e:
        raise UsageError(f"--weights {e}") from None


def run(config: RunConfig, backend: Backend, callbacks: tuple = ()) -> RunResult | None:
    """Train (or, with ``test_only``, evaluate) as `config` says, on `backend`'s framework;
    `callbacks` are the framework's own (Lightning callbacks, MLX ``Callback``) added to the
    trainer. Returns the finished run on rank 0, None on the other ranks. Raises UsageError
    for bad settings (before anything is made), NonFiniteLossError for a run that diverged
    (recorded as failed), TrainingLockBusy with ``wait=False``, SystemExit(130) for Ctrl-C."""
    validate(config)
    backend.validate()
    with backend.start():
        main = backend.rank == 0
        saved = backend.read_resume(config.resume) if config.resume else None
        recipe = make_recipe(config)
        if config.weights:
            check_weights_architecture(config, recipe, _weights_flag(lambda: backend.read_card(config.weights)))
        data = backend.make_data(config, recipe)
        check_data(config, recipe, data, backend.world_size)
        folder = run_folder.choose_run_folder(backend.framework, config) if main else None
        settings = run_folder.run_settings(config, recipe.to_dict(), backend.world_size, backend.precision)
        if saved is not None:
            run_folder.check_resume_settings(saved, settings, config.resume)
        with training_lock(lock_path(config.lock_file) if main else None, folder, wait=config.wait):
            return _train_and_test(config, backend, recipe, data, folder, settings, callbacks)


def run_flags(config: RunConfig, backend: Backend) -> list[str]:
    """The flags of the command that started this run: its argv, or for a Python call the
    config's and the backend's own (so the record names a command that repeats it)."""
    return list(config.argv) if config.argv is not None else [*config.flags(), *backend.flags()]


def _train_and_test(config, backend, recipe, data, folder, settings, callbacks) -> RunResult | None:
    backend.seed(recipe.seed)
    module = backend.make_module(config, recipe, data)
    if config.weights:
        _weights_flag(lambda: backend.load_weights(module, config.weights))
    elif recipe.whiten_bias_epochs and not config.resume:
        backend.init_whitening(module, data, starting_bias(recipe))
    if backend.rank == 0:  # every check has passed: now the folder is made
        folder = run_folder.claim_run_folder(folder, backend.framework, config)
    folder = backend.share_folder(folder)
    paths = run_folder.RunPaths(folder)
    if backend.rank == 0 and not config.test_only and not config.resume:
        # the starting point, so the other framework can start from the same weights (--weights)
        paths.checkpoints.mkdir(parents=True, exist_ok=True)
        backend.save_initial(module, paths.checkpoints / backend.initial_name)
    steps = planned_steps(config, recipe, data, backend.world_size)
    clock = memory = timing = None
    if not config.test_only:  # the steps timed and memory sampled by one protocol (throughput, memory)
        memory = MemoryPeak(backend.memory_counters())
        clock = StepClock(backend.sync, backend.synchronized_by, on_reading=memory.sample)
        timing = backend.step_callback(clock, memory)  # restores the earlier segments' figures on resume
    trainer = backend.make_trainer(config, recipe, data, folder, settings, steps, callbacks, timing)
    main = backend.rank == 0  # torch knows its rank among several processes once its trainer exists
    flags = run_flags(config, backend)
    command = run_command(backend.launcher(), backend.script, flags)
    if main:
        where = where_text(backend.device, backend.world_size, backend.machines)
        precision = getattr(backend, "precision", "32-true")  # the one asked for; run.json: the one used
        where += f" in {precision}" if precision != "32-true" else ""
        announce_run(
            folder,
            config.model,
            backend.count_parameters(module),
            where,
            config.test_only,
            recipe_name(config.model, config.optimizer),
            recipe.epochs,
            steps,
            resumed_at(config, backend, data),
        )
    checkpoint = config.weights
    try:
        if not config.test_only:
            backend.reset_memory_peak()
            backend.fit(trainer, module, data, config.resume)
            memory.sample()
            checkpoint = backend.save_final(trainer, module, paths.checkpoint("final", backend.checkpoint_suffix))
        test_start = time.perf_counter()
        test = backend.test(trainer, module, data)
        test_time = time.perf_counter() - test_start
    except BaseException as e:
        if backend.interrupted(e):
            if not main:
                raise SystemExit(ExitCode.INTERRUPTED) from None
            last = backend.last_checkpoint(trainer)
            resume = run_folder.resume_command(backend.script, flags, last, backend.launcher()) if last else ""
            run_folder.interrupted(folder, config, last, resume)
        if main and (isinstance(e, NonFiniteLossError) or (isinstance(e, Exception) and backend.world_size > 1)):
            backend.settle(trainer)  # a failed run keeps its log whole and says so in its record
            message = str(e) if isinstance(e, NonFiniteLossError) else backend.describe_failure(e)
            record_failure(config, folder, backend.framework, message, backend.last_checkpoint(trainer), command)
        raise
    if not main:
        return None
    backend.settle(trainer)
    facts = backend.facts(config, trainer, module)
    times = {**backend.times(trainer), "test": test_time}
    result = RunResult(
        config,
        recipe,
        facts,
        folder,
        list(data.classes),
        times,
        test,
        str(checkpoint) if checkpoint else None,
        *_figures(clock, memory, bool(config.resume)),
    )
    return replace(result, record=finish(result, backend.framework, command))


LEFT_OUT = "the earlier segments: the checkpoint this run resumed from carries none of their figures"


def _figures(clock, memory, resumed: bool) -> tuple[dict | None, dict | None]:
    """run.json's ``throughput`` and ``memory`` (None for an evaluation): all segments of a
    resumed run together, or, where its checkpoint carried no figures of the earlier ones
    (one written before checkpoints carried them), this segment's with ``left_out`` saying so."""
    if clock is None:
        return None, None
    throughput, peaks = clock.record(), memory.record()
    if resumed and clock.segments == 1:
        throughput["left_out"] = peaks["left_out"] = LEFT_OUT
    return throughput, peaks
