"""Data-parallel MLX: one process per device, started by ``mlx.launch``, joined by ``mx.distributed``.

``mlx.launch`` starts each process with ``MLX_RANK`` set (and, for the ring backend, a
hostfile in ``MLX_HOSTFILE``; for NCCL, ``NCCL_HOST_IP`` and ``MLX_WORLD_SIZE``).
``join_processes`` turns that into the global ``mx.distributed.Group``; a process started
without a launcher is a group of one. What the processes exchange (gradients in the
compiled step, evaluation counts, rank 0's run folder and BatchNorm statistics) is in
``MLXTrainer`` and ``cifar_mlx_adapter.backend``; the helpers here are what they share.

Failures: a process that cannot reach the others within ``CIFAR_MLX_CONNECT_TIMEOUT``
seconds (default 120) is ended with one line (SIGTERM: status 143 in a shell); a
process whose peer died sees ``mx.distributed``'s RuntimeError at its next exchange,
which ``describe_failure`` turns into one line naming the ranks.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import zlib

import mlx.core as mx
import numpy as np

from cifar_lightning.core.errors import CIFARError, ExitCode

CONNECT_TIMEOUT_ENV = "CIFAR_MLX_CONNECT_TIMEOUT"  # seconds a process waits for the others to join
DEFAULT_CONNECT_TIMEOUT = 120.0


class ProcessFailure(CIFARError):
    """A rank of a multi-process run failed (its own error, or a lost peer): one line
    naming the rank, with the exit status of the error behind it."""

    def __init__(self, message: str, exit_code: int = ExitCode.PROCESSES):
        super().__init__(message)
        self.exit_code = exit_code


def launched() -> bool:
    """Whether a launcher (``mlx.launch``, or a test spawning ranks) started this process as
    one of several: ``MLX_RANK`` is set and a ring hostfile or an NCCL/MPI world is given."""
    if "MLX_RANK" not in os.environ and "OMPI_COMM_WORLD_SIZE" not in os.environ:
        return False
    world = os.environ.get("MLX_WORLD_SIZE") or os.environ.get("OMPI_COMM_WORLD_SIZE")
    if world is not None:
        return int(world) > 1
    hostfile = os.environ.get("MLX_HOSTFILE", "")
    if not hostfile or not os.path.isfile(hostfile):
        return False
    try:
        with open(hostfile) as f:
            return len(json.load(f)) > 1
    except (OSError, ValueError, TypeError):
        return True  # let mx.distributed say what is wrong with it


def connect_timeout() -> float:
    """Seconds to wait for the other processes (``CIFAR_MLX_CONNECT_TIMEOUT``, default 120)."""
    value = os.environ.get(CONNECT_TIMEOUT_ENV)
    try:
        seconds = float(value) if value else DEFAULT_CONNECT_TIMEOUT
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ProcessFailure(f"{CONNECT_TIMEOUT_ENV}={value}: expected a positive number of seconds", 2)
    return seconds


def join_processes() -> mx.distributed.Group:
    """The global group: every process ``mlx.launch`` started (a group of one without a
    launcher). Raises ProcessFailure (one line, status 5) when the backend refuses to
    start; a process that has not reached the others after ``connect_timeout()`` seconds
    (the ring backend's listening rank waits forever on its own) is ended (SIGTERM) by a
    watchdog that prints one line."""
    if not launched():
        return mx.distributed.init()
    rank = os.environ.get("MLX_RANK") or os.environ.get("OMPI_COMM_WORLD_RANK") or "?"
    seconds = connect_timeout()

    # mx.distributed.init holds the GIL while it waits, so no Python thread or signal handler
    # of this process can run: a small watchdog process prints the line and ends this one
    message = (
        f"error: rank {rank}: could not reach the other processes within {seconds:g} s "
        f"({CONNECT_TIMEOUT_ENV}); check that every rank was started and that the hosts "
        "reach each other"
    )
    watchdog = subprocess.Popen(
        [sys.executable, "-c", WATCHDOG, str(os.getpid()), str(seconds), message],
        stdin=subprocess.PIPE,
        env={"PATH": os.environ.get("PATH", "")},
    )
    try:
        group = mx.distributed.init(strict=True)
    except RuntimeError as e:
        raise ProcessFailure(f"rank {rank}: could not join the other processes: {one_line(e)}") from None
    finally:
        watchdog.stdin.close()  # joined (or failed): the watchdog exits without a word
        watchdog.wait()
    return group


WATCHDOG = """
import os, select, signal, sys
pid, seconds, message = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
ready, _, _ = select.select([sys.stdin], [], [], seconds)
if not ready:
    print(message, file=sys.stderr, flush=True)
    os.kill(pid, signal.SIGTERM)
"""


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def lost_peer(error: BaseException) -> bool:
    """Whether `error` is mx.distributed's report of a peer that died or closed its end."""
    text = str(error)
    return isinstance(error, RuntimeError) and any(k in text for k in ("[ring]", "[nccl]", "[mpi]", "peer"))


def describe_failure(error: BaseException, rank: int, world: int) -> ProcessFailure:
    """One line naming this rank and what went wrong: the lost peer (named when there is
    only one other), or this rank's own error (its type and message). A library error
    (``CIFARError``) keeps its exit status."""
    where = f"rank {rank} of {world}"
    if lost_peer(error):
        peer = f"rank {1 - rank}" if world == 2 else "another rank"
        return ProcessFailure(
            f"{where}: lost the connection to {peer}, which failed or was killed "
            f"(its own line says why, unless it was killed) [{one_line(error)}]"
        )
    if isinstance(error, CIFARError):
        code = getattr(error, "exit_code", ExitCode.USAGE)  # a CIFARError's own status, a bug's 2
        return ProcessFailure(f"{where}: {one_line(error)}", code)
    return ProcessFailure(f"{where} failed: {type(error).__name__}: {one_line(error)}")


# ------------------------------------------------------------------ exchanges
def broadcast_text(text: str | None, group: mx.distributed.Group, size: int = 4096) -> str:
    """Rank 0's `text` (UTF-8, at most `size` bytes) on every rank; the others pass None."""
    data = np.zeros(size, dtype=np.int32)
    if group.rank() == 0:
        raw = np.frombuffer(text.encode(), dtype=np.uint8)
        if len(raw) > size:
            raise ValueError(f"text of {len(raw)} bytes exceeds the {size} a broadcast carries")
        data[: len(raw)] = raw
    summed = np.array(mx.distributed.all_sum(mx.array(data), group=group))
    return bytes(summed[summed > 0].astype(np.uint8)).decode()


def broadcast_arrays(arrays: dict[str, mx.array], group: mx.distributed.Group) -> dict[str, mx.array]:
    """Rank 0's value of every array, on every rank: one ``all_sum`` per dtype of the arrays
    packed flat, to which the other ranks add zeros (exact: x + 0 = x). The packed input
    is a fresh array on every rank, so each rank's graph, and the order of its exchanges,
    is the same: exchanges are lazy, and a rank whose graph skipped one still pending
    (say the last step's gradients) would pair the rest with the wrong partners."""
    mine = group.rank() == 0
    mx.eval(arrays)  # on every rank: exchanges still pending in their graphs run first, in step
    out: dict[str, mx.array] = {}
    by_dtype: dict = {}
    for k, v in arrays.items():
        by_dtype.setdefault(v.dtype, []).append(k)
    for dtype, keys in by_dtype.items():
        sizes = [arrays[k].size for k in keys]
        if mine:
            flat = mx.concatenate([arrays[k].reshape(-1) for k in keys])
            mx.eval(flat)
            flat = mx.array(np.array(flat))  # no graph behind it, as on the other ranks
        else:  # from numpy: mx.zeros is one broadcast element, which the ring backend mis-sends
            flat = mx.array(np.zeros(sum(sizes), dtype=np.array(arrays[keys[0]][:0]).dtype))
        summed = mx.distributed.all_sum(flat, group=group)
        mx.eval(summed)
        start = 0
        for k, n in zip(keys, sizes):
            out[k] = summed[start : start + n].reshape(arrays[k].shape)
            start += n
    mx.eval(out)
    return out


def gather_rows(row: np.ndarray, group: mx.distributed.Group) -> np.ndarray:
    """(world, len(row)): every rank's `row` of uint32 words, in rank order. Exact for any
    bits, so float64 sums travel as their two words (``float64_words``)."""
    gathered = mx.distributed.all_gather(mx.array(np.ascontiguousarray(row, dtype=np.uint32))[None], group=group)
    return np.array(gathered, dtype=np.uint32).reshape(group.size(), -1)


def float64_words(values: np.ndarray) -> np.ndarray:
    """float64 (n,) -> uint32 (2n,): the same bits."""
    return np.ascontiguousarray(values, dtype=np.float64).view(np.uint32)


def words_float64(words: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(words, dtype=np.uint32).view(np.float64)


def layout(group: mx.distributed.Group) -> tuple[int, int]:
    """(machines, processes on this machine): hosts told apart by their names' CRC32."""
    host = zlib.crc32(socket.gethostname().encode())
    hosts = gather_rows(np.array([host], dtype=np.uint32), group)[:, 0]
    return len(set(hosts.tolist())), int((hosts == host).sum())
