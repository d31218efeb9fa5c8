"""One run's lifecycle, the same for both frameworks (numpy and the standard library only).

    config      RunConfig: every setting of a run, and its checks
    lifecycle   run(config, backend): the steps of a training or evaluation, written once
    backend     the Backend protocol each framework writes (its framework-shaped steps)
    folder      the run folder: its file names, choosing and claiming it, resume checks,
                Ctrl-C, metrics.csv history
    lock        one training at a time on a machine
    record      run.json: the finished run's record, a failed run's, the printed summary
    files       run.json written atomically, metrics.csv read back, per-class figures
    provenance  what the run ran with: code, hardware, package versions
    plots       the run's confusion matrix and curves

``RunConfig`` and ``run`` are importable from here (loaded on first use).
"""

from importlib import import_module

_NAMES = {
    "RunConfig": "cifar_lightning.core.run.config",
    "run": "cifar_lightning.core.run.lifecycle",
    "RunResult": "cifar_lightning.core.run.lifecycle",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(import_module(_NAMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
