"""MLXTrainer and scripts/fit_mlx.py on tiny fixtures: logs, checkpoints, resume, NaN, errors."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import OPTIMIZER_RUNS, write_cifar

from cifar_lightning import CIFARDataModule
from cifar_lightning.cli.fit_mlx import main
from cifar_lightning.core.recipes import get_recipe
from cifar_lightning.core.run.files import RUN_SCHEMA_KEYS
from cifar_mlx_adapter import Callback, MLXClassifier, MLXTrainer, NonFiniteLossError

ROOT = Path(__file__).resolve().parents[1]


def fit_mlx(data, out, *extra, callbacks=()):
    argv = [
        "--data-dir",
        str(data),
        "--no-download",
        "--cpu",
        "--output-dir",
        str(out),
        "--log-every-n-steps",
        "1",
        *extra,
    ]
    return main(argv, callbacks=callbacks)


def test_fit_mlx_writes_the_same_run_json_schema(cifar10_dir, tmp_path):
    record = fit_mlx(cifar10_dir, tmp_path / "m", "--model", "small_cnn", "--epochs", "1", "--batch-size", "40")
    saved = json.loads((tmp_path / "m" / "run.json").read_text())
    assert all(k in saved for k in RUN_SCHEMA_KEYS) and saved == json.loads(json.dumps(record))
    assert saved["framework"] == "mlx" and saved["hardware"]["accelerator"] == "cpu" and saved["parameters"] == 573_194
    assert saved["hyperparameters"]["total_steps"] == 5
    assert (tmp_path / "m" / "confusion.png").is_file() and (tmp_path / "m" / "curves.png").is_file()
    rows = (tmp_path / "m" / "metrics.csv").read_text().splitlines()
    assert "train/loss_step" in rows[0] and "val/acc" in rows[0] and len(rows) > 5
    assert Path(saved["checkpoint"]).is_file() and (tmp_path / "m/checkpoints/last.npz").is_file()


class CountSteps(Callback):
    def __init__(self):
        self.steps = 0

    def on_train_batch_end(self, trainer, module, batch_idx):
        self.steps += 1


class CtrlC(Callback):
    """Presses Ctrl-C where a run can be cut (as tests/test_fit.py's twin): "mid-epoch"
    (after global step `step`), "epoch-end" (as epoch `epoch` starts), "after-last-epoch"
    (training done, last.npz written, no final.npz, no test); "during-test" is pressed by
    ``cut_run`` in the trainer's test pass."""

    def __init__(self, where: str, step: int = 0, epoch: int = 0):
        self.where, self.step, self.epoch = where, step, epoch

    def on_train_batch_end(self, trainer, module, batch_idx):
        if self.where == "mid-epoch" and trainer.global_step == self.step:
            raise KeyboardInterrupt

    def on_train_epoch_start(self, trainer, module):
        if self.where == "epoch-end" and trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt

    def on_fit_end(self, trainer, module):
        if self.where == "after-last-epoch":
            raise KeyboardInterrupt


def cut_run(data, out, common, cut: CtrlC, monkeypatch):
    """The run cut by Ctrl-C: exit status 130 and no run.json."""
    with monkeypatch.context() as m:
        if cut.where == "during-test":

            def ctrl_c(*args, **kwargs):
                raise KeyboardInterrupt

            m.setattr(MLXTrainer, "test", ctrl_c)
        with pytest.raises(SystemExit) as stop:
            fit_mlx(data, out, *common, callbacks=(cut,))
    assert stop.value.code == 130 and not (out / "run.json").exists()


def assert_resume_matches(data, tmp_path, common, cut, cut_step, total, monkeypatch, full_out=None):
    """Uninterrupted run vs the same run cut by Ctrl-C and resumed from its last.npz: the
    resumed process trains only the remaining steps and ends with the same weights and
    test accuracy."""
    full_out = full_out or tmp_path / "full"
    if not (full_out / "run.json").exists():
        fit_mlx(data, full_out, *common)
    cut_run(data, tmp_path / "cut", common, cut, monkeypatch)
    meta = json.loads(str(np.load(tmp_path / "cut/checkpoints/last.npz")["meta"]))
    assert meta["global_step"] == cut_step
    counter = CountSteps()
    argv = [
        "--data-dir",
        str(data),
        "--no-download",
        "--cpu",
        "--log-every-n-steps",
        "1",
        *common,
        "--resume",
        str(tmp_path / "cut/checkpoints/last.npz"),
    ]
    record = main(argv, callbacks=(counter,))  # continues in the checkpoint's own folder
    assert counter.steps == total - cut_step  # it continued; it did not start over
    full = np.load(full_out / "checkpoints/final.npz")
    resumed = np.load(tmp_path / "cut/checkpoints/final.npz")
    steps = [int(r["step"]) for r in csv.DictReader(open(tmp_path / "cut/metrics.csv")) if r.get("train/loss_step")]
    assert steps == list(range(total))  # the rows of both segments
    assert record["train_time_s"] >= round(meta["train_time_s"], 2)  # all segments (run.json rounds to 0.01 s)
    assert record["test_accuracy"] == json.loads((full_out / "run.json").read_text())["test_accuracy"]
    initial = np.load(full_out / "checkpoints/initial.npz")
    assert json.loads(str(resumed["meta"]))["global_step"] == total
    moved = [k for k in initial.files if not np.allclose(initial[k], full[f"model.{k}"], rtol=1e-3, atol=1e-4)]
    assert len(moved) > len(initial.files) // 2  # training changed the weights, so equality means something
    for key in full.files:
        if key.startswith("model."):
            np.testing.assert_allclose(resumed[key], full[key], rtol=1e-5, atol=1e-6, err_msg=key)


FAST_CUTS = {  # 2 steps an epoch, 6 epochs: where the cut leaves last.npz (its global step)
    "mid-epoch": (CtrlC("mid-epoch", step=7), 6),
    "epoch-end": (CtrlC("epoch-end", epoch=3), 6),
    "after-last-epoch": (CtrlC("after-last-epoch"), 12),
    "during-test": (CtrlC("during-test"), 12),
}


@pytest.fixture(scope="module")
def full_fast_run(tmp_path_factory):
    return tmp_path_factory.mktemp("fast") / "full"


@pytest.mark.slow
@pytest.mark.parametrize("where", sorted(FAST_CUTS))
def test_interrupted_fast_run_resumes_to_the_same_end_across_weight_averaging(
    cifar10_dir, tmp_path, where, monkeypatch, full_fast_run
):
    """As torch's twin: averaging every 5 steps, the final copy-back at step 12, the
    whitening-bias freeze at epoch 3; a run cut anywhere ends as the uninterrupted one."""
    common = ["--model", "fast", "--epochs", "6", "--batch-size", "25", "--no-tta", "--train-subset", "50"]
    cut, cut_step = FAST_CUTS[where]
    assert_resume_matches(cifar10_dir, tmp_path, common, cut, cut_step, 12, monkeypatch, full_out=full_fast_run)


def test_interrupted_small_cnn_run_with_dropout_resumes_to_the_same_end(cifar10_dir, tmp_path, monkeypatch):
    """Dropout on: the resumed run draws the masks the uninterrupted one drew (random key
    restored from the checkpoint)."""
    common = ["--model", "small_cnn", "--epochs", "2", "--batch-size", "50", "--train-subset", "100"]
    assert_resume_matches(cifar10_dir, tmp_path, common, CtrlC("epoch-end", epoch=1), 2, 4, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_interrupted_run_of_each_optimizer_resumes_to_the_same_end(cifar10_dir, tmp_path, monkeypatch, optimizer):
    """As torch's twin (tests/test_fit.py): AdamW and Muon cut at an epoch's end resume to
    the uninterrupted run's weights. Checked against: the settings compared as saved
    (tuples) with those read back from the .npz's JSON (lists): every such resume refused."""
    total = 4 if optimizer == "adamw" else 8
    assert_resume_matches(
        cifar10_dir, tmp_path, OPTIMIZER_RUNS[optimizer], CtrlC("epoch-end", epoch=1), 2, total, monkeypatch
    )


def test_ctrl_c_before_the_first_checkpoint_leaves_no_folder(cifar10_dir, tmp_path, monkeypatch):
    """Nothing to resume: exit 130 and the run's folder (initial.npz, a partial metrics.csv)
    removed, as in torch (tests/test_runs_safe.py checks both frameworks' messages)."""
    common = ["--model", "small_cnn", "--epochs", "2", "--batch-size", "50", "--train-subset", "100"]
    cut_run(cifar10_dir, tmp_path / "cut", common, CtrlC("mid-epoch", step=1), monkeypatch)
    assert not (tmp_path / "cut").exists()


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(cifar10_dir, tmp_path):
    dm = CIFARDataModule("cifar10", cifar10_dir, batch_size=50, download=False)
    module = MLXClassifier("small_cnn", 10, recipe={**MLXClassifier("small_cnn").recipe.to_dict(), "epochs": 3})

    class PoisonAfterFirstEpoch(Callback):
        def on_train_epoch_start(self, trainer, module):
            if trainer.current_epoch == 1:  # what a diverging run looks like: weights become NaN
                module.model.fc2.weight = module.model.fc2.weight * mx.array(float("nan"))

    trainer = MLXTrainer(
        max_epochs=3,
        callbacks=[PoisonAfterFirstEpoch()],
        default_root_dir=tmp_path,
        log_every_n_steps=1,
        enable_progress_bar=False,
    )
    with pytest.raises(NonFiniteLossError, match=r"training loss became nan at step 4; the last good checkpoint is"):
        trainer.fit(module, dm)
    kept = np.load(tmp_path / "checkpoints/last.npz")
    assert json.loads(str(kept["meta"]))["global_step"] == 4
    assert np.isfinite(kept["model.fc2.weight"]).all()


def run_script(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "fit_mlx.py"), *args], capture_output=True, text=True, cwd=ROOT
    )


def test_fit_mlx_bad_inputs_give_one_line_errors(tmp_path):
    missing = run_script("--data-dir", str(tmp_path / "empty"), "--no-download", "--cpu")
    assert missing.returncode == 2 and "cifar-10-batches-py/" in missing.stderr and "Traceback" not in missing.stderr
    errors = [ln for ln in missing.stderr.strip().splitlines() if not ln.startswith("warning: mlx[cpu] on Linux")]
    assert len(errors) == 1
    memory = run_script("--memory-limit", "-1", "--cpu", "--data-dir", "unused")
    assert memory.returncode == 2 and "--memory-limit must be a positive number of GB" in memory.stderr
    unknown = run_script("--model", "vgg")
    assert unknown.returncode == 2 and "invalid choice: 'vgg'" in unknown.stderr


@pytest.mark.parametrize(
    "model,n_train,flags",
    [
        ("small_cnn", 500, ["--epochs", "2", "--batch-size", "25"]),
        ("fast", 200, ["--epochs", "3", "--batch-size", "20", "--no-tta"]),
    ],
)
def test_fit_mlx_learns_a_learnable_fixture(tmp_path, model, n_train, flags):
    """The fixture's classes differ in mean colour: a few epochs reach far above chance (10%).
    On 100 test images chance accuracy has standard deviation 0.03, so 0.4 is 10 above it.
    Measured for SmallCNN over seeds 0-3 (2 epochs of 500 images): 0.59-0.70. On 200
    images (3 epochs of 20) SmallCNN's accuracy spread 0.1-0.6 over seeds in both
    frameworks: too few steps for its OneCycle and dropout to settle."""
    data = write_cifar(tmp_path / "data", "cifar10", n_train=n_train, n_test=100)
    record = fit_mlx(data, tmp_path / model, "--model", model, *flags)
    assert record["test_accuracy"] >= 0.4, record["test_accuracy"]


def test_whitening_bias_trains_for_its_epochs_then_freezes_in_the_compiled_step(cifar10_dir, tmp_path):
    """The fast recipe trains the whitening bias for 3 epochs only: MLXTrainer.fit must
    recompile its step when the module freezes it, or the old graph keeps updating it.
    Weight averaging is off here, so nothing else moves the bias."""
    recipe = {**get_recipe("fast").to_dict(), "epochs": 4, "batch_size": 50, "average_every": 0, "tta": False}
    module = MLXClassifier("fast", 10, recipe=recipe)
    biases = {}

    class Watch(Callback):
        def on_train_epoch_start(self, trainer, module):
            biases[trainer.current_epoch] = np.array(module.model.whiten.bias)

        def on_fit_end(self, trainer, module):
            biases["end"] = np.array(module.model.whiten.bias)

    dm = CIFARDataModule(
        "cifar10", cifar10_dir, batch_size=50, download=False, crop_padding=2, pad_mode="reflect", train_subset=100
    )
    MLXTrainer(max_epochs=4, callbacks=[Watch()], default_root_dir=tmp_path, enable_progress_bar=False).fit(module, dm)
    assert not np.allclose(biases[0], biases[3])  # trained in epochs 0-2
    np.testing.assert_array_equal(biases[3], biases["end"])  # frozen from epoch 3 on


def test_evaluation_limits_cut_validation_and_test(cifar10_dir, tmp_path):
    """limit_val_batches / limit_test_batches: only that many evaluation batches (of 10 images)."""
    from cifar_lightning.core.data import CIFARData

    data = CIFARData("cifar10", cifar10_dir, batch_size=20, eval_batch_size=10)
    module = MLXClassifier("small_cnn", 10)
    trainer = MLXTrainer(
        limit_val_batches=1, limit_test_batches=2, enable_progress_bar=False, default_root_dir=tmp_path / "limited"
    )
    assert trainer.test(module, data, verbose=False)["confusion_matrix"].sum() == 20
    full = MLXTrainer(enable_progress_bar=False, default_root_dir=tmp_path / "full").test(module, data, verbose=False)
    assert full["confusion_matrix"].sum() == 50
    assert MLXTrainer(limit_val_batches=0, enable_progress_bar=False).validate(module, data) == {}  # as Lightning
    val = trainer.validate(module, data, verbose=False)
    logits_seen = []
    module.validation_step = lambda batch, i: logits_seen.append(batch[1].shape[0]) or module(batch[0])
    trainer.validate(module, data, verbose=False)
    assert logits_seen == [10] and 0 <= val["val/acc"] <= 1


def test_the_run_trainer_refuses_lightnings_model_checkpoint_in_one_line(tmp_path):
    """The run's trainer writes its own checkpoints/last.npz; a ModelCheckpoint handed to it
    is refused, naming the trainer that takes one."""
    from cifar_mlx_adapter.lightning import ModelCheckpoint

    with pytest.raises(
        ValueError, match=r"takes no ModelCheckpoint; expected cifar_mlx_adapter\.lightning\.MLXTrainer"
    ):
        MLXTrainer(callbacks=[ModelCheckpoint(dirpath=tmp_path)], default_root_dir=tmp_path)


def test_run_metrics_keeps_the_rows_a_checkpoint_covers(tmp_path):
    """A resume from a checkpoint of 2 steps keeps the rows of steps 0 and 1 (the validation
    row of step 1 too) and drops step 2's, which the resumed run logs again."""
    from cifar_mlx_adapter.trainer import RunMetrics

    path = tmp_path / "metrics.csv"
    metrics = RunMetrics(path)
    for row in ({"step": 0, "a": 1.0}, {"step": 1, "a": 2.0}, {"step": 1, "val/acc": 0.5}, {"step": 2, "a": 3.0}):
        metrics.log_row({"epoch": 0, **row})
    resumed = RunMetrics(path)
    resumed.keep_before(2)
    assert [int(r["step"]) for r in resumed.rows] == [0, 1, 1]
    assert resumed.rows[2]["val/acc"] == "0.5"


def small_data(data_dir, batch_size: int, n: int):
    from cifar_lightning.core.data import CIFARData

    return CIFARData("cifar10", data_dir, batch_size=batch_size, train_subset=n, eval_batch_size=50)


def test_fractional_epochs_round_the_steps_up_as_torch_does(cifar10_dir, tmp_path):
    """1.5 epochs of 5 batches are ceil(7.5) = 8 steps (recipes.total_steps, torch's count)."""
    trainer = MLXTrainer(max_epochs=1.5, limit_val_batches=0, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(MLXClassifier("small_cnn", 10), small_data(cifar10_dir, 40, 200))
    assert (trainer.total_steps, trainer.global_step, trainer.current_epoch) == (8, 8, 2)


def test_a_callback_that_stops_the_run_ends_it_at_that_step_validated_as_lightning_does(cifar10_dir, tmp_path):
    """should_stop set after step 1 of 2 epochs: training ends there, and the stop is validated
    and checkpointed, as Lightning validates when it stops (training_epoch_loop's
    _should_check_val_fx)."""

    class Stop(Callback):
        def on_train_batch_end(self, trainer, module, batch_idx):
            if trainer.global_step == 1:
                trainer.should_stop = True

    trainer = MLXTrainer(
        max_epochs=2, callbacks=[Stop()], limit_val_batches=1, enable_progress_bar=False, default_root_dir=tmp_path
    )
    trainer.fit(MLXClassifier("small_cnn", 10), small_data(cifar10_dir, 20, 100))
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert trainer.global_step == 1 and [r["step"] for r in rows if r.get("val/acc")] == ["0"]
    meta = json.loads(str(np.load(tmp_path / "checkpoints/last.npz")["meta"]))
    assert (meta["global_step"], meta["epoch"]) == (1, 1) and trainer.elapsed_validation_time() > 0


def test_weight_averaging_starts_from_the_whitening_the_module_sets(cifar10_dir, tmp_path):
    """The fast net's whitening filters are set by the module's on_fit_start and never
    trained: averaging every step must start from them, not from the random init before."""
    from cifar_mlx_adapter.callbacks import LookaheadAveraging

    seen = {}

    class Whitening(Callback):
        def on_fit_start(self, trainer, module):
            seen["set"] = np.array(module.model.whiten.weight)

    recipe = {**get_recipe("fast").to_dict(), "batch_size": 20, "average_every": 1, "tta": False}
    module = MLXClassifier("fast", 10, recipe=recipe)
    trainer = MLXTrainer(
        callbacks=[LookaheadAveraging(every=1), Whitening()],
        limit_train_batches=2,
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, small_data(cifar10_dir, 20, 40))
    np.testing.assert_allclose(np.array(module.model.whiten.weight), seen["set"], rtol=1e-6)


def test_the_run_trainers_fit_names_a_loader_given_as_its_checkpoint(cifar10_dir, tmp_path):
    """fit(module, data, data), Lightning's positional train and val loaders, is one line
    naming ckpt_path and the trainer that takes Lightning's form."""
    data = small_data(cifar10_dir, 20, 40)
    with pytest.raises(
        TypeError, match=r"ckpt_path must be a checkpoint's path, got CIFARData: .*lightning\.MLXTrainer"
    ):
        MLXTrainer(default_root_dir=tmp_path).fit(MLXClassifier("small_cnn", 10), data, data)
