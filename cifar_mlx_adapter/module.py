"""MLXClassifier: the zoo's CIFAR classifier as an ``MLXModule``.

It is to ``cifar_mlx_adapter.lightning.MLXTrainer`` what ``cifar_lightning.CIFARClassifier`` is
to ``lightning.Trainer``: hand it to either MLX trainer (the general one, or the run
lifecycle's ``cifar_mlx_adapter.MLXTrainer`` that the scripts use). Subclass it as you would
a LightningModule: override ``loss`` for another loss, pass ``model=`` an ``mlx.nn.Module``
for another net, or override a hook. ``training_step`` is traced once by ``mx.compile``: it
must use mx ops only, and values given to ``self.log`` come back from the compiled step as
arrays.
"""

from __future__ import annotations

import math
import warnings

import mlx.core as mx
import mlx.nn as nn

from cifar_lightning.core.recipes import module_recipe
from cifar_mlx_adapter.lightning.module import MLXModule
from cifar_mlx_adapter.models import build_model
from cifar_mlx_adapter.optim import recipe_optimizer, scheduled_learning_rate


def tta_logits(model: nn.Module, images: mx.array) -> mx.array:
    """As ``cifar_lightning.module.tta_logits``, on NHWC images: the image and its mirror
    (1/4 each), 1-pixel shifts up-left and down-right, each mirrored too (1/8 each)."""

    def mirrored(x):
        return 0.5 * model(x) + 0.5 * model(x[:, :, ::-1, :])

    h, w = images.shape[1:3]
    # reflect-pad by one pixel: row/column 1 and -2 are mirrored outwards
    padded = mx.concatenate([images[:, 1:2], images, images[:, -2:-1]], axis=1)
    padded = mx.concatenate([padded[:, :, 1:2], padded, padded[:, :, -2:-1]], axis=2)
    shifted = 0.5 * mirrored(padded[:, :h, :w]) + 0.5 * mirrored(padded[:, 2 : h + 2, 2 : w + 2])
    return 0.5 * mirrored(images) + 0.5 * shifted


def batch_accuracy(logits: mx.array, labels: mx.array) -> mx.array:
    """Fraction of the batch whose largest logit is its label (float32 scalar); logged per
    batch and averaged weighted by batch size, it is the split's accuracy."""
    return (logits.argmax(axis=1) == labels).astype(mx.float32).mean()


class MLXClassifier(MLXModule):
    """A model of the zoo, built natively in MLX, as an ``MLXModule`` (its parameters are
    its net's, under ``model.``).

    Args:
        model: "small_cnn", "resnet18" or "fast" (ValueError otherwise), or an
            ``mlx.nn.Module`` of your own taking (B, 32, 32, 3) float32 images and returning
            (B, num_classes) logits; then `recipe` is required (ValueError otherwise).
        num_classes: 10 or 100.
        recipe: the recipe's numbers as a dict; None: the model's own (``recipes.RECIPES``).
            The optimiser's arguments come from ``recipes.sgd_args``, as in torch.
        class_names: kept in ``hparams`` for reports.
        model_kwargs: architecture options for ``build_model`` (SmallCNN: ``dropout``).

    Batches are MLX arrays: images float32 (B, 32, 32, 3), NHWC, normalised; labels int32
    (B,). Parameter names equal the torch model's (``self.model``'s); ``load_file`` converts
    weights both ways. What it logs, with ``CIFARClassifier``'s names:

    - ``training_step``: the loss per example as ``train/loss_step`` (each step) and
      ``train/loss_epoch`` (the epoch's mean), ``train/acc`` (epoch) and ``lr`` (each step:
      the base parameter group's rate of the step); it returns the recipe's loss (a sum for
      the fast recipe, times ``loss_scale()``).
    - ``validation_step``: ``val/loss`` (mean cross-entropy) and ``val/acc``, each the split's
      figure once averaged weighted by batch size; it returns the logits.
    - ``test_step``: ``test/loss`` and ``test/acc`` of the logits (with test-time augmentation
      when the recipe uses it), and ``test/acc_no_tta`` then; it returns those logits
      (B, num_classes), from which the run lifecycle's trainer counts its confusion matrix.
    """

    def __init__(
        self,
        model: str | nn.Module = "small_cnn",
        num_classes: int = 10,
        recipe: dict | None = None,
        class_names: list[str] | None = None,
        model_kwargs: dict | None = None,
    ):
        super().__init__()
        name = model if isinstance(model, str) else type(model).__name__
        self.save_hyperparameters(
            {"model": name, "num_classes": num_classes, "recipe": recipe, "class_names": class_names}
        )
        self.recipe = module_recipe(name, recipe, own_model=not isinstance(model, str))
        kwargs = {**self.recipe.model_kwargs, **(model_kwargs or {})}  # e.g. fast_muon's head scale
        self.model = build_model(model, num_classes, **kwargs) if isinstance(model, str) else model

    # ------------------------------------------------------------------ hooks
    def forward(self, images: mx.array) -> mx.array:
        return self.model(images)

    def loss(self, logits: mx.array, labels: mx.array) -> mx.array:
        """The recipe's cross-entropy, computed in float32 from logits of any dtype, as
        torch.autocast computes cross_entropy (an op it runs in float32): under half precision
        the loss and its gradient keep float32's precision."""
        part = self.recipe.loss
        logits = logits.astype(mx.float32)
        return nn.losses.cross_entropy(logits, labels, label_smoothing=part.label_smoothing, reduction=part.reduction)

    def world_size(self) -> int:
        """Processes training together (the trainer's; 1 without a trainer)."""
        return getattr(self.trainer, "world_size", 1) if self.trainer is not None else 1

    def _batches_per_step(self) -> int:
        """Batches behind one optimizer step: processes x accumulated batches (1 without a trainer)."""
        return self.world_size() * getattr(self.trainer, "accumulate_grad_batches", 1)

    def loss_scale(self) -> int:
        """What the training loss is multiplied by before its gradient: for a summed loss the
        processes times the accumulated batches, 1 for a mean, as ``cifar_lightning``'s module
        does. The trainer averages gradients over the processes and divides an accumulated
        loss by the batches it accumulates, which divides a summed loss's gradient by their
        number; the scale gives back the gradient of the sum over every image of the step,
        so a step per example (the fast recipe's units) stays one."""
        return self._batches_per_step() if self.recipe.loss.summed else 1

    def examples_per_step(self) -> int:
        """Images one optimizer step sees: batch size (per process) x processes x accumulated batches."""
        return self.recipe.batch_size * self._batches_per_step()

    def training_step(self, batch, batch_idx):
        images, labels = batch
        logits = self(images)
        loss = self.loss(logits, labels)
        per_example = loss / labels.shape[0] if self.recipe.loss.summed else loss
        # CIFARClassifier's names: the step value, and the epoch's mean weighted by batch size
        self.log("train/loss_step", per_example, on_step=True, on_epoch=False)
        self.log("train/loss_epoch", per_example, on_step=False, on_epoch=True)
        self.log("train/acc", batch_accuracy(logits, labels), on_step=False, on_epoch=True)
        # the base group's rate of this step, logged where CIFARClassifier logs it, so a
        # callback's on_train_batch_end reads the step's own rate in trainer.callback_metrics
        if getattr(self.trainer, "optimizers", None):  # a fit's step, not a bare call
            self.log("lr", scheduled_learning_rate(self.optimizers()), on_step=True, on_epoch=False)
        return loss * self.loss_scale()

    def validation_step(self, batch, batch_idx):
        images, labels = batch
        logits = self(images)
        self.log(
            "val/loss", nn.losses.cross_entropy(logits.astype(mx.float32), labels, reduction="mean"), prog_bar=True
        )
        self.log("val/acc", batch_accuracy(logits, labels), prog_bar=True)
        return logits

    def test_step(self, batch, batch_idx):
        """Logits the test metrics are computed from (with TTA when the recipe says so)."""
        images, labels = batch
        plain = self(images)
        logits = tta_logits(self.model, images) if self.recipe.tta else plain
        self.log("test/loss", nn.losses.cross_entropy(logits.astype(mx.float32), labels, reduction="mean"))
        self.log("test/acc", batch_accuracy(logits, labels))
        if self.recipe.tta:
            self.log("test/acc_no_tta", batch_accuracy(plain, labels))
        return logits

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0):
        """Class probabilities float32 (B, num_classes), each row summing to 1: the softmax of
        the logits of normalised NHWC images (B, 32, 32, 3), or of a batch's first element,
        with test-time augmentation when the recipe says so (as ``test_step``)."""
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        logits = tta_logits(self.model, images) if self.recipe.tta else self(images)
        return mx.softmax(logits.astype(mx.float32), axis=1)

    def _planned_steps(self) -> tuple[int, int]:
        """(optimizer steps of the run, optimizer steps per epoch) as the trainer plans them:
        the run lifecycle's trainer says so itself; the general one as Lightning's does
        (``estimated_stepping_batches``). ValueError when the run has no bound."""
        t = self.trainer
        if hasattr(t, "total_steps"):
            return t.total_steps, t.steps_per_epoch
        per_epoch = math.ceil(t.num_training_batches / t.accumulate_grad_batches)
        planned = t.estimated_stepping_batches
        if not math.isfinite(planned):
            raise ValueError(
                "MLXClassifier sizes its learning-rate schedule from the run's length: "
                "give the MLXTrainer max_epochs or max_steps"
            )
        return int(planned), per_epoch

    def configure_optimizers(self):
        """The recipe's optimisers (SGD, AdamW, Muon), each part's learning rate (and SGD's
        momentum, when the recipe cycles it) following the recipe, as torch's do."""
        total, per_epoch = self._planned_steps()
        return recipe_optimizer(
            self.recipe, total, per_epoch, self.model, examples_per_step=self.examples_per_step(), prefix="model."
        )

    def on_fit_start(self) -> None:
        """As ``cifar_lightning``'s module: the fast net's whitening filters (and its starting
        bias) from the first training images of the trainer's datamodule, unless they are set
        already (``init_whitening``, loaded weights, a resumed checkpoint: ``whitening_set``).
        Warns when the datamodule augments otherwise than the recipe (``augmentation_mismatch``)."""
        from cifar_lightning.core.data import CIFARData, augmentation_mismatch

        data = getattr(getattr(self.trainer, "datamodule", None), "data", getattr(self.trainer, "datamodule", None))
        if isinstance(data, CIFARData) and (mismatch := augmentation_mismatch(data, self.recipe)):
            warnings.warn(mismatch, stacklevel=2)
        if getattr(self.model, "whitening_set", True):
            return
        from cifar_lightning.core.spec import FAST
        from cifar_lightning.core.whitening import WHITENING_NOT_SET, starting_bias
        from cifar_mlx_adapter.models import init_whitening

        if not isinstance(data, CIFARData):
            raise ValueError(WHITENING_NOT_SET.format(dm="CIFARDataModule or CIFARData"))
        data.setup()
        images = data.normalize(data.splits["train"][0][: FAST["whiten_images"]])
        init_whitening(self.model, images, starting_bias(self.recipe))

    def on_train_epoch_start(self) -> bool:
        """The fast recipe trains the whitening bias for its first epochs only: frozen after.
        Returns True when the set of trainable parameters changed (the trainer sees the names
        change and compiles its step anew)."""
        whiten = getattr(self.model, "whiten", None)
        if whiten is None or not self.recipe.whiten_bias_epochs:
            return False
        train_bias = self.trainer.current_epoch < self.recipe.whiten_bias_epochs
        trainable = "bias" in dict(whiten.trainable_parameters())
        if train_bias == trainable:
            return False
        (whiten.unfreeze if train_bias else whiten.freeze)(keys=["bias"], recurse=False)
        return True
