"""Results.md generation: the PyTorch-vs-MLX comparison and the committed report being current."""

import subprocess
import sys
from pathlib import Path

import pytest

from cifar_lightning.core.reporting import gap_verdict, mean_std, pytorch_vs_mlx_groups, pytorch_vs_mlx_section

ROOT = Path(__file__).resolve().parents[1]


def run(framework, seed, acc, epochs=2, lr=0.05, path=None):
    return {
        "framework": framework, "model": "small_cnn", "dataset": "cifar10", "seed": seed, "epochs": epochs,
        "hardware": {"cpu": "CPU", "cpu_count": 2, "accelerator": "cpu", "os": "Linux"},
        "hyperparameters": {"lr": lr, "seed": seed, "batch_size": 100, "total_steps": 10,
                            "precision": "32-true" if framework == "pytorch" else None},
        "train_time_s": 10.0, "test_accuracy": acc, "per_class_accuracy": {"cat": acc, "dog": acc},
        "_path": path or f"runs/x/{framework}-{seed}",
    }  # fmt: skip


def test_runs_pair_up_only_when_everything_but_framework_and_seed_agrees():
    runs = [run("pytorch", 1, 0.70), run("pytorch", 2, 0.72), run("mlx", 1, 0.71), run("mlx", 2, 0.69),
            run("mlx", 3, 0.5, lr=0.1), run("pytorch", 4, 0.1, epochs=0)]  # fmt: skip
    groups = pytorch_vs_mlx_groups(runs)
    assert len(groups) == 1
    (group,) = groups.values()
    assert sorted(r["seed"] for r in group["pytorch"]) == [1, 2]  # the evaluation (epochs 0) is left out
    assert sorted(r["seed"] for r in group["mlx"]) == [1, 2]  # the lr=0.1 run is another experiment
    text = "\n".join(pytorch_vs_mlx_section(runs))
    assert "| pytorch | 2 | 1, 2 | 71.00% ± 1.41 |" in text and "| mlx | 2 | 1, 2 | 70.00% ± 1.41 |" in text
    assert "| cat | 71.00% | 70.00% | -1.00 |" in text


def test_gap_verdict_compares_with_two_standard_errors():
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(2**0.5))
    assert "within seed noise" in gap_verdict([0.70, 0.72, 0.71], [0.71, 0.70, 0.72])
    assert "larger than seed noise" in gap_verdict([0.70, 0.701, 0.702], [0.80, 0.801, 0.802])
    assert "one run per framework" in gap_verdict([0.70], [0.71])


def test_committed_results_md_is_generated_from_the_committed_logs():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "report.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
