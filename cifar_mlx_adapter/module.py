"""MLXClassifier: Lightning's hooks over an MLX model.

Subclass it as you would a LightningModule: override ``loss`` for another loss,
pass ``model=`` an ``mlx.nn.Module`` for another net, or override a hook.
``training_step`` is traced once by ``mx.compile``: it must use mx ops only, and
values given to ``self.log`` come back from the compiled step as arrays.
"""

from __future__ import annotations

import warnings

import mlx.core as mx
import mlx.nn as nn

from cifar_lightning.core.recipes import module_recipe
from cifar_mlx_adapter.models import build_model
from cifar_mlx_adapter.optim import recipe_optimizer


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


class MLXClassifier:
    """A model of the zoo, built natively in MLX, with LightningModule-style hooks.

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
    (B,). Parameter names equal the torch model's; ``load_file`` converts weights both ways.
    ``training_step`` returns the recipe's loss (a sum for the fast recipe, multiplied by
    ``loss_scale()``) and logs ``train/loss`` per example and ``train/acc``; ``test_step`` returns logits (num_classes
    per image, with test-time augmentation when the recipe uses it).
    """

    def __init__(
        self,
        model: str | nn.Module = "small_cnn",
        num_classes: int = 10,
        recipe: dict | None = None,
        class_names: list[str] | None = None,
        model_kwargs: dict | None = None,
    ):
        name = model if isinstance(model, str) else type(model).__name__
        self.hparams = {"model": name, "num_classes": num_classes, "recipe": recipe, "class_names": class_names}
        self.recipe = module_recipe(name, recipe, own_model=not isinstance(model, str))
        kwargs = {**self.recipe.model_kwargs, **(model_kwargs or {})}  # e.g. fast_muon's head scale
        self.model = build_model(model, num_classes, **kwargs) if isinstance(model, str) else model
        self.trainer = None
        self._logged: dict[str, mx.array] = {}

    # ------------------------------------------------------------------ hooks
    def __call__(self, images: mx.array) -> mx.array:
        return self.model(images)

    def loss(self, logits: mx.array, labels: mx.array) -> mx.array:
        part = self.recipe.loss
        return nn.losses.cross_entropy(logits, labels, label_smoothing=part.label_smoothing, reduction=part.reduction)

    def log(self, name: str, value) -> None:
        """Record a scalar, as LightningModule.log does; the trainer averages it per epoch."""
        self._logged[name] = value

    def world_size(self) -> int:
        """Processes training together (the trainer's; 1 without a trainer)."""
        return getattr(self.trainer, "world_size", 1) if self.trainer is not None else 1

    def loss_scale(self) -> int:
        """What the training loss is multiplied by before its gradient: the number of
        processes for a summed loss, 1 for a mean, as ``cifar_lightning``'s module does. The
        trainer averages gradients over the processes, which divides a summed loss's gradient
        by their number; the scale gives back the gradient of the sum over every image of the
        step, so a step per example (the fast recipe's units) stays one."""
        return self.world_size() if self.recipe.loss.summed else 1

    def examples_per_step(self) -> int:
        """Images one optimizer step sees: batch size (per process) x processes."""
        return self.recipe.batch_size * self.world_size()

    def training_step(self, batch, batch_idx):
        images, labels = batch
        logits = self(images)
        loss = self.loss(logits, labels)
        per_example = loss / labels.shape[0] if self.recipe.loss.summed else loss
        self.log("train/loss", per_example)
        self.log("train/acc", (logits.argmax(axis=1) == labels).astype(mx.float32).mean())
        return loss * self.loss_scale()

    def validation_step(self, batch, batch_idx):
        images, labels = batch
        logits = self(images)
        self.log("val/loss", nn.losses.cross_entropy(logits, labels, reduction="mean"))
        return logits

    def test_step(self, batch, batch_idx):
        """Logits the test metrics are computed from (with TTA when the recipe says so)."""
        images, _ = batch
        return tta_logits(self.model, images) if self.recipe.tta else self(images)

    def predict_step(self, batch, batch_idx):
        """Class probabilities float32 (B, num_classes), each row summing to 1: the softmax of
        the logits of normalised NHWC images (B, 32, 32, 3), or of a batch's first element,
        with test-time augmentation when the recipe says so (as ``test_step``)."""
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        logits = tta_logits(self.model, images) if self.recipe.tta else self(images)
        return mx.softmax(logits.astype(mx.float32), axis=1)

    def configure_optimizers(self):
        """The recipe's optimisers (SGD, AdamW, Muon), each part's learning rate (and SGD's
        momentum, when the recipe cycles it) following the recipe, as torch's do."""
        t = self.trainer
        return recipe_optimizer(
            self.recipe, t.total_steps, t.steps_per_epoch, self.model, examples_per_step=self.examples_per_step()
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

    # Lightning-style epoch hook: the fast recipe trains the whitening bias for a few epochs only
    def on_train_epoch_start(self) -> bool:
        """Returns True when the set of trainable parameters changed (the step is recompiled)."""
        whiten = getattr(self.model, "whiten", None)
        if whiten is None or not self.recipe.whiten_bias_epochs:
            return False
        train_bias = self.trainer.current_epoch < self.recipe.whiten_bias_epochs
        trainable = "bias" in dict(whiten.trainable_parameters())
        if train_bias == trainable:
            return False
        (whiten.unfreeze if train_bias else whiten.freeze)(keys=["bias"], recurse=False)
        return True
