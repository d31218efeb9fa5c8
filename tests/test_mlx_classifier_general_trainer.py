"""MLXClassifier is an MLXModule: Lightning's general MLXTrainer trains it as the run
lifecycle's trainer (scripts/fit_mlx.py's) does, as lightning.Trainer trains CIFARClassifier.

- The same fast-net run (summed loss, two optimiser parts routed by the net's own names,
  whitening from the data at fit start, the whitening bias frozen after its epochs) under
  both trainers ends with the same weights.
- What the general trainer reports is what the lifecycle's trainer counts: test accuracy
  and loss, validation accuracy.
- Its logs carry CIFARClassifier's names: train/loss_step, train/loss_epoch, train/acc,
  val/loss, val/acc, test/loss, test/acc.
- bf16-mixed under both trainers: tests/test_run_precision.py.

Planted faults, each seen to fail a test here: the optimiser's routing without the
``model.`` prefix (every parameter falls to the base part: weights differ), ``loss_scale``
left at 1 under accumulation, ``val/acc`` logged as the batch's error, ``test/acc_no_tta``
counted from the TTA logits, ``train/loss`` logged as the batch's sum.
"""

import csv

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from conftest import quiet_mlx_trainer
from mlx.utils import tree_flatten

from cifar_lightning.core.data import CIFARData
from cifar_lightning.core.draws import Augmentation
from cifar_lightning.core.recipes import get_recipe
from cifar_mlx_adapter import MLXClassifier
from cifar_mlx_adapter import MLXTrainer as LifecycleTrainer
from cifar_mlx_adapter.lightning import CSVLogger, MLXModule
from cifar_mlx_adapter.lightning import MLXTrainer as GeneralTrainer

EPOCHS = 4  # the fast recipe freezes its whitening bias after epoch 3: the general step is remade


def fast_run(data_dir, batch_size=50):
    """(CIFARData, MLXClassifier) of the fast recipe on the fixture, from one seed's weights."""
    recipe = get_recipe("fast").with_overrides(batch_size=batch_size, epochs=EPOCHS, tta=True)
    data = CIFARData(
        "cifar10", data_dir, batch_size=batch_size, seed=0, train_subset=100, augmentation=recipe.augmentation
    )
    mx.random.seed(0)
    return data, MLXClassifier("fast", 10, recipe=recipe.to_dict())


def weights(module) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in tree_flatten(module.model.parameters())}


def test_an_mlx_classifier_is_an_mlx_module_whose_parameters_are_its_nets():
    module = MLXClassifier("small_cnn", 10)
    assert isinstance(module, MLXModule)
    ours = {k.removeprefix("model.") for k, _ in tree_flatten(module.parameters())}
    assert ours == {k for k, _ in tree_flatten(module.model.parameters())}
    assert module.hparams.num_classes == 10 and module.hparams["model"] == "small_cnn"


def test_the_general_trainer_trains_the_fast_net_as_the_lifecycle_trainer_does(cifar10_dir, tmp_path):
    data, lifecycle_module = fast_run(cifar10_dir)
    lifecycle = LifecycleTrainer(
        max_epochs=EPOCHS, default_root_dir=tmp_path / "lifecycle", enable_progress_bar=False, limit_val_batches=0
    )
    lifecycle.fit(lifecycle_module, data)
    lifecycle_test = lifecycle.test(lifecycle_module, data, verbose=False)

    data, general_module = fast_run(cifar10_dir)
    general = quiet_mlx_trainer(max_epochs=EPOCHS, default_root_dir=tmp_path / "general")
    general.fit(general_module, datamodule=data)
    assert general.global_step == lifecycle.global_step == 2 * EPOCHS
    assert general_module.model.whitening_set
    assert "bias" not in dict(general_module.model.whiten.trainable_parameters())  # frozen after its epochs

    ours, theirs = weights(general_module), weights(lifecycle_module)
    assert ours.keys() == theirs.keys()
    # one computation, so one result: float32 rounding at most (measured: bit for bit on this CPU)
    for name in ours:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-5, atol=1e-6, err_msg=name)
    start = weights(fast_run(cifar10_dir)[1])
    moved = [n for n in ours if not np.array_equal(ours[n], start[n])]
    assert len(moved) > len(ours) // 2  # training moved most tensors, so equality says something

    [general_test] = general.test(general_module, datamodule=data, verbose=False)
    assert general_test["test/acc"] == pytest.approx(lifecycle_test["test/acc"], abs=1e-6)
    assert general_test["test/loss"] == pytest.approx(lifecycle_test["test/loss"], rel=1e-5)
    assert general_test["test/acc_no_tta"] == pytest.approx(lifecycle_test["test/acc_no_tta"], abs=1e-6)


def test_the_general_trainer_logs_cifar_classifiers_names_and_validation_equals_the_lifecycles(cifar10_dir, tmp_path):
    recipe = get_recipe("small_cnn").with_overrides(batch_size=40)
    data = CIFARData("cifar10", cifar10_dir, batch_size=40, val_size=40, seed=0, augmentation=recipe.augmentation)
    mx.random.seed(0)
    module = MLXClassifier("small_cnn", 10, recipe=recipe.to_dict(), model_kwargs={"dropout": 0.0})
    trainer = GeneralTrainer(
        max_epochs=2,
        logger=CSVLogger(tmp_path, name="logs"),
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=data)
    with open(trainer.logger.log_dir + "/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"train/loss_step", "train/loss_epoch", "train/acc", "val/loss", "val/acc"} <= set(rows[0])
    assert sum(bool(r["train/loss_step"]) for r in rows) == trainer.global_step == 2 * (160 // 40)
    assert 0 <= float(trainer.callback_metrics["val/acc"]) <= 1

    [general] = trainer.validate(module, datamodule=data, verbose=False)
    counted = LifecycleTrainer(enable_progress_bar=False).validate(module, data, verbose=False)
    assert general["val/acc"] == pytest.approx(counted["val/acc"], abs=1e-6)
    assert general["val/loss"] == pytest.approx(counted["val/loss"], rel=1e-5)


class LinearNet(nn.Module):
    """No BatchNorm, so a batch's gradient is the sum of its images' whatever the batch."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(32 * 32 * 3, 10)

    def __call__(self, x):
        return self.fc(x.reshape(x.shape[0], -1))


def test_accumulated_batches_of_a_summed_loss_take_the_step_of_their_union(cifar10_dir, tmp_path):
    """The fast recipe sums its loss: two accumulated batches of 25 must take the step one
    batch of 50 takes (``loss_scale`` gives back what the trainer's division by 2 took)."""

    def one_step(batch_size, accumulate):
        recipe = get_recipe("fast").with_overrides(batch_size=batch_size, epochs=1, tta=False)
        plain = Augmentation(crop_padding=0, flip="none")  # the same images in both runs' batches
        data = CIFARData("cifar10", cifar10_dir, batch_size=batch_size, seed=0, train_subset=50, augmentation=plain)
        mx.random.seed(0)
        module = MLXClassifier(LinearNet(), 10, recipe=recipe.to_dict())
        trainer = quiet_mlx_trainer(
            max_steps=1, accumulate_grad_batches=accumulate, default_root_dir=tmp_path / f"acc{accumulate}"
        )
        trainer.fit(module, datamodule=data)
        assert trainer.global_step == 1
        return weights(module), weights(fast_start(batch_size))

    def fast_start(batch_size):
        mx.random.seed(0)
        return MLXClassifier(LinearNet(), 10, recipe=get_recipe("fast").with_overrides(batch_size=batch_size).to_dict())

    (whole, start), (accumulated, _) = one_step(50, 1), one_step(25, 2)
    assert not np.allclose(whole["fc.weight"], start["fc.weight"])  # the step moved the weights
    for name in whole:
        np.testing.assert_allclose(accumulated[name], whole[name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_the_logged_training_loss_is_per_example_when_the_recipe_sums_it():
    """The fast recipe's loss is summed over the batch (and label-smoothed); ``train/loss``
    is the mean per example, torch's ``cross_entropy`` of the same logits, and the step's
    loss is that mean times the batch. Checked against: the summed loss logged."""
    import torch
    import torch.nn.functional as F

    from cifar_mlx_adapter.models import init_whitening
    from cifar_mlx_adapter.trainer import hook_logs

    mx.random.seed(0)
    module = MLXClassifier("fast", 10)
    images, labels = mx.random.normal((8, 32, 32, 3)), mx.arange(8, dtype=mx.int32)
    init_whitening(module.model, images.transpose(0, 3, 1, 2))
    module.model.eval()  # BatchNorm from its running statistics: the same logits on both calls
    module.trainer = LifecycleTrainer(enable_progress_bar=False)  # one process: loss_scale 1
    with hook_logs(module, "training_step") as logs:
        loss = module.training_step((images, labels), 0)
    logits = torch.from_numpy(np.array(module(images)))
    smoothing = module.recipe.loss.label_smoothing
    assert module.recipe.loss.summed and smoothing > 0  # the case under test
    expected = F.cross_entropy(logits, torch.from_numpy(np.array(labels)).long(), label_smoothing=smoothing).item()
    assert float(logs["train/loss_step"]) == pytest.approx(expected, rel=1e-5)
    assert float(loss) == pytest.approx(expected * 8, rel=1e-5)


def test_the_general_trainer_logs_what_lightning_logs_for_cifar_classifier(cifar10_dir, tmp_path):
    """The reference is Lightning itself: CIFARClassifier under L.Trainer and MLXClassifier
    under the general MLXTrainer, the same flags and data, write metrics.csv files with the
    same columns and the same rows (epoch, step and which values each holds), and `test`
    returns the same keys; the per-step ``lr`` values agree, and so do the keys and the step's
    ``lr`` a callback reads in ``callback_metrics`` as each batch ends. Checked against:
    MLXClassifier logging no ``lr`` (as it first did), logging it before its step's rate was
    set, or logging it in on_train_batch_end (after the callbacks: a step behind)."""
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger

    from cifar_lightning import CIFARClassifier, CIFARDataModule
    from cifar_mlx_adapter.lightning import Callback as MLXCallback

    recipe = get_recipe("small_cnn").with_overrides(batch_size=40).to_dict()
    flags = dict(max_epochs=2, log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False)
    flags.update(enable_checkpointing=False, num_sanity_val_steps=0)

    def seen_by_callbacks(base):
        class Seen(base):  # what a callback reads as each batch ends: the keys, and the step's lr
            keys, lr = [], []

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                self.keys.append(sorted(trainer.callback_metrics))
                self.lr.append(float(trainer.callback_metrics["lr"]))

        return Seen()

    torch_data = CIFARDataModule("cifar10", cifar10_dir, batch_size=40, val_size=40, download=False)
    their_seen = seen_by_callbacks(L.Callback)
    theirs = L.Trainer(
        accelerator="cpu", logger=LightningCSVLogger(tmp_path, name="torch"), callbacks=[their_seen], **flags
    )
    torch_module = CIFARClassifier("small_cnn", 10, recipe=recipe)
    theirs.fit(torch_module, datamodule=torch_data)
    [their_test] = theirs.test(torch_module, datamodule=torch_data, verbose=False)

    mlx_data = CIFARData("cifar10", cifar10_dir, batch_size=40, val_size=40, seed=0)
    our_seen = seen_by_callbacks(MLXCallback)
    ours = GeneralTrainer(logger=CSVLogger(tmp_path, name="mlx"), callbacks=[our_seen], **flags)
    mlx_module = MLXClassifier("small_cnn", 10, recipe=recipe)
    ours.fit(mlx_module, datamodule=mlx_data)
    [our_test] = ours.test(mlx_module, datamodule=mlx_data, verbose=False)
    assert our_seen.keys == their_seen.keys
    np.testing.assert_allclose(our_seen.lr, their_seen.lr, rtol=1e-6)

    def rows(trainer):
        with open(trainer.logger.log_dir + "/metrics.csv") as f:
            return [(r["epoch"], r["step"], sorted(k for k, v in r.items() if v)) for r in csv.DictReader(f)]

    assert rows(ours) == rows(theirs)
    assert sorted(our_test) == sorted(their_test)

    def rates(trainer):  # the schedule, read at each step as Lightning's row holds it
        with open(trainer.logger.log_dir + "/metrics.csv") as f:
            return [float(r["lr"]) for r in csv.DictReader(f) if r["lr"]]

    # one recipe schedule in float64 (torch) and float32 (MLX): float32 rounding apart
    np.testing.assert_allclose(rates(ours), rates(theirs), rtol=1e-6)
