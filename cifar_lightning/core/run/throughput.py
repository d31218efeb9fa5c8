"""Training speed under one protocol for both frameworks: run.json's ``throughput`` record.

The protocol (``StepClock``), fed by each framework's callback at every optimizer step:

- The first ``WARMUP_STEPS`` optimizer steps of a process are not measured: they hold
  MLX's compilation and both frameworks' first allocations (and torch.compile's work).
- The clock is read only after the device has finished the work so far (``sync``:
  ``mx.eval`` of the model and optimiser state in MLX, which is lazy;
  ``torch.cuda.synchronize`` / ``torch.mps.synchronize``, which are asynchronous; nothing
  on a CPU, where torch computes synchronously); which one is recorded. It is read at the
  start of every epoch, every ``WINDOW_STEPS`` measured steps and after each epoch's last
  step, never in between, so the measurement does not slow the steps it measures.
- Only the steps are timed: what comes between an epoch's last step and the next epoch's
  start (validation, the per-epoch checkpoint) and the final test are not, nor is
  anything before the first epoch starts.
- ``images_per_s`` is the measured images over the measured seconds; the spread is the
  median and the inter-quartile range of the windows' images per second (a window: up to
  ``WINDOW_STEPS`` consecutive steps of one epoch; an epoch's last window may be shorter).
  ``epoch_s`` is each epoch's seconds of steps, warm-up included.

A resumed run's process warms up again: its record covers the steps that process took.
"""

from __future__ import annotations

import time

import numpy as np

WARMUP_STEPS = 5  # optimizer steps of a process left out: MLX compiles at the first, both allocate early
WINDOW_STEPS = 10  # measured steps between two readings of the clock


class StepClock:
    """Times a process's optimizer steps by the protocol above. `sync()` waits for the device
    to finish; `synchronized_by` names it for the record. Call ``epoch_start()`` as each
    training epoch starts and ``step_end(images, last_of_epoch)`` after each optimizer step
    (`images`: the step's images over all processes); `on_reading()` runs at each reading of
    the clock, once the device has finished (where memory is sampled)."""

    def __init__(
        self,
        sync,
        synchronized_by: str,
        warmup: int = WARMUP_STEPS,
        window: int = WINDOW_STEPS,
        clock=time.perf_counter,
        on_reading=None,
    ):
        if warmup < 1 or window < 1:
            raise ValueError(f"warmup and window must be 1 or more steps, got {warmup} and {window}")
        self.sync, self.synchronized_by = sync, synchronized_by
        self.on_reading = on_reading  # called at each reading, the device idle (e.g. ``MemoryPeak.sample``)
        self.warmup, self.window, self.clock = warmup, window, clock
        self.steps = 0  # optimizer steps this process took
        self.windows: list[tuple[int, int, float]] = []  # (steps, images, seconds) of each measured window
        self.epoch_s: list[float] = []
        self._epoch_start: float | None = None
        self._mark: float | None = None  # the clock at the start of the open window
        self._open = (0, 0)  # steps and images in the open window

    def _now(self) -> float:
        self.sync()
        now = self.clock()
        if self.on_reading is not None:
            self.on_reading()
        return now

    def epoch_start(self) -> None:
        self._epoch_start = self._now()
        self._mark = self._epoch_start if self.steps >= self.warmup else None
        self._open = (0, 0)

    def step_end(self, images: int, last_of_epoch: bool) -> None:
        if self._epoch_start is None:  # a step outside an epoch's span: start the span here
            self.epoch_start()
        self.steps += 1
        if self._mark is not None:
            self._open = (self._open[0] + 1, self._open[1] + images)
        if self.steps == self.warmup:  # the warm-up is over: measure from here
            self._mark, self._open = self._now(), (0, 0)
        elif self._mark is not None and (self._open[0] == self.window or last_of_epoch):
            self._close(self._now())
        if last_of_epoch:
            self.epoch_s.append(self._now() - self._epoch_start)
            self._epoch_start = self._mark = None

    def _close(self, now: float) -> None:
        steps, images = self._open
        if steps:
            self.windows.append((steps, images, now - self._mark))
        self._mark, self._open = now, (0, 0)

    def record(self) -> dict:
        """run.json's ``throughput``: images per second over the measured steps, the windows'
        median and inter-quartile range, the steps and seconds measured, the warm-up left
        out, each epoch's seconds, and how the clock waited for the device. Rates are None
        when no step was measured (a run of no more steps than its warm-up)."""
        steps = sum(w[0] for w in self.windows)
        images = sum(w[1] for w in self.windows)
        seconds = sum(w[2] for w in self.windows)
        rates = np.array([w[1] / w[2] for w in self.windows if w[2] > 0])
        q1, median, q3 = (float(v) for v in np.percentile(rates, [25, 50, 75])) if len(rates) else (None,) * 3
        return {
            "images_per_s": round(images / seconds, 2) if seconds > 0 else None,
            "median_images_per_s": _round(median),
            "iqr_images_per_s": [_round(q1), _round(q3)],
            "windows": len(self.windows),
            "window_steps": self.window,
            "warmup_steps": self.warmup,
            "measured_steps": steps,
            "measured_images": images,
            "measured_s": round(seconds, 3),
            "epoch_s": [round(s, 3) for s in self.epoch_s],
            "synchronized_by": self.synchronized_by,
            "excluded": "the warm-up steps, validation, per-epoch checkpoints and the test",
        }


def _round(value):
    return None if value is None else round(value, 2)
