"""Same converted weights, same batches: torch and MLX compute the same numbers.

Tolerances: both frameworks compute in float32 with different kernels and
summation orders, so single forwards agree to ~1e-6 relative; a training step
adds one gradient of the same size, so 1e-4 relative holds per tensor. Whole runs
through the scripts are compared in ``test_parity_end_to_end.py``.
"""

import mlx.core as mx
import mlx.nn as mnn
import numpy as np
import pytest
import torch

from cifar_lightning import CIFARClassifier
from cifar_lightning.core.recipes import get_recipe, lr_at, momentum_at
from cifar_mlx_adapter import MLXClassifier, load_weights, mlx_state, torch_to_mlx
from cifar_mlx_adapter.optim import recipe_optimizer
from cifar_mlx_adapter.trainer import hook_logs


def to_mlx(batch):
    """A torch (NCHW images, labels) batch as NHWC MLX arrays."""
    images, labels = batch
    return mx.array(images.permute(0, 2, 3, 1).contiguous().numpy()), mx.array(labels.numpy())


NO_DROPOUT = {"small_cnn": {"dropout": 0.0}}


def twins(name, recipe=None):
    """A torch CIFARClassifier and an MLXClassifier holding the same weights."""
    kwargs = NO_DROPOUT.get(name)
    t = CIFARClassifier(name, 10, recipe=recipe, model_kwargs=kwargs)
    m = MLXClassifier(name, 10, recipe=recipe, model_kwargs=kwargs)
    load_weights(m.model, torch_to_mlx(t.model.state_dict(), m.model))
    return t, m


def batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    images, labels = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)
    return (images, labels), to_mlx((images, labels))


def close(a, b, rel, atol=0.0):
    """max |a - b| within `rel` of a's largest magnitude (plus `atol` for near-zero tensors)."""
    a, b = np.asarray(a), np.asarray(b)
    scale = max(np.abs(a).max(), 1e-8)
    assert np.abs(a - b).max() <= rel * scale + atol, (np.abs(a - b).max(), scale)


@pytest.mark.parametrize("name", ["small_cnn", "resnet18", "fast"])
def test_eval_logits_agree(name):
    t, m = twins(name)
    (x, _), (mx_x, _) = batch(2)
    t.eval()
    m.model.eval()
    with torch.no_grad():
        close(t(x).numpy(), m(mx_x), 1e-4)


@pytest.mark.parametrize("name", ["small_cnn", "resnet18", "fast"])
def test_train_mode_logits_and_running_stats_agree(name):
    t, m = twins(name)
    (x, _), (mx_x, _) = batch(4)
    t.train()
    m.model.train()
    with torch.no_grad():
        close(t(x).numpy(), m(mx_x), 1e-4)
    ours = mlx_state(m.model)
    for key, value in t.model.state_dict().items():
        if key.endswith(("running_mean", "running_var")):
            close(value.numpy(), ours[key], 1e-4)


def torch_step(t, x, y, steps):
    optimizer = t.make_optimizer()
    total = steps
    losses = []
    for step, (bx, by) in enumerate(zip(x, y)):
        for g, scale in zip(optimizer.param_groups, (1.0, t.recipe.bias_lr_scale)):
            g["lr"] = lr_at(t.recipe, step, total) * scale
            g["momentum"] = momentum_at(t.recipe, step, total)
        loss = t.loss(t(bx), by)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def mlx_steps(m, batches, total):
    class T:
        total_steps = steps_per_epoch = total

    def loss(bx, by):
        with hook_logs(m, "training_step"):  # the trainer's part: what the step logs goes somewhere
            return m.training_step((bx, by), 0)

    m.trainer = T()
    optimizer = m.configure_optimizers()
    loss_and_grad = mnn.value_and_grad(m.model, loss)
    losses = []
    for bx, by in batches:
        loss, grads = loss_and_grad(bx, by)
        optimizer.update(m.model, grads)
        mx.eval(m.model.parameters(), optimizer.state)
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", ["small_cnn", "fast", "resnet18"])
def test_one_optimizer_step_gives_the_same_weights(name):
    """One step at a real learning rate (OneCycle's div_factor 1: the first step runs at the
    peak rate, not at 1/25 of it), so a doubled or negated MLX update shows."""
    recipe = get_recipe(name).with_overrides(div_factor=1.0).to_dict()
    t, m = twins(name, recipe)
    before = torch_to_mlx(t.model.state_dict())
    (x, y), mx_batch = batch(2 if name == "resnet18" else 4)
    t.train()
    m.model.train()
    torch_step(t, [x], [y], 1)
    mlx_steps(m, [mx_batch], 1)
    ours = mlx_state(m.model)
    theirs = torch_to_mlx(t.model.state_dict())
    moved = gap = 0.0
    for key in theirs:  # BatchNorm running means of a 2-image batch can be ~1e-8: hence atol
        close(np.array(theirs[key]), np.array(ours[key]), 1e-4, atol=1e-7)
        moved += float(np.sum((np.array(theirs[key]) - np.array(before[key])) ** 2))
        gap += float(np.sum((np.array(theirs[key]) - np.array(ours[key])) ** 2))
    assert moved > 1e4 * gap  # the step moved the weights 100x (in norm) further than MLX is from torch


def test_onecycle_lr_and_momentum_per_step_equal_torch():
    """The MLX optimiser's lr and momentum at every step, final step included, to 1e-6."""
    total = 50
    recipe = get_recipe("resnet18")
    t = CIFARClassifier("small_cnn", 10, recipe=recipe.to_dict())

    class FakeTrainer:
        estimated_stepping_batches = total
        max_epochs = recipe.epochs
        world_size = accumulate_grad_batches = 1

    t._trainer = FakeTrainer()
    config = t.configure_optimizers()
    opt, sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    mopt = recipe_optimizer(recipe, total, total, MLXClassifier("small_cnn", 10).model)
    param = {"w": mx.zeros((1,))}
    for step in range(total):
        new = mopt.apply_gradients({"w": mx.zeros((1,))}, param)  # runs the schedule for this step
        mx.eval(new)
        g = opt.param_groups[0]
        assert float(mopt.learning_rate) == pytest.approx(g["lr"], rel=1e-6)
        assert float(mopt.state["momentum"]) == pytest.approx(g["momentum"], rel=1e-6)
        opt.step()
        sched.step()
