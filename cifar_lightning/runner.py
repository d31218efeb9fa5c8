"""What ``scripts/fit.py`` runs: train, test, and log one PyTorch/Lightning run."""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict
from pathlib import Path

from cifar_lightning.cli.flags import common_parser, log_every_n_steps, model_kwargs, run_cli
from cifar_lightning.core.errors import NonFiniteLossError, UsageError
from cifar_lightning.core.run.folder import claim_run_folder
from cifar_lightning.core.recipes import recipe_name
from cifar_lightning.core.run.record import announce_run, finish, load_weights_flag, planned_steps, prepare, record_failure, where_text


def parser() -> argparse.ArgumentParser:
    p = common_parser("Train a CIFAR classifier with PyTorch Lightning.")
    p.add_argument("--accelerator", default="auto", choices=("auto", "cpu", "mps", "cuda"),
                   help="where torch trains; auto: cuda, else mps, else cpu (default: auto)")  # fmt: skip
    p.add_argument("--devices", default="auto", help="number of devices, or auto (default: auto)")
    p.add_argument("--precision", default="32-true",
                   help="Lightning precision: 32-true, 16-mixed, bf16-mixed, 16-true, bf16-true or 64-true; "
                        "run.json records the one used (16-mixed runs as bf16-mixed on cpu) (default: 32-true)")  # fmt: skip
    p.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp for several devices (default: auto)")
    p.add_argument("--num-nodes", type=int, default=1, metavar="N",
                   help="machines training together, each running --devices processes (Lightning's num_nodes; "
                        "start the same command on every machine with MASTER_ADDR, MASTER_PORT, NODE_RANK set, "
                        "see the README's multi-process section); --batch-size is per process (default: 1)")  # fmt: skip
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory format for the convolutions; --no-channels-last keeps NCHW (default: on for "
                        "cpu, where it trains the fast net 1.3x faster, and cuda, as NVIDIA recommends for "
                        "convolutions on tensor cores; off for mps)")  # fmt: skip
    p.add_argument("--compile", action="store_true",
                   help="compile the model with torch.compile (default: off; the first steps are slower while it "
                        "compiles; results differ from eager mode by float rounding, and dropout draws other masks)")  # fmt: skip
    return p


def channels_last_default(accelerator: str) -> bool:
    """NHWC where it is the faster layout for convolutions: the CPU (measured in
    runs/benchmarks.json) and CUDA (NVIDIA's advice for tensor cores); NCHW on MPS."""
    return accelerator in ("cpu", "cuda")


def check_accelerator(name: str) -> str:
    """The accelerator that will be used; one clear line if the one asked for is absent."""
    import torch

    if name == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--accelerator mps: MPS is not available here (it needs Apple silicon, macOS 12.3+ "
                         "and a torch build with MPS); use --accelerator cpu or auto")  # fmt: skip
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--accelerator cuda: no CUDA GPU is visible to torch; use --accelerator cpu or auto")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    return name


def make_datamodule(args: argparse.Namespace, recipe):
    """The CIFARDataModule the flags and the recipe describe."""
    from cifar_lightning.data import CIFARDataModule

    return CIFARDataModule(
        args.dataset, args.data_dir, batch_size=recipe.batch_size, val_size=args.val_size,
        download=not args.no_download, seed=recipe.seed,
        train_subset=args.train_subset, **asdict(recipe.augmentation),
    )  # fmt: skip


def quiet_lightning() -> None:
    """Keep out of a run's output what Lightning prints on every run that is no news here:
    its information lines (seed, GPU/TPU availability, its cloud-logging tip, "fit stopped",
    its own Ctrl-C line: the script prints what trains where and how a run ended),
    "exists and is not empty" about the run folder this script made itself (it holds
    checkpoints/initial.pt; a resumed run's history is kept by ``keep_history``), and a
    deprecation inside Lightning's own pytree helper. Warnings about real problems still
    print."""
    import logging
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in (r"Checkpoint directory .* exists and is not empty", r"Experiment logs directory .* exists and is not empty",
                    r".*isinstance\(treespec, LeafSpec\)"):  # fmt: skip
        warnings.filterwarnings("ignore", message=message)


def read_torch_checkpoint(path: str | Path, flag: str) -> dict:
    """A Lightning checkpoint of fit.py, loaded safely (``weights_only=True``: no code in it
    runs). Anything else is a UsageError of one line, ``<flag> <file>: <what it is>;
    expected ...``: the other framework's checkpoint, bare weights (no training state), or
    a file that is no checkpoint at all (recognised by content, whatever its name)."""
    from cifar_lightning.core.weights import load_torch_file, weights_file_kind

    expected = "expected a fit.py checkpoint such as <run>/checkpoints/last.ckpt"
    kind, what = weights_file_kind(path)
    if kind == "npz" and what == "an MLX checkpoint":
        what += " (resume it with scripts/fit_mlx.py)"
    elif kind in ("npz", "safetensors"):
        what += ": weights without training state (start from them with --weights)"
    if kind != "torch":
        raise UsageError(f"{flag} {path}: {what}; {expected}")
    try:
        checkpoint = load_torch_file(path, expected)
    except UsageError as e:
        raise UsageError(f"{flag} {e}") from None
    if not isinstance(checkpoint, dict):
        raise UsageError(f"{flag} {path}: a PyTorch file holding a {type(checkpoint).__name__}; {expected}")
    if not {"state_dict", "optimizer_states", "global_step", "epoch"} <= checkpoint.keys():
        held = "a Lightning checkpoint" if "state_dict" in checkpoint else "a PyTorch file"
        raise UsageError(f"{flag} {path}: {held} of weights without training state (start from them with "
                         f"--weights); {expected}")  # fmt: skip
    return checkpoint


def world_size(args, accelerator: str) -> int:
    """Processes training together: devices per machine x --num-nodes."""
    import torch

    if str(args.devices).isdigit():
        return int(args.devices) * args.num_nodes
    return (torch.cuda.device_count() if accelerator == "cuda" else 1) * args.num_nodes


def run(args: argparse.Namespace, extra_callbacks: tuple = ()) -> dict:
    from cifar_lightning.core.run.lock import lock_path, training_lock
    from cifar_lightning.core.run.folder import check_resume_settings, ddp_worker_folder, run_settings

    accelerator = check_accelerator(args.accelerator)
    if args.channels_last is None:
        args.channels_last = channels_last_default(accelerator)
    resumed = read_torch_checkpoint(args.resume, "--resume") if args.resume else None
    processes = world_size(args, accelerator)
    recipe, dm, out = prepare(args, "torch", make_datamodule, processes)
    settings = run_settings(args, recipe.to_dict(), processes)
    if resumed is not None:
        check_resume_settings(resumed.get("run", {}).get("settings", {}), settings, args.resume)
    if ddp_worker_folder() is not None:  # rank 0 holds the lock for the whole run
        return train_and_test(args, extra_callbacks, accelerator, recipe, dm, out, settings, resumed)
    with training_lock(lock_path(args.lock_file), out, wait=not args.no_wait):
        return train_and_test(args, extra_callbacks, accelerator, recipe, dm, out, settings, resumed)


def train_and_test(args, extra_callbacks, accelerator, recipe, dm, out, settings, resumed) -> dict:
    import time

    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from cifar_lightning.callbacks import RunBook
    from cifar_lightning.core.spec import FAST
    from cifar_lightning.core.whitening import starting_bias
    from cifar_lightning.callbacks import LookaheadAveraging
    from cifar_lightning.models import init_whitening
    from cifar_lightning.models import count_parameters
    from cifar_lightning.module import CIFARClassifier
    from cifar_lightning.core.run.provenance import package_versions
    from cifar_lightning.core.run.folder import announce_to_ddp_workers, ddp_worker_folder, interrupted, keep_history, read_rows
    from cifar_lightning.core.weights import load_into_torch

    quiet_lightning()
    L.seed_everything(recipe.seed, workers=True)
    module = CIFARClassifier(args.model, dm.num_classes, recipe=recipe.to_dict(), class_names=dm.classes,
                             model_kwargs=model_kwargs(args), channels_last=args.channels_last, compile=args.compile,
                             epochs=recipe.epochs)  # the trainer runs ceil(epochs); the module stops at epochs  # fmt: skip
    if args.weights:
        load_weights_flag(lambda: load_into_torch(module.model, args.weights))
    elif recipe.whiten_bias_epochs and not args.resume:
        init_whitening(module.model, dm.normalize(dm.train_images[: FAST["whiten_images"]]), starting_bias(recipe))
    out = claim_run_folder(out, "torch", args)  # every check has passed: now the folder is made
    worker = ddp_worker_folder() is not None  # a DDP process started by rank 0: the folder is rank 0's
    if world_size(args, accelerator) > 1 and not worker:
        announce_to_ddp_workers(out)
    if not args.test_only and not args.resume and not worker:
        # the starting point, so the other framework can start from the same weights (--weights)
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        torch.save(module.model.state_dict(), out / "checkpoints" / "initial.pt")

    steps = planned_steps(args, recipe, dm)
    book = RunBook(settings)
    # one file, checkpoints/last.ckpt, replaced at every epoch's end (no epochNNN.ckpt beside it)
    last = ModelCheckpoint(dirpath=out / "checkpoints", filename="last", save_top_k=1, enable_version_counter=False)
    from cifar_lightning.callbacks import InferenceRecord
    from cifar_lightning.core.model_card import inference_record

    architecture = {**recipe.model_kwargs, **model_kwargs(args)}  # e.g. fast_muon's head scale
    record = inference_record(args.model, dm.num_classes, dm.classes, args.dataset, architecture)
    callbacks = [last, book, InferenceRecord(record)]
    if recipe.average_every:
        callbacks.append(LookaheadAveraging(recipe.average_every))
    callbacks += list(extra_callbacks)
    history = read_rows(out / "metrics.csv") if args.resume else []  # the CSV logger starts the file anew
    trainer = L.Trainer(
        accelerator=accelerator, devices=args.devices, num_nodes=args.num_nodes, strategy=args.strategy,
        precision=args.precision,
        max_epochs=math.ceil(recipe.epochs), callbacks=callbacks, logger=CSVLogger(out, name="", version=""),
        default_root_dir=out, num_sanity_val_steps=0, log_every_n_steps=log_every_n_steps(args, steps),
        limit_train_batches=args.limit_train_batches, limit_val_batches=args.limit_val_batches,
        limit_test_batches=args.limit_test_batches,
        enable_model_summary=False,  # its FLOPs column reads 0 for these nets; announce_run says what trains
    )  # fmt: skip
    if trainer.global_rank == 0:
        announce_run(out, args.model, count_parameters(module.model),
                     where_text(accelerator, trainer.world_size, trainer.num_nodes), args.test_only,
                     recipe_name(args.model, args.optimizer))

    checkpoint = args.weights
    try:
        if not args.test_only:
            try:
                trainer.fit(module, datamodule=dm, ckpt_path=args.resume, weights_only=True)
            except NonFiniteLossError as e:
                if trainer.global_rank == 0:
                    keep_history(out / "metrics.csv", history, resumed["global_step"] if resumed else 0)
                    record_failure(args, out, "pytorch", str(e), book.last_checkpoint(trainer))
                raise
            steps = module.total_training_steps()  # per rank, as the trainer counts them
            checkpoint = out / "checkpoints" / "final.ckpt"
            trainer.save_checkpoint(checkpoint, weights_only=False)  # the full state, as last.ckpt holds it
        test_start = time.perf_counter()
        results = trainer.test(module, datamodule=dm, verbose=False, weights_only=True)[0]
        test_time = time.perf_counter() - test_start
    except (KeyboardInterrupt, SystemExit) as e:
        # Lightning ends a Ctrl-C with its own shutdown and sys.exit(1); other exits pass through
        if isinstance(e, SystemExit) and not book.interrupted:
            raise
        if trainer.global_rank != 0:
            raise SystemExit(130) from None
        interrupted(out, "fit.py", args, book.last_checkpoint(trainer))
    if trainer.global_rank != 0:
        return {}
    if resumed is not None:  # after the test: the CSV logger rewrites the file when its columns grow
        keep_history(out / "metrics.csv", history, resumed["global_step"])
    results["per_class_accuracy"] = module.per_class_accuracy.numpy()
    results["confusion_matrix"] = module.confusion_matrix.numpy()
    if not recipe.tta:
        results.pop("test/acc_no_tta", None)
    args.extra_hparams = model_kwargs(args)
    return finish(args, out, dm, recipe, framework="pytorch",
                  numerics=torch_numerics(trainer, module.memory_format == torch.channels_last, module.compiled),
                  gpu=torch.cuda.get_device_name(0) if accelerator == "cuda" else None,
                  processes=torch_processes(trainer, recipe.batch_size),
                  versions=package_versions("torch", "lightning", "torchmetrics", "torchvision"),
                  accelerator=accelerator, parameters=count_parameters(module.model), steps=steps,
                  times={"train": book.train_time(), "validation": book.validation_time(), "test": test_time},
                  test=results, checkpoint=checkpoint)  # fmt: skip


def torch_numerics(trainer, channels_last: bool, compiled: bool = False) -> dict:
    """The precision Lightning used (``16-mixed`` on CPU runs as ``bf16-mixed``), the
    float32 matmul precision, TF32 and cuDNN switches, and the memory format."""
    import torch

    return {
        "precision": str(trainer.precision),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "cudnn_enabled": torch.backends.cudnn.enabled,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "memory_format": "channels_last" if channels_last else "contiguous",
        "compiled": compiled,
    }


def torch_processes(trainer, batch_size: int) -> dict:
    """Devices, strategy, world size and the effective batch (images per optimizer step,
    over all processes and accumulated batches)."""
    world = trainer.world_size
    accumulate = trainer.accumulate_grad_batches
    return {
        "devices": trainer.num_devices,
        "num_nodes": trainer.num_nodes,
        # Lightning's registry names: single_device, ddp, fsdp, deepspeed, ... (as MLX's record says single_device)
        "strategy": getattr(trainer.strategy, "strategy_name", None)
        or type(trainer.strategy).__name__.removesuffix("Strategy").lower(),
        "world_size": world,
        "accumulate_grad_batches": accumulate,
        "batch_size_per_process": batch_size,
        "effective_batch_size": batch_size * world * accumulate,
    }


PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true")


def validate_torch_flags(args: argparse.Namespace) -> None:
    """fit.py's own flags, checked before anything is read or made (UsageError naming the flag)."""
    if args.precision not in PRECISIONS:
        raise UsageError(f"--precision {args.precision}: expected one of {', '.join(PRECISIONS)}")
    if args.devices != "auto" and not (args.devices.isdigit() and int(args.devices) >= 1):
        raise UsageError(f"--devices {args.devices}: expected a positive number of devices, or auto")
    if args.num_nodes < 1:
        raise UsageError(f"--num-nodes {args.num_nodes}: expected a positive number of machines")
    from lightning.pytorch.strategies import StrategyRegistry

    strategies = ["auto", *StrategyRegistry.available_strategies()]
    if args.strategy not in strategies:
        raise UsageError(f"--strategy {args.strategy}: expected auto, ddp, ddp_spawn, fsdp or another of "
                         "Lightning's registered strategies")  # fmt: skip


def main(argv: list[str] | None = None, extra_callbacks: tuple = ()) -> dict:
    return run_cli(parser(), run, argv, extra_callbacks, validate_extra=validate_torch_flags)
