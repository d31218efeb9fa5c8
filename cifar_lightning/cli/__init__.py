"""The command line: the only place flags are parsed, errors become one line and an exit
status, and argv is read. Each command is a module with a ``main(argv)``, installed as a
console script and wrapped by ``scripts/``:

    flags     the flags fit.py and fit_mlx.py share, checked up front
    predict   cifar-predict (scripts/predict.py): classify images with either framework's checkpoint
    export    cifar-export (scripts/export.py): ONNX, torch.export or MLX files, verified
    inputs    what predict reads: image files, folders, .npy, a test set
    images    a user's image file as the uint8 RGB array the models take
"""
