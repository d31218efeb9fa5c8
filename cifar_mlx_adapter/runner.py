"""What ``scripts/fit_mlx.py`` runs: the same run as scripts/fit.py, natively in MLX.

Started by ``mlx.launch`` as several processes, it trains data-parallel
(``cifar_mlx_adapter.distributed``): every rank checks the flags and reads the data;
rank 0 alone takes the training lock, claims and writes the run folder (metrics.csv,
checkpoints, run.json with the process layout) and tells the others its name. A rank
that fails prints one line naming itself and its error and exits non-zero; the others
lose it at their next exchange, say so in one line each and exit non-zero; rank 0 then
leaves run.json marked failed (resumable from the last checkpoint), never finished.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np

from cifar_lightning.cli.flags import common_parser, log_every_n_steps, model_kwargs, run_cli
from cifar_lightning.core.errors import NonFiniteLossError, UsageError
from cifar_lightning.core.run.provenance import mlx_numerics, mlx_processes
from cifar_lightning.core.run.folder import claim_run_folder
from cifar_lightning.core.recipes import recipe_name
from cifar_lightning.core.run.record import (announce_run, finish, launcher, load_weights_flag, planned_steps, prepare,
                                      record_failure, where_text)  # fmt: skip


def parser() -> argparse.ArgumentParser:
    p = common_parser("Train a CIFAR classifier natively in Apple MLX. Data-parallel over several processes "
                      "when started by mlx.launch (two on this machine: mlx.launch -n 2 scripts/fit_mlx.py; "
                      "two Macs: --hostfile; NVIDIA GPUs with mlx[cuda]: --backend nccl), as fit.py --devices "
                      "is for torch.")
    p.add_argument("--cpu", action="store_true",
                   help="run on the CPU instead of the GPU MLX reports (Metal on a Mac, CUDA with mlx[cuda]) "
                        "(default: the GPU when there is one)")  # fmt: skip
    p.add_argument("--memory-limit", type=float, metavar="GB", help="cap MLX's Metal memory at this many GB "
                                                                    "(default: MLX's own limit)")  # fmt: skip
    return p


def setup_device(args) -> str:
    """The device MLX will use, as named in run.json: "metal" (Apple GPU), "cuda" (an NVIDIA
    GPU through mlx[cuda]) or "cpu" (--cpu, or no GPU)."""
    if args.memory_limit is not None:
        mx.set_memory_limit(int(args.memory_limit * 2**30))
    if args.cpu or not mx.is_available(mx.gpu):
        mx.set_default_device(mx.cpu)
        return "cpu"
    mx.set_default_device(mx.gpu)
    return "metal" if mx.metal.is_available() else "cuda"


def read_mlx_checkpoint(path: str | Path, flag: str) -> dict:
    """The metadata of an MLXTrainer checkpoint (.npz read without pickle). Anything else is
    a UsageError of one line, ``<flag> <file>: <what it is>; expected ...``: the other
    framework's checkpoint, bare weights (no training state), or a file that is no
    checkpoint at all (recognised by content, whatever its name)."""
    from cifar_lightning.core.weights import weights_file_kind

    expected = "expected a fit_mlx.py checkpoint such as <run>/checkpoints/last.npz"
    kind, what = weights_file_kind(path)
    if kind == "torch":
        what += " (resume it with scripts/fit.py)"
    elif kind == "safetensors" or what == "an .npz of weights":
        what += ": weights without training state (start from them with --weights)"
    if what != "an MLX checkpoint":
        raise UsageError(f"{flag} {path}: {what}; {expected}")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
    except Exception as e:  # any parse error of a damaged file; KeyboardInterrupt is no Exception
        what = "an .npz holding pickled objects (refused: nothing in it was run)" if "pickle" in str(e) else \
            f"an MLX checkpoint that does not read ({type(e).__name__})"  # fmt: skip
        raise UsageError(f"{flag} {path}: {what}; {expected}") from None
    if not isinstance(meta, dict) or not {"global_step", "epoch", "total_steps"} <= meta.keys():
        raise UsageError(f"{flag} {path}: an .npz whose meta is not fit_mlx.py's; {expected}")
    return meta


def validate_mlx_flags(args) -> None:
    if args.memory_limit is not None and args.memory_limit <= 0:
        raise UsageError(f"--memory-limit must be a positive number of GB, got {args.memory_limit}")


def make_data(args: argparse.Namespace, recipe):
    """The framework-neutral CIFARData the flags and the recipe describe (no torch)."""
    from cifar_lightning.core.data import CIFARData

    return CIFARData(args.dataset, args.data_dir, batch_size=recipe.batch_size, val_size=args.val_size,
                     seed=recipe.seed, train_subset=args.train_subset, download=not args.no_download,
                     augmentation=recipe.augmentation)  # fmt: skip


def run(args: argparse.Namespace, callbacks: tuple = ()) -> dict:
    from cifar_mlx_adapter.distributed import describe_failure, join_processes

    group = join_processes()  # a group of one unless mlx.launch started several processes
    if group.size() == 1:
        return run_ranks(args, callbacks, None)
    try:
        return run_ranks(args, callbacks, group)
    except Exception as e:  # one line naming this rank (KeyboardInterrupt and SystemExit pass)
        raise describe_failure(e, group.rank(), group.size()) from None


def run_ranks(args: argparse.Namespace, callbacks: tuple, group) -> dict:
    from cifar_lightning.core.run.lock import lock_path, training_lock
    from cifar_lightning.core.run.folder import check_resume_settings, run_settings

    rank, world = (group.rank(), group.size()) if group is not None else (0, 1)
    device = setup_device(args)
    if device == "cpu":
        from cifar_mlx_adapter.blas import slow_blas_warning

        warning = slow_blas_warning()
        if warning:
            print(warning, file=sys.stderr, flush=True)
    resumed = read_mlx_checkpoint(args.resume, "--resume") if args.resume else None
    # rank 0 alone chooses (and later claims) the run folder and holds the lock, once per run
    recipe, dm, out = prepare(args, "mlx", make_data, world, choose_folder=rank == 0)
    settings = run_settings(args, recipe.to_dict(), world)
    if resumed is not None:
        check_resume_settings(resumed.get("settings", {}), settings, args.resume)
    with training_lock(lock_path(args.lock_file) if rank == 0 else None, out, wait=not args.no_wait):
        return train_and_test(args, callbacks, device, recipe, dm, out, settings, group)


def train_and_test(args, callbacks, device, recipe, dm, out, settings, group=None) -> dict:
    import time

    from cifar_lightning.core.model_card import inference_record
    from cifar_lightning.core.run.provenance import package_versions
    from cifar_lightning.core.run.folder import interrupted

    from cifar_mlx_adapter.callbacks import LookaheadAveraging
    from cifar_mlx_adapter.weights import load_file, mlx_state
    from cifar_mlx_adapter.distributed import broadcast_text, layout
    from cifar_lightning.core.spec import FAST
    from cifar_lightning.core.whitening import starting_bias

    from cifar_mlx_adapter.models import count_parameters, init_whitening
    from cifar_mlx_adapter.module import MLXClassifier
    from cifar_mlx_adapter.trainer import MLXTrainer

    rank, world = (group.rank(), group.size()) if group is not None else (0, 1)

    mx.random.seed(recipe.seed)
    module = MLXClassifier(args.model, dm.num_classes, recipe=recipe.to_dict(), class_names=dm.classes,
                           model_kwargs=model_kwargs(args))  # fmt: skip
    if args.weights:
        load_weights_flag(lambda: load_file(module.model, args.weights))
    elif recipe.whiten_bias_epochs and not args.resume:
        dm.setup()
        init_whitening(module.model, dm.normalize(dm.splits["train"][0][: FAST["whiten_images"]]), starting_bias(recipe))
    if rank == 0:
        out = claim_run_folder(out, "mlx", args)  # every check has passed: now the folder is made
    if group is not None:  # the others learn rank 0's folder (they write nothing into it)
        out = Path(broadcast_text(str(Path(out).resolve()) if rank == 0 else None, group))
    if not args.test_only and not args.resume and rank == 0:
        # the starting point, so the other framework can start from the same weights (--weights)
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        np.savez(out / "checkpoints" / "initial.npz", **{k: np.array(v) for k, v in mlx_state(module.model).items()})
    callbacks = list(callbacks)
    if recipe.average_every:
        callbacks.append(LookaheadAveraging(recipe.average_every))
    steps = planned_steps(args, recipe, dm, world)
    architecture = {**recipe.model_kwargs, **model_kwargs(args)}  # e.g. fast_muon's head scale
    trainer = MLXTrainer(max_epochs=recipe.epochs, callbacks=callbacks, default_root_dir=out,
                         log_every_n_steps=log_every_n_steps(args, steps), limit_train_batches=args.limit_train_batches,
                         limit_val_batches=args.limit_val_batches, limit_test_batches=args.limit_test_batches,
                         checkpoint_meta={"settings": settings, "inference": inference_record(
                             args.model, dm.num_classes, dm.classes, args.dataset, architecture)},
                         group=group)  # fmt: skip
    machines, here = layout(group) if group is not None else (1, 1)
    processes = mlx_processes(recipe.batch_size, world, machines, here)
    checkpoint = args.weights
    if rank == 0:
        announce_run(out, args.model, count_parameters(module.model), where_text(device, world, machines), args.test_only,
                     recipe_name(args.model, args.optimizer))
    try:
        if not args.test_only:
            try:
                trainer.fit(module, dm, ckpt_path=args.resume)
            except NonFiniteLossError as e:
                if rank == 0:
                    record_failure(args, out, "mlx", str(e), trainer.last_checkpoint, processes)
                raise
            checkpoint = trainer.save_checkpoint(out / "checkpoints" / "final.npz", module)
        test_start = time.perf_counter()
        test = trainer.test(module, dm, verbose=False)
        test_time = time.perf_counter() - test_start
    except KeyboardInterrupt:
        if rank != 0:
            raise SystemExit(130) from None
        interrupted(out, "fit_mlx.py", args, trainer.last_checkpoint, launcher("mlx", processes))
    except NonFiniteLossError:
        raise
    except Exception as e:  # a lost peer, or this rank's own error: the record says the run failed
        if world > 1 and rank == 0:
            from cifar_mlx_adapter.distributed import describe_failure

            record_failure(args, out, "mlx", str(describe_failure(e, rank, world)), trainer.last_checkpoint, processes)
        raise
    if rank != 0:
        return {}
    args.extra_hparams = {"device": device, **model_kwargs(args)}
    return finish(args, out, dm, recipe, framework="mlx", numerics=mlx_numerics(),
                  processes=processes,
                  versions=package_versions("mlx", "numpy"),
                  accelerator=device, parameters=count_parameters(module.model), steps=trainer.total_steps,
                  times={"train": trainer.train_time_s, "validation": trainer.validation_time_s, "test": test_time},
                  test=test, checkpoint=checkpoint)  # fmt: skip


def main(argv: list[str] | None = None, callbacks: tuple = ()) -> dict:
    return run_cli(parser(), run, argv, callbacks, validate_extra=validate_mlx_flags)
