"""Train a CIFAR-10/100 classifier natively in Apple MLX (Metal GPU, or --cpu).

    python scripts/fit_mlx.py                                   # SmallCNN, its recipe
    python scripts/fit_mlx.py --weights runs/<a fit.py run>/checkpoints/final.ckpt --test-only
"""

import os
import sys

# mlx[cpu] on Linux ships a reference BLAS: a SmallCNN step takes about 6x longer than with
# Debian's OpenBLAS preloaded. BLAS cannot be swapped once the process runs, so this script
# re-executes itself once with LD_PRELOAD set when OpenBLAS is installed (before any import).
OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0"


def ensure_fast_blas() -> None:
    if not sys.platform.startswith("linux") or "openblas" in os.environ.get("LD_PRELOAD", ""):
        return
    if os.path.exists(OPENBLAS) and not os.environ.get("CIFAR_BLAS_REEXEC"):
        env = {**os.environ, "LD_PRELOAD": OPENBLAS, "CIFAR_BLAS_REEXEC": "1"}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    print("warning: mlx[cpu] on Linux is about 6x slower without OpenBLAS: sudo apt-get install "
          f"libopenblas0-pthread, then run with LD_PRELOAD={OPENBLAS}", file=sys.stderr, flush=True)  # fmt: skip


if __name__ == "__main__":
    ensure_fast_blas()
    from cifar_mlx_adapter.runner import main

    main()
