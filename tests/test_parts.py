"""CIFARDataModule and CIFARClassifier as another project uses them: under its own
lightning.Trainer, with Lightning's own switches (issue: the parts only worked inside
scripts/fit.py).

Faults these tests were checked against (each makes at least one fail): the schedule
sized from the recipe's epochs instead of the trainer's plan; no stop at the schedule's
end; a Path left in the hyper-parameters; losses logged without synchronisation under
DDP; the shuffle seeded with seed + epoch.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import write_cifar

from cifar_lightning import CIFARClassifier, CIFARDataModule, get_recipe
from cifar_lightning.core.recipes import lr_at

ROOT = Path(__file__).resolve().parents[1]


class RecordLR(L.Callback):
    """The base group's learning rate used by every optimizer step."""

    def __init__(self):
        self.lrs: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.lrs.append(optimizer.param_groups[0]["lr"])


def trainer(**kwargs) -> L.Trainer:
    defaults = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    return L.Trainer(**{**defaults, **kwargs})


def dm(data_dir, batch_size=50, **kwargs) -> CIFARDataModule:
    return CIFARDataModule("cifar10", data_dir, batch_size=batch_size, download=False, **kwargs)


def expected_lrs(recipe, total):
    return [lr_at(recipe, s, total) for s in range(total)]


def test_max_steps_only_sizes_the_schedule(cifar10_dir):
    """L.Trainer(max_steps=6): Lightning sets max_epochs=-1; before, total_steps was -12."""
    lr = RecordLR()
    t = trainer(max_steps=6, callbacks=[lr])
    model = CIFARClassifier("small_cnn", 10)
    t.fit(model, datamodule=dm(cifar10_dir))
    assert t.global_step == 6 and model.total_training_steps() == 6
    assert lr.lrs == pytest.approx(expected_lrs(model.recipe, 6), rel=1e-9)  # the whole OneCycle, in 6 steps


@pytest.mark.parametrize("model_name,epochs", [pytest.param("small_cnn", 22, marks=pytest.mark.slow), ("fast", 12)])
def test_more_epochs_than_the_recipe_stretch_the_schedule(cifar10_dir, model_name, epochs):
    """The recipes are 20 (small_cnn) and 9.9 (fast) epochs. Before: OneCycle raised after
    20 epochs; the fast net's linear schedule ran past its end and the lr turned negative."""
    lr = RecordLR()
    t = trainer(max_epochs=epochs, callbacks=[lr])
    model = CIFARClassifier(model_name, 10)
    t.fit(model, datamodule=dm(cifar10_dir, batch_size=100))  # 2 steps an epoch
    total = 2 * epochs
    assert t.global_step == total and len(lr.lrs) == total
    assert min(lr.lrs) > 0
    assert lr.lrs == pytest.approx(expected_lrs(model.recipe, total), rel=1e-9)
    assert t.test(model, datamodule=dm(cifar10_dir), verbose=False)[0]["test/acc"] >= 0


def test_module_epochs_stop_a_longer_trainer_at_the_schedule_end(cifar10_dir):
    """epochs=1.5 under max_epochs=5: training ends after 3 of 2-step epochs' steps."""
    lr = RecordLR()
    t = trainer(max_epochs=5, callbacks=[lr])
    model = CIFARClassifier("fast", 10, epochs=1.5)
    t.fit(model, datamodule=dm(cifar10_dir, batch_size=100))
    assert t.global_step == 3 and lr.lrs == pytest.approx(expected_lrs(model.recipe, 3), rel=1e-9)


def test_unbounded_trainer_is_refused(cifar10_dir):
    with pytest.raises(ValueError, match="give the Trainer max_epochs or max_steps"):
        trainer(max_epochs=-1).fit(CIFARClassifier("small_cnn", 10), datamodule=dm(cifar10_dir))


def test_fast_dev_run(cifar10_dir):
    t = trainer(fast_dev_run=True, limit_val_batches=None)
    t.fit(CIFARClassifier("small_cnn", 10), datamodule=dm(cifar10_dir))
    assert t.global_step == 1


@pytest.mark.parametrize("limit,accumulate,steps", [(3, 1, 6), (4, 2, 4)])
def test_limit_train_batches_and_accumulation(cifar10_dir, limit, accumulate, steps):
    lr = RecordLR()
    t = trainer(max_epochs=2, limit_train_batches=limit, accumulate_grad_batches=accumulate, callbacks=[lr])
    model = CIFARClassifier("small_cnn", 10)
    t.fit(model, datamodule=dm(cifar10_dir, batch_size=25))
    assert t.global_step == steps and model.total_training_steps() == steps
    assert lr.lrs == pytest.approx(expected_lrs(model.recipe, steps), rel=1e-9)


@pytest.mark.parametrize("as_path", [True, False])
def test_checkpoints_load_with_weights_only(cifar10_dir, tmp_path, as_path):
    """Path or str data folder, a Recipe object, tuples and numpy numbers in the
    arguments: load_from_checkpoint and fit(ckpt_path=...) work under weights_only=True."""
    folder = cifar10_dir if as_path else str(cifar10_dir)
    recipe = get_recipe("small_cnn").with_overrides(lr=np.float64(0.02))
    model = CIFARClassifier(
        "small_cnn",
        10,
        recipe=recipe,
        class_names=tuple(f"c{i}" for i in range(10)),
        model_kwargs={"dropout": np.float32(0.1)},
        epochs=2,
    )
    t = trainer(max_epochs=2, default_root_dir=tmp_path, callbacks=[StopAfterEpochs(1)])  # an interrupted run
    t.fit(model, datamodule=dm(folder))
    ckpt = tmp_path / "one.ckpt"
    t.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=True)  # would raise on a PosixPath or a dataclass
    assert saved["datamodule_hyper_parameters"]["data_dir"] == str(cifar10_dir)
    loaded = CIFARClassifier.load_from_checkpoint(ckpt)
    assert loaded.recipe == recipe and loaded.hparams.class_names == [f"c{i}" for i in range(10)]
    for a, b in zip(loaded.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    again = CIFARDataModule.load_from_checkpoint(ckpt)
    assert again.data_dir == Path(cifar10_dir)
    resumed = trainer(max_epochs=2)
    resumed.fit(CIFARClassifier("small_cnn", 10, recipe=recipe, epochs=2), datamodule=dm(folder), ckpt_path=ckpt)
    assert resumed.global_step == 2 * t.global_step
    longer = trainer(max_epochs=3)  # another schedule: refused, not silently stretched mid-run
    with pytest.raises(ValueError, match="schedule spans 8 optimizer steps, but this trainer plans 12"):
        longer.fit(CIFARClassifier("small_cnn", 10, recipe=recipe), datamodule=dm(folder), ckpt_path=ckpt)


class StopAfterEpochs(L.Callback):
    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


def test_data_order_of_nearby_seeds_is_unrelated(cifar10_dir):
    """Before, seed s in epoch e had the order of seed s + 1 in epoch e - 1 (and the
    augmentation draws of seed s were seed*100003 + epoch's)."""
    from cifar_lightning.core.draws import draw_epoch

    a, b = dm(cifar10_dir, seed=3).train_dataloader(), dm(cifar10_dir, seed=4).train_dataloader()
    a.sampler.set_epoch(1)
    b.sampler.set_epoch(0)
    assert not np.array_equal(a.sampler.indices()[:20], b.sampler.indices()[:20])
    draws = [
        draw_epoch(loader.plan.augmentation, 200, loader.plan.seed, epoch).shift for loader, epoch in ((a, 1), (b, 0))
    ]
    assert not np.array_equal(*draws)


def readme_block(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {heading}", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_readme_use_the_parts_runs_as_written(tmp_path, monkeypatch):
    """The README's "Use the parts" block, executed against a tiny CIFAR-100 folder in
    ./data. Only the machine differs: the Trainer runs on CPU (no MPS here), two epochs of
    one training batch each, one validation batch."""
    write_cifar(tmp_path / "data", "cifar100", n_train=5200, n_test=100)
    monkeypatch.chdir(tmp_path)

    class CPUTrainer(L.Trainer):
        def __init__(self, *args, **kwargs):
            kwargs.update(
                accelerator="cpu",
                max_epochs=2,
                limit_train_batches=1,
                limit_val_batches=1,
                logger=False,
                enable_progress_bar=False,
            )
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(L, "Trainer", CPUTrainer)
    namespace: dict = {}
    exec(compile(readme_block("Use the parts"), "README.md", "exec"), namespace)
    assert namespace["trainer"].global_step == 2
    accuracy = namespace["accuracy"]
    assert 0 <= accuracy <= 1


def test_readme_start_a_run_from_python_runs_as_written(tmp_path, monkeypatch):
    """The README's "Start a run from Python" block, against a tiny CIFAR-10 folder in ./data;
    only the machine differs: torch on the CPU (no MPS here), MLX on its default device (the
    CPU here), batches of 50 images."""
    from cifar_lightning import backend
    from cifar_lightning.core.run import RunConfig

    write_cifar(tmp_path / "data", "cifar10", n_train=100, n_test=20)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(backend, "check_accelerator", lambda name: "cpu")
    small = RunConfig.__init__

    def tiny(self, *args, **kwargs):  # two steps of 50 images
        small(self, *args, **{**kwargs, "batch_size": 50, "download": False})

    monkeypatch.setattr(RunConfig, "__init__", tiny)
    namespace: dict = {}
    exec(compile(readme_block("Start a run from Python"), "README.md", "exec"), namespace)
    torch_run, mlx_run = namespace["torch_run"], namespace["mlx_run"]
    assert torch_run.record["status"] == mlx_run.record["status"] == "finished"
    assert mlx_run.record["framework"] == "mlx" and "--weights" in mlx_run.record["command"]
    assert (tmp_path / "runs/py-torch/run.json").is_file() and mlx_run.folder == Path("runs/py-mlx")


DDP_SCRIPT = """
import sys
from cifar_lightning.cli.fit import main
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_ddp_metrics_are_whole_set_values(tmp_path, monkeypatch):
    """fit.py with 2 CPU processes on a test set of 51 images (shares of 26 and 25): the
    test accuracy and loss in run.json (from trainer.test) and the last validation row of
    metrics.csv equal a one-process evaluation of the same final weights."""
    data = write_cifar(tmp_path / "data", "cifar10", n_train=200, n_test=51)
    common = [
        "--data-dir",
        str(data),
        "--no-download",
        "--accelerator",
        "cpu",
        "--model",
        "small_cnn",
        "--lock-file",
        "none",
    ]
    fit = [sys.executable, str(ROOT / "scripts" / "fit.py")]
    r = subprocess.run(
        [
            *fit,
            *common,
            "--epochs",
            "1",
            "--batch-size",
            "20",
            "--devices",
            "2",
            "--strategy",
            "ddp",
            "--output-dir",
            str(tmp_path / "ddp"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert ddp["hyperparameters"]["total_steps"] == 200 // 2 // 20
    assert (
        ddp["processes"] | {"devices": 2, "world_size": 2, "strategy": "ddp", "effective_batch_size": 40}
        == ddp["processes"]
    )
    # the one-process evaluation needs no process of its own: fit's main() here
    from cifar_lightning.cli.fit import main as fit_main

    monkeypatch.chdir(tmp_path)
    fit_main(
        [
            *common,
            "--test-only",
            "--weights",
            str(tmp_path / "ddp" / "checkpoints" / "final.ckpt"),
            "--output-dir",
            str(tmp_path / "one"),
        ]
    )
    one = json.loads((tmp_path / "one" / "run.json").read_text())
    assert ddp["test_accuracy"] == one["test_accuracy"]
    assert ddp["test_loss"] == pytest.approx(one["test_loss"], rel=1e-5)
    assert ddp["per_class_accuracy"] == one["per_class_accuracy"]
    rows = [row for row in _csv(tmp_path / "ddp" / "metrics.csv") if row.get("val/loss")]
    assert float(rows[-1]["val/acc"]) == pytest.approx(one["test_accuracy"], abs=1e-6)  # val is the test set here
    assert float(rows[-1]["val/loss"]) == pytest.approx(one["test_loss"], rel=1e-5)


def _csv(path: Path) -> list[dict]:
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))
