"""MLX callbacks of the run lifecycle, with Lightning's hooks and signatures
(``cifar_mlx_adapter.lightning.Callback``): the fast recipe's weight averaging and the run's
step clock."""

from __future__ import annotations

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from cifar_lightning.core.recipes import averaging_decay
from cifar_mlx_adapter.lightning.callbacks import Callback


class LookaheadAveraging(Callback):
    """As ``cifar_lightning.callbacks.LookaheadAveraging``: every `every` steps blend all float
    weights and BatchNorm statistics into a running average and copy it back; the final
    weights are the average. The run trainer keeps ``state_dict`` (the average) in its
    checkpoints. Needs the trainer's ``total_steps`` (the run lifecycle's ``MLXTrainer``)."""

    def __init__(self, every: int = 5):
        self.every = every
        self.average: dict[str, mx.array] | None = None

    def _state(self, module) -> dict[str, mx.array]:
        return dict(tree_flatten(module.model.parameters()))

    def on_train_start(self, trainer, pl_module):
        # after the module's on_fit_start (the fast net's whitening is set) and rank 0's weights
        # reached every rank; a resumed run has its average back already
        if self.average is None:
            self.average = self._state(pl_module)

    def _copy_back(self, module):
        module.model.update(tree_unflatten(list(self.average.items())))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every == 0:
            self._blend(pl_module, averaging_decay(step, trainer.total_steps))
        if step >= trainer.total_steps:
            self._blend(pl_module, 1.0)  # the final weights are the average, in the last checkpoint too

    def _blend(self, module, decay: float) -> None:
        self.average = {k: decay * self.average[k] + (1 - decay) * v for k, v in self._state(module).items()}
        self._copy_back(module)

    def state_dict(self):
        return dict(self.average or {})

    def load_state_dict(self, state):
        self.average = dict(state) if state else None


class StepTiming(Callback):
    """As ``cifar_lightning.callbacks.StepTiming``: feeds the run's step clock
    (``core.run.throughput.StepClock``) each epoch's start and each optimizer step's end,
    with its images over all processes; tells it when the trainer compiles its step anew
    (``trainer.step_compiles``, known once the epoch's start hooks have run: the trainable
    parameters changed), so that step is left out; and carries the run's figures so far in
    every checkpoint (``meta_state``), which a resumed run continues."""

    def __init__(self, clock, memory):
        self.clock, self.memory = clock, memory
        self._epoch_opens = False

    def on_train_epoch_start(self, trainer, pl_module):
        self.clock.epoch_start()
        self._epoch_opens = True

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._epoch_opens:
            self._epoch_opens = False
            if trainer.step_compiles:
                self.clock.recompiles_next(
                    trainer.global_step, "the trainable parameters changed: MLX compiles the step anew"
                )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        last = batch_idx + 1 >= trainer.steps_per_epoch or trainer.global_step >= trainer.total_steps
        self.clock.step_end(pl_module.examples_per_step(), last)

    def meta_state(self):
        from cifar_lightning.core.run.throughput import segment_state

        return segment_state(self.clock, self.memory)

    def load_meta_state(self, state) -> None:
        from cifar_lightning.core.run.throughput import continue_segments

        continue_segments(self.clock, self.memory, state)
