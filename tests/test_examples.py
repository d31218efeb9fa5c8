"""The examples in examples/ run as written (each through its own main, as ``python examples/X.py``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mlp_on_numpy_arrays_stops_early_and_keeps_the_best(tmp_path):
    out = _load("mlp_numpy").main(["--root", str(tmp_path), "--max-epochs", "40"])
    assert out["epochs"] < 40, "EarlyStopping should have stopped the run"
    assert Path(out["best"]).is_file() and len(list(Path(out["best"]).parent.glob("*.ckpt"))) == 2
    assert out["val/acc"] > 0.6  # three classes: chance is 1/3


@pytest.mark.parametrize("framework", ["mlx", "torch"])
def test_own_cnn_on_cifar_in_both_frameworks(tmp_path, cifar10_dir, framework):
    args = ["--framework", framework, "--data-dir", str(cifar10_dir), "--root", str(tmp_path)]
    args += ["--max-epochs", "1", "--batch-size", "32", "--val-size", "20", "--limit-val-batches", "1"]
    metrics = _load("own_cnn_cifar").main(args)
    assert {"train/loss", "val/loss", "val/acc"} <= set(metrics)
    assert list(tmp_path.glob(f"{framework}/lightning_logs/version_0/*.yaml"))
