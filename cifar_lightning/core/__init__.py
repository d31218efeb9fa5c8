"""The framework-neutral core: imports numpy and the standard library only (matplotlib
for plots, filelock for the training lock), never torch, Lightning or MLX.

    spec        model names, architecture numbers, parameter names both builders share
    recipes     per-model recipes, optimiser arguments (sgd_args), schedules, targets
    datasets    the validating reader of the official CIFAR files
    data        CIFARData: splits, per-epoch order and draws, batches as index arrays
    draws       the per-image random draws (crop, flip, cutout) and where pixels come from
    seeds       independent random streams from (seed, purpose, epoch)
    metrics     accuracy, per-class accuracy, confusion matrix, cross-entropy in numpy
    whitening   the fast net's whitening filters from training patches
    weights     weight files of either framework (torch files read lazily with torch)
    cli, run_folder, lock, provenance, reporting, errors, plain
                flags, run folders, the training lock, run.json fields, Results.md
"""
