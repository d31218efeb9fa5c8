"""cifar_mlx_adapter.lightning.loggers against Lightning itself: the same calls go through
Lightning's ``lightning.pytorch.loggers.CSVLogger`` (torch tensors, as Lightning's trainer hands
it) and through ours (0-d ``mx.array``s and numpy scalars) into two folders, and the files
(metrics.csv bytes, hparams.yaml bytes, the version folders) must be identical. Also
``Trainer(logger=...)`` resolution and ``Trainer.log_dir`` against a real ``L.Trainer``, and an
import that leaves torch out."""

from __future__ import annotations

import enum
import os
import subprocess
import sys
import threading
import warnings
from argparse import Namespace
from pathlib import Path

import lightning as L
import lightning.pytorch.core.saving as lightning_saving
import mlx.core as mx
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger

from cifar_mlx_adapter.lightning.loggers import CSVLogger, Logger, log_dir_of, resolve_loggers

REPO = Path(__file__).resolve().parents[1]

# how each side receives a float32 metric: Lightning's trainer hands its logger torch tensors
# (the CSV writer calls .item()); MLXTrainer hands ours MLX arrays, and users may log numpy scalars
AS_TENSOR = {
    "lightning": lambda x: torch.tensor(x, dtype=torch.float32),
    "mlx": lambda x: mx.array(x, dtype=mx.float32),
    "numpy": np.float32,
}
AS_INT = {"lightning": int, "mlx": lambda x: mx.array(x, dtype=mx.int32), "numpy": np.int64}


@pytest.fixture(autouse=True)
def lightning_without_omegaconf(monkeypatch):
    """Lightning writes hparams.yaml with OmegaConf where it is installed; ours writes the file
    Lightning writes without it, so compare with that path whatever this environment has."""
    monkeypatch.setattr(lightning_saving, "_OMEGACONF_AVAILABLE", False)


def write_metrics(logger, kind: str) -> None:
    """A training run's calls, flushed every 3 steps: a key that arrives after the first flush
    (the file is rewritten under a new header), an epoch row with other keys at the same step,
    int values, Python floats, and rows without a step."""
    t, i = AS_TENSOR[kind], AS_INT[kind]
    logger.log_metrics({"train_loss": t(2.3), "lr": 0.1}, step=0)
    logger.log_metrics({"train_loss": t(1.9), "lr": 0.1}, step=1)
    logger.log_metrics({"train_loss": t(1.7), "lr": 0.1 + 0.2}, step=2)  # step 2: (2+1) % 3 == 0 flushes
    logger.log_metrics({"train_loss": t(1.5), "lr": 0.05, "grad_norm": t(3.25)}, step=3)
    logger.log_metrics({"val_loss": t(1.6), "val_acc": t(0.41), "epoch": i(0)}, step=3)
    logger.log_metrics({"train_loss": t(1e-8), "lr": 0.05}, step=5)  # flushes: rewrite with the new header
    logger.log_metrics({"test_acc": t(0.5)}, step=None)
    logger.log_metrics({"test_loss": t(1.25)}, step=None)
    logger.finalize("success")


class Color(enum.Enum):
    RED = 1


def write_hparams(logger) -> None:
    """Two calls that merge: nested values, a tuple, an Enum, None, and a value YAML cannot dump
    (Lightning leaves it out with a warning, then keeps its type's name for later calls)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logger.log_hyperparams(
            {
                "lr": 0.1,
                "batch_size": 128,
                "model": "resnet18",
                "betas": (0.9, 0.999),
                "sched": {"name": "cosine", "warmup": 5},
                "color": Color.RED,
                "lock": threading.Lock(),
                "seed": None,
                "nesterov": True,
            }
        )
        logger.log_hyperparams(Namespace(epochs=30, lr=0.05))


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root, by its path relative to root, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def folders(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir())


@pytest.mark.parametrize("kind", ["mlx", "numpy"])
@pytest.mark.parametrize("name, prefix", [("lightning_logs", ""), (None, "fold1"), ("exp", "")])
def test_same_files_as_lightning(tmp_path, kind, name, prefix):
    theirs = LightningCSVLogger(tmp_path / "theirs", name=name, prefix=prefix, flush_logs_every_n_steps=3)
    ours = CSVLogger(tmp_path / "ours", name=name, prefix=prefix, flush_logs_every_n_steps=3)
    write_hparams(theirs)
    write_hparams(ours)
    write_metrics(theirs, "lightning")
    write_metrics(ours, kind)

    expected = tree(tmp_path / "theirs")
    got = tree(tmp_path / "ours")
    assert got == expected
    assert folders(tmp_path / "ours") == folders(tmp_path / "theirs")
    metrics = next(v for k, v in got.items() if k.endswith("metrics.csv")).decode()
    # what the comparison covered: the sorted header with step, the float32 digits, the epoch int
    keys = ["epoch", "grad_norm", "lr", "test_acc", "test_loss", "train_loss", "val_acc", "val_loss"]
    header = sorted([f"{prefix}-{k}" if prefix else k for k in keys] + ["step"])
    assert metrics.splitlines()[0] == ",".join(header)
    assert "0.10000000149011612" not in metrics  # lr is a Python float: its own repr
    assert ",0.30000000000000004," in metrics and "1.899999976158142" in metrics
    # the properties, as Lightning's
    assert (ours.name, ours.version) == (theirs.name, theirs.version)
    for attr in ("save_dir", "root_dir", "log_dir"):  # the same path below each side's folder, trailing "/" too
        assert (
            getattr(ours, attr)[len(str(tmp_path / "ours")) :] == getattr(theirs, attr)[len(str(tmp_path / "theirs")) :]
        )


def test_header_and_rows(tmp_path):
    """The file itself, spelled out (so a reader sees what 'the same as Lightning' means)."""
    logger = CSVLogger(tmp_path)
    logger.log_metrics({"b": mx.array(0.5), "a": 1}, step=0)
    logger.log_metrics({"c": np.float32(0.1)}, step=7)
    logger.save()
    text = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_bytes()
    assert text == b"a,b,c,step\r\n1,0.5,,0\r\n,,0.10000000149011612,7\r\n"


def test_two_loggers_in_one_folder(tmp_path):
    """version_0 then version_1, on both sides; the first's file is untouched by the second."""
    for side, cls, kind in (("theirs", LightningCSVLogger, "lightning"), ("ours", CSVLogger, "mlx")):
        first = cls(tmp_path / side, flush_logs_every_n_steps=3)
        write_metrics(first, kind)
        first_file = Path(first.log_dir, "metrics.csv")
        before = first_file.read_bytes()
        second = cls(tmp_path / side, flush_logs_every_n_steps=3)
        write_metrics(second, kind)
        write_hparams(second)
        assert (first.version, second.version) == (0, 1)
        assert first_file.read_bytes() == before
    assert tree(tmp_path / "ours") == tree(tmp_path / "theirs")
    assert folders(tmp_path / "ours") == [
        "lightning_logs",
        os.path.join("lightning_logs", "version_0"),
        os.path.join("lightning_logs", "version_1"),
    ]


def test_next_version_among_other_entries(tmp_path):
    """Lightning's rule: one more than the largest N of the version_N folders (files, other names
    and non-digit suffixes do not count)."""
    for side in ("theirs", "ours"):
        root = tmp_path / side / "lightning_logs"
        for d in ("version_3", "version_x", "version_2_old", "other"):
            (root / d).mkdir(parents=True)
        (root / "version_7").write_text("a file, not a version")
    theirs = LightningCSVLogger(tmp_path / "theirs")
    ours = CSVLogger(tmp_path / "ours")
    assert ours.version == theirs.version == 4
    theirs.log_metrics({"x": torch.tensor(1.0)}, step=0)
    ours.log_metrics({"x": mx.array(1.0)}, step=0)
    theirs.save()
    ours.save()
    assert tree(tmp_path / "ours") == tree(tmp_path / "theirs")
    assert folders(tmp_path / "ours") == folders(tmp_path / "theirs")


@pytest.mark.parametrize("version", [0, "run_a"])
def test_explicit_version_is_rewritten_as_lightning_does(tmp_path, version):
    """An explicit version whose folder holds files: Lightning warns and deletes its metrics.csv
    (and keeps hparams.yaml until rewritten); ours does the same."""
    for side, cls, kind in (("theirs", LightningCSVLogger, "lightning"), ("ours", CSVLogger, "mlx")):
        write_metrics(cls(tmp_path / side, version=version), kind)
        write_hparams(cls(tmp_path / side, version=version))
        again = cls(tmp_path / side, version=version)
        with pytest.warns(UserWarning, match="exists and is not empty"):
            again.log_metrics({"only": AS_TENSOR[kind](1.0)}, step=0)
        again.finalize("success")
    assert tree(tmp_path / "ours") == tree(tmp_path / "theirs")
    assert b"only" in next(v for k, v in tree(tmp_path / "ours").items() if k.endswith("metrics.csv"))


def test_a_chosen_version_is_never_shared(tmp_path):
    """Where ours differs on purpose: two loggers that read their version before either writes.
    Lightning gives both version_0 and the second deletes the first's metrics.csv; ours moves the
    second to version_1, with a warning, and the first's file stays."""
    a, b = LightningCSVLogger(tmp_path / "theirs"), LightningCSVLogger(tmp_path / "theirs")
    assert a.version == b.version == 0
    a.log_metrics({"x": 1.0}, step=0)
    a.save()
    with pytest.warns(UserWarning):
        b.log_metrics({"y": 2.0}, step=0)
    assert not Path(a.log_dir, "metrics.csv").exists()  # Lightning's loss

    a, b = CSVLogger(tmp_path / "ours"), CSVLogger(tmp_path / "ours")
    assert a.version == b.version == 0
    a.log_metrics({"x": 1.0}, step=0)
    a.save()
    with pytest.warns(UserWarning, match="version_0 .* writing to version_1"):
        b.log_metrics({"y": 2.0}, step=0)
    b.save()
    assert (a.version, b.version) == (0, 1)
    assert Path(a.log_dir, "metrics.csv").read_bytes() == b"step,x\r\n0,1.0\r\n"
    assert Path(b.log_dir, "metrics.csv").read_bytes() == b"step,y\r\n0,2.0\r\n"


def test_finalize_before_any_write_creates_nothing(tmp_path):
    for side, cls in (("theirs", LightningCSVLogger), ("ours", CSVLogger)):
        logger = cls(tmp_path / side)
        logger.finalize("failed")
        logger.after_save_checkpoint(object())
    assert not (tmp_path / "ours").exists() and not (tmp_path / "theirs").exists()
    assert CSVLogger(tmp_path).experiment.log_dir == str(tmp_path / "lightning_logs" / "version_0")


class Custom(Logger):
    """A logger that is not a CSV one: Trainer.log_dir takes its save_dir."""

    @property
    def save_dir(self):
        return "/somewhere/else"


def make_trainer(logger, root):
    return L.Trainer(
        logger=logger,
        default_root_dir=root,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )


def test_resolve_loggers_as_lightnings_trainer(tmp_path):
    root = str(tmp_path / "root")
    assert resolve_loggers(False, root) == []
    assert resolve_loggers([], root) == []
    for default in (True, None):
        (ours,) = resolve_loggers(default, root)
        assert type(ours) is CSVLogger and ours.save_dir == root
        (theirs,) = make_trainer(default, root).loggers
        if type(theirs) is LightningCSVLogger:  # Lightning's default without tensorboard
            assert (ours.log_dir, ours.name) == (theirs.log_dir, theirs.name)
    one, two = CSVLogger(tmp_path), LightningCSVLogger(tmp_path)
    assert resolve_loggers(one, root) == [one]
    assert resolve_loggers([one, two], root) == [one, two]
    assert resolve_loggers((x for x in (two, one)), root) == [two, one]
    assert make_trainer([one, two], root).loggers == [one, two]
    # ~ and ./ as Trainer.default_root_dir normalises them
    assert resolve_loggers(True, "~/x/../logs")[0].save_dir == os.path.expanduser("~/logs")
    assert resolve_loggers(True, None)[0].save_dir == os.getcwd()


def test_log_dir_of_as_lightnings_trainer(tmp_path):
    root = str(tmp_path)
    for logger in (False, LightningCSVLogger(tmp_path / "l", name="n"), Custom()):
        assert log_dir_of(resolve_loggers(logger, root), root) == make_trainer(logger, root).log_dir
    ours = CSVLogger(tmp_path / "o", version="v")
    assert log_dir_of([ours, Custom()], root) == os.path.join(str(tmp_path / "o"), "lightning_logs", "v")
    assert log_dir_of([Custom(), ours], root) == "/somewhere/else"


def test_logger_base_defaults():
    calls = []

    class Saving(Logger):
        def save(self):
            calls.append("save")

    logger = Saving()
    assert (logger.name, logger.version, logger.log_dir, logger.root_dir, logger.save_dir) == (None,) * 5
    assert logger.group_separator == LightningCSVLogger("x").group_separator == "/"
    logger.log_metrics({"a": 1.0}, step=0)
    logger.log_hyperparams({"a": 1})
    logger.log_graph(object())
    logger.after_save_checkpoint(object())
    logger.finalize("success")  # Lightning's base finalize saves
    assert calls == ["save"]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda d: resolve_loggers("logs", d), "logger must be"),
        (lambda d: resolve_loggers(object(), d), "has no log_metrics"),
        (lambda d: resolve_loggers([CSVLogger(d), 3], d), "int 3"),
        (lambda d: CSVLogger(d, flush_logs_every_n_steps=0), "flush_logs_every_n_steps must be an int >= 1"),
        (lambda d: CSVLogger(d, version=1.5), "version must be"),
        (lambda d: CSVLogger("s3://bucket/logs"), "local folder"),
        (lambda d: CSVLogger(d).log_metrics({"x": mx.array([1.0, 2.0])}, step=0), "metric 'x' .* shape \\(2,\\)"),
        (lambda d: CSVLogger(d).log_metrics({"x": 1.0}, step="3"), "step must be an int"),
        (lambda d: CSVLogger(d).log_hyperparams([("lr", 1)]), "params must be a dict"),
    ],
)
def test_bad_input_is_one_value_error(tmp_path, call, match):
    with pytest.raises(ValueError, match=match) as e:
        call(tmp_path)
    assert "\n" not in str(e.value)


def test_import_leaves_torch_out():
    code = (
        "import sys, cifar_mlx_adapter.lightning.loggers\n"
        "bad = [m for m in ('torch', 'lightning', 'pytorch_lightning') if m in sys.modules]\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
