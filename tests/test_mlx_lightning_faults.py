"""Behaviours of MLXTrainer the port and API tests left unchecked, each found by planting a fault
that every other test missed: a mid-epoch resume (the random key, the optimiser state, the
batches already done), bf16-mixed keeping its float32 master weights, 16-mixed skipping a step
whose gradients are not finite, the epoch reductions (batch-size weighted mean, "max", "sum")
against L.Trainer, and min_epochs holding off EarlyStopping as L.Trainer does."""

from __future__ import annotations

import lightning as L
import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping as TorchEarlyStopping
from lightning_port_models import MLXMLP, TorchMLP, blobs, copy_weights, numpy_batches, torch_loader
from mlx.utils import tree_flatten, tree_unflatten

from cifar_mlx_adapter.lightning import Callback, EarlyStopping, MLXTrainer, ModelCheckpoint

QUIET = dict(enable_progress_bar=False, enable_model_summary=False)


@pytest.fixture(scope="module")
def data():
    x, y = blobs(128, seed=1)
    return numpy_batches(x, y, 16)  # 8 batches an epoch


def _params(model) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in tree_flatten(model.parameters())}


def _set(model, flat: dict[str, np.ndarray]) -> None:
    model.update(tree_unflatten([(k, mx.array(v)) for k, v in flat.items()]))


class DropMLP(MLXMLP):
    """MLXMLP with dropout on the hidden layer: every step draws from MLX's global random key."""

    def __init__(self, lr: float = 0.1, momentum: float = 0.9):
        super().__init__(lr=lr, momentum=momentum)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        hidden = self.drop(nn.relu(self.net.layers[0](x)))
        return self.net.layers[2](hidden)


def test_resume_mid_epoch_with_dropout_ends_where_the_whole_run_ends(tmp_path, data):
    """Resumed from a checkpoint made after the 3rd batch of epoch 0, a run with dropout and
    momentum ends with the weights of the uninterrupted run, bit for bit: the random key, the
    optimiser's momentum and the batches already done all come back from the checkpoint."""
    start = _params(DropMLP())

    mx.random.seed(7)
    whole = DropMLP()
    _set(whole, start)
    MLXTrainer(max_epochs=2, logger=False, enable_checkpointing=False, **QUIET).fit(whole, data)

    mx.random.seed(7)
    cut = DropMLP()
    _set(cut, start)
    every3 = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1)
    MLXTrainer(max_steps=3, logger=False, callbacks=[every3], **QUIET).fit(cut, data)
    [path] = list((tmp_path / "ckpt").glob("*step=3.ckpt"))

    mx.random.seed(12345)  # a different key in between: the checkpoint's must come back
    mx.random.normal((3,))
    resumed = DropMLP()
    more = MLXTrainer(max_epochs=2, logger=False, enable_checkpointing=False, **QUIET)
    more.fit(resumed, data, ckpt_path=path)
    assert (more.global_step, more.current_epoch) == (2 * len(data), 2)
    got = _params(resumed)
    for name, value in _params(whole).items():
        np.testing.assert_array_equal(got[name], value, name)


def test_bf16_mixed_updates_the_float32_master_weights(tmp_path, data):
    """With a learning rate of 0 the float32 weights stay bit for bit: the step computes with
    bfloat16 copies and must not leave their rounding in the weights."""
    model = MLXMLP(lr=0.0)
    before = _params(model)
    MLXTrainer(max_steps=3, precision="bf16-mixed", logger=False, enable_checkpointing=False, **QUIET).fit(model, data)
    after = _params(model)
    for name, value in before.items():
        assert after[name].dtype == np.float32, name
        np.testing.assert_array_equal(after[name], value, name)


class Record(Callback):
    """After each batch: the weights, the momentum buffers and the loss scale."""

    def __init__(self):
        self.rows = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        momentum = {k: np.array(v) for k, v in tree_flatten(trainer.optimizers[0].state) if k.endswith(".v")}
        scale = float(trainer._scaler.state["scale"].item())
        self.rows.append((_params(module), momentum, scale))


def test_16_mixed_skips_the_step_whose_gradients_are_not_finite(data):
    """MLXTrainer(precision="16-mixed"): a batch with an inf input gives non-finite gradients; as
    torch's GradScaler, that step leaves the weights and the momentum as they were and halves the
    scale, while global_step still counts it; the clean steps around it update the weights. Every
    recorded weight and momentum stays finite (at the initial scale 2**16 a clean batch may overflow
    float16 too: its step must be skipped the same way)."""
    bad = 3
    batches = [(x.copy(), y) for x, y in data[:6]]
    batches[bad][0][0, 0] = np.inf
    record = Record()
    trainer = MLXTrainer(
        max_epochs=1, precision="16-mixed", callbacks=[record], logger=False, enable_checkpointing=False, **QUIET
    )
    trainer.fit(MLXMLP(), batches)
    assert trainer.global_step == len(batches)
    rows = record.rows
    for i, (params, momentum, _) in enumerate(rows):
        finite = all(np.isfinite(v).all() for v in [*params.values(), *momentum.values()])
        assert finite, f"non-finite weights or momentum after batch {i}: a step with inf/NaN gradients was applied"
    for i in range(1, len(rows)):
        (p0, m0, s0), (p1, m1, s1) = rows[i - 1], rows[i]
        same = all(np.array_equal(p0[k], p1[k]) for k in p0) and all(np.array_equal(m0[k], m1[k]) for k in m0)
        if i == bad:
            assert same, "the step with non-finite gradients changed the weights or the momentum"
            assert s1 == s0 * 0.5
        else:
            assert not same, f"the clean step {i} left the weights unchanged"
            assert s1 == s0


class TorchReduced(TorchMLP):
    def validation_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self(x), y)
        self.log("val/loss", loss)
        self.log("val/max", loss, reduce_fx="max")
        self.log("val/min", loss, reduce_fx="min")
        self.log("val/sum", loss, reduce_fx="sum")


class MLXReduced(MLXMLP):
    def validation_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.losses.cross_entropy(self(x), y, reduction="mean")
        self.log("val/loss", loss)
        self.log("val/max", loss, reduce_fx="max")
        self.log("val/min", loss, reduce_fx="min")
        self.log("val/sum", loss, reduce_fx="sum")


def _validated_by_both(tmp_path, torch_cls, mlx_cls) -> tuple[dict, dict]:
    """(L.Trainer's, MLXTrainer's) ``validate`` results for the same weights on 37 rows in
    batches of 16, 16 and 5."""
    x, y = blobs(37, seed=4)
    torch.manual_seed(0)
    torch_model, mlx_model = torch_cls(), mlx_cls()
    copy_weights(torch_model, mlx_model)
    theirs = L.Trainer(accelerator="cpu", devices=1, logger=False, default_root_dir=tmp_path, **QUIET)
    [expected] = theirs.validate(torch_model, torch_loader(x, y, 16), verbose=False)
    [got] = MLXTrainer(logger=False, default_root_dir=tmp_path, **QUIET).validate(
        mlx_model, numpy_batches(x, y, 16), verbose=False
    )
    return expected, got


def test_epoch_reductions_weight_by_batch_size_as_lightning(tmp_path):
    """Batches of 16, 16 and 5: the epoch mean is weighted by batch size, and max, min and sum
    reduce as L.Trainer reduces them."""
    expected, got = _validated_by_both(tmp_path, TorchReduced, MLXReduced)
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-5), key


class TorchEpochEndLogs(TorchReduced):
    def on_validation_epoch_end(self):
        self.log("end/mean", 1.0, batch_size=10)
        self.log("end/mean", 4.0)  # no batch size: Lightning's batch is gone at the epoch's end (weight 1)


class MLXEpochEndLogs(MLXReduced):
    def on_validation_epoch_end(self):
        self.log("end/mean", 1.0, batch_size=10)
        self.log("end/mean", 4.0)


def test_an_epoch_end_log_without_a_batch_size_weighs_one_as_lightning(tmp_path):
    """Two values of one name logged in on_validation_epoch_end, the first with batch_size=10,
    the second without: Lightning drops its batch after each one (LoggerConnector.on_batch_end),
    so the second weighs 1 and the mean is (10 * 1 + 4) / 11, not weighted by the last batch's
    16 rows."""
    expected, got = _validated_by_both(tmp_path, TorchEpochEndLogs, MLXEpochEndLogs)
    assert expected["end/mean"] == pytest.approx(14 / 11)  # the premise: Lightning weighs the second value 1
    assert got["end/mean"] == pytest.approx(expected["end/mean"], rel=1e-6)


def test_min_epochs_holds_off_early_stopping_as_lightning(tmp_path, data):
    """EarlyStopping asks to stop after epoch 1 (no epoch gains 10); min_epochs=4 trains on to 4
    epochs in L.Trainer, and so in MLXTrainer."""
    x, y = blobs(128, seed=1)
    flags = dict(max_epochs=10, min_epochs=4, logger=False, enable_checkpointing=False, **QUIET)
    torch.manual_seed(0)
    stop = TorchEarlyStopping(monitor="val/loss", patience=1, min_delta=10.0)
    theirs = L.Trainer(accelerator="cpu", devices=1, callbacks=[stop], default_root_dir=tmp_path, **flags)
    theirs.fit(TorchMLP(), torch_loader(x, y, 16), torch_loader(x, y, 16))
    ours_stop = EarlyStopping(monitor="val/loss", patience=1, min_delta=10.0)
    ours = MLXTrainer(callbacks=[ours_stop], default_root_dir=tmp_path, **flags)
    ours.fit(MLXMLP(), data, data)
    assert theirs.current_epoch == 4  # the premise: min_epochs, not max_epochs, ended Lightning's run
    assert (ours.current_epoch, ours.global_step) == (theirs.current_epoch, theirs.global_step)
    assert ours_stop.stopped_epoch == stop.stopped_epoch
