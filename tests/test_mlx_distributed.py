"""MLXTrainer across 2 processes (mx.distributed, ring backend on 127.0.0.1), against one process.

The ranks are started as ``mlx.launch`` starts them (MLX_RANK, a hostfile), by
tests/mlx_rank.py, so each rank's exit status is its own (mlx.launch exits 0 when a rank fails).
"""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import mlx.core as mx
import mlx.nn as nn
import mlx_rank
import numpy as np
import pytest
from conftest import write_cifar
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from cifar_mlx_adapter import MLXTrainer
from cifar_mlx_adapter.data import MLXData
from cifar_mlx_adapter.optim import recipe_optimizer
from cifar_mlx_adapter.weights import mlx_state

BATCH = 20  # images per process per step; 200 training images: 5 steps an epoch


def one_process_union(spec: dict, world: int = 2, reverse_halves: bool = False) -> dict[str, np.ndarray]:
    """The weights after one process trains on the union of the `world` ranks' batches,
    written from the definitions rather than from MLXTrainer: each step takes the
    one-process batch of world x BATCH images (the same images, in the same order, as the
    ranks' batches together: rank r's are every world-th, from the r-th), computes each
    rank's share's gradient on its own (BatchNorm normalises per process; the running
    statistics kept are rank 0's), and steps with their sum for a summed loss (the step of
    the sum over every image) or their mean for a mean loss (the mean over every image).
    `reverse_halves` feeds each share's images in reverse order: the same sums, added in
    another order (one process's own float noise)."""
    data, module = mlx_rank.build(spec, BATCH * world)
    model = module.model
    loader = MLXData(data).loader("train")
    total = len(loader) * int(module.recipe.epochs)
    trainer = SimpleNamespace(world_size=1, total_steps=total, steps_per_epoch=len(loader), current_epoch=0)
    module.trainer = trainer
    optimizer = recipe_optimizer(module.recipe, total, len(loader), model)  # examples per step: world x BATCH
    summed = module.recipe.loss_reduction == "sum"

    def loss_fn(images, labels):
        return module.loss(model(images), labels)

    grad_fn = nn.value_and_grad(model, loss_fn)
    stats = [k for k, _ in tree_flatten(model.parameters()) if "running" in k]
    for epoch in range(int(module.recipe.epochs)):
        trainer.current_epoch = epoch
        module.on_train_epoch_start()
        grad_fn = nn.value_and_grad(model, loss_fn)
        loader.sampler.set_epoch(epoch)
        for images, labels in loader:
            grads = None
            before = {k: v for k, v in tree_flatten(model.parameters()) if k in stats}
            for r in reversed(range(world)):  # rank 0 last: its BatchNorm statistics are the ones kept
                x, y = images[r::world], labels[r::world]
                if reverse_halves:
                    x, y = x[::-1], y[::-1]
                _, g = grad_fn(x, y)
                grads = g if grads is None else tree_map(lambda a, b: a + b, grads, g)
                if r > 0:  # undo this share's update of the running statistics
                    model.update(tree_unflatten(list(before.items())))
            if not summed:
                grads = tree_map(lambda a: a / world, grads)
            optimizer.update(model, grads)
            mx.eval(model.parameters(), optimizer.state)
    return {k: np.array(v) for k, v in mlx_state(model).items()}


def initial_weights(spec: dict, path: Path) -> None:
    """The starting weights every run of the test loads (so initialisation is no variable)."""
    _, module = mlx_rank.build({**spec, "weights": None}, BATCH)
    np.savez(path, **{k: np.array(v) for k, v in mlx_state(module.model).items()})


def relative_gap(a: dict, b: dict) -> float:
    """||a - b|| / ||a|| over every array together (weights and BatchNorm statistics): a
    parameter that only rounding moves (a convolution's bias before a BatchNorm, whose
    gradient is 0 in exact arithmetic) must not set the scale."""
    diff = sum(float(np.sum((a[k].astype(np.float64) - b[k]) ** 2)) for k in a)
    return (diff / sum(float(np.sum(a[k].astype(np.float64) ** 2)) for k in a)) ** 0.5


CASES = {
    # the fast recipe: summed loss, label smoothing, two SGD groups, whitening bias trained (epoch 0);
    # weight averaging off, so the reference need not repeat it
    "fast": {"model": "fast", "recipe": {"epochs": 1, "average_every": 0, "tta": True}},
    # SmallCNN: mean loss, OneCycle with cycled momentum; dropout off (each rank would draw its masks)
    "small_cnn": {"model": "small_cnn", "recipe": {"epochs": 1}, "model_kwargs": {"dropout": 0.0}},
}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c == "fast" else c for c in sorted(CASES)])
def test_two_processes_take_the_step_of_one_process_on_the_union_and_evaluate_every_image_once(case, tmp_path):
    """2 ranks x 5 steps of BATCH images end with the weights of one process stepping on the
    union of their batches (gradients averaged; a summed loss rescaled by the processes),
    identical on both ranks; then their test figures on 25 images (13 on rank 0, 12 on
    rank 1, in batches of 4 with a partial last one) equal one process's evaluation of
    the same weights."""
    data = write_cifar(tmp_path / "data", "cifar10", n_train=200, n_test=25)
    spec = {
        **CASES[case],
        "data": str(data),
        "eval_batch_size": 4,
        "out": str(tmp_path),
        "batch_size": BATCH,
        "weights": str(tmp_path / "initial.npz"),
    }
    initial_weights(spec, tmp_path / "initial.npz")
    codes, errors = mlx_rank.wait_ranks(mlx_rank.start_ranks(["steps", json.dumps(spec)], tmp_path), tmp_path)
    assert codes == [0, 0], errors
    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(2)]
    figures = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert figures[0]["world"] == 2 and figures[0]["steps"] == 5  # 200 images / (2 x 20) a step
    for k in ranks[0]:  # the same steps on both ranks, and rank 0's BatchNorm statistics: identical
        np.testing.assert_array_equal(ranks[0][k], ranks[1][k], err_msg=k)

    union = one_process_union(spec)
    noise = relative_gap(union, one_process_union(spec, reverse_halves=True))
    moved = relative_gap(union, dict(np.load(tmp_path / "initial.npz")))
    gap = relative_gap(union, ranks[0])
    print(f"{case}: 2 processes vs the union {gap:.1e}; one process's noise {noise:.1e}; training moved {moved:.1e}")
    # The tolerance is one process's own float noise, measured here on the same run: the
    # union step with each share's images added in another order. Measured on this CPU
    # (relative to the weights' norm): fast 3e-5, small_cnn 1e-3, of weights that training
    # moved by 0.36 and 0.25; the 2-process run equalled the union bit for bit (gap 0).
    assert noise < moved / 10, (noise, moved)
    assert gap <= 4 * max(noise, float(np.finfo(np.float32).eps)), (gap, noise)

    # the same weights (rank 0's, BatchNorm statistics included), evaluated by one process
    _, module = mlx_rank.build({**spec, "weights": str(tmp_path / "rank0.npz")}, BATCH)
    alone = MLXTrainer(enable_progress_bar=False, default_root_dir=tmp_path / "one")
    one = alone.test(module, mlx_rank.build(spec, BATCH)[0], verbose=False)
    one_val = alone.validate(module, mlx_rank.build(spec, BATCH)[0], verbose=False)
    # The ranks' logits may differ from one process's in their last float32 bit: measured on a
    # 2-core AVX2 AMD EPYC with OpenBLAS 0.3.29, 6e-10 to 1.7e-9 relative in the mean losses
    # (small_cnn and fast; within 1e-12 on the AVX-512 Xeon of earlier runs, OpenBLAS 0.3.31).
    # So both losses are held to float32's resolution (2^-23 relative). Each image counted once
    # is checked exactly by the accuracies and the confusion matrices; an image missed or
    # counted twice would move a loss far beyond that bound.
    for figure in figures:  # every rank returns the whole set's figures
        assert figure["val_acc"] == one_val["val/acc"]  # validation too (val_size 0: the test set)
        assert figure["val_loss"] == pytest.approx(one_val["val/loss"], rel=float(np.finfo(np.float32).eps))
        assert np.array(figure["confusion"]).sum() == 25
        np.testing.assert_array_equal(figure["confusion"], one["confusion_matrix"])
        assert figure["acc"] == one["test/acc"] and figure["acc_no_tta"] == one.get("test/acc_no_tta")
        np.testing.assert_array_equal(figure["per_class"], one["per_class_accuracy"])
        assert figure["loss"] == pytest.approx(one["test/loss"], rel=float(np.finfo(np.float32).eps))


def fit_mlx_ranks(tmp_path, out, *extra, rank_env=None):
    """scripts/fit_mlx.py's main on 2 ranks (SmallCNN, 1 epoch, 20 images per process per
    step: 5 steps of 40); returns (exit statuses, stderr texts, files each rank wrote)."""
    argv = [
        "--data-dir",
        str(tmp_path / "data"),
        "--no-download",
        "--cpu",
        "--output-dir",
        str(out),
        "--model",
        "small_cnn",
        "--epochs",
        "1",
        "--batch-size",
        "20",
        "--log-every-n-steps",
        "1",
        *extra,
    ]
    codes, errors = mlx_rank.wait_ranks(
        mlx_rank.start_ranks(["cli", str(tmp_path), "--", *argv], tmp_path, rank_env=rank_env), tmp_path
    )
    writes = [
        json.loads(p.read_text()) if (p := tmp_path / f"writes-rank{r}.json").is_file() else None for r in range(2)
    ]
    return codes, errors, writes


def error_lines(text: str) -> list[str]:
    """The lines the library prints for a failure ("error: ..."); MLX's ring backend adds
    lines of its own ("[ring] ...") from C++, which it cannot be told to keep quiet."""
    return [line for line in text.splitlines() if line.startswith("error:")]


def test_fit_mlx_on_two_processes_writes_one_record_from_rank_0(tmp_path):
    write_cifar(tmp_path / "data", "cifar10", n_train=200, n_test=25)
    out = tmp_path / "run"
    codes, errors, writes = fit_mlx_ranks(tmp_path, out)
    assert codes == [0, 0], errors
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "finished" and record["hyperparameters"]["total_steps"] == 5
    assert record["processes"] == {
        "devices": 2,
        "num_nodes": 1,
        "strategy": "ddp",
        "world_size": 2,
        "accumulate_grad_batches": 1,
        "batch_size_per_process": 20,
        "effective_batch_size": 40,
    }
    assert record["command"].startswith("mlx.launch -n 2 scripts/fit_mlx.py --data-dir ")
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 5 + 2 + 1  # header, a row per step, the epoch's val and train rows, the test row: once
    assert sum(json.loads((out / "run.json").read_text())["per_class_accuracy"].values()) >= 0
    ours = [[w for w in ws if str(out) in w or "training.lock" in w] for ws in writes]
    assert any(w.endswith("run.json") for w in ours[0]), ours[0]
    assert any("training.lock" in w for w in ours[0]), ours[0]
    assert ours[1] == []  # rank 1 wrote nothing into the run folder and took no lock
    assert not error_lines(errors[0] + errors[1])


def test_a_rank_with_no_test_images_still_evaluates(tmp_path):
    """1 test image on 2 processes: rank 1's share is empty. The run finishes on both ranks
    and its test counts the one image once (accuracy 0 or 1, per class the same). Checked
    against: _evaluate concatenating no batches (ValueError on rank 1, the run failed)."""
    write_cifar(tmp_path / "data", "cifar10", n_train=200, n_test=1)
    out = tmp_path / "run"
    codes, errors, _ = fit_mlx_ranks(tmp_path, out, "--limit-val-batches", "0")
    assert codes == [0, 0], errors
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "finished" and record["test_accuracy"] in (0.0, 1.0)
    assert sorted(record["per_class_accuracy"].values()).count(record["test_accuracy"]) >= 1
    assert not error_lines(errors[0] + errors[1])


@pytest.mark.parametrize("how", ["kill", "raise"])
def test_a_rank_that_dies_or_raises_fails_the_run_with_one_line(tmp_path, how):
    """Rank 1 is killed (SIGKILL) or raises after step 2: every rank exits non-zero, rank 1's
    own error is one line naming it, rank 0 names the rank it lost in one line, and the
    record says the run failed (never finished; resumable from its last checkpoint)."""
    write_cifar(tmp_path / "data", "cifar10", n_train=200, n_test=25)
    out = tmp_path / "run"
    codes, errors, _ = fit_mlx_ranks(tmp_path, out, rank_env={1: {"CIFAR_TEST_FAIL_AT_STEP": f"2:{how}"}})
    assert codes[0] == 5 and codes[1] == (-9 if how == "kill" else 5), (codes, errors)
    assert "Traceback" not in errors[0] + errors[1]
    [lost] = error_lines(errors[0])
    assert lost.startswith("error: rank 0 of 2: lost the connection to rank 1, which failed or was killed"), lost
    if how == "raise":
        assert error_lines(errors[1]) == ["error: rank 1 of 2 failed: ValueError: planted failure at step 2"]
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "failed" and "rank 0 of 2: lost the connection to rank 1" in record["error"]
    assert record["command"].startswith("mlx.launch -n 2 scripts/fit_mlx.py ")  # what restarts it, --resume added


def test_a_rank_that_cannot_reach_the_others_times_out_with_one_line(tmp_path):
    """Only rank 0 of 2 is started: the ring backend would wait for rank 1 forever."""
    write_cifar(tmp_path / "data", "cifar10", n_train=200, n_test=25)
    argv = ["cli", str(tmp_path), "--", "--data-dir", str(tmp_path / "data"), "--cpu"]
    procs = mlx_rank.start_ranks(argv, tmp_path, env={"CIFAR_MLX_CONNECT_TIMEOUT": "3"})
    procs[1].kill()  # rank 1 never gets to join
    codes, errors = mlx_rank.wait_ranks(procs, tmp_path, timeout=120)
    assert codes[0] == -15  # ended by the watchdog (SIGTERM)
    assert error_lines(errors[0]) == [
        "error: rank 0: could not reach the other processes within 3 s "
        "(CIFAR_MLX_CONNECT_TIMEOUT); check that every rank was started and "
        "that the hosts reach each other"
    ]


@pytest.mark.slow
def test_a_failed_two_process_run_resumes_on_every_rank_to_the_uninterrupted_end(tmp_path):
    """2 ranks, SmallCNN with dropout, 2 epochs of 5 steps: rank 1 raises after step 7, so the
    run keeps epoch 1's last.npz (step 5); both ranks resume from it (each reads the
    checkpoint: weights, optimiser state, step, random key) and end with the weights,
    BatchNorm statistics and test accuracy of the uninterrupted 2-rank run."""
    write_cifar(tmp_path / "data", "cifar10", n_train=200, n_test=25)
    runs = {name: tmp_path / name for name in ("full", "cut")}
    for folder in runs.values():
        folder.mkdir()
        (folder / "data").symlink_to(tmp_path / "data")
    codes, errors, _ = fit_mlx_ranks(runs["full"], runs["full"] / "run", "--epochs", "2")
    assert codes == [0, 0], errors
    codes, errors, _ = fit_mlx_ranks(
        runs["cut"], runs["cut"] / "run", "--epochs", "2", rank_env={1: {"CIFAR_TEST_FAIL_AT_STEP": "7:raise"}}
    )
    assert codes == [5, 5], errors
    last = runs["cut"] / "run/checkpoints/last.npz"
    with np.load(last) as z:
        assert json.loads(str(z["meta"]))["global_step"] == 5
    codes, errors, writes = fit_mlx_ranks(runs["cut"], runs["cut"] / "run", "--epochs", "2", "--resume", str(last))
    assert codes == [0, 0], errors
    assert [w for w in writes[1] if str(runs["cut"] / "run") in w] == []  # rank 1 read, wrote nothing
    full, resumed = (np.load(runs[n] / "run/checkpoints/final.npz") for n in ("full", "cut"))
    initial = np.load(runs["full"] / "run/checkpoints/initial.npz")
    model_keys = [k for k in full.files if k.startswith("model.")]
    moved = [k for k in model_keys if not np.allclose(initial[k[6:]], full[k], rtol=1e-3, atol=1e-4)]
    assert len(moved) > len(model_keys) // 2  # training changed the weights, so equality means something
    for key in model_keys:  # the same processes making the same calls: equal to float32 rounding
        np.testing.assert_allclose(resumed[key], full[key], rtol=1e-5, atol=1e-6, err_msg=key)
    records = [json.loads((runs[n] / "run/run.json").read_text()) for n in ("full", "cut")]
    assert records[1]["status"] == "finished" and records[1]["test_accuracy"] == records[0]["test_accuracy"]


def plain_union_loop(weights: Path, rows: int, batch: int, epochs: int, reverse_halves: bool = False):
    """examples/mlp_numpy.py's MLP trained by a plain MLX loop (value_and_grad and the module's
    own optimiser) from `weights` on batches of `batch` rows: the union of two ranks' batches
    of batch / 2 rows (rank 0 the first half, rank 1 the second). `reverse_halves`: each
    rank's mean gradient computed apart and the two averaged, rank 1's first (the same
    numbers added in another order: one process's own float noise)."""
    sys.path.insert(0, str(mlx_rank.ROOT / "examples"))
    from mlp_numpy import MLP, batches, blobs

    model = MLP()
    with np.load(weights) as z:
        model.update(tree_unflatten([(k, mx.array(z[k])) for k in z.files]))
    optimizer = model.configure_optimizers()

    def loss_fn(x, y):
        return nn.losses.cross_entropy(model(x), y, reduction="mean")

    grad_fn = nn.value_and_grad(model, loss_fn)
    for _ in range(epochs):
        for x, y in batches(*blobs(rows, seed=1), batch):
            x, y = mx.array(x), mx.array(y)
            if reverse_halves:
                half = batch // 2
                g1, g0 = grad_fn(x[half:], y[half:])[1], grad_fn(x[:half], y[:half])[1]
                grads = tree_map(lambda a, b: (a + b) / 2, g1, g0)
            else:
                grads = grad_fn(x, y)[1]
            optimizer.update(model, grads)
            mx.eval(model.parameters(), optimizer.state)
    return {k: np.array(v) for k, v in tree_flatten(model.parameters())}


def test_the_general_trainer_on_two_processes_takes_the_step_of_one_process_on_the_union(tmp_path):
    """The general MLXTrainer (Lightning's API) with ``group=`` under an mlx.launch-style start:
    2 ranks fit examples/mlp_numpy.py's MLP on numpy batches of 16 rows (rank r takes batches
    r, r+2, ...) for 2 epochs of 30 steps, and end with the weights of a plain one-process loop
    on batches of 32 rows (each the union of a step's two rank batches), the same on both ranks.
    The tolerance is one process's own float noise, measured here: the union's gradient as
    the mean of the two halves' means. Measured on this CPU: 2 processes against the union
    1.4e-7 of the weights' norm, that noise 1.4e-7 (float32's resolution, 1.2e-7), of weights
    training moved by 0.45; the bound, 4x the larger of the noise and float32's resolution,
    leaves room for another machine's summation order and is 1e5 below a wrong step."""
    sys.path.insert(0, str(mlx_rank.ROOT / "examples"))
    from mlp_numpy import MLP

    mx.random.seed(0)
    initial = tmp_path / "initial.npz"
    np.savez(initial, **{k: np.array(v) for k, v in tree_flatten(MLP().parameters())})
    spec = {"weights": str(initial), "rows": 960, "batch_size": 16, "epochs": 2, "out": str(tmp_path)}
    codes, errors = mlx_rank.wait_ranks(mlx_rank.start_ranks(["general", json.dumps(spec)], tmp_path), tmp_path)
    assert codes == [0, 0], errors
    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(2)]
    figures = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert figures == [{"world": 2, "steps": 60}] * 2  # 960 rows / (2 x 16) a step, 2 epochs
    for k in ranks[0]:
        np.testing.assert_array_equal(ranks[0][k], ranks[1][k], err_msg=k)
    union = plain_union_loop(initial, 960, 32, 2)
    noise = relative_gap(union, plain_union_loop(initial, 960, 32, 2, reverse_halves=True))
    moved = relative_gap(union, dict(np.load(initial)))
    gap = relative_gap(union, ranks[0])
    print(f"general trainer: 2 processes vs the union {gap:.1e}; one process's noise {noise:.1e}; moved {moved:.1e}")
    assert noise < moved / 10, (noise, moved)
    assert gap <= 4 * max(noise, float(np.finfo(np.float32).eps)), (gap, noise)
