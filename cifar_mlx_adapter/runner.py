"""What ``scripts/fit_mlx.py`` runs: the same run as scripts/fit.py, natively in MLX."""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path

import mlx.core as mx
import numpy as np

from cifar_lightning.core.cli import common_parser, log_every_n_steps, model_kwargs, run_cli
from cifar_lightning.core.errors import NonFiniteLossError, UsageError
from cifar_lightning.core.run_folder import claim_run_folder
from cifar_lightning.core.runs import finish, load_weights_flag, planned_steps, prepare, record_failure


def parser() -> argparse.ArgumentParser:
    p = common_parser("Train a CIFAR classifier natively in Apple MLX.")
    p.add_argument("--cpu", action="store_true", help="run on the CPU instead of the Metal GPU")
    p.add_argument("--memory-limit", type=float, metavar="GB", help="cap MLX's Metal memory at this many GB "
                                                                    "(default: MLX's own limit)")  # fmt: skip
    return p


def setup_device(args) -> str:
    """The device MLX will use, as named in run.json ("metal" or "cpu")."""
    if args.memory_limit is not None:
        mx.set_memory_limit(int(args.memory_limit * 2**30))
    if args.cpu or not mx.metal.is_available():
        mx.set_default_device(mx.cpu)
        return "cpu"
    return "metal"


def read_mlx_checkpoint(path: str | Path, flag: str) -> dict:
    """The metadata of an MLXTrainer checkpoint (.npz read without pickle); UsageError for
    another framework's checkpoint, or a file that is no such checkpoint."""
    if str(path).endswith((".ckpt", ".pt", ".pth")):
        raise UsageError(f"{flag} {path} is a PyTorch checkpoint: resume it with scripts/fit.py")
    try:
        with np.load(path, allow_pickle=False) as z:
            return json.loads(str(z["meta"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise UsageError(f"{flag} {path} is not an MLX checkpoint written by fit_mlx.py ({type(e).__name__})") from None


def validate_mlx_flags(args) -> None:
    if args.memory_limit is not None and args.memory_limit <= 0:
        raise UsageError(f"--memory-limit must be a positive number of GB, got {args.memory_limit}")


def make_data(args: argparse.Namespace, recipe):
    """The framework-neutral CIFARData the flags and the recipe describe (no torch)."""
    from cifar_lightning.core.data import CIFARData
    from cifar_lightning.core.draws import Augmentation

    return CIFARData(args.dataset, args.data_dir, batch_size=recipe.batch_size, val_size=args.val_size,
                     seed=recipe.seed, train_subset=args.train_subset, download=not args.no_download,
                     augmentation=Augmentation(recipe.crop_padding, recipe.pad_mode, recipe.flip, recipe.cutout))  # fmt: skip


def run(args: argparse.Namespace, callbacks: tuple = ()) -> dict:
    from cifar_lightning.core.lock import lock_path, training_lock
    from cifar_lightning.core.run_folder import check_resume_settings, run_settings

    device = setup_device(args)
    resumed = read_mlx_checkpoint(args.resume, "--resume") if args.resume else None
    recipe, dm, out = prepare(args, "mlx", make_data)
    settings = run_settings(args, recipe.to_dict())
    if resumed is not None:
        check_resume_settings(resumed.get("settings", {}), settings, args.resume)
    with training_lock(lock_path(args.lock_file), out, wait=not args.no_wait):
        return train_and_test(args, callbacks, device, recipe, dm, out, settings)


def train_and_test(args, callbacks, device, recipe, dm, out, settings) -> dict:
    from cifar_lightning.core.reporting import package_versions
    from cifar_lightning.core.run_folder import resume_command

    from .callbacks import LookaheadAveraging
    from .convert import load_file, mlx_state
    from .models import count_parameters, init_whitening
    from .module import MLXClassifier
    from .trainer import MLXTrainer

    mx.random.seed(recipe.seed)
    module = MLXClassifier(args.model, dm.num_classes, recipe=recipe.to_dict(), class_names=dm.classes,
                           model_kwargs=model_kwargs(args))  # fmt: skip
    if args.weights:
        load_weights_flag(lambda: load_file(module.model, args.weights))
    elif recipe.whiten_bias_epochs and not args.resume:
        dm.setup()
        init_whitening(module.model, dm.normalize(dm.splits["train"][0][:5000]))
    out = claim_run_folder(out, "mlx", args)  # every check has passed: now the folder is made
    if not args.test_only and not args.resume:
        # the starting point, so the other framework can start from the same weights (--weights)
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        np.savez(out / "checkpoints" / "initial.npz", **{k: np.array(v) for k, v in mlx_state(module.model).items()})
    callbacks = list(callbacks)
    if recipe.average_every:
        callbacks.append(LookaheadAveraging(recipe.average_every))
    steps = planned_steps(args, recipe, dm)
    trainer = MLXTrainer(max_epochs=recipe.epochs, callbacks=callbacks, default_root_dir=out,
                         log_every_n_steps=log_every_n_steps(args, steps), limit_train_batches=args.limit_train_batches,
                         limit_val_batches=args.limit_val_batches, limit_test_batches=args.limit_test_batches,
                         checkpoint_meta={"settings": settings})  # fmt: skip
    checkpoint = args.weights
    try:
        if not args.test_only:
            try:
                trainer.fit(module, dm, ckpt_path=args.resume)
            except NonFiniteLossError as e:
                record_failure(args, out, "mlx", str(e), trainer.last_checkpoint)
                raise
            checkpoint = trainer.save_checkpoint(out / "checkpoints" / "final.npz", module)
        test = trainer.test(module, dm, verbose=False)
    except KeyboardInterrupt:
        if trainer.last_checkpoint and not args.test_only:
            hint = resume_command("fit_mlx.py", args.argv, trainer.last_checkpoint)
            print(f"\ninterrupted; resume with:\n  {hint}", file=sys.stderr, flush=True)
        else:
            print("\ninterrupted before the first checkpoint: nothing to resume", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    args.extra_hparams = {"device": device, **model_kwargs(args)}
    from cifar_lightning.core.provenance import mlx_numerics, single_process

    return finish(args, out, dm, recipe, framework="mlx", numerics=mlx_numerics(),
                  processes=single_process(recipe.batch_size), versions=package_versions("mlx", "numpy"),
                  accelerator=device, parameters=count_parameters(module.model), steps=trainer.total_steps,
                  train_time=0.0 if args.test_only else trainer.train_time_s, test=test, checkpoint=checkpoint)  # fmt: skip


def main(argv: list[str] | None = None, callbacks: tuple = ()) -> dict:
    return run_cli(parser(), run, argv, callbacks, validate_extra=validate_mlx_flags)
