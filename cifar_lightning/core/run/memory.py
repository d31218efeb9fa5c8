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

On macOS both backends add ``phys_footprint`` (``macos_counters``): the process's lifetime
maximum physical footprint, macOS's own figure for a process's memory, which counts the
GPU memory (Metal's) that the resident set leaves out. A resumed run's peaks are the largest
over its segments (``throughput.segment_state``).
"""

from __future__ import annotations

import ctypes
import os
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


# macOS's proc_pid_rusage (<libproc.h>) fills a struct rusage_info_v4 of <sys/resource.h>
# (Apple's XNU, bsd/sys/resource.h: github.com/apple-oss-distributions/xnu); flavor RUSAGE_INFO_V4
# is 4. The fields up to ri_lifetime_max_phys_footprint, in the header's order, all uint64_t after
# the 16-byte uuid; the struct's last 7 fields, of no use here, keep its size (296 bytes).
RUSAGE_INFO_V4 = 4


class RusageInfoV4(ctypes.Structure):
    _fields_ = [
        ("ri_uuid", ctypes.c_uint8 * 16),
        *[
            (name, ctypes.c_uint64)
            for name in (
                "ri_user_time",
                "ri_system_time",
                "ri_pkg_idle_wkups",
                "ri_interrupt_wkups",
                "ri_pageins",
                "ri_wired_size",
                "ri_resident_size",
                "ri_phys_footprint",
                "ri_proc_start_abstime",
                "ri_proc_exit_abstime",
                "ri_child_user_time",
                "ri_child_system_time",
                "ri_child_pkg_idle_wkups",
                "ri_child_interrupt_wkups",
                "ri_child_pageins",
                "ri_child_elapsed_abstime",
                "ri_diskio_bytesread",
                "ri_diskio_byteswritten",
                "ri_cpu_time_qos_default",
                "ri_cpu_time_qos_maintenance",
                "ri_cpu_time_qos_background",
                "ri_cpu_time_qos_utility",
                "ri_cpu_time_qos_legacy",
                "ri_cpu_time_qos_user_initiated",
                "ri_cpu_time_qos_user_interactive",
                "ri_billed_system_time",
                "ri_serviced_system_time",
                "ri_logical_writes",
                "ri_lifetime_max_phys_footprint",
                "ri_instructions",
                "ri_cycles",
                "ri_billed_energy",
                "ri_serviced_energy",
                "ri_interval_max_phys_footprint",
                "ri_runnable_time",
            )
        ],
    ]


_proc_pid_rusage = None


def _rusage_call():
    """libSystem's ``proc_pid_rusage`` (macOS), loaded once; OSError where there is none."""
    global _proc_pid_rusage
    if _proc_pid_rusage is None:
        call = ctypes.CDLL("/usr/lib/libSystem.B.dylib", use_errno=True).proc_pid_rusage
        call.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(RusageInfoV4)]
        call.restype = ctypes.c_int
        _proc_pid_rusage = call
    return _proc_pid_rusage


def phys_footprint() -> int:
    """This process's lifetime maximum physical footprint in bytes (macOS:
    ``ri_lifetime_max_phys_footprint`` of ``proc_pid_rusage``), the peak of the figure
    Activity Monitor shows as a process's memory, GPU memory included. OSError elsewhere,
    or when the call fails."""
    info = RusageInfoV4()
    if _rusage_call()(os.getpid(), RUSAGE_INFO_V4, ctypes.byref(info)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"proc_pid_rusage: {os.strerror(err)}")
    return int(info.ri_lifetime_max_phys_footprint)


def macos_counters() -> dict:
    """``{"phys_footprint": phys_footprint}`` on macOS where the call answers; else (Linux,
    Windows, a macOS without it) nothing. Never raises."""
    if sys.platform != "darwin":
        return {}
    try:
        phys_footprint()
    except (OSError, AttributeError):
        return {}
    return {"phys_footprint": phys_footprint}


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
        self.segments = 1  # processes whose samples the peaks cover (``continue_from`` adds earlier ones)

    def sample(self) -> None:
        for name, read in self.counters.items():
            self.peaks[name] = max(self.peaks[name], int(read()))
        self.loaded.update(frameworks_loaded())
        self.samples += 1

    def record(self) -> dict:
        """run.json's ``memory``: each counter's peak in bytes, the primary counter's name,
        how many samples were taken and when, the frameworks the process held at them, and the
        segments (processes) they cover."""
        return {
            "peak_bytes": dict(self.peaks),
            "primary": next(iter(self.counters)),
            "samples": self.samples,
            "sampled": SAMPLED,
            "frameworks_loaded": sorted(self.loaded),
            "segments": self.segments,
        }

    def state(self) -> dict:
        """What a checkpoint carries: the peaks (bytes) and samples so far, the segments covered."""
        return {"peak_bytes": dict(self.peaks), "samples": self.samples, "segments": self.segments}

    def continue_from(self, state: dict) -> None:
        """Take the earlier segments' peaks (``state`` of the checkpoint resumed): each
        counter's peak is the largest over all segments; this process is one segment more."""
        for name, peak in state.get("peak_bytes", {}).items():
            if name in self.peaks:
                self.peaks[name] = max(self.peaks[name], int(peak))
        self.samples += int(state.get("samples", 0))
        self.segments = int(state.get("segments", 1)) + 1
