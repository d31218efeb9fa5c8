"""cifar_mlx_adapter.lightning.callbacks against Lightning's own callbacks.

A real ``L.Trainer`` fits a tiny torch module whose ``validation_step`` logs a scripted ``val/loss`` per
epoch; Lightning's ModelCheckpoint/EarlyStopping/LearningRateMonitor run in it, and a bridge callback
hands every hook, at the same moment, to the MLX callbacks with a fake trainer (a SimpleNamespace with
the MLXTrainer interface, its values read from the real trainer, metrics as 0-d float32 mx.array). Both
sides see the same hook sequence; the tests assert the same files kept, the same best/kth/last paths and
scores, the same stopping epoch, the same logged learning rates.
"""

import math
import os
import warnings
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import mlx.core as mx
import mlx.optimizers as mopt
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping as LEarlyStopping
from lightning.pytorch.callbacks import LearningRateMonitor as LLearningRateMonitor
from lightning.pytorch.callbacks import ModelCheckpoint as LModelCheckpoint
from lightning.pytorch.loggers import Logger as LLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException as LMisconfigurationException
from torch.utils.data import DataLoader, TensorDataset

from cifar_mlx_adapter.lightning import callbacks as C

NAN = float("nan")
HOOKS = sorted(n for n in vars(C.Callback) if n.startswith("on_") or n in ("setup", "teardown"))


class Scripted(L.LightningModule):
    """4 train batches and 2 val batches an epoch; val/loss is values[current_epoch]."""

    def __init__(self, values, momentum=0.0, weight_decay=0.0):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.values = values
        self.momentum, self.weight_decay = momentum, weight_decay

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", float(self.values[self.current_epoch]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=self.momentum, weight_decay=self.weight_decay)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=2)

    def val_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=2)


class Recorder:
    """An MLX-side logger: keeps what log_metrics receives."""

    def __init__(self, save_dir=None, name="rec", version=0):
        self.rows, self.save_dir, self.name, self.version = [], save_dir, name, version

    def log_metrics(self, metrics, step):
        self.rows.append((step, dict(metrics)))


class LRecorder(LLogger):
    """The Lightning-side logger: keeps the rows that carry a learning rate."""

    def __init__(self):
        super().__init__()
        self.rows = []

    @property
    def name(self):
        return "rec"

    @property
    def version(self):
        return 0

    def log_metrics(self, metrics, step=None):
        lr = {k: v for k, v in metrics.items() if k.startswith("lr-")}
        if lr:
            self.rows.append((step, lr))

    def log_hyperparams(self, *args, **kwargs):
        pass


def fake_trainer(root, **over):
    """The MLXTrainer interface the callbacks may rely on, as a SimpleNamespace."""
    fake = SimpleNamespace(
        current_epoch=0,
        global_step=0,
        callback_metrics={},
        logged_metrics={},
        should_stop=False,
        is_global_zero=True,
        global_rank=0,
        world_size=1,
        sanity_checking=False,
        fast_dev_run=False,
        default_root_dir=str(root),
        loggers=[],
        logger=None,
        log_dir=None,
        optimizers=[],
        max_epochs=None,
        max_steps=-1,
        check_val_every_n_epoch=1,
        val_check_interval=1.0,
        num_val_batches=[2],
        lightning_module=SimpleNamespace(automatic_optimization=True),
        checkpoint_callback=None,
        should_update_logs=True,
        state=SimpleNamespace(fn="fit"),
    )

    def save_checkpoint(filepath, weights_only=False):
        Path(filepath).write_text(f"step {fake.global_step}")

    fake.save_checkpoint = save_checkpoint
    fake.__dict__.update(over)
    return fake


class Bridge(L.Callback):
    """Hands each Lightning hook to the MLX callbacks with a fake trainer refreshed from the real one."""

    def __init__(self, callbacks, root, **fake):
        self.callbacks = callbacks
        self.fake = fake_trainer(root, **fake)

    def refresh(self, trainer):
        f = self.fake
        f.current_epoch, f.global_step = trainer.current_epoch, trainer.global_step
        f.callback_metrics = {k: mx.array(v.item(), dtype=mx.float32) for k, v in trainer.callback_metrics.items()}
        f.sanity_checking, f.fast_dev_run = trainer.sanity_checking, trainer.fast_dev_run
        f.state.fn = trainer.state.fn.value
        f.check_val_every_n_epoch, f.val_check_interval = trainer.check_val_every_n_epoch, trainer.val_check_interval
        f.num_val_batches = [int(n) for n in trainer.num_val_batches]
        f.should_update_logs = trainer._logger_connector.should_update_logs
        # beyond the interface: what ModelCheckpoint's deferral reads when a trainer has it
        f.is_last_batch = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        f.enable_validation = trainer.enable_validation
        return f


def _forward(name):
    def hook(self, trainer, pl_module, *args, **kwargs):
        fake = self.refresh(trainer)
        for cb in self.callbacks:
            getattr(cb, name)(fake, fake.lightning_module, *args, **kwargs)

    return hook


for _name in HOOKS:
    setattr(Bridge, _name, _forward(_name))


def fit_both(tmp_path, values, lightning_cbs, mlx_cbs, fake=None, module=None, logger=False, **trainer_kwargs):
    bridge = Bridge(mlx_cbs, tmp_path / "mroot", **(fake or {}))
    trainer = L.Trainer(
        max_epochs=len(values),
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=any(isinstance(c, LModelCheckpoint) for c in lightning_cbs),
        accelerator="cpu",
        default_root_dir=tmp_path / "lroot",
        callbacks=[bridge, *lightning_cbs],
        **trainer_kwargs,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module or Scripted(values))
    return trainer, bridge


def files(root):
    root = Path(root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def rel(path, root):
    return os.path.relpath(path, root) if path else ""


def num(x):
    return None if x is None else float(x)


def same(a, b):
    return a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))


def assert_same_checkpointing(lcb, mcb):
    lroot, mroot = lcb.dirpath, mcb.dirpath
    assert files(mroot) == files(lroot)
    assert rel(mcb.best_model_path, mroot) == rel(lcb.best_model_path, lroot)
    assert rel(mcb.kth_best_model_path, mroot) == rel(lcb.kth_best_model_path, lroot)
    assert rel(mcb.last_model_path, mroot) == rel(lcb.last_model_path, lroot)
    assert same(num(mcb.best_model_score), num(lcb.best_model_score))
    assert same(num(mcb.kth_value), num(lcb.kth_value))
    assert same(num(mcb.current_score), num(lcb.current_score))
    assert {rel(k, mroot): float(v) for k, v in mcb.best_k_models.items()} == {
        rel(k, lroot): float(v) for k, v in lcb.best_k_models.items()
    }
    assert mcb.state_key == lcb.state_key
    assert mcb.state_dict().keys() == lcb.state_dict().keys()


VALUES = [0.5, 0.4, 0.45, 0.3, 0.3, 0.35, 0.2, 0.25]

CHECKPOINT_CASES = {
    "top2_min_default_name": dict(monitor="val/loss", save_top_k=2),
    "top3_max_slash_name": dict(monitor="val/loss", save_top_k=3, mode="max", filename="{epoch}-{val/loss:.2f}"),
    "no_monitor_last_every2": dict(save_last=True, every_n_epochs=2),
    "all_constant_name_versions": dict(monitor="val/loss", save_top_k=-1, filename="const", save_last=True),
    "on_validation_end_max": dict(monitor="val/loss", save_top_k=2, mode="max", save_on_train_epoch_end=False),
    "every_3_steps": dict(monitor="val/loss", save_top_k=2, every_n_train_steps=3, save_last=True),
    "no_auto_name_no_counter": dict(
        monitor="val/loss", filename="e{epoch:02d}", auto_insert_metric_name=False, enable_version_counter=False
    ),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_CASES))
def test_model_checkpoint_keeps_what_lightning_keeps(tmp_path, case):
    kwargs = CHECKPOINT_CASES[case]
    lcb = LModelCheckpoint(dirpath=tmp_path / "l", **kwargs)
    mcb = C.ModelCheckpoint(dirpath=tmp_path / "m", **kwargs)
    fit_both(tmp_path, VALUES, [lcb], [mcb])
    assert files(tmp_path / "l"), "the case saved nothing: it checks nothing"
    assert_same_checkpointing(lcb, mcb)


def test_model_checkpoint_nan_and_validation_every_2_epochs(tmp_path):
    values = [0.5, NAN, 0.4, 0.6, NAN, 0.1]
    kwargs = dict(monitor="val/loss", save_top_k=2, filename="{epoch}", save_last=True)
    lcb, mcb = LModelCheckpoint(dirpath=tmp_path / "l", **kwargs), C.ModelCheckpoint(dirpath=tmp_path / "m", **kwargs)
    fit_both(tmp_path, values, [lcb], [mcb])
    assert_same_checkpointing(lcb, mcb)
    assert files(tmp_path / "l") == ["epoch=2.ckpt", "epoch=5.ckpt", "last.ckpt"]

    (tmp_path / "b").mkdir()
    lcb = LModelCheckpoint(dirpath=tmp_path / "b" / "l", **kwargs)
    mcb = C.ModelCheckpoint(dirpath=tmp_path / "b" / "m", **kwargs)
    fit_both(tmp_path / "b", VALUES, [lcb], [mcb], check_val_every_n_epoch=2)
    assert_same_checkpointing(lcb, mcb)


def test_model_checkpoint_steps_with_validation_twice_an_epoch(tmp_path):
    # val_check_interval=0.5: saving moves to on_validation_end; every_n_train_steps=4 hits the epoch's last
    # batch, where a stale monitor defers the save to validation's end
    kwargs = dict(monitor="val/loss", save_top_k=2, every_n_train_steps=4)
    lcb, mcb = LModelCheckpoint(dirpath=tmp_path / "l", **kwargs), C.ModelCheckpoint(dirpath=tmp_path / "m", **kwargs)
    fit_both(tmp_path, VALUES[:4], [lcb], [mcb], val_check_interval=0.5, fake={"val_check_interval": 0.5})
    assert files(tmp_path / "l")
    assert_same_checkpointing(lcb, mcb)


def test_model_checkpoint_default_dirpath(tmp_path):
    lcb, mcb = LModelCheckpoint(monitor="val/loss"), C.ModelCheckpoint(monitor="val/loss")
    fit_both(tmp_path, VALUES[:3], [lcb], [mcb])
    assert Path(lcb.dirpath) == tmp_path / "lroot" / "checkpoints"
    assert Path(mcb.dirpath) == tmp_path / "mroot" / "checkpoints"
    assert_same_checkpointing(lcb, mcb)


@pytest.mark.parametrize("save_dir", [None, "logs"])
@pytest.mark.parametrize("version", [3, "run-a"])
def test_dirpath_from_the_first_logger_as_lightning_resolves_it(tmp_path, save_dir, version):
    logger = Recorder(save_dir=save_dir and str(tmp_path / save_dir), name="exp", version=version)
    fake = fake_trainer(tmp_path, loggers=[logger], logger=logger)
    expected = LModelCheckpoint()._ModelCheckpoint__resolve_ckpt_dir(fake)
    mcb = C.ModelCheckpoint()
    mcb.setup(fake, None, "fit")
    assert mcb.dirpath == expected


def test_format_checkpoint_name_as_lightning(tmp_path):
    cases = [
        ("{epoch}", {"epoch": 0}),
        ("{epoch:03d}", {"epoch": 5}),
        ("{epoch}-{val_loss:.2f}", {"epoch": 2, "val_loss": 0.123456}),
        ("{missing:d}", {}),
        ("{epoch}-{epoch_test}", {"epoch": 1, "epoch_test": 7}),
        ("{epoch}-{val/acc:.3f}", {"epoch": 1, "val/acc": 0.5}),
        ("{step}-{val.loss}", {"step": 3, "val.loss": 0.25}),
        (None, {"epoch": 4, "step": 40}),
    ]
    for auto in (True, False):
        for filename, metrics in cases:
            lcb = LModelCheckpoint(dirpath=tmp_path, filename=filename, auto_insert_metric_name=auto)
            mcb = C.ModelCheckpoint(dirpath=tmp_path, filename=filename, auto_insert_metric_name=auto)
            tmetrics = {k: torch.tensor(v) for k, v in metrics.items()}
            mmetrics = {k: mx.array(v) for k, v in metrics.items()}
            for ver, prefix in ((None, None), (2, "last")):
                assert mcb.format_checkpoint_name(mmetrics, ver=ver, prefix=prefix) == lcb.format_checkpoint_name(
                    tmetrics, ver=ver, prefix=prefix
                )


EARLY_STOPPING_CASES = {
    "patience2_min_delta": (dict(patience=2, min_delta=0.05), [0.5, 0.46, 0.44, 0.3, 0.28, 0.27, 0.26, 0.1]),
    "max_patience1": (dict(mode="max", patience=1), [0.1, 0.2, 0.2, 0.3]),
    "stopping_threshold": (dict(stopping_threshold=0.3, patience=10), VALUES),
    "divergence_threshold": (dict(divergence_threshold=0.42, patience=10), VALUES),
    "non_finite": (dict(patience=10), [0.5, 0.4, NAN, 0.1]),
    "never_stops": (dict(patience=5), VALUES),
    "max_min_delta": (dict(mode="max", patience=2, min_delta=0.05), [0.1, 0.2, 0.24, 0.27, 0.4, 0.41, 0.42]),
}


@pytest.mark.parametrize("case", sorted(EARLY_STOPPING_CASES))
@pytest.mark.parametrize("every", [1, 2])
def test_early_stopping_stops_when_lightning_stops(tmp_path, case, every):
    kwargs, values = EARLY_STOPPING_CASES[case]
    les, mes = LEarlyStopping(monitor="val/loss", **kwargs), C.EarlyStopping(monitor="val/loss", **kwargs)
    trainer, bridge = fit_both(tmp_path, values, [les], [mes], check_val_every_n_epoch=every)
    assert bridge.fake.should_stop == trainer.should_stop
    assert mes.stopped_epoch == les.stopped_epoch
    assert mes.wait_count == les.wait_count
    assert same(float(mes.best_score), float(les.best_score))
    assert mes.stopping_reason.value == les.stopping_reason.value
    assert mes._check_on_train_epoch_end == les._check_on_train_epoch_end
    assert mes.state_key == les.state_key
    assert mes.state_dict().keys() == les.state_dict().keys()


@pytest.mark.parametrize("interval", [None, "step", "epoch"])
def test_learning_rate_monitor_logs_what_lightning_logs(tmp_path, interval):
    kwargs = dict(logging_interval=interval, log_momentum=True, log_weight_decay=True)
    lrec, mrec = LRecorder(), Recorder()
    mlx_sgd = mopt.SGD(learning_rate=0.1, momentum=0.9, weight_decay=1e-4)
    llm, mlm = LLearningRateMonitor(**kwargs), C.LearningRateMonitor(**kwargs)
    fit_both(
        tmp_path,
        VALUES[:3],
        [llm],
        [mlm],
        fake={"loggers": [mrec], "logger": mrec, "optimizers": [mlx_sgd]},
        module=Scripted(VALUES[:3], momentum=0.9, weight_decay=1e-4),
        logger=lrec,
        log_every_n_steps=3,
    )
    assert lrec.rows, "Lightning logged no learning rate: the case checks nothing"
    assert [(s, sorted(m)) for s, m in mrec.rows] == [(s, sorted(m)) for s, m in lrec.rows]
    for (_, m), (_, lm) in zip(mrec.rows, lrec.rows):
        assert m == pytest.approx(lm, rel=1e-6)
    assert mlm.lrs.keys() == llm.lrs.keys() and len(mlm.lrs["lr-SGD"]) == len(llm.lrs["lr-SGD"])


@pytest.mark.parametrize("interval", ["epoch", "step"])
def test_learning_rate_monitor_logs_the_scheduled_rate_lightning_logs(tmp_path, interval):
    """A schedule given in configure_optimizers (Lightning's dict form), both trainers real: the
    monitor logs the rate of the step about to run, as Lightning reads it from torch's param
    group. MLX writes a scheduled rate into the optimiser only as it updates, so reading that
    attribute logs every rate one step late (a new user's finding: 0.1, 0.1, 0.05 where
    Lightning logs 0.1, 0.05, 0.025)."""
    import csv

    import mlx.optimizers as optim
    from lightning.pytorch.loggers import CSVLogger as LCSVLogger
    from lightning_port_models import MLXMLP, TorchMLP, blobs, copy_weights, numpy_batches, torch_loader

    from cifar_mlx_adapter.lightning import CSVLogger, MLXTrainer

    decay = {"epoch": 0.5, "step": 0.8}[interval]

    class TorchScheduled(TorchMLP):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
            schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: decay**i)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": interval}}

    class MLXScheduled(MLXMLP):
        def configure_optimizers(self):
            schedule = lambda i: self.hparams.lr * decay**i  # noqa: E731
            return {
                "optimizer": optim.SGD(self.hparams.lr),
                "lr_scheduler": {"scheduler": schedule, "interval": interval},
            }

    def logged_rates(root):
        [path] = Path(root).glob("lightning_logs/version_*/metrics.csv")
        with open(path, newline="") as f:
            return [(int(r["step"]), float(r["lr-SGD"])) for r in csv.DictReader(f) if r.get("lr-SGD")]

    x, y = blobs(64, seed=1)  # 4 batches of 16 an epoch
    flags = dict(max_epochs=3, log_every_n_steps=1, limit_val_batches=0, enable_progress_bar=False)
    torch.manual_seed(0)
    torch_model, mlx_model = TorchScheduled(), MLXScheduled()
    copy_weights(torch_model, mlx_model)
    lt = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=LCSVLogger(tmp_path / "torch"),
        callbacks=[LLearningRateMonitor(logging_interval=interval)],
        enable_model_summary=False,
        **flags,
    )
    lt.fit(torch_model, torch_loader(x, y, 16))
    mt = MLXTrainer(
        logger=CSVLogger(tmp_path / "mlx"), callbacks=[C.LearningRateMonitor(logging_interval=interval)], **flags
    )
    mt.fit(mlx_model, numpy_batches(x, y, 16))
    torch_rates, mlx_rates = logged_rates(tmp_path / "torch"), logged_rates(tmp_path / "mlx")
    assert len({rate for _, rate in torch_rates}) >= 3, torch_rates  # the schedule moved: the case checks something
    assert [s for s, _ in mlx_rates] == [s for s, _ in torch_rates]
    assert [r for _, r in mlx_rates] == pytest.approx([r for _, r in torch_rates], rel=1e-6)


def test_learning_rate_monitor_names_as_lightning(tmp_path):
    torch_opts = [torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1) for _ in range(1)]
    torch_opts += [torch.optim.Adam([torch.zeros(1, requires_grad=True)]) for _ in range(2)]
    torch_opts += [torch.optim.AdamW([torch.zeros(1, requires_grad=True)])]
    mlx_opts = [mopt.SGD(0.1), mopt.Adam(0.1), mopt.Adam(0.1), mopt.AdamW(0.1)]
    lnames, _ = LLearningRateMonitor()._find_names_from_optimizers(torch_opts, [], defaultdict(int))
    mnames, _ = C.LearningRateMonitor()._find_names_from_optimizers(mlx_opts, [], defaultdict(int))
    assert mnames == lnames == [["lr-SGD"], ["lr-Adam"], ["lr-Adam-1"], ["lr-AdamW"]]

    # a MultiOptimizer's parts are named as a torch optimiser's param groups
    multi = mopt.MultiOptimizer([mopt.SGD(0.1), mopt.Adam(0.01)], [lambda name, _: "bias" in name])
    rec = Recorder()
    fake = fake_trainer(tmp_path, loggers=[rec], optimizers=[multi])
    cb = C.LearningRateMonitor(logging_interval="step")
    cb.on_train_start(fake, None)
    cb.on_train_batch_start(fake, None, None, 0)
    cb.on_train_epoch_start(fake, None)  # "step": nothing at epoch start
    assert rec.rows == [
        (0, {"lr-MultiOptimizer/pg1": pytest.approx(0.1), "lr-MultiOptimizer/pg2": pytest.approx(0.01)})
    ]
    assert float(fake.callback_metrics["lr-MultiOptimizer/pg2"]) == pytest.approx(0.01)
    fake.should_update_logs = False
    cb.on_train_batch_start(fake, None, None, 1)
    assert len(rec.rows) == 1


def test_errors_carry_lightnings_texts(tmp_path):
    # a monitor that validation never logged: warn before validation has run, raise after, Lightning's text
    lcb = LModelCheckpoint(dirpath=tmp_path / "l", monitor="val_acc")
    mcb = C.ModelCheckpoint(dirpath=tmp_path / "m", monitor="val_acc")
    ltrainer = SimpleNamespace(
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(val_loop=SimpleNamespace(_has_run=1)))
    )
    with pytest.raises(LMisconfigurationException) as lerr:
        lcb._save_topk_checkpoint(ltrainer, {"val/loss": torch.tensor(1.0)})
    fake = fake_trainer(tmp_path)
    with pytest.warns(UserWarning, match="could not find the monitored key"):
        mcb._save_topk_checkpoint(fake, {"val/loss": mx.array(1.0)})
    mcb.on_validation_start(fake, None)
    mcb.on_validation_batch_end(fake, None, None, None, 0)
    with pytest.raises(C.MisconfigurationException) as merr:
        mcb._save_topk_checkpoint(fake, {"val/loss": mx.array(1.0)})
    assert str(merr.value) == str(lerr.value)

    les, mes = LEarlyStopping("val_acc"), C.EarlyStopping("val_acc")
    with pytest.raises(RuntimeError) as lerr:
        les._validate_condition_metric({"val/loss": torch.tensor(1.0)})
    with pytest.raises(RuntimeError) as merr:
        mes._validate_condition_metric({"val/loss": mx.array(1.0)})
    assert str(merr.value) == str(lerr.value)

    for kwargs in (
        dict(save_top_k=-2),
        dict(mode="avg"),
        dict(save_top_k=2),
        dict(every_n_epochs=1, every_n_train_steps=2),
    ):
        with pytest.raises(LMisconfigurationException) as lerr:
            LModelCheckpoint(**kwargs)
        with pytest.raises(C.MisconfigurationException) as merr:
            C.ModelCheckpoint(**kwargs)
        assert str(merr.value) == str(lerr.value)
    with pytest.raises(ValueError, match="train_time_interval=.*not supported"):
        C.ModelCheckpoint(train_time_interval=60)
    with pytest.raises(C.MisconfigurationException, match="logging_interval"):
        C.LearningRateMonitor(logging_interval="batch")
    with pytest.raises(C.MisconfigurationException, match="no logger"):
        C.LearningRateMonitor().on_train_start(fake_trainer(tmp_path))


def test_no_saving_in_sanity_check_fast_dev_run_or_outside_fit(tmp_path):
    for over in (dict(sanity_checking=True), dict(fast_dev_run=1), dict(state=SimpleNamespace(fn="validate"))):
        fake = fake_trainer(tmp_path, global_step=4, callback_metrics={"val/loss": mx.array(0.5)}, **over)
        mcb = C.ModelCheckpoint(dirpath=tmp_path / "m", monitor="val/loss")
        mcb.setup(fake, None, "fit")
        mcb.on_validation_end(fake, None)
        mcb.on_train_epoch_end(fake, None)
        assert files(tmp_path / "m") == []
        mes = C.EarlyStopping("val/loss", patience=0)
        mes.setup(fake, None, "fit")
        mes.on_train_epoch_end(fake, None)
        assert not fake.should_stop


def test_state_dict_round_trip_and_callback_hooks(tmp_path):
    mcb = C.ModelCheckpoint(dirpath=tmp_path, monitor="val/loss", save_top_k=2)
    fake = fake_trainer(tmp_path)
    for step, value in ((4, 0.5), (8, 0.3), (12, 0.4)):
        fake.global_step, fake.current_epoch = step, step // 4 - 1
        fake.callback_metrics = {"val/loss": mx.array(value)}
        mcb.on_train_epoch_end(fake, None)
    other = C.ModelCheckpoint(dirpath=tmp_path, monitor="val/loss", save_top_k=2)
    other.load_state_dict(mcb.state_dict())
    assert other.best_model_path == mcb.best_model_path and other.best_k_models == mcb.best_k_models
    assert float(other.best_model_score) == pytest.approx(0.3)
    mes = C.EarlyStopping("val/loss")
    mes.wait_count = 2
    copy = C.EarlyStopping("val/loss")
    copy.load_state_dict(mes.state_dict())
    assert copy.wait_count == 2

    # every Lightning Callback hook exists here with the same parameters
    import inspect

    for name in [n for n in vars(L.Callback) if not n.startswith("__")]:
        assert hasattr(C.Callback, name), name
        if isinstance(vars(L.Callback)[name], property):
            continue
        lsig, msig = inspect.signature(getattr(L.Callback, name)), inspect.signature(getattr(C.Callback, name))
        assert list(msig.parameters) == list(lsig.parameters), name
        assert [p.default for p in msig.parameters.values()] == [p.default for p in lsig.parameters.values()], name


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (C.ModelCheckpoint, LModelCheckpoint),
        (C.EarlyStopping, LEarlyStopping),
        (C.LearningRateMonitor, LLearningRateMonitor),
    ],
)
def test_constructor_arguments_are_lightnings(ours, theirs):
    import inspect

    mine, lightning = inspect.signature(ours).parameters, inspect.signature(theirs).parameters
    assert list(mine) == list(lightning)
    assert [p.default for p in mine.values()] == [p.default for p in lightning.values()]


def test_module_imports_neither_torch_nor_lightning():
    source = Path(C.__file__).read_text()
    assert "import torch" not in source and "import lightning" not in source and "from lightning" not in source
