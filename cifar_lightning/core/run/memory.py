"""Memory under one protocol for both frameworks: run.json's ``memory`` record.

Each backend names the counters its device has (``Backend.memory_counters``), each a
function returning bytes: a framework's own peak where it keeps one (``torch.cuda.
max_memory_allocated``, ``mx.get_peak_memory``, both reset as training starts), and
counters of the moment otherwise (``torch.mps.current_allocated_memory`` and
``driver_allocated_memory``, ``mx.get_cache_memory``), and on a CPU the process's peak
resident set (``process_peak_rss``: the whole program's, since it started). ``MemoryPeak``
samples them whenever the step clock is read (``throughput.StepClock``: every window of
steps and each epoch's end, the device idle) and once more after training, and keeps each
one's largest value. The counters of the two frameworks do not measure the same thing
(torch's allocated tensors, MLX's arrays, a process's pages): a ratio between frameworks
is stated with the counters it divides. The record also names the frameworks the process
held at its samples (``frameworks_loaded``): a process-wide counter, such as the peak
resident set, counts every framework imported into the process, so a measured process
should hold its own framework only.
"""

from __future__ import annotations

import resource
import sys

SAMPLED = (
    "at each reading of the step clock (every window of steps and each epoch's end, the device idle) and after training"
)


FRAMEWORK_MODULES = ("mlx", "torch")


def frameworks_loaded() -> list[str]:
    """The frameworks imported into this process by now (``mlx``, ``torch``: in sys.modules)."""
    return [name for name in FRAMEWORK_MODULES if name in sys.modules]


def process_peak_rss() -> int:
    """The process's peak resident set size in bytes: on Linux ``VmHWM`` of /proc/self/status
    (kB there), the peak since the program started (its ``execve``); elsewhere ``getrusage``'s
    ``ru_maxrss`` (bytes on macOS). Linux's ``ru_maxrss`` would not do: it survives
    ``execve`` and so holds the parent's pages a forked process shared before it started
    (a run started by a large process, such as a test run, would inherit that size)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class MemoryPeak:
    """The largest value each counter of `counters` ({name: function returning bytes}) took
    over the samples; the first counter is the one a comparison divides (``primary``)."""

    def __init__(self, counters: dict):
        if not counters:
            raise ValueError("no memory counter to sample")
        self.counters = counters
        self.peaks = {name: 0 for name in counters}
        self.samples = 0
        self.loaded: set[str] = set()

    def sample(self) -> None:
        for name, read in self.counters.items():
            self.peaks[name] = max(self.peaks[name], int(read()))
        self.loaded.update(frameworks_loaded())
        self.samples += 1

    def record(self) -> dict:
        """run.json's ``memory``: each counter's peak in bytes, the primary counter's name,
        how many samples were taken and when, and the frameworks the process held at them."""
        return {
            "peak_bytes": dict(self.peaks),
            "primary": next(iter(self.counters)),
            "samples": self.samples,
            "sampled": SAMPLED,
            "frameworks_loaded": sorted(self.loaded),
        }
