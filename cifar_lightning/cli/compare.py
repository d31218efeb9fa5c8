"""cifar-compare (scripts/compare.py): which framework trains faster on this machine, at what
memory and accuracy, as one command.

    cifar-compare --model resnet18 --seeds 3                 # on a Mac: MPS against Metal
    cifar-compare --model small_cnn --seeds 3 --epochs 2 --device cpu --data-dir D --no-download

For each seed it trains the PyTorch run (``cifar-fit``), then the MLX run (``cifar-fit-mlx``)
from that run's initial weights (copied to an .npz in MLX's layout, so the MLX process
never imports torch, whose pages its memory would count), so both start from the same
weights and see the same batches; each on its framework's best device (MPS and Metal on a
Mac, CUDA and mlx[cuda] on NVIDIA, the CPU otherwise; ``--device cpu`` puts both on the
CPU; devices of different kinds, such as CUDA against mlx[cpu], are refused before
anything trains), one after the other, each in a process of its own under the machine's
training lock, into ``OUT/<framework>-seed<seed>/``. Then it writes ``OUT/comparison.md``
and ``OUT/comparison.png`` (``cifar_lightning.report.comparison``).

The same command again continues where it stopped: finished runs are kept, an interrupted
one resumes from its last checkpoint (one stopped before its first checkpoint, with nothing
to resume, starts again), nothing is trained twice; more ``--seeds`` add pairs; a flag that
shapes the runs and differs from those already in OUT is refused in one line, and so are
new runs under other package versions than OUT's runs (torch, Lightning, MLX, ...: pairs
made under two versions do not pool) unless ``--allow-version-change``. Ctrl-C stops
the run in progress (it prints its own resume command), keeps every finished run, and
prints the command that continues the comparison.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from cifar_lightning.cli.flags import OneLineParser, exit_with
from cifar_lightning.core.datasets import DATASETS
from cifar_lightning.core.errors import ExitCode, UsageError
from cifar_lightning.core.recipes import OPTIMIZER_KINDS, recipe_name
from cifar_lightning.core.run.files import write_json_atomic
from cifar_lightning.core.run.folder import RunPaths
from cifar_lightning.core.run.provenance import PACKAGES, package_versions
from cifar_lightning.core.spec import MODEL_NAMES
from cifar_lightning.report.comparison import COMPARE_JSON, like_with_like

# the flags of a comparison that shape its runs, passed to both frameworks' runs as given
TRAINING_FLAGS = (
    "dataset",
    "model",
    "optimizer",
    "epochs",
    "batch_size",
    "lr",
    "momentum",
    "weight_decay",
    "train_subset",
    "val_size",
    "dropout",
    "muon_dtype",
    "limit_val_batches",
    "limit_test_batches",
    "precision",
)
FRAMEWORKS = {"pytorch": ("cifar_lightning.cli.fit", ".ckpt"), "mlx": ("cifar_lightning.cli.fit_mlx", ".npz")}


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        description="Compare PyTorch and MLX on this machine: for each seed a PyTorch run, "
        "then an MLX run from its initial weights; then comparison.md."
    )
    p.add_argument("--model", default="small_cnn", choices=MODEL_NAMES, help="the network (default: small_cnn)")
    p.add_argument("--optimizer", choices=OPTIMIZER_KINDS, help="the recipe's optimiser, as fit.py's (default: sgd)")
    p.add_argument("--seeds", type=int, default=3, help="pairs of runs, seeds 0, 1, ... (default: 3)")
    p.add_argument("--epochs", type=float, help="training epochs (default: the recipe's)")
    p.add_argument(
        "--device",
        choices=("best", "cpu"),
        default="best",
        help="best: each framework's best device (MPS and Metal on a Mac, CUDA and mlx[cuda] on NVIDIA, "
        "else the CPU); cpu: both on the CPU (default: best)",
    )
    p.add_argument("--dataset", default="cifar10", choices=sorted(DATASETS), help="which CIFAR (default: cifar10)")
    p.add_argument("--batch-size", type=int, help="images per optimizer step (default: the recipe's)")
    p.add_argument("--lr", type=float, help="peak learning rate, in the recipe's units (default: the recipe's)")
    p.add_argument("--momentum", type=float, help="as fit.py's (default: the recipe's)")
    p.add_argument("--weight-decay", type=float, help="as fit.py's (default: the recipe's)")
    p.add_argument("--train-subset", type=int, help="train on the first N training images only (default: all)")
    p.add_argument("--val-size", type=int, help="hold out N training images for validation (default: 0)")
    p.add_argument("--dropout", type=float, help="small_cnn's dropout (default: the recipe's)")
    p.add_argument("--muon-dtype", choices=("bfloat16", "float32"), help="as fit.py's (default: bfloat16)")
    p.add_argument(
        "--limit-test-batches",
        type=int,
        metavar="N",
        help="test on N batches only, for a quick check (Results.md sets such runs against no target) (default: all)",
    )
    p.add_argument(
        "--precision",
        choices=("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true"),
        help="both frameworks' Lightning precision: *-mixed keeps float32 weights and computes the training "
        "step in half, *-true keeps half weights; on the CPU both run 16-mixed as bf16-mixed and MLX refuses "
        "16-true; each record says which ran (default: 32-true)",
    )
    p.add_argument(
        "--limit-val-batches",
        type=int,
        metavar="N",
        help="validate on N batches, 0 skips validation, which changes no weight (default: all)",
    )
    p.add_argument("--data-dir", default="data", help="folder holding cifar-10-batches-py/ (default: data)")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading missing data")
    p.add_argument(
        "--output-dir",
        help="the comparison's folder (default: runs/compare/<recipe>[-<epochs>ep][-subset<N>]-<devices>, "
        "<devices> the devices used: cpu, cuda, or mps-metal for PyTorch's and MLX's)",
    )
    p.add_argument(
        "--allow-version-change",
        action="store_true",
        help="train new runs into a folder whose runs were made under other package versions (torch, "
        "Lightning, MLX, ...; comparison.md lists what differs) (default: refused)",
    )
    p.add_argument("--lock-file", metavar="PATH", help="the training lock, as fit.py's (default: the machine's)")
    return p


def settings_of(args: argparse.Namespace) -> dict:
    """The comparison's settings: the number of seeds, the device and the training flags."""
    return {"seeds": args.seeds, "device": args.device, **{k: getattr(args, k) for k in TRAINING_FLAGS}}


def run_devices(device: str) -> tuple[str, str]:
    """(PyTorch's device, MLX's device) as each run will record it, known before anything
    trains: both "cpu" for ``--device cpu``; for "best" what each framework finds here (torch:
    cuda, mps or cpu; MLX: metal, cuda or cpu). UsageError when they are of different kinds
    (a CUDA torch beside mlx[cpu] on Linux: a GPU against a CPU measures the devices, not the
    frameworks)."""
    if device == "cpu":
        return "cpu", "cpu"
    from cifar_lightning.backend import check_accelerator
    from cifar_mlx_adapter.backend import best_device

    devices = check_accelerator("auto"), best_device()
    if not like_with_like(*devices):
        raise UsageError(
            f"--device best: PyTorch would train on {devices[0]} but MLX on {devices[1]}, and a comparison "
            "across kinds of device measures the devices, not the frameworks; use --device cpu for both on "
            "the CPU, or install both frameworks' builds for this GPU (e.g. mlx[cuda] beside a CUDA torch)"
        )
    return devices


def default_folder(args: argparse.Namespace, devices: tuple[str, str]) -> Path:
    """runs/compare/<recipe>[-<epochs>ep][-subset<N>]-<devices>: the devices named once when both
    frameworks call theirs alike (cpu, cuda), else PyTorch's then MLX's (mps-metal)."""
    epochs = f"-{args.epochs:g}ep" if args.epochs else ""
    subset = f"-subset{args.train_subset}" if args.train_subset else ""
    where = devices[0] if devices[0] == devices[1] else "-".join(devices)
    return Path("runs") / "compare" / f"{recipe_name(args.model, args.optimizer)}{epochs}{subset}-{where}"


def saved_comparison(folder: Path) -> dict | None:
    """The compare.json of a comparison folder ({"settings", "command"}), None when it has none."""
    saved_file = folder / COMPARE_JSON
    return json.loads(saved_file.read_text()) if saved_file.is_file() else None


def check_same(folder: Path, saved: dict | None, settings: dict) -> None:
    """Refuse, in one line naming each flag, a comparison folder made with other settings
    (the number of seeds apart: more seeds add pairs to the same comparison)."""
    if saved is None:
        return
    saved = saved["settings"]
    differ = [k for k in settings if k != "seeds" and saved.get(k) != settings[k]]
    if differ:

        def shown(value):  # a flag left at its default (or older than the folder's record) is None
            return "not given" if value is None else value

        listed = ", ".join(
            f"--{k.replace('_', '-')} {shown(saved.get(k))} there, {shown(settings[k])} here" for k in differ
        )
        raise UsageError(
            f"--output-dir {folder} holds a comparison with other settings: {listed}; use its own "
            "flags, or another --output-dir"
        )


def check_versions(out: Path, allow: bool) -> None:
    """Refuse, in one line naming each package, to add runs to a comparison folder whose runs
    were made under other package versions than this Python's (the ones each framework's
    run.json records, Python's own included), unless `allow` (--allow-version-change)."""
    here = {framework: package_versions(*PACKAGES[framework]) for framework in FRAMEWORKS}
    differ: dict[str, str] = {}
    for path in sorted(out.glob("*-seed*/run.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        theirs = record.get("versions") or {}
        for name, version in here.get(record.get("framework"), {}).items():
            if name in theirs and theirs[name] != version and name not in differ:
                differ[name] = f"{name} {theirs[name]} there ({path.parent.name}), {version} here"
    if differ and not allow:
        raise UsageError(
            f"--output-dir {out} holds runs made under other versions: {'; '.join(differ.values())}; pairs "
            "made under other versions do not pool: use another --output-dir, or add --allow-version-change "
            "(comparison.md then lists what differs)"
        )


def mlx_initial_weights(out: Path, seed: int) -> Path:
    """The PyTorch run's initial.pt of `seed` copied, as it is now, to initial.npz beside it in
    MLX's layout (``cifar_lightning.weights.write_mlx_weights``: the same values), which the
    MLX run reads without torch; its path."""
    from cifar_lightning.weights import write_mlx_weights

    initial = RunPaths(out / f"pytorch-seed{seed}").checkpoint("initial", ".pt")
    return write_mlx_weights(initial, initial.with_suffix(".npz"))


def run_flags(args: argparse.Namespace, framework: str, seed: int, folder: Path, out: Path) -> list[str]:
    """The flags of one run of the comparison: new, resumed from its last checkpoint, or (MLX)
    from the PyTorch run's initial weights (written to an .npz for it: ``mlx_initial_weights``)."""
    flags = ["--data-dir", args.data_dir, "--seed", str(seed)]
    for name in TRAINING_FLAGS:
        value = getattr(args, name)
        if value is not None:
            flags += [f"--{name.replace('_', '-')}", str(value)]
    if args.no_download:
        flags.append("--no-download")
    if args.lock_file:
        flags += ["--lock-file", args.lock_file]
    if args.device == "cpu":
        flags += ["--accelerator", "cpu"] if framework == "pytorch" else ["--cpu"]
    last = RunPaths(folder).checkpoint("last", FRAMEWORKS[framework][1])
    if last.is_file():  # an interrupted run: it continues in its folder
        return [*flags, "--resume", str(last)]
    if framework == "mlx":
        flags += ["--weights", str(mlx_initial_weights(out, seed))]
    if folder.is_dir() and any(folder.iterdir()):
        # a run stopped before its first checkpoint (killed, its terminal closed): nothing to
        # resume, and its initial weights come again from the same seed, so it starts again
        print(f"compare: {folder} holds no checkpoint to resume from: its run starts again", flush=True)
        flags.append("--overwrite")
    return [*flags, "--output-dir", str(folder)]


def status(folder: Path) -> str | None:
    """The run.json status of a run folder, None when it has none."""
    try:
        return json.loads(RunPaths(folder).run_json.read_text()).get("status")
    except (OSError, ValueError):
        return None


def train(module: str, flags: list[str]) -> int:
    """One run in a process of its own; its exit status. Ctrl-C reaches it too: it is waited
    for while it stops in its own way (printing its resume command), then passed on."""
    process = subprocess.Popen([sys.executable, "-m", module, *flags])
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.wait()
        raise


def check_data(args: argparse.Namespace) -> None:
    """The data the runs will read, before the comparison's folder and compare.json are made:
    downloaded here unless --no-download, else checked; UsageError with the reader's one line
    (a wrong --data-dir must not leave a folder whose settings the next, corrected call is
    refused for)."""
    from cifar_lightning.core.data import CIFARData
    from cifar_lightning.core.datasets import CIFARDataError

    try:
        CIFARData(args.dataset, args.data_dir, download=not args.no_download).prepare_data()
    except CIFARDataError as e:
        raise UsageError(str(e)) from None


def compare(args: argparse.Namespace, argv: list[str]) -> Path:
    """Train what the comparison still lacks and write its report; returns its folder."""
    if args.seeds < 1:
        raise UsageError(f"--seeds {args.seeds}: expected 1 or more pairs of runs")
    devices = run_devices(args.device)
    if devices[1] == "cpu" and args.precision == "16-true":  # refused by fit_mlx.py there: before torch trains
        from cifar_mlx_adapter.backend import cpu_precision

        cpu_precision(args.precision)
    out = Path(args.output_dir) if args.output_dir else default_folder(args, devices)
    settings, saved = settings_of(args), saved_comparison(out)
    check_same(out, saved, settings)
    if any(status(out / f"{f}-seed{seed}") != "finished" for seed in range(args.seeds) for f in FRAMEWORKS):
        check_versions(out, args.allow_version_change)  # only runs still to train can mix versions
        check_data(args)
    out.mkdir(parents=True, exist_ok=True)
    if saved is None or args.seeds >= saved["settings"]["seeds"]:  # fewer seeds: the folder's report, as it is
        command = shlex.join(["python", "scripts/compare.py", *argv])
        write_json_atomic(out / COMPARE_JSON, {"settings": settings, "command": command})
    for seed in range(args.seeds):
        for framework, (module, _) in FRAMEWORKS.items():
            folder = out / f"{framework}-seed{seed}"
            if status(folder) == "finished":
                continue
            if (
                status(folder) == "failed"
                and not RunPaths(folder).checkpoint("last", FRAMEWORKS[framework][1]).is_file()
            ):
                raise UsageError(
                    f"{folder}: the run failed before its first checkpoint (its run.json says why); "
                    "remove the folder to train it again"
                )
            print(f"compare: {framework} seed {seed} into {folder}", flush=True)
            code = train(module, run_flags(args, framework, seed, folder, out))
            if code != 0:
                # a run with a checkpoint resumes from it; one that failed before its first is refused then
                kept = RunPaths(folder).checkpoint("last", FRAMEWORKS[framework][1]).is_file()
                then = "the same command continues" if kept else "remove it to train the run again"
                raise UsageError(
                    f"the {framework} run of seed {seed} ended with exit status {code} (its lines above "
                    f"say why); its folder {folder} keeps what it wrote; {then}"
                )
    write_report(out)
    return out


def write_report(out: Path) -> None:
    from cifar_lightning.report.comparison import plot, read_comparison, render

    settings, runs = read_comparison(out)
    title = f"PyTorch vs MLX: {out.name}"
    (out / "comparison.md").write_text(render(title, runs, settings))
    plot(runs, out / "comparison.png", title)
    print(f"wrote {out / 'comparison.md'} and {out / 'comparison.png'}")


def main(argv: list[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    try:
        return compare(args, argv)
    except KeyboardInterrupt:
        exit_with(
            "interrupted: every finished run is kept; the same command continues:\n  "
            + shlex.join(["python", "scripts/compare.py", *argv]),
            ExitCode.INTERRUPTED,
        )
    except UsageError as e:
        exit_with(str(e), e.exit_code)


def command() -> None:
    """The console script ``cifar-compare``."""
    main()


if __name__ == "__main__":
    command()
