"""What ``scripts/export.py`` runs: export a checkpoint's model, then verify the export.

    python scripts/export.py --weights runs/<run>/checkpoints/final.ckpt --format onnx --output model.onnx
    python scripts/export.py --weights runs/<run>/checkpoints/final.npz --format mlx --output model.mlxfn

Formats: ``onnx`` (torch.onnx.export, one file, dynamic batch), ``torch-export`` (a .pt2 of
torch.export) and ``mlx`` (mx.export_function, shapeless batch). Every export takes uint8 RGB
images (N, 32, 32, 3) and returns float32 logits (N, num_classes), the normalisation inside,
and carries the class names, the normalisation, the model and the source checkpoint as
metadata. A checkpoint of either framework exports to every format (the weights convert).

Verification, before the file is put in place (it is written under a temporary name and
renamed only when it passes): the export's logits on the first 256 test images equal the
source model's within ``LOGIT_TOLERANCE``, and its top-1 accuracy on the test set equals
the source model's. A bad flag or checkpoint is one line ``error: ...`` and exit status 2;
a failed verification is one line and exit status 1 (nothing is written).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from cifar_lightning.cli.flags import OneLineParser, exit_with
from cifar_lightning.cli.predict import mlx_installed
from cifar_lightning.core.data import EVAL_BATCH
from cifar_lightning.core.errors import CIFARError, ExitCode, UsageError
from cifar_lightning.weights import read_card

DISTRIBUTION = "cifar-lightning-mlx"  # the project's name in pyproject.toml, what `pip install` knows it by
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding cifar_lightning/: a checkout or site-packages
SUFFIXES = {"onnx": ".onnx", "torch-export": ".pt2", "mlx": ".mlxfn"}
LOGIT_IMAGES = 256  # test images whose logits are compared one by one
# Largest |logit difference| allowed between an export and its source model, absolute, on
# logits of magnitude up to ~6 (measured on the README's SmallCNN checkpoint, first 256 test
# images, 2-core x86-64 CPU): the float32 torch model against itself with another batch size
# (1 vs 256) differs by up to 1.2e-6 (other kernels, other summation order), the MLX model
# against the torch model by up to 3.3e-6, ONNX Runtime against torch by up to 1.3e-6.
# 1e-4 is 30x the largest of these noise floors, and far below what a real fault moves
# (a skipped normalisation moved them by 7 and by 323 in the tests).
LOGIT_TOLERANCE = 1e-4


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(description="Export a checkpoint's model (uint8 images in, logits out) and verify it.")
    p.add_argument(
        "--weights", required=True, metavar="CKPT", help="a checkpoint of fit.py (.ckpt) or fit_mlx.py (.npz)"
    )
    p.add_argument(
        "--format",
        required=True,
        choices=tuple(SUFFIXES),
        help="onnx (ONNX Runtime and other ONNX runtimes), torch-export (a .pt2 for torch.export.load, "
        "AOTInductor, ExecuTorch) or mlx (a .mlxfn for mx.import_function, also from C++)",
    )
    p.add_argument("--output", required=True, metavar="PATH", help="the file to write: .onnx, .pt2 or .mlxfn")
    p.add_argument(
        "--data-dir",
        default="data",
        help="folder holding cifar-10-batches-py/ or cifar-100-python/: the test set the export is "
        "verified on (default: data)",
    )
    p.add_argument(
        "--verify-images",
        type=int,
        metavar="N",
        help="verify the accuracy on the first N test images only (default: the whole test set)",
    )
    return p


def validate(args: argparse.Namespace) -> None:
    suffix = SUFFIXES[args.format]
    output = Path(args.output)
    if output.suffix != suffix:
        raise UsageError(f"--output {output}: expected a {suffix} file for --format {args.format}")
    if not output.parent.is_dir():
        raise UsageError(f"--output {output}: no folder {output.parent}; expected a path in an existing folder")
    if args.verify_images is not None and args.verify_images < 1:
        raise UsageError(f"--verify-images {args.verify_images}: expected 1 or more images")
    if not Path(args.weights).is_file():
        raise UsageError(
            f"--weights {args.weights}: no such file; expected a checkpoint of fit.py (.ckpt) or fit_mlx.py (.npz)"
        )
    if args.format == "mlx" and not mlx_installed():
        raise UsageError("--format mlx: MLX is not installed here; expected Apple silicon, or mlx[cpu] on Linux")
    if args.format == "onnx":
        import importlib.util

        missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
        if missing:
            raise UsageError(
                f"--format onnx: {', '.join(missing)} not installed; expected the export extra: "
                f"{extra_install_command('export')}"
            )


def extra_install_command(extra: str, package_root: Path | None = None) -> str:
    """The command that adds `extra` to this install: in a checkout (an editable install, or
    the scripts run from a clone: `package_root`, the folder holding ``cifar_lightning/``, has
    the project's pyproject.toml) the checkout's, else the installed package's."""
    root = Path(package_root or PACKAGE_ROOT)
    if (root / "pyproject.toml").is_file():
        return f"pip install -e '{root}[{extra}]' (with uv: uv run --extra {extra} ...)"
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def compare(source: np.ndarray, exported: np.ndarray, labels: np.ndarray, images_compared: int) -> dict:
    """Logits of the source and of the export on the same images (N, C): the largest |difference|
    over the first `images_compared`, both top-1 accuracies, and the images whose top-1 differs."""
    n = min(images_compared, len(source))
    return {
        "max_logit_difference": float(np.abs(source[:n] - exported[:n]).max()),
        "source_accuracy": float((source.argmax(1) == labels).mean()),
        "export_accuracy": float((exported.argmax(1) == labels).mean()),
        "top1_differences": int((source.argmax(1) != exported.argmax(1)).sum()),
        "images": len(labels),
    }


def verify(report: dict, tolerance: float = LOGIT_TOLERANCE) -> None:
    """Raise CIFARError (exit status 1) when `report` (``compare``) fails either check."""
    failed = []
    if not report["max_logit_difference"] <= tolerance:  # NaN fails too
        failed.append(f"logits differ by up to {report['max_logit_difference']:.3g} (tolerance {tolerance:g})")
    if report["export_accuracy"] != report["source_accuracy"]:
        failed.append(
            f"test accuracy {100 * report['export_accuracy']:.2f}% against the source's "
            f"{100 * report['source_accuracy']:.2f}%"
        )
    if failed:
        error = CIFARError("verification failed: " + "; ".join(failed) + "; nothing was written")
        error.exit_code = ExitCode.FAILED
        raise error


def in_batches(run, images: np.ndarray, batch: int = EVAL_BATCH) -> np.ndarray:
    return np.concatenate([run(images[i : i + batch]) for i in range(0, len(images), batch)])


def run(args: argparse.Namespace) -> dict:
    """Export, verify, put the file in place; returns the verification report."""
    from cifar_lightning.core.datasets import read_split

    validate(args)
    try:
        card = read_card(args.weights)
    except UsageError as e:
        raise UsageError(f"--weights {e}") from None
    try:  # the test set is read first: a missing one stops the export before anything is written
        images, labels = read_split(args.data_dir, card.dataset, train=False)
    except CIFARError as e:
        raise UsageError(f"--data-dir: {e}") from None
    images = np.ascontiguousarray(images.transpose(0, 2, 3, 1)[: args.verify_images])
    labels = labels[: args.verify_images]
    if args.format == "mlx":
        from cifar_mlx_adapter.export import EXPORTERS, source_runner
    else:
        from cifar_lightning.export import EXPORTERS, source_runner
    export, runner = EXPORTERS[args.format]
    output = Path(args.output)
    tmp = output.with_name(f".{output.name}.tmp{output.suffix}")
    try:
        try:
            source = source_runner(card, args.weights)
        except CIFARError as e:  # weights that do not fit the model the checkpoint names
            raise UsageError(f"--weights {e}") from None
        print(
            f"exporting {card.model} ({card.dataset}, {card.num_classes} classes) from {args.weights} to {args.format}",
            flush=True,
        )
        export(card, args.weights, str(tmp))
        exported, metadata = runner(str(tmp))
        report = compare(in_batches(source, images), in_batches(exported, images), labels, LOGIT_IMAGES)
        report["metadata"] = metadata
        print(
            f"verified on {report['images']} test images: logits within {report['max_logit_difference']:.2g} of "
            f"the source model's on the first {min(LOGIT_IMAGES, report['images'])} (tolerance "
            f"{LOGIT_TOLERANCE:g}); test accuracy {100 * report['export_accuracy']:.2f}% "
            f"(source {100 * report['source_accuracy']:.2f}%)",
            flush=True,
        )
        verify(report)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    size = output.stat().st_size / 2**20
    print(
        f"wrote {output} ({size:.1f} MB): input uint8 (N, 32, 32, 3) RGB, output float32 logits "
        f"(N, {card.num_classes}); metadata: {', '.join(sorted(metadata))}"
    )
    return report


def main(argv: list[str] | None = None, relaunch: bool = False) -> dict:
    """Parse `argv`, export, verify, print; returns the verification report. With `relaunch`
    (the command), an MLX export on Linux first starts the process again, once, with
    OpenBLAS preloaded for mlx[cpu] (``cifar_mlx_adapter.blas``), before MLX is imported."""
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    if relaunch and args.format == "mlx":
        from cifar_mlx_adapter.blas import restart_with_openblas

        restart_with_openblas(sys.argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        exit_with("interrupted: nothing was written", ExitCode.INTERRUPTED)
    except CIFARError as e:
        exit_with(str(e), e.exit_code)


def command() -> None:
    """The console script ``cifar-export``."""
    main(relaunch=True)
