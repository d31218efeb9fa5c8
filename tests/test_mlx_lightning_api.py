"""MLXTrainer as a Lightning user meets it: their own module, their own data, Lightning's
flags, hooks, callbacks and loggers (each probe of issue 36's "Why" that failed before)."""

from __future__ import annotations

import csv

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from lightning_port_models import MLXMLP, blobs, numpy_batches, torch_loader

from cifar_mlx_adapter.lightning import (
    Callback,
    EarlyStopping,
    MLXModule,
    MLXTrainer,
    ModelCheckpoint,
    StepTraceError,
)

QUIET = dict(enable_progress_bar=False, enable_model_summary=False)


@pytest.fixture(scope="module")
def data():
    x, y = blobs(128, seed=1)
    return numpy_batches(x, y, 16)


def _rows(root) -> list[dict]:
    [path] = sorted(root.glob("lightning_logs/version_*/metrics.csv"))[-1:]
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_fit_on_a_list_of_numpy_batches_learns(tmp_path, data):
    model = MLXMLP()
    trainer = MLXTrainer(max_epochs=3, default_root_dir=tmp_path, **QUIET)
    before = trainer.validate(model, data, verbose=False)[0]["val/acc"]
    trainer.fit(model, data)
    after = trainer.validate(model, data, verbose=False)[0]["val/acc"]
    assert after > max(before, 0.6), (before, after)  # three classes: chance is 1/3


def test_torch_dataloaders_and_a_lightning_datamodule(tmp_path):
    import lightning as L

    x, y = blobs(64, seed=1)

    class DM(L.LightningDataModule):
        calls: list = []

        def prepare_data(self):
            self.calls.append("prepare_data")

        def setup(self, stage):
            self.calls.append(f"setup:{stage}")

        def train_dataloader(self):
            return torch_loader(x, y, 16)

        def val_dataloader(self):
            return torch_loader(x, y, 32)

    dm = DM()
    trainer = MLXTrainer(max_epochs=1, default_root_dir=tmp_path, **QUIET)
    trainer.fit(MLXMLP(), datamodule=dm)
    assert dm.calls == ["prepare_data", "setup:fit"]
    assert trainer.global_step == 4 and trainer.num_val_batches == [2]


class Plain(MLXModule):
    """A module of one's own: no recipe, logs nothing, validation_step returns None."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(8, 3)
        self.seen: list = []

    def __call__(self, x):
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.losses.cross_entropy(self(x), y, reduction="mean")

    def validation_step(self, batch, batch_idx):
        return None

    def configure_optimizers(self):
        return {
            "optimizer": optim.SGD(learning_rate=0.1),
            "lr_scheduler": {"scheduler": lambda s: 0.1, "interval": "step"},
        }


def test_a_plain_module_without_logging_or_hooks(tmp_path, data):
    trainer = MLXTrainer(max_steps=5, default_root_dir=tmp_path, **QUIET)
    trainer.fit(Plain(), data)
    assert trainer.global_step == 5


class Indexed(Plain):
    """Logs the batch_idx its training_step gets, every step."""

    def training_step(self, batch, batch_idx):
        self.log("idx", batch_idx * 1.0, on_step=True, on_epoch=False)
        return super().training_step(batch, batch_idx)


def test_batch_idx_is_the_batch_index_inside_the_compiled_step(tmp_path, data, monkeypatch):
    # the index arrays are made a block at a time: a small block puts block edges inside the epochs
    monkeypatch.setattr("cifar_mlx_adapter.lightning.step.INDEX_BLOCK", 3)
    trainer = MLXTrainer(max_epochs=2, log_every_n_steps=1, default_root_dir=tmp_path, **QUIET)
    trainer.fit(Indexed(), data)
    assert len(data) > 3
    logged = [float(r["idx"]) for r in _rows(tmp_path) if r.get("idx")]
    assert logged == [float(i) for i in range(len(data))] * 2


def test_batch_idx_after_a_mid_epoch_resume_past_an_index_block(tmp_path, data, monkeypatch):
    # resumed at batch 5 with blocks of 3 index arrays: the first index asked for lies past the first block
    monkeypatch.setattr("cifar_mlx_adapter.lightning.step.INDEX_BLOCK", 3)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=5, save_top_k=-1)
    MLXTrainer(max_steps=5, logger=False, callbacks=[ckpt], **QUIET).fit(Indexed(), data)
    [path] = list((tmp_path / "ckpt").glob("*step=5.ckpt"))
    trainer = MLXTrainer(max_epochs=1, log_every_n_steps=1, default_root_dir=tmp_path, **QUIET)
    trainer.fit(Indexed(), data, ckpt_path=path)
    assert len(data) == 8
    assert [float(r["idx"]) for r in _rows(tmp_path) if r.get("idx")] == [5.0, 6.0, 7.0]


def test_an_eager_step_gets_batch_idx_as_an_int_as_lightnings(data):
    import lightning as L
    from lightning_port_models import TorchMLP

    seen, theirs = [], []

    class Eager(Plain):
        def training_step(self, batch, batch_idx):
            seen.append(batch_idx)
            return super().training_step(batch, batch_idx)

    class Recorded(TorchMLP):
        def training_step(self, batch, batch_idx):
            theirs.append(batch_idx)
            return super().training_step(batch, batch_idx)

    x, y = blobs(32, seed=1)
    L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, **QUIET).fit(Recorded(), torch_loader(x, y, 16))
    MLXTrainer(max_steps=2, compile=False, logger=False, enable_checkpointing=False, **QUIET).fit(Eager(), data)
    assert seen == theirs == [0, 1]
    assert [type(i) for i in seen] == [type(i) for i in theirs] == [int, int]


def test_a_host_read_in_the_step_names_the_way_out_and_leaves_mlx_usable(tmp_path, data):
    class Reads(Plain):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            if loss.item() > 100:  # a host read: cannot be traced
                pass
            return loss

    with pytest.raises(StepTraceError, match="compile=False"):
        MLXTrainer(max_steps=2, default_root_dir=tmp_path, **QUIET).fit(Reads(), data)
    mx.random.normal((2,)).tolist()  # MLX's global random state still works
    trainer = MLXTrainer(max_steps=2, default_root_dir=tmp_path, **QUIET)
    trainer.fit(Plain(), data)  # and the next fit in the process
    eager = MLXTrainer(max_steps=2, compile=False, default_root_dir=tmp_path, **QUIET)
    eager.fit(Reads(), data)
    assert eager.global_step == 2


def test_logging_options_suffixes_and_evaluation_logs(tmp_path, data):
    trainer = MLXTrainer(max_epochs=2, log_every_n_steps=4, default_root_dir=tmp_path, **QUIET)
    trainer.fit(MLXMLP(), data, data)
    rows = _rows(tmp_path)
    keys = set().union(*(k for r in rows for k, v in r.items() if v))
    assert {"train/loss_step", "train/loss_epoch", "train/acc", "val/loss", "val/acc", "epoch", "step"} <= set(
        k for r in rows for k, v in r.items() if v
    ), keys
    assert {"train/loss", "train/loss_epoch", "val/loss"} <= set(trainer.callback_metrics)
    tested = trainer.test(trainer.lightning_module, data, verbose=False)
    assert isinstance(tested, list) and set(tested[0]) == {"test/acc"}


def test_lightning_signature_callbacks_and_module_hooks_run_in_lightnings_order(tmp_path, data):
    calls = []

    class Spy(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            calls.append(("cb_batch_end", trainer.global_step, batch_idx, "loss" in outputs))

        def on_train_epoch_end(self, trainer, pl_module):
            calls.append(("cb_epoch_end", trainer.current_epoch, float(trainer.callback_metrics["train/loss_epoch"])))

    class Hooked(MLXMLP):
        def on_fit_start(self):
            calls.append(("fit_start",))

        def on_train_epoch_start(self):
            calls.append(("epoch_start", self.current_epoch))

        def on_train_epoch_end(self):
            calls.append(("epoch_end", self.current_epoch))

    trainer = MLXTrainer(max_epochs=1, limit_train_batches=2, callbacks=[Spy()], default_root_dir=tmp_path, **QUIET)
    trainer.fit(Hooked(), data)
    assert calls[:4] == [("fit_start",), ("epoch_start", 0), ("cb_batch_end", 1, 0, True), ("cb_batch_end", 2, 1, True)]
    assert calls[4][0] == "cb_epoch_end" and calls[5] == ("epoch_end", 0)


@pytest.mark.parametrize(
    "flags",
    [
        dict(fast_dev_run=True),
        dict(overfit_batches=2, max_epochs=2),
        dict(max_steps=3, gradient_clip_val=1.0, gradient_clip_algorithm="value"),
        dict(max_epochs=1, accumulate_grad_batches=3, limit_train_batches=0.5),
        dict(max_epochs=1, precision="bf16-mixed"),
        dict(max_epochs=1, logger=False),
    ],
)
def test_lightnings_flags_are_accepted_and_mean_what_they_say(tmp_path, data, flags):
    trainer = MLXTrainer(default_root_dir=tmp_path, **QUIET, **flags)
    trainer.fit(MLXMLP(), data, data)
    if flags.get("fast_dev_run"):
        assert trainer.global_step == 1 and not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("*.csv"))
    if "overfit_batches" in flags:
        assert trainer.global_step == 4
    if "max_steps" in flags:
        assert trainer.global_step == 3
    if "accumulate_grad_batches" in flags:
        assert trainer.num_training_batches == 4 and trainer.global_step == 2  # steps on the 3rd and the last
    if flags.get("logger") is False:
        assert not list(tmp_path.rglob("*.csv"))


def test_bf16_mixed_keeps_float32_weights_and_optimizer_state(tmp_path, data):
    model = MLXMLP()
    trainer = MLXTrainer(max_steps=3, precision="bf16-mixed", default_root_dir=tmp_path, **QUIET)
    trainer.fit(model, data)
    assert {v.dtype for _, v in _leaves(model.parameters())} == {mx.float32}
    assert {v.dtype for _, v in _leaves(trainer.optimizers[0].state) if v.dtype != mx.uint64} <= {mx.float32}


def _leaves(tree):
    from mlx.utils import tree_flatten

    return [(k, v) for k, v in tree_flatten(tree) if isinstance(v, mx.array) and v.ndim > 0]


def test_two_fits_into_one_folder_keep_both_logs(tmp_path, data):
    for _ in range(2):
        MLXTrainer(max_epochs=1, default_root_dir=tmp_path, **QUIET).fit(MLXMLP(), data)
    versions = sorted(p.name for p in (tmp_path / "lightning_logs").iterdir())
    assert versions == ["version_0", "version_1"]
    assert all((tmp_path / "lightning_logs" / v / "metrics.csv").stat().st_size > 0 for v in versions)


def test_resume_with_more_epochs_trains_on_exactly(tmp_path, data):
    """A run of 2 epochs resumed to 3 equals one run of 3 epochs (weights bit for bit)."""
    mx.random.seed(0)
    whole = MLXMLP()
    start = dict(_leaves(whole.parameters()))
    MLXTrainer(max_epochs=3, default_root_dir=tmp_path / "whole", **QUIET).fit(whole, data)

    first = MLXMLP()
    first.update(_unflat(start))
    cut = MLXTrainer(max_epochs=2, default_root_dir=tmp_path / "cut", **QUIET)
    cut.fit(first, data)
    resumed = MLXMLP()
    more = MLXTrainer(max_epochs=3, default_root_dir=tmp_path / "cut", **QUIET)
    more.fit(resumed, data, ckpt_path=cut.checkpoint_callback.best_model_path)
    assert more.global_step == 3 * len(data) and more.current_epoch == 3
    for name, value in _leaves(whole.parameters()):
        np.testing.assert_array_equal(np.array(dict(_leaves(resumed.parameters()))[name]), np.array(value), name)


def _unflat(flat: dict):
    from mlx.utils import tree_unflatten

    return tree_unflatten(list(flat.items()))


def test_model_checkpoint_and_early_stopping_on_a_validation_loss(tmp_path, data):
    stop = EarlyStopping(monitor="val/loss", patience=1, min_delta=10.0)  # no epoch gains 10: stops after 2
    keep = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/loss", save_top_k=1)
    trainer = MLXTrainer(max_epochs=10, callbacks=[stop, keep], default_root_dir=tmp_path, **QUIET)
    trainer.fit(MLXMLP(), data, data)
    assert trainer.current_epoch == 2 and stop.stopped_epoch == 1
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == [p.split("/")[-1] for p in [keep.best_model_path]]


def test_bad_flags_are_one_line_errors():
    with pytest.raises(Exception, match="accumulate_grad_batches"):
        MLXTrainer(accumulate_grad_batches=0)
    with pytest.raises(Exception, match="gradient_clip_algorithm"):
        MLXTrainer(gradient_clip_algorithm="max")
    with pytest.raises(ValueError, match="(?i)precision .64-true"):
        MLXTrainer(precision="64-true")
    with pytest.raises(TypeError, match="iterable of batches"):
        MLXTrainer(max_steps=1, **QUIET).fit(Plain(), np.zeros((4, 8), np.float32))


def test_mlx_only_import_loads_no_torch():
    import subprocess
    import sys

    code = (
        "import sys, cifar_mlx_adapter.lightning as l; l.MLXTrainer; "
        "print('torch' in sys.modules, 'lightning' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_predict_returns_each_batchs_prediction(tmp_path, data):
    model = MLXMLP()
    out = MLXTrainer(limit_predict_batches=3, default_root_dir=tmp_path, **QUIET).predict(model, data)
    assert [tuple(p.shape) for p in out] == [(16, 3)] * 3
    np.testing.assert_allclose(np.array(out[0]), np.array(model(mx.array(data[0][0]))), rtol=1e-6)


# ---- what a new user met in the first trial (each failed before its fix)


def test_16_mixed_trains_and_keeps_float32_weights(tmp_path, data):
    for optimizer in (optim.SGD(learning_rate=0.1, momentum=0.9), optim.Adam(learning_rate=1e-2)):

        class M(MLXMLP):
            def configure_optimizers(self):
                return optimizer

        model = M()
        start = {k: np.array(v) for k, v in _leaves(model.parameters())}
        trainer = MLXTrainer(max_steps=6, precision="16-mixed", default_root_dir=tmp_path, **QUIET)
        trainer.fit(model, data)
        assert trainer.global_step == 6
        assert {v.dtype for _, v in _leaves(model.parameters())} == {mx.float32}
        after = {k: np.array(v) for k, v in _leaves(model.parameters())}
        assert all(np.isfinite(v).all() for v in after.values())
        assert any(not np.array_equal(start[k], after[k]) for k in start), "no step was taken"
        # a loss near 1 scaled by 2**16 overflows float16 (max 65504) in the backward pass: the scaler
        # backs off and skips those steps, as torch's GradScaler does
        assert trainer._scaler.state_dict()["scale"] < 2.0**16


def test_a_shape_error_in_a_conv_net_is_shown_as_it_is(tmp_path):
    class CNN(MLXModule):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
            self.head = nn.Linear(8 * 4 * 4, 3)

        def __call__(self, x):
            return self.head(self.features(x).flatten(1))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.losses.cross_entropy(self(x), y, reduction="mean")

        def configure_optimizers(self):
            return optim.SGD(learning_rate=0.1)

    nchw = [(np.zeros((4, 3, 8, 8), np.float32), np.zeros(4, np.int64))]  # a torch user's layout by mistake
    with pytest.raises(ValueError, match=r"\[conv\]"):
        MLXTrainer(max_epochs=1, default_root_dir=tmp_path, **QUIET).fit(CNN(), nchw)
    nhwc = [(np.zeros((4, 8, 8, 3), np.float32), np.zeros(4, np.int64))]
    trainer = MLXTrainer(max_epochs=1, default_root_dir=tmp_path, **QUIET)
    trainer.fit(CNN(), nhwc)  # the model's state was put back: the same model trains
    assert trainer.global_step == 1


def test_a_generator_or_an_iterable_without_length_trains(tmp_path, data):
    class Stream:
        def __iter__(self):
            yield from data

    trainer = MLXTrainer(max_epochs=2, default_root_dir=tmp_path, **QUIET)
    trainer.fit(MLXMLP(), Stream(), data)
    assert trainer.global_step == 2 * len(data) and trainer.current_epoch == 2


def test_a_fractional_overfit_batches_counts_as_lightnings(tmp_path, data):
    import lightning as L
    from lightning_port_models import TorchMLP

    x, y = blobs(160, seed=1)
    torch_trainer = L.Trainer(overfit_batches=0.4, max_epochs=1, logger=False, enable_checkpointing=False, **QUIET)
    torch_trainer.fit(TorchMLP(), torch_loader(x, y, 16), torch_loader(x, y, 16))
    trainer = MLXTrainer(overfit_batches=0.4, max_epochs=1, logger=False, enable_checkpointing=False, **QUIET)
    trainer.fit(MLXMLP(), numpy_batches(x, y, 16), numpy_batches(x, y, 16))
    assert trainer.global_step == torch_trainer.global_step == 4


def test_a_schedule_the_optimizer_already_follows_stays_per_step(tmp_path, data):
    schedule = optim.cosine_decay(0.1, 16)

    class M(MLXMLP):
        def configure_optimizers(self):
            return {"optimizer": optim.SGD(learning_rate=schedule), "lr_scheduler": schedule}

    trainer = MLXTrainer(max_steps=16, default_root_dir=tmp_path, **QUIET)
    trainer.fit(M(), data + data)
    # the 16th update used the schedule's value at step 15 (per epoch it would still be step 0's, 0.1)
    assert float(trainer.optimizers[0].learning_rate) == pytest.approx(float(schedule(mx.array(15))), abs=1e-7)


def test_load_from_checkpoint_and_ckpt_path_best(tmp_path, data):
    keep = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/loss", save_top_k=1)
    trainer = MLXTrainer(max_epochs=2, callbacks=[keep], default_root_dir=tmp_path, **QUIET)
    model = MLXMLP(lr=0.05)
    trainer.fit(model, data, data)
    loaded = MLXMLP.load_from_checkpoint(keep.best_model_path)
    assert loaded.hparams.lr == 0.05
    best = trainer.validate(model, data, ckpt_path="best", verbose=False)[0]["val/loss"]
    fresh = MLXTrainer(**QUIET, logger=False).validate(loaded, data, verbose=False)[0]["val/loss"]
    assert best == pytest.approx(float(keep.best_model_score), rel=1e-6) and fresh == pytest.approx(best, rel=1e-6)


def test_lightning_module_members(tmp_path, data):
    seen = {}

    class M(MLXMLP):
        def on_train_start(self):
            seen.update(logger=self.logger, rank=self.global_rank, opt=self.optimizers(), device=self.device)

    trainer = MLXTrainer(max_steps=1, default_root_dir=tmp_path, **QUIET)
    trainer.fit(M(), data)
    assert seen["logger"] is trainer.logger and seen["rank"] == 0 and seen["opt"] is trainer.optimizers[0]
    assert trainer.state.fn == "fit" and trainer.state.status == "finished" and not trainer.interrupted


def test_the_sanity_check_leaves_no_metrics_behind(tmp_path, data):
    seen = {}

    class M(MLXMLP):
        def on_train_start(self):
            seen.update(self.trainer.callback_metrics)

    MLXTrainer(max_steps=1, default_root_dir=tmp_path, **QUIET).fit(M(), data, data)
    assert seen == {}


def test_mistakes_give_one_clear_line(tmp_path, data):
    class LogsText(Plain):
        def training_step(self, batch, batch_idx):
            self.log("name", "hello")
            return super().training_step(batch, batch_idx)

    with pytest.raises(ValueError, match=r"self.log\('name'\) takes an mx.array or a number"):
        MLXTrainer(max_steps=1, default_root_dir=tmp_path, **QUIET).fit(LogsText(), data)

    class NoSuper(MLXModule):
        def __init__(self):
            pass

    with pytest.raises(Exception, match=r"super\(\).__init__\(\)"):
        MLXTrainer(max_steps=1, default_root_dir=tmp_path, **QUIET).fit(NoSuper(), data)
    with pytest.raises(Exception, match="No `test_step"):
        MLXTrainer(**QUIET, logger=False).test(Plain(), data)
    with pytest.warns(UserWarning, match="No training batches"):
        MLXTrainer(max_epochs=1, default_root_dir=tmp_path, **QUIET).fit(Plain(), [])


@pytest.mark.parametrize("installed", [True, False])
def test_a_fit_on_the_slow_blas_says_how_to_get_the_fast_one(installed, monkeypatch, tmp_path, data):
    """On a Linux CPU without OpenBLAS preloaded, fit warns once: with OpenBLAS installed the
    way out is restart_with_openblas in the user's script, else installing it. Checked
    against: no warning from the general trainer (only fit_mlx.py's backend printed one)."""
    from pathlib import Path

    from cifar_mlx_adapter import blas

    monkeypatch.setattr(blas, "needed", lambda: True)
    monkeypatch.setattr(blas, "active", lambda: False)
    monkeypatch.delenv(blas.SWITCH, raising=False)
    monkeypatch.setattr(blas, "openblas_library", lambda: Path("/lib/libopenblas.so.0") if installed else None)
    with pytest.warns(UserWarning, match="reference BLAS") as record:
        MLXTrainer(max_steps=1, default_root_dir=tmp_path, logger=False, **QUIET).fit(MLXMLP(), data)
    [message] = [str(w.message) for w in record if "reference BLAS" in str(w.message)]
    way_out = "restart_with_openblas(sys.argv)" if installed else "pip install cmeel-openblas"
    assert way_out in message, message


def test_a_second_fit_of_a_finished_trainer_says_it_is_done_as_lightning_does(tmp_path, data, capsys, monkeypatch):
    """Fitting again with a trainer that reached max_epochs trains nothing, and says so in
    Lightning's own line (FitLoop.done's rank_zero_info), each time, in both trainers."""
    import lightning as L
    from lightning.pytorch.loops import fit_loop
    from lightning_port_models import TorchMLP

    # Lightning's lines, taken where FitLoop says them: whatever logging setup an earlier test in
    # this worker left, and on any rank (rank_zero_info itself is replaced)
    theirs = []
    monkeypatch.setattr(fit_loop, "rank_zero_info", lambda message, *a, **k: theirs.append(message))
    x, y = blobs(64, seed=1)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, default_root_dir=tmp_path, **QUIET)
    for _ in range(2):
        trainer.fit(TorchMLP(), torch_loader(x, y, 16))
    theirs = [line for line in theirs if "`Trainer.fit` stopped" in line]
    capsys.readouterr()
    ours = MLXTrainer(max_epochs=1, logger=False, enable_checkpointing=False, default_root_dir=tmp_path, **QUIET)
    for _ in range(2):
        ours.fit(MLXMLP(), data)
    lines = [line for line in capsys.readouterr().err.splitlines() if "`Trainer.fit` stopped" in line]
    assert lines == theirs == ["`Trainer.fit` stopped: `max_epochs=1` reached."] * 2


@pytest.mark.parametrize("name", ["small_cnn", "fast"])
def test_the_model_summary_counts_the_parameters_torch_counts(name):
    """The summary's trainable and non-trainable totals are the torch model's (its
    parameters, by requires_grad; BatchNorm's running statistics are buffers there)."""
    from cifar_lightning import CIFARClassifier
    from cifar_mlx_adapter import MLXClassifier
    from cifar_mlx_adapter.lightning.trainer import model_summary

    torch_model = CIFARClassifier(name, 10).model
    trainable = sum(p.numel() for p in torch_model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in torch_model.parameters() if not p.requires_grad)
    last = model_summary(MLXClassifier(name, 10)).splitlines()[-1]
    assert last == f"{trainable:,} trainable params, {frozen:,} non-trainable, {trainable + frozen:,} total"


def test_a_training_step_dicts_other_entries_reach_on_train_batch_end_as_lightnings(tmp_path):
    """A training_step returning {"loss", "acc" (an array), "tag" (a string)}: a callback's
    ``outputs`` in on_train_batch_end holds the same keys in the same order as under
    ``L.Trainer`` (ClosureResult.asdict: the loss, then the dict's other entries), with the
    same values batch by batch, from the same weights."""
    import lightning as L
    import torch
    from lightning_port_models import TorchMLP, copy_weights

    def with_extras(base, mean):
        class Extras(base):
            def training_step(self, batch, batch_idx):
                loss = super().training_step(batch, batch_idx)
                x, y = batch
                return {"acc": mean(self(x).argmax(1) == y), "loss": loss, "tag": "train"}

        return Extras()

    def recorder(base):
        class Outputs(base):
            seen = []

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                self.seen.append([(k, v if isinstance(v, str) else float(v)) for k, v in outputs.items()])

        return Outputs()

    x, y = blobs(64, seed=1)
    torch.manual_seed(0)
    torch_model = with_extras(TorchMLP, lambda hits: hits.float().mean())
    mlx_model = with_extras(MLXMLP, lambda hits: hits.astype(mx.float32).mean())
    copy_weights(torch_model, mlx_model)
    flags = dict(max_steps=3, logger=False, enable_checkpointing=False, **QUIET)
    torch_seen, mlx_seen = recorder(L.Callback), recorder(Callback)
    L.Trainer(accelerator="cpu", callbacks=[torch_seen], **flags).fit(torch_model, torch_loader(x, y, 16))
    MLXTrainer(callbacks=[mlx_seen], default_root_dir=tmp_path, **flags).fit(mlx_model, numpy_batches(x, y, 16))
    assert [[k for k, _ in step] for step in torch_seen.seen] == [["loss", "acc", "tag"]] * 3
    assert [[k for k, _ in step] for step in mlx_seen.seen] == [["loss", "acc", "tag"]] * 3
    for torch_step, mlx_step in zip(torch_seen.seen, mlx_seen.seen):
        assert mlx_step[2] == torch_step[2] == ("tag", "train")
        assert [v for _, v in mlx_step[:2]] == pytest.approx([v for _, v in torch_step[:2]], rel=1e-5, abs=1e-6)


def test_two_values_logged_from_the_same_expression_train_compiled(tmp_path, data):
    """Two logs computed alike (one expression written twice) leave the compiled step as
    two outputs that simplify to one array: mlx 0.32's compile failed on that when they were
    value_and_grad's auxiliary outputs ("_Map_base::at")."""

    class Twice(MLXMLP):
        def training_step(self, batch, batch_idx):
            x, y = batch
            self.log("a", (x * 2).mean(), on_step=False, on_epoch=True)
            self.log("b", (x * 2).mean(), on_step=False, on_epoch=True)
            return super().training_step(batch, batch_idx)

    trainer = MLXTrainer(max_epochs=1, logger=False, enable_checkpointing=False, default_root_dir=tmp_path, **QUIET)
    trainer.fit(Twice(), data)
    expected = float(np.mean([np.mean(x * 2) for x, _ in data]))
    assert float(trainer.callback_metrics["a"]) == float(trainer.callback_metrics["b"]) == pytest.approx(expected)


def test_a_trace_failing_after_the_update_leaves_a_state_the_eager_step_updates(tmp_path, data, monkeypatch):
    """A trace that fails once the optimiser has updated (mx.compile made to raise after
    running the step): the state is put back whole, so the eager rerun that tells the error
    apart updates it (before, MLX's lazily made optimiser state came back empty but taken as
    made: KeyError 'net'), and the error names the trace's cause."""
    import cifar_mlx_adapter.lightning.step as step_module

    def failing_compile(fn, inputs=None, outputs=None):
        def traced(*args):
            fn(*args)
            raise RuntimeError("failed after the update")

        return traced

    monkeypatch.setattr(step_module.mx, "compile", failing_compile)
    trainer = MLXTrainer(max_steps=2, logger=False, enable_checkpointing=False, default_root_dir=tmp_path, **QUIET)
    with pytest.raises(StepTraceError, match="failed after the update"):
        trainer.fit(MLXMLP(), data)


def test_setup_and_teardown_get_the_stage_by_keyword_as_lightning_passes_it(tmp_path):
    """Lightning calls ``setup``/``teardown`` of callbacks, the module and the datamodule with
    ``stage=`` by keyword (trainer/call.py): a hook written ``setup(self, trainer, pl_module,
    *, stage)`` or recording its arguments sees the same call under both trainers."""
    import lightning as L
    import torch
    from lightning_port_models import TorchMLP

    def recorder(base, seen):
        class Record(base):
            def setup(self, *args, **kwargs):
                seen.append(("callback setup", len(args), sorted(kwargs)))

            def teardown(self, *args, **kwargs):
                seen.append(("callback teardown", len(args), sorted(kwargs)))

        return Record()

    def module(base, seen):
        class Module(base):
            def setup(self, *args, **kwargs):
                seen.append(("module setup", len(args), sorted(kwargs)))

        return Module()

    class Data(L.LightningDataModule):
        def __init__(self, seen, to_batches):
            super().__init__()
            self.seen, self.to_batches = seen, to_batches

        def setup(self, *args, **kwargs):
            self.seen.append(("datamodule setup", len(args), sorted(kwargs)))

        def train_dataloader(self):
            return self.to_batches(*blobs(32, seed=1), 16)

        val_dataloader = train_dataloader  # Lightning asks for it where the module has a validation_step

    flags = dict(max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False, **QUIET)
    torch_seen, mlx_seen = [], []
    torch.manual_seed(0)
    L.Trainer(accelerator="cpu", callbacks=[recorder(L.Callback, torch_seen)], **flags).fit(
        module(TorchMLP, torch_seen), datamodule=Data(torch_seen, torch_loader)
    )
    MLXTrainer(callbacks=[recorder(Callback, mlx_seen)], default_root_dir=tmp_path, **flags).fit(
        module(MLXMLP, mlx_seen), datamodule=Data(mlx_seen, numpy_batches)
    )
    assert ("callback setup", 2, ["stage"]) in torch_seen
    assert mlx_seen == torch_seen


@pytest.mark.parametrize("module_saves", [False, True, "not for the logger"])
def test_hparams_yaml_is_written_where_lightnings_is(tmp_path, module_saves):
    """hparams.yaml holds what Lightning's holds: nothing (no file) from a module that never
    called save_hyperparameters or called it with logger=False; the module's hparams merged
    with a datamodule's that called it."""
    import lightning as L
    import torch
    import yaml
    from lightning.pytorch.loggers import CSVLogger as TorchCSVLogger
    from lightning_port_models import TorchMLP

    from cifar_mlx_adapter.lightning import CSVLogger

    def module(base):
        model = base()  # TorchMLP and MLXMLP save lr and momentum for their optimiser, for the logger
        if module_saves is False:  # as if they had never called save_hyperparameters
            object.__setattr__(model, "_log_hyperparams", False)
        elif module_saves != True:  # noqa: E712
            model.save_hyperparameters(dict(model.hparams), logger=False)
        return model

    class Data(L.LightningDataModule):
        def __init__(self, to_batches, batch_size: int = 16):
            super().__init__()
            self.save_hyperparameters(ignore="to_batches")
            self.to_batches = to_batches

        def train_dataloader(self):
            return self.to_batches(*blobs(32, seed=1), 16)

        val_dataloader = train_dataloader

    flags = dict(max_steps=1, limit_val_batches=0, enable_checkpointing=False, **QUIET)
    torch.manual_seed(0)
    L.Trainer(accelerator="cpu", logger=TorchCSVLogger(tmp_path / "torch"), **flags).fit(
        module(TorchMLP), datamodule=Data(torch_loader)
    )
    MLXTrainer(logger=CSVLogger(tmp_path / "mlx"), default_root_dir=tmp_path, **flags).fit(
        module(MLXMLP), datamodule=Data(numpy_batches)
    )

    def hparams(root):
        files = list(root.glob("lightning_logs/version_0/hparams.yaml"))
        return yaml.safe_load(files[0].read_text()) if files else None

    assert hparams(tmp_path / "mlx") == hparams(tmp_path / "torch")
    expected = {"lr": 0.1, "momentum": 0.9, "batch_size": 16} if module_saves is True else {"batch_size": 16}
    assert hparams(tmp_path / "torch") == expected


def test_batch_hooks_get_the_batch_as_mlx_arrays_the_step_trained_on(tmp_path, data):
    """on_train_batch_start and on_train_batch_end (a callback's and the module's) get the same
    batch object, as MLX arrays (the user's numpy batch converted once), batch by batch."""
    seen = []

    class Record(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(("start", batch_idx, batch))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append(("end", batch_idx, batch))

    class Module(MLXMLP):
        def on_train_batch_start(self, batch, batch_idx):
            seen.append(("module start", batch_idx, batch))

    MLXTrainer(max_epochs=1, callbacks=[Record()], logger=False, default_root_dir=tmp_path, **QUIET).fit(Module(), data)
    assert [(hook, i) for hook, i, _ in seen] == [
        (h, i) for i in range(len(data)) for h in ("start", "module start", "end")
    ]
    for i in range(len(data)):
        start, module_start, end = (b for _, j, b in seen if j == i)
        assert start is module_start is end
        assert all(isinstance(v, mx.array) for v in start)
        assert np.array_equal(np.array(start[0]), data[i][0]) and np.array_equal(np.array(start[1]), data[i][1])
