"""Fixtures that write tiny CIFAR folders in the real on-disk format (python pickles)."""

from __future__ import annotations

import importlib
import os
import pickle
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cifar_lightning.core.datasets import DATASETS, PARTIAL_DATA_ENV
from cifar_mlx_adapter import blas

# the thread pools a worker process of pytest-xdist would share the cores with
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def pytest_configure(config):
    """MLX's CPU build on Linux is ~12x slower with its own BLAS: start the test run again,
    once, with OpenBLAS preloaded (cifar_mlx_adapter.blas; CIFAR_FAST_BLAS=0 keeps MLX's
    own). pytest's output capture is stopped first, so the new run prints to the terminal.

    With several worker processes (pytest-xdist's ``-n``), each computes on one thread (torch,
    OpenBLAS): N workers of as many threads as the cores would fight over them, and a
    spinning BLAS thread that waits for a core costs more than it gives."""
    if os.environ.get("PYTEST_XDIST_WORKER"):  # a worker: its controller set up the environment
        return
    workers = config.getoption("numprocesses", None)
    if workers and str(workers) != "0":
        for name in THREAD_VARIABLES:
            os.environ.setdefault(name, "1")
    env = blas.restart_environment()
    if env is None:
        return
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.stop_global_capturing()
    os.execve(sys.executable, [sys.executable, "-m", "pytest", *sys.argv[1:]], env)


def pytest_collection_modifyitems(config, items):
    """The files with the most tests marked slow run first, each file's tests in their order:
    the workers (``--dist loadfile``) then take the long files early and the short ones last,
    so they finish close together instead of one waiting for the other's late whole run."""
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])  # stable: files stay whole, equals keep their order


# the real CIFAR-10 for test_real_data.py: $CIFAR_DATA_DIR (a folder holding cifar-10-batches-py/),
# else ../shared/data beside the checkout
SHARED_DATA = Path(os.environ.get("CIFAR_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


OPTIMIZER_RUNS = {  # fit flags for a recipe of each optimiser kind beyond SGD on the fixtures: 2 steps an epoch
    "adamw": [
        "--model",
        "small_cnn",
        "--optimizer",
        "adamw",
        "--epochs",
        "2",
        "--batch-size",
        "50",
        "--train-subset",
        "100",
    ],
    "muon": [
        "--model",
        "fast",
        "--optimizer",
        "muon",
        "--epochs",
        "4",
        "--batch-size",
        "25",
        "--no-tta",
        "--train-subset",
        "50",
    ],
}


def learnable_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 (N, 3072) images whose mean colour depends on the label, plus noise."""
    n = len(labels)
    base = (labels[:, None] * 37 % 200 + 28).astype(np.float64)  # per-class brightness
    tint = np.concatenate([base, 255 - base, (base * 3) % 256], axis=1)  # (N, 3)
    images = tint[:, :, None] + rng.normal(0, 20, (n, 3, 1024))  # (N, 3, 1024)
    return np.clip(images, 0, 255).astype(np.uint8).reshape(n, 3072)


def write_cifar(root: Path, dataset: str = "cifar10", n_train: int = 100, n_test: int = 40, seed: int = 0) -> Path:
    info = DATASETS[dataset]
    folder = root / info.folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    k = info.num_classes

    def dump(name, n):
        labels = np.arange(n) % k
        rng.shuffle(labels)
        batch = {
            "data": learnable_images(labels, rng),
            info.label_key: labels.tolist(),
            "filenames": [f"{i}.png" for i in range(n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)

    per_file = n_train // len(info.train_files)
    for name in info.train_files:
        dump(name, per_file)
    for name in info.test_files:
        dump(name, n_test)
    with open(folder / info.meta_file, "wb") as f:
        pickle.dump({info.names_key: [f"class{i}" for i in range(k)]}, f)
    return root


@pytest.fixture(autouse=True)
def own_training_lock(tmp_path, monkeypatch):
    """Each test trains under a lock file of its own, so tests never wait for (or block)
    a real training on this machine; tests of the lock itself point it elsewhere. The
    fixtures write CIFAR folders far smaller than the official sets: the reader is told so
    (the real-data tests and the count check itself unset it)."""
    monkeypatch.setenv("CIFAR_LOCK_FILE", str(tmp_path / "training.lock"))
    monkeypatch.setenv(PARTIAL_DATA_ENV, "1")


@pytest.fixture
def cifar10_dir(tmp_path) -> Path:
    return write_cifar(tmp_path / "data", "cifar10", n_train=200, n_test=50)


@pytest.fixture
def cifar100_dir(tmp_path) -> Path:
    return write_cifar(tmp_path / "data", "cifar100", n_train=300, n_test=200)


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "cifar-10-batches-py" / "data_batch_1").is_file():
        pytest.skip(
            f"real CIFAR-10 not found at {SHARED_DATA} (set CIFAR_DATA_DIR to a folder holding cifar-10-batches-py/)"
        )
    return SHARED_DATA


def script_module(name: str):
    """A fixture's body: scripts/<name>.py imported as a module, scripts/ off sys.path after."""
    scripts = str(Path(__file__).resolve().parents[1] / "scripts")
    sys.path.insert(0, scripts)
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(scripts)


def real_cifar10_subset(root: Path, n_train: int = 200, n_test: int = 50) -> Path:
    """A CIFAR-10 folder holding the first `n_train` real training images (taken evenly from
    the five training files) and the first `n_test` real test images; skips without the
    real data. Real images keep gradients large for many steps, where the learnable
    fixture's are soon near zero."""
    src = SHARED_DATA / "cifar-10-batches-py"
    if not (src / "data_batch_1").is_file():
        pytest.skip(f"real CIFAR-10 not found at {SHARED_DATA} (set CIFAR_DATA_DIR)")
    info = DATASETS["cifar10"]
    folder = root / info.folder
    folder.mkdir(parents=True, exist_ok=True)

    def copy(name, n):
        with open(src / name, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        keep = {"data": batch["data"][:n], "labels": batch["labels"][:n], "filenames": batch["filenames"][:n]}
        with open(folder / name, "wb") as f:
            pickle.dump(keep, f)

    for name in info.train_files:
        copy(name, n_train // len(info.train_files))
    copy(info.test_files[0], n_test)
    with open(src / info.meta_file, "rb") as f, open(folder / info.meta_file, "wb") as g:
        g.write(f.read())
    return root


class FakeClock:
    """A clock that moves only when told (seconds), and counts the waits for the device."""

    def __init__(self):
        self.now, self.syncs = 0.0, 0

    def __call__(self):
        return self.now

    def sync(self):
        self.syncs += 1


def quiet_mlx_trainer(**flags):
    """The general ``cifar_mlx_adapter.lightning.MLXTrainer`` with `flags`, by default without
    progress bar, model summary, checkpoints, logger or validation (a test's quiet fit)."""
    from cifar_mlx_adapter.lightning import MLXTrainer

    quiet = dict(
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        limit_val_batches=0,
    )
    return MLXTrainer(**{**quiet, **flags})
