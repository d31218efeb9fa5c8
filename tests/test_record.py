"""A record that tells the truth: run.json says what was in effect (precision, processes,
the library's commit), the same fields in both frameworks; every flag's help gives its
default and unit; Results.md's grouping rules; readable plots.

Faults these tests were checked against: the requested precision recorded instead of the
effective one; a same-seed rerun averaged as another seed; an evaluation averaged with
training runs; a CIFAR-100 confusion matrix drawn as a 100 x 100 grid; the targets table
reading a log without ``status`` as unfinished (test_targets_table_...). Results.md's
other rules are tested, each against its planted fault, in test_reporting.py.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_runs_safe import train

from cifar_lightning.cli.fit import parser as fit_parser
from cifar_lightning.cli.fit_mlx import parser as fit_mlx_parser
from cifar_lightning.cli.flags import common_parser
from cifar_lightning.core.run.plots import most_confused_pairs, plot_confusion, plot_curves
from cifar_lightning.report.grouping import pytorch_vs_mlx_groups
from cifar_lightning.report.results import render_results
from cifar_mlx_adapter import blas

ROOT = Path(__file__).resolve().parents[1]
SHORT = [
    "--model",
    "small_cnn",
    "--epochs",
    "1",
    "--batch-size",
    "50",
    "--train-subset",
    "100",
    "--limit-val-batches",
    "1",
    "--limit-test-batches",
    "1",
]


def git_head() -> str | None:
    r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def test_run_json_records_what_was_in_effect_in_both_frameworks(cifar10_dir, tmp_path):
    torch_run = train("torch", cifar10_dir, *SHORT, "--precision", "16-mixed", "--output-dir", str(tmp_path / "t"))
    mlx_run = train("mlx", cifar10_dir, *SHORT, "--output-dir", str(tmp_path / "m"))
    # fp16 AMP does not exist on CPU: Lightning runs bf16, and the record says so
    assert torch_run["numerics"]["precision"] == "bf16-mixed"
    assert torch_run["numerics"]["float32_matmul_precision"] in ("highest", "high", "medium")
    assert isinstance(torch_run["numerics"]["cudnn_allow_tf32"], bool)
    assert mlx_run["numerics"]["precision"] == "32-true"
    # the BLAS an MLX run on the CPU called (about 12x apart on Linux): the test run's own preload
    preloaded = next(p for p in os.environ.get("LD_PRELOAD", "").split() if "openblas" in p) if blas.active() else None
    assert mlx_run["numerics"]["blas"] == (
        f"OpenBLAS, preloaded: {preloaded}" if preloaded else "MLX's own reference BLAS"
    )
    for run in (torch_run, mlx_run):
        assert run["processes"]["world_size"] == 1 and run["processes"]["effective_batch_size"] == 50
        assert run["hyperparameters"]["limit_test_batches"] == 1
        assert run["code"]["commit"] == git_head()
        assert run["code"]["dirty"] in (True, False) if git_head() else run["code"]["dirty"] is None
        assert 0 <= run["test_loss"] and 0 <= run["test_accuracy"] <= 1
    assert set(torch_run["processes"]) == set(mlx_run["processes"])  # the same columns in both logs
    assert torch_run["processes"]["strategy"] == mlx_run["processes"]["strategy"] == "single_device"
    assert set(torch_run) == set(mlx_run)


@pytest.mark.parametrize("make", [fit_parser, fit_mlx_parser])
def test_every_flag_help_gives_its_default(make):
    for action in make()._actions:
        if isinstance(action, (argparse._HelpAction, argparse._StoreTrueAction)) or action.help == argparse.SUPPRESS:
            continue
        assert action.help and "default" in action.help, f"{action.option_strings}: {action.help!r}"


def test_report_flags_have_help():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "report.py"), "--help"], capture_output=True, text=True
    )
    for flag in ("--runs", "--output", "--check"):
        line = next(ln for ln in out.stdout.splitlines() if ln.strip().startswith(flag))
        assert len(line.split(maxsplit=2)) == 3 or "default" in out.stdout, line


def test_units_are_in_the_recipe_flags_help():
    text = common_parser("x").format_help()
    assert "per 1024 examples" in text and "per optimizer step" in text and "per process" in text


def fake_run(framework, seed, acc, path, epochs=2, **hp):
    return {
        "framework": framework,
        "model": "small_cnn",
        "dataset": "cifar10",
        "seed": seed,
        "epochs": epochs,
        "hardware": {"cpu": "CPU", "cpu_count": 2, "accelerator": "cpu", "os": "Linux"},
        "hyperparameters": {"lr": 0.05, "seed": seed, "batch_size": 100, "total_steps": 10, **hp},
        "train_time_s": 10.0,
        "test_accuracy": acc,
        "test_accuracy_no_tta": None,
        "parameters": 1,
        "per_class_accuracy": {"cat": acc, "dog": acc},
        "_path": path,
    }


def test_same_seed_reruns_are_a_reproducibility_check_not_more_seeds():
    runs = [
        fake_run("pytorch", 1, 0.70, "runs/a"),
        fake_run("pytorch", 1, 0.72, "runs/b"),
        fake_run("pytorch", 2, 0.60, "runs/c"),
        fake_run("mlx", 1, 0.71, "runs/d"),
        fake_run("mlx", 2, 0.61, "runs/e"),
    ]
    text = render_results(runs)
    repeated = text.split("## Repeated runs (distinct seeds)")[1].split("##")[0]
    assert "| pytorch | small_cnn | cifar10 | 2 (10 steps) | CPU (2 cores), cpu | 2 | 1, 2 | 65.00% |" in repeated
    reruns = text.split("## Same-seed reruns (reproducibility check)")[1].split("##")[0]
    assert "| pytorch | small_cnn | 2 (10 steps) | 1 | 2 | 70.00%, 72.00% | 2.00 points |" in reruns
    (group,) = pytorch_vs_mlx_groups(runs).values()
    assert [r["_path"] for r in group["pytorch"]] == ["runs/a", "runs/c"]


def test_evaluations_are_never_averaged():
    runs = [
        fake_run("pytorch", 1, 0.70, "runs/eval-a", epochs=0),
        fake_run("pytorch", 1, 0.50, "runs/eval-b", epochs=0),
        fake_run("pytorch", 1, 0.70, "runs/train-a"),
        fake_run("mlx", 1, 0.65, "runs/train-b"),
    ]
    text = render_results(runs)
    assert "## Repeated runs" not in text and "## Same-seed reruns" not in text
    assert "60.00%" not in text.split("## Side by side")[1]  # (0.70 + 0.50) / 2 appears nowhere
    assert "test only" not in text.split("## Side by side")[1]


def fast_recipe_run(framework, seed, acc, path, **overrides):
    """A run of the fast recipe on the full training set; `overrides` as flags would set them."""
    from cifar_lightning.core.recipes import get_recipe

    hp = {
        **get_recipe("fast").to_dict(),
        "seed": seed,
        "val_size": 0,
        "train_subset": None,
        "total_steps": 476,
        **overrides,
    }
    return fake_run(framework, seed, acc, path, epochs=hp["epochs"]) | {"model": "fast", "hyperparameters": hp}


def test_targets_table_sets_declared_targets_against_runs_of_the_recipe():
    full = [fast_recipe_run("pytorch", s, a, f"runs/f{s}") for s, a in ((0, 0.94), (1, 0.942))]
    short = fast_recipe_run("mlx", 0, 0.73, "runs/short", epochs=1.0)
    text = render_results([*full, short]).split("## Accuracy targets")[1].split("\n## ")[0]
    assert "| fast | cifar10 | 94.01% |" in text and "airbench" in text
    assert "| pytorch | 2 | 94.10% | 94.20% | yes |" in text
    assert "mlx" not in text  # a 1-epoch run is not held against a 9.9-epoch target
    assert "| resnet18 | cifar10 | 92.00% |" in text and "no run of the recipe yet" in text


def test_cifar100_confusion_is_readable(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 5, (100, 100)) + np.diag(rng.integers(20, 90, 100))
    names = [f"class{i}" for i in range(100)]
    plot_confusion(matrix, names, tmp_path / "c100.png", "cifar100")
    width, height = Image.open(tmp_path / "c100.png").size
    assert width <= 1600 and height <= 1800  # was 5000 x 4500 with unreadable index ticks
    pairs = most_confused_pairs(matrix, names, k=20)
    assert len(pairs) == 20 and pairs[0][2] == max(matrix[i, j] for i in range(100) for j in range(100) if i != j)
    assert all(t != p for t, p, _ in pairs)


def test_short_run_curves_have_markers_integer_steps_and_say_val_is_test(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    csv = tmp_path / "metrics.csv"
    csv.write_text(
        "epoch,step,train/loss_step,lr,train/loss_epoch,val/acc,val/loss\n"
        "0,0,2.3,0.1,,,\n0,1,2.2,0.1,,,\n0,2,2.1,0.1,2.2,0.3,2.0\n"
    )
    seen = {}
    original = plt.Figure.savefig

    def capture(fig, *args, **kwargs):
        a, b = fig.axes
        seen["markers"] = [line.get_marker() for line in a.get_lines()]
        seen["legend"] = [t.get_text() for t in b.get_legend().get_texts()]
        seen["ticks"] = a.get_xticks()
        return original(fig, *args, **kwargs)

    plt.Figure.savefig = capture
    try:
        plot_curves(csv, tmp_path / "curves.png", "short", val_size=0)
    finally:
        plt.Figure.savefig = original
    assert all(m == "o" for m in seen["markers"])
    assert seen["legend"] == ["val/acc (the test set: --val-size 0)"]
    assert all(float(t).is_integer() for t in seen["ticks"])


def test_memory_format_default_and_compile_are_recorded_and_compile_trains_alike(cifar10_dir, tmp_path):
    """On the CPU the default layout is NHWC (faster here); --no-channels-last turns it off;
    --compile (torch.compile) trains the same numbers as eager mode from the same weights
    (dropout off: compiled dropout draws other masks), with the same parameter names."""
    import torch

    flags = [*SHORT, "--dropout", "0", "--log-every-n-steps", "1"]
    eager = train("torch", cifar10_dir, *flags, "--output-dir", str(tmp_path / "eager"))
    initial = str(tmp_path / "eager" / "checkpoints" / "initial.pt")
    nchw = train(
        "torch", cifar10_dir, *flags, "--no-channels-last", "--weights", initial, "--output-dir", str(tmp_path / "nchw")
    )
    compiled = train(
        "torch", cifar10_dir, *flags, "--compile", "--weights", initial, "--output-dir", str(tmp_path / "compiled")
    )
    assert eager["numerics"]["memory_format"] == "channels_last" and not eager["numerics"]["compiled"]
    assert nchw["numerics"]["memory_format"] == "contiguous"
    assert compiled["numerics"]["compiled"] and compiled["numerics"]["memory_format"] == "channels_last"
    assert compiled["final_train_loss"] == pytest.approx(eager["final_train_loss"], rel=1e-4)
    from cifar_lightning import CIFARClassifier

    assert isinstance(
        CIFARClassifier("small_cnn", 10, compile=True)._run_model, torch._dynamo.eval_frame.OptimizedModule
    )

    def keys(run):
        return sorted(torch.load(tmp_path / run / "checkpoints" / "final.ckpt", weights_only=True)["state_dict"])

    assert keys("compiled") == keys("eager")


def test_limited_runs_say_so():
    from cifar_lightning.core.run.files import limits_text

    assert limits_text({"train_subset": None, "limit_test_batches": None}) == ""
    text = render_results([fake_run("pytorch", 1, 0.5, "runs/small", train_subset=2000, limit_test_batches=2)])
    assert "| --train-subset 2000, --limit-test-batches 2 |" in text


def test_report_reads_only_tracked_logs_in_a_git_checkout(tmp_path):
    """A user's own runs under runs/ do not make `report.py --check` fail."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from report import tracked_run_logs

    git = lambda *a: subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    for name in ("committed", "mine"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "run.json").write_text("{}")
    git("add", "runs/committed/run.json")
    assert tracked_run_logs(tmp_path / "runs") == {(tmp_path / "runs" / "committed" / "run.json").resolve()}
    assert tracked_run_logs(tmp_path / "runs" / "mine") == set()
