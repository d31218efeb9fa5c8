"""MLXTrainer: the run lifecycle's trainer. It is the general trainer
(``cifar_mlx_adapter.lightning.MLXTrainer``, Lightning's ``Trainer`` in MLX) with a run's parts.

Training is the general trainer's: its epoch and batch loop, its compiled step (the model's,
the optimiser's and the random state as inputs and outputs), its hooks and their order, its
precision settings and its processes. What a run adds, here and in ``_RunLoop``:

- the length in epochs, which may be fractional: ``max_steps`` is
  ``core.recipes.total_steps(max_epochs, batches per epoch)``, the count torch's side makes;
- validation at each epoch's end counted as the torch path counts it: a confusion matrix and a
  float64 cross-entropy sum, added over the processes, so every image counts once;
- ``metrics.csv`` in the run folder (``RunMetrics``, the rows of Lightning's CSVLogger);
- ``checkpoints/last.npz`` at each epoch's end, one file written atomically with the run's
  metadata, which ``fit(ckpt_path=...)`` resumes from;
- the first step whose loss was not finite, named; the train and validation seconds over
  every segment of a resumed run; rank 0's weights given to every rank at fit start and
  before each evaluation.

With a group of several processes (``mx.distributed``, started by ``mlx.launch``) it trains
data-parallel, as Lightning's DDP: each process takes its rank's share of every epoch (the
core's per-rank plan, the one torch's DDP follows), gradients are averaged over the processes
inside the compiled step, evaluation counts every image once over all processes, and rank 0
alone writes metrics.csv and checkpoints.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from cifar_lightning.core import metrics
from cifar_lightning.core.errors import NonFiniteLossError, non_finite_message, non_finite_weight_message
from cifar_lightning.core.recipes import total_steps
from cifar_lightning.core.run.folder import RunPaths
from cifar_mlx_adapter.data import MLXData, core_data
from cifar_mlx_adapter.distributed import broadcast_arrays, float64_words, gather_rows, words_float64
from cifar_mlx_adapter.lightning import callbacks as lightning_callbacks
from cifar_mlx_adapter.lightning.data import CIFARBatches, length_of, limit_batches
from cifar_mlx_adapter.lightning.loggers import Logger
from cifar_mlx_adapter.lightning.module import logging_to
from cifar_mlx_adapter.lightning.precision import evaluation_precision
from cifar_mlx_adapter.lightning.state import module_modes, restore_modes, set_random_key  # noqa: F401 (re-exported)
from cifar_mlx_adapter.lightning.trainer import MLXTrainer as GeneralTrainer
from cifar_mlx_adapter.lightning.trainer import print_figures
from cifar_mlx_adapter.weights import load_weights, mlx_state


def _numpy(array: mx.array) -> np.ndarray:
    """`array` as numpy; bfloat16, which numpy lacks, as float32 (exactly)."""
    return np.array(array.astype(mx.float32) if array.dtype == mx.bfloat16 else array)


@contextmanager
def hook_logs(module, fx: str):
    """The values `module` logs (``self.log``) while hook `fx` runs: a dict filled by name, the
    last value of a name kept. The run trainer's evaluation gives its steps' logs here and
    leaves them unread: it counts the figures itself, from the logits."""
    logs: dict[str, mx.array] = {}

    def sink(hook, name, value, **options):
        logs[name] = value

    with logging_to(module, fx, sink):
        yield logs


class Callback:
    """The run trainer's short callbacks: five hooks, called with (trainer, module) or
    (trainer, module, batch_idx); override the ones you need. ``on_fit_start`` comes once the
    module's own ``on_fit_start`` has run (the fast net's whitening is set) and every process
    holds rank 0's weights: the general trainer's ``on_train_start``. Lightning's callbacks
    (``cifar_mlx_adapter.lightning.Callback``, Lightning's hooks and signatures) work as well.
    What ``state_dict`` returns (arrays) and ``meta_state`` returns (plain JSON values) is kept
    in every checkpoint under the class's name and given back on resume."""

    def on_fit_start(self, trainer, module): ...
    def on_train_epoch_start(self, trainer, module): ...
    def on_train_batch_end(self, trainer, module, batch_idx): ...
    def on_train_epoch_end(self, trainer, module): ...
    def on_fit_end(self, trainer, module): ...
    def state_dict(self) -> dict[str, mx.array]:
        return {}

    def load_state_dict(self, state: dict[str, mx.array]) -> None: ...

    def meta_state(self) -> dict | None:
        """Plain JSON values a checkpoint keeps in its meta for this callback (None: nothing)."""
        return None

    def load_meta_state(self, state: dict) -> None: ...


class BasePredictionWriter(Callback):
    """As Lightning's ``BasePredictionWriter`` (epoch interval): ``MLXTrainer.predict`` hands
    every batch's prediction to ``write_on_epoch_end`` once all are made."""

    def write_on_epoch_end(self, trainer, module, predictions: list, batch_indices: list) -> None:
        raise NotImplementedError


class _ShortHooks(lightning_callbacks.Callback):
    """A run ``Callback`` called from the general trainer's hooks."""

    def __init__(self, callback: Callback):
        self.callback = callback

    @property
    def state_key(self) -> str:
        return type(self.callback).__qualname__

    def on_train_start(self, trainer, pl_module):
        self.callback.on_fit_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer, pl_module):
        self.callback.on_train_epoch_start(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.callback.on_train_batch_end(trainer, pl_module, batch_idx)

    def on_train_epoch_end(self, trainer, pl_module):
        self.callback.on_train_epoch_end(trainer, pl_module)

    def on_fit_end(self, trainer, pl_module):
        self.callback.on_fit_end(trainer, pl_module)


class RunMetrics(Logger):
    """A run folder's ``metrics.csv``, with the rows of Lightning's CSVLogger: ``epoch``,
    ``step`` (the 0-based index of the optimizer step the row belongs to: a training row the
    step just taken, an epoch row the epoch's last step, the test row the steps taken), the
    logged names, the columns in sorted order. Rank 0 writes it (`write`); every rank keeps
    the rows. The file is rewritten whole at each row, so a new column gets its header."""

    def __init__(self, path: Path, write: bool = True):
        self.path, self.write, self.rows = Path(path), write, []

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.log_row({**metrics, "step": step})

    def log_row(self, row: dict) -> None:
        self.rows.append(row)
        if not self.write:
            return
        keys = sorted({k for r in self.rows for k in r})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, keys)
            writer.writeheader()
            writer.writerows(self.rows)

    def keep_before(self, step: int) -> None:
        """Take up the rows already in the file of the steps before `step` (those a checkpoint
        of `step` steps covers): a resumed run goes on with its earlier segments' rows."""
        if self.path.is_file():
            with open(self.path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if r.get("step") and int(r["step"]) < step]


class _RunLoop(lightning_callbacks.Callback):
    """The run's parts at the general trainer's hooks (the first of its callbacks): the run's
    data for the module's ``on_fit_start``, rank 0's weights on every rank, the train clock,
    the first non-finite loss, and validation at each epoch's end."""

    def on_fit_start(self, trainer, pl_module):
        # the general trainer was handed the training batches: the module (the fast net's
        # whitening) reads the run's data where Lightning's modules find it
        trainer.datamodule = trainer._run_data

    def on_train_start(self, trainer, pl_module):
        trainer._sync_model(pl_module)  # every rank starts from rank 0's weights
        if trainer.is_global_zero:
            Path(trainer.default_root_dir).mkdir(parents=True, exist_ok=True)
        trainer._fit_started, trainer._segment_validation = time.perf_counter(), 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        # the first step whose loss is not finite, -1 while none is: kept on the device, so the
        # host still waits only at logged steps, yet the error names the step where it began
        self.first_bad, self.loss = mx.array(-1, dtype=mx.int32), None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.loss = outputs["loss"]
        step = trainer.global_step - 1  # the step just taken, 0-based
        self.first_bad = mx.where((self.first_bad < 0) & ~mx.isfinite(self.loss), step, self.first_bad)
        if trainer.global_step % trainer.log_every_n_steps == 0 or trainer.global_step == trainer.total_steps:
            trainer._check_finite(self.first_bad, self.loss)

    def on_train_epoch_end(self, trainer, pl_module):
        trainer._check_finite(self.first_bad, self.loss)
        if trainer.group is not None:  # every rank runs its pending exchanges (the last steps') now
            mx.eval(pl_module.state, trainer.optimizer.state)
        if trainer.limit_val_batches == 0:  # a stopped run is validated too, as Lightning validates when it stops
            return
        val = trainer._timed_validation(pl_module, trainer._run_data)
        figures = {k: mx.array(v, dtype=mx.float32) for k, v in val.items()}
        trainer._callback_metrics.update(figures)
        trainer._progress_bar_metrics.update(figures)  # the epoch's bar shows them, as Lightning's
        # as Lightning's CSVLogger: the validation row, then (the general trainer's) the epoch's row
        trainer.run_metrics.log_row({"epoch": trainer.current_epoch, "step": trainer.global_step - 1, **val})


class _RunCheckpoint(lightning_callbacks.Callback):
    """``checkpoints/last.npz`` at each epoch's end (the last of the callbacks: after the others'
    epoch-end hooks, as their state is saved with it)."""

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.enable_checkpointing:
            trainer.save_checkpoint(RunPaths(trainer.default_root_dir).checkpoint("last", ".npz"), pl_module)


class MLXTrainer(GeneralTrainer):
    """The run lifecycle's trainer for an ``MLXClassifier``: fit, validate, test, predict.

    Args:
        max_epochs: training length in epochs, positive and finite (ValueError otherwise), may be
            fractional: the run makes ``recipes.total_steps(max_epochs, batches per epoch)``
            optimizer steps (the general trainer's ``max_steps``), the count torch's side
            makes, and the schedule spans exactly those.
        callbacks: run ``Callback`` objects, or Lightning's (``cifar_mlx_adapter.lightning.Callback``).
        default_root_dir: the run folder: ``metrics.csv`` and ``checkpoints/`` go there.
        log_every_n_steps: a training-loss row in ``metrics.csv`` every N optimizer steps.
        enable_progress_bar: the general trainer's progress bars (rank 0).
        enable_checkpointing: write ``checkpoints/last.npz`` at each epoch's end (atomically).
        limit_train_batches, limit_val_batches, limit_test_batches, limit_predict_batches:
            Lightning's meaning (None: all; an int a count; a float a fraction;
            ``limit_val_batches=0`` skips validation).
        checkpoint_meta: plain values stored in every checkpoint (the scripts store the
            run's settings, which ``--resume`` checks).
        group: the ``mx.distributed.Group`` of the processes training together (from
            ``cifar_mlx_adapter.distributed.join_processes``); None: this process alone.
        precision: Lightning's names with Lightning's meaning (the general trainer's):
            "32-true"; "bf16-mixed" and "16-mixed" keep float32 weights and optimiser state
            and compute the training step in half, "16-mixed" with torch.amp.GradScaler's
            dynamic loss scale (its state in every checkpoint); "bf16-true" and "16-true" keep
            the weights and the optimiser's state in half. ValueError in one line for another
            name or "64-true". Validation, test and predict compute in the same half
            precision, as Lightning's plugins run those steps
            (``lightning.precision.evaluation_precision``); the figures are counted from
            their logits in float64.

    Several processes (data parallel, as Lightning's DDP without SyncBatchNorm): rank r of
    N takes the r-th share of every epoch's batch plan (``CIFARData.plan(split, r, N)``,
    torch's DDP plan), so a step sees N x batch_size images; the compiled step averages
    the gradients over the processes, and a summed loss is multiplied by N first
    (``MLXClassifier.loss_scale``), so a step equals one process's step on the union of the
    N batches. BatchNorm normalises with each process's own batch statistics; its running
    statistics are rank 0's, copied to every rank before each evaluation and at fit start
    (as DDP broadcasts rank 0's buffers). ``train/loss`` values are means over the
    processes. ``validate`` and ``test`` evaluate each rank's share (every N-th image) and
    combine the counts (confusion matrices, summed float64 cross-entropies) over the
    processes, so every image counts exactly once and the figures equal one process's. Rank
    0 alone writes ``metrics.csv`` and checkpoints and shows progress bars; every rank reads
    a checkpoint it resumes from. All ranks must make the same calls in the same order; a
    rank that dies makes the others' next exchange raise RuntimeError.

    Its ``fit``, ``validate``, ``test`` and ``predict`` are the run's, not Lightning's: they take
    the run's data (not loaders) and ``validate``/``test`` return one dict of figures with the
    confusion matrix (not Lightning's list of logged dicts). For Lightning's forms use the
    general trainer, ``cifar_mlx_adapter.lightning.MLXTrainer``, which trains an
    ``MLXClassifier`` too.

    ``fit(module, datamodule, ckpt_path=None)`` takes a ``CIFARDataModule`` or the neutral
    ``CIFARData`` (then no torch is imported); batches are made on MLX's device
    (``cifar_mlx_adapter.data``). A checkpoint restores weights, optimiser state, step,
    epoch, random key, train time and what callbacks keep (``Callback.state_dict`` and
    ``meta_state``: the step clock's figures so far). A non-finite loss or weight raises
    ``NonFiniteLossError`` naming the first 0-based step whose loss was not finite and the
    last good checkpoint. As Lightning's Trainer, it never switches a submodule's mode for
    training and restores every submodule's mode after validate, test and predict.
    ``train_time_s`` (optimizer steps and per-epoch checkpoints) and ``validation_time_s``
    (validation during fit) are seconds over all segments of a resumed run, the spans
    torch's record measures.
    ``validate`` returns {"val/acc", "val/loss"}; ``test`` returns {"test/acc",
    "test/loss", "per_class_accuracy" (num_classes,), "confusion_matrix" (num_classes,
    num_classes; rows true), "test/acc_no_tta" with TTA}; accuracies are fractions in
    [0, 1] computed from the logits by ``core.metrics`` (numpy), which tests hold equal
    to the torchmetrics figures of the Lightning path.
    """

    def __init__(
        self,
        max_epochs: float = 1,
        callbacks: list | tuple = (),
        default_root_dir: str | Path = "mlx_runs",
        log_every_n_steps: int = 50,
        enable_progress_bar: bool = True,
        enable_checkpointing: bool = True,
        limit_train_batches: int | float | None = None,
        limit_val_batches: int | float | None = None,
        limit_test_batches: int | float | None = None,
        limit_predict_batches: int | float | None = None,
        checkpoint_meta: dict | None = None,
        group=None,
        precision: str = "32-true",
    ):
        if not (isinstance(max_epochs, (int, float)) and math.isfinite(max_epochs) and max_epochs > 0):
            raise ValueError(f"max_epochs must be a positive, finite number of epochs, got {max_epochs!r}")
        for cb in callbacks:
            if isinstance(cb, lightning_callbacks.ModelCheckpoint):
                raise ValueError(
                    "cifar_mlx_adapter.MLXTrainer writes the run's own checkpoints/last.npz and takes no "
                    "ModelCheckpoint; expected cifar_mlx_adapter.lightning.MLXTrainer for ModelCheckpoint"
                )
        self.run_callbacks = list(callbacks)  # as given: their state goes into the checkpoints
        hooks = [cb if isinstance(cb, lightning_callbacks.Callback) else _ShortHooks(cb) for cb in callbacks]
        writes = group is None or group.size() == 1 or group.rank() == 0
        self.run_metrics = RunMetrics(RunPaths(default_root_dir).metrics_csv, write=writes)
        super().__init__(
            max_epochs=math.ceil(max_epochs),  # set from the run's steps by fit
            log_every_n_steps=log_every_n_steps,
            enable_progress_bar=enable_progress_bar,
            enable_checkpointing=False,  # the run's own checkpoints (_RunCheckpoint), not ModelCheckpoint's
            enable_model_summary=False,
            enable_autolog_hparams=False,  # the run folder's run.json holds them
            num_sanity_val_steps=0,
            limit_train_batches=limit_train_batches,
            limit_val_batches=limit_val_batches,
            limit_test_batches=limit_test_batches,
            limit_predict_batches=limit_predict_batches,
            precision=precision,
            callbacks=[_RunLoop(), *hooks, _RunCheckpoint()],
            logger=self.run_metrics,
            default_root_dir=default_root_dir,
            group=group,
        )
        self.run_epochs = max_epochs  # may be fractional: stops after ceil(max_epochs * batches) steps
        self.enable_checkpointing = enable_checkpointing
        self.checkpoint_meta = checkpoint_meta or {}  # plain values kept in every checkpoint (the run's settings)
        # seconds, earlier segments of a resumed run included: training (steps and per-epoch
        # checkpoints) and the validation passes during fit, kept apart as in torch's record
        self.train_time_s = 0.0
        self.validation_time_s = 0.0
        self._fit_started: float | None = None  # perf_counter() when this segment's training began
        self._segment_validation = 0.0  # validation seconds within this segment
        self.total_steps = 0
        self.steps_per_epoch = 0  # optimizer steps per training epoch, set by fit
        self.step_compiles = False  # this epoch's first step compiles (the first, or the trainables changed)
        self.last_checkpoint: Path | None = None
        self._mlx_data: MLXData | None = None
        self._run_data = None  # the data of the running fit

    @property
    def optimizer(self):
        """The optimiser ``module.configure_optimizers()`` made for the last fit (None before)."""
        return self.optimizers[0] if self.optimizers else None

    @property
    def metrics_rows(self) -> list[dict]:
        """The rows of metrics.csv so far."""
        return self.run_metrics.rows

    def _warn_of_slow_blas(self) -> None:
        pass  # the run's backend says so itself, once, before the run starts

    # ---------------------------------------------------------------- training
    def _compile_step(self, module, optimizer):
        """The compiled step fit trains `module` with (the general trainer's ``_make_step``: the
        module's loss and gradient in the run's precision, the gradient averaged over the
        processes, the loss scaled and a non-finite step skipped under 16-mixed, the
        optimiser's update), as ``step(images, labels, batch_idx=0) -> (loss, {name:
        value})``, float32 scalars."""
        from cifar_mlx_adapter.lightning.precision import DynamicLossScaler

        self.optimizers, self._step = [optimizer], None
        if self._scaler is None and self.precision.scales_loss:
            self._scaler = DynamicLossScaler()
        self._make_step(module)
        step = self._step

        def run(images, labels, batch_idx: int = 0):
            loss, logs, _ = step((images, labels), batch_idx)
            return loss, {k: v.astype(mx.float32) for k, v in logs.items()}

        return run

    def _data(self, datamodule) -> MLXData:
        """The MLX-side data of a CIFARDataModule or CIFARData, uploaded once per trainer."""
        data = core_data(datamodule)
        if self._mlx_data is None or self._mlx_data.data is not data:
            data.prepare_data()  # downloads the files first where that is allowed
            self._mlx_data = MLXData(data)
        return self._mlx_data

    def fit(self, module, datamodule, ckpt_path: str | Path | None = None) -> None:
        """Train `module` on `datamodule`'s training split for the run's steps, from
        `ckpt_path` (a checkpoint of this run) when given. TypeError when `ckpt_path` is no
        path (Lightning's positional ``fit(model, train, val)`` is the general trainer's)."""
        if ckpt_path is not None and not isinstance(ckpt_path, (str, os.PathLike)):
            raise TypeError(
                f"ckpt_path must be a checkpoint's path, got {type(ckpt_path).__name__}: this trainer's fit takes "
                "(module, data, ckpt_path=None); cifar_mlx_adapter.lightning.MLXTrainer takes Lightning's "
                "fit(model, train_dataloaders, val_dataloaders)"
            )
        self._run_data = datamodule
        loader = CIFARBatches(self._data(datamodule).loader("train", self.global_rank, self.world_size))
        per_epoch = self.steps_per_epoch = int(limit_batches(len(loader), self.limit_train_batches, "train"))
        self.total_steps = total_steps(self.run_epochs, per_epoch)
        if self.total_steps < 1:
            raise ValueError(f"the trainer plans {self.total_steps} optimizer steps: nothing to train")
        self.max_steps, self.max_epochs = self.total_steps, math.ceil(self.total_steps / per_epoch)
        super().fit(module, train_dataloaders=loader, ckpt_path=ckpt_path)
        self.train_time_s = self.elapsed_train_time()
        self.validation_time_s += self._segment_validation
        self._fit_started, self._segment_validation = None, 0.0

    def _sync_model(self, module) -> None:
        """Copy rank 0's model state (weights and BatchNorm statistics) to every rank."""
        if self.group is not None:
            state = dict(tree_flatten(module.model.parameters()))
            module.model.update(tree_unflatten(list(broadcast_arrays(state, self.group).items())))

    def _timed_validation(self, module, datamodule) -> dict:
        start = time.perf_counter()
        try:
            return self.validate(module, datamodule, verbose=False)
        finally:
            self._segment_validation += time.perf_counter() - start

    def elapsed_train_time(self) -> float:
        """Seconds of training so far (optimizer steps and per-epoch checkpoints, validation
        excluded): earlier segments (restored from a checkpoint) plus this one."""
        running = 0.0
        if self._fit_started is not None:
            running = time.perf_counter() - self._fit_started - self._segment_validation
        return self.train_time_s + running

    def elapsed_validation_time(self) -> float:
        """Seconds of validation during fit, all segments."""
        return self.validation_time_s + self._segment_validation

    def _check_finite(self, first_bad: mx.array, loss: mx.array | None) -> None:
        """Raise NonFiniteLossError naming the first 0-based step whose loss was not finite."""
        bad = int(first_bad.item())
        if bad >= 0:
            value = float(loss.item()) if loss is not None else math.nan
            raise NonFiniteLossError(non_finite_message(value, bad, self.last_checkpoint))

    # -------------------------------------------------------------- evaluation
    def _logits_of(self, module, loader, hook, limit, desc: str, fx: str) -> tuple[np.ndarray, np.ndarray]:
        """Run `hook` over the batches of `loader` that `limit` allows (Lightning's
        ``limit_*_batches``) in eval mode, with a progress bar; returns (logits float32 (N, C),
        labels int64 (N,)) as numpy. N may be 0: a rank whose share of a small split is empty
        (fewer images than processes) still takes part in the exchange of counts."""
        outputs = [np.zeros((0, module.hparams["num_classes"]), np.float32)]
        targets = [np.zeros(0, np.int64)]
        for output, labels in self._eval_batches(module, loader, hook, limit, desc, fx):
            outputs.append(np.array(output.astype(mx.float32)))  # half precision's logits (numpy has no bfloat16)
            targets.append(np.array(labels, dtype=np.int64))
        return np.concatenate(outputs), np.concatenate(targets)

    def _eval_batches(self, module, loader, hook, limit, desc: str, fx: str):
        """Yield (hook((images, labels), batch_idx), labels) for the batches `limit` allows, in
        eval mode, with a progress bar; every submodule's mode is restored after. `fx`: the
        module hook `hook` runs ("validation_step", "test_step", "predict_step"), whose
        logging defaults ``self.log`` applies."""
        from tqdm import tqdm

        split = fx.removesuffix("_step").replace("validation", "val")
        batches = limit_batches(length_of(loader), limit, split)
        modes = module_modes(module.model)
        module.model.eval()
        try:
            total = None if batches == math.inf else batches
            with tqdm(total=total, desc=desc, disable=not self._shows_bars, leave=False) as bar:
                for batch_idx, batch in enumerate(loader):
                    if batch_idx >= batches:
                        break
                    # (images, labels), or images alone (a prediction loader of the user's images)
                    labels = batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 else None
                    # what the step logs is not read: the figures are counted from its logits
                    with hook_logs(module, fx), evaluation_precision(module, self.precision) as cast:
                        output = hook(cast(batch), batch_idx)
                    yield output, labels
                    bar.update(1)
        finally:
            restore_modes(modes)

    @property
    def _shows_bars(self) -> bool:
        return self.enable_progress_bar and self.is_global_zero

    def _counts(self, runs: list[tuple[np.ndarray, np.ndarray]], k: int) -> list[tuple[np.ndarray, float]]:
        """(confusion matrix int64 (k, k), summed cross-entropy float64) of each (logits,
        labels) pair, summed over the processes' shares (rank order) when there are several."""
        sums = [metrics.evaluation_sums(logits, labels, k) for logits, labels in runs]
        if self.group is None:
            return sums
        row = np.concatenate(
            [np.concatenate([m.ravel().astype(np.uint32), float64_words(np.array([ce]))]) for m, ce in sums]
        )
        ranks = gather_rows(row, self.group)
        out, width = [], k * k + 2
        for i in range(len(sums)):
            part = ranks[:, i * width : (i + 1) * width]
            confusion = part[:, : k * k].astype(np.int64).sum(axis=0).reshape(k, k)
            ce = 0.0
            for words in part[:, k * k :]:
                ce += float(words_float64(words)[0])
            out.append((confusion, ce))
        return out

    def validate(self, module, datamodule, verbose: bool = True) -> dict:
        """{"val/acc", "val/loss"} over the validation split (the test set when val_size is 0),
        every image counted once over all processes."""
        module.trainer = self
        if self.limit_val_batches == 0:  # validation switched off: nothing to measure, as in Lightning
            return {}
        self._sync_model(module)
        loader = self._data(datamodule).loader("val", self.global_rank, self.world_size)
        logits, labels = self._logits_of(
            module, loader, module.validation_step, self.limit_val_batches, "Validation", "validation_step"
        )
        [(confusion, ce)] = self._counts([(logits, labels)], logits.shape[1])
        out = {"val/acc": metrics.accuracy_of(confusion), "val/loss": ce / max(confusion.sum(), 1)}
        if verbose and self.is_global_zero:
            print_figures(out)
        return out

    def test(self, module, datamodule, verbose: bool = True) -> dict:
        """Overall and per-class accuracy, loss and confusion matrix (``core.metrics``, equal
        to the torchmetrics figures of the Lightning path), every test image counted once
        over all processes."""
        module.trainer = self
        self._sync_model(module)
        loader = self._data(datamodule).loader("test", self.global_rank, self.world_size)
        logits, labels = self._logits_of(
            module, loader, module.test_step, self.limit_test_batches, "Testing", "test_step"
        )
        k = logits.shape[1]
        runs = [(logits, labels)]
        if module.recipe.tta:
            plain, _ = self._logits_of(
                module, loader, lambda b, i: module(b[0]), self.limit_test_batches, "Testing without TTA", "test_step"
            )
            runs.append((plain, labels))
        counts = self._counts(runs, k)
        confusion, ce = counts[0]
        out = {
            "test/acc": metrics.accuracy_of(confusion),
            "test/loss": ce / max(confusion.sum(), 1),
            "per_class_accuracy": metrics.per_class_accuracy_of(confusion),
            "confusion_matrix": confusion,
        }
        if module.recipe.tta:
            out["test/acc_no_tta"] = metrics.accuracy_of(counts[1][0])
        figures = {k: v for k, v in out.items() if k.startswith("test/")}
        # metrics.csv's test row, as Lightning logs test_step's figures (epoch and step as they stand)
        self.run_metrics.log_row({"epoch": self.current_epoch, "step": self.global_step, **figures})
        if verbose and self.is_global_zero:
            print_figures(figures)
        return out

    def predict(self, module, datamodule=None, dataloaders=None) -> list[mx.array]:
        """``module.predict_step`` of each batch (class probabilities float32 (B, num_classes)),
        as Lightning's ``Trainer.predict``: the batches of `dataloaders` (an iterable of
        normalised NHWC image batches, or of (images, labels) pairs, e.g.
        ``cifar_mlx_adapter.predict.PredictLoader``), else the test split of `datamodule`;
        the first ``limit_predict_batches`` only when set, in eval mode with a progress bar.
        Each ``BasePredictionWriter`` among the callbacks gets the list at the end
        (``write_on_epoch_end``), as Lightning's writers do with ``write_interval="epoch"``."""
        if (datamodule is None) == (dataloaders is None):
            raise ValueError("predict takes either a datamodule or dataloaders")
        module.trainer = self
        loader = self._data(datamodule).loader("test") if dataloaders is None else dataloaders
        predictions = []
        for prediction, _ in self._eval_batches(
            module, loader, module.predict_step, self.limit_predict_batches, "Predicting", "predict_step"
        ):
            mx.eval(prediction)  # computed batch by batch, as the bar shows
            predictions.append(prediction)
        for cb in self.run_callbacks:
            if isinstance(cb, BasePredictionWriter):
                cb.write_on_epoch_end(self, module, predictions, [])
        return predictions

    # ------------------------------------------------------------- checkpoints
    def save_checkpoint(self, path: str | Path, module) -> Path:
        """model, optimiser state, step, epoch and recipe in one .npz, written atomically
        (by rank 0 alone; every rank checks the weights and returns the path). Its meta's
        ``epoch`` is the epoch a resume starts with."""
        path = Path(path)
        state = mlx_state(module.model)
        for name, value in state.items():  # the last step can break the weights after its loss was checked
            if mx.issubdtype(value.dtype, mx.floating) and not mx.all(mx.isfinite(value)).item():
                raise NonFiniteLossError(non_finite_weight_message(name, self.global_step - 1, self.last_checkpoint))
        if not self.is_global_zero:
            self.last_checkpoint = path
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        live = {f"model.{k}": v for k, v in state.items()}
        if self.optimizer is not None:
            live.update({f"optimizer.{k}": v for k, v in tree_flatten(self.optimizer.state)})
        arrays = {k: _numpy(v) for k, v in live.items()}
        for cb in self.run_callbacks:
            arrays.update({f"callback.{type(cb).__name__}.{k}": np.array(v) for k, v in cb.state_dict().items()})
        arrays["random.key"] = np.array(mx.random.state[0])  # dropout continues the same sequence on resume
        meta = {
            "global_step": self.global_step,
            # saved in an epoch's end hooks the epoch is done: a resume starts the next one
            "epoch": self.current_epoch + (1 if self._epoch_ended else 0),
            "total_steps": self.total_steps,
            "hparams": module.hparams,
            "recipe": module.recipe.to_dict(),
            "train_time_s": self.elapsed_train_time(),
            "validation_time_s": self.elapsed_validation_time(),
            **self.checkpoint_meta,
        }
        if self._scaler is not None:
            meta["loss_scaler"] = self._scaler.state_dict()  # torch.amp.GradScaler.state_dict()'s keys
        bfloat16 = sorted(k for k, v in live.items() if v.dtype == mx.bfloat16)
        if bfloat16:  # saved as float32 (numpy has no bfloat16): named, so a resume casts back exactly these
            meta["bfloat16"] = bfloat16
        held = {type(cb).__name__: getattr(cb, "meta_state", lambda: None)() for cb in self.run_callbacks}
        held = {name: state for name, state in held.items() if state is not None}
        if held:
            meta["callbacks"] = held
        arrays["meta"] = np.array(json.dumps(meta))
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        self.last_checkpoint = path
        return path

    def _resolve_checkpoint(self, ckpt_path):
        """The .npz checkpoint at `ckpt_path` as {"path", "arrays", "meta"} (None: none given).
        FileNotFoundError when there is no such file; ValueError when it belongs to a run of
        another length."""
        if not ckpt_path:
            return None
        path = Path(ckpt_path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("meta")))
        if meta["total_steps"] != self.total_steps:
            raise ValueError(
                f"checkpoint {path} belongs to a run of {meta['total_steps']} steps, "
                f"this one has {self.total_steps}: resume with the same epochs and batch size"
            )
        return {"path": path, "arrays": arrays, "meta": meta}

    def _restore_module_and_callbacks(self, model, checkpoint: dict) -> None:
        arrays, meta = checkpoint["arrays"], checkpoint["meta"]
        weights = {k[6:]: mx.array(v) for k, v in arrays.items() if k.startswith("model.")}
        load_weights(model.model, weights, what=str(checkpoint["path"]))
        for cb in self.run_callbacks:
            prefix = f"callback.{type(cb).__name__}."
            state = {k[len(prefix) :]: mx.array(v) for k, v in arrays.items() if k.startswith(prefix)}
            if state or isinstance(cb, Callback):
                cb.load_state_dict(state)
            if type(cb).__name__ in meta.get("callbacks", {}):
                cb.load_meta_state(meta["callbacks"][type(cb).__name__])

    def _restore_training_state(self, checkpoint: dict) -> None:
        arrays, meta, path = checkpoint["arrays"], checkpoint["meta"], checkpoint["path"]
        # bfloat16 state (bf16-true) was saved as float32, exactly: back to bfloat16, and only that
        # (an optimiser's float32 scalars, such as a constant momentum, stay float32)
        bfloat16 = set(meta.get("bfloat16", ()))
        opt = [
            (k[10:], mx.array(v).astype(mx.bfloat16) if k in bfloat16 else mx.array(v))
            for k, v in arrays.items()
            if k.startswith("optimizer.")
        ]
        self.optimizer.state = tree_unflatten(opt)
        if self._scaler is not None and "loss_scaler" in meta:
            self._scaler.load_state_dict(meta["loss_scaler"])
        if "random.key" in arrays:
            set_random_key(arrays["random.key"])
        self.global_step, self.current_epoch = meta["global_step"], meta["epoch"]
        self._batches_that_stepped = self._total_batch_idx = self.global_step
        self._resume_batches = 0  # checkpoints are made at epochs' ends
        self.train_time_s = meta.get("train_time_s", 0.0)
        self.validation_time_s = meta.get("validation_time_s", 0.0)
        self.last_checkpoint = path
        self.run_metrics.keep_before(self.global_step)  # the rows of the steps the checkpoint covers
