"""Framework-neutral facts about CIFAR-10/100 and a validating reader.

Reads the official python layout (``cifar-10-batches-py/``, ``cifar-100-python/``)
into numpy arrays: images as uint8 (N, 3, 32, 32), labels as int64 (N,).
Content is validated (shape, dtype, label range, counts) rather than md5 sums,
so a losslessly rebuilt copy of the data reads as well as the official one. Each
split must hold the official number of images (50,000 training and 10,000 test
images in both datasets, from the datasets' page, cs.toronto.edu/~kriz/cifar.html):
a copy with fewer is refused, naming the folder, unless the environment variable
``CIFAR_ALLOW_PARTIAL_DATA=1`` says a smaller copy is meant (the tests' fixtures).
"""

from __future__ import annotations

import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifar_lightning.core.errors import CIFARError


class CIFARDataError(CIFARError, RuntimeError):
    """The data on disk is missing, truncated or not in the expected layout."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    folder: str  # the folder the official archive extracts to
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str  # key of the labels inside each batch
    names_key: str  # key of the class names inside the meta file
    num_classes: int
    mean: tuple[float, float, float]  # per channel, on [0, 1] pixels
    std: tuple[float, float, float]
    url: str  # the official archive (www.cs.toronto.edu/~kriz/cifar.html)
    md5: str  # its published md5
    train_size: int = 50_000  # images in the official training split
    test_size: int = 10_000  # and in the test split


DATASETS = {
    "cifar10": DatasetInfo(
        name="cifar10",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        label_key="labels",
        names_key="label_names",
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
    ),
    "cifar100": DatasetInfo(
        name="cifar100",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        label_key="fine_labels",
        names_key="fine_label_names",
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
    ),
}


DOWNLOAD_TIMEOUT_S = 60  # seconds a stalled connection is waited for before the download fails
PARTIAL_DATA_ENV = "CIFAR_ALLOW_PARTIAL_DATA"  # "1": read a copy with fewer images than the official sets


def dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}: expected one of {sorted(DATASETS)}") from None


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except FileNotFoundError:
        raise CIFARDataError(f"missing file {path}") from None
    except Exception as e:  # truncated or not a pickle: name the file, not the traceback
        raise CIFARDataError(f"cannot read {path}: corrupt or truncated ({type(e).__name__}: {e})") from None


def dataset_present(data_dir: str | Path, name: str) -> bool:
    info = dataset_info(name)
    root = Path(data_dir) / info.folder
    return all((root / f).is_file() for f in (*info.train_files, *info.test_files, info.meta_file))


def read_class_names(data_dir: str | Path, name: str) -> list[str]:
    info = dataset_info(name)
    path = Path(data_dir) / info.folder / info.meta_file
    meta = _unpickle(path)
    names = meta.get(info.names_key) if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != info.num_classes:
        raise CIFARDataError(f"{path}: expected {info.num_classes} names under {info.names_key!r}")
    return [str(n) for n in names]


def _read_batch(path: Path, info: DatasetInfo) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    if not isinstance(batch, dict) or "data" not in batch or info.label_key not in batch:
        raise CIFARDataError(f"{path}: expected a dict with 'data' and {info.label_key!r}")
    data, labels = batch["data"], np.asarray(batch[info.label_key])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise CIFARDataError(f"{path}: expected uint8 data of shape (N, 3072), got {dtype} {shape}")
    if labels.shape != (len(data),):
        raise CIFARDataError(f"{path}: {len(data)} images but {labels.size} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= info.num_classes):
        raise CIFARDataError(
            f"{path}: labels must lie in [0, {info.num_classes - 1}], got [{labels.min()}, {labels.max()}]"
        )
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def inner_folder_hint(data_dir: str | Path) -> str:
    """The hint to pass the parent folder when `data_dir` is itself a dataset's folder
    (cifar-10-batches-py/, cifar-100-python/) rather than the folder holding it; "" otherwise."""
    data_dir = Path(data_dir)
    inner = next((i.folder for i in DATASETS.values() if i.folder == data_dir.resolve().name), None)
    if inner is None:
        return ""
    parent = data_dir.parent if data_dir.name == inner else data_dir.resolve().parent  # "." typed inside it
    return f"; {data_dir} is the {inner}/ folder itself: pass the folder holding it, --data-dir {parent}"


def read_split(data_dir: str | Path, name: str, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of one split."""
    info = dataset_info(name)
    root = Path(data_dir) / info.folder
    if not root.is_dir():
        raise CIFARDataError(
            f"no {name} data in {data_dir}: expected the folder {info.folder}/ "
            f"holding {', '.join((*info.train_files, *info.test_files, info.meta_file))} "
            f"(the official python version, extracted){inner_folder_hint(data_dir)}"
        )
    parts = [_read_batch(root / f, info) for f in (info.train_files if train else info.test_files)]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    split = "training" if train else "test"
    if len(images) == 0:
        raise CIFARDataError(f"{root}: the {split} split holds no images")
    expected = info.train_size if train else info.test_size
    if len(images) != expected and os.environ.get(PARTIAL_DATA_ENV) != "1":
        raise CIFARDataError(
            f"{root}: the {split} split holds {len(images):,} images, expected {expected:,} "
            f"(an incomplete copy? {PARTIAL_DATA_ENV}=1 reads a smaller copy on purpose)"
        )
    return images, labels


def download(name: str, data_dir: str | Path) -> None:
    """Download the official archive of `name` (``DatasetInfo.url``), check its md5 against
    the published one (``DatasetInfo.md5``) and extract it into `data_dir`, with the
    standard library only (an MLX user needs no torch for it). The archive is written to a
    temporary file beside its folder and removed once extracted; a member that would land
    outside `data_dir` is refused. Raises CIFARDataError naming the folder on failure."""
    import hashlib
    import tarfile
    import tempfile
    import urllib.request

    info = dataset_info(name)
    data_dir = Path(data_dir)
    hint = inner_folder_hint(data_dir)
    if hint:  # the archive would land in cifar-10-batches-py/cifar-10-batches-py/
        raise CIFARDataError(f"no {name} data in {data_dir}: expected the folder {info.folder}/ in it{hint}")
    failed = f"download of {info.name} into {data_dir} failed"
    offline = (
        f"without internet, pass --data-dir pointing at a folder holding {info.folder}/, "
        "or --no-download to fail at once instead of downloading"
    )
    made = [p for p in (data_dir, *data_dir.parents) if not p.exists()]  # the folders this download makes
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=f".{info.name}-", suffix=".tar.gz") as archive:
            digest = hashlib.md5()
            with urllib.request.urlopen(info.url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    archive.write(chunk)
            archive.flush()
            if digest.hexdigest() != info.md5:
                raise CIFARDataError(
                    f"{failed}: the archive's md5 is {digest.hexdigest()}, the published one "
                    f"{info.md5} (a damaged or changed download); {offline}"
                )
            with tarfile.open(archive.name, "r:gz") as tar:
                _extract(tar, data_dir)
    except Exception as e:  # no network, a refused address, a full disk, a broken archive
        if made:  # leave no folder behind that the failed download made (nothing in it was there before)
            shutil.rmtree(made[-1], ignore_errors=True)
        if isinstance(e, CIFARDataError):
            raise
        raise CIFARDataError(f"{failed} ({type(e).__name__}: {e}); {offline}") from None


def _extract(tar, data_dir: Path) -> None:
    """Extract every member of `tar` into `data_dir`, refusing one whose path leaves it
    (``tarfile``'s "data" filter where this Python has it, the same check by hand before)."""
    import tarfile

    if hasattr(tarfile, "data_filter"):
        tar.extractall(data_dir, filter="data")
        return
    root = data_dir.resolve()
    for member in tar.getmembers():
        if not (root / member.name).resolve().is_relative_to(root) or member.issym() or member.islnk():
            raise ValueError(f"the archive's member {member.name} would leave {root}")
    tar.extractall(data_dir)
