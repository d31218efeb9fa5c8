"""What a new user meets in a fresh clone: the first command, a quiet run, a fast MLX
without root, and the smaller edges of the parts.

Faults these tests were checked against (each makes a test fail): the README's first
command with ``--accelerator mps``; Lightning's cloud-logging tip and "exists and is not
empty" warning left in a run's output; the slow-BLAS warning printed before ``--help``;
no OpenBLAS preloaded by fit_mlx.py; ``MLXTrainer(max_epochs=0)`` dividing by zero;
``predict`` ignoring its batch limit; ``test/acc_no_tta`` logged without TTA; the
``epoch000.ckpt`` file beside ``last.ckpt``; CIFARClassifier refusing a user's module.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from cifar_lightning import CIFARClassifier, CIFARDataModule, get_recipe
from cifar_lightning.core.run.files import read_metrics_csv
from cifar_mlx_adapter import MLXClassifier, MLXTrainer, blas

ROOT = Path(__file__).resolve().parents[1]


def test_readme_first_command_runs_on_the_machine_the_reader_has():
    """The set-up's main-job commands pick the device themselves; the Mac flag is shown beside."""
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", setup, flags=re.S)
    fits = [ln for block in blocks for ln in block.splitlines() if "scripts/fit.py" in ln]
    assert fits and all("--accelerator" not in ln.split("#")[0] for ln in fits), fits
    assert "--accelerator mps" in setup  # told where it applies
    from cifar_lightning.backend import check_accelerator

    assert check_accelerator("auto") in ("cpu", "cuda", "mps")


def quiet_run(script: str, data: Path, out: Path, *flags: str) -> str:
    env = {**os.environ, "CIFAR_ALLOW_PARTIAL_DATA": "1"}
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / script),
            "--data-dir",
            str(data),
            "--no-download",
            "--model",
            "small_cnn",
            "--epochs",
            "1",
            "--batch-size",
            "50",
            "--train-subset",
            "100",
            "--output-dir",
            str(out),
            *flags,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    first = "training small_cnn (573,194 parameters) for 1 epoch (2 steps) on cpu"
    assert r.stdout.startswith(first), r.stdout[:500]  # its first line
    return r.stdout + r.stderr


NOISE = (
    "litlogger",
    "exists and is not empty",
    "LeafSpec",
    "Total Flops",
    "weights_only",
    "Warning",
    "warning:",
    "GPU available",
    "Seed set",
)


def test_a_run_prints_nothing_that_looks_like_a_problem(cifar10_dir, tmp_path):
    output = quiet_run("fit.py", cifar10_dir, tmp_path / "t", "--accelerator", "cpu")
    assert not [word for word in NOISE if word in output], output[-3000:]
    assert "training small_cnn (573,194 parameters) for 1 epoch (2 steps) on cpu" in output
    output = quiet_run("fit_mlx.py", cifar10_dir, tmp_path / "m", "--cpu")
    assert not [word for word in NOISE if word in output], output[-3000:]
    assert "training small_cnn (573,194 parameters) for 1 epoch (2 steps) on cpu" in output
    assert sorted(p.name for p in (tmp_path / "t" / "checkpoints").iterdir()) == [
        "final.ckpt",
        "initial.pt",
        "last.ckpt",
    ]
    header = (tmp_path / "t" / "metrics.csv").read_text().splitlines()[0]
    assert "test/acc" in header and "test/acc_no_tta" not in header  # SmallCNN's recipe has no TTA
    # the same columns in both frameworks' metrics.csv, in the same order, and the same kinds of row
    assert (tmp_path / "m" / "metrics.csv").read_text().splitlines()[0] == header
    kinds = {
        name: [tuple(k for k, v in row.items() if v) for row in read_metrics_csv(tmp_path / name / "metrics.csv")]
        for name in ("t", "m")
    }
    assert sorted(set(kinds["t"])) == sorted(set(kinds["m"])) and kinds["m"][-1] == kinds["t"][-1]


@pytest.mark.skipif(not blas.needed(), reason="only Linux's mlx[cpu] ships the slow BLAS")
def test_fit_mlx_preloads_openblas_without_root_and_warns_only_when_training():
    """The wheel's OpenBLAS is what MLX's matmul runs on in a restarted process; the slow-BLAS
    warning never comes before --help or an unrelated error."""
    env = blas.restart_environment() if not blas.active() else dict(os.environ)
    assert env is not None, "no OpenBLAS found: is cmeel-openblas installed?"
    probe = (  # torch's CPU matmul resolves sgemm_ to the preloaded library too: both must run
        "import torch; torch.ones(64, 64) @ torch.ones(64, 64); "
        "import mlx.core as mx; mx.set_default_device(mx.cpu); a = mx.ones((256, 256)); mx.eval(a @ a); "
        "print(any('openblas' in line for line in open('/proc/self/maps')))"
    )
    r = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "True", r.stderr[-2000:]
    slow = {**os.environ, "CIFAR_FAST_BLAS": ""}
    slow.pop("LD_PRELOAD", None)
    for args in (["--help"], ["--epochs", "-1"]):
        r = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "fit_mlx.py"), *args],
            env={**slow, "CIFAR_FAST_BLAS": "0"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "warning" not in r.stderr, r.stderr


@pytest.mark.skipif(not blas.needed(), reason="only Linux's mlx[cpu] ships the slow BLAS")
def test_an_openblas_that_cannot_multiply_on_this_cpu_is_not_preloaded(monkeypatch, capsys):
    """A library that loads but has no working matrix product (here libm, standing for an
    OpenBLAS built for instructions this CPU lacks, which dies with SIGILL) is refused with one
    warning line, and the process keeps MLX's own BLAS instead of a restart that would crash;
    so is one whose product runs but comes out wrong. Checked against: the exit status alone."""
    libm = next(line.split()[-1] for line in open("/proc/self/maps") if "/libm.so" in line)
    monkeypatch.setattr(blas, "openblas_library", lambda: Path(libm))
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv(blas.SWITCH, raising=False)
    assert blas.restart_environment() is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not run a matrix product on this CPU" in err[0], err
    # one whose product runs but is wrong (stood for by a check whose cblas_sgemm gives 0) is refused too
    monkeypatch.setattr(blas, "GEMM_CHECK", "print(6.0); print(0.0)")
    assert blas.restart_environment() is None
    assert "does not run a matrix product" in capsys.readouterr().err


def test_mlx_trainer_refuses_zero_epochs_in_one_line():
    for bad in (0, -1, float("inf")):
        with pytest.raises(ValueError, match="max_epochs must be a positive, finite number of epochs"):
            MLXTrainer(max_epochs=bad)


def test_mlx_predict_honours_its_batch_limit(cifar10_dir, tmp_path):
    dm = CIFARDataModule("cifar10", cifar10_dir, batch_size=20, download=False, eval_batch_size=10)
    trainer = MLXTrainer(limit_predict_batches=2, enable_progress_bar=False, default_root_dir=tmp_path)
    predictions = trainer.predict(MLXClassifier("small_cnn", 10), dm)
    assert [p.shape for p in predictions] == [(10, 10), (10, 10)]  # class probabilities per image
    assert len(MLXTrainer(enable_progress_bar=False).predict(MLXClassifier("small_cnn", 10), dm)) == 50 // 10


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def test_both_classifiers_take_a_users_own_module(cifar10_dir):
    """CIFARClassifier, like MLXClassifier, trains a module of the user's; both ask for a
    recipe then (a user's net has none of its own)."""
    recipe = get_recipe("small_cnn").to_dict() | {"batch_size": 50}
    module = CIFARClassifier(TinyNet(), 10, recipe=recipe)
    before = module.model.head.weight.detach().clone()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=CIFARDataModule("cifar10", cifar10_dir, batch_size=50, download=False))
    assert trainer.global_step == 2 and not torch.equal(before, module.model.head.weight)
    assert module.hparams.model == "TinyNet"
    with pytest.raises(ValueError, match=r"a model of your own \(TinyNet\) needs recipe="):
        CIFARClassifier(TinyNet(), 10)
    import mlx.nn as mnn

    with pytest.raises(ValueError, match=r"a model of your own \(Linear\) needs recipe="):
        MLXClassifier(mnn.Linear(3, 10), 10)
