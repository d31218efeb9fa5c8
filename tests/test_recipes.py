"""Recipes and schedules. The fast schedule is checked against airbench94.py's published
formula (github.com/KellerJordan/cifar10-airbench: ``np.interp(steps, [0, int(0.23 *
total), total], [0.2, 1, 0.07])``, read by ``LambdaLR`` once per step), OneCycle against
torch's own ``OneCycleLR``: references independent of ``core.recipes``.

Faults these tests were checked against: the fast schedule's warm-up moved to 46% and its
end factor to 0.2 (the airbench test fails; the torch comparison of the fast schedule
cannot see it, both sides use the same function); a float product that crosses an integer.
"""

import numpy as np
import pytest

from cifar_lightning import CIFARClassifier, get_recipe
from cifar_lightning.core.recipes import OptimizerPart, lr_at, momentum_at, sgd_args


def torch_schedule(module: CIFARClassifier, total: int):
    """(lr, momentum) per step from the module's own configure_optimizers."""

    class FakeTrainer:
        estimated_stepping_batches = total
        max_epochs = module.recipe.epochs
        world_size = accumulate_grad_batches = 1

    module._trainer = FakeTrainer()  # what configure_optimizers reads
    config = module.configure_optimizers()
    assert config["lr_scheduler"]["interval"] == "step"
    opt, sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    out = []
    for _ in range(total):
        g = opt.param_groups[0]
        out.append((g["lr"], g["momentum"]))
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("model,total", [("resnet18", 97), ("small_cnn", 10), ("fast", 476)])
def test_neutral_schedule_matches_torch_at_every_step(model, total):
    module = CIFARClassifier(model, 10)
    recipe = module.recipe
    for step, (lr, mom) in enumerate(torch_schedule(module, total)):
        assert lr == pytest.approx(lr_at(recipe, step, total), rel=1e-9)
        assert mom == pytest.approx(momentum_at(recipe, step, total), rel=1e-9)


@pytest.mark.parametrize("total", [476, 97, 10])
def test_fast_schedule_is_airbench94s_published_one(total):
    """At every step, the factor of the peak lr equals airbench94's np.interp schedule; at the
    named steps of a 9.9-epoch run (476 steps of 1,024) it is 0.2 at step 0, 1 at step 109
    (int(0.23 x 476)) and 0.07 at step 476."""
    recipe = get_recipe("fast")
    peak = sgd_args(recipe).lr
    published = np.interp(np.arange(total + 1), [0, int(0.23 * total), total], [0.2, 1, 0.07])
    ours = np.array([lr_at(recipe, step, total) / peak for step in range(total + 1)])
    np.testing.assert_allclose(ours, published, rtol=1e-12, atol=1e-12)
    if total == 476:
        assert (ours[0], ours[109], ours[476]) == pytest.approx((0.2, 1.0, 0.07), abs=1e-12)


def test_onecycle_shape():
    r = get_recipe("resnet18")
    total = 1000
    assert lr_at(r, 0, total) == pytest.approx(0.1 / 25)
    assert lr_at(r, 299, total) == pytest.approx(0.1)
    assert lr_at(r, total - 1, total) == pytest.approx(0.1 / 25 / 1e4)
    assert momentum_at(r, 299, total) == pytest.approx(0.85)


def test_fast_recipe_groups():
    module = CIFARClassifier("fast", 10)
    groups = module.param_groups()
    assert len(groups) == 2
    base, biases = groups
    assert biases["lr"] == pytest.approx(64 * base["lr"])
    # every weight shrinks by the same ~0.2% per step
    assert base["lr"] * base["weight_decay"] == pytest.approx(biases["lr"] * biases["weight_decay"])
    assert base["lr"] * base["weight_decay"] == pytest.approx(0.001996, rel=1e-3)
    assert all(p.requires_grad for g in groups for p in g["params"])


def test_overrides_and_unknown_model():
    assert get_recipe("resnet18").with_overrides(lr=0.2, epochs=None).lr == 0.2
    with pytest.raises(ValueError, match="unknown model"):
        get_recipe("nope")


def test_total_steps_is_not_pushed_over_an_integer_by_float_error():
    from cifar_lightning.core.recipes import total_steps

    assert 45 * 2.2 / 3 > 33  # what the product of floats gives
    assert total_steps(2.2, 15) == 33 and total_steps(2.2, 45 / 3) == 33
    assert total_steps(1.5, 4) == 6 and total_steps(0.01, 10) == 1


def test_airbench_units_scale_decay_with_batch_size_and_keep_the_step_per_example():
    """The fast recipe keeps airbench's units: lr per 1024 examples of summed loss and
    weight decay per 1024 examples. A larger batch keeps torch's lr (the summed loss grows
    with the batch) and decays proportionally more per step; momentum rescales both."""
    from cifar_lightning.core.recipes import sgd_args

    base = get_recipe("fast")
    a, b = sgd_args(base), sgd_args(base.with_overrides(batch_size=512))
    assert b.lr == a.lr
    assert b.lr * b.weight_decay == pytest.approx(a.lr * a.weight_decay / 2)
    kilostep = 1024 * (1 + 1 / (1 - 0.85))
    assert a.lr == pytest.approx(11.5 / kilostep) and a.lr * a.weight_decay == pytest.approx(0.0153 * 1024 / kilostep)
    c = sgd_args(base.with_overrides(momentum=0.9))
    assert c.lr == pytest.approx(11.5 / (1024 * (1 + 1 / 0.1)))
    small = get_recipe("small_cnn")  # torch units: the numbers as given, whatever the batch
    assert sgd_args(small.with_overrides(batch_size=64)).lr == small.lr == 0.05


def test_recipe_parts_are_checked_when_the_recipe_is_made():
    """A bad augmentation or loss field is refused when the recipe is made, naming the field,
    not at the first batch of a run."""
    from dataclasses import replace

    base = get_recipe("small_cnn")
    for field, value in [
        ("flip", "sometimes"),
        ("pad_mode", "wrap"),
        ("crop_padding", 40),
        ("cutout", 50),
        ("cutout", 8.5),
        ("label_smoothing", 1.0),
        ("label_smoothing", "0.1"),
        ("loss_reduction", "max"),
        ("schedule", "cosine"),
        ("units", "foo"),
        ("whiten_bias_init", "normal"),
    ]:
        for make in (
            lambda: replace(base, **{field: value}),
            lambda: type(base)(**{**base.to_dict(), field: value}),
        ):  # as a record is read back
            with pytest.raises(ValueError) as raised:
                make()
            message = str(raised.value)
            assert message.startswith(f"{field} must") and repr(value) in message and "\n" not in message, message
    part = OptimizerPart("sgd", "head", lr=0.1)  # one role as a bare string
    assert part.roles == ("head",)


def test_the_whitening_bias_freeze_and_its_decay_length_must_agree():
    """fast_muon's whitening bias trains until its own schedule reaches 0 (decay_epochs),
    then freezes (whiten_bias_epochs): two numbers for one length, so a recipe where they
    differ is refused in one line naming both. Checked against: the check removed (the
    bias then froze at epoch 3 while its rate still pointed to epoch 5)."""
    from dataclasses import replace

    muon = get_recipe("fast", "muon")
    with pytest.raises(
        ValueError,
        match=r"^the whitening bias's part decays over 5 epochs but whiten_bias_epochs "
        r"is 3; expected the same number",
    ):
        replace(
            muon, optimizers=[replace(p, decay_epochs=5) if "whiten_bias" in p.roles else p for p in muon.optimizers]
        )
    assert (
        replace(
            muon,
            whiten_bias_epochs=4,
            optimizers=[replace(p, decay_epochs=4) if p.decay_epochs else p for p in muon.optimizers],
        ).whiten_bias_epochs
        == 4
    )


@pytest.mark.parametrize("model", ["small_cnn", "fast"])
def test_both_scripts_build_their_data_with_the_recipes_augmentation(model, tmp_path):
    """fit.py's DataModule and fit_mlx.py's CIFARData take the recipe's augmentation part:
    airbench94's (translate 2 by reflection, flip alternating by epoch) for the fast net,
    torchvision's usual (pad 4 with zeros, random flip) for SmallCNN."""

    from cifar_lightning.backend import make_datamodule
    from cifar_lightning.core.draws import Augmentation
    from cifar_lightning.core.run import RunConfig
    from cifar_mlx_adapter.backend import make_data

    recipe = get_recipe(model)
    expected = {
        "small_cnn": Augmentation(4, "constant", "random", 0),
        "fast": Augmentation(2, "reflect", "alternating", 0),
    }
    assert recipe.augmentation == expected[model]
    config = RunConfig(dataset="cifar10", data_dir=str(tmp_path), download=False)
    assert make_datamodule(config, recipe).augmentation == expected[model]
    assert make_data(config, recipe).augmentation == expected[model]


def test_loss_part_is_the_published_one():
    """The fast net's loss is airbench94's (label smoothing 0.2 on a summed loss), SmallCNN's a
    plain mean; both modules compute it as torch's own cross-entropy does."""
    import torch
    import torch.nn.functional as F

    assert (get_recipe("fast").loss.label_smoothing, get_recipe("fast").loss.summed) == (0.2, True)
    assert (get_recipe("small_cnn").loss.label_smoothing, get_recipe("small_cnn").loss.summed) == (0.0, False)
    logits, labels = torch.randn(6, 10, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 3, 4, 9])
    module = CIFARClassifier("fast", 10)
    reference = F.cross_entropy(logits, labels, label_smoothing=0.2, reduction="sum")
    assert torch.allclose(module.loss(logits, labels), reference)
