"""The Lightning callbacks of a fit.py run, the twins of ``cifar_mlx_adapter.callbacks`` and
of what ``MLXTrainer`` does itself:

- ``RunBook`` keeps a run safe and whole: it stops a diverging run at the first non-finite
  training loss (or non-finite weights about to be checkpointed), naming the step and the
  last good checkpoint, which is left untouched (the first bad step is kept on the device
  and read where Lightning logs, at the epoch's end and before a checkpoint, so a step
  never waits for the device, as in MLXTrainer); measures the training time
  (``on_train_start`` to ``on_train_end``, the validation passes during fit kept apart);
  writes into every checkpoint (key ``"run"``) the settings that shaped the run, the
  training and validation time so far and every random generator's state (torch's CPU
  generator and the accelerator's), so a resumed run is checked against its past, adds
  its time to the earlier segments', and draws the dropout masks the uninterrupted run
  would have drawn; and notes a Ctrl-C (Lightning then exits with status 1 after its own
  shutdown), so the lifecycle can print the command that resumes the run.
- ``StepLossBar`` is Lightning's progress bar with the training loss of the steps that log it.
- ``InferenceRecord`` writes what predicting with a checkpoint needs into it.
- ``LookaheadAveraging`` is the fast recipe's weight averaging.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar

from cifar_lightning.core.errors import NonFiniteLossError, non_finite_message, non_finite_weight_message
from cifar_lightning.core.recipes import averaging_decay


def rng_states() -> dict:
    """torch's global generators: CPU, and CUDA's or MPS's when present."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if torch.backends.mps.is_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_rng_states(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "mps" in state and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])


def logs_this_step(trainer) -> bool:
    """Whether Lightning logs the training step that is ending (every ``log_every_n_steps``),
    as its own LearningRateMonitor asks."""
    return trainer._logger_connector.should_update_logs


class RunBook(L.Callback):
    def __init__(self, settings: dict):
        self.settings = settings
        self.earlier_time = 0.0  # training seconds of the segments before a resume
        self.earlier_validation = 0.0  # their validation seconds
        self.interrupted = False  # Ctrl-C reached the trainer
        self._start: float | None = None  # this segment's training span
        self._end: float | None = None
        self._validation = 0.0  # validation seconds within this segment
        self._validation_start: float | None = None
        self._first_bad: torch.Tensor | None = None  # on the device: the first non-finite loss's step, or -1
        self._loss: torch.Tensor | None = None  # the last step's loss
        self._unchecked = False  # a step was taken since the host last looked at _first_bad

    # ------------------------------------------------------------- time
    def on_train_start(self, trainer, pl_module):
        self._start, self._end, self._validation = time.perf_counter(), None, 0.0
        self._first_bad, self._loss, self._unchecked = None, None, False

    def on_train_end(self, trainer, pl_module):
        self._end = time.perf_counter()

    def on_validation_start(self, trainer, pl_module):
        if self._start is not None and self._end is None:  # within fit's span, not a later test
            self.check_finite(trainer)  # the epoch's steps, before validating their weights
            self._validation_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module):
        if self._validation_start is not None:
            self._validation += time.perf_counter() - self._validation_start
            self._validation_start = None

    def train_time(self) -> float:
        """Seconds of training (optimizer steps and per-epoch checkpoints; validation
        excluded), all segments of the run together. A resumed run that had nothing left to
        train (Lightning skips ``on_train_start``) adds nothing."""
        if self._start is None:
            return self.earlier_time
        end = self._end if self._end is not None else time.perf_counter()
        return self.earlier_time + (end - self._start - self._validation)

    def validation_time(self) -> float:
        """Seconds of validation during fit, all segments together."""
        return self.earlier_validation + self._validation

    # -------------------------------------------------------- divergence
    def last_checkpoint(self, trainer) -> str | None:
        """checkpoints/last.ckpt once the run (or the one it resumes) has written it, else None.
        Lightning's ModelCheckpoint names the file it is about to write before writing it, so a
        name is taken only for a file that is there."""
        cb = trainer.checkpoint_callback
        path = getattr(cb, "best_model_path", None) or getattr(cb, "last_model_path", None)
        return path if path and Path(path).is_file() else None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            # device-side bookkeeping only: reading the loss here would make every step wait
            self._loss = loss.detach()
            if self._first_bad is None:
                self._first_bad = torch.full((), -1, dtype=torch.long, device=loss.device)
            newly_bad = (self._first_bad < 0) & ~torch.isfinite(self._loss).all()
            self._first_bad = torch.where(newly_bad, trainer.global_step - 1, self._first_bad)
            self._unchecked = True
        if logs_this_step(trainer):
            self.check_finite(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        self.check_finite(trainer)

    def check_finite(self, trainer) -> None:
        """Raise NonFiniteLossError naming the first 0-based step whose training loss was not
        finite, if one was since the last look (one host read; none without a new step)."""
        if not self._unchecked:
            return
        self._unchecked = False
        first_bad = int(self._first_bad)
        if first_bad >= 0:
            value = float(self._loss.float().mean())
            raise NonFiniteLossError(non_finite_message(value, first_bad, self.last_checkpoint(trainer)))

    # ------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self.check_finite(trainer)  # a loss of the steps since the last look, before the file is written
        # the last step before a checkpoint can break the weights after its (finite) loss was
        # computed: raising here, before the file is written, keeps the last good checkpoint
        model = getattr(pl_module, "model", pl_module)  # CIFARClassifier's net: its keys, as weight files name them
        for name, p in itertools.chain(model.named_parameters(), model.named_buffers()):
            if p.is_floating_point() and not torch.isfinite(p).all():
                step = trainer.global_step - 1
                raise NonFiniteLossError(non_finite_weight_message(name, step, self.last_checkpoint(trainer)))
        checkpoint["run"] = {
            "settings": self.settings,
            "train_time_s": self.train_time(),
            "validation_time_s": self.validation_time(),
            "rng": rng_states(),
        }

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        run = checkpoint.get("run", {})
        self.earlier_time = run.get("train_time_s", 0.0)
        self.earlier_validation = run.get("validation_time_s", 0.0)
        if "rng" in run:
            set_rng_states(run["rng"])

    # ----------------------------------------------------------- Ctrl-C
    def on_exception(self, trainer, pl_module, exception):
        if isinstance(exception, KeyboardInterrupt):
            self.interrupted = True


class StepLossBar(TQDMProgressBar):
    """Lightning's progress bar, showing ``train/loss_step`` as of the last step that logged it
    (every ``log_every_n_steps``), as MLXTrainer's bar shows its loss. Logged with
    ``prog_bar=True`` instead, Lightning would turn the loss into a float at every batch's
    end, making every step wait for the device."""

    def __init__(self):
        super().__init__()
        self._loss: float | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if logs_this_step(trainer) and "train/loss_step" in trainer.callback_metrics:
            self._loss = float(trainer.callback_metrics["train/loss_step"])
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        if self._loss is not None:
            items["train/loss_step"] = self._loss
        return items


class InferenceRecord(L.Callback):
    """Writes into every checkpoint (key ``"inference"``) what predicting with it needs: the
    model, its classes and their names, the dataset and its normalisation
    (``core.model_card.inference_record``), so predict.py and export.py need no data folder."""

    def __init__(self, record: dict):
        self.record = record

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        checkpoint["inference"] = self.record


class LookaheadAveraging(L.Callback):
    """Every `every` optimizer steps blend the weights into a running average and copy it
    back; at the schedule's last step copy the average into the model, so the final
    weights are the average (airbench94.py's ``lookahead_state.update(model, decay=1.0)``).

    The average's decay grows as (step / total)^3 (see ``recipes.averaging_decay``),
    so it barely averages early and strongly at the end. It acts once per optimizer step:
    under gradient accumulation Lightning calls ``on_train_batch_end`` for every
    micro-batch, and only a batch after which ``global_step`` moved ends a step. The
    final copy happens at the last step itself, not in ``on_train_end``, so the last
    checkpoint already holds the final weights: a run resumed after its last epoch
    (Lightning then skips ``on_train_start`` and ``on_train_end``) ends with them too.
    Its state goes into checkpoints, so a resumed run continues the average.
    """

    def __init__(self, every: int = 5):
        self.every = every
        self.average: dict[str, torch.Tensor] | None = None
        self._last_step: int | None = None  # global_step after the last optimizer step seen

    def _floats(self, pl_module):
        return {k: v for k, v in pl_module.state_dict().items() if v.is_floating_point()}

    def on_train_start(self, trainer, pl_module):
        self._last_step = trainer.global_step
        if self.average is None:
            self.average = {k: v.detach().clone() for k, v in self._floats(pl_module).items()}
        else:  # restored from a checkpoint: move to the module's device
            self.average = {k: v.to(pl_module.device) for k, v in self.average.items()}

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step == self._last_step:  # a micro-batch of an accumulated step: no optimizer step yet
            return
        self._last_step = step
        total = pl_module.total_training_steps()
        if step % self.every == 0:
            self._blend(pl_module, averaging_decay(step, total))
        if step >= total:
            self._blend(pl_module, 1.0)  # the final weights are the average

    def _blend(self, pl_module, decay: float) -> None:
        for k, v in self._floats(pl_module).items():
            self.average[k].lerp_(v, 1 - decay)
            v.copy_(self.average[k])

    def state_dict(self):
        return {"every": self.every, "average": self.average}

    def load_state_dict(self, state_dict):
        self.every, self.average = state_dict["every"], state_dict["average"]


class StepTiming(L.Callback):
    """Feeds the run's step clock (``core.run.throughput.StepClock``): each training epoch's
    start, and each optimizer step's end with its images over all processes (under gradient
    accumulation only a batch after which ``global_step`` moved ends a step). Under
    torch.compile a step whose trainable parameters differ from the previous step's (the
    fast recipe freezes the whitening bias) recompiles: the clock is told before it runs.
    Its state in every checkpoint (Lightning's callback state) is the run's figures so far
    (``throughput.segment_state``: the clock's and the memory peaks'), which a resumed run
    continues."""

    def __init__(self, clock, memory):
        self.clock, self.memory = clock, memory
        self._last_step: int | None = None
        self._trainable: tuple[bool, ...] | None = None  # requires_grad of each parameter at the last step

    def on_train_epoch_start(self, trainer, pl_module):
        self._last_step = trainer.global_step
        self.clock.epoch_start()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if not getattr(pl_module, "compiled", False):  # eager mode compiles nothing
            return
        trainable = tuple(p.requires_grad for p in pl_module.parameters())
        if self._trainable is not None and trainable != self._trainable:
            self.clock.recompiles_next(
                trainer.global_step, "the trainable parameters changed: torch.compile compiles the step anew"
            )
        self._trainable = trainable

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self._last_step:  # a micro-batch of an accumulated step
            return
        self._last_step = trainer.global_step
        last = batch_idx + 1 >= trainer.num_training_batches or trainer.global_step >= pl_module.total_training_steps()
        self.clock.step_end(pl_module.examples_per_step(), last)

    def state_dict(self):
        from cifar_lightning.core.run.throughput import segment_state

        return segment_state(self.clock, self.memory)

    def load_state_dict(self, state_dict):
        from cifar_lightning.core.run.throughput import continue_segments

        continue_segments(self.clock, self.memory, state_dict)
