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


def _readme_blocks() -> list[str]:
    """The python blocks of the README's section for Lightning users, in order."""
    text = (EXAMPLES.parent / "README.md").read_text()
    section = text.split("## From Lightning to MLX", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0] for block in section.split("```python\n")[1:]]


@pytest.mark.parametrize("which", ["lightning", "mlx"])
def test_readme_side_by_side_runs_as_written(tmp_path, monkeypatch, which):
    blocks = _readme_blocks()
    assert len(blocks) == 2, "the README shows the model twice: as a LightningModule and as an MLXModule"
    monkeypatch.chdir(tmp_path)  # both trainers log under the working directory, as written
    namespace: dict = {}
    exec(compile(blocks[0 if which == "lightning" else 1], f"README.md ({which})", "exec"), namespace)
    trainer = namespace["trainer"]
    assert trainer.current_epoch == 3 and trainer.global_step == 3 * 8  # 16 batches, accumulated in pairs
    assert float(trainer.callback_metrics["val/loss"]) < 1.0  # three classes: chance is ln 3 = 1.10
