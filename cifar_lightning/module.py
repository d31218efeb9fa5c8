"""CIFARClassifier: the LightningModule that trains any model of the zoo with its recipe."""

from __future__ import annotations

import math
import warnings

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from cifar_lightning.core.plain import to_plain
from cifar_lightning.core.recipes import (
    Recipe,
    cycles_momentum,
    module_recipe,
    optimized_parameters,
    optimizer_parts,
    part_lr_at,
    route_parameters,
    total_steps,
)
from cifar_lightning.models import build_model
from cifar_lightning.optim import Muon


def tta_logits(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Logits averaged over the image and its mirror (1/4 each) and 1-pixel shifts
    up-left and down-right, each also mirrored (1/8 each)."""

    def mirrored(x):
        return 0.5 * model(x) + 0.5 * model(x.flip(-1))

    padded = F.pad(images, (1,) * 4, mode="reflect")
    h, w = images.shape[-2:]
    shifted = 0.5 * mirrored(padded[..., :h, :w]) + 0.5 * mirrored(padded[..., 2 : h + 2, 2 : w + 2])
    return 0.5 * mirrored(images) + 0.5 * shifted


class CIFARClassifier(L.LightningModule):
    """A model of the zoo trained with SGD and its recipe's per-step schedule.

    Args:
        model: "small_cnn", "resnet18" or "fast" (``MODEL_NAMES``; ValueError otherwise), or a
            ``torch.nn.Module`` of your own taking (B, 3, 32, 32) float32 images and returning
            (B, num_classes) logits; then `recipe` is required, and the hyper-parameters keep
            the module's class name (pass the module again to ``load_from_checkpoint``).
        num_classes: 10 or 100.
        recipe: the recipe's numbers as a dict (or a ``Recipe``); None: the model's own
            (``recipes.RECIPES``). ``lr`` and ``weight_decay`` are in the recipe's
            ``units`` and become the optimiser's arguments in ``recipes.sgd_args``, for the
            images one optimizer step sees over all processes and accumulated batches.
        class_names: kept in the hyper-parameters for reports.
        model_kwargs: architecture options for ``build_model`` (SmallCNN: ``dropout``).
        channels_last: run the convolutions in NHWC (faster on CPU for the fast net).
        compile: run the model through ``torch.compile`` (the parameters, their names and
            checkpoints are the uncompiled model's).
        epochs: train exactly this many epochs (may be fractional: the run stops after
            ceil(epochs x optimizer steps per epoch) steps, at a batch boundary). None:
            as long as the Trainer plans.

    Schedule length: ``trainer.estimated_stepping_batches``, which honours ``max_epochs``,
    ``max_steps``, ``limit_train_batches``, ``accumulate_grad_batches`` and the number of
    devices, cut to ``epochs`` when given. Training ends at the schedule's end: the module
    sets ``trainer.should_stop`` once ``global_step`` reaches it and skips any batch after
    it, so the learning rate never leaves the schedule (it cannot turn negative, and
    OneCycle is never stepped past its end). A Trainer with neither ``max_epochs`` nor
    ``max_steps`` bounded (``max_epochs=-1``, ``max_steps=-1``) raises ValueError.

    A summed loss (the fast recipe's units: a step per example) reaches the optimiser as the
    sum over every image of the step: DDP averages gradients over processes and Lightning
    divides each accumulated batch's loss by ``accumulate_grad_batches``, so the module
    multiplies a summed loss by both (``loss_scale``); a mean loss needs nothing.

    Batches are (float32 images (B, 3, 32, 32) normalised, int64 labels (B,)), as
    ``CIFARDataModule`` yields them. Logged: ``train/loss`` (per example, whatever the
    recipe's loss reduction), ``train/acc``, ``lr`` (the base group's, torch's units),
    ``val/loss``, ``val/acc``, ``test/loss``, ``test/acc`` (with test-time augmentation
    when the recipe uses it) and, with TTA only, ``test/acc_no_tta``; accuracies are
    fractions in [0, 1]. A training step reads no value onto the host: Lightning reads the
    logged ones where it logs them (every ``log_every_n_steps``, and per epoch); the step
    loss is on the progress bar with ``callbacks.StepLossBar``.
    Every epoch value is the whole set's under DDP (torchmetrics synchronises the
    metrics; step losses are averaged over the processes). After ``trainer.test``,
    ``per_class_accuracy`` (num_classes,) and ``confusion_matrix`` (num_classes,
    num_classes; rows true, columns predicted) hold CPU tensors.

    Every hyper-parameter is saved as a plain type, so ``load_from_checkpoint`` and
    ``fit(ckpt_path=...)`` work with torch's ``weights_only=True``.
    """

    def __init__(
        self,
        model: str | torch.nn.Module = "small_cnn",
        num_classes: int = 10,
        recipe: dict | Recipe | None = None,
        class_names: list[str] | None = None,
        model_kwargs: dict | None = None,
        channels_last: bool = False,
        epochs: float | None = None,
        compile: bool = False,
    ):
        super().__init__()
        if epochs is not None and not epochs > 0:
            raise ValueError(f"epochs must be positive or None, got {epochs}")
        own = isinstance(model, torch.nn.Module)
        name = type(model).__name__ if own else model
        hparams = dict(
            model=name,
            num_classes=num_classes,
            recipe=recipe,
            class_names=class_names,
            model_kwargs=model_kwargs,
            channels_last=channels_last,
            epochs=epochs,
            compile=compile,
        )
        self.save_hyperparameters({k: to_plain(v, k) for k, v in hparams.items()})
        self.recipe = module_recipe(name, self.hparams.recipe, own)
        self.epochs = epochs
        kwargs = {**self.recipe.model_kwargs, **(model_kwargs or {})}  # e.g. fast_muon's head scale
        self.model = model if own else build_model(model, num_classes, **kwargs)
        # NHWC convolutions: 1.32x faster training of the fast net on a 2-core CPU (runs/benchmarks.json)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        # kept out of the module tree (object.__setattr__), so state_dict names stay the model's
        object.__setattr__(self, "_run_model", torch.compile(self.model) if compile else self.model)
        # separate metric objects per split; plain accuracy is average="micro"
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc_plain = MulticlassAccuracy(num_classes, average="micro")  # without TTA
        self.test_per_class = MulticlassAccuracy(num_classes, average=None)
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        # losses weighted by batch size: the whole set's mean, also when shares differ by an image
        # the training loss's NaN check would read the loss on the host at every step (RunBook
        # stops a run at its first non-finite loss instead)
        self.train_loss = MeanMetric(nan_strategy="disable")
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self._total_steps: int | None = None
        self._restored_total: int | None = None

    @property
    def compiled(self) -> bool:
        """Whether forward runs the model through torch.compile."""
        return self._run_model is not self.model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run_model(x.contiguous(memory_format=self.memory_format))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        part = self.recipe.loss
        return F.cross_entropy(logits, labels, label_smoothing=part.label_smoothing, reduction=part.reduction)

    def on_fit_start(self) -> None:
        """The fast net's whitening filters (and its starting bias), from the first training
        images of the trainer's datamodule, as the scripts set them, unless they are set
        already (``init_whitening``, loaded weights, a resumed checkpoint: ``whitening_set``).
        Warns when the datamodule augments otherwise than the recipe (``augmentation_mismatch``)."""
        from cifar_lightning.core.data import CIFARData, augmentation_mismatch

        data = getattr(self.trainer.datamodule, "data", None)
        if isinstance(data, CIFARData) and (mismatch := augmentation_mismatch(data, self.recipe)):
            warnings.warn(mismatch, stacklevel=2)
        if getattr(self.model, "whitening_set", True):
            return
        from cifar_lightning.core.spec import FAST
        from cifar_lightning.core.whitening import WHITENING_NOT_SET, starting_bias
        from cifar_lightning.models import init_whitening

        data = self.trainer.datamodule
        if not hasattr(data, "train_images"):
            raise ValueError(WHITENING_NOT_SET.format(dm="CIFARDataModule"))
        init_whitening(
            self.model, data.normalize(data.train_images[: FAST["whiten_images"]]), starting_bias(self.recipe)
        )

    def on_train_epoch_start(self) -> None:
        whiten = getattr(self.model, "whiten", None)
        if whiten is not None and self.recipe.whiten_bias_epochs:
            whiten.bias.requires_grad_(self.current_epoch < self.recipe.whiten_bias_epochs)

    def _batches_per_step(self) -> int:
        """Batches behind one optimizer step: processes x accumulated batches (1 without a trainer)."""
        t = self._trainer
        return 1 if t is None else t.world_size * t.accumulate_grad_batches

    def loss_scale(self) -> int:
        """What the training loss is multiplied by before backward: for a summed loss, the
        processes times the accumulated batches (see the class docstring); 1 for a mean."""
        return self._batches_per_step() if self.recipe.loss.summed else 1

    def examples_per_step(self) -> int:
        """Images one optimizer step sees: batch size x processes x accumulated batches."""
        return self.recipe.batch_size * self._batches_per_step()

    def training_step(self, batch, batch_idx):
        images, labels = batch
        logits = self(images)
        loss = self.loss(logits, labels)
        self.train_acc(logits, labels)
        per_example = loss.detach() / len(labels) if self.recipe.loss.summed else loss.detach()
        # the step value averaged over the processes (equal shares: the global batch's mean).
        # Not prog_bar=True: Lightning turns progress-bar values into floats at every batch's
        # end; callbacks.StepLossBar shows it at the steps that log it
        self.log("train/loss_step", per_example, sync_dist=True)
        # one value per image, so the mean is weighted by batch size: nan_strategy="disable"
        # drops `weight` (torchmetrics issue 3434)
        self.train_loss.update(per_example.expand(len(labels)))
        self.log("train/loss_epoch", self.train_loss, on_step=False, on_epoch=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        # the base group's rate (group 0), as in MLX's metrics.csv; BatchNorm biases may have their own
        self.log("lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss * self.loss_scale()

    def validation_step(self, batch, batch_idx):
        images, labels = batch
        logits = self(images)
        self.val_acc(logits, labels)
        self.val_loss.update(F.cross_entropy(logits, labels), weight=len(labels))
        self.log("val/loss", self.val_loss, prog_bar=True)
        self.log("val/acc", self.val_acc, prog_bar=True)

    def test_step(self, batch, batch_idx):
        images, labels = batch
        plain = self(images)
        logits = tta_logits(self, images) if self.recipe.tta else plain
        self.test_acc(logits, labels)
        self.test_acc_plain(plain, labels)
        self.test_per_class.update(logits, labels)
        self.test_confusion.update(logits, labels)
        self.test_loss.update(F.cross_entropy(logits, labels), weight=len(labels))
        self.log("test/loss", self.test_loss)
        self.log("test/acc", self.test_acc)
        if self.recipe.tta:
            self.log("test/acc_no_tta", self.test_acc_plain)

    def on_test_epoch_end(self) -> None:
        # per-class values are vectors: kept as attributes (self.log takes scalars only)
        self.per_class_accuracy = self.test_per_class.compute().cpu()
        self.confusion_matrix = self.test_confusion.compute().cpu()
        self.test_per_class.reset()
        self.test_confusion.reset()

    def predict_step(self, batch, batch_idx):
        """Class probabilities float32 (B, num_classes), each row summing to 1: the softmax of
        the logits of normalised images (B, 3, 32, 32), or of a batch's first element, with
        test-time augmentation when the recipe says so (as ``test_step``). A
        ``BasePredictionWriter`` (``cifar_lightning.predict.CSVPredictionWriter``) writes them."""
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        logits = tta_logits(self, images) if self.recipe.tta else self(images)
        return logits.float().softmax(dim=1)

    def param_groups(self) -> list[dict]:
        """One torch param group per optimiser part of the recipe (``recipes.optimizer_parts``,
        in torch's units for the images of one optimizer step), holding the trainable
        parameters ``recipes.route_parameters`` gives it; parts that own none are left out.
        With the flat SGD fields: the base group, then the BatchNorm biases when they learn
        `bias_lr_scale` times faster with the same per-step decay (lr x weight_decay)."""
        parts = optimizer_parts(self.recipe, self.examples_per_step())
        whiten = getattr(self.model, "whiten", None)
        trainable = {n: p.ndim for n, p in self.model.named_parameters() if p.requires_grad}
        held = optimized_parameters(trainable, self.recipe, whiten is not None and whiten.bias is not None)
        named = [(n, p) for n, p in self.model.named_parameters() if n in held]
        owner = route_parameters(held, parts)
        groups = []
        for i, part in enumerate(parts):
            params = [p for n, p in named if owner[n] == i]
            if not params:
                continue
            group = {"params": params, "lr": part.lr, "weight_decay": part.weight_decay, "part": i}
            if part.kind == "adamw":
                group.update(betas=(part.momentum, part.beta2), eps=part.eps)
            else:
                group.update(momentum=part.momentum, nesterov=part.nesterov)
            if part.kind == "muon":
                group.update(muon=True, ns_steps=part.ns_steps, ns_dtype=part.ns_dtype)
            groups.append(group)
        return groups

    def make_optimizer(self) -> torch.optim.Optimizer:
        """The recipe's optimiser over ``param_groups()``, at each part's peak learning rate:
        ``torch.optim.SGD`` or ``torch.optim.AdamW`` when every part is of that kind,
        ``cifar_lightning.optim.Muon`` (Muon groups beside SGD groups) for Muon."""
        groups = self.param_groups()
        kinds = {optimizer_parts(self.recipe)[g["part"]].kind for g in groups}
        if kinds == {"sgd"}:
            return torch.optim.SGD(groups, lr=groups[0]["lr"])
        if kinds == {"adamw"}:
            return torch.optim.AdamW(groups, lr=groups[0]["lr"])
        if kinds <= {"muon", "sgd"}:
            return Muon(groups)
        raise ValueError(f"optimizers {sorted(kinds)} in one recipe: expected SGD, AdamW, or Muon with SGD")

    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch of the trainer's training loader (the loader is set up if needed)."""
        t = self.trainer
        if not math.isfinite(t.num_training_batches):  # max_epochs=-1: the loader is not set up yet
            t.fit_loop.setup_data()
        return math.ceil(t.num_training_batches / t.accumulate_grad_batches)

    def total_training_steps(self) -> int:
        """Optimizer steps of the whole run, as one process counts them: the trainer's
        ``estimated_stepping_batches``, cut to ``epochs`` when the module was given it.
        Raises ValueError when the trainer sets no bound on the run's length."""
        if self._total_steps is None:
            t = self.trainer
            planned = t.estimated_stepping_batches
            if not math.isfinite(planned):
                raise ValueError(
                    "CIFARClassifier sizes its learning-rate schedule from the run's length: "
                    "give the Trainer max_epochs or max_steps"
                )
            planned = int(planned)
            if self.epochs is not None:
                planned = min(planned, total_steps(self.epochs, self.steps_per_epoch()))
            if planned < 1:
                raise ValueError(f"the trainer plans {planned} optimizer steps: nothing to train")
            self._total_steps = planned
        return self._total_steps

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["schedule_total_steps"] = self._total_steps

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._restored_total = checkpoint.get("schedule_total_steps")

    def on_train_start(self) -> None:
        # a resumed run must keep its schedule: OneCycle's restored state has its own length
        restored = getattr(self, "_restored_total", None)
        if restored is not None and restored != self.total_training_steps():
            raise ValueError(
                f"the checkpoint's learning-rate schedule spans {restored} optimizer steps, but this "
                f"trainer plans {self.total_training_steps()}: resume with the run's own trainer "
                "settings (max_epochs, max_steps, limit_train_batches, accumulation, devices)"
            )

    def on_train_batch_start(self, batch, batch_idx):
        # past the schedule's end (only when the trainer would run longer than `epochs`)
        if self.trainer.global_step >= self.total_training_steps():
            self.trainer.should_stop = True
            return -1  # Lightning: skip the rest of this epoch
        return None

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.trainer.global_step >= self.total_training_steps():
            self.trainer.should_stop = True  # the schedule's end: stop at this batch boundary

    def configure_optimizers(self):
        r = self.recipe
        optimizer = self.make_optimizer()
        self._total_steps = None  # the trainer's plan, read afresh for each fit
        total = self.total_training_steps()
        parts = optimizer_parts(r)
        own_schedules = any(parts[g["part"]].decay_epochs for g in optimizer.param_groups)
        if r.schedule == "onecycle" and not own_schedules:
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer,
                max_lr=[g["lr"] for g in optimizer.param_groups],
                total_steps=total,
                pct_start=r.pct_start,
                anneal_strategy="cos",
                cycle_momentum=cycles_momentum(r) and isinstance(optimizer, torch.optim.SGD),
                base_momentum=r.base_momentum,
                max_momentum=r.max_momentum,
                div_factor=r.div_factor,
                final_div_factor=r.final_div_factor,
            )
        else:  # each group's rate from the neutral schedule, as a factor of its peak
            per_epoch = self.steps_per_epoch() if own_schedules else 0  # only a part's own schedule needs it

            def factor(part):
                return lambda step: part_lr_at(r, part, step, total, per_epoch) / part.lr if part.lr else 0.0

            factors = [factor(parts[g["part"]]) for g in optimizer.param_groups]
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
        # "interval": "step" -- the default ("epoch") would silently stretch the cycle 100-fold
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
