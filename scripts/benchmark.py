"""Throughput benchmarks on real CIFAR-10: the library against plain reference loops.

    python scripts/benchmark.py --data-dir ../shared/data            # all cases, table + runs/benchmarks.json
    python scripts/benchmark.py --data-dir ../shared/data --cases data
    python scripts/benchmark.py --cases lightning --match "mlp example"   # the MLP's rows only
    python scripts/benchmark.py --gpu --data-dir DATA   # one NVIDIA GPU: scripts/benchmark_gpu.py

Each case runs in its own process (so its peak memory is its own), one after the
other: never run two benchmarks at once. Rows (ratio: images/s over the reference row's,
measured in the same run):
  data/*    images per second out of the training loader, augmentation included, on the
            best device here (cuda, else mps, else cpu): the on-device pipeline (uint8 set
            uploaded once, batches gathered and augmented on the device) against the
            per-batch CPU pipeline (batches made on the CPU, then copied), and against the
            original project's torchvision pipeline (per-image transforms, 0 and 2 workers);
            MLX's on-device batches against torch batches converted to MLX each step.
  train/*   training images per second of `Trainer.fit` (or `MLXTrainer.fit`) against a
            plain loop over the same model, device-resident batches and optimiser; the
            fast net also in NCHW against the default layout.
  mlx/*     also MLX's own BLAS (mlx[cpu] on Linux ships a reference BLAS) against the
            OpenBLAS that cifar_mlx_adapter.blas preloads, on the same plain loop.
  lightning/*  training images per second of the general MLXTrainer (Lightning's API,
            ``cifar_mlx_adapter.lightning``) against a plain compiled MLX loop: the zoo's
            models on the same on-device batches, and examples/mlp_numpy.py's MLP on its
            numpy batches; the bf16-mixed rows against float32. A run of the MLP lasts about
            a second and two runs of the same row can differ by 20% on a 2-core machine, so
            each MLP row is the run of median images/s among --mlp-repeats runs (7), each in a
            fresh process, the three rows' runs alternating (plain, trainer, bf16, plain, ...)
            so that a slow spell of the machine falls on all three; its ratio is that of the
            medians, with the 95% interval a bootstrap over the runs gives (ratio_interval);
            every run's images/s is in the JSON (runs_images_per_s). On a 2-core VM the runs
            of one row spread over a factor of two (75k-181k images/s) and two passes of 41
            and 61 runs read 0.98 and 0.93. The rows "blocks alternating" are the precise
            ones: in each run (one process) MLXTrainer and a plain loop train in alternating
            blocks (100 steps for the MLP, 2 for the zoo's models; a second MLP row alternates
            single steps), each loop timed between the other's blocks, and the row's ratio is
            the median of the runs' own ratios with its 95% interval (median_interval). Single
            steps read lower than long blocks on the same code: switching loops costs
            (alternating_blocks).
  import/*  seconds to import each package in a fresh interpreter.
The first `warmup` steps of each training case are not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------- data cases
def best_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def datamodule(data_dir: str, recipe):
    """The training set's DataModule with the recipe's batch size and augmentation, as the
    scripts build it (the same for every case of both frameworks)."""
    from dataclasses import asdict

    from cifar_lightning import CIFARDataModule

    return CIFARDataModule(
        "cifar10", data_dir, batch_size=recipe.batch_size, download=False, **asdict(recipe.augmentation)
    )


def bench_datamodule(data_dir: str, batches: int, model: str, resident: bool) -> dict:
    """The DataModule's loader with the set on the device (resident) or on the CPU with
    each batch copied to the device (the per-batch CPU pipeline)."""
    from cifar_lightning import get_recipe
    from cifar_lightning.data import CIFARBatchLoader

    r = get_recipe(model)
    dm = datamodule(data_dir, r)
    device = best_device()
    images, labels = dm.split("train")
    if resident:
        images, labels = images.to(device), labels.to(device)
    loader = CIFARBatchLoader(images, labels, dm.data.plan("train"), dm.info.mean, dm.info.std)
    start, n = time.perf_counter(), 0
    for i, (x, _) in enumerate(loader):
        x = x.to(device)
        n += len(x)
        if i + 1 >= batches:
            break
    _sync(device)
    seconds = time.perf_counter() - start
    return {"images_per_s": n / seconds, "seconds": seconds, "images": n, "batch_size": r.batch_size, "device": device}


def bench_mlx_data(data_dir: str, batches: int, model: str, resident: bool) -> dict:
    """MLX batches made on MLX's device (resident) or torch batches converted each step."""
    import mlx.core as mx

    from cifar_lightning import get_recipe
    from cifar_mlx_adapter.data import MLXData

    r = get_recipe(model)
    dm = datamodule(data_dir, r)
    if resident:
        loader = MLXData(dm.data).loader("train")
    else:
        loader = (
            (mx.array(x.permute(0, 2, 3, 1).contiguous().numpy()), mx.array(y.numpy()))
            for x, y in dm.train_dataloader()
        )
    start, n = time.perf_counter(), 0
    for i, (x, _) in enumerate(loader):
        mx.eval(x)
        n += x.shape[0]
        if i + 1 >= batches:
            break
    seconds = time.perf_counter() - start
    return {
        "images_per_s": n / seconds,
        "seconds": seconds,
        "images": n,
        "batch_size": r.batch_size,
        "device": str(mx.default_device()),
    }


def bench_import(data_dir: str, package: str) -> dict:
    """Seconds to import `package` (and, for cifar_lightning, its DataModule) afresh."""
    code = {
        "cifar_mlx_adapter": "import cifar_mlx_adapter",
        "cifar_lightning": "import cifar_lightning; cifar_lightning.CIFARDataModule",
    }[package]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def bench_torchvision(data_dir: str, batches: int, workers: int) -> dict:
    import torch
    import torchvision.datasets.cifar as tv_cifar
    import torchvision.transforms as T
    from torchvision.datasets import CIFAR10

    # the shared copy's md5s differ from the official ones: skip torchvision's checks
    CIFAR10._check_integrity = lambda self: True
    tv_cifar.check_integrity = lambda *args, **kwargs: True
    tf = T.Compose(
        [
            T.RandomCrop(32, padding=4),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        ]
    )
    ds = CIFAR10(data_dir, train=True, transform=tf, download=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, num_workers=workers, drop_last=True)
    device = best_device()
    start, n = time.perf_counter(), 0
    for i, (x, _) in enumerate(loader):
        x = x.to(device)
        n += len(x)
        if i + 1 >= batches:
            break
    _sync(device)
    seconds = time.perf_counter() - start
    return {"images_per_s": n / seconds, "seconds": seconds, "images": n, "batch_size": 64, "device": device}


# ------------------------------------------------------------------ torch cases
class Timer:
    """Times steps after `warmup` of them, as a Lightning callback or by hand; `sync` waits
    for the device before each reading of the clock (CUDA and MPS run asynchronously)."""

    def __init__(self, warmup: int, sync=None):
        self.warmup, self.count, self.start, self.images = warmup, 0, None, 0
        self.sync = sync or (lambda: None)

    def step(self, batch_size: int) -> None:
        self.count += 1
        if self.count == self.warmup:
            self.sync()
            self.start = time.perf_counter()
        elif self.count > self.warmup:
            self.images += batch_size

    def rate(self) -> float:
        self.sync()
        self.seconds = time.perf_counter() - self.start
        return self.images / self.seconds


def _torch_setup(data_dir, model, batch_size, channels_last=True):
    import torch

    from cifar_lightning import CIFARClassifier, get_recipe

    torch.manual_seed(0)
    r = get_recipe(model).with_overrides(batch_size=batch_size)
    dm = datamodule(data_dir, r)
    return dm, CIFARClassifier(model, 10, recipe={**r.to_dict(), "tta": False}, channels_last=channels_last)


def device_batches(dm, device: str):
    """The training batches as Trainer.fit makes them on `device`: the uint8 set uploaded
    once, each batch gathered and augmented there (the DataModule's own loader on the CPU)."""
    if device == "cpu":
        return dm.train_dataloader()
    from cifar_lightning.data import CIFARBatchLoader

    images, labels = dm.split("train")
    return CIFARBatchLoader(images.to(device), labels.to(device), dm.data.plan("train"), dm.info.mean, dm.info.std)


def bench_lightning(data_dir, model, steps, warmup, batch_size, channels_last=True, device="cpu") -> dict:
    import lightning as L

    dm, module = _torch_setup(data_dir, model, batch_size, channels_last)
    timer = Timer(warmup, lambda: _sync(device))

    class TimeSteps(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            timer.step(len(batch[1]))

    trainer = L.Trainer(
        accelerator=device,
        devices=1,
        max_epochs=1,
        limit_train_batches=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[TimeSteps()],
    )
    trainer.fit(module, datamodule=dm)
    return {"images_per_s": timer.rate(), "seconds": timer.seconds, "steps": steps, "batch_size": dm.hparams.batch_size}


def bench_plain_torch(data_dir, model, steps, warmup, batch_size, device="cpu") -> dict:
    """The reference: a bare loop, the same model, loader, loss and optimiser groups."""
    dm, module = _torch_setup(data_dir, model, batch_size)
    module.to(device)
    net = module.model
    opt = module.make_optimizer()
    timer = Timer(warmup, lambda: _sync(device))
    net.train()
    for i, (x, y) in enumerate(device_batches(dm, device)):  # device-resident batches, as Trainer.fit's
        if i >= steps:
            break
        loss = module.loss(module(x), y)  # forward: the module's memory format
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()  # the per-step host sync Lightning's logging also makes
        timer.step(len(y))
    return {"images_per_s": timer.rate(), "seconds": timer.seconds, "steps": steps, "batch_size": dm.hparams.batch_size}


# -------------------------------------------------------------------- mlx cases
def _mlx_setup(data_dir, model, batch_size):
    import mlx.core as mx

    from cifar_lightning import get_recipe
    from cifar_mlx_adapter import MLXClassifier

    mx.random.seed(0)
    r = get_recipe(model).with_overrides(batch_size=batch_size)
    dm = datamodule(data_dir, r)
    return dm, MLXClassifier(model, 10, recipe={**r.to_dict(), "tta": False})


def bench_mlx_trainer(data_dir, model, steps, warmup, batch_size) -> dict:
    from cifar_mlx_adapter import Callback, MLXTrainer

    dm, module = _mlx_setup(data_dir, model, batch_size)
    timer = Timer(warmup)

    class TimeSteps(Callback):
        def on_train_batch_end(self, trainer, module, batch_idx):
            import mlx.core as mx

            mx.eval(module.model.parameters())  # count finished steps, not queued ones
            timer.step(batch_size)

    trainer = MLXTrainer(
        max_epochs=1,
        limit_train_batches=steps,
        callbacks=[TimeSteps()],
        enable_progress_bar=False,
        enable_checkpointing=False,
        default_root_dir="/tmp/mlx-bench",
    )
    trainer.validate = lambda *a, **k: {}  # training throughput only
    trainer.fit(module, dm)
    return {"images_per_s": timer.rate(), "seconds": timer.seconds, "steps": steps, "batch_size": batch_size}


def plain_compiled_loop(net, loss_fn, opt, batches, steps: int, warmup: int, batch_size: int) -> dict:
    """mlx-examples' compiled training loop: the loss's gradient and the optimiser's update
    compiled with the model's, the optimiser's and the random state (without the random
    state, dropout's mask is frozen), every step's state evaluated before the clock. The
    reference every MLX trainer is measured against."""

    train_on = plain_step(net, loss_fn, opt)
    timer = Timer(warmup)
    for i, (x, y) in enumerate(batches):
        if i >= steps:
            break
        train_on(x, y)
        timer.step(batch_size)
    return {"images_per_s": timer.rate(), "seconds": timer.seconds, "steps": steps, "batch_size": batch_size}


def plain_step(net, loss_fn, opt):
    """``train_on(x, y)``: one step of the plain compiled loop (numpy batches become arrays),
    its state evaluated before it returns."""
    from functools import partial

    import mlx.core as mx
    import mlx.nn as nn

    loss_and_grad = nn.value_and_grad(net, lambda x, y: loss_fn(net(x), y))
    state = [net.state, opt.state, mx.random.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(x, y):
        loss, grads = loss_and_grad(x, y)
        opt.update(net, grads)
        return loss

    def train_on(x, y):
        step(*(v if isinstance(v, mx.array) else mx.array(v) for v in (x, y)))
        mx.eval(state)

    return train_on


def bench_plain_mlx(data_dir, model, steps, warmup, batch_size) -> dict:
    """The reference for a zoo model: the plain loop over the same model, batches and optimiser."""
    from cifar_mlx_adapter.data import MLXData
    from cifar_mlx_adapter.optim import recipe_optimizer

    dm, module = _mlx_setup(data_dir, model, batch_size)
    opt = recipe_optimizer(module.recipe, steps, steps, module.model)
    batches = MLXData(dm.data).loader("train")  # the batches MLXTrainer.fit trains on
    return plain_compiled_loop(module.model, module.loss, opt, batches, steps, warmup, batch_size)


def _zoo_module(classifier, steps: int):
    """The zoo's model as a user's MLXModule would hold it: the recipe's loss, its optimiser."""
    from cifar_mlx_adapter.lightning import MLXModule
    from cifar_mlx_adapter.optim import recipe_optimizer

    class ZooModule(MLXModule):
        def __init__(self):
            super().__init__()
            self.net = classifier.model

        def __call__(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = classifier.loss(self.net(x), y)
            self.log("train/loss", loss)
            return loss

        def configure_optimizers(self):
            # the recipe routes parameters by the net's own names: here they read "net.<name>"
            return recipe_optimizer(classifier.recipe, steps, steps, self.net, prefix="net.")

    return ZooModule()


def _bare_trainer(steps: int, callback, precision: str = "32-true"):
    """An MLXTrainer that trains `steps` steps with `callback` and nothing else (no validation,
    logger, checkpoint, bar or summary): the trainer as a benchmark times it."""
    from cifar_mlx_adapter.lightning import MLXTrainer

    return MLXTrainer(
        max_steps=steps,
        limit_val_batches=0,
        precision=precision,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def _general_trainer(module, steps: int, warmup: int, batch_size: int, precision: str, **fit):
    """images/s of ``cifar_mlx_adapter.lightning.MLXTrainer.fit`` over `steps` steps, the first
    `warmup` untimed: the clock is read after the warmup's last step and after the last step,
    each time once every queued step has finished (``mx.synchronize``). Between the two the
    trainer runs as a user's fit does: it queues each step's state for evaluation itself (on
    the CPU it waits for it), so nothing is evaluated for the clock's sake; a second
    evaluation per step cost about 10 us on the MLP (line_profiler), 4% of its step."""
    import mlx.core as mx

    from cifar_mlx_adapter.lightning import Callback

    timer = Timer(warmup, sync=mx.synchronize)
    result = {}

    class TimeSteps(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            timer.step(batch_size)
            if trainer.global_step == steps:
                result["images_per_s"] = timer.rate()  # before fit's own ending (hooks, summary line)

    _bare_trainer(steps, TimeSteps(), precision).fit(module, **fit)
    return {"images_per_s": result["images_per_s"], "seconds": timer.seconds, "steps": steps, "batch_size": batch_size}


def bench_general_trainer(data_dir, model, steps, warmup, batch_size, precision="32-true") -> dict:
    """The zoo's model under the general MLXTrainer, on the batches the plain loop trains on."""
    dm, classifier = _mlx_setup(data_dir, model, batch_size)
    module = _zoo_module(classifier, steps)
    return _general_trainer(module, steps, warmup, batch_size, precision, datamodule=dm)


def _mlp_batches(batch_size: int, steps: int):
    sys.path.insert(0, str(ROOT / "examples"))
    from mlp_numpy import MLP, batches, blobs

    x, y = blobs(batch_size * steps, seed=1)
    return MLP, batches(x, y, batch_size)


def bench_general_mlp(data_dir, steps, warmup, batch_size, precision="32-true") -> dict:
    """examples/mlp_numpy.py's MLP under MLXTrainer, on its numpy batches."""
    import mlx.core as mx

    MLP, data = _mlp_batches(batch_size, steps)
    mx.random.seed(0)
    return _general_trainer(MLP(), steps, warmup, batch_size, precision, train_dataloaders=data)


def bench_plain_mlp(data_dir, steps, warmup, batch_size) -> dict:
    """The reference for the MLP: the plain loop over the same model, batches and optimiser."""
    import mlx.core as mx

    MLP, data = _mlp_batches(batch_size, steps)
    mx.random.seed(0)
    net = MLP()
    return plain_compiled_loop(net, _mlp_loss, net.configure_optimizers(), data, steps, warmup, batch_size)


def alternating_blocks(module, train_on, plain_batch, steps, warmup, batch_size, block, **fit) -> dict:
    """``module`` under MLXTrainer.fit (``fit``: its data) and a plain compiled loop's step
    ``train_on(x, y)`` (over a second copy of the model) in one process, in alternating blocks:
    after every `block` trainer steps, its callback runs the plain loop over the same `block`
    batches (``plain_batch(batch_idx, batch)``: the plain loop's (x, y) for that step). Each
    loop's blocks are timed between the other's, so a slow spell of the machine falls on both
    alike (fresh processes of one row differ by up to 2x on a 2-core VM), while each loop runs
    its steps back to back, as a fit does. A trainer block is timed from the end of the plain
    block before it to the start of the one after it, once every step it queued has finished
    (``mx.synchronize`` on a GPU): its loop, conversions, steps and hooks.

    Blocks, not single steps: switching loops after every step charged the switches to the
    loops. On the same code the MLP read 0.88-0.93 with single steps and 0.91-1.01 with
    blocks of 10, 100 or 500 steps (3 runs each after 500 warm-up steps,
    runs/benchmarks-mlp-block-sweep.log); 100 leaves one switch per 100 steps. The measure
    sees the trainer's host cost: 20 us of host time planted in each trainer step took the
    MLP's 100-step-block ratio from 0.97-1.01 to 0.89-0.91 (runs/benchmarks-mlp-plant.log).

    Returns images_per_s (the trainer's), plain_images_per_s and paired_ratio (the first over
    the second: the plain loop's time over the trainer's), over the blocks after the first
    `warmup` steps."""
    import mlx.core as mx

    from cifar_mlx_adapter.lightning import Callback

    if steps % block or warmup % block:
        raise ValueError(f"steps ({steps}) and warmup ({warmup}) must be multiples of block ({block})")
    trainer_s, plain_s, last_end, held = {}, {}, [], []  # seconds of each block, by its number

    class PlainBlockAfterEach(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            held.append(plain_batch(batch_idx, batch))
            if (batch_idx + 1) % block:
                return
            if mx.default_device() != mx.cpu:  # on the CPU the trainer has waited for each step itself
                mx.synchronize()
            start, number = time.perf_counter(), batch_idx // block
            if last_end:
                trainer_s[number] = start - last_end[-1]
            for x, y in held:
                train_on(x, y)
            held.clear()
            last_end.append(time.perf_counter())
            plain_s[number] = last_end[-1] - start

    _bare_trainer(steps, PlainBlockAfterEach()).fit(module, **fit)
    timed = [n for n in trainer_s if n >= warmup // block]
    timed_trainer, timed_plain = sum(trainer_s[n] for n in timed), sum(plain_s[n] for n in timed)
    images = batch_size * block * len(timed)
    return {
        "images_per_s": images / timed_trainer,
        "plain_images_per_s": images / timed_plain,
        "paired_ratio": timed_plain / timed_trainer,
        "seconds": timed_trainer,
        "steps": steps,
        "batch_size": batch_size,
        "block": block,
    }


def bench_interleaved_mlp(data_dir, steps, warmup, batch_size, block=100) -> dict:
    """examples/mlp_numpy.py's MLP in alternating blocks with the plain loop (alternating_blocks),
    each loop on the example's numpy batches (each converts its own)."""
    import mlx.core as mx

    MLP, data = _mlp_batches(batch_size, steps)
    mx.random.seed(0)
    reference = MLP()
    train_on = plain_step(reference, _mlp_loss, reference.configure_optimizers())
    return alternating_blocks(
        MLP(), train_on, lambda i, batch: data[i], steps, warmup, batch_size, block, train_dataloaders=data
    )


def bench_interleaved_zoo(data_dir, model, steps, warmup, batch_size, block) -> dict:
    """A zoo model in alternating blocks with the plain loop (alternating_blocks): the trainer on
    the datamodule's MLX batches, the plain loop (bench_plain_mlx's, over a second copy of the
    model made from the same seed) on the very batches the trainer trained on."""
    from cifar_mlx_adapter.optim import recipe_optimizer

    _, reference = _mlx_setup(data_dir, model, batch_size)
    opt = recipe_optimizer(reference.recipe, steps, steps, reference.model)
    train_on = plain_step(reference.model, reference.loss, opt)
    dm, classifier = _mlx_setup(data_dir, model, batch_size)
    return alternating_blocks(
        _zoo_module(classifier, steps),
        train_on,
        lambda i, batch: batch,
        steps,
        warmup,
        batch_size,
        block,
        datamodule=dm,
    )


def _mlp_loss(logits, y):
    import mlx.nn as nn

    return nn.losses.cross_entropy(logits, y, reduction="mean")


# ----------------------------------------------------------------------- driver
def cases(args) -> list[tuple[str, str, dict, str | None]]:
    """(case, runner, its arguments, the case it is measured against or None)."""
    out = []
    if "data" in args.cases:
        for model, batches in (("small_cnn", 100), ("fast", 30)):
            cpu = f"data/{model} aug: per-batch CPU pipeline"
            out += [
                (
                    f"data/{model} aug: on-device pipeline",
                    "datamodule",
                    {"batches": batches, "model": model, "resident": True},
                    cpu,
                ),
                (cpu, "datamodule", {"batches": batches, "model": model, "resident": False}, None),
            ]
        out += [
            (
                "data/torchvision, 0 workers",
                "torchvision",
                {"batches": 100, "workers": 0},
                "data/small_cnn aug: on-device pipeline",
            ),
            (
                "data/torchvision, 2 workers",
                "torchvision",
                {"batches": 100, "workers": 2},
                "data/small_cnn aug: on-device pipeline",
            ),
        ]
    if "train" in args.cases:
        for model, steps, bs in (
            ("small_cnn", args.steps, 128),
            ("fast", max(4, args.steps // 4), 256),
            ("resnet18", max(4, args.steps // 4), 64),
        ):
            kw = {"model": model, "steps": steps, "warmup": 2, "batch_size": bs}
            plain = f"train/{model}: plain torch loop"
            out += [(f"train/{model}: Trainer.fit", "lightning", kw, plain), (plain, "plain_torch", kw, None)]
            if model == "fast":  # the default layout (NHWC on cpu and cuda) against NCHW
                out.append(
                    (
                        f"train/{model}: Trainer.fit, NCHW",
                        "lightning",
                        {**kw, "channels_last": False},
                        f"train/{model}: Trainer.fit",
                    )
                )
    if "mlx" in args.cases:
        converted = "data/mlx, fast aug: torch batches converted"
        out += [
            (
                "data/mlx, fast aug: on-device batches",
                "mlx_data",
                {"batches": 10, "model": "fast", "resident": True},
                converted,
            ),
            (converted, "mlx_data", {"batches": 10, "model": "fast", "resident": False}, None),
        ]
        kw = {"model": "small_cnn", "steps": args.mlx_steps, "warmup": 2, "batch_size": 32}
        plain = "mlx/small_cnn: plain compiled loop"
        out += [
            ("mlx/small_cnn: MLXTrainer.fit", "mlx_trainer", kw, plain),
            (plain, "plain_mlx", kw, None),
            ("mlx/small_cnn: plain compiled loop, MLX's own BLAS", "plain_mlx_own_blas", kw, plain),
        ]
    if "lightning" in args.cases:  # the general MLXTrainer (Lightning's API) against plain compiled loops
        for model, steps, bs in (("small_cnn", 4 * args.mlx_steps, 32), ("fast", 8, 64), ("resnet18", 6, 16)):
            kw = {"model": model, "steps": steps, "warmup": 2, "batch_size": bs}
            plain = f"mlx/{model}: plain compiled loop"
            if model != "small_cnn" or "mlx" not in args.cases:
                out.append((plain, "plain_mlx", kw, None))
            out.append((f"lightning/{model}: MLXTrainer.fit (Lightning's API)", "general_trainer", kw, plain))
        # the zoo's models in alternating 2-step blocks with the plain loop, in one process (a step
        # lasts 0.5-4 s here, so a switch between the loops costs nothing that shows)
        for model, steps, bs in (("small_cnn", 12, 32), ("fast", 8, 64), ("resnet18", 6, 16)):
            out.append(
                (
                    f"lightning/{model}: MLXTrainer.fit, 2-step blocks alternating with a plain loop's",
                    "interleaved_zoo",
                    {"model": model, "steps": steps, "warmup": 2, "batch_size": bs, "block": 2, "repeats": 3},
                    PAIRED,
                )
            )
        kw = {"model": "small_cnn", "steps": 4 * args.mlx_steps, "warmup": 2, "batch_size": 32}
        out.append(
            (
                "lightning/small_cnn: MLXTrainer.fit, bf16-mixed",
                "general_trainer",
                {**kw, "precision": "bf16-mixed"},
                "lightning/small_cnn: MLXTrainer.fit (Lightning's API)",
            )
        )
        # the MLP's rows last about a second each: each is run `repeats` times, alternating (see main)
        mlp = {"steps": 3000, "warmup": 100, "batch_size": 32, "repeats": args.mlp_repeats}
        out += [
            ("lightning/mlp example: plain compiled loop", "plain_mlp", mlp, None),
            ("lightning/mlp example: MLXTrainer.fit", "general_mlp", mlp, "lightning/mlp example: plain compiled loop"),
            (
                "lightning/mlp example: MLXTrainer.fit, bf16-mixed",
                "general_mlp",
                {**mlp, "precision": "bf16-mixed"},
                "lightning/mlp example: MLXTrainer.fit",
            ),
            (
                "lightning/mlp example: MLXTrainer.fit, 100-step blocks alternating with a plain loop's",
                "interleaved_mlp",
                {**mlp, "block": 100},
                PAIRED,
            ),
            (  # the same with single steps: what switching loops after every step costs the ratio
                "lightning/mlp example: MLXTrainer.fit, single steps alternating with a plain loop's",
                "interleaved_mlp",
                {**mlp, "block": 1},
                PAIRED,
            ),
        ]
    if "import" in args.cases:
        out += [
            ("import/cifar_mlx_adapter", "import", {"package": "cifar_mlx_adapter"}, None),
            ("import/cifar_lightning (DataModule)", "import", {"package": "cifar_lightning"}, None),
        ]
    return out


# the "against" of a row whose ratio was measured within each run (paired_ratio), not against another row
PAIRED = "the plain loop's blocks between its own, in each run"


def _alternating_groups(todo: list) -> list[list]:
    """The cases in order, one to a group, except that neighbouring cases run `repeats` > 1
    times (the same number) form one group, whose runs alternate (a, b, a, b, ...): a slow
    spell of the machine then falls on both sides of a ratio."""
    groups: list[list] = []
    for case in todo:
        repeats = case[2].get("repeats", 1)
        if groups and repeats > 1 and groups[-1][0][2].get("repeats", 1) == repeats:
            groups[-1].append(case)
        else:
            groups.append([case])
    return groups


def median_run(runs: list[dict]) -> dict:
    """The run of median images/s (the lower middle one of an even count), as it was recorded."""
    if "images_per_s" not in runs[0]:
        return runs[-1]
    return sorted(runs, key=lambda r: r["images_per_s"])[(len(runs) - 1) // 2]


def ratio_interval(runs: list[float], reference_runs: list[float], confidence: float = 0.95) -> list[float]:
    """[low, high]: the `confidence` interval of median(runs) / median(reference_runs), two rows'
    images/s over their fresh-process runs, by scipy's percentile bootstrap (each row's runs
    resampled on their own, 9,999 times, seeded): how far the pass's own noise moves the ratio."""
    import numpy as np

    def ratio_of_medians(a, b, axis):
        return np.median(a, axis=axis) / np.median(b, axis=axis)

    return _bootstrap_interval((runs, reference_runs), ratio_of_medians, confidence)


def median_interval(values: list[float], confidence: float = 0.95) -> list[float]:
    """[low, high]: the `confidence` interval of the median of `values` (one figure per run), by
    the same bootstrap as ``ratio_interval``."""
    import numpy as np

    def median(a, axis):
        return np.median(a, axis=axis)

    return _bootstrap_interval((values,), median, confidence)


def _bootstrap_interval(samples: tuple, statistic, confidence: float) -> list[float]:
    import numpy as np
    from scipy.stats import bootstrap

    found = bootstrap(
        tuple(np.asarray(s) for s in samples),
        statistic,
        vectorized=True,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(0),
    )
    return [round(float(found.confidence_interval.low), 3), round(float(found.confidence_interval.high), 3)]


def add_ratios(rows: list[dict]) -> None:
    """Each row's ``ratio``: its images/s over those of the row it names as its reference
    (measured in the same pass); where both were run several times, ``ratio_interval`` too."""
    by_case = {r["case"]: r for r in rows}
    for row in rows:
        ref = by_case.get(row.get("reference") or "")
        if ref and "images_per_s" in row and "images_per_s" in ref:
            row["ratio"] = round(row["images_per_s"] / ref["images_per_s"], 3)
            if len(row.get("runs_images_per_s", ())) > 1 and len(ref.get("runs_images_per_s", ())) > 1:
                row["ratio_interval"] = ratio_interval(row["runs_images_per_s"], ref["runs_images_per_s"])


def run_case(args, kind: str, kw: dict) -> dict | str:
    """One case in a fresh process (its own peak memory, its own BLAS): its result, with the
    wall time and the preload it ran under, or the end of its stderr if it failed."""
    from cifar_mlx_adapter import blas

    start = time.perf_counter()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    mlx_kinds = (
        "mlx_trainer",
        "plain_mlx",
        "plain_mlx_own_blas",
        "general_trainer",
        "general_mlp",
        "plain_mlp",
        "interleaved_mlp",
        "interleaved_zoo",
    )
    if kind in mlx_kinds and blas.needed():
        env.pop("LD_PRELOAD", None)  # mlx[cpu] on Linux: OpenBLAS preloaded, except for the own-BLAS row
        if kind == "plain_mlx_own_blas":
            env[blas.SWITCH] = "0"
        else:
            env.update(blas.environment() or {})
    proc = subprocess.run(
        [sys.executable, __file__, "--data-dir", args.data_dir, "--one", json.dumps([kind, kw])],
        capture_output=True,
        text=True,
        env=env,
    )
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not line:
        return proc.stderr[-2000:]
    return {
        **json.loads(line[0][7:]),
        "wall_s": round(time.perf_counter() - start, 1),
        "ld_preload": env.get("LD_PRELOAD"),
    }


RUNNERS = {
    "datamodule": bench_datamodule,
    "torchvision": bench_torchvision,
    "lightning": bench_lightning,
    "plain_torch": bench_plain_torch,
    "mlx_trainer": bench_mlx_trainer,
    "plain_mlx": bench_plain_mlx,
    "plain_mlx_own_blas": bench_plain_mlx,
    "mlx_data": bench_mlx_data,
    "import": bench_import,
    "general_trainer": bench_general_trainer,
    "general_mlp": bench_general_mlp,
    "plain_mlp": bench_plain_mlp,
    "interleaved_mlp": bench_interleaved_mlp,
    "interleaved_zoo": bench_interleaved_zoo,
}


def main() -> int:
    if "--gpu" in sys.argv[1:]:  # the GPU measurements as one command: scripts/benchmark_gpu.py
        import benchmark_gpu

        return benchmark_gpu.main([a for a in sys.argv[1:] if a != "--gpu"])
    p = argparse.ArgumentParser(description="Throughput benchmarks (prints a table, writes JSON).")
    p.add_argument("--data-dir", default="data")
    p.add_argument(
        "--cases",
        nargs="+",
        default=["data", "train", "mlx", "lightning", "import"],
        choices=["data", "train", "mlx", "lightning", "import"],
        help="which groups of rows (default: all)",
    )
    p.add_argument("--steps", type=int, default=24, help="training steps per torch case (fast and resnet18: a quarter)")
    p.add_argument("--mlx-steps", type=int, default=8)
    p.add_argument(
        "--mlp-repeats",
        type=int,
        default=7,
        help="runs of each MLP row, alternating between the rows, each in a fresh process (the median is reported)",
    )
    p.add_argument("--match", help="only the chosen groups' cases whose name holds this text (e.g. 'mlp example')")
    p.add_argument("--output", default=str(ROOT / "runs" / "benchmarks.json"))
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = p.parse_args()
    if args.one:
        kind, kw = json.loads(args.one)
        result = RUNNERS[kind](args.data_dir, **kw)
        result.setdefault("peak_mb", peak_mb())
        print("RESULT " + json.dumps(result))
        return 0

    from cifar_lightning.core.run.hardware import hardware_info
    from cifar_lightning.core.run.provenance import package_versions
    from cifar_lightning.report.results import committed_path, render_benchmarks

    rows = []
    todo = [case for case in cases(args) if not args.match or args.match in case[0]]
    for group in _alternating_groups(todo):
        repeats = group[0][2].get("repeats", 1)
        runs: dict[str, list[dict]] = {name: [] for name, *_ in group}
        failed = set()
        for _ in range(repeats):  # round after round, the group's cases in turn
            for name, kind, kw, ref in group:
                if name in failed:
                    continue
                result = run_case(args, kind, {k: v for k, v in kw.items() if k != "repeats"})
                if isinstance(result, str):
                    print(f"{name}: failed\n{result}", file=sys.stderr)
                    failed.add(name)
                else:
                    runs[name].append(result)
        for name, kind, kw, ref in group:
            if name in failed or not runs[name]:
                continue
            row = {"case": name, **median_run(runs[name]), "reference": ref}
            if ref == PAIRED:  # the median of the runs' own ratios, and its interval over the runs
                paired = [r["paired_ratio"] for r in runs[name]]
                row["ratio"] = round(statistics.median(paired), 3)
                if len(paired) > 1:
                    row["ratio_interval"] = median_interval(paired)
            if repeats > 1:
                row["repeats"] = repeats
                row["runs_images_per_s"] = [round(r["images_per_s"], 1) for r in runs[name]]
                row["wall_s"] = round(sum(r["wall_s"] for r in runs[name]), 1)
            rows.append(row)
            rate = f"{row['images_per_s']:9.1f} img/s" if "images_per_s" in row else " " * 15
            note = f"  (median of {repeats} runs)" if repeats > 1 else ""
            print(f"{name:50s} {rate} {row['seconds']:7.1f} s  peak {row['peak_mb']:7.0f} MB{note}", flush=True)
    if Path(args.output).exists():  # keep the rows of cases not re-run now
        done = {r["case"] for r in rows}
        old = json.loads(Path(args.output).read_text())["rows"]
        rows = [r for r in old if r["case"] not in done] + rows
        order = [
            c[0]
            for c in cases(
                argparse.Namespace(**{**vars(args), "cases": ["data", "train", "mlx", "lightning", "import"]})
            )
        ]
        rows = [r for r in rows if r["case"] in order]  # rows of cases that no longer exist are dropped
        rows.sort(key=lambda r: order.index(r["case"]))
    add_ratios(rows)
    import torch

    device = best_device()
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else None
    report = {
        "hardware": hardware_info(device, gpu),
        "versions": package_versions("torch", "lightning", "mlx"),
        "python": platform.python_version(),
        "rows": rows,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    # the table as scripts/report.py puts it into Results.md, naming the file it was written to
    print("\n" + "\n".join(render_benchmarks(report, committed_path(Path(args.output), ROOT))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
