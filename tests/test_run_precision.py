"""``--precision bf16-mixed`` in fit_mlx.py and compare.py: the run lifecycle's MLX trainer
computes its training step in bfloat16 from float32 weights, as the general MLXTrainer's
``precision="bf16-mixed"`` does (Lightning's meaning), records the precision in run.json,
and refuses the settings it lacks in one line (compare.py's flag: tests/test_compare.py).

Planted faults, each seen to fail a test here: the lifecycle's step computing in float32
under bf16-mixed (its weights then equal the 32-true run's), the float32 weights left as
half copies after the step and MLXBackend recording "32-true" whatever it trained in.
"""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest
from conftest import quiet_mlx_trainer
from mlx.utils import tree_flatten

from cifar_lightning.core.data import CIFARData
from cifar_lightning.core.recipes import get_recipe
from cifar_mlx_adapter import MLXClassifier
from cifar_mlx_adapter import MLXTrainer as LifecycleTrainer

STEPS = 3


def small_cnn_steps(data_dir, trainer_kind: str, precision: str, root) -> dict[str, np.ndarray]:
    """SmallCNN (dropout off) after STEPS steps of batch 40 from seed 0's weights and batches."""
    recipe = get_recipe("small_cnn").with_overrides(batch_size=40, epochs=1)
    data = CIFARData(
        "cifar10", data_dir, batch_size=40, seed=0, train_subset=40 * STEPS, augmentation=recipe.augmentation
    )
    mx.random.seed(0)
    module = MLXClassifier("small_cnn", 10, recipe=recipe.to_dict(), model_kwargs={"dropout": 0.0})
    if trainer_kind == "lifecycle":
        trainer = LifecycleTrainer(
            max_epochs=1, precision=precision, default_root_dir=root, enable_progress_bar=False, limit_val_batches=0
        )
        trainer.fit(module, data)
        optimizer = trainer.optimizer
    else:
        trainer = quiet_mlx_trainer(max_epochs=1, precision=precision, default_root_dir=root)
        trainer.fit(module, datamodule=data)
        optimizer = trainer.optimizers[0]
    assert trainer.global_step == STEPS
    state = [v for _, v in tree_flatten(optimizer.state) if isinstance(v, mx.array) and v.ndim]
    assert state and all(v.dtype == mx.float32 for v in state)  # the optimiser's state stays float32
    return {k: np.array(v) for k, v in tree_flatten(module.model.parameters())}


def test_the_lifecycles_bf16_mixed_takes_the_general_trainers_steps(cifar10_dir, tmp_path):
    lifecycle = small_cnn_steps(cifar10_dir, "lifecycle", "bf16-mixed", tmp_path / "a")
    general = small_cnn_steps(cifar10_dir, "general", "bf16-mixed", tmp_path / "b")
    full = small_cnn_steps(cifar10_dir, "lifecycle", "32-true", tmp_path / "c")
    for weights in (lifecycle, general):  # the weights stay float32 under both trainers
        assert all(v.dtype == np.float32 for v in weights.values())
    # one computation under both trainers (measured: bit for bit on this CPU)
    for name in lifecycle:
        np.testing.assert_allclose(lifecycle[name], general[name], rtol=1e-6, atol=1e-7, err_msg=name)
    # ... and not float32's: bfloat16 keeps 8 bits of mantissa, so three steps move the
    # weights apart by far more than float32 rounding (measured: 0.021 of the first
    # convolution's largest weight; float32 runs of the two trainers agree bit for bit), yet
    # not far (the same training)
    w, w32 = lifecycle["conv1.weight"], full["conv1.weight"]
    gap = np.abs(w - w32).max() / np.abs(w32).max()
    assert 1e-5 < gap < 0.1, gap


def fit_mlx_flags(data_dir, out, *extra: str) -> list[str]:
    """A one-epoch fit_mlx.py run of 2 steps on the CPU, without validation."""
    short = "--cpu --lock-file none --epochs 1 --batch-size 50 --train-subset 100 --limit-val-batches 0".split()
    return ["--data-dir", str(data_dir), "--no-download", *short, "--output-dir", str(out), *extra]


def test_fit_mlx_records_its_precision_and_its_checkpoint_keeps_float32_weights(cifar10_dir, tmp_path, capsys):
    from cifar_lightning.cli.fit_mlx import main

    out = tmp_path / "run"
    record = main(fit_mlx_flags(cifar10_dir, out, "--precision", "bf16-mixed"))
    first = capsys.readouterr().out.splitlines()[0]
    assert first.endswith(f"on cpu in bf16-mixed, into {out}"), first  # said on screen, not only in run.json
    assert record["numerics"]["precision"] == "bf16-mixed"
    assert json.loads((out / "run.json").read_text())["numerics"]["precision"] == "bf16-mixed"
    assert "--precision bf16-mixed" in record["command"]
    with np.load(out / "checkpoints" / "last.npz") as z:
        weights = [z[k] for k in z.files if k.startswith("model.") and z[k].dtype.kind == "f"]
    assert weights and all(w.dtype == np.float32 for w in weights)


@pytest.mark.parametrize("value", ["16-mixed", "bf16-true", "64-true", "half"])
def test_fit_mlx_refuses_a_precision_its_trainer_lacks_in_one_line(value, cifar10_dir, tmp_path, capsys):
    from cifar_lightning.cli.fit_mlx import main

    with pytest.raises(SystemExit) as e:
        main(fit_mlx_flags(cifar10_dir, tmp_path / "run", "--precision", value))
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    assert f"--precision {value}" in err and "32-true, bf16-mixed" in err, err
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before anything trained
