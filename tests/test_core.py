"""The framework-neutral core and the on-device pipelines built on it.

- The torch and MLX pipelines give the same uint8 batches bit for bit (same seed,
  epoch and rank), for each recipe's augmentation; normalised batches agree to float
  rounding.
- ``import cifar_mlx_adapter`` and an MLX training run from .npz or .safetensors
  weights load no torch module; ``import cifar_lightning.core`` loads no torch,
  Lightning or MLX.
- The MLX path's numpy metrics equal torchmetrics' on the same logits.

Faults these tests were checked against: a flip applied before the crop in one
framework; reflect padding repeating the edge pixel; a torch import at the top of the
MLX trainer; per-class accuracy dividing by predictions instead of labels.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import torch
from conftest import write_cifar
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_confusion_matrix

from cifar_lightning import CIFARDataModule
from cifar_lightning.core import metrics
from cifar_mlx_adapter.data import MLXData

ROOT = Path(__file__).resolve().parents[1]
AUGMENTATIONS = {  # the recipes' augmentations, and cutout
    "small_cnn": dict(crop_padding=4, pad_mode="constant", flip="random"),
    "fast": dict(crop_padding=2, pad_mode="reflect", flip="alternating"),
    "cutout": dict(crop_padding=4, pad_mode="constant", flip="random", cutout=12),
}


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_torch_and_mlx_pipelines_give_equal_batches(cifar10_dir, name):
    dm = CIFARDataModule("cifar10", cifar10_dir, batch_size=30, download=False, seed=5, **AUGMENTATIONS[name])
    torch_loader = dm.train_dataloader()
    mlx_loader = MLXData(dm.data).loader("train")
    for epoch in (0, 3):
        torch_loader.sampler.set_epoch(epoch)
        mlx_loader.sampler.set_epoch(epoch)
        pairs = list(zip(torch_loader.uint8_batches(), mlx_loader.uint8_batches(), strict=True))
        assert len(pairs) == 200 // 30
        for (tx, ty), (mx_x, mx_y) in pairs:
            assert np.array_equal(tx.permute(0, 2, 3, 1).numpy(), np.array(mx_x))  # bit for bit
            assert np.array_equal(ty.numpy(), np.array(mx_y))
        (tx, _), (mx_x, _) = next(iter(torch_loader)), next(iter(mlx_loader))
        np.testing.assert_allclose(tx.permute(0, 2, 3, 1).numpy(), np.array(mx_x), rtol=0, atol=1e-6)
    # the augmentation did something: epoch 3's first batch differs from its raw images
    raw = dm.split("train")[0][torch.from_numpy(torch_loader.plan.epoch()[0][:30])]
    assert not torch.equal(next(torch_loader.uint8_batches())[0], raw)


def test_the_pipelines_agree_for_another_rank(cifar10_dir):
    """Rank 1 of 2: the torch loader as Lightning's DDP would build it, and MLX's plan."""
    dm = CIFARDataModule("cifar10", cifar10_dir, batch_size=20, download=False, seed=2, **AUGMENTATIONS["fast"])
    dm.setup()
    plan = dm.data.plan("train", rank=1, world_size=2)
    from cifar_lightning.data import CIFARBatchLoader
    from cifar_mlx_adapter.data import MLXBatchLoader

    images, labels = dm.split("train")
    t = CIFARBatchLoader(images, labels, plan, dm.info.mean, dm.info.std)
    m = MLXBatchLoader(
        mx.array(images.permute(0, 2, 3, 1).numpy()),
        mx.array(labels.numpy().astype(np.int32)),
        plan,
        dm.info.mean,
        dm.info.std,
    )
    for (tx, _), (mx_x, _) in zip(t.uint8_batches(), m.uint8_batches(), strict=True):
        assert np.array_equal(tx.permute(0, 2, 3, 1).numpy(), np.array(mx_x))


def run_python(code: str, cwd=None) -> dict:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


HEAVY = ("torch", "torchvision", "torchmetrics", "lightning", "pytorch_lightning")
LOADED = "import sys, json; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(%r))))" % (
    HEAVY + ("mlx",),
)


def test_core_imports_no_framework():
    loaded = run_python(
        "import cifar_lightning.core.run.record, cifar_lightning.core.data, cifar_lightning.core.metrics, "
        "cifar_lightning.core.run.files, cifar_lightning.core.run.plots, "
        "cifar_lightning.report.logs, cifar_lightning.report.grouping, cifar_lightning.report.pairing, "
        "cifar_lightning.report.significance, cifar_lightning.report.results, cifar_lightning.core.draws, "
        "cifar_lightning\n" + LOADED
    )
    assert loaded == []


def test_mlx_package_and_an_mlx_run_from_npz_or_safetensors_load_no_torch(tmp_path):
    assert run_python("import cifar_mlx_adapter, cifar_mlx_adapter.blas\n" + LOADED) == []  # names load on first use
    assert run_python("from cifar_mlx_adapter import MLXClassifier, MLXTrainer, load_file\n" + LOADED) == ["mlx"]
    data = write_cifar(tmp_path / "data", "cifar10", n_train=100, n_test=20)
    for suffix in ("npz", "safetensors"):
        code = (
            f"""
import mlx.core as mx, numpy as np
from cifar_mlx_adapter import build_model, mlx_state
from cifar_lightning.cli.fit_mlx import main
state = mlx_state(build_model("small_cnn", 10))
path = {str(tmp_path)!r} + "/start.{suffix}"
if "{suffix}" == "npz":
    np.savez(path, **{{k: np.array(v) for k, v in state.items()}})
else:
    mx.save_safetensors(path, state)
record = main(["--data-dir", {str(data)!r}, "--no-download", "--cpu", "--weights", path, "--epochs", "1",
               "--batch-size", "50", "--lock-file", "none", "--output-dir", {str(tmp_path)!r} + "/run-{suffix}"])
assert record["status"] == "finished"
"""
            + LOADED
        )
        assert run_python(code, cwd=tmp_path) == ["mlx"], suffix


@pytest.mark.parametrize("classes", [10, 100])
def test_numpy_metrics_equal_torchmetrics(classes):
    rng = np.random.default_rng(classes)
    logits = rng.normal(size=(997, classes)).astype(np.float32)
    labels = rng.integers(0, classes - 1, 997)  # the last class has no images
    labels[:300] = logits[:300].argmax(1)  # some right answers, so accuracies are not all chance
    t_logits, t_labels = torch.from_numpy(logits), torch.from_numpy(labels)
    assert metrics.accuracy(logits, labels) == pytest.approx(
        float(multiclass_accuracy(t_logits, t_labels, classes, average="micro")), abs=1e-7
    )
    np.testing.assert_allclose(
        metrics.per_class_accuracy(logits, labels, classes),
        multiclass_accuracy(t_logits, t_labels, classes, average=None).numpy(),
        atol=1e-6,
    )
    assert np.array_equal(
        metrics.confusion_matrix(logits, labels, classes),
        multiclass_confusion_matrix(t_logits, t_labels, classes).numpy(),
    )
    assert metrics.cross_entropy(logits, labels) == pytest.approx(
        float(torch.nn.functional.cross_entropy(t_logits, t_labels)), rel=1e-6
    )


FRAMEWORKS_AND_WINGS = (
    "torch",
    "torchvision",
    "torchmetrics",
    "lightning",
    "pytorch_lightning",
    "mlx",
    "cifar_mlx_adapter",
)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, function bodies included, and of every
    ``import_module("...")``/``__import__("...")`` call with a constant name."""
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append((node.lineno, node.module))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", "")) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.append((node.lineno, str(node.args[0].value)))
    return found


def test_no_core_module_imports_a_framework_or_a_wing_anywhere():
    """Every module of cifar_lightning/core, function bodies included (the import-time test
    above cannot see a lazy import): no torch, torchvision, torchmetrics, Lightning or MLX,
    and nothing of either wing (cifar_lightning outside core, cifar_mlx_adapter). Checked
    against: an ``import torch`` planted in a core function body (core.weights), caught."""
    offences = []
    for path in sorted((ROOT / "cifar_lightning" / "core").rglob("*.py")):
        for line, module in imports_of(path):
            top = module.split(".")[0]
            wing = top == "cifar_lightning" and not module.startswith("cifar_lightning.core")
            if top in FRAMEWORKS_AND_WINGS or wing:
                offences.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert offences == []
