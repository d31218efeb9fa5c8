"""Random draws inside MLX's compiled training step are fresh at every step.

``mx.compile`` freezes the global random key into the graph unless the random state
is a compile input and output; dropout then reuses its first mask at every step.
These tests drive ``MLXTrainer``'s own compiled step (the one ``fit`` runs).
Checked against the planted fault "random state left out of the compiled step's
state" (``lightning.step.TrainingStep._state`` without ``mx.random.state``): the first two tests fail.
"""

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import torch

from cifar_lightning.core.recipes import get_recipe
from cifar_lightning.core.spec import SMALL_CNN
from cifar_mlx_adapter import MLXClassifier, MLXTrainer

P = SMALL_CNN["dropout"]
WIDTH = 20_000  # elements per mask: the keep rate's binomial standard error is sqrt(p (1 - p) / WIDTH) = 0.003


def compiled_step(module, total_steps=10):
    """The trainer's compiled training step for `module`, as MLXTrainer.fit builds it."""
    trainer = MLXTrainer(enable_progress_bar=False, enable_checkpointing=False)
    trainer.total_steps = trainer.steps_per_epoch = total_steps
    module.trainer = trainer
    optimizer = module.configure_optimizers()
    return trainer._compile_step(module, optimizer)


class DropoutProbe(nn.Module):
    """Dropout over a trainable vector of ones: the output is the scaled mask itself."""

    def __init__(self, p: float):
        super().__init__()
        self.ones = mx.ones((WIDTH,))
        self.drop = nn.Dropout(p)
        # the last step's mask, held as model state (frozen, as BatchNorm's statistics are):
        # the compiled step writes it back, so it can be read after each step
        self.mask = mx.zeros((WIDTH,))
        self.freeze(keys=["mask"], recurse=False)


class ProbeClassifier(MLXClassifier):
    def training_step(self, batch, batch_idx):
        out = self.model.drop(self.model.ones)
        self.model.mask = mx.stop_gradient(out)  # the mask this step drew (self.log takes scalars only)
        return (out * 0).sum()


def test_dropout_masks_differ_between_compiled_steps_and_match_torch_keep_rate_and_scale():
    recipe = get_recipe("small_cnn").with_overrides(lr=0.0).to_dict()
    module = ProbeClassifier(DropoutProbe(P), 10, recipe=recipe)
    module.model.train()
    step = compiled_step(module)
    images, labels = mx.zeros((2, 32, 32, 3)), mx.zeros((2,), dtype=mx.int32)
    masks = []
    for _ in range(5):
        step(images, labels)
        masks.append(np.array(module.model.mask))

    torch_out = torch.nn.Dropout(P).train()(torch.ones(WIDTH)).numpy()
    torch_scale = torch_out[torch_out > 0][0]  # torch scales kept units by 1 / (1 - p)
    se = math.sqrt(P * (1 - P) / WIDTH)
    for i, m in enumerate(masks):
        kept = m > 0
        assert abs(kept.mean() - (1 - P)) < 4 * se, kept.mean()
        assert abs(kept.mean() - (torch_out > 0).mean()) < 4 * math.sqrt(2) * se
        np.testing.assert_allclose(m[kept], torch_scale, rtol=1e-6)
        for other in masks[:i]:
            # two independent masks disagree on 2 p (1 - p) of the units (0.375 for p = 0.25)
            assert abs((kept != (other > 0)).mean() - 2 * P * (1 - P)) < 8 * se


def test_small_cnn_loss_changes_between_compiled_steps_at_zero_learning_rate():
    """The default model: same batch, lr 0, so only dropout can change the loss."""
    mx.random.seed(0)
    recipe = get_recipe("small_cnn").with_overrides(lr=0.0).to_dict()
    images = mx.random.normal((8, 32, 32, 3))
    labels = mx.arange(8) % 10
    losses = {}
    for dropout in (P, 0.0):
        module = MLXClassifier("small_cnn", 10, recipe=recipe, model_kwargs={"dropout": dropout})
        module.model.train()
        step = compiled_step(module)
        losses[dropout] = [step(images, labels)[0].item() for _ in range(5)]
    assert len(set(losses[P])) == 5, losses[P]  # a fresh mask every step
    assert len(set(losses[0.0])) == 1, losses[0.0]  # the control: without dropout nothing changes
