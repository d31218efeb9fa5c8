"""cifar_mlx_adapter.lightning.precision against torch's GradScaler and Lightning's own
precision parsing and plugins (not against remembered values)."""

import warnings
from functools import partial
from typing import get_args

import mlx.core as mx
import numpy as np
import pytest
import torch
from lightning.fabric.connector import _convert_precision_to_unified_args
from lightning.fabric.plugins.precision.precision import (
    _PRECISION_INPUT_INT,
    _PRECISION_INPUT_STR,
    _PRECISION_INPUT_STR_ALIAS,
)
from lightning.pytorch.plugins.precision import HalfPrecision, MixedPrecision
from lightning.pytorch.plugins.precision import Precision as LightningPrecision
from mlx.utils import tree_flatten

from cifar_mlx_adapter.lightning.precision import (
    PRECISION_NAMES,
    DynamicLossScaler,
    cast_floating,
    parse_precision,
)

LIGHTNING_VALUES = (
    get_args(_PRECISION_INPUT_STR) + get_args(_PRECISION_INPUT_INT) + get_args(_PRECISION_INPUT_STR_ALIAS)
)

# Steps whose gradients are not finite, and how: inf or NaN, in the first or the second
# parameter, so that found_inf must look at both kinds and at every leaf. growth_interval=3
# makes the clean runs between them grow the scale (runs of 2, 3, 4, 7 and more).
GROWTH_INTERVAL = 3
BAD_STEPS = {
    2: ("w", np.inf),
    5: ("b", np.nan),
    6: ("w", np.nan),
    10: ("b", -np.inf),
    17: ("b", np.nan),
    25: ("w", np.inf),
}
N_STEPS = 30
LR = 0.25  # with dyadic inputs every update is exact in float32: both sides can be compared bit for bit


def inputs(step):
    """The per-step multipliers of w (3 values) and b (2 values); the loss is sum(w*xw) + sum(b*xb),
    so the gradients are exactly xw and xb (times the scale)."""
    xw = np.array([1.0, -2.0, 0.5], dtype=np.float32) * (1 + step % 3)
    xb = np.array([0.25, 1.0], dtype=np.float32) * (1 + step % 2)
    if step in BAD_STEPS:
        leaf, value = BAD_STEPS[step]
        (xw if leaf == "w" else xb)[step % 2] = value
    return xw, xb


W0 = np.array([0.5, -1.0, 2.0], dtype=np.float32)
B0 = np.array([1.0, 0.0], dtype=np.float32)


def run_torch(init_scale=2.0**16, growth_interval=GROWTH_INTERVAL, n_steps=N_STEPS):
    w = torch.nn.Parameter(torch.tensor(W0))
    b = torch.nn.Parameter(torch.tensor(B0))
    opt = torch.optim.SGD([w, b], lr=LR)
    scaler = torch.amp.GradScaler(device="cpu", init_scale=init_scale, growth_interval=growth_interval)
    assert scaler.is_enabled()  # GradScaler on the CPU is real, not a disabled no-op
    record = []
    for step in range(n_steps):
        xw, xb = (torch.tensor(x) for x in inputs(step))
        opt.zero_grad()
        loss = (w * xw).sum() + (b * xb).sum()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        record.append(
            (scaler.get_scale(), scaler._get_growth_tracker(), w.detach().numpy().copy(), b.detach().numpy().copy())
        )
    return record, scaler.state_dict()


def run_mlx(scaler, n_steps=N_STEPS):
    params = {"w": mx.array(W0), "b": mx.array(B0)}
    state = [params, scaler.state]

    def loss_fn(p, xw, xb):
        return scaler.scale((p["w"] * xw).sum() + (p["b"] * xb).sum())

    @partial(mx.compile, inputs=state, outputs=state)
    def step(xw, xb):
        grads, found_inf = scaler.unscale(mx.grad(loss_fn)(params, xw, xb))
        new = {k: params[k] - LR * grads[k] for k in params}
        new = scaler.select(found_inf, new, params)
        for k in params:  # in place: mx.compile captures this dict's arrays
            params[k] = new[k]
        scaler.update(found_inf)
        return found_inf

    record = []
    for s in range(n_steps):
        xw, xb = (mx.array(x) for x in inputs(s))
        found_inf = step(xw, xb)
        mx.eval(found_inf, state)
        record.append(
            (
                scaler.state["scale"].item(),
                scaler.state["growth_tracker"].item(),
                np.array(params["w"]),
                np.array(params["b"]),
                found_inf.item(),
            )
        )
    return record


def test_loss_scale_and_skipped_steps_match_torch_grad_scaler_step_by_step():
    expected, torch_state = run_torch()
    scaler = DynamicLossScaler(growth_interval=GROWTH_INTERVAL)
    got = run_mlx(scaler)
    skipped = []
    prev_w = W0
    for step, ((t_scale, t_tracker, t_w, t_b), (m_scale, m_tracker, m_w, m_b, m_inf)) in enumerate(zip(expected, got)):
        assert m_scale == t_scale, f"step {step}: scale {m_scale} != torch {t_scale}"
        assert m_tracker == t_tracker, f"step {step}: growth tracker {m_tracker} != torch {t_tracker}"
        np.testing.assert_array_equal(m_w, t_w, err_msg=f"step {step}: w")
        np.testing.assert_array_equal(m_b, t_b, err_msg=f"step {step}: b")
        if np.array_equal(t_w, prev_w):
            skipped.append(step)
        assert m_inf == (step in BAD_STEPS), f"step {step}: found_inf {m_inf}"
        prev_w = t_w
    # not vacuous: torch skipped exactly the planted steps, and the scale both grew and backed off
    assert skipped == sorted(BAD_STEPS)
    scales = [e[0] for e in expected]
    steps = list(zip(scales, scales[1:]))
    assert any(b > a for a, b in steps) and any(b < a for a, b in steps), scales
    # the checkpoint holds what Lightning's (torch's GradScaler.state_dict()) holds, same types
    ours = scaler.state_dict()
    assert ours == torch_state
    assert {k: type(v) for k, v in ours.items()} == {k: type(v) for k, v in torch_state.items()}


@pytest.mark.parametrize(
    "init_scale, growth_factor, backoff_factor, growth_interval",
    [(2.0**126, 2.0, 0.5, 1), (2.0**-120, 4.0, 0.25, 2), (1.0, 1.5, 0.75, 1)],
)
def test_update_matches_torch_amp_update_scale_kernel(init_scale, growth_factor, backoff_factor, growth_interval):
    """torch._amp_update_scale_ (the kernel GradScaler.update calls) against update(), compiled,
    including a scale at float32's top (torch: do not grow past fp32 bounds to inf) and bottom."""
    pattern = [False, False, False, True, False, True, True, False, False, False, False]
    t_scale = torch.full((), init_scale, dtype=torch.float32)
    t_tracker = torch.zeros((), dtype=torch.int32)
    scaler = DynamicLossScaler(init_scale, growth_factor, backoff_factor, growth_interval)

    @partial(mx.compile, inputs=scaler.state, outputs=scaler.state)
    def update(found_inf):
        scaler.update(found_inf)
        return found_inf

    for i, bad in enumerate(pattern):
        torch._amp_update_scale_(
            t_scale, t_tracker, torch.tensor(float(bad)), growth_factor, backoff_factor, growth_interval
        )
        update(mx.array(bad))
        mx.eval(scaler.state)
        assert scaler.state["scale"].item() == t_scale.item(), f"update {i}"
        assert scaler.state["growth_tracker"].item() == t_tracker.item(), f"update {i}"
        assert scaler.state["scale"].dtype == mx.float32 and scaler.state["growth_tracker"].dtype == mx.int32


def test_load_state_dict_reaches_an_already_compiled_step_and_round_trips_torch():
    _, torch_state = run_torch(n_steps=7)
    scaler = DynamicLossScaler()
    read = mx.compile(lambda: scaler.state["scale"] * 1, inputs=scaler.state, outputs=scaler.state)
    assert read().item() == 2.0**16
    scaler.load_state_dict(torch_state)
    assert read().item() == torch_state["scale"]
    assert scaler.state_dict() == torch_state
    with pytest.raises(RuntimeError, match="empty"):
        scaler.load_state_dict({})


def test_unscale_keeps_dtypes_and_skips_non_floating_leaves():
    scaler = DynamicLossScaler(init_scale=4.0)
    grads = {"a": mx.array([8.0, 4.0]), "h": [mx.array([2.0], dtype=mx.bfloat16)], "i": mx.array([3], dtype=mx.int32)}
    out, found_inf = scaler.unscale(grads)
    assert not found_inf.item() and found_inf.dtype == mx.bool_
    assert out["a"].tolist() == [2.0, 1.0] and out["h"][0].dtype == mx.bfloat16 and out["h"][0].item() == 0.5
    assert out["i"].dtype == mx.int32 and out["i"].tolist() == [3]
    with pytest.raises(ValueError, match="FP16"):
        scaler.unscale({"a": mx.array([1.0], dtype=mx.float16)})
    assert scaler.scale(mx.array(2.0, dtype=mx.bfloat16)).dtype == mx.bfloat16


def test_bad_factors_raise_as_torch_refuses_them():
    with pytest.raises(ValueError, match="growth_factor"):
        DynamicLossScaler(growth_factor=1.0)
    with pytest.raises(ValueError, match="backoff_factor"):
        DynamicLossScaler(backoff_factor=1.0)


def lightning_plugin(name):
    """Lightning's plugin for `name`, as accelerator_connector._check_and_init_precision builds it."""
    if name in ("16-true", "bf16-true"):
        return HalfPrecision(name)
    if name == "32-true":
        return LightningPrecision()
    return MixedPrecision(name, device="cpu")


def as_mx(dtype: torch.dtype):
    return getattr(mx, str(dtype).removeprefix("torch."))


@pytest.mark.parametrize("value", LIGHTNING_VALUES, ids=repr)
def test_parse_precision_agrees_with_lightning_on_every_name_and_alias(value):
    with warnings.catch_warnings(record=True) as lightning_warned:
        warnings.simplefilter("always")
        canonical = _convert_precision_to_unified_args(value)
    if canonical not in PRECISION_NAMES:  # 64-true and transformer-engine*: valid there, refused here
        with pytest.raises(ValueError) as err:
            parse_precision(value)
        message = str(err.value)
        assert "\n" not in message and repr(value) in message and "not supported" in message
        assert all(repr(n) in message for n in PRECISION_NAMES)
        return
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        p = parse_precision(value)
    assert p.name == canonical
    assert [(w.category, str(w.message)) for w in warned] == [(w.category, str(w.message)) for w in lightning_warned]
    # dtypes and the scaler from Lightning's own plugin for that name
    plugin = lightning_plugin(canonical)
    if isinstance(plugin, HalfPrecision):
        assert p.param_dtype == p.compute_dtype == as_mx(plugin._desired_input_dtype)
    elif isinstance(plugin, MixedPrecision):
        assert p.param_dtype == mx.float32  # MixedPrecision leaves the module in float32
        assert p.compute_dtype == as_mx(plugin.autocast_context_manager().fast_dtype)
    else:
        assert p.param_dtype == p.compute_dtype == mx.float32
    assert p.scales_loss == (getattr(plugin, "scaler", None) is not None)
    with pytest.raises(Exception):
        p.name = "other"  # frozen


@pytest.mark.parametrize("value", ["mixed", "32-mixed", "fp16", 8, "", "bf16-mixed ", True, 16.0, [16]], ids=repr)
def test_a_bad_value_is_one_line_naming_it_and_the_accepted_names(value):
    with pytest.raises(ValueError) as err:
        parse_precision(value)
    message = str(err.value)
    assert "\n" not in message and repr(value) in message
    assert all(repr(n) in message for n in PRECISION_NAMES)
    if not isinstance(value, (float, list)):  # Lightning rejects these too (16.0 slips through its `in`)
        with pytest.raises(ValueError):
            _convert_precision_to_unified_args(value)


def test_none_is_lightnings_default_32_true():
    assert _convert_precision_to_unified_args(None) is None  # the connector then defaults to "32-true"
    assert parse_precision(None).name == "32-true"


def test_cast_floating_casts_floats_and_leaves_ints_bools_and_python_values_alone():
    tree = {
        "w": mx.array([1.5, 2.0]),
        "nested": [mx.array([3.0], dtype=mx.float16), (mx.array([7], dtype=mx.int32), mx.array([1], dtype=mx.uint8))],
        "mask": mx.array([True, False]),
        "steps": 3,
    }
    out = cast_floating(tree, mx.bfloat16)
    assert out["w"].dtype == mx.bfloat16 and out["w"].tolist() == [1.5, 2.0]
    assert out["nested"][0].dtype == mx.bfloat16
    assert out["nested"][1][0].dtype == mx.int32 and out["nested"][1][0].tolist() == [7]
    assert out["nested"][1][1].dtype == mx.uint8 and out["mask"].dtype == mx.bool_
    assert out["steps"] == 3


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "bf16-true"])
def test_evaluation_steps_compute_in_the_dtype_lightnings_plugins_give_them(precision, tmp_path):
    """validation_step's and predict_step's logits have the dtype L.Trainer's give them at
    each precision (MixedPrecision autocasts those steps, HalfPrecision converts the module
    and the batch), under both MLX trainers; a mixed run's weights are float32 after."""
    import lightning as L
    import mlx.nn as mnn

    from cifar_mlx_adapter.lightning import MLXModule, MLXTrainer

    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    y = np.arange(8) % 3

    class TorchNet(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.fc, self.seen = torch.nn.Linear(4, 3), []

        def training_step(self, batch, batch_idx):
            return torch.nn.functional.cross_entropy(self.fc(batch[0]), batch[1])

        def validation_step(self, batch, batch_idx):
            self.seen.append(str(self.fc(batch[0]).dtype).removeprefix("torch."))

        def predict_step(self, batch, batch_idx):
            self.seen.append(str(self.fc(batch[0]).dtype).removeprefix("torch."))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class MLXNet(MLXModule):
        def __init__(self):
            super().__init__()
            self.fc, self.seen = mnn.Linear(4, 3), []

        def training_step(self, batch, batch_idx):
            return mnn.losses.cross_entropy(self.fc(batch[0]), batch[1], reduction="mean")

        def validation_step(self, batch, batch_idx):
            self.seen.append(str(self.fc(batch[0]).dtype).removeprefix("mlx.core."))

        def predict_step(self, batch, batch_idx):
            self.seen.append(str(self.fc(batch[0]).dtype).removeprefix("mlx.core."))

        def configure_optimizers(self):
            import mlx.optimizers as optim

            return optim.SGD(learning_rate=0.1)

    flags = dict(max_steps=1, num_sanity_val_steps=0, logger=False, enable_checkpointing=False)
    flags |= dict(enable_progress_bar=False, enable_model_summary=False, precision=precision)
    torch_batches = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=8
    )
    torch_net = TorchNet()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = L.Trainer(accelerator="cpu", default_root_dir=tmp_path, **flags)
        trainer.fit(torch_net, torch_batches, torch_batches)
        trainer.predict(torch_net, torch_batches)
    mlx_net = MLXNet()
    trainer = MLXTrainer(default_root_dir=tmp_path, **flags)
    trainer.fit(mlx_net, [(x, y)], [(x, y)])
    trainer.predict(mlx_net, [(x, y)])
    assert mlx_net.seen == torch_net.seen == [torch_net.seen[0]] * 2
    assert torch_net.seen[0] == ("float32" if precision == "32-true" else "bfloat16")
    weights = "bfloat16" if precision == "bf16-true" else "float32"
    assert {str(v.dtype).removeprefix("mlx.core.") for _, v in tree_flatten(mlx_net.parameters())} == {weights}


@pytest.mark.parametrize("model", ["small_cnn", "fast"])
def test_the_classifiers_loss_of_half_logits_is_autocasts_float32_cross_entropy(model):
    """MLXClassifier's loss of bfloat16 logits equals torch.autocast's cross_entropy of the same
    logits (an op autocast runs in float32) with the recipe's smoothing and reduction: float32,
    not a loss rounded to bfloat16."""
    from cifar_mlx_adapter import MLXClassifier

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(16, 10)).astype(np.float32) * 3
    labels = rng.integers(0, 10, size=16)
    module = MLXClassifier(model, 10)
    part = module.recipe.loss
    ours = module.loss(mx.array(logits).astype(mx.bfloat16), mx.array(labels))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        theirs = torch.nn.functional.cross_entropy(
            torch.from_numpy(logits).bfloat16(),
            torch.from_numpy(labels),
            label_smoothing=part.label_smoothing,
            reduction=part.reduction,
        )
    assert ours.dtype == mx.float32 and theirs.dtype == torch.float32
    np.testing.assert_allclose(float(ours.item()), theirs.item(), rtol=1e-6)
