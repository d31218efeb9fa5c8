"""CIFARClassifier: the LightningModule that trains any model of the zoo with its recipe."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from .fast import tta_logits
from .models import build_model
from .recipes import Recipe, get_recipe, lr_factor_linear, total_steps
from .spec import is_norm_bias


class CIFARClassifier(L.LightningModule):
    def __init__(
        self,
        model: str = "small_cnn",
        num_classes: int = 10,
        recipe: dict | None = None,
        class_names: list[str] | None = None,
        model_kwargs: dict | None = None,
        channels_last: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.recipe = Recipe(**recipe) if recipe else get_recipe(model)
        self.model = build_model(model, num_classes, **(model_kwargs or {}))
        # NHWC convolutions: about 1.25x faster training of the fast net on a 2-core CPU
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        # separate metric objects per split; plain accuracy is average="micro"
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc_plain = MulticlassAccuracy(num_classes, average="micro")  # without TTA
        self.test_per_class = MulticlassAccuracy(num_classes, average=None)
        self.test_confusion = MulticlassConfusionMatrix(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=self.memory_format))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        r = self.recipe
        return F.cross_entropy(logits, labels, label_smoothing=r.label_smoothing, reduction=r.loss_reduction)

    def on_train_epoch_start(self) -> None:
        whiten = getattr(self.model, "whiten", None)
        if whiten is not None and self.recipe.whiten_bias_epochs:
            whiten.bias.requires_grad_(self.current_epoch < self.recipe.whiten_bias_epochs)

    def training_step(self, batch, batch_idx):
        images, labels = batch
        logits = self(images)
        loss = self.loss(logits, labels)
        self.train_acc(logits, labels)
        per_example = loss / len(labels) if self.recipe.loss_reduction == "sum" else loss
        self.log("train/loss", per_example, prog_bar=True, on_step=True, on_epoch=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        # the base group's rate (group 0), as in MLX's metrics.csv; BatchNorm biases may have their own
        self.log("lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx):
        images, labels = batch
        logits = self(images)
        self.val_acc(logits, labels)
        self.log("val/loss", F.cross_entropy(logits, labels), prog_bar=True)
        self.log("val/acc", self.val_acc, prog_bar=True)

    def test_step(self, batch, batch_idx):
        images, labels = batch
        plain = self(images)
        logits = tta_logits(self, images) if self.recipe.tta else plain
        self.test_acc(logits, labels)
        self.test_acc_plain(plain, labels)
        self.test_per_class.update(logits, labels)
        self.test_confusion.update(logits, labels)
        self.log("test/loss", F.cross_entropy(logits, labels))
        self.log("test/acc", self.test_acc)
        self.log("test/acc_no_tta", self.test_acc_plain)

    def on_test_epoch_end(self) -> None:
        # per-class values are vectors: kept as attributes (self.log takes scalars only)
        self.per_class_accuracy = self.test_per_class.compute().cpu()
        self.confusion_matrix = self.test_confusion.compute().cpu()
        self.test_per_class.reset()
        self.test_confusion.reset()

    def predict_step(self, batch, batch_idx):
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        return (tta_logits(self, images) if self.recipe.tta else self(images)).argmax(dim=1)

    def param_groups(self) -> list[dict]:
        """torch SGD groups: BatchNorm biases may learn `bias_lr_scale` times faster with
        the same per-step weight decay (lr * weight_decay is what shrinks a weight)."""
        r = self.recipe
        named = list(self.model.named_parameters())
        biases = [p for n, p in named if p.requires_grad and is_norm_bias(n)]
        others = [p for n, p in named if p.requires_grad and not is_norm_bias(n)]
        groups = [{"params": others, "lr": r.lr, "weight_decay": r.weight_decay}]
        if biases and r.bias_lr_scale != 1:
            groups.append({"params": biases, "lr": r.lr * r.bias_lr_scale, "weight_decay": r.weight_decay / r.bias_lr_scale})
        else:
            groups[0]["params"] = others + biases
        return groups

    def total_training_steps(self) -> int:
        """Optimizer steps of the whole run: the trainer's estimated_stepping_batches, cut
        to a fractional ``recipe.epochs`` (the trainer runs ceil(epochs) epochs and is
        stopped by ``StopAtStep``; Lightning 2.6 cannot resume runs that set max_steps)."""
        t = self.trainer
        planned = int(t.estimated_stepping_batches)
        if t.max_epochs is None or t.max_epochs <= 0 or self.recipe.epochs >= t.max_epochs:
            return planned
        return min(planned, total_steps(self.recipe.epochs, planned / t.max_epochs))

    def configure_optimizers(self):
        r = self.recipe
        optimizer = torch.optim.SGD(self.param_groups(), lr=r.lr, momentum=r.momentum, nesterov=r.nesterov)
        total = self.total_training_steps()
        if r.schedule == "onecycle":
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer,
                max_lr=[g["lr"] for g in optimizer.param_groups],
                total_steps=total,
                pct_start=r.pct_start,
                anneal_strategy="cos",
                cycle_momentum=r.cycle_momentum,
                base_momentum=r.base_momentum,
                max_momentum=r.max_momentum,
                div_factor=r.div_factor,
                final_div_factor=r.final_div_factor,
            )
        else:
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor_linear(r, step, total))
        # "interval": "step" -- the default ("epoch") would silently stretch the cycle 100-fold
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
