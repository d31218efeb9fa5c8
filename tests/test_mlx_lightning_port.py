"""The port test: one user model written as a LightningModule and as an MLXModule, trained by
``L.Trainer`` and by ``MLXTrainer`` with the same flags from the same weights, gives the
same logged metric names and rows, the same checkpoints kept, the same stopping point and
the same numbers within the measured difference of two float32 implementations.

Both runs are made once per module (the fixture) and read by several tests.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping as TorchEarlyStopping
from lightning.pytorch.callbacks import ModelCheckpoint as TorchModelCheckpoint
from lightning.pytorch.loggers import CSVLogger as TorchCSVLogger
from lightning_port_models import MLXMLP, TorchMLP, blobs, copy_weights, numpy_batches, torch_loader

from cifar_mlx_adapter.lightning import Callback, CSVLogger, EarlyStopping, MLXTrainer, ModelCheckpoint

BATCH = 16
# Flags both trainers get. Clipping at 0.5 binds on most steps (the gradient norms of this
# problem start near 2), so a skipped clip changes the numbers; EarlyStopping's min_delta
# makes the run stop before max_steps once validation loss gains less than 0.02.
FLAGS = dict(
    max_steps=60,
    accumulate_grad_batches=2,
    gradient_clip_val=0.5,
    val_check_interval=0.5,
    log_every_n_steps=2,
    enable_progress_bar=False,
    enable_model_summary=False,
)
# Worst relative difference measured between the two float32 runs over every logged value
# (2-core AMD EPYC, 2026-12-07): 2.0e-7, a few float32 ulps from sums taken in another order.
# 1e-5 leaves 50x room for that to grow over other BLAS builds and longer runs; every planted
# fault of the module docstring moves some value by far more (see the closing note of issue 36).
RTOL = 1e-5


class _Outputs:
    """Records ``outputs["loss"]`` at every ``on_train_batch_end``, as a user's callback reads it
    (the same body serves as a Lightning and as an MLXTrainer callback)."""

    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


class TorchOutputs(_Outputs, L.Callback):
    pass


class MLXOutputs(_Outputs, Callback):
    pass


def _callbacks(checkpoint_cls, stopping_cls, outputs_cls, dirpath):
    return [
        checkpoint_cls(dirpath=dirpath, monitor="val/loss", save_top_k=2, mode="min"),
        stopping_cls(monitor="val/loss", patience=2, min_delta=0.02, mode="min"),
        outputs_cls(),
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("port")
    x, y = blobs(320, seed=1)
    vx, vy = blobs(96, seed=2)
    torch.manual_seed(0)
    torch_model = TorchMLP()
    mlx_model = MLXMLP()
    copy_weights(torch_model, mlx_model)

    torch_cbs = _callbacks(TorchModelCheckpoint, TorchEarlyStopping, TorchOutputs, root / "torch" / "ckpt")
    torch_trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        callbacks=torch_cbs,
        logger=TorchCSVLogger(root / "torch"),
        default_root_dir=root / "torch",
        **FLAGS,
    )
    torch_trainer.fit(torch_model, torch_loader(x, y, BATCH), torch_loader(vx, vy, BATCH))

    mlx_cbs = _callbacks(ModelCheckpoint, EarlyStopping, MLXOutputs, root / "mlx" / "ckpt")
    mlx_trainer = MLXTrainer(callbacks=mlx_cbs, logger=CSVLogger(root / "mlx"), default_root_dir=root / "mlx", **FLAGS)
    mlx_trainer.fit(mlx_model, numpy_batches(x, y, BATCH), numpy_batches(vx, vy, BATCH))
    return {
        "torch": (torch_trainer, torch_cbs, root / "torch"),
        "mlx": (mlx_trainer, mlx_cbs, root / "mlx"),
    }


def _rows(root: Path) -> list[dict]:
    [path] = root.glob("lightning_logs/version_*/metrics.csv")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_same_metric_names_and_rows(runs):
    torch_rows, mlx_rows = _rows(runs["torch"][2]), _rows(runs["mlx"][2])
    assert list(mlx_rows[0]) == list(torch_rows[0]), "the CSV columns differ"
    keys = [(r["epoch"], r["step"], tuple(k for k, v in r.items() if v != "")) for r in torch_rows]
    assert [(r["epoch"], r["step"], tuple(k for k, v in r.items() if v != "")) for r in mlx_rows] == keys


def test_same_numbers_within_float32_noise(runs):
    worst = 0.0
    for t, m in zip(_rows(runs["torch"][2]), _rows(runs["mlx"][2])):
        for key, value in t.items():
            if value == "" or key in ("epoch", "step"):
                continue
            a, b = float(value), float(m[key])
            worst = max(worst, abs(a - b) / max(abs(a), 1e-12))
            assert b == pytest.approx(a, rel=RTOL, abs=1e-6), f"{key} at step {t['step']}: torch {a}, MLX {b}"
    print(f"worst relative difference: {worst:.2e}")


def test_same_stopping_point(runs):
    (tt, tcbs, _), (mt, mcbs, _) = runs["torch"], runs["mlx"]
    assert (mt.global_step, mt.current_epoch) == (tt.global_step, tt.current_epoch)
    assert tt.global_step < FLAGS["max_steps"], "the run must stop early for this test to test EarlyStopping"
    assert mcbs[1].stopped_epoch == tcbs[1].stopped_epoch
    assert mcbs[1].wait_count == tcbs[1].wait_count


def test_same_checkpoints_kept(runs):
    (_, tcbs, troot), (_, mcbs, mroot) = runs["torch"], runs["mlx"]
    torch_files = sorted(p.name for p in (troot / "ckpt").iterdir())
    mlx_files = sorted(p.name for p in (mroot / "ckpt").iterdir())
    assert mlx_files == torch_files and len(torch_files) == 2
    assert Path(mcbs[0].best_model_path).name == Path(tcbs[0].best_model_path).name
    assert float(mcbs[0].best_model_score) == pytest.approx(float(tcbs[0].best_model_score), rel=RTOL)


def test_a_callback_reads_the_loss_lightnings_backward_took(runs):
    """``outputs["loss"]`` in ``on_train_batch_end``, batch by batch: with
    accumulate_grad_batches=2 Lightning hands over the loss divided by 2 (the one its backward
    took), not the training_step's loss."""
    torch_losses, mlx_losses = runs["torch"][1][2].losses, runs["mlx"][1][2].losses
    assert len(torch_losses) > 2 * FLAGS["max_steps"] // 4, "too few batches: the case checks little"
    assert mlx_losses == pytest.approx(torch_losses, rel=RTOL, abs=1e-6)


def test_callback_metrics_agree(runs):
    tt, mt = runs["torch"][0], runs["mlx"][0]
    assert set(mt.callback_metrics) == set(tt.callback_metrics)
    for key, value in tt.callback_metrics.items():
        assert float(mt.callback_metrics[key]) == pytest.approx(float(value), rel=RTOL, abs=1e-6), key


def test_test_returns_lightnings_list_of_dicts(runs):
    x, y = blobs(64, seed=3)
    tt, mt = runs["torch"][0], runs["mlx"][0]
    torch_out = tt.test(tt.lightning_module, torch_loader(x, y, BATCH), verbose=False)
    mlx_out = mt.test(mt.lightning_module, numpy_batches(x, y, BATCH), verbose=False)
    assert [set(d) for d in mlx_out] == [set(d) for d in torch_out]
    assert mlx_out[0]["test/acc"] == pytest.approx(torch_out[0]["test/acc"], abs=1e-6)
    assert not math.isnan(mlx_out[0]["test/acc"])
