"""MLXTrainer: fit / validate / test / predict an MLXClassifier on a CIFARDataModule.

The training step is compiled once with the model's and the optimiser's state as
inputs and outputs (BatchNorm statistics are model state). The host waits on the
device only where logging needs a number (every `log_every_n_steps` and at epoch
end). Checkpoints are single .npz files written atomically at each epoch end.

With a group of several processes (``mx.distributed``, started by ``mlx.launch``) it
trains data-parallel, as Lightning's DDP: each process takes its rank's share of every
epoch (the core's per-rank plan, the one torch's DDP follows), gradients are averaged
over the processes inside the compiled step, evaluation counts every image once over
all processes, and rank 0 alone writes metrics.csv and checkpoints.
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
from cifar_mlx_adapter.lightning.module import logging_to
from cifar_mlx_adapter.lightning.precision import DynamicLossScaler, parse_precision
from cifar_mlx_adapter.lightning.state import module_modes, restore_modes, set_random_key  # noqa: F401 (re-exported)
from cifar_mlx_adapter.lightning.step import TrainingStep
from cifar_mlx_adapter.optim import base_learning_rate
from cifar_mlx_adapter.weights import load_weights, mlx_state


def _numpy(array: mx.array) -> np.ndarray:
    """`array` as numpy; bfloat16, which numpy lacks, as float32 (exactly)."""
    return np.array(array.astype(mx.float32) if array.dtype == mx.bfloat16 else array)


@contextmanager
def hook_logs(module, fx: str):
    """The values `module` logs (``self.log``) while hook `fx` runs: a dict filled by name, the
    last value of a name kept. The run lifecycle's trainer gives its evaluation steps' logs
    here and leaves them unread (it counts the figures itself); the training step's come out
    of ``TrainingStep``, which it averages per epoch."""
    logs: dict[str, mx.array] = {}

    def sink(hook, name, value, **options):
        logs[name] = value

    with logging_to(module, fx, sink):
        yield logs


class Callback:
    """Hooks an MLXTrainer calls; override the ones you need."""

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


class MLXTrainer:
    """A Lightning-like trainer for ``MLXClassifier``: fit, validate, test, predict.

    Args:
        max_epochs: training length in epochs, positive and finite (ValueError otherwise), may be
            fractional: the run makes
            ``recipes.total_steps(max_epochs, batches per epoch)`` optimizer steps, the count
            torch's side makes, and the schedule spans exactly those.
        callbacks: ``Callback`` objects (on_train_start, on_train_batch_end, ...).
        default_root_dir: where ``metrics.csv`` and ``checkpoints/`` go.
        log_every_n_steps: a training-loss row in ``metrics.csv`` every N optimizer steps.
        enable_progress_bar: tqdm bars for training, validation and test.
        enable_checkpointing: write ``checkpoints/last.npz`` at each epoch's end (atomically).
        limit_train_batches, limit_val_batches, limit_test_batches, limit_predict_batches: use
            only the first N batches (None: all; ``limit_val_batches=0`` skips validation).
        checkpoint_meta: plain values stored in every checkpoint (the scripts store the
            run's settings, which ``--resume`` checks).
        group: the ``mx.distributed.Group`` of the processes training together (from
            ``cifar_mlx_adapter.distributed.join_processes``); None: this process alone.

    Several processes (data parallel, as Lightning's DDP without SyncBatchNorm): rank r of
    N takes the r-th share of every epoch's batch plan (``CIFARData.plan(split, r, N)``,
    torch's DDP plan), so a step sees N x batch_size images; the compiled step averages
    the gradients over the processes (``nn.average_gradients``), and a summed loss is
    multiplied by N first (``MLXClassifier.loss_scale``), so a step equals one process's
    step on the union of the N batches, with the optimiser's units for N x batch_size
    images. BatchNorm normalises with each process's own batch statistics (no
    SyncBatchNorm); its running statistics are rank 0's, copied to every rank before each
    evaluation and at fit start (as DDP broadcasts rank 0's buffers). ``train/loss``
    values are means over the processes. ``validate`` and ``test`` evaluate each rank's
    share (every N-th image) and combine the counts (confusion matrices, summed float64
    cross-entropies) over the processes, so every image counts exactly once and the
    figures equal one process's. Rank 0 alone writes ``metrics.csv`` and checkpoints and
    shows progress bars; every rank reads a checkpoint it resumes from. All ranks must
    make the same calls in the same order (each exchanges with the others); a rank that
    dies makes the others' next exchange raise RuntimeError.

    ``fit(module, datamodule, ckpt_path=None)`` takes a ``CIFARDataModule`` or the neutral
    ``CIFARData`` (then no torch is imported); batches are made on MLX's device
    (``cifar_mlx_adapter.data``); a checkpoint
    restores weights, optimiser state, step, epoch, random key, train time and what callbacks
    keep in its meta (``Callback.meta_state``: the step clock's figures so far). The step
    is compiled with the model, optimiser and random state as inputs and outputs, so
    dropout draws a fresh mask each step. A non-finite loss or weight raises
    ``NonFiniteLossError`` naming the first 0-based step whose loss was not finite and the
    last good checkpoint. As Lightning's Trainer, it never switches a submodule's mode for
    training (a layer the user put in eval mode stays frozen) and restores every
    submodule's mode after validate, test and predict. ``train_time_s`` (optimizer steps and
    per-epoch checkpoints) and ``validation_time_s`` (validation during fit) are seconds over
    all segments of a resumed run, the spans torch's record measures.
    ``precision``: Lightning's names, with Lightning's meaning: "32-true"; "bf16-mixed" and
    "16-mixed" keep float32 weights and optimiser state and compute the training step's
    forward and backward in half from half copies of the weights (gradients back in
    float32), "16-mixed" with torch.amp.GradScaler's dynamic loss scale (its state in every
    checkpoint); "bf16-true" and "16-true" keep the weights and the optimiser's state in
    half. The step is the general trainer's (``lightning.step.TrainingStep``). Evaluation
    feeds float32 images (half weights are promoted to float32 in each operation).
    ValueError in one line for another name or "64-true".
    ``validate`` returns {"val/acc", "val/loss"}; ``test`` returns {"test/acc",
    "test/loss", "per_class_accuracy" (num_classes,), "confusion_matrix" (num_classes,
    num_classes; rows true), "test/acc_no_tta" with TTA}; accuracies are fractions in
    [0, 1] computed from the logits by ``core.metrics`` (numpy), which tests hold equal
    to the torchmetrics figures of the Lightning path.
    """

    def __init__(
        self,
        max_epochs: float = 1,
        callbacks: list[Callback] | tuple = (),
        default_root_dir: str | Path = "mlx_runs",
        log_every_n_steps: int = 50,
        enable_progress_bar: bool = True,
        enable_checkpointing: bool = True,
        limit_train_batches: int | None = None,
        limit_val_batches: int | None = None,
        limit_test_batches: int | None = None,
        limit_predict_batches: int | None = None,
        checkpoint_meta: dict | None = None,
        group=None,
        precision: str = "32-true",
    ):
        if not (isinstance(max_epochs, (int, float)) and math.isfinite(max_epochs) and max_epochs > 0):
            raise ValueError(f"max_epochs must be a positive, finite number of epochs, got {max_epochs!r}")
        self.max_epochs = max_epochs  # may be fractional: stops after ceil(max_epochs * batches) steps
        self.callbacks = list(callbacks)
        self.default_root_dir = Path(default_root_dir)
        self.log_every_n_steps = log_every_n_steps
        self.enable_progress_bar = enable_progress_bar
        self.enable_checkpointing = enable_checkpointing
        self.limit_train_batches = limit_train_batches
        self.limit_val_batches, self.limit_test_batches = limit_val_batches, limit_test_batches
        self.limit_predict_batches = limit_predict_batches
        self.precision = parse_precision(precision)
        self.checkpoint_meta = checkpoint_meta or {}  # plain values kept in every checkpoint (the run's settings)
        # seconds, earlier segments of a resumed run included: training (steps and per-epoch
        # checkpoints) and the validation passes during fit, kept apart as in torch's record
        self.train_time_s = 0.0
        self.validation_time_s = 0.0
        self._fit_started: float | None = None  # perf_counter() when this segment's fit began
        self._segment_validation = 0.0  # validation seconds within this segment
        self.current_epoch = 0
        self.global_step = 0
        self.total_steps = 0
        self.steps_per_epoch = 0  # optimizer steps per training epoch, set by fit
        self.step_compiles = False  # this epoch's first step compiles (made anew: the first, or the trainables changed)
        self.should_stop = False
        self.callback_metrics: dict[str, float] = {}
        self.metrics_rows: list[dict] = []
        self.last_checkpoint: Path | None = None
        self.optimizer = None  # made by module.configure_optimizers() in fit
        self._scaler: DynamicLossScaler | None = None  # 16-mixed's loss scale, made by fit
        self._mlx_data: MLXData | None = None
        self.datamodule = None  # the data of the last fit, as Lightning's trainer.datamodule
        self.group = group if group is not None and group.size() > 1 else None
        self.world_size = group.size() if self.group is not None else 1
        self.global_rank = group.rank() if self.group is not None else 0
        self.is_global_zero = self.global_rank == 0
        self.enable_progress_bar = enable_progress_bar and self.is_global_zero

    # ---------------------------------------------------------------- training
    def _compile_step(self, module, optimizer):
        """The general trainer's compiled step (``lightning.step.TrainingStep``: the module's loss
        and gradient in the run's precision, the gradient averaged over the processes, the
        loss scaled and a non-finite step skipped under 16-mixed, the optimiser's update), as
        ``step(images, labels, batch_idx=0) -> (loss, {name: value})``, float32 scalars."""
        step = TrainingStep(module, optimizer, self.precision, scaler=self._scaler, group=self.group)

        def run(images, labels, batch_idx: int = 0):
            loss, logs = step((images, labels), batch_idx)
            return loss, {k: v.astype(mx.float32) for k, v in logs.items()}

        return run

    def _steps_per_epoch(self, loader) -> int:
        n = len(loader)
        return min(n, self.limit_train_batches) if self.limit_train_batches else n

    def _data(self, datamodule) -> MLXData:
        """The MLX-side data of a CIFARDataModule or CIFARData, uploaded once per trainer."""
        data = core_data(datamodule)
        if self._mlx_data is None or self._mlx_data.data is not data:
            data.prepare_data()  # downloads the files first where that is allowed
            self._mlx_data = MLXData(data)
        return self._mlx_data

    def fit(self, module, datamodule, ckpt_path: str | Path | None = None) -> None:
        module.trainer, self.datamodule = self, datamodule
        loader = self._data(datamodule).loader("train", self.global_rank, self.world_size)
        per_epoch = self.steps_per_epoch = self._steps_per_epoch(loader)
        self.total_steps = total_steps(self.max_epochs, per_epoch)
        if self.total_steps < 1:
            raise ValueError(f"the trainer plans {self.total_steps} optimizer steps: nothing to train")
        # *-true: the weights are kept in half, as Lightning's HalfPrecision converts the module
        if self.precision.param_dtype != mx.float32:
            module.model.set_dtype(self.precision.param_dtype)
        optimizer = module.configure_optimizers()
        self.optimizer = optimizer
        # 16-mixed: torch.amp.GradScaler's dynamic loss scale (its state kept in every checkpoint)
        self._scaler = DynamicLossScaler() if self.precision.scales_loss else None
        if ckpt_path:
            self._restore(module, optimizer, ckpt_path)
        if hasattr(module, "on_fit_start"):  # as Lightning's: after a checkpoint is restored
            module.on_fit_start()
        self._sync_model(module)  # every rank starts from rank 0's weights
        if self.is_global_zero:
            self.default_root_dir.mkdir(parents=True, exist_ok=True)
        for cb in self.callbacks:
            cb.on_fit_start(self, module)
        step = None
        # The model trains in the modes it has: a fresh model is in training mode, and a layer
        # the user put in eval mode stays there (evaluation restores every submodule's mode).
        self._fit_started, self._segment_validation = time.perf_counter(), 0.0
        while self.global_step < self.total_steps and not self.should_stop:
            self.step_compiles = module.on_train_epoch_start() or step is None
            if self.step_compiles:
                step = self._compile_step(module, optimizer)
            for cb in self.callbacks:
                cb.on_train_epoch_start(self, module)
            loader.sampler.set_epoch(self.current_epoch)
            # as Lightning's bar: the epoch's bar stays open through validation (its bar below) and
            # then shows the validation figures beside the training loss
            bar = self._epoch_bar(per_epoch)
            try:
                self._train_epoch(module, loader, step, per_epoch, bar)
                self.step_compiles = False
                stop = self.should_stop or self.limit_val_batches == 0
                val = {} if stop else self._timed_validation(module, datamodule)
                if val:
                    bar.set_postfix({**self._bar_postfix, **{k: f"{val[k]:.3f}" for k in ("val/loss", "val/acc")}})
            finally:  # a stopped run's error message starts on a line of its own
                bar.close()
            self.callback_metrics.update(val)
            # as Lightning's CSVLogger: the validation row, then the training epoch's row
            if val:
                self._log_row({"epoch": self.current_epoch, "step": self.global_step - 1, **val})
            self._log_row({"epoch": self.current_epoch, "step": self.global_step - 1, **self._epoch_means})
            for cb in self.callbacks:
                cb.on_train_epoch_end(self, module)
            self.current_epoch += 1
            if self.enable_checkpointing:
                self.save_checkpoint(RunPaths(self.default_root_dir).checkpoint("last", ".npz"), module)
        for cb in self.callbacks:
            cb.on_fit_end(self, module)
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

    def _epoch_bar(self, per_epoch: int):
        """The progress bar of the epoch about to train (its steps left of the run)."""
        from tqdm import tqdm

        self._bar_postfix = {}  # what the bar shows beside its count, kept for the validation figures
        return tqdm(
            total=min(per_epoch, self.total_steps - self.global_step),
            desc=f"Epoch {self.current_epoch}",
            disable=not self.enable_progress_bar,
            leave=True,
        )

    def _train_epoch(self, module, loader, step, per_epoch: int, bar) -> None:
        sums: dict[str, mx.array] = {}
        # the first step whose loss is not finite, -1 while none is: kept on the device, so the
        # host still waits only at logged steps, yet the error names the step where it began
        first_bad = mx.array(-1, dtype=mx.int32)
        seen = 0
        start = time.perf_counter()
        for batch_idx, (images, labels) in enumerate(loader):
            if batch_idx >= per_epoch or self.global_step >= self.total_steps or self.should_stop:
                break
            loss, logs = step(images, labels, batch_idx)
            n = labels.shape[0]
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v * n
            first_bad = mx.where((first_bad < 0) & ~mx.isfinite(loss), self.global_step, first_bad)
            mx.async_eval(loss, sums, first_bad)
            seen += n
            self.global_step += 1
            if self.global_step % self.log_every_n_steps == 0 or self.global_step == self.total_steps:
                self._check_finite(first_bad, loss)
                value = float(logs["train/loss"].item())
                self._log_row(
                    {
                        "epoch": self.current_epoch,
                        "step": self.global_step - 1,
                        "train/loss_step": value,
                        "lr": self._current_lr(),
                    }
                )
                self._bar_postfix = {"loss": f"{value:.3f}", "img_s": f"{seen / (time.perf_counter() - start):.0f}"}
                bar.set_postfix(self._bar_postfix)
            bar.update(1)
            for cb in self.callbacks:
                cb.on_train_batch_end(self, module, batch_idx)
        self._check_finite(first_bad, loss if seen else None)
        if self.group is not None:  # every rank runs its pending exchanges (the last steps') now
            mx.eval(module.model.state, self.optimizer.state)
        means = {k: float(v.item()) / max(seen, 1) for k, v in sums.items()}
        self._epoch_means = {("train/loss_epoch" if k == "train/loss" else k): v for k, v in means.items()}
        self.callback_metrics.update(self._epoch_means)
        self.epoch_images_per_s = seen / max(time.perf_counter() - start, 1e-9)

    def _check_finite(self, first_bad: mx.array, loss: mx.array | None) -> None:
        """Raise NonFiniteLossError naming the first 0-based step whose loss was not finite."""
        bad = int(first_bad.item())
        if bad >= 0:
            value = float(loss.item()) if loss is not None else math.nan
            raise NonFiniteLossError(non_finite_message(value, bad, self.last_checkpoint))

    def _current_lr(self) -> float:
        return float(base_learning_rate(self.optimizer).item())

    def _log_row(self, row: dict) -> None:
        """Append a row to metrics.csv. As in Lightning's CSVLogger, ``step`` is the 0-based index
        of the optimizer step the row belongs to (a train row: the step just taken; an epoch
        row: the epoch's last step; the test row: the steps taken), ``lr`` is the base parameter
        group's learning rate, and the columns are in sorted order."""
        self.metrics_rows.append(row)
        if not self.is_global_zero:
            return
        keys = sorted({k for r in self.metrics_rows for k in r})
        path = RunPaths(self.default_root_dir).metrics_csv
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, keys)
            writer.writeheader()
            writer.writerows(self.metrics_rows)

    # -------------------------------------------------------------- evaluation
    def _evaluate(self, module, loader, hook, limit: int | None, desc: str, fx: str) -> tuple[np.ndarray, np.ndarray]:
        """Run `hook` over the first `limit` batches of `loader` (all: None) in eval mode,
        with a progress bar; returns (logits float32 (N, C), labels int64 (N,)) as numpy.
        N may be 0: a rank whose share of a small split is empty (fewer images than processes)
        still takes part in the exchange of counts."""
        outputs = [np.zeros((0, module.hparams["num_classes"]), np.float32)]
        targets = [np.zeros(0, np.int64)]
        for output, labels in self._eval_batches(module, loader, hook, limit, desc, fx):
            outputs.append(np.array(output))
            targets.append(np.array(labels, dtype=np.int64))
        return np.concatenate(outputs), np.concatenate(targets)

    def _eval_batches(self, module, loader, hook, limit: int | None, desc: str, fx: str):
        """Yield (hook((images, labels), batch_idx), labels) for the first `limit` batches (all:
        None) in eval mode, with a progress bar; every submodule's mode is restored after. `fx`:
        the module hook `hook` runs ("validation_step", "test_step", "predict_step"), whose
        logging defaults ``self.log`` applies."""
        from tqdm import tqdm

        batches = len(loader) if limit is None else min(limit, len(loader))
        modes = module_modes(module.model)
        module.model.eval()
        try:
            with tqdm(total=batches, desc=desc, disable=not self.enable_progress_bar, leave=False) as bar:
                for batch_idx, batch in enumerate(loader):
                    if batch_idx >= batches:
                        break
                    # (images, labels), or images alone (a prediction loader of the user's images)
                    labels = batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 else None
                    # what the step logs is not read: the figures are counted from its logits
                    with hook_logs(module, fx):
                        output = hook(batch, batch_idx)
                    yield output, labels
                    bar.update(1)
        finally:
            restore_modes(modes)

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
        logits, labels = self._evaluate(
            module, loader, module.validation_step, self.limit_val_batches, "Validation", "validation_step"
        )
        [(confusion, ce)] = self._counts([(logits, labels)], logits.shape[1])
        out = {"val/acc": metrics.accuracy_of(confusion), "val/loss": ce / max(confusion.sum(), 1)}
        if verbose and self.is_global_zero:
            print(out)
        return out

    def test(self, module, datamodule, verbose: bool = True) -> dict:
        """Overall and per-class accuracy, loss and confusion matrix (``core.metrics``, equal
        to the torchmetrics figures of the Lightning path), every test image counted once
        over all processes."""
        module.trainer = self
        self._sync_model(module)
        loader = self._data(datamodule).loader("test", self.global_rank, self.world_size)
        logits, labels = self._evaluate(
            module, loader, module.test_step, self.limit_test_batches, "Testing", "test_step"
        )
        k = logits.shape[1]
        runs = [(logits, labels)]
        if module.recipe.tta:
            plain, _ = self._evaluate(
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
        self._log_row({"epoch": self.current_epoch, "step": self.global_step, **figures})
        if verbose and self.is_global_zero:
            print(figures)
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
        for cb in self.callbacks:
            if isinstance(cb, BasePredictionWriter):
                cb.write_on_epoch_end(self, module, predictions, [])
        return predictions

    # ------------------------------------------------------------- checkpoints
    def save_checkpoint(self, path: str | Path, module) -> Path:
        """model, optimiser state, step, epoch and recipe in one .npz, written atomically
        (by rank 0 alone; every rank checks the weights and returns the path)."""
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
        for cb in self.callbacks:
            arrays.update({f"callback.{type(cb).__name__}.{k}": np.array(v) for k, v in cb.state_dict().items()})
        arrays["random.key"] = np.array(mx.random.state[0])  # dropout continues the same sequence on resume
        meta = {
            "global_step": self.global_step,
            "epoch": self.current_epoch,
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
        held = {type(cb).__name__: cb.meta_state() for cb in self.callbacks}
        held = {name: state for name, state in held.items() if state is not None}
        if held:
            meta["callbacks"] = held
        arrays["meta"] = np.array(json.dumps(meta))
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        self.last_checkpoint = path
        return path

    def _restore(self, module, optimizer, path) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("meta")))
        model = {k[6:]: mx.array(v) for k, v in arrays.items() if k.startswith("model.")}
        load_weights(module.model, model, what=str(path))
        # bfloat16 state (bf16-true) was saved as float32, exactly: back to bfloat16, and only that
        # (an optimiser's float32 scalars, such as a constant momentum, stay float32)
        bfloat16 = set(meta.get("bfloat16", ()))
        opt = [
            (k[10:], mx.array(v).astype(mx.bfloat16) if k in bfloat16 else mx.array(v))
            for k, v in arrays.items()
            if k.startswith("optimizer.")
        ]
        optimizer.state = tree_unflatten(opt)
        if self._scaler is not None and "loss_scaler" in meta:
            self._scaler.load_state_dict(meta["loss_scaler"])
        if "random.key" in arrays:
            set_random_key(arrays["random.key"])
        for cb in self.callbacks:
            prefix = f"callback.{type(cb).__name__}."
            cb.load_state_dict({k[len(prefix) :]: mx.array(v) for k, v in arrays.items() if k.startswith(prefix)})
            if type(cb).__name__ in meta.get("callbacks", {}):
                cb.load_meta_state(meta["callbacks"][type(cb).__name__])
        if meta["total_steps"] != self.total_steps:
            raise ValueError(
                f"checkpoint {path} belongs to a run of {meta['total_steps']} steps, "
                f"this one has {self.total_steps}: resume with the same epochs and batch size"
            )
        self.global_step, self.current_epoch = meta["global_step"], meta["epoch"]
        self.train_time_s = meta.get("train_time_s", 0.0)
        self.validation_time_s = meta.get("validation_time_s", 0.0)
        self.last_checkpoint = path
        # keep the rows of the earlier segments: those of the steps the checkpoint covers
        metrics = RunPaths(self.default_root_dir).metrics_csv
        if metrics.is_file():
            with open(metrics, newline="") as f:
                self.metrics_rows = [
                    r for r in csv.DictReader(f) if r.get("step") and int(r["step"]) < self.global_step
                ]
