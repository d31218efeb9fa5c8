"""What ``scripts/fit_mlx.py`` runs: the same run as scripts/fit.py, natively in MLX."""

from __future__ import annotations

import argparse
import math
import time

import mlx.core as mx
import numpy as np

from cifar_lightning.cli import UsageError, common_parser, log_every_n_steps, model_kwargs, run_cli
from cifar_lightning.runner import finish, prepare

from .trainer import NonFiniteLossError


def parser() -> argparse.ArgumentParser:
    p = common_parser("Train a CIFAR classifier natively in Apple MLX.")
    p.add_argument("--cpu", action="store_true", help="run on the CPU instead of the Metal GPU")
    p.add_argument("--memory-limit", type=float, metavar="GB", help="cap MLX's Metal memory at this many GB")
    p.add_argument("--limit-train-batches", type=int, help="train on this many batches per epoch only")
    return p


def setup_device(args) -> str:
    """The device MLX will use, as named in run.json ("metal" or "cpu")."""
    if args.memory_limit is not None:
        if args.memory_limit <= 0:
            raise UsageError(f"--memory-limit must be a positive number of GB, got {args.memory_limit}")
        mx.set_memory_limit(int(args.memory_limit * 2**30))
    if args.cpu or not mx.metal.is_available():
        mx.set_default_device(mx.cpu)
        return "cpu"
    return "metal"


def run(args: argparse.Namespace, callbacks: tuple = ()) -> dict:
    from cifar_lightning.recipes import total_steps
    from cifar_lightning.reporting import package_versions

    from .callbacks import LookaheadAveraging
    from .convert import load_file, mlx_state
    from .models import count_parameters, init_whitening
    from .module import MLXClassifier
    from .trainer import MLXTrainer

    device = setup_device(args)
    recipe, dm, out = prepare(args, "mlx")
    mx.random.seed(recipe.seed)
    module = MLXClassifier(args.model, dm.num_classes, recipe=recipe.to_dict(), class_names=dm.classes,
                           model_kwargs=model_kwargs(args))  # fmt: skip
    if args.weights:
        load_file(module.model, args.weights)
    elif recipe.whiten_bias_epochs and not args.resume:
        init_whitening(module.model, dm.normalize(dm.train_images[:5000]).numpy())
    if not args.test_only and not args.resume:
        # the starting point, so the other framework can start from the same weights (--weights)
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        np.savez(out / "checkpoints" / "initial.npz", **{k: np.array(v) for k, v in mlx_state(module.model).items()})
    callbacks = list(callbacks)
    if recipe.average_every:
        callbacks.append(LookaheadAveraging(recipe.average_every))
    steps = total_steps(recipe.epochs, min(len(dm.train_dataloader()), args.limit_train_batches or math.inf))
    trainer = MLXTrainer(max_epochs=recipe.epochs, callbacks=callbacks, default_root_dir=out,
                         log_every_n_steps=log_every_n_steps(args, steps),
                         limit_train_batches=args.limit_train_batches)  # fmt: skip
    train_time = 0.0
    checkpoint = args.weights
    if not args.test_only:
        start = time.perf_counter()
        trainer.fit(module, dm, ckpt_path=args.resume)
        train_time = time.perf_counter() - start
        checkpoint = trainer.save_checkpoint(out / "checkpoints" / "final.npz", module)
    test = trainer.test(module, dm, verbose=False)
    args.extra_hparams = {"device": device, "limit_train_batches": args.limit_train_batches, **model_kwargs(args)}
    return finish(args, out, dm, recipe, framework="mlx", versions=package_versions("mlx", "torch", "torchmetrics"),
                  accelerator=device, parameters=count_parameters(module.model), steps=trainer.total_steps,
                  train_time=train_time, test=test, checkpoint=checkpoint)  # fmt: skip


def main(argv: list[str] | None = None, callbacks: tuple = ()) -> dict:
    return run_cli(parser(), run, argv, callbacks, extra_errors=(NonFiniteLossError,))
