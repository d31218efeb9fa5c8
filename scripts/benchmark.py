"""Throughput benchmarks on real CIFAR-10: the library against plain reference loops.

    python scripts/benchmark.py --data-dir ../shared/data            # all cases, table + runs/benchmarks.json
    python scripts/benchmark.py --data-dir ../shared/data --cases data

Each case runs in its own process (so its peak memory is its own), one after the
other: never run two benchmarks at once. Rows:
  data/*   images per second out of the training loader, augmentation included:
           the DataModule's batched loader against the original project's pipeline
           (torchvision CIFAR10 with per-image RandomCrop, RandomHorizontalFlip,
           ToTensor and Normalize through a DataLoader, 0 and 2 workers).
  train/*  training images per second of `Trainer.fit` (or `MLXTrainer.fit`) against a
           plain loop over the same model, batches and optimiser; ratio = library / plain.
The first `warmup` steps of each training case are not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINUX_OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0"  # Debian's libopenblas0-pthread


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------- data cases
def bench_datamodule(data_dir: str, batches: int, model: str) -> dict:
    from cifar_lightning import CIFARDataModule, get_recipe

    r = get_recipe(model)
    dm = CIFARDataModule("cifar10", data_dir, batch_size=r.batch_size, download=False,
                         crop_padding=r.crop_padding, pad_mode=r.pad_mode, flip=r.flip)  # fmt: skip
    loader = dm.train_dataloader()
    start, n = time.perf_counter(), 0
    for i, (x, _) in enumerate(loader):
        n += len(x)
        if i + 1 >= batches:
            break
    return {"images_per_s": n / (time.perf_counter() - start), "images": n, "batch_size": r.batch_size}


def bench_torchvision(data_dir: str, batches: int, workers: int) -> dict:
    import torch
    import torchvision.transforms as T
    from torchvision.datasets import CIFAR10

    import torchvision.datasets.cifar as tv_cifar

    # the shared copy's md5s differ from the official ones: skip torchvision's checks
    CIFAR10._check_integrity = lambda self: True
    tv_cifar.check_integrity = lambda *args, **kwargs: True
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))])  # fmt: skip
    ds = CIFAR10(data_dir, train=True, transform=tf, download=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, num_workers=workers, drop_last=True)
    start, n = time.perf_counter(), 0
    for i, (x, _) in enumerate(loader):
        n += len(x)
        if i + 1 >= batches:
            break
    return {"images_per_s": n / (time.perf_counter() - start), "images": n, "batch_size": 64}


# ------------------------------------------------------------------ torch cases
class Timer:
    """Times steps after `warmup` of them, as a Lightning callback or by hand."""

    def __init__(self, warmup: int):
        self.warmup, self.count, self.start, self.images = warmup, 0, None, 0

    def step(self, batch_size: int) -> None:
        self.count += 1
        if self.count == self.warmup:
            self.start = time.perf_counter()
        elif self.count > self.warmup:
            self.images += batch_size

    def rate(self) -> float:
        return self.images / (time.perf_counter() - self.start)


def _torch_setup(data_dir, model, batch_size):
    import torch

    from cifar_lightning import CIFARClassifier, CIFARDataModule, get_recipe

    torch.manual_seed(0)
    r = get_recipe(model).with_overrides(batch_size=batch_size)
    dm = CIFARDataModule("cifar10", data_dir, batch_size=r.batch_size, download=False,
                         crop_padding=r.crop_padding, pad_mode=r.pad_mode, flip=r.flip)  # fmt: skip
    return dm, CIFARClassifier(model, 10, recipe={**r.to_dict(), "tta": False})


def bench_lightning(data_dir, model, steps, warmup, batch_size) -> dict:
    import lightning as L

    dm, module = _torch_setup(data_dir, model, batch_size)
    timer = Timer(warmup)

    class TimeSteps(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            timer.step(len(batch[1]))

    trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=steps, limit_val_batches=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[TimeSteps()])  # fmt: skip
    trainer.fit(module, datamodule=dm)
    return {"images_per_s": timer.rate(), "steps": steps, "batch_size": dm.hparams.batch_size}


def bench_plain_torch(data_dir, model, steps, warmup, batch_size) -> dict:
    """The reference: a bare loop, the same model, loader, loss and optimiser groups."""
    import torch

    dm, module = _torch_setup(data_dir, model, batch_size)
    net, recipe = module.model, module.recipe
    opt = module.make_optimizer()
    timer = Timer(warmup)
    net.train()
    for i, (x, y) in enumerate(dm.train_dataloader()):
        if i >= steps:
            break
        loss = module.loss(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()  # the per-step host sync Lightning's logging also makes
        timer.step(len(y))
    return {"images_per_s": timer.rate(), "steps": steps, "batch_size": dm.hparams.batch_size}


# -------------------------------------------------------------------- mlx cases
def _mlx_setup(data_dir, model, batch_size):
    import mlx.core as mx

    from cifar_lightning import CIFARDataModule, get_recipe
    from cifar_mlx_adapter import MLXClassifier

    mx.random.seed(0)
    r = get_recipe(model).with_overrides(batch_size=batch_size)
    dm = CIFARDataModule("cifar10", data_dir, batch_size=r.batch_size, download=False)
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

    trainer = MLXTrainer(max_epochs=1, limit_train_batches=steps, callbacks=[TimeSteps()], enable_progress_bar=False,
                         enable_checkpointing=False, default_root_dir="/tmp/mlx-bench")  # fmt: skip
    trainer.validate = lambda *a, **k: {}  # training throughput only
    trainer.fit(module, dm)
    return {"images_per_s": timer.rate(), "steps": steps, "batch_size": batch_size}


def bench_plain_mlx(data_dir, model, steps, warmup, batch_size) -> dict:
    """The reference: mlx-examples' compiled loop over the same model, batches and optimiser."""
    from functools import partial

    import mlx.core as mx
    import mlx.nn as nn

    from cifar_mlx_adapter.optim import recipe_optimizer
    from cifar_mlx_adapter.trainer import to_mlx

    dm, module = _mlx_setup(data_dir, model, batch_size)
    net = module.model
    opt = recipe_optimizer(module.recipe, steps)
    loss_and_grad = nn.value_and_grad(net, lambda x, y: module.loss(net(x), y))
    state = [net.state, opt.state, mx.random.state]  # without the random state, dropout's mask is frozen

    @partial(mx.compile, inputs=state, outputs=state)
    def step(x, y):
        loss, grads = loss_and_grad(x, y)
        opt.update(net, grads)
        return loss

    timer = Timer(warmup)
    for i, batch in enumerate(dm.train_dataloader()):
        if i >= steps:
            break
        step(*to_mlx(batch))
        mx.eval(state)
        timer.step(batch_size)
    return {"images_per_s": timer.rate(), "steps": steps, "batch_size": batch_size}


# ----------------------------------------------------------------------- driver
def cases(args) -> list[tuple[str, str, dict]]:
    out = []
    if "data" in args.cases:
        out += [("data/datamodule (small_cnn aug)", "datamodule", {"batches": 100, "model": "small_cnn"}),
                ("data/datamodule (fast aug)", "datamodule", {"batches": 30, "model": "fast"}),
                ("data/torchvision, 0 workers", "torchvision", {"batches": 100, "workers": 0}),
                ("data/torchvision, 2 workers", "torchvision", {"batches": 100, "workers": 2})]  # fmt: skip
    if "train" in args.cases:
        for model, steps, bs in (("small_cnn", args.steps, 128), ("fast", max(4, args.steps // 4), 256),
                                 ("resnet18", max(4, args.steps // 4), 64)):  # fmt: skip
            kw = {"model": model, "steps": steps, "warmup": 2, "batch_size": bs}
            out += [(f"train/{model}: Trainer.fit", "lightning", kw), (f"train/{model}: plain torch loop", "plain_torch", kw)]
    if "mlx" in args.cases:
        kw = {"model": "small_cnn", "steps": args.mlx_steps, "warmup": 2, "batch_size": 32}
        out += [("mlx/small_cnn: MLXTrainer.fit", "mlx_trainer", kw), ("mlx/small_cnn: plain compiled loop", "plain_mlx", kw)]
    return out


RUNNERS = {"datamodule": bench_datamodule, "torchvision": bench_torchvision, "lightning": bench_lightning,
           "plain_torch": bench_plain_torch, "mlx_trainer": bench_mlx_trainer, "plain_mlx": bench_plain_mlx}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description="Throughput benchmarks (prints a table, writes JSON).")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--cases", nargs="+", default=["data", "train", "mlx"], choices=["data", "train", "mlx"])
    p.add_argument("--steps", type=int, default=24, help="training steps per torch case (fast and resnet18: a quarter)")
    p.add_argument("--mlx-steps", type=int, default=8)
    p.add_argument("--output", default=str(ROOT / "runs" / "benchmarks.json"))
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = p.parse_args()
    if args.one:
        kind, kw = json.loads(args.one)
        result = RUNNERS[kind](args.data_dir, **kw)
        result["peak_mb"] = peak_mb()
        print("RESULT " + json.dumps(result))
        return 0

    from cifar_lightning.core.reporting import hardware_info, package_versions, render_benchmarks

    rows = []
    for name, kind, kw in cases(args):
        start = time.perf_counter()
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        if kind in ("mlx_trainer", "plain_mlx") and Path(LINUX_OPENBLAS).exists():
            env["LD_PRELOAD"] = LINUX_OPENBLAS  # mlx[cpu]'s reference BLAS is ~7x slower than OpenBLAS here
        proc = subprocess.run([sys.executable, __file__, "--data-dir", args.data_dir, "--one", json.dumps([kind, kw])],
                              capture_output=True, text=True, env=env)  # fmt: skip
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
            print(f"{name}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append({"case": name, **json.loads(line[0][7:]), "wall_s": round(time.perf_counter() - start, 1),
                     "ld_preload": env.get("LD_PRELOAD")})  # fmt: skip
        print(f"{name:40s} {rows[-1]['images_per_s']:9.1f} img/s  peak {rows[-1]['peak_mb']:7.0f} MB", flush=True)
    if Path(args.output).exists():  # keep the rows of cases not re-run now
        done = {r["case"] for r in rows}
        old = json.loads(Path(args.output).read_text())["rows"]
        rows = [r for r in old if r["case"] not in done] + rows
        order = [c[0] for c in cases(argparse.Namespace(**{**vars(args), "cases": ["data", "train", "mlx"]}))]
        rows.sort(key=lambda r: order.index(r["case"]) if r["case"] in order else len(order))
    for row in rows:  # ratios side by side: library / plain reference of the same model
        if row["case"].endswith(("Trainer.fit", "MLXTrainer.fit")):
            ref = next((r for r in rows if r["case"].startswith(row["case"].split(":")[0] + ":") and "plain" in r["case"]), None)
            if ref:
                row["ratio"] = round(row["images_per_s"] / ref["images_per_s"], 3)
    report = {"hardware": hardware_info("cpu"), "versions": package_versions("torch", "lightning", "mlx"),
              "python": platform.python_version(), "rows": rows}  # fmt: skip
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print("\n" + "\n".join(render_benchmarks(report)))  # scripts/report.py puts it into Results.md
    return 0


if __name__ == "__main__":
    sys.exit(main())
