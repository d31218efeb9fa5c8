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
from conftest import quiet_mlx_trainer, write_cifar
from mlx.utils import tree_flatten

from cifar_lightning.core.data import CIFARData
from cifar_lightning.core.datasets import PARTIAL_DATA_ENV
from cifar_lightning.core.recipes import get_recipe
from cifar_mlx_adapter import MLXClassifier
from cifar_mlx_adapter import MLXTrainer as LifecycleTrainer
from cifar_mlx_adapter.trainer import Callback

STEPS = 3


def small_cnn_steps(data_dir, trainer_kind: str, precision: str, root, dtype=mx.float32) -> dict[str, np.ndarray]:
    """SmallCNN (dropout off) after STEPS steps of batch 40 from seed 0's weights and batches,
    as float32 numpy; the optimiser's state must be in `dtype`, as the weights."""
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
    assert state and all(v.dtype == dtype for v in state), {v.dtype for v in state}  # as Lightning keeps it
    weights = dict(tree_flatten(module.model.parameters()))
    assert all(v.dtype == dtype for v in weights.values() if mx.issubdtype(v.dtype, mx.floating))
    return {k: np.array(v.astype(mx.float32)) for k, v in weights.items()}


@pytest.fixture(scope="module")
def float32_steps(tmp_path_factory) -> dict[str, np.ndarray]:
    """The 32-true weights every half-precision run here is set against, made once (on the
    cifar10_dir fixture's images: write_cifar draws the same folder from its seed)."""
    root = tmp_path_factory.mktemp("float32")
    data = write_cifar(root / "data", "cifar10", n_train=200, n_test=50)
    with pytest.MonkeyPatch.context() as mp:  # as conftest's own_training_lock, which runs per test
        mp.setenv("CIFAR_LOCK_FILE", str(root / "training.lock"))
        mp.setenv(PARTIAL_DATA_ENV, "1")
        return small_cnn_steps(data, "lifecycle", "32-true", root / "run")


def test_the_lifecycles_bf16_mixed_takes_the_general_trainers_steps(cifar10_dir, tmp_path, float32_steps):
    lifecycle = small_cnn_steps(cifar10_dir, "lifecycle", "bf16-mixed", tmp_path / "a")
    general = small_cnn_steps(cifar10_dir, "general", "bf16-mixed", tmp_path / "b")
    full = float32_steps
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


@pytest.mark.parametrize("value", ["64-true", "half", "8-mixed"])
def test_fit_mlx_refuses_a_precision_its_trainer_lacks_in_one_line(value, cifar10_dir, tmp_path, capsys):
    from cifar_lightning.cli.fit_mlx import main

    with pytest.raises(SystemExit) as e:
        main(fit_mlx_flags(cifar10_dir, tmp_path / "run", "--precision", value))
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    assert f"--precision {value}" in err and "32-true, bf16-mixed" in err, err
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before anything trained


@pytest.mark.parametrize(
    "precision, dtype", [("16-mixed", mx.float32), ("bf16-true", mx.bfloat16), ("16-true", mx.float16)]
)
def test_each_precision_keeps_its_weights_in_lightnings_dtype_and_takes_the_general_trainers_steps(
    precision, dtype, cifar10_dir, tmp_path, float32_steps
):
    """16-mixed keeps float32 weights and optimiser state (Lightning's MixedPrecision), the
    *-true settings half ones (HalfPrecision converts the module); the lifecycle's step is the
    general trainer's, so both trainers end on the same weights (measured: bit for bit), and
    those are not float32's (a step computed in float32 would give them)."""
    lifecycle = small_cnn_steps(cifar10_dir, "lifecycle", precision, tmp_path / "a", dtype)
    general = small_cnn_steps(cifar10_dir, "general", precision, tmp_path / "b", dtype)
    full = float32_steps
    for name in lifecycle:
        np.testing.assert_allclose(lifecycle[name], general[name], rtol=1e-6, atol=1e-7, err_msg=name)
        assert np.isfinite(lifecycle[name]).all(), name
    w, w32 = lifecycle["conv1.weight"], full["conv1.weight"]
    assert 1e-5 < np.abs(w - w32).max() / np.abs(w32).max() < 0.1


class CutAfterFirstEpoch(Callback):
    """Ctrl-C as the second epoch starts: the first epoch's last.npz is the run's checkpoint."""

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == 1:
            raise KeyboardInterrupt


def two_epochs(data_dir, precision: str, root, callbacks=(), ckpt=None, model: str = "small_cnn"):
    """(trainer, module) after the lifecycle trainer fits `model` (SmallCNN with dropout off) for
    2 epochs of 2 steps of 20 images in `precision` from seed 0, a train/loss row at every
    step; `ckpt` resumes. Ctrl-C from `callbacks` propagates (KeyboardInterrupt)."""
    recipe = get_recipe(model).with_overrides(batch_size=20, epochs=2)
    data = CIFARData("cifar10", data_dir, batch_size=20, seed=0, train_subset=40, augmentation=recipe.augmentation)
    mx.random.seed(0)
    kwargs = {"dropout": 0.0} if model == "small_cnn" else None
    module = MLXClassifier(model, 10, recipe=recipe.to_dict(), model_kwargs=kwargs)
    trainer = LifecycleTrainer(
        max_epochs=2,
        precision=precision,
        default_root_dir=root,
        enable_progress_bar=False,
        limit_val_batches=0,
        log_every_n_steps=1,
        callbacks=callbacks,
    )
    trainer.fit(module, data, ckpt_path=ckpt)
    return trainer, module


def weights_of(module) -> dict[str, mx.array]:
    return dict(tree_flatten(module.model.parameters()))


def test_a_16_mixed_run_keeps_its_loss_scale_and_resumes_to_the_uninterrupted_end(cifar10_dir, tmp_path):
    """Each checkpoint of a 16-mixed run holds torch.amp.GradScaler.state_dict()'s keys; a run
    resumed from its first epoch's checkpoint (2 steps of 20 images an epoch) takes the scale
    and the growth tracker back and ends on the uninterrupted run's scale, tracker and
    weights, bit for bit."""
    import json as _json

    whole, module = two_epochs(cifar10_dir, "16-mixed", tmp_path / "whole")
    want = {k: np.array(v) for k, v in weights_of(module).items()}
    with pytest.raises(KeyboardInterrupt):
        two_epochs(cifar10_dir, "16-mixed", tmp_path / "cut", callbacks=(CutAfterFirstEpoch(),))
    checkpoint = tmp_path / "cut" / "checkpoints" / "last.npz"
    with np.load(checkpoint) as z:
        saved = _json.loads(str(z["meta"]))["loss_scaler"]
    assert set(saved) == {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"}
    # not a new scaler's (65536, 0): both clean steps count towards growth (measured; the loss is
    # computed in float32, as autocast computes cross_entropy, so no gradient overflows here)
    assert (saved["scale"], saved["_growth_tracker"]) == (2.0**16, 2), saved
    resumed, module = two_epochs(cifar10_dir, "16-mixed", tmp_path / "cut", ckpt=checkpoint)
    assert resumed._scaler.state_dict() == whole._scaler.state_dict()
    for name, value in weights_of(module).items():
        np.testing.assert_array_equal(np.array(value), want[name], err_msg=name)


@pytest.mark.parametrize("model", ["small_cnn", "fast"])
def test_a_bf16_true_run_resumes_in_bfloat16_to_the_uninterrupted_end_and_averages_its_losses_in_float32(
    model, cifar10_dir, tmp_path
):
    """bf16-true: every weight is bfloat16 (the fast net's whitening filters, set from the data
    after the module was converted, too, as torch copies them into its half parameters); a
    checkpoint keeps the bfloat16 weights and optimiser state as float32 (numpy has no
    bfloat16; exact), and a resumed run puts exactly those back in bfloat16 (the optimiser's
    float32 scalars, the fast recipe's constant momentum 0.85 among them, stay float32: in
    bfloat16 it is 0.8515625) and ends on the uninterrupted run's weights and state, bit for
    bit. Its epoch loss is the float32 mean of the steps' losses (each logged, all of 20
    images): summed in bfloat16 it would be off by ~1e-2 (measured: 1.64 against 1.6449)."""
    whole, module = two_epochs(cifar10_dir, "bf16-true", tmp_path / "whole", model=model)
    want = weights_of(module)
    assert all(v.dtype == mx.bfloat16 for v in want.values() if mx.issubdtype(v.dtype, mx.floating))
    want_state = dict(tree_flatten(whole.optimizer.state))
    with pytest.raises(KeyboardInterrupt):
        two_epochs(cifar10_dir, "bf16-true", tmp_path / "cut", callbacks=(CutAfterFirstEpoch(),), model=model)
    resumed, module = two_epochs(
        cifar10_dir, "bf16-true", tmp_path / "cut", ckpt=tmp_path / "cut" / "checkpoints" / "last.npz", model=model
    )
    got_state = dict(tree_flatten(resumed.optimizer.state))
    assert any(v.ndim and v.dtype == mx.bfloat16 for v in got_state.values())
    assert got_state.keys() == want_state.keys()
    for name, value in [*weights_of(module).items(), *got_state.items()]:
        ref = want[name] if name in want else want_state[name]
        assert value.dtype == ref.dtype, (name, value.dtype, ref.dtype)
        np.testing.assert_array_equal(np.array(value.astype(mx.float32)), np.array(ref.astype(mx.float32)), name)
    steps = [float(r["train/loss_step"]) for r in whole.metrics_rows if "train/loss_step" in r and r["epoch"] == 1]
    assert len(steps) == 2
    assert float(whole.callback_metrics["train/loss_epoch"]) == pytest.approx(
        np.mean(steps, dtype=np.float64), rel=1e-6
    )


@pytest.mark.parametrize("framework", ["torch", "mlx"])
def test_fit_mlx_runs_16_mixed_on_the_cpu_as_bf16_mixed_as_lightning_does(framework, cifar10_dir, tmp_path, capsys):
    """Lightning's Trainer on a CPU trains "16-mixed" as "bf16-mixed" (torch's CPU autocast has
    no float16); fit_mlx.py on MLX's CPU does the same (MLX's CPU float16 sums overflow:
    BatchNorm's statistics of a 50-image batch become inf), and both scripts say so in the
    same warning line and name what they train in on their first line and in run.json
    (fit.py's first line said "16-mixed" beside Lightning's own warning)."""
    import lightning as L

    from cifar_lightning.cli.fit import main as fit_main
    from cifar_lightning.cli.fit_mlx import main as fit_mlx_main

    assert L.Trainer(accelerator="cpu", precision="16-mixed", logger=False).precision == "bf16-mixed"
    capsys.readouterr()
    out = tmp_path / "run"
    flags = fit_mlx_flags(cifar10_dir, out, "--precision", "16-mixed")
    if framework == "torch":
        record = fit_main([f for f in flags if f != "--cpu"] + ["--accelerator", "cpu"])
    else:
        record = fit_mlx_main(flags)
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "16-mixed" in line]
    assert warnings == ["warning: --precision 16-mixed on the CPU runs as bf16-mixed, as Lightning runs it there"], (
        captured.err
    )
    assert record["numerics"]["precision"] == "bf16-mixed"
    first = [line for line in captured.out.splitlines() if line.startswith("training ")][0]
    assert first.endswith(f"on cpu in bf16-mixed, into {out}"), first


def test_fit_mlx_refuses_16_true_on_the_cpu_in_one_line(cifar10_dir, tmp_path, capsys):
    from cifar_lightning.cli.fit_mlx import main

    with pytest.raises(SystemExit) as e:
        main(fit_mlx_flags(cifar10_dir, tmp_path / "run", "--precision", "16-true"))
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: --precision 16-true on the CPU") and "bf16-true" in err, err
    assert not (tmp_path / "run").exists()  # refused before any folder was made


@pytest.mark.parametrize("framework", ["torch", "mlx"])
def test_a_run_resumed_in_another_precision_is_refused_naming_it(framework, cifar10_dir, tmp_path, capsys):
    """The precision shapes training as the other settings do: a checkpoint's run resumes only
    in its own (the loss scale of a 16-mixed run, half weights of a *-true run), in both
    frameworks."""
    from cifar_lightning.cli.fit import main as fit_main
    from cifar_lightning.cli.fit_mlx import main as fit_mlx_main

    flags = fit_mlx_flags(cifar10_dir, tmp_path / "run", "--precision", "bf16-mixed")
    if framework == "torch":
        main = fit_main
        flags = [f for f in flags if f != "--cpu"] + ["--accelerator", "cpu"]
    else:
        main = fit_mlx_main
    main(flags)
    (tmp_path / "run" / "run.json").unlink()  # as a run cut by Ctrl-C after its last epoch leaves it
    last = tmp_path / "run" / "checkpoints" / ("last.npz" if framework == "mlx" else "last.ckpt")
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([f if f != "bf16-mixed" else "32-true" for f in flags] + ["--resume", str(last)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    assert "--precision bf16-mixed there, 32-true here" in err, err
