"""Faults a careful user meets at the edges, each a test that failed before its fix.

- Per-step callbacks act once per optimizer step under gradient accumulation.
- A summed loss (the fast recipe) takes the same step under DDP and accumulation as one
  process on the union of the batches.
- run.json's times measure the same spans in both frameworks; an evaluation trained
  nothing (0 steps) in both.
- The MLX trainer keeps the modes a user set and restores them after evaluation.
- The NaN stop names the first non-finite step, in both frameworks.
- fit_mlx.py uses the GPU MLX reports, Metal or CUDA.

Faults these tests were checked against (each makes a test fail): LookaheadAveraging
acting on every micro-batch; the summed loss not multiplied by processes x accumulation
(ratio 0.49); torch's train_time_s read after the test pass; --test-only recording the
recipe's planned steps; ``model.train()`` at every MLX epoch start and after evaluation;
the NaN check reading the loss at logged steps only (MLX), or naming the step where the
host looked (torch); ``mx.metal.is_available()`` as the only GPU test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import mlx.core as mx
import numpy as np
import pytest
import torch

from cifar_lightning import CIFARClassifier, CIFARDataModule
from cifar_lightning.callbacks import LookaheadAveraging, RunBook
from cifar_lightning.cli.fit import main as fit_main
from cifar_lightning.cli.fit_mlx import main as fit_mlx_main
from cifar_lightning.core.errors import NonFiniteLossError
from cifar_lightning.models import build_model
from cifar_mlx_adapter import Callback, MLXClassifier, MLXTrainer
from cifar_mlx_adapter.backend import setup_device

ROOT = Path(__file__).resolve().parents[1]


class RecordBlends(LookaheadAveraging):
    def __init__(self, every):
        super().__init__(every)
        self.blends: list[tuple[int, float]] = []

    def _blend(self, pl_module, decay):
        self.blends.append((pl_module.trainer.global_step, decay))
        super()._blend(pl_module, decay)


def test_averaging_acts_once_per_optimizer_step_under_accumulation(cifar10_dir):
    """accumulate_grad_batches=2, every=2, 6 optimizer steps: blends at steps 2, 4, 6 and the
    final copy at 6, not at 0, 2, 2, 4, 4, 6 (one per micro-batch)."""
    averaging = RecordBlends(every=2)
    dm = CIFARDataModule("cifar10", cifar10_dir, batch_size=25, download=False, train_subset=150)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=6,
        accumulate_grad_batches=2,
        callbacks=[averaging],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(CIFARClassifier("fast", 10), datamodule=dm)
    assert trainer.global_step == 6
    assert [step for step, _ in averaging.blends] == [2, 4, 6, 6]
    assert averaging.blends[-1][1] == 1.0  # the final weights are the average


def one_step(data, weights, out, devices, batch, accumulate) -> dict:
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "ddp_step.py"),
            str(data),
            str(weights),
            str(out),
            "fast",
            str(devices),
            str(batch),
            str(accumulate),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return torch.load(out, weights_only=True)


@pytest.mark.slow
def test_a_summed_loss_takes_the_same_step_under_ddp_and_accumulation(cifar10_dir, tmp_path):
    """The fast recipe's summed loss, one step on 50 images: 2 DDP processes of 25 and one
    process accumulating 2 x 25 move the weights as far as one process on the 50 (today
    0.98x and 0.96x; before the fix 0.49x). The floor is BatchNorm's statistics per process
    or micro-batch: SmallCNN's mean loss, which never needed the fix, measured 0.97-0.99x
    the same way, so the bound is 10%."""
    torch.manual_seed(0)
    model = build_model("fast", 10)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save(initial, tmp_path / "w.pt")

    def moved(state):
        return torch.cat(
            [
                (state[k] - initial[k]).flatten()
                for k in initial
                if initial[k].is_floating_point() and "running" not in k
            ]
        )

    one = moved(one_step(cifar10_dir, tmp_path / "w.pt", tmp_path / "one.pt", 1, 50, 1))
    for name, devices, accumulate in (("ddp", 2, 1), ("accumulated", 1, 2)):
        step = moved(one_step(cifar10_dir, tmp_path / "w.pt", tmp_path / f"{name}.pt", devices, 25, accumulate))
        ratio = float(step.norm() / one.norm())
        assert abs(ratio - 1) < 0.1, f"{name}: the step is {ratio:.3f}x one process's on the same 50 images"
        assert float(torch.nn.functional.cosine_similarity(step, one, dim=0)) > 0.8


def test_times_measure_the_same_spans_in_both_frameworks(cifar10_dir, tmp_path, monkeypatch):
    """Every validation and test batch moves the clock on by 1000 s (time.perf_counter, which
    both frameworks' timers read, is offset: no sleeping, so a loaded machine cannot blur the
    spans), one training step of 10 images: in both frameworks train_time_s stays below
    1000 s (it spans the steps alone), validation_time_s and test_time_s each hold their
    1000 s (torch's train_time_s once held the test pass)."""
    import time

    jump = 1000.0
    real_clock, offset = time.perf_counter, [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: real_clock() + offset[0])

    def slow(hook):
        def wrapped(self, *args, **kwargs):
            offset[0] += jump
            return hook(self, *args, **kwargs)

        return wrapped

    for cls in (CIFARClassifier, MLXClassifier):
        monkeypatch.setattr(cls, "validation_step", slow(cls.validation_step))
        monkeypatch.setattr(cls, "test_step", slow(cls.test_step))
    common = [
        "--data-dir",
        str(cifar10_dir),
        "--no-download",
        "--model",
        "small_cnn",
        "--epochs",
        "1",
        "--batch-size",
        "10",
        "--limit-train-batches",
        "1",
        "--limit-val-batches",
        "1",
        "--limit-test-batches",
        "1",
    ]
    runs = {
        "pytorch": fit_main([*common, "--accelerator", "cpu", "--output-dir", str(tmp_path / "t")]),
        "mlx": fit_mlx_main([*common, "--cpu", "--output-dir", str(tmp_path / "m")]),
    }
    for name, run in runs.items():
        assert 0 < run["train_time_s"] < jump <= run["validation_time_s"], name
        assert jump <= run["test_time_s"], name


def test_an_evaluation_records_zero_steps_in_both_frameworks(cifar10_dir, tmp_path):
    model = build_model("small_cnn", 10)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    common = ["--data-dir", str(cifar10_dir), "--no-download", "--test-only", "--weights", str(tmp_path / "w.pt")]
    for run in (
        fit_main([*common, "--accelerator", "cpu", "--output-dir", str(tmp_path / "t")]),
        fit_mlx_main([*common, "--cpu", "--output-dir", str(tmp_path / "m")]),
    ):
        assert run["hyperparameters"]["total_steps"] == 0 and run["train_time_s"] == 0 and run["epochs"] == 0


def test_mlx_keeps_a_frozen_batchnorm_frozen_and_restores_modes_after_evaluation(cifar10_dir, tmp_path):
    """A BatchNorm layer put in eval mode by the user keeps its running statistics through
    fit (Lightning's contract: modes are the user's; evaluation restores each submodule's);
    a model tested in eval mode comes back in eval mode."""
    dm = CIFARDataModule("cifar10", cifar10_dir, batch_size=50, download=False)
    module = MLXClassifier("small_cnn", 10, recipe={**MLXClassifier("small_cnn").recipe.to_dict(), "epochs": 2})
    module.model.bn1.eval()
    frozen = np.array(module.model.bn1.running_mean)
    trainer = MLXTrainer(max_epochs=2, default_root_dir=tmp_path, enable_progress_bar=False, enable_checkpointing=False)
    trainer.fit(module, dm)
    assert np.array_equal(np.array(module.model.bn1.running_mean), frozen)
    assert not np.allclose(np.array(module.model.bn2.running_mean), 0)  # the others trained
    assert module.model.training and not module.model.bn1.training
    module.model.eval()
    trainer.test(module, dm, verbose=False)
    assert not any(m.training for _, m in module.model.named_modules())


@pytest.mark.parametrize("framework", ["torch", "mlx"])
def test_nan_stop_names_the_first_non_finite_step(framework, cifar10_dir, tmp_path):
    """Weights poisoned after step 2 with log_every_n_steps=50: the error names step 2, the
    first step whose loss was NaN, not the step where the host next looked (both frameworks
    look only at logged steps and at the epoch's end)."""
    dm = CIFARDataModule("cifar10", cifar10_dir, batch_size=20, download=False)
    if framework == "torch":

        class PoisonTorch(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if trainer.global_step == 2:
                    with torch.no_grad():
                        pl_module.model.fc2.weight.mul_(float("nan"))

        trainer = L.Trainer(
            max_epochs=1,
            callbacks=[RunBook({}), PoisonTorch()],
            default_root_dir=tmp_path,
            log_every_n_steps=50,
            enable_progress_bar=False,
            logger=False,
            accelerator="cpu",
        )
        with pytest.raises(NonFiniteLossError, match=r"training loss became nan at step 2;"):
            trainer.fit(CIFARClassifier("small_cnn", 10, epochs=1), dm)
        return
    module = MLXClassifier("small_cnn", 10)

    class PoisonAtStep(Callback):
        def on_train_batch_end(self, trainer, module, batch_idx):
            if trainer.global_step == 2:
                module.model.fc2.weight = module.model.fc2.weight * mx.array(float("nan"))

    trainer = MLXTrainer(
        max_epochs=1,
        callbacks=[PoisonAtStep()],
        default_root_dir=tmp_path,
        log_every_n_steps=50,
        enable_progress_bar=False,
    )
    with pytest.raises(NonFiniteLossError, match=r"training loss became nan at step 2;"):
        trainer.fit(module, dm)


@pytest.mark.parametrize("framework", ["torch", "mlx"])
def test_a_weight_broken_by_a_step_with_a_finite_loss_is_named_before_the_checkpoint(
    framework, cifar10_dir, tmp_path, capsys
):
    """fit.py and fit_mlx.py: the first epoch's last step (step 9 of 10) leaves a BatchNorm
    statistic infinite after its loss was computed (finite); the epoch-end checkpoint is
    not written, and both say which array broke, at which step, that its loss was finite,
    and that no checkpoint was written yet, in one line of the same words (a new user read
    "training loss became nan" for a finite loss). In the second epoch the line names the
    first epoch's last.ckpt/last.npz, which is kept (Lightning names the file it is about
    to write before writing it: a name taken from there would point at a checkpoint that
    never was)."""
    from cifar_lightning.cli.fit import main as fit_main
    from cifar_lightning.cli.fit_mlx import main as fit_mlx_main

    def breaker(at_step: int):
        if framework == "torch":

            class BreakTorch(L.Callback):
                def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                    if trainer.global_step == at_step:
                        pl_module.model.bn1.running_var.fill_(float("inf"))

            return BreakTorch()

        class BreakMLX(Callback):
            def on_train_batch_end(self, trainer, module, batch_idx):
                if trainer.global_step == at_step:
                    module.model.bn1.running_var = mx.full(module.model.bn1.running_var.shape, float("inf"))

        return BreakMLX()

    main, device, suffix = (
        (fit_main, ["--accelerator", "cpu"], "ckpt")
        if framework == "torch"
        else (
            fit_mlx_main,
            ["--cpu"],
            "npz",
        )
    )
    for epochs, at_step, kept in ((1, 10, None), (2, 20, "last")):
        out = tmp_path / f"run{epochs}"
        flags = ["--data-dir", str(cifar10_dir), "--no-download", "--model", "small_cnn", "--batch-size", "20"]
        flags += ["--epochs", str(epochs), "--limit-val-batches", "0", "--lock-file", "none", "--output-dir", str(out)]
        with pytest.raises(SystemExit) as e:
            main([*flags, *device], callbacks=(breaker(at_step),))
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        step = at_step - 1
        where = "no checkpoint was written yet"
        if kept:
            last = out / "checkpoints" / f"last.{suffix}"
            assert last.is_file()
            where = f"the last good checkpoint is {last}"
        assert e.value.code == 3
        assert err == [
            f"error: bn1.running_var is not finite after step {step}, whose training loss was finite; {where}"
        ]


@pytest.mark.parametrize("metal,cuda,expected", [(True, False, "metal"), (False, True, "cuda"), (False, False, "cpu")])
def test_fit_mlx_uses_the_gpu_mlx_reports(monkeypatch, metal, cuda, expected):
    """A CUDA build of MLX trains on its GPU and records "cuda" (it trained on the CPU)."""
    chosen = []
    monkeypatch.setattr(mx, "is_available", lambda device: metal or cuda)
    monkeypatch.setattr(mx.metal, "is_available", lambda: metal)
    monkeypatch.setattr(mx.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(mx, "set_default_device", chosen.append)
    assert setup_device(cpu=False) == expected
    assert chosen == [mx.cpu if expected == "cpu" else mx.gpu]
    chosen.clear()
    assert setup_device(cpu=True) == "cpu" and chosen == [mx.cpu]


def test_the_loader_honours_the_trainer_flags_that_change_its_batches(cifar10_dir):
    """overfit_batches: the same batches every epoch (no shuffling); use_distributed_sampler
    False: a rank reads the whole split instead of its share."""
    seen = []

    class RecordOrder(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            seen.append(trainer.train_dataloader.sampler.indices()[:40].tolist())

    dm = CIFARDataModule("cifar10", cifar10_dir, batch_size=20, download=False)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        overfit_batches=2,
        callbacks=[RecordOrder()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(CIFARClassifier("small_cnn", 10), datamodule=dm)
    assert len(seen) == 2 and seen[0] == seen[1] == list(range(40))

    dm = CIFARDataModule("cifar10", cifar10_dir, batch_size=20, download=False)
    fake = SimpleNamespace(
        global_rank=1,
        world_size=2,
        overfit_batches=0,
        _accelerator_connector=SimpleNamespace(use_distributed_sampler=False),
        strategy=SimpleNamespace(root_device=torch.device("cpu")),
    )
    dm.trainer = fake
    assert len(dm.train_dataloader().sampler.indices()) == 200
    fake._accelerator_connector.use_distributed_sampler = True
    assert len(dm.train_dataloader().sampler.indices()) == 100
