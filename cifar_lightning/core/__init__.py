"""The framework-neutral core: imports numpy and the standard library only (matplotlib
for plots, scipy for the t-tests, filelock for the training lock), never torch, Lightning or MLX.

    spec        model names, architecture numbers, parameter names both builders share
    recipes     per-model recipes, optimiser arguments (sgd_args), schedules, targets
    datasets    the validating reader of the official CIFAR files
    data        CIFARData: splits, per-epoch order and draws, batches as index arrays
    draws       the per-image random draws (crop, flip, cutout) and where pixels come from
    seeds       independent random streams from (seed, purpose, epoch)
    metrics     accuracy, per-class accuracy, confusion matrix, cross-entropy in numpy
    whitening   the fast net's whitening filters from training patches
    weights     weight files of either framework (torch files read lazily with torch)
    reporting   what a run writes about itself: run.json's fields, metrics.csv read back
    plots       a run's confusion matrix and curves, PyTorch-vs-MLX curves (matplotlib)
    run_logs    run.json logs read back: status, code, device class, time spans
    grouping    which runs count together: recipe runs, repeats, PyTorch-vs-MLX groups
    pairing     MLX runs started from a PyTorch run's initial weights
    significance  mean and spread, Welch's and the paired t-test (scipy) behind the verdicts
    results     Results.md's text: tables, targets, groups, pairs, verdicts
    blas        OpenBLAS for MLX's CPU build on Linux, preloaded without root
    cli, run_folder, lock, provenance, errors, plain
                flags, run folders, the training lock, run.json fields
"""
