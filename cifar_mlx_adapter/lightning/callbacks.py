"""Lightning 2.6.6's callbacks for ``MLXTrainer``: ``Callback``, ``Checkpoint``, ``ModelCheckpoint``,
``EarlyStopping``, ``LearningRateMonitor``.

Each class copies the behaviour of its namesake in ``lightning/pytorch/callbacks/`` (the file is named in
its docstring): the same hook names and signatures, the same decisions at the same hooks, the same
attribute names, ``state_dict`` keys and error texts. What differs, and why:

- Tensors are 0-d ``mx.array``: ``trainer.callback_metrics`` holds float32 0-d arrays as Lightning's holds
  0-d tensors, and the comparisons Lightning makes with torch ops (``torch.lt``, ``torch.isfinite``, the
  subtraction of ``min_delta``) are made with the same MLX ops, in float32 as torch makes them.
- One process: where Lightning asks ``trainer.strategy`` to broadcast a value or reduce a decision across
  ranks, the local value is used (a comment says so at each place). ``MLXTrainer`` has no strategy.
- ``ModelCheckpoint(train_time_interval=...)`` is refused (ValueError): time-based saving is not supported.
- ``LearningRateMonitor``: MLX has no LR scheduler objects (a schedule lives inside the optimiser), so every
  optimiser is named and logged as Lightning names and logs an optimiser without a scheduler.

This module imports neither torch nor lightning: it must work in an MLX-only install.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import warnings
from collections import defaultdict
from copy import deepcopy
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

import mlx.core as mx

log = logging.getLogger(__name__)

_FITTING = "fit"  # lightning.pytorch.trainer.states.TrainerFn.FITTING's value; our trainer.state.fn is this string


class MisconfigurationException(Exception):
    """Lightning's ``lightning.pytorch.utilities.exceptions.MisconfigurationException``, raised with the same
    texts; defined here so that an MLX-only install (no lightning) can raise and catch it."""


class _WarningCache(set):
    """``lightning_utilities.core.rank_zero.WarningCache``: warn once per message."""

    def warn(self, message: str) -> None:
        if message not in self:
            self.add(message)
            warnings.warn(message, stacklevel=3)


_warning_cache = _WarningCache()


def _scalar(value: Any) -> Any:
    """A 0-d ``mx.array`` as its Python number (what ``Tensor.__format__`` formats for a 0-d tensor), else
    ``value`` unchanged."""
    if isinstance(value, mx.array) and value.ndim == 0:
        return value.item()
    return value


class Callback:
    r"""Lightning's ``Callback`` (lightning/pytorch/callbacks/callback.py): every hook, with its name and
    signature, as a no-op; subclass it and override the hooks you need."""

    @property
    def state_key(self) -> str:
        """Identifier for the state of the callback in ``checkpoint["callbacks"][state_key]``: the class's
        qualified name unless a subclass needs several instances told apart (callback.py)."""
        return self.__class__.__qualname__

    @property
    def _legacy_state_key(self) -> type:
        """State key for checkpoints saved before Lightning 1.5.0 (callback.py): the class."""
        return type(self)

    def _generate_state_key(self, **kwargs: Any) -> str:
        """The class's qualified name followed by ``repr(kwargs)`` (callback.py)."""
        return f"{self.__class__.__qualname__}{repr(kwargs)}"

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Called when fit, validate, test, predict, or tune begins."""

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Called when fit, validate, test, predict, or tune ends."""

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        """Called when fit begins."""

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        """Called when fit ends."""

    def on_sanity_check_start(self, trainer: Any, pl_module: Any) -> None:
        """Called when the validation sanity check starts."""

    def on_sanity_check_end(self, trainer: Any, pl_module: Any) -> None:
        """Called when the validation sanity check ends."""

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        """Called when the train batch begins."""

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Called when the train batch ends."""

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """Called when the train epoch begins."""

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Called when the train epoch ends."""

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """Called when the val epoch begins."""

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Called when the val epoch ends."""

    def on_test_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """Called when the test epoch begins."""

    def on_test_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Called when the test epoch ends."""

    def on_predict_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """Called when the predict epoch begins."""

    def on_predict_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Called when the predict epoch ends."""

    def on_validation_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Called when the validation batch begins."""

    def on_validation_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Called when the validation batch ends."""

    def on_test_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Called when the test batch begins."""

    def on_test_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Called when the test batch ends."""

    def on_predict_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Called when the predict batch begins."""

    def on_predict_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Called when the predict batch ends."""

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Called when the train begins."""

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """Called when the train ends."""

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        """Called when the validation loop begins."""

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        """Called when the validation loop ends."""

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        """Called when the test begins."""

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        """Called when the test ends."""

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        """Called when the predict begins."""

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        """Called when predict ends."""

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """Called when any trainer execution is interrupted by an exception."""

    def state_dict(self) -> dict[str, Any]:
        """Called when saving a checkpoint; returns the callback's state."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Called when loading a checkpoint, with the state ``state_dict`` returned."""

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        """Called when saving a checkpoint, to store anything else in ``checkpoint``."""

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        """Called when loading a model checkpoint, with the full checkpoint dictionary."""

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: mx.array) -> None:
        """Called before the loss's gradients are computed."""

    def on_after_backward(self, trainer: Any, pl_module: Any) -> None:
        """Called after the gradients are computed and before optimizers are stepped."""

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        """Called before the optimizer's step."""

    def on_before_zero_grad(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        """Called before the gradients are cleared."""


class Checkpoint(Callback):
    """Lightning's base class of checkpointing callbacks (lightning/pytorch/callbacks/checkpoint.py): the
    trainer recognises a checkpoint callback by it."""


class ModelCheckpoint(Checkpoint):
    r"""Save the model periodically by monitoring a quantity: Lightning's ``ModelCheckpoint``
    (lightning/pytorch/callbacks/model_checkpoint.py), same arguments in the same order, same file names,
    same top-k bookkeeping (``best_k_models``, ``kth_best_model_path``, ``kth_value``, ``best_model_path``,
    ``best_model_score``, ``last_model_path``), same hooks.

    Scores are 0-d ``mx.array`` taken from ``trainer.callback_metrics``. ``train_time_interval`` is not
    supported (ValueError). Files are written by ``trainer.save_checkpoint(filepath, weights_only)`` and
    removed with ``os.remove`` when they leave the top k.
    """

    CHECKPOINT_JOIN_CHAR = "-"
    CHECKPOINT_EQUALS_CHAR = "="
    CHECKPOINT_NAME_LAST = "last"
    FILE_EXTENSION = ".ckpt"
    STARTING_VERSION = 1

    def __init__(
        self,
        dirpath: Optional[Union[str, Path]] = None,
        filename: Optional[str] = None,
        monitor: Optional[str] = None,
        verbose: bool = False,
        save_last: Optional[Union[bool, Literal["link"]]] = None,
        save_top_k: int = 1,
        save_on_exception: bool = False,
        save_weights_only: bool = False,
        mode: str = "min",
        auto_insert_metric_name: bool = True,
        every_n_train_steps: Optional[int] = None,
        train_time_interval: Any = None,
        every_n_epochs: Optional[int] = None,
        save_on_train_epoch_end: Optional[bool] = None,
        enable_version_counter: bool = True,
    ):
        super().__init__()
        if train_time_interval is not None:
            raise ValueError(
                f"ModelCheckpoint(train_time_interval={train_time_interval!r}) is not supported by the MLX callbacks:"
                " expected None (use every_n_train_steps or every_n_epochs)"
            )
        if save_last not in (None, True, False, "link"):
            raise ValueError(f"ModelCheckpoint(save_last={save_last!r}): expected None, True, False or 'link'")
        self.monitor = monitor
        self.verbose = verbose
        self.save_last = save_last
        self.save_top_k = save_top_k
        self.save_on_exception = save_on_exception
        self.save_weights_only = save_weights_only
        self.auto_insert_metric_name = auto_insert_metric_name
        self._save_on_train_epoch_end = save_on_train_epoch_end
        self._enable_version_counter = enable_version_counter
        self._last_global_step_saved = 0  # no need to save when no steps were taken
        self.current_score: Optional[mx.array] = None
        self.best_k_models: dict[str, mx.array] = {}
        self.kth_best_model_path = ""
        self.best_model_score: Optional[mx.array] = None
        self.best_model_path = ""
        self.last_model_path = ""
        self._last_checkpoint_saved = ""
        # a step-triggered save whose monitored metric only validation produces waits for validation's end
        self._defer_save_until_validation: bool = False
        # Lightning reads trainer.fit_loop.epoch_loop.val_loop._has_run (the latest validation run, not a
        # sanity check, ran a batch); this callback follows the same hooks to know it (on_validation_start,
        # on_validation_batch_end)
        self._val_has_run = False
        self.kth_value: mx.array
        self.dirpath: Optional[str]
        self.__init_monitor_mode(mode)
        self.__init_ckpt_dir(dirpath, filename)
        self.__init_triggers(every_n_train_steps, every_n_epochs)
        self.__validate_init_configuration()

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            monitor=self.monitor,
            mode=self.mode,
            every_n_train_steps=self._every_n_train_steps,
            every_n_epochs=self._every_n_epochs,
            train_time_interval=None,
        )

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        # Lightning broadcasts rank 0's dirpath; one process uses its own
        self.dirpath = self.__resolve_ckpt_dir(trainer)
        if trainer.is_global_zero and stage == "fit":
            self.__warn_if_dir_not_empty(self.dirpath)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        # the evaluation loop's reset() sets _has_run = False before this hook
        self._val_has_run = False

    def on_validation_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        # evaluation_loop.py sets _has_run after each batch that is not a sanity check's
        if not trainer.sanity_checking:
            self._val_has_run = True

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Save a checkpoint on train batch end if ``every_n_train_steps`` says so (model_checkpoint.py)."""
        if not getattr(pl_module, "automatic_optimization", True):
            # Lightning's manual-optimization path: its special case restores a torch `pl_module.layer`
            # from `pl_module.saved_models`, which an MLX module never is; this is its fallback branch
            if self._every_n_train_steps < 1 or (trainer.global_step % self._every_n_train_steps != 0):
                return
            if self._should_skip_saving_checkpoint(trainer):
                return
            monitor_candidates = self._monitor_candidates(trainer)
            if self.monitor is not None and self.monitor not in monitor_candidates:
                self._defer_save_until_validation = True
                return
            if trainer.is_global_zero:
                warnings.warn(
                    "Using ModelCheckpoint with manual optimization and every_n_train_steps, but no "
                    "pre-optimization state was saved. The checkpoint will contain the model state "
                    "AFTER optimization.",
                    UserWarning,
                    stacklevel=2,
                )
            self._save_topk_checkpoint(trainer, monitor_candidates)
            self._save_last_checkpoint(trainer, monitor_candidates)
            return

        skip_due_to_state = self._should_skip_saving_checkpoint(trainer)
        skip_batch = self._every_n_train_steps < 1 or (trainer.global_step % self._every_n_train_steps != 0)
        if skip_batch:  # Lightning: `skip_batch and skip_time`; with no train_time_interval skip_time is True
            return

        monitor_candidates = self._monitor_candidates(trainer)
        # a monitored metric that only validation produces is not there yet: defer both top-k and last
        if self.monitor is not None and self.monitor not in monitor_candidates:
            self._defer_save_until_validation = True
            return

        # the monitored key may be stale from an earlier validation: when validation runs right after this
        # (the epoch's last batch) and saving is not at train epoch end, defer to on_validation_end.
        # Lightning reads trainer.fit_loop.epoch_loop.batch_progress.is_last_batch and trainer.enable_validation
        # (itself with getattr(..., False)); a trainer that does not expose `is_last_batch` never defers here
        if (
            self.monitor is not None
            and not self._should_save_on_train_epoch_end(trainer)
            and getattr(trainer, "is_last_batch", False)
        ):
            will_run_val = False
            if getattr(trainer, "enable_validation", False):
                num_val_batches = (
                    sum(trainer.num_val_batches)
                    if isinstance(trainer.num_val_batches, list)
                    else trainer.num_val_batches
                )
                if num_val_batches and num_val_batches > 0:
                    cve = trainer.check_val_every_n_epoch
                    if cve is None or ((trainer.current_epoch + 1) % cve == 0):
                        will_run_val = True
            if will_run_val:
                self._defer_save_until_validation = True
                return

        if skip_due_to_state:
            return

        self._save_topk_checkpoint(trainer, monitor_candidates)
        self._save_last_checkpoint(trainer, monitor_candidates)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Save a checkpoint at the end of the training epoch (model_checkpoint.py)."""
        if not self._should_skip_saving_checkpoint(trainer) and self._should_save_on_train_epoch_end(trainer):
            monitor_candidates = self._monitor_candidates(trainer)
            if self._every_n_epochs >= 1 and (trainer.current_epoch + 1) % self._every_n_epochs == 0:
                self._save_topk_checkpoint(trainer, monitor_candidates)
            # last is saved only when a checkpoint was saved at this step, or save_last="link"
            if self._last_global_step_saved == trainer.global_step or (
                self.save_last == "link" and self._last_checkpoint_saved
            ):
                self._save_last_checkpoint(trainer, monitor_candidates)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        """Save a checkpoint at the end of the validation stage (model_checkpoint.py)."""
        if not self._should_skip_saving_checkpoint(trainer) and not self._should_save_on_train_epoch_end(trainer):
            monitor_candidates = self._monitor_candidates(trainer)
            # a step-triggered save deferred for a missing monitored metric happens now
            if self._defer_save_until_validation:
                self._save_topk_checkpoint(trainer, monitor_candidates)
                self._save_last_checkpoint(trainer, monitor_candidates)
                self._defer_save_until_validation = False
                return

            if self._every_n_epochs >= 1 and (trainer.current_epoch + 1) % self._every_n_epochs == 0:
                self._save_topk_checkpoint(trainer, monitor_candidates)
            if self._last_global_step_saved == trainer.global_step or (
                self.save_last == "link" and self._last_checkpoint_saved
            ):
                self._save_last_checkpoint(trainer, monitor_candidates)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """Save a checkpoint when an exception is raised, if ``save_on_exception`` (model_checkpoint.py)."""
        if not self._should_save_on_exception(trainer):
            return
        monitor_candidates = self._monitor_candidates(trainer)
        filepath = self.format_checkpoint_name(metrics=monitor_candidates)
        self._save_checkpoint(trainer, filepath)
        self._save_last_checkpoint(trainer, monitor_candidates)
        if trainer.is_global_zero:
            log.info(
                f"An {type(exception).__name__} was raised with message: {str(exception)}, saved checkpoint to {filepath}"
            )

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """Save last at the end of training when ``save_last`` and nothing was saved (model_checkpoint.py)."""
        if self.save_last and not self._last_checkpoint_saved:
            monitor_candidates = self._monitor_candidates(trainer)
            self._save_last_checkpoint(trainer, monitor_candidates)

    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "best_model_score": self.best_model_score,
            "best_model_path": self.best_model_path,
            "current_score": self.current_score,
            "dirpath": self.dirpath,
            "best_k_models": self.best_k_models,
            "kth_best_model_path": self.kth_best_model_path,
            "kth_value": self.kth_value,
            "last_model_path": self.last_model_path,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        dirpath_from_ckpt = state_dict.get("dirpath", self.dirpath)

        if self.dirpath == dirpath_from_ckpt:
            self.best_model_score = state_dict["best_model_score"]
            self.kth_best_model_path = state_dict.get("kth_best_model_path", self.kth_best_model_path)
            self.kth_value = state_dict.get("kth_value", self.kth_value)
            self.best_k_models = state_dict.get("best_k_models", self.best_k_models)
            self.last_model_path = state_dict.get("last_model_path", self.last_model_path)
        else:
            warnings.warn(
                f"The dirpath has changed from {dirpath_from_ckpt!r} to {self.dirpath!r},"
                " therefore `best_model_score`, `kth_best_model_path`, `kth_value`, `last_model_path` and"
                " `best_k_models` won't be reloaded. Only `best_model_path` will be reloaded.",
                stacklevel=2,
            )

        self.best_model_path = state_dict["best_model_path"]

    def _save_topk_checkpoint(self, trainer: Any, monitor_candidates: dict[str, Any]) -> None:
        if self.save_top_k == 0:
            return

        if self.monitor is not None:
            if self.monitor not in monitor_candidates:
                m = (
                    f"`ModelCheckpoint(monitor={self.monitor!r})` could not find the monitored key in the returned"
                    f" metrics: {list(monitor_candidates)}."
                    f" HINT: Did you call `log({self.monitor!r}, value)` in the `LightningModule`?"
                )
                # Lightning raises once validation has run (its metrics would be there), else warns once
                if self._val_has_run:
                    raise MisconfigurationException(m)
                _warning_cache.warn(m)
            self._save_monitor_checkpoint(trainer, monitor_candidates)
        else:
            self._save_none_monitor_checkpoint(trainer, monitor_candidates)

    def _save_checkpoint(self, trainer: Any, filepath: str) -> None:
        if trainer.is_global_zero:
            # Lightning's checkpoint IO makes the folder (a metric name with "/" in the file name makes one too)
            os.makedirs(os.path.dirname(filepath) or ".", exist_ok=True)
        trainer.save_checkpoint(filepath, self.save_weights_only)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath

        # notify loggers that have the hook (Lightning's Logger.after_save_checkpoint)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                after_save = getattr(logger, "after_save_checkpoint", None)
                if after_save is not None:
                    after_save(self)

    @staticmethod
    def _link_checkpoint(trainer: Any, filepath: str, linkpath: str) -> None:
        if trainer.is_global_zero and os.path.abspath(filepath) != os.path.abspath(linkpath):
            if os.path.islink(linkpath) or os.path.isfile(linkpath):
                os.remove(linkpath)
            elif os.path.isdir(linkpath):
                shutil.rmtree(linkpath)
            try:
                os.symlink(os.path.relpath(filepath, os.path.dirname(linkpath)), linkpath)
            except OSError:
                # a platform that refuses symbolic links gets a copy
                shutil.copy(filepath, linkpath)
        # Lightning's strategy.barrier() here: one process has nothing to wait for

    def _should_skip_saving_checkpoint(self, trainer: Any) -> bool:
        return (
            bool(trainer.fast_dev_run)  # disable checkpointing with fast_dev_run
            or trainer.state.fn != _FITTING  # don't save anything during non-fit
            or trainer.sanity_checking  # don't save anything during sanity check
            or self._last_global_step_saved == trainer.global_step  # already saved at the last step
        )

    def _should_save_on_exception(self, trainer: Any) -> bool:
        return (
            self.save_on_exception
            and not bool(trainer.fast_dev_run)
            and not trainer.sanity_checking
            and self._last_global_step_saved != trainer.global_step
        )

    def _should_save_on_train_epoch_end(self, trainer: Any) -> bool:
        if self._save_on_train_epoch_end is not None:
            return self._save_on_train_epoch_end

        # time-based validation (Lightning's trainer._val_check_time_interval) always saves at validation end
        if getattr(trainer, "_val_check_time_interval", None) is not None:
            return False

        # with check_val_every_n_epoch != 1 we can't say when validation runs: don't save at every epoch end
        if trainer.check_val_every_n_epoch != 1:
            return False

        # no validation means save on train epoch end
        num_val_batches = (
            sum(trainer.num_val_batches) if isinstance(trainer.num_val_batches, list) else trainer.num_val_batches
        )
        if num_val_batches == 0:
            return True

        # validation several times an epoch: save after validation instead
        return trainer.val_check_interval == 1.0

    def __validate_init_configuration(self) -> None:
        if self.save_top_k < -1:
            raise MisconfigurationException(f"Invalid value for save_top_k={self.save_top_k}. Must be >= -1")
        if self._every_n_train_steps < 0:
            raise MisconfigurationException(
                f"Invalid value for every_n_train_steps={self._every_n_train_steps}. Must be >= 0"
            )
        if self._every_n_epochs < 0:
            raise MisconfigurationException(f"Invalid value for every_n_epochs={self._every_n_epochs}. Must be >= 0")

        every_n_train_steps_triggered = self._every_n_train_steps >= 1
        every_n_epochs_triggered = self._every_n_epochs >= 1
        if every_n_train_steps_triggered + every_n_epochs_triggered > 1:
            raise MisconfigurationException(
                f"Combination of parameters every_n_train_steps={self._every_n_train_steps}, "
                f"every_n_epochs={self._every_n_epochs} and train_time_interval=None "
                "should be mutually exclusive."
            )

        if self.monitor is None and self.save_top_k not in (-1, 0, 1):
            # -1: save all epochs, 0: nothing is saved, 1: save last epoch
            raise MisconfigurationException(
                f"ModelCheckpoint(save_top_k={self.save_top_k}, monitor=None) is not a valid"
                " configuration. No quantity for top_k to track."
            )

    def __init_ckpt_dir(self, dirpath: Optional[Union[str, Path]], filename: Optional[str]) -> None:
        # only local paths here (Lightning also takes fsspec URLs)
        if dirpath:
            dirpath = os.path.realpath(os.path.expanduser(dirpath))
        self.dirpath = dirpath
        self.filename = filename

    def __init_monitor_mode(self, mode: str) -> None:
        mode_dict = {"min": (mx.array(float("inf")), "min"), "max": (mx.array(float("-inf")), "max")}
        if mode not in mode_dict:
            raise MisconfigurationException(f"`mode` can be {', '.join(mode_dict.keys())} but got {mode}")
        self.kth_value, self.mode = mode_dict[mode]

    def __init_triggers(self, every_n_train_steps: Optional[int], every_n_epochs: Optional[int]) -> None:
        # neither set: save once after each validation epoch
        if every_n_train_steps is None and every_n_epochs is None:
            every_n_epochs = 1
            every_n_train_steps = 0
        else:
            every_n_epochs = every_n_epochs or 0
            every_n_train_steps = every_n_train_steps or 0
        self._train_time_interval = None
        self._every_n_epochs: int = every_n_epochs
        self._every_n_train_steps: int = every_n_train_steps

    @property
    def every_n_epochs(self) -> Optional[int]:
        return self._every_n_epochs

    def check_monitor_top_k(self, trainer: Any, current: Optional[mx.array] = None) -> bool:
        if current is None:
            return False

        if self.save_top_k == -1:
            return True

        less_than_k_models = len(self.best_k_models) < self.save_top_k
        if less_than_k_models:
            return True

        # torch.lt / torch.gt on 0-d float32 tensors in Lightning; the same comparison in MLX (NaN compares False)
        monitor_op = {"min": mx.less, "max": mx.greater}[self.mode]
        # Lightning reduces this decision across ranks; one process keeps its own
        return bool(monitor_op(current, self.best_k_models[self.kth_best_model_path]).item())

    def _format_checkpoint_name(
        self,
        filename: Optional[str],
        metrics: dict[str, Any],
        prefix: Optional[str] = None,
        auto_insert_metric_name: bool = True,
    ) -> str:
        if not filename:
            # filename is not set, use default name
            filename = "{epoch}" + self.CHECKPOINT_JOIN_CHAR + "{step}"

        # check and parse user passed keys in the string
        groups = re.findall(r"(\{.*?)[:\}]", filename)

        # sort keys from longest to shortest so that "epoch_test" is replaced before "epoch"
        groups = sorted(groups, key=lambda x: len(x), reverse=True)

        for group in groups:
            name = group[1:]

            if auto_insert_metric_name:
                filename = filename.replace(group, name + self.CHECKPOINT_EQUALS_CHAR + "{" + name)

            # support for dots (and "/"): index the dict instead of naming a field
            filename = filename.replace(group, f"{{0[{name}]")

            if name not in metrics:
                metrics[name] = mx.array(0)
        # a 0-d tensor formats as its Python number (Tensor.__format__); an mx.array does not, so convert
        filename = filename.format({k: _scalar(v) for k, v in metrics.items()})

        if prefix is not None:
            filename = self.CHECKPOINT_JOIN_CHAR.join([prefix, filename])

        return filename

    def format_checkpoint_name(
        self,
        metrics: dict[str, Any],
        filename: Optional[str] = None,
        ver: Optional[int] = None,
        prefix: Optional[str] = None,
    ) -> str:
        """Generate a filename according to the defined template (model_checkpoint.py).

        Example::

            >>> ckpt = ModelCheckpoint(filename='{epoch}-{val_loss:.2f}')
            >>> ckpt.format_checkpoint_name(dict(epoch=2, val_loss=0.123456))
            'epoch=2-val_loss=0.12.ckpt'
        """
        filename = filename or self.filename
        filename = self._format_checkpoint_name(
            filename, metrics, prefix=prefix, auto_insert_metric_name=self.auto_insert_metric_name
        )

        if ver is not None:
            filename = self.CHECKPOINT_JOIN_CHAR.join((filename, f"v{ver}"))

        ckpt_name = f"{filename}{self.FILE_EXTENSION}"
        return os.path.join(self.dirpath, ckpt_name) if self.dirpath else ckpt_name

    def __resolve_ckpt_dir(self, trainer: Any) -> str:
        """The checkpoint folder (model_checkpoint.py ``__resolve_ckpt_dir``), in this priority:

        1. the ``dirpath`` passed in;
        2. with loggers: ``<loggers[0].save_dir or default_root_dir>/<name>/<version or version_N>/checkpoints``;
        3. without: ``<trainer.default_root_dir>/checkpoints``.
        """
        if self.dirpath is not None:
            return self.dirpath

        if len(trainer.loggers) > 0:
            if trainer.loggers[0].save_dir is not None:
                save_dir = trainer.loggers[0].save_dir
            else:
                save_dir = trainer.default_root_dir
            name = trainer.loggers[0].name
            version = trainer.loggers[0].version
            version = version if isinstance(version, str) else f"version_{version}"
            ckpt_path = os.path.join(save_dir, str(name), version, "checkpoints")
        else:
            ckpt_path = os.path.join(trainer.default_root_dir, "checkpoints")

        return ckpt_path

    def _find_last_checkpoints(self, trainer: Any) -> set[str]:
        # all "last" checkpoints in the folder
        ckpt_path = self.__resolve_ckpt_dir(trainer)
        last_pattern = rf"^{self.CHECKPOINT_NAME_LAST}(-(\d+))?"

        def _is_last(path: Path) -> bool:
            return path.suffix == self.FILE_EXTENSION and bool(re.match(last_pattern, path.stem))

        if os.path.exists(ckpt_path):
            return {os.path.normpath(os.path.join(ckpt_path, p)) for p in os.listdir(ckpt_path) if _is_last(Path(p))}
        return set()

    def __warn_if_dir_not_empty(self, dirpath: str) -> None:
        if self.save_top_k != 0 and os.path.isdir(dirpath) and len(os.listdir(dirpath)) > 0:
            warnings.warn(f"Checkpoint directory {dirpath} exists and is not empty.", stacklevel=3)

    def _get_metric_interpolated_filepath_name(
        self, monitor_candidates: dict[str, Any], trainer: Any, del_filepath: Optional[str] = None
    ) -> str:
        filepath = self.format_checkpoint_name(monitor_candidates)

        if self._enable_version_counter:
            version_cnt = self.STARTING_VERSION
            while self.file_exists(filepath, trainer) and filepath != del_filepath:
                filepath = self.format_checkpoint_name(monitor_candidates, ver=version_cnt)
                version_cnt += 1

        return filepath

    def _monitor_candidates(self, trainer: Any) -> dict[str, Any]:
        # a copy: the values kept in best_k_models must not change if the trainer updates its metrics
        monitor_candidates = deepcopy(dict(trainer.callback_metrics))
        # `log("epoch", 123)` makes a float: cast to int; anything else (or nothing) is replaced
        epoch = monitor_candidates.get("epoch")
        monitor_candidates["epoch"] = (
            epoch.astype(mx.int32) if isinstance(epoch, mx.array) else mx.array(trainer.current_epoch)
        )
        step = monitor_candidates.get("step")
        monitor_candidates["step"] = (
            step.astype(mx.int32) if isinstance(step, mx.array) else mx.array(trainer.global_step)
        )
        return monitor_candidates

    def _save_last_checkpoint(self, trainer: Any, monitor_candidates: dict[str, Any]) -> None:
        if not self.save_last:
            return

        filepath = self.format_checkpoint_name(monitor_candidates, self.CHECKPOINT_NAME_LAST)

        if self._enable_version_counter:
            version_cnt = self.STARTING_VERSION
            while self.file_exists(filepath, trainer) and filepath != self.last_model_path:
                filepath = self.format_checkpoint_name(monitor_candidates, self.CHECKPOINT_NAME_LAST, ver=version_cnt)
                version_cnt += 1

        # set the last model path before saving because it will be part of the state.
        previous, self.last_model_path = self.last_model_path, filepath
        if self.save_last == "link" and self._last_checkpoint_saved and self.save_top_k != 0:
            self._link_checkpoint(trainer, self._last_checkpoint_saved, filepath)
        else:
            self._save_checkpoint(trainer, filepath)
        if previous and self._should_remove_checkpoint(trainer, previous, filepath):
            self._remove_checkpoint(trainer, previous)

    def _save_monitor_checkpoint(self, trainer: Any, monitor_candidates: dict[str, Any]) -> None:
        assert self.monitor
        current = monitor_candidates.get(self.monitor)
        if self.check_monitor_top_k(trainer, current):
            assert current is not None
            self._update_best_and_save(current, trainer, monitor_candidates)
        elif self.verbose and trainer.is_global_zero:
            epoch = _scalar(monitor_candidates["epoch"])
            step = _scalar(monitor_candidates["step"])
            log.info(f"Epoch {epoch:d}, global step {step:d}: {self.monitor!r} was not in top {self.save_top_k}")

    def _save_none_monitor_checkpoint(self, trainer: Any, monitor_candidates: dict[str, Any]) -> None:
        filepath = self._get_metric_interpolated_filepath_name(monitor_candidates, trainer, self.best_model_path)
        # set the best model path before saving because it will be part of the state.
        previous, self.best_model_path = self.best_model_path, filepath
        self._save_checkpoint(trainer, filepath)
        if self.save_top_k == 1 and previous and self._should_remove_checkpoint(trainer, previous, filepath):
            self._remove_checkpoint(trainer, previous)

    def _update_best_and_save(self, current: mx.array, trainer: Any, monitor_candidates: dict[str, Any]) -> None:
        k = len(self.best_k_models) + 1 if self.save_top_k == -1 else self.save_top_k

        del_filepath = None
        if len(self.best_k_models) == k and k > 0:
            del_filepath = self.kth_best_model_path
            self.best_k_models.pop(del_filepath)

        # do not save nan, replace with +/- inf
        if isinstance(current, mx.array) and bool(mx.isnan(current).item()):
            current = mx.array(float("inf" if self.mode == "min" else "-inf"))

        filepath = self._get_metric_interpolated_filepath_name(monitor_candidates, trainer, del_filepath)

        # save the current score
        self.current_score = current
        self.best_k_models[filepath] = current

        # Lightning's max/min over the dict compares the 0-d tensors; float() of a float32 keeps their order
        def score(path: str) -> float:
            return float(self.best_k_models[path])

        if len(self.best_k_models) == k:
            # monitor dict has reached k elements
            _op = max if self.mode == "min" else min
            self.kth_best_model_path = _op(self.best_k_models, key=score)
            self.kth_value = self.best_k_models[self.kth_best_model_path]

        _op = min if self.mode == "min" else max
        self.best_model_path = _op(self.best_k_models, key=score)
        self.best_model_score = self.best_k_models[self.best_model_path]

        if self.verbose and trainer.is_global_zero:
            epoch = _scalar(monitor_candidates["epoch"])
            step = _scalar(monitor_candidates["step"])
            log.info(
                f"Epoch {epoch:d}, global step {step:d}: {self.monitor!r} reached {float(current):0.5f}"
                f" (best {float(self.best_model_score):0.5f}), saving model to {filepath!r} as top {k}"
            )
        self._save_checkpoint(trainer, filepath)

        if del_filepath and self._should_remove_checkpoint(trainer, del_filepath, filepath):
            self._remove_checkpoint(trainer, del_filepath)

    def to_yaml(self, filepath: Optional[Union[str, Path]] = None) -> None:
        """Saves the ``best_k_models`` dict (checkpoint path: score) to a YAML file (needs PyYAML)."""
        import yaml  # Lightning's dependency, not ours: only this method needs it

        best_k = {k: float(v) for k, v in self.best_k_models.items()}
        if filepath is None:
            assert self.dirpath
            filepath = os.path.join(self.dirpath, "best_k_models.yaml")
        with open(filepath, "w") as fp:
            yaml.dump(best_k, fp)

    def file_exists(self, filepath: Union[str, Path], trainer: Any) -> bool:
        """Whether ``filepath`` exists, as rank 0 sees it (Lightning reduces the answer across ranks; one
        process keeps its own)."""
        return os.path.exists(filepath) if trainer.is_global_zero else False

    def _should_remove_checkpoint(self, trainer: Any, previous: str, current: str) -> bool:
        """Whether the previous checkpoint should be deleted: not when it is the current one, not when it
        is outside this callback's folder, not when the trainer resumed from it (model_checkpoint.py)."""
        if previous == current:
            return False
        previous_path = Path(previous).absolute()
        # Lightning reads trainer.ckpt_path (the checkpoint fit resumed from); a trainer without it resumed from none
        ckpt_path = getattr(trainer, "ckpt_path", None)
        resume_path = Path(ckpt_path).absolute() if ckpt_path is not None else None
        if resume_path is not None and previous_path == resume_path:
            return False
        assert self.dirpath is not None
        dirpath = Path(self.dirpath).absolute()
        return dirpath in previous_path.parents

    def _remove_checkpoint(self, trainer: Any, filepath: str) -> None:
        """Remove the file on rank 0 if it exists (Lightning's strategy.remove_checkpoint)."""
        if trainer.is_global_zero and os.path.lexists(filepath):
            os.remove(filepath)


class EarlyStoppingReason(Enum):
    """Why training was stopped (lightning/pytorch/callbacks/early_stopping.py)."""

    NOT_STOPPED = 0
    STOPPING_THRESHOLD = 1
    DIVERGENCE_THRESHOLD = 2
    PATIENCE_EXHAUSTED = 3
    NON_FINITE_METRIC = 4


class EarlyStopping(Callback):
    r"""Monitor a metric and stop training when it stops improving: Lightning's ``EarlyStopping``
    (lightning/pytorch/callbacks/early_stopping.py), same arguments, same checks at the same hooks
    (``on_validation_end``, or ``on_train_epoch_end`` when ``check_on_train_epoch_end``), same
    ``wait_count``/``stopped_epoch``/``best_score``/``stopping_reason`` and ``state_dict`` keys.

    ``best_score`` is a 0-d float32 ``mx.array``; comparisons are made in float32 with MLX's ops as
    Lightning makes them with torch's.
    """

    mode_dict = {"min": mx.less, "max": mx.greater}

    order_dict = {"min": "<", "max": ">"}

    def __init__(
        self,
        monitor: str,
        min_delta: float = 0.0,
        patience: int = 3,
        verbose: bool = False,
        mode: str = "min",
        strict: bool = True,
        check_finite: bool = True,
        stopping_threshold: Optional[float] = None,
        divergence_threshold: Optional[float] = None,
        check_on_train_epoch_end: Optional[bool] = None,
        log_rank_zero_only: bool = False,
    ):
        super().__init__()
        self.monitor = monitor
        self.min_delta = min_delta
        self.patience = patience
        self.verbose = verbose
        self.mode = mode
        self.strict = strict
        self.check_finite = check_finite
        self.stopping_threshold = stopping_threshold
        self.divergence_threshold = divergence_threshold
        self.wait_count = 0
        self.stopped_epoch = 0
        self.stopping_reason = EarlyStoppingReason.NOT_STOPPED
        self.stopping_reason_message: Optional[str] = None
        self._check_on_train_epoch_end = check_on_train_epoch_end
        self.log_rank_zero_only = log_rank_zero_only

        if self.mode not in self.mode_dict:
            raise MisconfigurationException(f"`mode` can be {', '.join(self.mode_dict.keys())}, got {self.mode}")

        # the sign that makes `current - min_delta` demand an improvement of more than |min_delta|
        self.min_delta *= 1 if self.monitor_op == mx.greater else -1
        self.best_score = mx.array(float("inf")) if self.monitor_op == mx.less else mx.array(float("-inf"))

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self._check_on_train_epoch_end is None:
            # validation several times an epoch, or several epochs without validation: check after validation
            self._check_on_train_epoch_end = trainer.val_check_interval == 1.0 and trainer.check_val_every_n_epoch == 1

    def _validate_condition_metric(self, logs: dict[str, Any]) -> bool:
        monitor_val = logs.get(self.monitor)

        error_msg = (
            f"Early stopping conditioned on metric `{self.monitor}` which is not available."
            " Pass in or modify your `EarlyStopping` callback to use any of the following:"
            f" `{'`, `'.join(list(logs.keys()))}`"
        )

        if monitor_val is None:
            if self.strict:
                raise RuntimeError(error_msg)
            if self.verbose > 0:
                warnings.warn(error_msg, RuntimeWarning, stacklevel=3)

            return False

        return True

    @property
    def monitor_op(self) -> Callable:
        return self.mode_dict[self.mode]

    def state_dict(self) -> dict[str, Any]:
        return {
            "wait_count": self.wait_count,
            "stopped_epoch": self.stopped_epoch,
            "best_score": self.best_score,
            "patience": self.patience,
            "stopping_reason": self.stopping_reason.value,
            "stopping_reason_message": self.stopping_reason_message,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.wait_count = state_dict["wait_count"]
        self.stopped_epoch = state_dict["stopped_epoch"]
        self.best_score = state_dict["best_score"]
        self.patience = state_dict["patience"]
        stopping_reason_value = state_dict.get("stopping_reason", EarlyStoppingReason.NOT_STOPPED.value)
        self.stopping_reason = EarlyStoppingReason(stopping_reason_value)
        self.stopping_reason_message = state_dict.get("stopping_reason_message")

    def _should_skip_check(self, trainer: Any) -> bool:
        return trainer.state.fn != _FITTING or trainer.sanity_checking

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not self._check_on_train_epoch_end or self._should_skip_check(trainer):
            return
        self._run_early_stopping_check(trainer)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self._check_on_train_epoch_end or self._should_skip_check(trainer):
            return
        self._run_early_stopping_check(trainer)

    def _run_early_stopping_check(self, trainer: Any) -> None:
        """Checks whether the early stopping condition is met and if so tells the trainer to stop."""
        logs = trainer.callback_metrics

        if trainer.fast_dev_run or not self._validate_condition_metric(logs):  # disabled with fast_dev_run
            return

        current = mx.squeeze(mx.array(logs[self.monitor]))
        should_stop, reason = self._evaluate_stopping_criteria(current)

        # Lightning stops every process if any decides to stop; one process decides alone
        trainer.should_stop = trainer.should_stop or should_stop
        if should_stop:
            self.stopped_epoch = trainer.current_epoch
            self.stopping_reason_message = reason
        if reason and self.verbose:
            self._log_info(trainer, reason, self.log_rank_zero_only)

    def _evaluate_stopping_criteria(self, current: mx.array) -> tuple[bool, Optional[str]]:
        should_stop = False
        reason = None
        if self.check_finite and not bool(mx.isfinite(current).item()):
            should_stop = True
            self.stopping_reason = EarlyStoppingReason.NON_FINITE_METRIC
            reason = (
                f"Monitored metric {self.monitor} = {float(current)} is not finite."
                f" Previous best value was {float(self.best_score):.3f}. Signaling Trainer to stop."
            )
        elif self.stopping_threshold is not None and self._op(current, self.stopping_threshold):
            should_stop = True
            self.stopping_reason = EarlyStoppingReason.STOPPING_THRESHOLD
            reason = (
                "Stopping threshold reached:"
                f" {self.monitor} = {float(current)} {self.order_dict[self.mode]} {self.stopping_threshold}."
                " Signaling Trainer to stop."
            )
        elif self.divergence_threshold is not None and self._op(-current, -self.divergence_threshold):
            should_stop = True
            self.stopping_reason = EarlyStoppingReason.DIVERGENCE_THRESHOLD
            reason = (
                "Divergence threshold reached:"
                f" {self.monitor} = {float(current)} {self.order_dict[self.mode]} {self.divergence_threshold}."
                " Signaling Trainer to stop."
            )
        elif self._op(current - self.min_delta, self.best_score):
            should_stop = False
            reason = self._improvement_message(current)
            self.best_score = current
            self.wait_count = 0
        else:
            self.wait_count += 1
            if self.wait_count >= self.patience:
                should_stop = True
                self.stopping_reason = EarlyStoppingReason.PATIENCE_EXHAUSTED
                reason = (
                    f"Monitored metric {self.monitor} did not improve in the last {self.wait_count} records."
                    f" Best score: {float(self.best_score):.3f}. Signaling Trainer to stop."
                )

        return should_stop, reason

    def _op(self, a: Any, b: Any) -> bool:
        # monitor_op on 0-d float32 arrays (a Python float is taken as float32, as torch takes it)
        return bool(self.monitor_op(a, b).item())

    def _improvement_message(self, current: mx.array) -> str:
        """Formats a log message that informs the user about an improvement in the monitored score."""
        if bool(mx.isfinite(self.best_score).item()):
            msg = (
                f"Metric {self.monitor} improved by {abs(float(self.best_score - current)):.3f} >="
                f" min_delta = {abs(self.min_delta)}. New best score: {float(current):.3f}"
            )
        else:
            msg = f"Metric {self.monitor} improved. New best score: {float(current):.3f}"
        return msg

    @staticmethod
    def _log_info(trainer: Any, message: str, log_rank_zero_only: bool) -> None:
        rank = trainer.global_rank if trainer.world_size > 1 else None
        if rank is not None:
            message = f"[rank: {rank}] {message}"  # lightning_utilities' rank_prefixed_message
        if rank is None or not log_rank_zero_only or rank == 0:
            log.info(message)


class LearningRateMonitor(Callback):
    r"""Log the learning rate of each optimiser: Lightning's ``LearningRateMonitor``
    (lightning/pytorch/callbacks/lr_monitor.py), same arguments, names and moments.

    Names: ``"lr-" + type(optimizer).__name__`` (``lr-SGD``, ``lr-Adam``), a second optimiser of the same
    class ``lr-Adam-1``, as Lightning names an optimiser without a scheduler. An MLX optimiser has no param
    groups; an ``mlx.optimizers.MultiOptimizer``'s parts stand for them, named as Lightning names several
    param groups: ``lr-MultiOptimizer/pg1``, ``lr-MultiOptimizer/pg2``... (a single part: no suffix).

    Moments: at ``on_train_batch_start`` when ``trainer.should_update_logs`` (Lightning's
    ``trainer._logger_connector.should_update_logs``) unless ``logging_interval="epoch"``, and at
    ``on_train_epoch_start`` unless ``logging_interval="step"``; the step is ``trainer.global_step``
    (Lightning's ``_batches_that_stepped``, the same count for one optimiser). MLX schedules live inside the
    optimiser, so with ``logging_interval=None`` every optimiser is logged at both moments, as Lightning logs
    an optimiser that has no scheduler.

    Values: the optimiser's ``learning_rate`` (the schedule's current value) as a Python float of the
    float32 MLX holds; momentum: ``betas[0]`` if the optimiser has ``betas``, else its ``momentum``, else 0;
    weight decay: its ``weight_decay``, else 0 (torch optimisers all have one; Adam in MLX has none).
    """

    def __init__(
        self,
        logging_interval: Optional[Literal["step", "epoch"]] = None,
        log_momentum: bool = False,
        log_weight_decay: bool = False,
    ) -> None:
        if logging_interval not in (None, "step", "epoch"):
            raise MisconfigurationException("logging_interval should be `step` or `epoch` or `None`.")

        self.logging_interval = logging_interval
        self.log_momentum = log_momentum
        self.log_weight_decay = log_weight_decay

        self.lrs: dict[str, list[float]] = {}
        self.last_momentum_values: dict[str, Optional[float]] = {}
        self.last_weight_decay_values: dict[str, Optional[float]] = {}

    @staticmethod
    def _param_groups(optimizer: Any) -> list[Any]:
        """The parts named like torch param groups: a MultiOptimizer's optimisers, else the optimiser itself."""
        parts = getattr(optimizer, "optimizers", None)
        return list(parts) if isinstance(parts, (list, tuple)) and parts else [optimizer]

    def on_train_start(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        """Find a unique name for each optimiser (lr_monitor.py); raises without a logger."""
        if not trainer.loggers:
            raise MisconfigurationException(
                "Cannot use `LearningRateMonitor` callback with `Trainer` that has no logger."
            )

        if self.log_momentum:

            def _check_no_key(key: str) -> bool:
                return any(not hasattr(g, key) for opt in trainer.optimizers for g in self._param_groups(opt))

            if _check_no_key("momentum") and _check_no_key("betas"):
                warnings.warn(
                    "You have set log_momentum=True, but some optimizers do not"
                    " have momentum. This will log a value 0 for the momentum.",
                    RuntimeWarning,
                    stacklevel=2,
                )

        names, _ = self._find_names_from_optimizers(trainer.optimizers, [], defaultdict(int))
        names_flatten = [name for group in names for name in group]
        self.lrs = {name: [] for name in names_flatten}
        self.last_momentum_values = {name + "-momentum": None for name in names_flatten}
        self.last_weight_decay_values = {name + "-weight_decay": None for name in names_flatten}

    def on_train_batch_start(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        if not trainer.should_update_logs:
            return

        if self.logging_interval != "epoch":
            latest_stat = self._extract_stats(trainer)
            if latest_stat:
                for logger in trainer.loggers:
                    logger.log_metrics(latest_stat, step=trainer.global_step)

    def on_train_epoch_start(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        if self.logging_interval != "step":
            latest_stat = self._extract_stats(trainer)
            if latest_stat:
                for logger in trainer.loggers:
                    logger.log_metrics(latest_stat, step=trainer.global_step)

    def _extract_stats(self, trainer: Any) -> dict[str, float]:
        # Lightning's scheduler part is empty here (no scheduler objects), so the interval does not filter
        optimizer_hparam_keys, optimizers = self._find_names_from_optimizers(trainer.optimizers, [], defaultdict(int))
        self._remap_keys(optimizer_hparam_keys)

        latest_stat: dict[str, float] = {}
        for opt, names in zip(optimizers, optimizer_hparam_keys):
            latest_stat.update(self._get_optimizer_stats(opt, names))

        # as Lightning, the values go into callback_metrics too (0-d float32, as its others)
        trainer.callback_metrics.update(
            {name: mx.array(value, dtype=mx.float32) for name, value in latest_stat.items()}
        )
        return latest_stat

    def _get_optimizer_stats(self, optimizer: Any, names: list[str]) -> dict[str, float]:
        stats: dict[str, float] = {}
        for group, name in zip(self._param_groups(optimizer), names):
            stats.update(self._extract_lr(group, name))
            stats.update(self._extract_momentum(group, f"{name}-momentum"))
            stats.update(self._extract_weight_decay(group, f"{name}-weight_decay"))
        return stats

    def _extract_lr(self, group: Any, name: str) -> dict[str, float]:
        from cifar_mlx_adapter.lightning.trainer import upcoming_learning_rate

        lr = float(upcoming_learning_rate(group))  # the rate of the step about to run, as torch's param group holds
        self.lrs.setdefault(name, []).append(lr)
        return {name: lr}

    def _remap_keys(self, names: list[list[str]], token: str = "/pg1") -> None:
        """Remap the keys if the param groups of an optimiser increased (lr_monitor.py)."""
        for group_new_names in names:
            for new_name in group_new_names:
                old_name = new_name.replace(token, "")
                if token in new_name and old_name in self.lrs:
                    self.lrs[new_name] = self.lrs.pop(old_name)
                elif new_name not in self.lrs:
                    self.lrs[new_name] = []

    def _extract_momentum(self, group: Any, name: str) -> dict[str, float]:
        if not self.log_momentum:
            return {}
        betas = getattr(group, "betas", None)
        momentum = float(betas[0]) if betas is not None else float(getattr(group, "momentum", 0))
        self.last_momentum_values[name] = momentum
        return {name: momentum}

    def _extract_weight_decay(self, group: Any, name: str) -> dict[str, float]:
        if not self.log_weight_decay:
            return {}
        weight_decay = float(getattr(group, "weight_decay", 0.0))
        self.last_weight_decay_values[name] = weight_decay
        return {name: weight_decay}

    def _add_prefix(self, name: str, optimizer_cls: type, seen_optimizer_types: defaultdict[type, int]) -> str:
        if optimizer_cls not in seen_optimizer_types:
            return name
        count = seen_optimizer_types[optimizer_cls]
        return name + f"-{count - 1}" if count > 1 else name

    @staticmethod
    def _add_suffix(name: str, param_groups: list[Any], param_group_index: int) -> str:
        # torch param groups may carry a "name"; MLX parts have none, so Lightning's default names apply
        if len(param_groups) > 1:
            return f"{name}/pg{param_group_index + 1}"
        return name

    def _find_names_from_optimizers(
        self, optimizers: list[Any], seen_optimizers: list[Any], seen_optimizer_types: defaultdict[type, int]
    ) -> tuple[list[list[str]], list[Any]]:
        names = []
        optimizers_without_scheduler = []

        for optimizer in optimizers:
            # a wrapper that holds the optimiser as `.optimizer` is looked through (Lightning: DeepSpeed's)
            optimizer = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer
            if optimizer in seen_optimizers:
                continue

            name = "lr-" + optimizer.__class__.__name__
            seen_optimizers.append(optimizer)
            optimizer_cls = type(optimizer)
            seen_optimizer_types[optimizer_cls] += 1
            groups = self._param_groups(optimizer)
            name = self._add_prefix(name, optimizer_cls, seen_optimizer_types)
            names.append([self._add_suffix(name, groups, i) for i in range(len(groups))])
            optimizers_without_scheduler.append(optimizer)

        return names, optimizers_without_scheduler
