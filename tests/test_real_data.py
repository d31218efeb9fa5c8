"""A short training run on the real CIFAR-10 in ../shared/data (skipped if absent)."""

import pytest

from cifar_lightning.cli.fit import main


@pytest.mark.slow
def test_small_cnn_learns_real_cifar10(shared_data, tmp_path):
    record = main(
        [
            "--model",
            "small_cnn",
            "--data-dir",
            str(shared_data),
            "--no-download",
            "--accelerator",
            "cpu",
            "--train-subset",
            "6000",
            "--val-size",
            "500",
            "--epochs",
            "2",
            "--batch-size",
            "64",
            "--lr",
            "0.05",
            "--output-dir",
            str(tmp_path / "real"),
        ]
    )
    # chance is 10%; two short epochs on 6,000 images reach about 40%
    assert record["test_accuracy"] > 0.3, record["test_accuracy"]
    assert min(record["per_class_accuracy"].values()) >= 0.0 and len(record["per_class_accuracy"]) == 10
