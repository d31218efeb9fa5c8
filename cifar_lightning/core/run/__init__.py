"""One run's lifecycle, the same for both frameworks (numpy and the standard library only).

    folder      the run folder: its file names, choosing and claiming it, resume checks,
                Ctrl-C, metrics.csv history
    lock        one training at a time on a machine
    record      run.json: the finished run's record, a failed run's, the printed summary
    files       run.json written atomically, metrics.csv read back, per-class figures
    provenance  what the run ran with: code, hardware, package versions, numerics
    plots       the run's confusion matrix and curves
"""
