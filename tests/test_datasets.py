import pickle

import numpy as np
import pytest

from cifar_lightning.core.datasets import CIFARDataError, read_class_names, read_split


def test_reads_cifar10_shapes_dtypes_and_names(cifar10_dir):
    images, labels = read_split(cifar10_dir, "cifar10", train=True)
    assert images.shape == (200, 3, 32, 32) and images.dtype == np.uint8
    assert labels.shape == (200,) and labels.dtype == np.int64
    assert set(labels.tolist()) == set(range(10))
    test_images, _ = read_split(cifar10_dir, "cifar10", train=False)
    assert test_images.shape == (50, 3, 32, 32)
    assert read_class_names(cifar10_dir, "cifar10") == [f"class{i}" for i in range(10)]


def test_reads_cifar100_fine_labels(cifar100_dir):
    images, labels = read_split(cifar100_dir, "cifar100", train=True)
    assert images.shape == (300, 3, 32, 32)
    assert labels.max() == 99
    assert len(read_class_names(cifar100_dir, "cifar100")) == 100


def test_channel_planar_layout_is_kept(cifar10_dir):
    path = cifar10_dir / "cifar-10-batches-py" / "test_batch"
    raw = pickle.load(open(path, "rb"), encoding="latin1")["data"]
    images, _ = read_split(cifar10_dir, "cifar10", train=False)
    assert np.array_equal(images[3, 1].ravel(), raw[3, 1024:2048])  # green plane


def test_missing_folder_names_folder_and_layout(tmp_path):
    with pytest.raises(CIFARDataError, match=r"cifar-10-batches-py/") as e:
        read_split(tmp_path, "cifar10", train=True)
    assert str(tmp_path) in str(e.value)


def test_truncated_file_names_the_file(cifar10_dir):
    path = cifar10_dir / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CIFARDataError, match="data_batch_3.*corrupt or truncated"):
        read_split(cifar10_dir, "cifar10", train=True)


def test_bad_shape_and_label_range_are_reported(cifar10_dir):
    path = cifar10_dir / "cifar-10-batches-py" / "test_batch"
    batch = pickle.load(open(path, "rb"), encoding="latin1")
    pickle.dump({**batch, "labels": [12] * len(batch["labels"])}, open(path, "wb"))
    with pytest.raises(CIFARDataError, match=r"test_batch: labels must lie in \[0, 9\]"):
        read_split(cifar10_dir, "cifar10", train=False)
    pickle.dump({**batch, "data": batch["data"][:, :100]}, open(path, "wb"))
    with pytest.raises(CIFARDataError, match=r"expected uint8 data of shape \(N, 3072\)"):
        read_split(cifar10_dir, "cifar10", train=False)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        read_split(".", "mnist", train=True)


def test_reads_the_shared_copy_by_content(shared_data):
    images, labels = read_split(shared_data, "cifar10", train=False)
    assert images.shape == (10000, 3, 32, 32)
    assert np.bincount(labels).tolist() == [1000] * 10
