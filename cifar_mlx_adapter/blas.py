"""A fast BLAS for MLX's CPU build on Linux, without root (standard library only).

``mlx[cpu]`` on Linux links a reference BLAS: a SmallCNN training step runs at 12.3
images/s on a 2-core x86-64 CPU, against 147.4 with OpenBLAS (``scripts/benchmark.py
--cases mlx``, ``runs/benchmarks.json``). BLAS cannot be swapped inside a running process, so a
process that wants the fast one starts again with OpenBLAS preloaded (``LD_PRELOAD``),
which MLX's calls to ``cblas_sgemm`` and the like then resolve to.

The OpenBLAS comes from the ``cmeel-openblas`` wheel (a dependency of this package on
x86-64 Linux; its ``libopenblas.so.0`` exports the plain cblas/LAPACK names), else from
Debian's ``libopenblas0-pthread`` when a system has it. That wheel's library needs the
Fortran runtime ``libgfortran.so.5``; where the system has none, the copy ``mlx[cpu]``
(or numpy) ships under a hashed name is linked as ``libgfortran.so.5`` in a cache folder
of the user's and put on ``LD_LIBRARY_PATH``. Before a process starts again, a child
Python checks that it starts with these settings, so a broken set-up falls back to the
slow BLAS with a warning instead of a process that cannot start.

``CIFAR_FAST_BLAS=0`` turns all of it off (to measure the difference).
"""

from __future__ import annotations

import ctypes.util
import glob
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SWITCH = "CIFAR_FAST_BLAS"  # "0": keep MLX's own BLAS; "on": set by the restart, so it happens once
DEBIAN_OPENBLAS = Path("/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0")


def needed() -> bool:
    """True on Linux, where MLX's CPU build ships the slow reference BLAS."""
    return sys.platform.startswith("linux")


def active() -> bool:
    """Whether this process runs with an OpenBLAS preloaded (by us or by the user)."""
    return "openblas" in os.environ.get("LD_PRELOAD", "")


def openblas_library() -> Path | None:
    """libopenblas.so.0 of the cmeel-openblas wheel, else Debian's, else None."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        wheel = Path(distribution("cmeel-openblas").locate_file("cmeel.prefix/lib/libopenblas.so.0"))
        if wheel.is_file():
            return wheel
    except PackageNotFoundError:
        pass
    return DEBIAN_OPENBLAS if DEBIAN_OPENBLAS.is_file() else None


def _shipped_gfortran() -> Path | None:
    """The Fortran runtime a wheel of mlx[cpu] or numpy ships (auditwheel names it
    libgfortran-<hash>.so.5...), found without importing either package."""
    for package, libs in (("mlx", "mlx_cpu.libs"), ("numpy", "numpy.libs")):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        folder = Path(list(spec.submodule_search_locations)[0]).parent / libs
        found = sorted(glob.glob(str(folder / "libgfortran*.so.5*")))
        if found:
            return Path(found[0])
    return None


def _link_folder() -> Path:
    """A folder of the user's for the libgfortran.so.5 link (the cache, else the temp folder)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cifar-lightning-mlx" / "lib"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        return cache
    except OSError:
        fallback = Path(tempfile.gettempdir()) / f"cifar-lightning-mlx-{os.getuid()}" / "lib"
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback


def _gfortran_folders() -> list[str] | None:
    """Folders to add to LD_LIBRARY_PATH so libgfortran.so.5 resolves ([] when the system has
    it; None when no copy can be found)."""
    if ctypes.util.find_library("gfortran"):
        return []
    shipped = _shipped_gfortran()
    if shipped is None:
        return None
    folder = _link_folder()
    link = folder / "libgfortran.so.5"
    if not link.is_symlink() or Path(os.readlink(link)) != shipped:
        tmp = folder / f".libgfortran.so.5.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(shipped)
        os.replace(tmp, link)  # atomic: another process may read the link meanwhile
    # the shipped copy finds its own libquadmath-<hash> through $ORIGIN, which is the link's folder
    return [str(folder), str(shipped.parent)]


def environment() -> dict[str, str] | None:
    """The variables that preload OpenBLAS for a new process, or None where it cannot be had."""
    library = openblas_library()
    if library is None:
        return None
    folders = [] if library == DEBIAN_OPENBLAS else _gfortran_folders()
    if folders is None:
        return None
    env = {"LD_PRELOAD": " ".join(filter(None, [str(library), os.environ.get("LD_PRELOAD", "")])), SWITCH: "on"}
    if folders:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [*folders, os.environ.get("LD_LIBRARY_PATH", "")]))
    return env


# A 1x2 by 2x1 float32 product through both entry points a preloaded OpenBLAS serves: the
# Fortran ``sgemm_`` (torch's CPU matmul) and ``cblas_sgemm`` (MLX's). Run in a child process
# with the preload set, it proves that the library runs on this CPU: cmeel-openblas 0.3.31's
# interface code uses AVX-512 instructions and dies with SIGILL on a CPU without them (an AMD
# EPYC with AVX2 only), which merely starting Python does not show.
GEMM_CHECK = """
import ctypes
lib = ctypes.CDLL(None)
f = ctypes.c_float
a, b, c = (f * 2)(1.0, 2.0), (f * 2)(2.0, 2.0), (f * 1)(0.0)
one, zero, n1, n2 = f(1.0), f(0.0), ctypes.c_int(1), ctypes.c_int(2)
lib.sgemm_(b"N", b"N", ctypes.byref(n1), ctypes.byref(n1), ctypes.byref(n2), ctypes.byref(one), a,
           ctypes.byref(n1), b, ctypes.byref(n2), ctypes.byref(zero), c, ctypes.byref(n1))
print(c[0])
c[0] = 0.0
lib.cblas_sgemm(101, 111, 111, 1, 1, 2, one, a, 2, b, 1, zero, c, 1)
print(c[0])
"""


def restart_environment() -> dict[str, str] | None:
    """The whole environment to start this process again with OpenBLAS preloaded, once, on
    Linux; None when it already runs with one, ``CIFAR_FAST_BLAS=0`` says no, or none can
    be had (then MLX runs with its own BLAS)."""
    if not needed() or active() or os.environ.get(SWITCH) in ("0", "on"):
        return None
    extra = environment()
    if extra is None:
        return None
    env = {**os.environ, **extra}
    try:  # a preload that stops Python from starting, or a matmul, must not stop the user's command
        check = subprocess.run([sys.executable, "-c", GEMM_CHECK], env=env, capture_output=True, timeout=60)
        ok = check.returncode == 0 and check.stdout.split() == [b"6.0", b"6.0"]
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        print(
            f"warning: the OpenBLAS in LD_PRELOAD ({extra['LD_PRELOAD'].split()[0]}) does not run a matrix "
            "product on this CPU: keeping the reference BLAS",
            file=sys.stderr,
        )
    return env if ok else None


def restart_with_openblas(argv: list[str]) -> None:
    """Replace this process by ``sys.executable *argv`` with OpenBLAS preloaded, when
    ``restart_environment`` gives one; else return."""
    env = restart_environment()
    if env is not None:
        os.execve(sys.executable, [sys.executable, *argv], env)


def in_use() -> str:
    """The BLAS MLX's CPU kernels call in this process, as run.json records it for an MLX run
    on the CPU: its speed there differs about 12x between them (see the module docstring)."""
    if sys.platform == "darwin":
        return "Accelerate (macOS)"
    preloaded = next((p for p in os.environ.get("LD_PRELOAD", "").split() if "openblas" in p), None)
    return f"OpenBLAS, preloaded: {preloaded}" if preloaded else "MLX's own reference BLAS"


def slow_blas_warning() -> str | None:
    """The one line an MLX run on a Linux CPU prints when it trains with the slow BLAS."""
    if not needed() or active():
        return None
    if os.environ.get(SWITCH) == "0":
        return None  # asked for on purpose
    if openblas_library() is not None:  # installed, only not preloaded: a script of the user's own
        return (
            "warning: MLX runs on this CPU with its reference BLAS, about 12x slower than with OpenBLAS, "
            "which is installed but not preloaded: call cifar_mlx_adapter.blas.restart_with_openblas(sys.argv) "
            "first thing in your script (the scripts do)"
        )
    return (
        "warning: MLX runs on this CPU with its reference BLAS, about 12x slower than with OpenBLAS: "
        "pip install cmeel-openblas (x86-64 Linux) or apt-get install libopenblas0-pthread"
    )
