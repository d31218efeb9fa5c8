"""scripts/fit.py end to end on tiny fixtures: logs, checkpoints, errors, resume."""

import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from cifar_lightning.reporting import RUN_SCHEMA_KEYS
from cifar_lightning.runner import main

ROOT = Path(__file__).resolve().parents[1]


def fit(data, out, *extra, callbacks=()):
    argv = ["--data-dir", str(data), "--no-download", "--accelerator", "cpu", "--output-dir", str(out), *extra]
    return main(argv, extra_callbacks=callbacks)


def test_fit_writes_run_json_checkpoint_and_plots(cifar10_dir, tmp_path):
    out = tmp_path / "run"
    record = fit(cifar10_dir, out, "--model", "small_cnn", "--epochs", "2", "--batch-size", "20")
    saved = json.loads((out / "run.json").read_text())
    assert saved == json.loads(json.dumps(record))
    for key in RUN_SCHEMA_KEYS:
        assert key in saved, key
    assert saved["framework"] == "pytorch" and saved["parameters"] == 573_194
    assert saved["hardware"]["accelerator"] == "cpu"
    assert list(saved["per_class_accuracy"]) == [f"class{i}" for i in range(10)]
    assert all(0 <= v <= 1 for v in saved["per_class_accuracy"].values())
    assert 0 <= saved["test_accuracy"] <= 1 and saved["final_train_loss"] > 0
    assert Path(saved["checkpoint"]).is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "confusion.png").stat().st_size > 1000 and (out / "curves.png").stat().st_size > 1000
    assert "train/loss_step" in (out / "metrics.csv").read_text().splitlines()[0]
    # the checkpoint rebuilds the model through save_hyperparameters
    from cifar_lightning import CIFARClassifier

    restored = CIFARClassifier.load_from_checkpoint(saved["checkpoint"], map_location="cpu")
    assert restored.hparams.model == "small_cnn" and restored.hparams.class_names[0] == "class0"


class StopAfterFirstEpoch(L.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def final_weights(out):
    return torch.load(Path(out) / "checkpoints" / "final.ckpt", weights_only=False)["state_dict"]


def test_interrupted_run_resumes_to_the_same_end(cifar10_dir, tmp_path):
    # the fast net has no dropout, so an interrupted + resumed run must equal an uninterrupted one
    common = ["--model", "fast", "--epochs", "2", "--batch-size", "50", "--no-tta"]
    fit(cifar10_dir, tmp_path / "full", *common)
    fit(cifar10_dir, tmp_path / "cut", *common, callbacks=(StopAfterFirstEpoch(),))
    assert torch.load(tmp_path / "cut/checkpoints/last.ckpt", weights_only=False)["global_step"] == 4
    fit(cifar10_dir, tmp_path / "resumed", *common, "--resume", str(tmp_path / "cut/checkpoints/last.ckpt"))
    full, resumed = final_weights(tmp_path / "full"), final_weights(tmp_path / "resumed")
    assert torch.load(tmp_path / "resumed/checkpoints/final.ckpt", weights_only=False)["global_step"] == 8
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=1e-5, atol=1e-6, msg=key)


def run_script(*args):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "fit.py"), *args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_unavailable_is_one_clear_line(cifar10_dir, tmp_path):
    r = run_script("--accelerator", "mps", "--data-dir", str(cifar10_dir), "--output-dir", str(tmp_path / "o"))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "MPS is not available" in r.stderr


def test_bad_inputs_give_one_line_errors(cifar10_dir, tmp_path):
    missing = run_script("--data-dir", str(tmp_path / "empty"), "--no-download", "--accelerator", "cpu")
    assert missing.returncode == 2 and "cifar-10-batches-py/" in missing.stderr and "Traceback" not in missing.stderr
    unknown = run_script("--model", "vgg")
    assert unknown.returncode == 2 and "invalid choice: 'vgg'" in unknown.stderr
    unknown_ds = run_script("--dataset", "mnist")
    assert unknown_ds.returncode == 2 and "invalid choice: 'mnist'" in unknown_ds.stderr
    test_only = run_script("--test-only", "--data-dir", str(cifar10_dir), "--accelerator", "cpu")
    assert test_only.returncode == 2 and "--test-only needs --weights" in test_only.stderr


def test_weights_of_another_model_are_rejected(cifar10_dir, tmp_path):
    out = tmp_path / "r"
    fit(cifar10_dir, out, "--model", "small_cnn", "--epochs", "1", "--batch-size", "50")
    with pytest.raises(SystemExit):
        fit(cifar10_dir, tmp_path / "x", "--model", "resnet18", "--test-only", "--weights", str(out / "checkpoints/final.ckpt"))
    r = run_script("--model", "small_cnn", "--dataset", "cifar100", "--data-dir", str(cifar10_dir), "--accelerator", "cpu",
                   "--test-only", "--weights", str(out / "checkpoints/final.ckpt"), "--output-dir", str(tmp_path / "y"))
    assert r.returncode == 2


def test_cifar100_runs(cifar100_dir, tmp_path):
    record = fit(cifar100_dir, tmp_path / "c100", "--dataset", "cifar100", "--epochs", "1", "--batch-size", "100")
    assert len(record["per_class_accuracy"]) == 100


def test_fractional_epochs_stop_at_the_recipe_step(cifar10_dir, tmp_path):
    record = fit(cifar10_dir, tmp_path / "f", "--model", "small_cnn", "--epochs", "1.5", "--batch-size", "50")
    assert record["hyperparameters"]["total_steps"] == 6  # ceil(1.5 * 4)
    assert torch.load(tmp_path / "f/checkpoints/final.ckpt", weights_only=False)["global_step"] == 6
