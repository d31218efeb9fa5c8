"""What ``scripts/predict.py`` runs: classify images with either framework's checkpoint.

    python scripts/predict.py --weights runs/<run>/checkpoints/final.ckpt photos/ cat.jpg
    python scripts/predict.py --weights runs/<run>/checkpoints/final.npz cifar10:test --top-k 3

The checkpoint's kind decides the framework (fit.py's .ckpt: PyTorch; fit_mlx.py's .npz:
MLX) unless ``--framework`` names one; the model, its class names and its normalisation come
from the checkpoint (``core.model_card``). The MLX path imports no torch. Inputs are read by
``core.inputs``; the CSV is written by the framework's prediction writer
(``core.predictions.write_predictions_csv``, atomically).

Exit status: 0 when every input was predicted; 2 when any input or flag was bad: one line
``error: <file or flag>: <what it is>; expected <what>`` each. A bad INPUT is left out and the
others are still predicted and written (a file, a folder's file, a .npy or a test set stands
alone: nothing about it changes the others' predictions); a bad flag or checkpoint stops the
run before anything is read or written.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from cifar_lightning.cli.flags import OneLineParser, exit_with
from cifar_lightning.core.errors import CIFARError, ExitCode, UsageError
from cifar_lightning.weights import read_card

PROGRESS_MIN_IMAGES = 2048  # a progress bar from this many images on (the CIFAR test set has 10,000)
FRAMEWORKS = ("pytorch", "mlx")


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(description="Classify images with a checkpoint of fit.py or fit_mlx.py; write a CSV.")
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files (PNG, JPEG, ...: any size, resized to 32x32 with Pillow's bicubic filter), "
        "folders of them (searched recursively), a .npy of uint8 (N, 32, 32, 3) RGB, or "
        "cifar10:test / cifar100:test (the test set in --data-dir)",
    )
    p.add_argument(
        "--weights",
        required=True,
        metavar="CKPT",
        help="a checkpoint of fit.py (.ckpt) or fit_mlx.py (.npz); it holds the model, the class names "
        "and the normalisation",
    )
    p.add_argument(
        "--framework",
        choices=FRAMEWORKS,
        help="framework to predict with (default: the checkpoint's own: pytorch for a .ckpt, mlx for an .npz)",
    )
    p.add_argument(
        "--output",
        default="predictions.csv",
        metavar="PATH",
        help="the CSV to write: input, class_1, prob_1, ... up to --top-k (default: predictions.csv "
        "in the current folder)",
    )
    p.add_argument("--top-k", type=int, default=1, metavar="K", help="classes per image in the CSV (default: 1)")
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="test-time augmentation: average over the image, its mirror and 1-pixel shifts "
        "(default: as the model's recipe tests, on for fast, off for small_cnn and resnet18)",
    )
    p.add_argument("--batch-size", type=int, default=256, help="images per batch (default: 256)")
    p.add_argument(
        "--data-dir",
        default="data",
        help="folder holding cifar-10-batches-py/ or cifar-100-python/, for cifar10:test and "
        "cifar100:test (default: data)",
    )
    p.add_argument("--cpu", action="store_true", help="predict on the CPU even when a GPU is present")
    return p


def mlx_installed() -> bool:
    return importlib.util.find_spec("mlx") is not None


def choose_framework(weights: str, framework: str | None) -> str:
    """--framework, else the checkpoint's own: "pytorch" for a torch file, "mlx" otherwise (the
    content decides, not the name; a file of no weights format is refused later, by
    ``read_model_card``). UsageError when MLX is asked for and not installed."""
    from cifar_lightning.core.weights import weights_file_kind

    chosen = framework or ("pytorch" if weights_file_kind(weights)[0] == "torch" else "mlx")
    if chosen == "mlx" and not mlx_installed():
        how = "" if framework else f"--weights {weights} is an MLX checkpoint, and "
        raise UsageError(
            f"{how}MLX is not installed here (Apple silicon, or mlx[cpu] on Linux); "
            "expected --framework pytorch, which reads MLX checkpoints too"
        )
    return chosen


def choose_framework_or_none(args: argparse.Namespace) -> str | None:
    """The framework the prediction will use, or None when the flags are bad (``run`` then
    says why in one line)."""
    try:
        return choose_framework(args.weights, args.framework) if Path(args.weights).is_file() else None
    except CIFARError:
        return None


def validate(args: argparse.Namespace) -> None:
    """The flags, checked before anything is read; UsageError naming the flag."""
    if args.top_k < 1:
        raise UsageError(f"--top-k {args.top_k}: expected 1 or more classes")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size}: expected 1 or more images")
    output = Path(args.output)
    if output.is_dir():
        raise UsageError(f"--output {output}: a folder; expected the path of a CSV file to write")
    if not output.parent.is_dir():
        raise UsageError(f"--output {output}: no folder {output.parent}; expected a CSV path in an existing folder")
    if not Path(args.weights).is_file():
        raise UsageError(
            f"--weights {args.weights}: no such file; expected a checkpoint of fit.py (.ckpt) or fit_mlx.py (.npz)"
        )


def run(args: argparse.Namespace) -> dict:
    """Predict every readable input and write the CSV; returns {"names", "probabilities",
    "labels", "errors", "framework", "output"} (output None when nothing could be read)."""
    from cifar_lightning.cli.images import display_name
    from cifar_lightning.cli.inputs import read_inputs
    from cifar_lightning.core.predictions import summary

    validate(args)
    try:
        card = read_card(args.weights)
    except UsageError as e:
        raise UsageError(f"--weights {e}") from None
    if args.top_k > card.num_classes:
        raise UsageError(f"--top-k {args.top_k}: the model has {card.num_classes} classes; expected at most that")
    framework = choose_framework(args.weights, args.framework)
    inputs = read_inputs(args.inputs, args.data_dir, card.num_classes)
    for line in inputs.errors:  # as soon as known; the good inputs are still predicted
        print(f"error: {line}", file=sys.stderr, flush=True)
    result = {
        "names": inputs.names,
        "labels": inputs.known_labels,
        "errors": inputs.errors,
        "framework": framework,
        "probabilities": None,
        "output": None,
    }
    if not inputs.names:
        print("nothing to predict: no input could be read", file=sys.stderr)
        return result
    if framework == "mlx":
        from cifar_mlx_adapter.predict import predict
    else:
        from cifar_lightning.predict import predict
    images = inputs.images
    print(
        f"predicting {len(images)} image{'s' * (len(images) != 1)} with {card.model} ({card.dataset}, "
        f"{card.num_classes} classes) in {framework}, from {display_name(args.weights)}",
        flush=True,
    )
    try:
        probabilities = predict(
            card,
            args.weights,
            images,
            inputs.names,
            top_k=args.top_k,
            output=args.output,
            batch_size=args.batch_size,
            tta=args.tta,
            cpu=args.cpu,
            progress=len(images) >= PROGRESS_MIN_IMAGES,
        )
    except UsageError:
        raise
    except CIFARError as e:  # weights that do not fit the model the checkpoint names
        raise UsageError(f"--weights {e}") from None
    result.update(probabilities=probabilities, output=args.output)
    for line in summary(inputs.names, probabilities, card.class_names, inputs.known_labels):
        print(line)
    columns = ", ".join(["input"] + [f"class_{i}, prob_{i}" for i in range(1, args.top_k + 1)])
    print(f"wrote {display_name(args.output)} ({len(inputs.names)} rows: {columns})")
    return result


def main(argv: list[str] | None = None, relaunch: bool = False) -> dict:
    """Parse `argv`, predict, print; exit status 2 (SystemExit) when any input or flag was bad,
    after the good inputs' CSV is written. With `relaunch` (the command), a prediction in
    MLX on Linux first starts the process again, once, with OpenBLAS preloaded for mlx[cpu]
    (``cifar_mlx_adapter.blas``), before MLX is imported."""
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if relaunch and choose_framework_or_none(args) == "mlx":
            from cifar_mlx_adapter.blas import restart_with_openblas

            restart_with_openblas(sys.argv)
        result = run(args)
    except KeyboardInterrupt:
        exit_with("interrupted: no CSV was written", ExitCode.INTERRUPTED)
    except CIFARError as e:
        exit_with(str(e), e.exit_code)
    if result["errors"] or result["output"] is None:
        raise SystemExit(ExitCode.USAGE)
    return result


def command() -> None:
    """The console script ``cifar-predict``."""
    main(relaunch=True)
