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
  ``epoch_s`` is each epoch's seconds of steps, warm-up (and recompiled steps) included.
- A step that recompiles is not steady state: whoever knows that the next step recompiles
  (MLX's trainer, which compiles its step anew when the trainable parameters change; torch's
  step callback, when they change under torch.compile) says so (``recompiles_next``), and
  the clock leaves that step out of the windows: it closes the open window before the step
  and opens the next one after it. The record lists those steps (``excluded_steps``).
- A run cut (Ctrl-C) and resumed trains in several processes, its segments. Each checkpoint
  carries the figures so far (``segment_state``: the clock's windows, epoch seconds and
  excluded steps; the memory peaks), and a resumed process adds its own to them
  (``continue_segments``), so the record describes the training of all segments together:
  each segment's process leaves out its own warm-up, and steps that an interrupted segment
  took after its last checkpoint (trained again by the next) are not counted. ``segments``
  says how many processes the figures cover.
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
        self.excluded_steps: list[dict] = []  # {"step": 0-based optimizer step, "reason": why} left out
        self.segments = 1  # processes whose figures this clock holds (``continue_segments`` adds earlier ones)
        self._recompiles: tuple[int, str] | None = None  # (step, reason) of a next step that recompiles
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

    def recompiles_next(self, step: int, reason: str) -> None:
        """The next optimizer step (0-based index `step`, as metrics.csv numbers steps)
        recompiles (`reason`): leave it out. The open window closes now, before it; the next
        window opens after it. A step within the warm-up is left out anyway."""
        self._recompiles = (step, reason)
        if self._mark is not None and self._open[0]:
            self._close(self._now())

    def step_end(self, images: int, last_of_epoch: bool) -> None:
        if self._epoch_start is None:  # a step outside an epoch's span: start the span here
            self.epoch_start()
        self.steps += 1
        recompiled, self._recompiles = self._recompiles, None
        if recompiled is not None and self._mark is not None:  # a measured step that recompiled: left out
            self.excluded_steps.append({"step": recompiled[0], "reason": recompiled[1]})
            self._mark, self._open = self._now(), (0, 0)
        elif self._mark is not None:
            self._open = (self._open[0] + 1, self._open[1] + images)
            if self._open[0] == self.window or last_of_epoch:
                self._close(self._now())
        elif self.steps == self.warmup:  # the warm-up is over: measure from here
            self._mark, self._open = self._now(), (0, 0)
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
        out (of each segment), the steps left out as recompiling, each epoch's seconds, how
        the clock waited for the device, and the segments (processes) the figures cover.
        Rates are None when no step was measured (a run of no more steps than its warm-up)."""
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
            "excluded_steps": [dict(e) for e in self.excluded_steps],
            "segments": self.segments,
            "excluded": "the warm-up steps of each segment, steps that recompile (excluded_steps), validation, "
            "per-epoch checkpoints and the test",
        }

    def state(self) -> dict:
        """What a checkpoint carries of this clock (plain JSON values): the windows, epoch
        seconds and excluded steps so far, and the segments they cover."""
        return {
            "windows": [list(w) for w in self.windows],
            "epoch_s": list(self.epoch_s),
            "excluded_steps": [dict(e) for e in self.excluded_steps],
            "segments": self.segments,
        }

    def continue_from(self, state: dict) -> None:
        """Put the figures of the earlier segments (``state`` of the checkpoint resumed) before
        this process's: this process is one segment more."""
        self.windows = [(int(s), int(i), float(t)) for s, i, t in state.get("windows", [])] + self.windows
        self.epoch_s = [float(t) for t in state.get("epoch_s", [])] + self.epoch_s
        self.excluded_steps = [dict(e) for e in state.get("excluded_steps", [])] + self.excluded_steps
        self.segments = int(state.get("segments", 1)) + 1


def segment_state(clock: StepClock, memory) -> dict:
    """What each checkpoint carries of a run's figures so far (plain JSON values, for
    torch's checkpoint and MLX's JSON meta alike): the step clock's and the memory peaks'
    (``memory.MemoryPeak``)."""
    return {"throughput": clock.state(), "memory": memory.state()}


def continue_segments(clock: StepClock, memory, state: dict | None) -> None:
    """A resumed process: add the figures its checkpoint carries (``segment_state``) to its
    clock and memory peaks. None (a checkpoint written before checkpoints carried them) adds
    nothing; the record then says that it covers this segment alone."""
    if not state:
        return
    clock.continue_from(state.get("throughput", {}))
    memory.continue_from(state.get("memory", {}))


def _round(value):
    return None if value is None else round(value, 2)
