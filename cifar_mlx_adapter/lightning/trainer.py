"""MLXTrainer: ``L.Trainer``'s arguments, loops and hook order over an ``MLXModule``.

The loops follow Lightning 2.6's (lightning/pytorch/loops/fit_loop.py,
training_epoch_loop.py, evaluation_loop.py): when validation runs (``val_check_interval``,
``check_val_every_n_epoch``), when the optimiser steps under accumulation, when
``global_step`` moves, when a row reaches the loggers and with which ``step``, when
training stops (``max_epochs``, ``max_steps``, ``should_stop`` after ``min_epochs``), and
the order of callback and module hooks. Tests run the same module under ``L.Trainer`` and
compare (tests/test_mlx_lightning_port.py).

The host waits for the device only where a number is needed: a logged row, the progress
bar at a logged step, a callback that reads ``callback_metrics``. Each training step
evaluates the state it writes (model, optimiser, random key, accumulated gradients) and the
values an epoch reduction keeps; its loss and the values it logs per step only are MLX's
lazy arrays, computed when something reads them (as a plain MLX loop's loss that nothing
reads is never computed). Such an array holds what it is computed from (a step's logits,
say) until it is read or let go: the trainer keeps the latest step's (and its views the last
logged step's), but a hook that stores ``outputs["loss"]`` step after step without reading
it keeps those too.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from cifar_mlx_adapter.lightning.checkpoint import load_checkpoint, save_checkpoint
from cifar_mlx_adapter.lightning.data import Batches, DataSource, length_of, limit_batches, to_mlx
from cifar_mlx_adapter.lightning.loggers import log_dir_of, resolve_loggers
from cifar_mlx_adapter.lightning.module import MisconfigurationException, logging_to
from cifar_mlx_adapter.lightning.precision import DynamicLossScaler, evaluation_precision, parse_precision
from cifar_mlx_adapter.lightning.results import ResultCollection, as_floats, batch_size_of
from cifar_mlx_adapter.lightning.state import module_modes, restore_modes, set_random_key
from cifar_mlx_adapter.lightning.step import TrainingStep, array_leaves, assign_state


class TrainerState:
    """``trainer.state.fn``: "fit", "validate", "test" or "predict" while a call runs."""

    fn: str | None = None
    stage: str | None = None
    status: str | None = None  # "running", "finished", "interrupted", "failed"


def _is_monitoring(callback) -> bool:
    from cifar_mlx_adapter.lightning.callbacks import EarlyStopping, ModelCheckpoint

    return isinstance(callback, (EarlyStopping, ModelCheckpoint))


def parse_optimizers(returned, steps_per_epoch: int):
    """The one optimiser of ``configure_optimizers``' return, in Lightning's forms: an optimiser;
    a list or tuple of one; ([optimiser], [schedule]); {"optimizer": o, "lr_scheduler": s or
    {"scheduler": s, "interval": "step" | "epoch"}}. A schedule is MLX's: a callable of the
    step (interval "step", MLX's own) or of the epoch (interval "epoch", Lightning's default
    for a bare scheduler), set as the optimiser's learning rate."""
    schedule, interval = None, "epoch"
    if isinstance(returned, dict):
        if "optimizer" not in returned:
            raise MisconfigurationException('configure_optimizers returned a dict without "optimizer"')
        optimizer, schedule = returned["optimizer"], returned.get("lr_scheduler")
        if isinstance(schedule, dict):
            interval, schedule = schedule.get("interval", "epoch"), schedule["scheduler"]
    elif isinstance(returned, (list, tuple)):
        if len(returned) == 2 and isinstance(returned[0], (list, tuple)):
            optimizers, schedules = returned
            if len(schedules) > 1:
                raise MisconfigurationException("MLXTrainer takes one learning-rate schedule")
            schedule = schedules[0] if schedules else None
            if isinstance(schedule, dict):
                interval, schedule = schedule.get("interval", "epoch"), schedule["scheduler"]
        else:
            optimizers = returned
        optimizers = list(optimizers)
        if len(optimizers) != 1:
            raise MisconfigurationException(
                f"MLXTrainer trains one optimizer (Lightning's automatic optimization), got {len(optimizers)}: "
                "combine them with mlx.optimizers.MultiOptimizer"
            )
        optimizer = optimizers[0]
    else:
        optimizer = returned
    if not hasattr(optimizer, "update") or not hasattr(optimizer, "state"):
        raise MisconfigurationException(
            f"configure_optimizers must return an mlx.optimizers.Optimizer, got {type(optimizer).__name__}"
        )
    if isinstance(returned, dict) and isinstance(returned.get("lr_scheduler"), dict):
        extra = set(returned["lr_scheduler"]) - {"scheduler", "interval", "frequency", "name"}
        if extra:
            import warnings

            warnings.warn(
                f"lr_scheduler keys {sorted(extra)} are not used by MLXTrainer (no ReduceLROnPlateau)", stacklevel=3
            )
    if schedule is not None and getattr(optimizer, "_schedulers", {}).get("learning_rate") is schedule:
        schedule = None  # the optimiser already follows it, per step, as MLX's optimisers do
    if schedule is not None:
        if not callable(schedule):
            raise MisconfigurationException(
                f"a learning-rate schedule is MLX's: a callable of the step, got {type(schedule).__name__}"
            )
        if interval not in ("step", "epoch"):
            raise MisconfigurationException(f'lr_scheduler interval must be "step" or "epoch", got {interval!r}')
        if steps_per_epoch is None and interval == "epoch":
            raise MisconfigurationException(
                'an lr_scheduler with interval "epoch" needs training data with a length; use "interval": "step"'
            )
        if interval == "step":
            fn = lambda step, s=schedule: mx.array(s(step), dtype=mx.float32)  # noqa: E731
        else:  # Lightning steps an epoch scheduler at each epoch's end: the epoch's learning rate is s(epoch)
            fn = lambda step, s=schedule: mx.array(s(step // steps_per_epoch), dtype=mx.float32)  # noqa: E731
        optimizer._maybe_schedule("learning_rate", fn)
    return optimizer


def upcoming_learning_rate(optimizer):
    """The learning rate `optimizer`'s next update takes: its schedule at its step count, or
    the fixed rate without one (what torch's ``param_groups[i]["lr"]`` holds between steps).
    MLX writes a scheduled rate into ``learning_rate`` as it updates, so that attribute holds
    the last update's rate until the next one begins."""
    schedule = getattr(optimizer, "_schedulers", {}).get("learning_rate")
    return schedule(optimizer.step) if schedule is not None else optimizer.learning_rate


class MLXTrainer:
    """``L.Trainer`` for an ``MLXModule``; the arguments keep Lightning's names, defaults and
    meanings (lightning/pytorch/trainer/trainer.py). MLX's own: ``compile`` (the training
    step compiled with its state; False runs it eagerly) and ``group`` (an
    ``mx.distributed`` group of processes training data-parallel).

    ``precision``: "32-true" (default), "bf16-mixed" and "16-mixed" (float32 weights and
    optimiser state, the loss computed in half; 16-mixed scales the loss as torch's
    GradScaler), "bf16-true" and "16-true" (weights in half). Lightning's aliases (32,
    "bf16", 16, ...) are accepted.

    Not supported, and why, in the README's table: ``accelerator``/``devices``/``strategy``/
    ``num_nodes`` (MLX picks its device; processes come from ``mlx.launch``), ``profiler``,
    ``detect_anomaly``, ``deterministic``/``benchmark``, ``reload_dataloaders_every_n_epochs``,
    ``use_distributed_sampler``, ``barebones``, ``plugins``, ``sync_batchnorm``,
    ``inference_mode``, ``max_time``, ``model_registry``.
    """

    def __init__(
        self,
        *,
        max_epochs: int | None = None,
        min_epochs: int | None = None,
        max_steps: int = -1,
        min_steps: int | None = None,
        limit_train_batches: int | float | None = None,
        limit_val_batches: int | float | None = None,
        limit_test_batches: int | float | None = None,
        limit_predict_batches: int | float | None = None,
        overfit_batches: int | float = 0.0,
        val_check_interval: int | float | None = None,
        check_val_every_n_epoch: int | None = 1,
        num_sanity_val_steps: int | None = None,
        log_every_n_steps: int | None = None,
        enable_checkpointing: bool | None = None,
        enable_progress_bar: bool | None = None,
        enable_model_summary: bool | None = None,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
        precision="32-true",
        callbacks=None,
        logger=None,
        default_root_dir: str | Path | None = None,
        fast_dev_run: int | bool = False,
        enable_autolog_hparams: bool = True,
        compile: bool = True,
        group=None,
    ):
        self.fast_dev_run = int(fast_dev_run) if fast_dev_run is not True else 1
        if isinstance(fast_dev_run, int) and not isinstance(fast_dev_run, bool) and fast_dev_run < 0:
            raise MisconfigurationException(f"fast_dev_run={fast_dev_run!r} is not a valid configuration")
        if not isinstance(accumulate_grad_batches, int) or accumulate_grad_batches < 1:
            raise MisconfigurationException(
                f"`Trainer(accumulate_grad_batches={accumulate_grad_batches!r})` was not an int greater than 0"
            )
        algorithm = (gradient_clip_algorithm or "norm").lower()
        if algorithm not in ("norm", "value"):
            raise MisconfigurationException(
                f"`gradient_clip_algorithm` {gradient_clip_algorithm!r} is invalid. Allowed algorithms: norm, value"
            )
        if gradient_clip_val is not None and gradient_clip_val < 0:
            raise ValueError(f"gradient_clip_val must be >= 0, got {gradient_clip_val!r}")
        self.precision = parse_precision(precision)
        self.default_root_dir = str(default_root_dir) if default_root_dir is not None else str(Path.cwd())
        if max_epochs is None:
            max_epochs = 1000 if max_steps == -1 else -1  # Lightning's defaults
        self.max_epochs, self.min_epochs, self.max_steps = max_epochs, min_epochs, max_steps
        self.min_steps = min_steps
        self.enable_autolog_hparams = enable_autolog_hparams
        self.limit_train_batches = 1.0 if limit_train_batches is None else limit_train_batches
        self.limit_val_batches = 1.0 if limit_val_batches is None else limit_val_batches
        self.limit_test_batches = 1.0 if limit_test_batches is None else limit_test_batches
        self.limit_predict_batches = 1.0 if limit_predict_batches is None else limit_predict_batches
        self.overfit_batches = overfit_batches
        self.val_check_interval = 1.0 if val_check_interval is None else val_check_interval
        self.check_val_every_n_epoch = check_val_every_n_epoch
        self.num_sanity_val_steps = 2 if num_sanity_val_steps is None else num_sanity_val_steps
        self.log_every_n_steps = 50 if log_every_n_steps is None else log_every_n_steps
        self.accumulate_grad_batches = accumulate_grad_batches
        self.gradient_clip_val, self.gradient_clip_algorithm = gradient_clip_val, algorithm
        self.compile = compile
        self.enable_progress_bar = True if enable_progress_bar is None else enable_progress_bar
        self.enable_model_summary = True if enable_model_summary is None else enable_model_summary
        if self.fast_dev_run:  # Lightning's: n batches of each, one epoch, no logger, no checkpoints, no sanity
            n = self.fast_dev_run
            self.max_steps, self.max_epochs = n, 1
            self.limit_train_batches = self.limit_val_batches = n
            self.limit_test_batches = self.limit_predict_batches = n
            self.num_sanity_val_steps, self.val_check_interval, self.check_val_every_n_epoch = 0, 1.0, 1
            logger = False
        # overfit_batches: the first batches are cut from the training data itself (``_FirstBatches``)
        self.group = group if group is not None and group.size() > 1 else None
        self.world_size = self.group.size() if self.group is not None else 1
        self.global_rank = self.group.rank() if self.group is not None else 0
        self.local_rank = self.global_rank
        self.is_global_zero = self.global_rank == 0
        self.loggers = resolve_loggers(logger, self.default_root_dir) if self.is_global_zero else []
        callbacks = list(callbacks or [])
        self.enable_checkpointing = True if enable_checkpointing is None else enable_checkpointing
        from cifar_mlx_adapter.lightning.callbacks import ModelCheckpoint

        has_checkpoint = any(isinstance(cb, ModelCheckpoint) for cb in callbacks)
        if not self.enable_checkpointing and has_checkpoint:
            raise MisconfigurationException(
                "Trainer was configured with `enable_checkpointing=False` but found `ModelCheckpoint` in callbacks list."
            )
        if self.enable_checkpointing and not has_checkpoint:
            callbacks.append(ModelCheckpoint())
        # as Lightning's _reorder_callbacks: checkpoints last, so they see what the others logged
        self.callbacks = [cb for cb in callbacks if not isinstance(cb, ModelCheckpoint)] + [
            cb for cb in callbacks if isinstance(cb, ModelCheckpoint)
        ]
        self.state = TrainerState()
        self.current_epoch = 0
        self.global_step = 0
        self.should_stop = False
        self.sanity_checking = False
        self.training = False
        self.lightning_module = None
        self.datamodule = None
        self.ckpt_path = None
        self.interrupted = False
        self.is_last_batch = False
        self.enable_validation = False
        self.optimizers: list = []
        self.num_training_batches: float = math.inf
        self.num_val_batches: list = []
        self.num_sanity_val_batches: list = []
        self.val_check_batch: float = math.inf
        self._batches_that_stepped = 0
        self._callback_metrics: dict[str, mx.array] = {}
        self._logged_metrics: dict[str, mx.array] = {}
        self._progress_bar_metrics: dict[str, mx.array] = {}
        self._results: ResultCollection | None = None
        self._wait_for_steps = mx.default_device() == mx.cpu  # see _train_epoch
        self._in_batches = False  # inside a loop's batches (step values) or at its end (epoch values)
        self._batch, self._batch_size = None, None  # the running batch and its size once found
        self._scaler = None
        self._step = None
        self._epoch_bar = None  # the running epoch's progress bar
        self._trainable_names: tuple = ()
        self._resume_batches = 0

    # ------------------------------------------------------------ properties
    @property
    def logger(self):
        return self.loggers[0] if self.loggers else None

    @property
    def log_dir(self) -> str:
        return log_dir_of(self.loggers, self.default_root_dir)

    def _current_view(self, kind: str) -> dict:
        """What the running loop has logged so far, as Lightning's LoggerConnector properties
        give it: step values inside a batch loop, epoch values once its end is reached."""
        if self._results is not None:
            return self._results.metrics(on_step=self._in_batches)[kind]
        return {}

    @property
    def callback_metrics(self) -> dict[str, mx.array]:
        self._callback_metrics.update(self._current_view("callback"))
        return self._callback_metrics

    @property
    def logged_metrics(self) -> dict[str, mx.array]:
        self._logged_metrics.update(self._current_view("log"))
        return self._logged_metrics

    @property
    def progress_bar_metrics(self) -> dict[str, float]:
        self._progress_bar_metrics.update(self._current_view("pbar"))
        return as_floats(self._progress_bar_metrics)

    @property
    def checkpoint_callbacks(self) -> list:
        from cifar_mlx_adapter.lightning.callbacks import ModelCheckpoint

        return [cb for cb in self.callbacks if isinstance(cb, ModelCheckpoint)]

    @property
    def checkpoint_callback(self):
        found = self.checkpoint_callbacks
        return found[0] if found else None

    @property
    def early_stopping_callback(self):
        from cifar_mlx_adapter.lightning.callbacks import EarlyStopping

        found = [cb for cb in self.callbacks if isinstance(cb, EarlyStopping)]
        return found[0] if found else None

    @property
    def should_update_logs(self) -> bool:
        """Lightning's rule: a training row every ``log_every_n_steps`` optimizer steps, or on stopping."""
        if self.log_every_n_steps == 0:
            return False
        return (self._batches_that_stepped + 1) % self.log_every_n_steps == 0 or self.should_stop

    @property
    def estimated_stepping_batches(self) -> float:
        """Optimizer steps the fit will take (``max_steps`` when set), as Lightning's."""
        if self.num_training_batches == math.inf:
            total = math.inf
        else:
            per_epoch = math.ceil(self.num_training_batches / self.accumulate_grad_batches)
            total = per_epoch * self.max_epochs if self.max_epochs != -1 else math.inf
        return min(total, self.max_steps) if self.max_steps != -1 else total

    @property
    def _can_stop_early(self) -> bool:
        epochs = self.current_epoch >= self.min_epochs if self.min_epochs else True
        return epochs and (self.global_step >= self.min_steps if self.min_steps else True)

    # ----------------------------------------------------------------- hooks
    def _callbacks_for(self, hook: str) -> list:
        """The callbacks that override `hook`, in list order (those that leave it as the base
        class's no-op are skipped: a step's host time); found once per fit."""
        callbacks = self._hook_callbacks.get(hook)
        if callbacks is None:
            from cifar_mlx_adapter.lightning.callbacks import Callback

            base = getattr(Callback, hook, None)
            callbacks = [cb for cb in self.callbacks if base is None or getattr(type(cb), hook, None) is not base]
            self._hook_callbacks[hook] = callbacks
        return callbacks

    def _overrides(self, hook: str) -> bool:
        """Whether the module overrides `hook` (MLXModule's own hooks are no-ops); found once per fit."""
        overridden = self._hook_overridden.get(hook)
        if overridden is None:
            from cifar_mlx_adapter.lightning.module import MLXModule

            module = self.lightning_module
            base = getattr(MLXModule, hook, None)
            no_op = hook.startswith("on_") or hook in ("setup", "teardown")  # MLXModule's are no-ops
            overridden = hasattr(module, hook) and (
                not no_op or base is None or getattr(type(module), hook, None) is not base
            )
            self._hook_overridden[hook] = overridden
        return overridden

    def _call(self, hook: str, *args, monitoring: bool | None = None, **kwargs):
        """Callbacks' hook (all, or only those that monitor / do not monitor), in list order."""
        module = self.lightning_module
        for cb in self._callbacks_for(hook):
            if monitoring is not None and _is_monitoring(cb) != monitoring:
                continue
            getattr(cb, hook)(self, module, *args, **kwargs)

    def _module_hook(self, hook: str, *args, **kwargs):
        """The module's hook, with ``self.log`` told which hook logs; a hook the module does not
        override (MLXModule's no-op) is not called."""
        if not self._overrides(hook):
            return None
        module = self.lightning_module
        with logging_to(module, hook, module._log_sink):  # logged values take this hook's defaults
            return getattr(module, hook)(*args, **kwargs)

    def _hyperparameters_to_log(self, model) -> dict | None:
        """Lightning's ``_log_hyperparams`` (lightning/pytorch/loggers/utilities.py): the module's
        hparams where it called ``save_hyperparameters`` (with ``logger=True``), merged with those of
        a datamodule that did; None where neither did (no ``hparams.yaml`` is written).

        Raises:
            RuntimeError: a key both hold with different values (Lightning's message).
        """
        dm = self.datamodule
        module_logs = getattr(model, "_log_hyperparams", False)
        dm_logs = dm is not None and getattr(dm, "_log_hyperparams", False)
        if module_logs and dm_logs:
            ours, theirs = dict(model.hparams), dict(dm.hparams_initial)
            clashing = [
                k for k in ours.keys() & theirs.keys() if type(ours[k]) is not type(theirs[k]) or ours[k] != theirs[k]
            ]
            if clashing:
                raise RuntimeError(
                    f"Error while merging hparams: the keys {clashing} are present in both the LightningModule's "
                    "and LightningDataModule's hparams but have different values."
                )
            return {**ours, **theirs}
        if module_logs:
            return dict(model.hparams)
        return dict(dm.hparams_initial) if dm_logs else None

    def _sink(self, fx, name, value, batch_size=None, **options):
        self._results.log(fx, name, value, batch_size=batch_size or self._current_batch_size, **options)

    def _current_batch_size(self) -> int:
        """The running batch's size, found at the first epoch mean that needs it (as Lightning's
        ``_ResultCollection._extract_batch_size``); 1 outside a batch (an epoch-end hook's log)."""
        if self._batch_size is None:
            self._batch_size = batch_size_of(self._batch)
        return self._batch_size

    def _release_batch(self) -> None:
        """At a loop's end, the batch let go with its size, as Lightning's
        ``LoggerConnector.on_batch_end`` drops both: an epoch-end hook's value logged without a
        batch size weighs 1 in the epoch mean."""
        self._batch = self._batch_size = None

    def _attach(self, module) -> None:
        if "_log_sink" not in vars(module):
            raise MisconfigurationException(
                f"{type(module).__name__} must be an MLXModule whose __init__ calls super().__init__() first"
            )
        self.lightning_module = module
        self._hook_callbacks: dict[str, list] = {}  # hook -> callbacks that override it
        self._hook_overridden: dict[str, bool] = {}  # hook -> whether the module overrides it
        module.trainer = self
        object.__setattr__(module, "_log_sink", self._sink)

    # ------------------------------------------------------------- logging
    def _log_metrics(self, metrics: dict, step: int | None = None) -> None:
        """Lightning's LoggerConnector.log_metrics: floats to every logger, with "epoch" added
        and the step the number of optimizer steps before this row's."""
        if not self.loggers or not metrics:
            return
        self._logged_metrics.update(metrics)
        values = as_floats(metrics)
        if step is None:
            values.setdefault("epoch", self.current_epoch)
            step = self._batches_that_stepped
        for logger in self.loggers:
            logger.log_metrics(values, step)
            logger.save()

    def _store_metrics(self, on_step: bool) -> dict:
        """The running loop's step (or epoch) views, kept in the trainer's three dicts."""
        metrics = self._results.metrics(on_step=on_step)
        self._progress_bar_metrics.update(metrics["pbar"])
        self._callback_metrics.update(metrics["callback"])
        self._logged_metrics.update(metrics["log"])
        return metrics

    # ---------------------------------------------------------------- fit
    def fit(self, model, train_dataloaders=None, val_dataloaders=None, datamodule=None, ckpt_path=None) -> None:
        """Train `model` (an ``MLXModule``) on `train_dataloaders` or `datamodule`'s training split,
        validating on `val_dataloaders` or the datamodule's; `ckpt_path` ("last", "best" or a path)
        resumes, and a larger ``max_epochs``/``max_steps`` than the checkpoint's trains on."""
        train_dataloaders, datamodule = _datamodule_given_as_loaders(train_dataloaders, datamodule)
        if datamodule is not None and (train_dataloaders is not None or val_dataloaders is not None):
            raise MisconfigurationException(
                "You cannot pass `train_dataloader` or `val_dataloaders` to `trainer.fit(datamodule=...)`"
            )
        self._attach(model)
        self._warn_of_slow_blas()
        self.datamodule, self.ckpt_path = datamodule, ckpt_path
        self.state.fn, self.state.status, self.training, self.should_stop = "fit", "running", True, False
        source = DataSource(
            model, {"train": train_dataloaders, "val": val_dataloaders}, datamodule, self.global_rank, self.world_size
        )
        source.group = self.group
        source.prepare("fit")
        self._call("setup", stage="fit")
        self._module_hook("setup", stage="fit")
        try:
            self._fit(model, source, ckpt_path)
        except BaseException as err:
            if self._epoch_bar is not None:  # the error's message starts on a line of its own
                self._epoch_bar.close()
            self.interrupted = isinstance(err, KeyboardInterrupt)
            self.state.status = "interrupted" if self.interrupted else "failed"
            self._call("on_exception", err)
            for logger in self.loggers:
                logger.finalize("failed" if not isinstance(err, KeyboardInterrupt) else "interrupted")
            raise
        finally:
            self.training = False
            self._call("teardown", stage="fit")
            self._module_hook("teardown", stage="fit")
        for logger in self.loggers:
            logger.finalize("success")
        self.state.status = "finished"

    def _warn_of_slow_blas(self) -> None:
        """On a Linux CPU, MLX's own reference BLAS trains about 12x slower than OpenBLAS
        (``cifar_mlx_adapter.blas``): say so, once per fit, as fit_mlx.py does."""
        if mx.default_device() != mx.cpu or not self.is_global_zero:
            return
        from cifar_mlx_adapter.blas import slow_blas_warning

        warning = slow_blas_warning()
        if warning:
            import warnings

            warnings.warn(warning.removeprefix("warning: "), UserWarning, stacklevel=3)

    def _fit(self, model, source: DataSource, ckpt_path) -> None:
        train = source.batches("train")
        if train is None:
            raise MisconfigurationException(
                "No `train_dataloader()` method defined: pass train_dataloaders= or a datamodule to fit"
            )
        if self.overfit_batches:
            train = _FirstBatches(train, limit_batches(length_of(train), self.overfit_batches, "train"))
        val = train if self.overfit_batches else source.batches("val")
        self.num_training_batches = limit_batches(length_of(train), self.limit_train_batches, "train")
        if self.num_training_batches == 0:
            import warnings

            warnings.warn("`MLXTrainer.fit` stopped: No training batches.", stacklevel=3)
        n_val = 0 if val is None else limit_batches(length_of(val), self.limit_val_batches, "val")
        self.num_val_batches = [n_val] if val is not None else []
        has_validation_step = hasattr(model, "validation_step")
        self.enable_validation = bool(val is not None and n_val > 0 and has_validation_step)
        self._set_val_check_batch()
        if self.precision.name.endswith("-true") and self.precision.param_dtype != mx.float32:
            model.set_dtype(self.precision.param_dtype)
        n = self.num_training_batches
        per_epoch = None if n == math.inf else max(1, math.ceil(n / self.accumulate_grad_batches))
        checkpoint = self._resolve_checkpoint(ckpt_path)
        if checkpoint is not None:  # Lightning: the module and callbacks first, then optimizer and loops
            self._restore_module_and_callbacks(model, checkpoint)
        optimizer = parse_optimizers(self._module_hook("configure_optimizers"), per_epoch)
        self.optimizers = [optimizer]
        self._scaler = DynamicLossScaler() if self.precision.scales_loss else None
        self._step = None  # a step is made for this module and optimiser (a trainer may fit twice)
        if checkpoint is not None:
            self._restore_training_state(checkpoint)
        if self.enable_model_summary and self.is_global_zero:
            print(model_summary(model), file=sys.stderr)
        hparams = self._hyperparameters_to_log(model) if self.enable_autolog_hparams else None
        for logger in self.loggers if hparams is not None else ():
            logger.log_hyperparams(hparams)
        self._call("on_fit_start")
        self._module_hook("on_fit_start")
        if checkpoint is None and self.enable_validation and self.num_sanity_val_steps:
            self._sanity_check(val)
        self._call("on_train_start")
        self._module_hook("on_train_start")
        while not self._fit_done():
            self._train_epoch(model, train, val)
        self._call("on_train_end")
        self._module_hook("on_train_end")
        self._call("on_fit_end")
        self._module_hook("on_fit_end")

    def _set_val_check_batch(self) -> None:
        interval = self.val_check_interval
        if isinstance(interval, int) and not isinstance(interval, bool):
            self.val_check_batch = interval
            if (
                interval > self.num_training_batches
                and self.check_val_every_n_epoch is not None
                and self.enable_validation
            ):
                raise ValueError(
                    f" `val_check_interval` ({interval}) must be less than or equal to the number of the training"
                    f" batches ({self.num_training_batches}). If you want to disable validation set"
                    " `limit_val_batches` to 0.0 instead. If you want to validate based on the total training"
                    " batches, set `check_val_every_n_epoch=None`."
                )
        elif self.num_training_batches == math.inf:
            if interval != 1.0:
                raise MisconfigurationException(
                    "For a source without a length, `Trainer(val_check_interval)` must be `1.0` or an int."
                )
            self.val_check_batch = math.inf
        else:
            if not 0.0 < interval <= 1.0:
                raise MisconfigurationException(f"`val_check_interval` should be within [0.0, 1.0], got {interval}")
            self.val_check_batch = max(1, int(self.num_training_batches * interval))

    def _fit_done(self) -> bool:
        """Lightning's FitLoop.done, with its lines (rank_zero_info) on rank 0's stderr: a fit
        whose trainer is done already (a second fit of a finished trainer) says so."""
        if self.num_training_batches == 0:
            return True
        if self.max_steps != -1 and self.global_step >= self.max_steps:
            self._info(f"`Trainer.fit` stopped: `max_steps={self.max_steps!r}` reached.")
            return True
        if self.max_epochs != -1 and self.current_epoch >= self.max_epochs:
            self._info(f"`Trainer.fit` stopped: `max_epochs={self.max_epochs!r}` reached.")
            return True
        return self.should_stop and self._can_stop_early

    def _info(self, line: str) -> None:
        if self.is_global_zero:
            print(line, file=sys.stderr)

    def _should_validate(self, batch_idx: int, total_batch_idx: int, is_last: bool) -> bool:
        every = self.check_val_every_n_epoch
        if not self.enable_validation or (every is not None and (self.current_epoch + 1) % every != 0):
            return False
        if is_last and self.val_check_batch == math.inf:
            return True
        if self.should_stop and self._can_stop_early:
            return True
        if self.val_check_batch == math.inf:
            return is_last
        current = total_batch_idx if every is None else batch_idx
        return (current + 1) % self.val_check_batch == 0

    def _make_step(self, model) -> bool:
        """(Re)build the compiled step when the trainable parameters changed; True when it did."""
        names = tuple(k for k, _ in tree_flatten(model.trainable_parameters()))
        if self._step is not None and names == self._trainable_names:
            return False
        self._trainable_names = names
        self._step = TrainingStep(
            model,
            self.optimizers[0],
            self.precision,
            scaler=self._scaler,
            accumulate=self.accumulate_grad_batches,
            clip_val=self.gradient_clip_val,
            clip_algorithm=self.gradient_clip_algorithm,
            group=self.group,
            compile=self.compile,
        )
        return True

    def _train_epoch(self, model, train, val) -> None:
        results = self._results = ResultCollection(training=True, group=self.group)
        if hasattr(train, "set_epoch"):
            train.set_epoch(self.current_epoch)
        self._call("on_train_epoch_start")
        self._module_hook("on_train_epoch_start")
        self.step_compiles = self._make_step(model)
        step = self._step
        # what a batch calls, found once: the callbacks and module hooks that do something
        start_callbacks = self._callbacks_for("on_train_batch_start")
        start_hook = self._overrides("on_train_batch_start")
        before_callbacks = self._callbacks_for("on_before_optimizer_step")
        before_hook = self._overrides("on_before_optimizer_step")
        end_callbacks = self._callbacks_for("on_train_batch_end")
        end_hook = self._overrides("on_train_batch_end")
        # the state the step writes, evaluated after each step (the containers it was traced with)
        step_state = step.state()
        logged: dict[str, tuple] = {}  # name -> (its entry in results, batch size given to self.log)
        total = self.num_training_batches
        bar = self._epoch_bar = self._bar(total, f"Epoch {self.current_epoch}")
        show_bar = not bar.disable
        skip, self._resume_batches = self._resume_batches, 0
        k = self.accumulate_grad_batches
        # the source's batches are taken one ahead, as Lightning's prefetching fetcher takes them (to
        # know the last); a user's batch becomes an MLX tree (to_mlx) while the step before it runs
        batches, convert = (train.unconverted(), to_mlx) if isinstance(train, Batches) else (iter(train), None)
        batch_idx = -1
        pending = next(batches, _END)
        converted = None  # `pending` as an MLX tree, once converted
        while pending is not _END:
            batch, pending = pending, next(batches, _END)
            batch_idx += 1
            if batch_idx >= total:
                break
            if batch_idx < skip:  # a checkpoint made within this epoch: its batches are done
                continue
            if convert is not None:
                batch, converted = (converted if converted is not None else convert(batch)), None
            is_last = batch_idx + 1 >= total or pending is _END
            self.is_last_batch = is_last
            self._batch, self._batch_size = batch, None  # its size is found when an epoch mean needs it
            self._in_batches = True
            for cb in start_callbacks:
                cb.on_train_batch_start(self, model, batch, batch_idx)
            if start_hook and self._module_hook("on_train_batch_start", batch, batch_idx) == -1:
                break
            apply = (batch_idx + 1) % k == 0 or is_last
            if apply:
                for cb in before_callbacks:
                    cb.on_before_optimizer_step(self, model, self.optimizers[0])
                if before_hook:
                    self._module_hook("on_before_optimizer_step", self.optimizers[0])
            loss, logs, extras = step(batch, batch_idx, apply=apply)
            epoch_values = []
            for name, value in logs.items():
                entry = logged.get(name)
                if entry is None:  # the name's entry, and whether its values need more than storing
                    fx, batch_size, options = step.log_items[name]
                    item = results.item(fx, name, **options)
                    as_is = step.compile and not item.on_epoch and value.dtype == mx.float32 and value.ndim == 0
                    entry = logged[name] = (item, batch_size, as_is)
                item, batch_size, as_is = entry
                if as_is:
                    item.set_step(value)
                else:
                    item.update(value, batch_size or self._current_batch_size)
                    if item.on_epoch:
                        epoch_values.append(item.step_value)
            # the step runs now, the host reading nothing, while the host converts the next batch; on
            # a GPU the host goes on; on the CPU, where steps left queued cost about 250 us each (a
            # 3-layer MLP), it then waits for the step. Converting the next batch during the step
            # instead of before it measured 10-20 us faster on the MLP example's 250 us step in one
            # session (2-core CPU) and level in a later one (8 paired runs): within this CPU's noise.
            # Evaluated: all the state the step writes (evaluating part of it leaves the rest to a
            # second, slower evaluation) and the values an epoch reduction keeps; the loss and the
            # values logged per step only are computed when read (a view, a logged row, a callback),
            # as the step's other outputs nobody reads are not.
            if self.group is None:
                mx.async_eval(step_state, epoch_values)
                if convert is not None and pending is not _END:
                    converted = convert(pending)
                if self._wait_for_steps:
                    mx.eval(step_state, epoch_values)
            else:
                # the loss and logs are means over the processes: every rank runs those exchanges now, in
                # step (a rank that read them later, for a logged row, would wait for a peer that never
                # joins). The epoch values are among the logs, and are not named twice: with an array
                # named twice in one evaluation, a rank whose peer had died waited forever in MLX's ring
                # backend instead of raising (tests/test_mlx_distributed.py, the dead-peer test).
                (mx.eval if self._wait_for_steps else mx.async_eval)(loss, logs, step_state)
            if apply:
                self.global_step += 1
            self._batches_in_epoch = batch_idx + 1
            if end_callbacks or end_hook:
                # Lightning's outputs["loss"] is the loss its backward took: divided by accumulate_grad_batches
                # (ClosureResult.from_training_step_output in loops/optimization/automatic.py)
                outputs = {"loss": loss / k if k > 1 else loss}
                if step.extra_keys:  # a dict's other entries, in its order (ClosureResult.asdict)
                    outputs.update((key, extras.get(key, step.extra_values.get(key))) for key in step.extra_keys)
                for cb in end_callbacks:
                    cb.on_train_batch_end(self, model, outputs, batch, batch_idx)
                if end_hook:
                    self._module_hook("on_train_batch_end", outputs, batch, batch_idx)
                del outputs
            # callback_metrics and the other views compute the running values when read (their
            # properties); they are stored only where a row is logged and at the loop's end
            if apply and (self.should_update_logs or self.fast_dev_run):
                self._store_metrics(on_step=True)
                self._log_metrics(results.metrics(on_step=True)["log"])
                if show_bar:
                    bar.set_postfix(as_floats(self._progress_bar_metrics), refresh=False)
            if show_bar:
                bar.update(1)
            if self.enable_validation and self._should_validate(batch_idx, self._total_batch_idx, is_last):
                self._validate_in_fit(val)
            if apply:
                self._batches_that_stepped += 1
            self._total_batch_idx += 1
            if self.should_stop and self.loggers:
                for logger in self.loggers:
                    logger.save()
            if self.max_steps != -1 and self.global_step >= self.max_steps:
                break
            if self.should_stop and self._can_stop_early:
                break
        self._release_batch()
        self._store_metrics(on_step=True)
        self._in_batches = False
        # epoch end, in Lightning's order: callbacks that monitor nothing, the module, then the monitoring ones
        self._epoch_ended = True
        self._call("on_train_epoch_end", monitoring=False)
        self._module_hook("on_train_epoch_end")
        self._call("on_train_epoch_end", monitoring=True)
        metrics = self._store_metrics(on_step=False)
        self._batches_that_stepped -= 1  # the epoch's row carries its last step, as Lightning's
        self._log_metrics(metrics["log"])
        self._batches_that_stepped += 1
        # as Lightning's TQDMProgressBar at the epoch's end: the bar shows the progress-bar values,
        # the validation figures among them, beside the training loss
        if not bar.disable:
            bar.set_postfix(self.progress_bar_metrics, refresh=False)
        bar.close()
        self._results.reset()
        self.current_epoch += 1
        self._epoch_ended, self._batches_in_epoch = False, 0

    _total_batch_idx = 0  # batches over all epochs (Lightning's total_batch_idx)
    _batches_in_epoch = 0  # batches of the current epoch done
    _epoch_ended = False  # in the epoch-end hooks: a checkpoint made now resumes at the next epoch

    # ----------------------------------------------------------- evaluation
    def _sanity_check(self, val) -> None:
        self.sanity_checking = True
        self._call("on_sanity_check_start")
        try:
            n = min(self.num_sanity_val_steps, self.num_val_batches[0]) if self.num_sanity_val_steps >= 0 else None
            self._evaluate(val, "validation", n if n is not None else self.num_val_batches[0])
        finally:
            self._call("on_sanity_check_end")
            self.sanity_checking = False
            # as Lightning's: nothing the sanity check logged outlives it
            self._results = None
            self._callback_metrics.clear()
            self._logged_metrics.clear()
            self._progress_bar_metrics.clear()

    def _validate_in_fit(self, val) -> None:
        results, in_batches, self._results = self._results, self._in_batches, None
        try:
            self._evaluate(val, "validation", self.num_val_batches[0])
        finally:
            self._results, self._in_batches = results, in_batches

    def _evaluate(self, batches, stage: str, limit) -> dict:
        """One evaluation run over the first `limit` batches with Lightning's hooks; returns the
        epoch's logged metrics (0-d mx.array)."""
        model = self.lightning_module
        self._results = ResultCollection(training=False, group=self.group)
        step_hook = "validation_step" if stage == "validation" else "test_step"
        modes = module_modes(model)
        model.eval()
        try:
            self._call(f"on_{stage}_start")
            self._module_hook(f"on_{stage}_start")
            self._call(f"on_{stage}_epoch_start")
            self._module_hook(f"on_{stage}_epoch_start")
            bar = self._bar(limit, "Sanity Checking" if self.sanity_checking else stage.capitalize(), leave=False)
            for batch_idx, batch in enumerate(batches):
                if batch_idx >= limit:
                    break
                self._batch, self._batch_size = batch, None  # its size is found when an epoch mean needs it
                self._in_batches = True
                self._call(f"on_{stage}_batch_start", batch, batch_idx)
                self._module_hook(f"on_{stage}_batch_start", batch, batch_idx)
                with evaluation_precision(model, self.precision) as cast:
                    output = self._module_hook(step_hook, cast(batch), batch_idx)
                self._call(f"on_{stage}_batch_end", output, batch, batch_idx)
                self._module_hook(f"on_{stage}_batch_end", output, batch, batch_idx)
                step_logs = self._results.metrics(on_step=True)["log"]
                if step_logs and not self.sanity_checking:
                    self._log_metrics(step_logs, step=batch_idx)
                bar.update(1)
            bar.close()
            self._release_batch()
            self._in_batches = False
            self._call(f"on_{stage}_epoch_end")
            self._module_hook(f"on_{stage}_epoch_end")
            metrics = {"log": {}} if self.sanity_checking else self._store_metrics(on_step=False)
            if not self.sanity_checking:
                self._log_metrics(metrics["log"])
            self._call(f"on_{stage}_end")
            self._module_hook(f"on_{stage}_end")
        finally:
            restore_modes(modes)
        return metrics["log"]

    def _run_evaluation(self, stage: str, model, dataloaders, datamodule, ckpt_path, verbose: bool) -> list[dict]:
        dataloaders, datamodule = _datamodule_given_as_loaders(dataloaders, datamodule)
        self._attach(model)
        self.datamodule = datamodule if datamodule is not None else self.datamodule
        fn = "validate" if stage == "validation" else "test"
        self.state.fn = fn
        split = "val" if stage == "validation" else "test"
        source = DataSource(model, {split: dataloaders}, datamodule, self.global_rank, self.world_size, self.group)
        source.prepare(fn)
        self._call("setup", stage=fn)
        self._module_hook("setup", stage=fn)
        try:
            if ckpt_path is not None:
                checkpoint = self._resolve_checkpoint(ckpt_path)
                if checkpoint is not None:
                    self._restore_module_and_callbacks(model, checkpoint)
            step_hook = "validation_step" if stage == "validation" else "test_step"
            if not hasattr(model, step_hook):
                raise MisconfigurationException(f"No `{step_hook}()` method defined to run `Trainer.{fn}`.")
            batches = source.batches(split)
            if batches is None:
                raise MisconfigurationException(f"No `{split}_dataloader()` method defined to run `Trainer.{fn}`.")
            limit = self.limit_val_batches if stage == "validation" else self.limit_test_batches
            n = limit_batches(length_of(batches), limit, split)
            logged = as_floats(self._evaluate(batches, stage, n))
        finally:
            self._call("teardown", stage=fn)
            self._module_hook("teardown", stage=fn)
            self.state.status = "finished"
        if verbose and self.is_global_zero:
            print_figures(logged)
        return [logged]

    def validate(self, model, dataloaders=None, ckpt_path=None, verbose: bool = True, datamodule=None) -> list[dict]:
        """Lightning's ``Trainer.validate``: [{name: float}] of what ``validation_step`` and the
        validation epoch hooks logged."""
        return self._run_evaluation("validation", model, dataloaders, datamodule, ckpt_path, verbose)

    def test(self, model, dataloaders=None, ckpt_path=None, verbose: bool = True, datamodule=None) -> list[dict]:
        """Lightning's ``Trainer.test``: [{name: float}] of what ``test_step`` and the test epoch
        hooks logged."""
        return self._run_evaluation("test", model, dataloaders, datamodule, ckpt_path, verbose)

    def predict(self, model, dataloaders=None, datamodule=None, return_predictions: bool = True, ckpt_path=None):
        """Lightning's ``Trainer.predict``: ``predict_step`` of each batch, a list."""
        dataloaders, datamodule = _datamodule_given_as_loaders(dataloaders, datamodule)
        self._attach(model)
        self.state.fn = "predict"
        source = DataSource(model, {"predict": dataloaders}, datamodule, self.global_rank, self.world_size, self.group)
        source.prepare("predict")
        batches = source.batches("predict")
        if batches is None:
            raise MisconfigurationException("No `predict_dataloader()` method defined to run `Trainer.predict`.")
        n = limit_batches(length_of(batches), self.limit_predict_batches, "predict")
        modes = module_modes(model)
        model.eval()
        predictions = []
        try:
            self._call("on_predict_start")
            self._module_hook("on_predict_start")
            self._call("on_predict_epoch_start")
            self._module_hook("on_predict_epoch_start")
            for batch_idx, batch in enumerate(batches):
                if batch_idx >= n:
                    break
                self._call("on_predict_batch_start", batch, batch_idx)
                with evaluation_precision(model, self.precision) as cast:
                    out = self._module_hook("predict_step", cast(batch), batch_idx)
                mx.eval(out)
                predictions.append(out)
                self._call("on_predict_batch_end", out, batch, batch_idx)
            self._call("on_predict_epoch_end")
            self._module_hook("on_predict_epoch_end")
            self._call("on_predict_end")
            self._module_hook("on_predict_end")
        finally:
            restore_modes(modes)
            self.state.status = "finished"
        return predictions if return_predictions else None

    # ------------------------------------------------------------ checkpoints
    def save_checkpoint(self, filepath, weights_only: bool = False) -> None:
        """Lightning's checkpoint dict (``dump_checkpoint``) written to `filepath` (rank 0)."""
        model = self.lightning_module
        checkpoint = {
            "epoch": self.current_epoch,
            "global_step": self.global_step,
            "mlx_version": mx.__version__,
            "state_dict": dict(array_leaves(model.state)),
            "hyper_parameters": dict(model.hparams),
            "hparams_name": "kwargs",
            "loops": {
                "fit_loop": {
                    "epoch": self.current_epoch,
                    "batches_that_stepped": self._batches_that_stepped,
                    "total_batch_idx": self._total_batch_idx,
                    # saved at an epoch's end (train or validation end hooks): the next fit starts the next epoch
                    "epoch_done": self._epoch_ended or self._batches_in_epoch >= self.num_training_batches,
                    "epoch_batches_done": self._batches_in_epoch,
                    "random_key": mx.array(mx.random.state[0]),
                }
            },
        }
        if not weights_only:
            checkpoint["optimizer_states"] = [self.optimizers[0].state] if self.optimizers else []
            checkpoint["callbacks"] = {cb.state_key: cb.state_dict() for cb in self.callbacks}
            if self._scaler is not None:
                checkpoint["loss_scaler"] = self._scaler.state_dict()
            self._call("on_save_checkpoint", checkpoint)
        self._module_hook("on_save_checkpoint", checkpoint)
        if self.is_global_zero:
            save_checkpoint(checkpoint, filepath)

    def _resolve_checkpoint(self, ckpt_path):
        if ckpt_path is None:
            return None
        if ckpt_path == "best":
            best = self.checkpoint_callback.best_model_path if self.checkpoint_callback else ""
            if not best:
                raise ValueError('ckpt_path="best" needs a ModelCheckpoint that has saved a best checkpoint')
            ckpt_path = best
        if ckpt_path == "last":
            candidates = [Path(cb.last_model_path) for cb in self.checkpoint_callbacks if cb.last_model_path]
            candidates += [Path(cb.dirpath) / "last.ckpt" for cb in self.checkpoint_callbacks if cb.dirpath]
            found = [p for p in candidates if p.is_file()]
            if not found:
                import warnings

                warnings.warn(
                    "ckpt_path='last' is set, but there is no last checkpoint available. No checkpoint will be loaded.",
                    stacklevel=3,
                )
                return None
            ckpt_path = max(found, key=lambda p: p.stat().st_mtime)
        return load_checkpoint(ckpt_path)

    def _restore_module_and_callbacks(self, model, checkpoint: dict) -> None:
        self._module_hook("on_load_checkpoint", checkpoint)
        state = checkpoint["state_dict"]
        ours = dict(array_leaves(model.state))
        missing, unexpected = sorted(set(ours) - set(state)), sorted(set(state) - set(ours))
        if missing or unexpected:
            raise ValueError(
                f"the checkpoint's weights do not fit {type(model).__name__}: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
        model.update(tree_unflatten(list(state.items())), strict=False)
        self._call("on_load_checkpoint", checkpoint)
        for cb in self.callbacks:
            if cb.state_key in checkpoint.get("callbacks", {}):
                cb.load_state_dict(checkpoint["callbacks"][cb.state_key])

    def _restore_training_state(self, checkpoint: dict) -> None:
        if checkpoint.get("optimizer_states"):
            assign_state(self.optimizers[0], checkpoint["optimizer_states"][0])
        if self._scaler is not None and "loss_scaler" in checkpoint:
            self._scaler.load_state_dict(checkpoint["loss_scaler"])
        loop = checkpoint.get("loops", {}).get("fit_loop", {})
        self.global_step = checkpoint["global_step"]
        self._batches_that_stepped = loop.get("batches_that_stepped", self.global_step)
        self._total_batch_idx = loop.get("total_batch_idx", 0)
        if loop.get("epoch_done", True):
            self.current_epoch = checkpoint["epoch"] + 1
        else:
            self.current_epoch, self._resume_batches = checkpoint["epoch"], loop.get("epoch_batches_done", 0)
        if "random_key" in loop:
            set_random_key(loop["random_key"])

    # ---------------------------------------------------------------- display
    def _bar(self, total, desc: str, leave: bool = True):
        from tqdm import tqdm

        return tqdm(
            total=None if total == math.inf else total,
            desc=desc,
            disable=not (self.enable_progress_bar and self.is_global_zero),
            leave=leave,
            file=sys.stderr,
        )


_END = object()


def _datamodule_given_as_loaders(loaders, datamodule):
    """(loaders, datamodule) with a DataModule passed in the loaders' place moved to its own,
    as Lightning allows ``fit(model, dm)`` and ``test(model, dm)``."""
    if loaders is not None and hasattr(loaders, "train_dataloader") and datamodule is None:
        return None, loaders
    return loaders, datamodule


class _FirstBatches:
    """The first `n` batches of a source, taken once and served every epoch
    (``overfit_batches``: the same batches for training and validation)."""

    def __init__(self, source, n):
        self.batches = []
        for i, batch in enumerate(source):
            if i >= n:
                break
            self.batches.append(batch)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


def print_figures(figures: dict) -> None:
    """What validate and test print: each figure's name and value, one a line, sorted."""
    for name, value in sorted(figures.items()):
        print(f"{name:>24}  {float(value):.6g}")


_STATISTICS = ("running_mean", "running_var")  # BatchNorm's: torch's buffers, not parameters


def _count(tree) -> int:
    """Elements of a module's parameters, BatchNorm's running statistics left out (torch keeps
    them as buffers, which Lightning's summary does not count)."""
    return sum(v.size for k, v in tree_flatten(tree) if k.rsplit(".", 1)[-1] not in _STATISTICS)


def model_summary(model) -> str:
    """Lightning's ModelSummary table (depth 1): each child's name, type and parameter count."""
    rows = [("", "Name", "Type", "Params")]
    for i, (name, child) in enumerate(model.children().items()):
        if isinstance(child, (list, tuple)):
            params = sum(_count(c.parameters()) for c in child)
        elif isinstance(child, dict) and not hasattr(child, "parameters"):
            continue
        else:
            params = _count(child.parameters())
        rows.append((str(i), name, type(child).__name__, f"{params:,}"))
    trainable = _count(model.trainable_parameters())
    total = _count(model.parameters())
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)) for r in rows]
    lines.append(f"{trainable:,} trainable params, {total - trainable:,} non-trainable, {total:,} total")
    return "\n".join(lines)


__all__ = ["MLXTrainer", "parse_optimizers", "model_summary", "print_figures"]
