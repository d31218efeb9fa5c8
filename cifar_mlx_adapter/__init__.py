"""MLX counterpart of cifar_lightning: same model spec, same hooks, weights that convert both ways."""
