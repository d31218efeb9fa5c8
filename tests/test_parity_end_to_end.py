"""scripts/fit.py (lightning.Trainer.fit) and scripts/fit_mlx.py (MLXTrainer.fit) run the same
computation: from the same weights, on the same DataModule batches, through each framework's
whole training path (compiled MLX step, Lightning's loop and schedulers, callbacks, checkpoints,
test with TTA), the final weights, BatchNorm statistics, per-step losses and test logits agree.

The noise floor is PyTorch against itself: the same run in the other memory format
(``--no-channels-last`` against the CPU's default NHWC: other convolution kernels, other
float32 summation orders). MLX must stay within `FLOOR_FACTOR`
times that floor (or `ABS_FLOOR` where the floor is below float32 resolution), and training
must have moved the weights more than 10x that bound, so a wrong update cannot hide in it.
Measured here (2-core Linux CPU), floor / MLX, relative:

    fast recipe, 16 steps:        weights 3.4e-5 / 5.1e-5, losses 4.8e-6 / 4.0e-6, logits 9.7e-5 / 2.0e-4
    SmallCNN no dropout, 6 steps: weights 8.7e-4 / 1.1e-3, losses 1.1e-3 / 9.3e-4, logits 6.4e-3 / 6.3e-3

so MLX sits at 0.8-2.1x the floor; `FLOOR_FACTOR` = 5 leaves room for other machines, and
training moves the weights by 0.3-0.45, over 50x the bound. SmallCNN runs at batch 100: at
smaller batches its max-pool ties make torch against itself drift by 10-30% (chaotic), which
would leave no margin. The runs cross every event of their recipe: the fast one weight
averaging (steps 5, 10, 15), the whitening-bias freeze after epoch 3 (the MLX step is
recompiled), the end of the linear schedule and test-time augmentation; SmallCNN
OneCycle's warm-up, peak and annealing to its final rate (and momentum cycling).

Checked against planted faults, each made `test_*_end_to_end` fail: MLX update doubled
(``SGD.apply_single`` returns ``parameter - 2 * lr * update``), update sign flipped, weight
averaging skipped in MLX (``LookaheadAveraging.on_train_batch_end`` returns at once), the
whitening bias never frozen in MLX. With the float32 Muon run shared by the two Muon tests
(`muon_float32_run`), MLX's Muon update doubled (``Muon.apply_single``) still fails
`test_muon_recipe_end_to_end_float32` (step 1: loss gap 1.9e-3, envelope 1.0e-3); the
bfloat16 test, which checks final weights and logits only, does not catch it (its floor
run is bit for bit the one it made before).
"""

import mlx.core as mx
import numpy as np
import pytest
import torch
from conftest import real_cifar10_subset

from cifar_lightning import CIFARClassifier, CIFARDataModule
from cifar_lightning.cli.fit import main as fit_main
from cifar_lightning.cli.fit_mlx import main as fit_mlx_main
from cifar_lightning.core.datasets import PARTIAL_DATA_ENV
from cifar_lightning.core.run.files import read_metrics_csv
from cifar_lightning.module import tta_logits
from cifar_lightning.weights import load_torch_state
from cifar_mlx_adapter import MLXClassifier, load_file


def to_mlx(batch):
    """A torch (NCHW images, labels) batch as NHWC MLX arrays."""
    images, labels = batch
    return mx.array(images.permute(0, 2, 3, 1).contiguous().numpy()), mx.array(labels.numpy())


FLOOR_FACTOR = 5
ABS_FLOOR = 1e-5  # relative differences below this are float32 rounding whatever the floor


def rel_diff(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))


def global_rel_diff(a: dict, b: dict) -> float:
    """||a - b|| / ||a|| over every tensor of two state dicts at once."""
    diff = sum(float(np.sum((a[k].astype(np.float64) - b[k]) ** 2)) for k in a)
    return (diff / sum(float(np.sum(a[k].astype(np.float64) ** 2)) for k in a)) ** 0.5


def three_runs(data, tmp_path, *flags, floor=("--no-channels-last",), floor_dir=None):
    """The PyTorch run (NHWC, the CPU's default), PyTorch with the `floor` flags (default
    --no-channels-last) from its initial weights (the noise floor), and MLX from the same
    initial weights. Returns their run folders. `floor_dir`: that floor run made already
    (by `muon_float32_run`), so it is not run again."""
    common = ["--data-dir", str(data), "--no-download", "--log-every-n-steps", "1", *flags]
    torch_dir, mlx_dir = tmp_path / "torch", tmp_path / "mlx"
    fit_main([*common, "--accelerator", "cpu", "--output-dir", str(torch_dir)])
    initial = str(torch_dir / "checkpoints" / "initial.pt")
    if floor_dir is None:
        floor_dir = tmp_path / "torch_cl"
        fit_main([*common, "--accelerator", "cpu", *floor, "--weights", initial, "--output-dir", str(floor_dir)])
    fit_mlx_main([*common, "--cpu", "--weights", initial, "--output-dir", str(mlx_dir)])
    return torch_dir, floor_dir, mlx_dir


def final_state(run_dir) -> dict[str, np.ndarray]:
    """Final weights and BatchNorm statistics in torch layout, from either framework's file."""
    name = "final.npz" if (run_dir / "checkpoints" / "final.npz").exists() else "final.ckpt"
    state = load_torch_state(run_dir / "checkpoints" / name)
    return {k: v.numpy() for k, v in state.items() if not k.endswith("num_batches_tracked")}


def final_test_logits(run_dir, model, data, dropout=None, recipe=None) -> np.ndarray:
    """Test-set logits of a run's final weights, computed in the run's own framework
    (`recipe`: a ``Recipe`` whose architecture options apply, e.g. fast_muon's head scale)."""
    kwargs = {"dropout": dropout} if dropout is not None else None
    recipe = recipe.to_dict() if recipe is not None else None
    dm = CIFARDataModule("cifar10", data, batch_size=50, download=False)
    dm.setup()
    if (run_dir / "checkpoints" / "final.npz").exists():
        m = MLXClassifier(model, 10, recipe=recipe, model_kwargs=kwargs)
        load_file(m.model, run_dir / "checkpoints" / "final.npz")
        m.model.eval()
        return np.concatenate([np.array(m.test_step(to_mlx(b), i)) for i, b in enumerate(dm.test_dataloader())])
    t = CIFARClassifier(model, 10, recipe=recipe, model_kwargs=kwargs)
    t.model.load_state_dict(load_torch_state(run_dir / "checkpoints" / "final.ckpt"))
    t.eval()
    with torch.no_grad():
        f = tta_logits if t.recipe.tta else (lambda module, x: module(x))
        return np.concatenate([f(t, b[0]).numpy() for b in dm.test_dataloader()])


def assert_parity(torch_dir, floor_dir, mlx_dir, model, data, dropout=None, recipe=None):
    ref, floor, ours = final_state(torch_dir), final_state(floor_dir), final_state(mlx_dir)
    assert set(ours) == set(ref)
    # one relative distance over all weights and statistics together: per tensor, near-zero
    # BatchNorm biases and running means would make any relative measure meaningless
    weight_floor, weight_gap = global_rel_diff(ref, floor), global_rel_diff(ref, ours)
    bound = max(FLOOR_FACTOR * weight_floor, ABS_FLOOR)
    print(f"weights: floor {weight_floor:.2e}, MLX {weight_gap:.2e}")
    assert weight_gap <= bound, (
        f"MLX's final weights differ from PyTorch's by {weight_gap:.2e}, floor {weight_floor:.2e}"
    )

    # the initial weights were not simply kept: training moved them far more than the gap
    initial = {k: v.numpy() for k, v in load_torch_state(torch_dir / "checkpoints" / "initial.pt").items()}
    moved = global_rel_diff(ref, initial)
    print(f"training moved the weights by {moved:.2e}")
    assert moved > 10 * bound  # so a wrong update cannot hide inside the tolerance

    rows = {
        name: read_metrics_csv(d / "metrics.csv")
        for name, d in (("ref", torch_dir), ("floor", floor_dir), ("mlx", mlx_dir))
    }
    steps = {name: [int(r["step"]) for r in rs if r.get("train/loss_step")] for name, rs in rows.items()}
    assert steps["mlx"] == steps["ref"] == list(range(len(steps["ref"])))
    series = {
        name: np.array([[float(r["train/loss_step"]), float(r["lr"])] for r in rs if r.get("train/loss_step")])
        for name, rs in rows.items()
    }
    np.testing.assert_allclose(series["mlx"][:, 1], series["ref"][:, 1], rtol=1e-6)  # the base group's lr
    loss_floor = rel_diff(series["ref"][:, 0], series["floor"][:, 0])
    print(f"losses: floor {loss_floor:.2e}, MLX {rel_diff(series['ref'][:, 0], series['mlx'][:, 0]):.2e}")
    assert rel_diff(series["ref"][:, 0], series["mlx"][:, 0]) <= max(FLOOR_FACTOR * loss_floor, ABS_FLOOR)

    logits_ref, logits_floor = (final_test_logits(d, model, data, dropout, recipe) for d in (torch_dir, floor_dir))
    logits_mlx = final_test_logits(mlx_dir, model, data, dropout, recipe)
    logit_floor = rel_diff(logits_ref, logits_floor)
    print(f"logits: floor {logit_floor:.2e}, MLX {rel_diff(logits_ref, logits_mlx):.2e}")
    assert rel_diff(logits_ref, logits_mlx) <= max(FLOOR_FACTOR * logit_floor, ABS_FLOOR)
    return weight_gap, weight_floor


@pytest.mark.slow
def test_fast_recipe_end_to_end(cifar10_dir, tmp_path):
    dirs = three_runs(cifar10_dir, tmp_path, "--model", "fast", "--epochs", "4", "--batch-size", "50")
    assert_parity(*dirs, "fast", cifar10_dir)


@pytest.mark.slow
def test_small_cnn_recipe_end_to_end_without_dropout(cifar10_dir, tmp_path):
    dirs = three_runs(
        cifar10_dir, tmp_path, "--model", "small_cnn", "--dropout", "0", "--epochs", "3", "--batch-size", "100"
    )
    assert_parity(*dirs, "small_cnn", cifar10_dir, dropout=0.0)


@pytest.mark.slow
def test_both_frameworks_keep_the_same_books(cifar10_dir, tmp_path):
    """Fractional epochs give one step count (2.2 epochs of 15 batches: 33 steps; the product
    of 3 epochs' 45 batches and 2.2 / 3 is 33.00000000000001 in floating point, which once
    gave torch 34);
    metrics.csv numbers steps from 0 in both, and `lr` is the base group's rate (the fast
    recipe's BatchNorm biases train at 64x it), as the neutral schedule gives it."""
    from cifar_lightning.core.recipes import get_recipe, lr_at

    common = [
        "--data-dir",
        str(cifar10_dir),
        "--no-download",
        "--log-every-n-steps",
        "1",
        "--model",
        "fast",
        "--epochs",
        "2.2",
        "--batch-size",
        "13",
        "--no-tta",
    ]
    records = [
        fit_main([*common, "--accelerator", "cpu", "--output-dir", str(tmp_path / "t")]),
        fit_mlx_main([*common, "--cpu", "--output-dir", str(tmp_path / "m")]),
    ]
    assert [r["hyperparameters"]["total_steps"] for r in records] == [33, 33]  # 200 images: 15 batches of 13
    recipe = get_recipe("fast").with_overrides(batch_size=13, epochs=2.2)
    expected_lr = [lr_at(recipe, s, 33) for s in range(33)]
    for d in ("t", "m"):
        rows = [r for r in read_metrics_csv(tmp_path / d / "metrics.csv") if r.get("train/loss_step")]
        assert [int(r["step"]) for r in rows] == list(range(33)), d
        np.testing.assert_allclose([float(r["lr"]) for r in rows], expected_lr, rtol=1e-6, err_msg=d)
        epoch_rows = [r for r in read_metrics_csv(tmp_path / d / "metrics.csv") if r.get("val/acc")]
        assert [int(r["step"]) for r in epoch_rows] == [14, 29, 32], d  # each epoch's last step


@pytest.mark.slow
def test_adamw_small_cnn_end_to_end_without_dropout(cifar10_dir, tmp_path):
    """AdamW under SmallCNN's OneCycle (warm-up, peak, annealing), bias correction from step 1."""
    dirs = three_runs(
        cifar10_dir,
        tmp_path,
        "--model",
        "small_cnn",
        "--optimizer",
        "adamw",
        "--dropout",
        "0",
        "--epochs",
        "3",
        "--batch-size",
        "100",
    )
    assert_parity(*dirs, "small_cnn", cifar10_dir, dropout=0.0)


def loss_series(run_dir) -> np.ndarray:
    """(steps, 2): each optimizer step's training loss and base-group lr from metrics.csv."""
    rows = [r for r in read_metrics_csv(run_dir / "metrics.csv") if r.get("train/loss_step")]
    return np.array([[float(r["train/loss_step"]), float(r["lr"])] for r in rows])


def assert_stepwise_parity(torch_dir, floor_dir, mlx_dir, data, recipe, per_step: bool = True) -> None:
    """Parity for a recipe whose runs are chaotic: Muon's Newton-Schulz maps every singular
    value of the momentum toward 1, so a small direction of the gradient (rounding, here)
    is amplified ~40x (the slope 3.4445 at 0, three times): two runs that differ in the
    last bit drift apart ~10x per step and end as far apart as two seeds. Measured on 200
    real images, batch 50, 16 steps: PyTorch against itself (NCHW against NHWC) differs by
    2e-5 in the loss of step 1, 1e-3 by step 3 and 16% in the final weights; MLX sits
    inside the same envelope. So each step's loss gap must stay within `FLOOR_FACTOR` times
    the largest floor seen up to the next step (1e-5 at least): where the floor is still
    tiny (the first steps) a wrong update shows at once, and later steps may drift as the
    floor does. The next step's floor is in the envelope because one floor run is one draw
    of where rounding first takes hold, and the drift grows ~10x a step: with the whitening
    bias at airbench94_muon's non-zero start, seeds 0-3 put MLX at up to 7.6x the floor of
    its own step above 1e-5 (seed 0, step 2: 1.3e-4 against 1.7e-5) and at most 2.8x the
    floor up to the next step. Final weights and test logits: within `FLOOR_FACTOR` times
    their floors."""
    ref, floor, ours = (loss_series(d) for d in (torch_dir, floor_dir, mlx_dir))
    assert len(ours) == len(ref) == len(floor)
    np.testing.assert_allclose(ours[:, 1], ref[:, 1], rtol=1e-6)  # the base group's lr, every step
    floor_gap = np.abs(floor[:, 0] - ref[:, 0]) / ref[:, 0]
    mlx_gap = np.abs(ours[:, 0] - ref[:, 0]) / ref[:, 0]
    seen = np.maximum.accumulate(floor_gap)
    up_to_next = np.append(seen[1:], seen[-1])
    envelope = FLOOR_FACTOR * np.maximum(up_to_next, ABS_FLOOR)
    print(
        "loss gaps per step, floor:",
        np.array2string(floor_gap, precision=1),
        "MLX:",
        np.array2string(mlx_gap, precision=1),
    )
    bad = np.flatnonzero(mlx_gap > envelope)
    assert not (per_step and len(bad)), (
        f"step {bad[0]}: MLX's loss differs by {mlx_gap[bad[0]]:.1e}, envelope {envelope[bad[0]]:.1e}"
    )
    states = [final_state(d) for d in (torch_dir, floor_dir, mlx_dir)]
    weight_floor, weight_gap = global_rel_diff(states[0], states[1]), global_rel_diff(states[0], states[2])
    print(f"weights: floor {weight_floor:.2e}, MLX {weight_gap:.2e}")
    assert weight_gap <= FLOOR_FACTOR * weight_floor
    logits = [final_test_logits(d, "fast", data, recipe=recipe) for d in (torch_dir, floor_dir, mlx_dir)]
    logit_floor, logit_gap = rel_diff(logits[0], logits[1]), rel_diff(logits[0], logits[2])
    print(f"logits: floor {logit_floor:.2e}, MLX {logit_gap:.2e}")
    assert logit_gap <= FLOOR_FACTOR * logit_floor


MUON = ["--model", "fast", "--optimizer", "muon", "--epochs", "4", "--batch-size", "50"]


@pytest.fixture(scope="module")
def muon_float32_run(tmp_path_factory):
    """(real data, run folder) of fit.py's fast Muon recipe with float32 Newton-Schulz from
    seed 0's initial weights, made once for both Muon tests: the float32 test's reference
    run and the bfloat16 test's floor run are this computation (the same flags; the
    bfloat16 run's initial.pt is seed 0's, checked there, and a run from those weights
    through --weights ends bit for bit as the run that drew them: final weights, every
    step's loss and lr, checked once by running both)."""
    root = tmp_path_factory.mktemp("muon")
    with pytest.MonkeyPatch.context() as mp:  # as conftest's own_training_lock, which runs per test
        mp.setenv("CIFAR_LOCK_FILE", str(root / "training.lock"))
        mp.setenv(PARTIAL_DATA_ENV, "1")
        data = real_cifar10_subset(root / "real")
        run = root / "torch"
        fit_main(
            ["--data-dir", str(data), "--no-download", "--log-every-n-steps", "1", *MUON, "--muon-dtype", "float32"]
            + ["--accelerator", "cpu", "--output-dir", str(run)]
        )
    return data, run


@pytest.mark.slow
def test_muon_recipe_end_to_end_float32(tmp_path, muon_float32_run):
    """The fast Muon recipe with float32 Newton-Schulz, 4 epochs of 4 steps on 200 real
    images: the whitening bias's own schedule reaches 0 and the bias freezes after epoch 3
    (the MLX step is recompiled), the filters' rate falls to 0 at the end, TTA at test.
    The reference run is `muon_float32_run`; the floor and MLX runs start from its weights."""
    from cifar_lightning.core.recipes import get_recipe

    data, torch_dir = muon_float32_run
    common = ["--data-dir", str(data), "--no-download", "--log-every-n-steps", "1", *MUON, "--muon-dtype", "float32"]
    initial = str(torch_dir / "checkpoints" / "initial.pt")
    floor_dir, mlx_dir = tmp_path / "torch_cl", tmp_path / "mlx"
    fit_main(
        [*common, "--accelerator", "cpu", "--no-channels-last", "--weights", initial, "--output-dir", str(floor_dir)]
    )
    fit_mlx_main([*common, "--cpu", "--weights", initial, "--output-dir", str(mlx_dir)])
    assert_stepwise_parity(torch_dir, floor_dir, mlx_dir, data, get_recipe("fast", "muon"))


@pytest.mark.slow
def test_muon_recipe_end_to_end_bfloat16(tmp_path, muon_float32_run):
    """As published, bfloat16 Newton-Schulz. Its floor is PyTorch against itself with float32
    Newton-Schulz: how far bfloat16 rounding alone moves a run. MLX rounds differently
    (another matmul), so its run is another draw of that rounding: the final weights and
    test logits must lie within `FLOOR_FACTOR` times the floor (measured: weights 0.16
    floor, 0.14 MLX). Per step one floor run is too noisy a yardstick in bfloat16 (step 1:
    floor 1.4e-6, MLX 8.5e-5, then both 1e-4 to 4e-3), so the steps are checked in float32
    above, where a wrong update shows.
    The floor run (float32 from this run's initial weights) is `muon_float32_run`: its
    initial weights must be this run's."""
    from cifar_lightning.core.recipes import get_recipe

    data, float32_dir = muon_float32_run
    dirs = three_runs(data, tmp_path, *MUON, floor=("--muon-dtype", "float32"), floor_dir=float32_dir)
    ours, shared = (torch.load(d / "checkpoints" / "initial.pt", weights_only=True) for d in (dirs[0], float32_dir))
    assert ours.keys() == shared.keys() and all(torch.equal(ours[k], shared[k]) for k in ours)
    assert_stepwise_parity(*dirs, data, get_recipe("fast", "muon"), per_step=False)
