"""scripts/benchmark.py --gpu (scripts/benchmark_gpu.py): its smoke setting runs the GPU
command's steps on the CPU on the fixtures, its JSON holds every field, and Results.md
renders it as a section of its own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import script_module

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench():
    yield from script_module("benchmark_gpu")


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@pytest.mark.slow
def test_smoke_setting_writes_every_field_and_results_md_renders_it(bench, cifar10_dir, tmp_path):
    out = tmp_path / "runs" / "gpu" / "smoke.json"
    # a process of its own without the OpenBLAS conftest preloads for MLX: torch's CPU matmuls
    # stop with "Illegal instruction" under that preload on some x86-64 CPUs (seen on this AMD EPYC)
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    argv = ["--smoke", "--data-dir", str(cifar10_dir), "--output", str(out), "--work-dir", str(tmp_path / "work")]
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--gpu", *argv],
        env={**env, "CIFAR_FAST_BLAS": "0", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["setting"] == "smoke" and report["device"] == "cpu" and report["wall_s"] > 0
    assert report["hardware"]["accelerator"] == "cpu" and "torch" in report["versions"]

    # the two recipes: accuracy, seconds by airbench's protocol, and run.json's records
    assert set(report["recipes"]) == {"fast", "fast_muon"}
    for name, entry in report["recipes"].items():
        assert entry["status"] == "measured", entry
        assert entry["warmup"]["wall_s"] > 0 and entry["skipped_seeds"] == []
        (run,) = entry["runs"]
        assert 0 <= run["test_accuracy"] <= 1 and 0 <= run["test_accuracy_no_tta"] <= 1
        parts = run["seconds_parts"]
        assert set(parts) == {"whitening_s", "train_steps_s", "test_s"}
        assert parts["whitening_s"] > 0 and parts["train_steps_s"] > 0 and parts["test_s"] > 0
        assert run["seconds"] == pytest.approx(sum(parts.values()), abs=0.01)
        assert run["fit_call_s"] >= parts["train_steps_s"] - 0.01
        assert run["train_time_s"] > 0 and run["test_time_s"] > 0 and run["validation_time_s"] == 0
        assert run["throughput"]["epoch_s"] and _number(run["throughput"]["measured_s"])
        assert run["memory"]["peak_bytes"][run["memory"]["primary"]] > 0
        assert isinstance(run["total_steps"], int) and run["total_steps"] > 0
        assert "--limit-val-batches 0" in run["command"]
        assert entry["summary"]["runs"] == 1 and 0 <= entry["summary"]["test_accuracy_mean"] <= 1
    assert "--optimizer muon" in report["recipes"]["fast_muon"]["flags"]

    # Trainer.fit against the plain loop
    rows = {r["case"]: r for r in report["train"]["rows"]}
    for model in ("small_cnn", "fast"):
        fit, plain = rows[f"train/{model}: Trainer.fit"], rows[f"train/{model}: plain torch loop"]
        for row in (fit, plain):
            assert row["status"] == "measured" and row["images_per_s"] > 0 and row["device"] == "cpu"
        assert fit["ratio"] == pytest.approx(fit["images_per_s"] / plain["images_per_s"], rel=0.01)
    assert report["train"]["mlx"]["status"] == "skipped"

    # host reads per step, both frameworks' loops
    for name in ("pytorch", "mlx"):
        reads = report["host_reads"][name]
        assert reads["status"] == "measured", reads
        assert reads["steps"] == bench.SMOKE.read_steps == len(reads["per_step"])
        assert all(isinstance(n, int) and n >= 0 for n in reads["per_step"])
        assert isinstance(reads["reads_per_step"], int) and reads["max_reads_in_a_step"] >= reads["reads_per_step"]
        assert isinstance(reads["before_steps"], int) and isinstance(reads["after_steps"], int)
        assert reads["device_reads"] == 0  # all on the CPU here
    assert report["host_reads"]["pytorch"]["reads_per_step"] >= 1  # Lightning reads the loss for its logs

    # no mlx[cuda] here: said so, and the rest went on
    assert report["mlx"]["cuda"] is False and report["mlx"]["reason"]
    assert report["compare"] == {"status": "skipped", "reason": report["mlx"]["reason"]}

    # Results.md: a section of its own for runs/gpu/*.json
    from cifar_lightning.cli.report import main as report_main

    (tmp_path / "runs" / "run1").mkdir()
    shutil.copy(ROOT / "runs/torch-small_cnn-cifar10-1epoch/run.json", tmp_path / "runs" / "run1" / "run.json")
    results = tmp_path / "Results.md"
    assert report_main(["--all", "--output", str(results)], root=tmp_path) == 0
    text = results.read_text()
    assert "## GPU benchmark: " in text and "(`runs/gpu/smoke.json`)" in text
    assert "| fast_muon | `--model fast --optimizer muon` | 1 |" in text
    assert "| train/fast: Trainer.fit | cpu |" in text
    assert "| Lightning `Trainer.fit` | cpu | 4 |" in text
    assert "Skipped: mlx" in text


def test_host_read_counter_counts_and_restores(bench):
    import mlx.core as mx
    import torch

    reads = bench.HostReads()
    item, mx_item = torch.Tensor.item, mx.array.item
    with reads.patch(torch.Tensor, bench.TORCH_READS, "torch.Tensor", lambda t: t.device.type != "cpu"):
        with reads.patch(mx.array, bench.MLX_READS, "mx.array", lambda a: False):
            t = torch.tensor([1.5])
            assert t.item() == 1.5 and bool(t) and float(t) == 1.5 and t.tolist() == [1.5]
            assert mx.array(2).item() == 2 and bool(mx.array(True))
    assert reads.total == 6 and reads.device == 0
    assert reads.by_call == {
        "torch.Tensor.item": 1,
        "torch.Tensor.__bool__": 1,
        "torch.Tensor.__float__": 1,
        "torch.Tensor.tolist": 1,
        "mx.array.item": 1,
        "mx.array.__bool__": 1,
    }
    assert torch.Tensor.item is item and mx.array.item is mx_item and "__bool__" not in torch.Tensor.__dict__
    torch.tensor(1.0).item()
    assert reads.total == 6  # nothing counted once restored


def test_comparison_summary_of_a_compare_folder(bench):
    folder = ROOT / "runs/compare/small_cnn-2ep-cpu"
    summary = bench.summarize_comparison(folder)
    assert summary["status"] == "measured"
    assert {r["framework"] for r in summary["runs"]} == {"pytorch", "mlx"}
    for name in ("pytorch", "mlx"):
        f = summary["frameworks"][name]
        assert (
            f["runs"] == len(list(folder.glob(f"{name}-seed*"))) >= 2
            and 0 <= f["test_accuracy_mean"] <= 1
            and f["images_per_s_mean"] > 0
        )
    ratio = summary["frameworks"]["mlx"]["images_per_s_mean"] / summary["frameworks"]["pytorch"]["images_per_s_mean"]
    assert summary["mlx_over_pytorch_images_per_s"] == pytest.approx(ratio, rel=0.01)
