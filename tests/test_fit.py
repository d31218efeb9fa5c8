"""scripts/fit.py end to end on tiny fixtures: logs, checkpoints, errors, resume."""

import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import OPTIMIZER_RUNS

from cifar_lightning.cli.fit import main
from cifar_lightning.core.run.files import RUN_SCHEMA_KEYS, read_metrics_csv

ROOT = Path(__file__).resolve().parents[1]


def fit(data, out, *extra, callbacks=()):
    argv = ["--data-dir", str(data), "--no-download", "--accelerator", "cpu", "--output-dir", str(out), *extra]
    return main(argv, callbacks=callbacks)


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


class CountSteps(L.Callback):
    def __init__(self):
        self.steps = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps += 1


class CtrlC(L.Callback):
    """Presses Ctrl-C at one of the places a run can be cut: "mid-epoch" (after global step
    `step`), "epoch-end" (as epoch `epoch` starts: the previous one's checkpoint is written),
    "after-last-epoch" (training done, its last checkpoint written, no final.ckpt, no test),
    "during-test" (the final test pass)."""

    def __init__(self, where: str, step: int = 0, epoch: int = 0):
        self.where, self.step, self.epoch = where, step, epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.where == "mid-epoch" and trainer.global_step == self.step:
            raise KeyboardInterrupt

    def on_train_epoch_start(self, trainer, pl_module):
        if self.where == "epoch-end" and trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt

    def on_train_end(self, trainer, pl_module):
        if self.where == "after-last-epoch":
            raise KeyboardInterrupt

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self.where == "during-test":
            raise KeyboardInterrupt


def final_weights(out):
    return torch.load(Path(out) / "checkpoints" / "final.ckpt", weights_only=True)["state_dict"]


def assert_resume_matches(data, tmp_path, common, cut: CtrlC, cut_step, total, full_out=None):
    """Uninterrupted run vs the same run cut by Ctrl-C (exit status 130, no run.json) and
    resumed in its own folder from last.ckpt: the resumed process trains only the remaining
    steps, ends with the same weights and test accuracy, and its run.json and metrics.csv
    cover the whole run."""
    full_out = full_out or tmp_path / "full"
    if not (full_out / "run.json").exists():
        fit(data, full_out, *common)
    with pytest.raises(SystemExit) as stop:
        fit(data, tmp_path / "cut", *common, callbacks=(cut,))
    assert stop.value.code == 130
    assert not (tmp_path / "cut" / "run.json").exists()
    last = tmp_path / "cut/checkpoints/last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] == cut_step
    first_segment = saved["run"]["train_time_s"]
    counter = CountSteps()
    argv = ["--data-dir", str(data), "--no-download", "--accelerator", "cpu", *common, "--resume", str(last)]
    record = main(argv, callbacks=(counter,))
    assert counter.steps == total - cut_step  # it continued; it did not start over
    full, resumed = final_weights(full_out), final_weights(tmp_path / "cut")
    initial = torch.load(full_out / "checkpoints/initial.pt", weights_only=True)
    moved = [
        k
        for k in initial
        if initial[k].is_floating_point() and not torch.allclose(initial[k], full[f"model.{k}"], rtol=1e-3, atol=1e-4)
    ]
    assert len(moved) > len(initial) // 2  # training changed the weights, so equality means something
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=1e-5, atol=1e-6, msg=key)
    assert record["test_accuracy"] == json.loads((full_out / "run.json").read_text())["test_accuracy"]
    steps = [int(r["step"]) for r in read_metrics_csv(tmp_path / "cut/metrics.csv") if r.get("train/loss_step")]
    assert steps == list(range(total))  # the rows of both segments
    assert record["train_time_s"] >= round(first_segment, 2)  # all segments (run.json rounds to 0.01 s)


FAST_CUTS = {  # 2 steps an epoch, 6 epochs: where the cut leaves last.ckpt (its global step)
    "mid-epoch": (CtrlC("mid-epoch", step=7), 6),
    "epoch-end": (CtrlC("epoch-end", epoch=3), 6),
    "after-last-epoch": (CtrlC("after-last-epoch"), 12),
    "during-test": (CtrlC("during-test"), 12),
}


@pytest.fixture(scope="module")
def full_fast_run(tmp_path_factory):
    """The uninterrupted fast run the cut runs are compared with (made once, by the first test)."""
    return tmp_path_factory.mktemp("fast") / "full"


@pytest.mark.parametrize("where", sorted(FAST_CUTS))
def test_interrupted_fast_run_resumes_to_the_same_end_across_weight_averaging(
    cifar10_dir, tmp_path, where, full_fast_run
):
    """Averaging every 5 steps, the final weights the average (copied back at step 12), the
    whitening-bias freeze at epoch 3: a run cut anywhere, also after its last epoch or
    during its final test (Lightning then skips on_train_start and on_train_end), ends as
    the uninterrupted one. Checked against: the final copy-back done in on_train_end."""
    common = [
        "--model",
        "fast",
        "--epochs",
        "6",
        "--batch-size",
        "25",
        "--no-tta",
        "--train-subset",
        "50",
        "--log-every-n-steps",
        "1",
        "--seed",
        "0",
    ]
    cut, cut_step = FAST_CUTS[where]
    assert_resume_matches(cifar10_dir, tmp_path, common, cut, cut_step, total=12, full_out=full_fast_run)


def test_interrupted_small_cnn_run_with_dropout_resumes_to_the_same_end(cifar10_dir, tmp_path):
    """Dropout on: the resumed run draws the masks the uninterrupted one drew (torch's
    generator state restored from the checkpoint)."""
    common = [
        "--model",
        "small_cnn",
        "--epochs",
        "2",
        "--batch-size",
        "50",
        "--train-subset",
        "100",
        "--log-every-n-steps",
        "1",
    ]
    assert_resume_matches(cifar10_dir, tmp_path, common, CtrlC("epoch-end", epoch=1), cut_step=2, total=4)


@pytest.mark.parametrize(
    "optimizer", [pytest.param(o, marks=pytest.mark.slow) if o == "muon" else o for o in sorted(OPTIMIZER_RUNS)]
)
def test_interrupted_run_of_each_optimizer_resumes_to_the_same_end(cifar10_dir, tmp_path, optimizer):
    """AdamW and Muon (four parts, the whitening bias on its own schedule and frozen at epoch
    3) cut at an epoch's end resume to the uninterrupted run's weights: the checkpoint's
    settings compare equal to the run's own (SGD: the tests above). Checked against:
    settings compared as saved (tuples) with those read back (lists), which refuses every
    resume of a recipe with parts in MLX."""
    common = [*OPTIMIZER_RUNS[optimizer], "--log-every-n-steps", "1"]
    total = 4 if optimizer == "adamw" else 8
    assert_resume_matches(cifar10_dir, tmp_path, common, CtrlC("epoch-end", epoch=1), cut_step=2, total=total)


def run_script(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "fit.py"), *args], capture_output=True, text=True, cwd=ROOT
    )


def run_main(*args, capsys) -> tuple[int, str]:
    """main() in this process (no ~10 s Lightning import of a new one): (exit status, stderr).
    test_bad_inputs_give_one_line_errors starts the script itself as a process."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(list(args))
    return stop.value.code, capsys.readouterr().err


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_unavailable_is_one_clear_line(cifar10_dir, tmp_path, capsys):
    code, err = run_main(
        "--accelerator", "mps", "--data-dir", str(cifar10_dir), "--output-dir", str(tmp_path / "o"), capsys=capsys
    )
    assert code == 2
    assert err.strip().splitlines() == [err.strip()] and "MPS is not available" in err


def test_bad_inputs_give_one_line_errors(cifar10_dir, tmp_path):
    missing = run_script("--data-dir", str(tmp_path / "empty"), "--no-download", "--accelerator", "cpu")
    assert missing.returncode == 2 and "cifar-10-batches-py/" in missing.stderr and "Traceback" not in missing.stderr
    unknown = run_script("--model", "vgg")
    assert unknown.returncode == 2 and "invalid choice: 'vgg'" in unknown.stderr
    unknown_ds = run_script("--dataset", "mnist")
    assert unknown_ds.returncode == 2 and "invalid choice: 'mnist'" in unknown_ds.stderr
    test_only = run_script("--test-only", "--data-dir", str(cifar10_dir), "--accelerator", "cpu")
    assert test_only.returncode == 2 and "--test-only needs --weights" in test_only.stderr


def test_weights_of_another_model_are_rejected(cifar10_dir, tmp_path, capsys):
    out = tmp_path / "r"
    fit(cifar10_dir, out, "--model", "small_cnn", "--epochs", "1", "--batch-size", "50")
    with pytest.raises(SystemExit):
        fit(
            cifar10_dir,
            tmp_path / "x",
            "--model",
            "resnet18",
            "--test-only",
            "--weights",
            str(out / "checkpoints/final.ckpt"),
        )
    code, _ = run_main(
        "--model",
        "small_cnn",
        "--dataset",
        "cifar100",
        "--data-dir",
        str(cifar10_dir),
        "--accelerator",
        "cpu",
        "--test-only",
        "--weights",
        str(out / "checkpoints/final.ckpt"),
        "--output-dir",
        str(tmp_path / "y"),
        capsys=capsys,
    )
    assert code == 2


def test_cifar100_runs(cifar100_dir, tmp_path):
    record = fit(cifar100_dir, tmp_path / "c100", "--dataset", "cifar100", "--epochs", "1", "--batch-size", "100")
    assert len(record["per_class_accuracy"]) == 100


def test_fractional_epochs_stop_at_the_recipe_step(cifar10_dir, tmp_path):
    record = fit(cifar10_dir, tmp_path / "f", "--model", "small_cnn", "--epochs", "1.5", "--batch-size", "50")
    assert record["hyperparameters"]["total_steps"] == 6  # ceil(1.5 * 4)
    assert torch.load(tmp_path / "f/checkpoints/final.ckpt", weights_only=False)["global_step"] == 6
