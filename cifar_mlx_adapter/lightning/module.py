"""MLXModule: LightningModule's contract on an ``mlx.nn.Module``.

A LightningModule is a ``torch.nn.Module`` whose parameters are those of the submodules it
holds; an MLXModule is an ``mlx.nn.Module`` in the same way. Write the same methods
(``training_step``, ``validation_step``, ``configure_optimizers``, hooks) with ``mx`` for
``torch`` and hand it to ``MLXTrainer``.

``self.log`` follows ``LightningModule.log`` (lightning/pytorch/core/module.py): the
defaults of ``on_step``/``on_epoch`` per hook are Lightning's table
(``_FxValidator.functions`` in lightning/pytorch/trainer/connectors/logger_connector/
fx_validator.py, copied in ``LOG_DEFAULTS``), a value logged both per step and per epoch
appears as ``name_step`` and ``name_epoch``, and hooks Lightning forbids logging from raise.

Inside a compiled training step (``MLXTrainer(compile=True)``, the default) ``self.log``
runs once, while MLX traces the step: the values come back from every later step as
arrays, so what is logged, and with which options, must not depend on the data.
"""

from __future__ import annotations

import inspect
import warnings
from argparse import Namespace
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from cifar_mlx_adapter.lightning.callbacks import MisconfigurationException

# hook -> (allowed on_step, allowed on_epoch, default on_step, default on_epoch); None: no logging.
# Lightning 2.6's _FxValidator.functions, the hooks MLXTrainer calls.
_STEP = ((False, True), (False, True), True, False)
_EVAL_STEP = ((False, True), (False, True), False, True)
_EPOCH = ((False,), (True,), False, True)
LOG_DEFAULTS: dict[str, tuple | None] = {
    "training_step": _STEP,
    "on_train_batch_start": _STEP,
    "on_train_batch_end": _STEP,
    "on_before_optimizer_step": _STEP,
    "validation_step": _EVAL_STEP,
    "test_step": _EVAL_STEP,
    "on_validation_batch_start": _EVAL_STEP,
    "on_validation_batch_end": _EVAL_STEP,
    "on_test_batch_start": _EVAL_STEP,
    "on_test_batch_end": _EVAL_STEP,
    "on_train_start": _EPOCH,
    "on_validation_start": _EPOCH,
    "on_test_start": _EPOCH,
    "on_train_epoch_start": _EPOCH,
    "on_train_epoch_end": _EPOCH,
    "on_validation_epoch_start": _EPOCH,
    "on_validation_epoch_end": _EPOCH,
    "on_test_epoch_start": _EPOCH,
    "on_test_epoch_end": _EPOCH,
    "predict_step": None,
    "on_fit_start": None,
    "on_fit_end": None,
    "on_train_end": None,
    "on_validation_end": None,
    "on_test_end": None,
    "configure_optimizers": None,
    "on_save_checkpoint": None,
    "on_load_checkpoint": None,
    "setup": None,
    "teardown": None,
}

REDUCE_FX = ("mean", "sum", "max", "min")


class AttributeDict(dict):
    """``self.hparams``: a dict whose keys read as attributes too (as Lightning's)."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError as err:
            raise AttributeError(f"hparams has no {key!r}: it holds {sorted(self)}") from err

    def __setattr__(self, key, value):
        self[key] = value


def log_levels(fx: str, name: str, on_step: bool | None, on_epoch: bool | None) -> tuple[bool, bool]:
    """(on_step, on_epoch) for a value logged from hook `fx`: the hook's defaults where None,
    checked against what the hook allows (MisconfigurationException otherwise, as Lightning)."""
    if fx not in LOG_DEFAULTS:
        raise MisconfigurationException(f"Logging inside `{fx}` is not supported by MLXTrainer")
    levels = LOG_DEFAULTS[fx]
    if levels is None:
        raise MisconfigurationException(f"You can't `self.log()` inside `{fx}`.")
    allowed_step, allowed_epoch, default_step, default_epoch = levels
    on_step = default_step if on_step is None else on_step
    on_epoch = default_epoch if on_epoch is None else on_epoch
    if on_step not in allowed_step:
        raise MisconfigurationException(f"You can't `self.log({name!r}, ..., on_step={on_step})` inside `{fx}`")
    if on_epoch not in allowed_epoch:
        raise MisconfigurationException(f"You can't `self.log({name!r}, ..., on_epoch={on_epoch})` inside `{fx}`")
    return on_step, on_epoch


@contextmanager
def logging_to(module, fx: str, sink):
    """While the block runs, `module`'s ``self.log`` calls count as hook `fx`'s (its logging
    defaults) and go to ``sink(fx, name, value, batch_size=None, **options)``; the hook and
    sink it had before are put back after, error or not."""
    previous = module._log_sink, module._current_fx
    object.__setattr__(module, "_log_sink", sink)
    object.__setattr__(module, "_current_fx", fx)
    try:
        yield
    finally:
        object.__setattr__(module, "_log_sink", previous[0])
        object.__setattr__(module, "_current_fx", previous[1])


class MLXModule(nn.Module):
    """LightningModule's hooks and logging on an ``mlx.nn.Module``.

    Override ``training_step(batch, batch_idx)`` (returns the loss, a scalar ``mx.array``, or a
    dict with ``"loss"``), ``configure_optimizers()`` (an ``mlx.optimizers.Optimizer``, a list
    or tuple holding one, or ``{"optimizer": opt, "lr_scheduler": schedule}`` where the
    schedule is MLX's: a callable of the step given to the optimiser as its
    ``learning_rate``), and as many of ``validation_step``, ``test_step``, ``predict_step`` and
    the hooks as you need. ``batch_idx`` in a compiled ``training_step`` is an int32
    ``mx.array`` (one trace serves every step); elsewhere it is an int.

    Attributes set by the trainer: ``trainer``, ``current_epoch``, ``global_step``;
    ``hparams`` after ``save_hyperparameters()``.
    """

    def __init__(self):
        super().__init__()
        # plain attributes outside mlx's dict of children, so they are never taken for parameters
        object.__setattr__(self, "_trainer", None)
        object.__setattr__(self, "_hparams", AttributeDict())
        object.__setattr__(self, "_log_hyperparams", False)  # True once save_hyperparameters(logger=True) ran
        object.__setattr__(self, "_current_fx", None)
        object.__setattr__(self, "_log_sink", None)

    # ------------------------------------------------------------ trainer state
    @property
    def trainer(self):
        return self._trainer

    @trainer.setter
    def trainer(self, trainer) -> None:
        object.__setattr__(self, "_trainer", trainer)

    @property
    def current_epoch(self) -> int:
        return self._trainer.current_epoch if self._trainer is not None else 0

    @property
    def global_step(self) -> int:
        return self._trainer.global_step if self._trainer is not None else 0

    @property
    def hparams(self) -> AttributeDict:
        return self._hparams

    @property
    def logger(self):
        """The trainer's first logger (None without one), as ``LightningModule.logger``."""
        return self._trainer.logger if self._trainer is not None else None

    @property
    def loggers(self) -> list:
        return self._trainer.loggers if self._trainer is not None else []

    @property
    def global_rank(self) -> int:
        return self._trainer.global_rank if self._trainer is not None else 0

    @property
    def local_rank(self) -> int:
        return self.global_rank

    @property
    def device(self):
        """MLX's default device, where the module computes (``mx.Device``)."""
        return mx.default_device()

    example_input_array = None

    def print(self, *args, **kwargs) -> None:
        """``print`` on the first process only, as ``LightningModule.print``."""
        if self.global_rank == 0:
            print(*args, **kwargs)

    def optimizers(self):
        """The optimiser the trainer made from ``configure_optimizers`` (one, as Lightning's
        automatic optimisation)."""
        if self._trainer is None or not self._trainer.optimizers:
            raise MisconfigurationException(f"{type(self).__name__} is not attached to a fitting MLXTrainer")
        return self._trainer.optimizers[0]

    def lr_schedulers(self):
        """None: an MLX schedule lives inside its optimiser (``optimizers().learning_rate``)."""
        return None

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, strict: bool = True, **kwargs):
        """A module built from a checkpoint's ``hyper_parameters`` (overridden by `kwargs`) with
        its weights, as ``LightningModule.load_from_checkpoint``. ValueError when the weights
        do not fit and `strict`."""
        from mlx.utils import tree_unflatten

        from cifar_mlx_adapter.lightning.checkpoint import load_checkpoint
        from cifar_mlx_adapter.lightning.step import array_leaves

        checkpoint = load_checkpoint(checkpoint_path)
        module = cls(**{**checkpoint.get("hyper_parameters", {}), **kwargs})
        module.on_load_checkpoint(checkpoint)
        state = checkpoint["state_dict"]
        ours = {k for k, _ in array_leaves(module.state)}
        if strict and ours != set(state):
            raise ValueError(
                f"checkpoint {checkpoint_path} does not fit {cls.__name__}: missing {sorted(ours - set(state))[:5]}, "
                f"unexpected {sorted(set(state) - ours)[:5]}"
            )
        module.update(tree_unflatten([(k, v) for k, v in state.items() if k in ours]), strict=False)
        return module

    def save_hyperparameters(self, *args, ignore: list[str] | str | None = None, logger: bool = True) -> None:
        """Keep the calling ``__init__``'s arguments (or those named in `args`, or the one dict or
        ``argparse.Namespace`` given) in ``self.hparams``, as LightningModule's
        ``save_hyperparameters``; `ignore` leaves names out; `logger`: whether the trainer's
        loggers get them (``hparams.yaml``). Only values a YAML file can hold are useful to
        loggers; submodules are best ignored."""
        object.__setattr__(self, "_log_hyperparams", logger)
        ignored = {ignore} if isinstance(ignore, str) else set(ignore or ())
        if len(args) == 1 and isinstance(args[0], (Mapping, Namespace)):
            given = vars(args[0]) if isinstance(args[0], Namespace) else dict(args[0])
            self._hparams.update({k: v for k, v in given.items() if k not in ignored})
            return
        frame = inspect.currentframe().f_back
        init_args = {k: v for k, v in frame.f_locals.items() if k not in ("self", "__class__")}
        code = frame.f_code
        names = code.co_varnames[1 : code.co_argcount + code.co_kwonlyargcount]
        values = {k: init_args[k] for k in names if k in init_args}
        if code.co_flags & inspect.CO_VARKEYWORDS:
            kwargs_name = code.co_varnames[code.co_argcount + code.co_kwonlyargcount + bool(code.co_flags & 4)]
            values.update(init_args.get(kwargs_name, {}))
        if args:
            values = {k: values[k] for k in args}
        self._hparams.update({k: v for k, v in values.items() if k not in ignored})

    # ---------------------------------------------------------------- logging
    def log(
        self,
        name: str,
        value,
        prog_bar: bool = False,
        logger: bool | None = None,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        reduce_fx: str = "mean",
        enable_graph: bool = False,
        sync_dist: bool = False,
        sync_dist_group=None,
        add_dataloader_idx: bool = True,
        batch_size: int | None = None,
        metric_attribute: str | None = None,
        rank_zero_only: bool = False,
    ) -> None:
        """Record a scalar (an ``mx.array`` of one element, or a Python number), as
        ``LightningModule.log``. Training values appear per step by default, evaluation values
        as the epoch's mean weighted by batch size (``batch_size``, else the batch's first
        array's length); ``reduce_fx`` is "mean", "sum", "max" or "min"."""
        if self._trainer is None:
            # as Lightning: a step called outside a trainer (a test of the step itself) logs nothing
            warnings.warn(
                "You are trying to `self.log()` but the `self.trainer` reference is not registered on the model "
                "yet. This is most likely because the model hasn't been passed to the `MLXTrainer`",
                stacklevel=2,
            )
            return
        if self._log_sink is None or self._current_fx is None:
            raise MisconfigurationException(
                "You are trying to `self.log()` but it is not managed by the `Trainer` control flow"
            )
        if isinstance(reduce_fx, str):
            reduce_fx = reduce_fx.lower()
        if reduce_fx not in REDUCE_FX:
            raise ValueError(f"reduce_fx must be one of {REDUCE_FX}, got {reduce_fx!r}")
        if isinstance(value, mx.array) and value.size != 1:
            raise ValueError(f"self.log({name!r}) takes a scalar, got an array of shape {tuple(value.shape)}")
        if not isinstance(value, (mx.array, int, float)):
            raise ValueError(f"self.log({name!r}) takes an mx.array or a number, got {type(value).__name__}")
        on_step, on_epoch = log_levels(self._current_fx, name, on_step, on_epoch)
        self._log_sink(
            self._current_fx,
            name,
            value,
            prog_bar=prog_bar,
            logger=True if logger is None else logger,
            on_step=on_step,
            on_epoch=on_epoch,
            reduce_fx=reduce_fx,
            sync_dist=sync_dist,
            batch_size=batch_size,
        )

    def log_dict(self, dictionary: dict[str, Any], **kwargs) -> None:
        """``self.log`` for each item, with the same options (as ``LightningModule.log_dict``)."""
        for name, value in dictionary.items():
            self.log(name, value, **kwargs)

    # ------------------------------------------------------------------ steps
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} defines no forward (or __call__)")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def training_step(self, batch, batch_idx):
        raise MisconfigurationException(f"{type(self).__name__} has no training_step: MLXTrainer.fit needs one")

    def configure_optimizers(self):
        raise MisconfigurationException(
            f"{type(self).__name__} has no configure_optimizers: MLXTrainer.fit needs an mlx optimizer"
        )

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0):
        """As Lightning's default: the module applied to the batch (its first element when a tuple)."""
        return self(batch[0] if isinstance(batch, (list, tuple)) else batch)

    # ------------------------------------------------------------------ hooks
    def setup(self, stage: str) -> None: ...
    def teardown(self, stage: str) -> None: ...
    def on_fit_start(self) -> None: ...
    def on_fit_end(self) -> None: ...
    def on_train_start(self) -> None: ...
    def on_train_end(self) -> None: ...
    def on_validation_start(self) -> None: ...
    def on_validation_end(self) -> None: ...
    def on_test_start(self) -> None: ...
    def on_test_end(self) -> None: ...
    def on_predict_start(self) -> None: ...
    def on_predict_end(self) -> None: ...
    def on_train_epoch_start(self) -> None: ...
    def on_train_epoch_end(self) -> None: ...
    def on_validation_epoch_start(self) -> None: ...
    def on_validation_epoch_end(self) -> None: ...
    def on_test_epoch_start(self) -> None: ...
    def on_test_epoch_end(self) -> None: ...
    def on_predict_epoch_start(self) -> None: ...
    def on_predict_epoch_end(self) -> None: ...
    def on_train_batch_start(self, batch, batch_idx: int): ...
    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None: ...
    def on_validation_batch_start(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_validation_batch_end(self, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_test_batch_start(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_test_batch_end(self, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_before_optimizer_step(self, optimizer) -> None: ...
    def on_save_checkpoint(self, checkpoint: dict) -> None: ...
    def on_load_checkpoint(self, checkpoint: dict) -> None: ...
