"""The framework-neutral core: numpy and the standard library only (matplotlib for a run's
plots, filelock for the training lock), never torch, torchvision, Lightning, MLX or either
framework's wing; ``tests/test_core.py`` reads every function body to keep it so.

    spec        model names, architecture numbers, parameter names both builders share
    recipes     per-model recipes, optimiser arguments (sgd_args), schedules, targets
    datasets    the validating reader of the official CIFAR files, and their download
    data        CIFARData: splits, per-epoch order and draws, batches as index arrays
    draws       the per-image random draws (crop, flip, cutout) and where pixels come from
    seeds       independent random streams from (seed, purpose, epoch)
    metrics     accuracy, per-class accuracy, confusion matrix, cross-entropy in numpy
    whitening   the fast net's whitening filters and bias from training images and the seed
    weights     weight files of either framework recognised, MLX files read (numpy only)
    model_card  what a checkpoint says about its model: classes, normalisation, recipe
    predictions top-k, the predictions CSV, the printed summary
    errors      the library's errors and exit statuses
    plain       hyper-parameters as plain values
    run/        one run's lifecycle over a framework's backend: config, folder, lock, record
"""
