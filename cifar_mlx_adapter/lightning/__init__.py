"""Lightning's API in MLX: ``MLXModule`` (a LightningModule that is an ``mlx.nn.Module``),
``MLXTrainer`` (``L.Trainer``'s arguments, loops and hook order), Lightning-signature
callbacks and loggers. Nothing here knows CIFAR; ``cifar_mlx_adapter.MLXClassifier`` is
one user of it. Importing it loads MLX but never torch.
"""
