"""The GPU measurements as one command: the speed claims, measured on one NVIDIA GPU in at most 8 minutes.

    python scripts/benchmark.py --gpu --data-dir DATA                 # writes runs/gpu/<gpu>.json, prints the table
    python scripts/benchmark.py --gpu --smoke --data-dir DATA --output X.json   # the same steps, tiny, on the CPU

DATA is the folder holding cifar-10-batches-py/ (nothing is downloaded). It needs torch,
Lightning and the project's other dependencies (`pip install -e .`); MLX is measured only
where `mlx[cuda]` is installed. It installs nothing. Parts, in this order, each recorded
as "measured", "skipped" (with the reason) or "failed" (with the error), so one part's
failure does not stop the others; a part or seed that would run past `--budget-s`
(default 480 s, counted from the start) is skipped and says so:

  host_reads  host reads per optimizer step (``.item()``, ``.tolist()``, ``bool()``, ``float()``,
              ``int()``, ``.cpu()``, ``.numpy()`` on torch tensors; ``.item()``, ``.tolist()``,
              ``bool()``, ``float()``, ``int()`` on MLX arrays) in each framework's loop, counted
              in a few steps of a run made through the library's run lifecycle (the fast
              recipe, logging twice in the window): the median step (an unlogged one) and
              the largest (a logged one). MLX only where mlx is installed.
  train       `Trainer.fit` against the plain torch loop on the same model, batches and
              optimiser (scripts/benchmark.py's train/* cases, on CUDA), and on mlx[cuda]
              MLXTrainer.fit against the plain compiled MLX loop.
  recipes     the fast recipe (`--model fast`, SGD, 10 epochs) and the Muon recipe (`--model
              fast --optimizer muon`, 8 epochs), 3 seeds each, interleaved, each through the
              run lifecycle (`core.run.run(RunConfig, TorchBackend("cuda"))`) with
              `--limit-val-batches 0`. Per run: the test accuracy (test-time augmented),
              seconds by airbench's protocol, and run.json's `train_time_s`, `throughput`
              and `memory`. A first, shorter run of each recipe (a few batches an epoch)
              warms up the GPU and is left out.
  compare     PyTorch on CUDA against MLX on mlx[cuda]: `cifar-compare --model small_cnn
              --epochs 1 --seeds 2` (`cifar_lightning.cli.compare`); skipped where mlx has
              no CUDA backend (the JSON says why).

Seconds by airbench's protocol (github.com/KellerJordan/cifar10-airbench, airbench94.py's
and airbench94_muon.py's `main`: CUDA events around the whitening initialisation, around
each epoch's training loop, and around the final test-time-augmented evaluation, summed;
the data already on the GPU; the per-epoch evaluation outside the clock; a first warm-up
run left out): here the whitening initialisation, the training epochs' steps (run.json's
`throughput.epoch_s`, each from the epoch's start to its last step with the device idle,
warm-up steps included) and the final test (`trainer.test`, TTA included), each read with
`torch.cuda.synchronize()`. `fit_call_s` adds what Lightning does around the steps (setup,
the per-epoch checkpoint). The training split is uploaded inside fit, so its upload
(about 150 MB of uint8) is inside the clock, where airbench's is not.

On the project's GPU machine (a copy of this repository; python3 3.12 with torch and
Lightning; no internet, no mlx): CIFAR-10 (about 180 MB) is larger than one call carries,
so it goes over in parts first. Here, once:

    echo /.gpudata/ >> .git/info/exclude; mkdir -p .gpudata
    tar -C /work/shared/data -cf - cifar-10-batches-py | split -b 48M - .gpudata/cifar.tar.part-

then one call for each of the first parts (aa, ab, ac), carrying `.gpudata/cifar.tar.part-XX`, with the command
`mkdir -p /tmp/parts && cp .gpudata/cifar.tar.part-* /tmp/parts/`, and, in the same
machine's last call (carrying the last part):

    mkdir -p /tmp/parts /tmp/cifar && cp .gpudata/cifar.tar.part-* /tmp/parts/ && cat /tmp/parts/* | tar -C /tmp/cifar -xf - && PYTHONUNBUFFERED=1 PYTHONPATH=$PWD python3 scripts/benchmark.py --gpu --data-dir /tmp/cifar --output $OUT/gpu.json 2>&1 | tee $OUT/gpu.log

(timeout_s 600); then copy gpu.json into runs/gpu/ and run scripts/report.py.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shlex
import statistics
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark as cases  # noqa: E402  (scripts/benchmark.py: the train/* cases)

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 480  # 8 minutes, from the start of the command
RECIPES = {"fast": ("fast", None), "fast_muon": ("fast", "muon")}  # recipe: (--model, --optimizer)
TORCH_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy")
MLX_READS = ("item", "tolist", "__bool__", "__float__", "__int__")
PROTOCOL = (
    "airbench's (github.com/KellerJordan/cifar10-airbench, airbench94.py): whitening initialisation + "
    "the training epochs' steps + the final test-time-augmented test, the device idle at each reading; "
    "per-epoch evaluation off (--limit-val-batches 0); a first warm-up run of each recipe left out"
)


@dataclass(frozen=True)
class Setting:
    """How much each part measures. `None` where the recipe's own value holds."""

    name: str
    device: str  # torch's accelerator
    seeds: int
    train_subset: int | None  # the recipe runs'
    batch_size: int | None
    epochs: float | None
    limit_train_batches: int | None
    limit_test_batches: int | None
    warmup_batches: int  # per epoch, in each recipe's warm-up run
    train_cases: tuple  # (model, steps, batch size or None: the recipe's)
    train_warmup: int  # steps of each train case left out
    read_steps: int  # steps of each host-read run
    read_batch: int
    compare_seeds: int
    compare_epochs: float
    compare_subset: int | None
    compare_reserve_s: float  # kept for the comparison while the recipes run (when mlx[cuda] is there)
    muon_dtype: str | None = None  # None: the recipe's (bfloat16); the smoke's CPU runs float32, far faster there


FULL = Setting(
    name="full",
    device="cuda",
    seeds=3,
    train_subset=None,
    batch_size=None,
    epochs=None,
    limit_train_batches=None,
    limit_test_batches=None,
    warmup_batches=5,
    train_cases=(("small_cnn", 60, None), ("fast", 30, None), ("resnet18", 30, None)),
    train_warmup=5,
    read_steps=12,
    read_batch=256,
    compare_seeds=2,
    compare_epochs=1,
    compare_subset=None,
    compare_reserve_s=150,
)
SMOKE = Setting(
    name="smoke",
    device="cpu",
    seeds=1,
    train_subset=32,
    batch_size=8,
    epochs=1,
    limit_train_batches=2,
    limit_test_batches=1,
    warmup_batches=1,
    train_cases=(("small_cnn", 3, 8), ("fast", 3, 8)),
    train_warmup=1,
    read_steps=4,
    read_batch=8,
    compare_seeds=1,
    compare_epochs=1,
    compare_subset=32,
    compare_reserve_s=0,
    muon_dtype="float32",
)


class Budget:
    """The command's time: `seconds` from its start."""

    def __init__(self, seconds: float):
        self.seconds, self.start = seconds, time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def allows(self, estimate: float) -> bool:
        return self.elapsed() + estimate <= self.seconds


def failed(e: BaseException) -> dict:
    traceback.print_exc()
    return {"status": "failed", "error": f"{type(e).__name__}: {e}"}


def over_budget(budget: Budget) -> dict:
    return {"status": "skipped", "reason": f"over the time budget ({budget.seconds:g} s)"}


# ---------------------------------------------------------------- host reads
class HostReads:
    """Counts host reads while `patch` is active: in total, those of data on an accelerator
    (`device`), by call, and per step between the marks a trainer's callback makes."""

    def __init__(self):
        self.total = self.device = 0
        self.by_call: dict[str, int] = {}
        self.marks: list[int] = []  # the total at the epoch's start, then at each step's end

    def add(self, name: str, on_device: bool) -> None:
        self.total += 1
        self.device += on_device
        self.by_call[name] = self.by_call.get(name, 0) + 1

    @contextmanager
    def patch(self, cls, names, label: str, on_device):
        """Count each call of `cls`'s methods `names` (as "label.name"); restored on exit."""
        saved = []
        try:
            for name in names:
                inherited = name not in cls.__dict__
                original = getattr(cls, name)
                saved.append((name, inherited, cls.__dict__.get(name)))

                def counted(self_, *args, _original=original, _name=f"{label}.{name}", **kwargs):
                    self.add(_name, bool(on_device(self_)))
                    return _original(self_, *args, **kwargs)

                setattr(cls, name, counted)
            yield self
        finally:
            for name, inherited, original in reversed(saved):
                if inherited:
                    delattr(cls, name)
                else:
                    setattr(cls, name, original)

    def record(self, steps: int, log_every: int, device: str) -> dict:
        per_step = [b - a for a, b in zip(self.marks, self.marks[1:])]
        return {
            "status": "measured",
            "device": device,
            "steps": len(per_step),
            "log_every_n_steps": log_every,
            "per_step": per_step,
            "reads_per_step": int(statistics.median_low(per_step)) if per_step else None,
            "max_reads_in_a_step": max(per_step) if per_step else None,
            "before_steps": self.marks[0] if self.marks else self.total,
            "after_steps": self.total - self.marks[-1] if self.marks else 0,
            "device_reads": self.device,
            "by_call": dict(sorted(self.by_call.items())),
        }


def read_run_config(setting: Setting, data_dir: str, folder: Path):
    from cifar_lightning.core.run import RunConfig

    return RunConfig(
        model="fast",
        epochs=1,
        batch_size=setting.read_batch,
        train_subset=setting.read_steps * setting.read_batch,
        seed=0,
        data_dir=data_dir,
        download=False,
        output_dir=str(folder),
        overwrite=True,
        limit_val_batches=0,
        limit_test_batches=1,
        tta=False,  # the steps are what is counted; the test only ends the run
        log_every_n_steps=max(1, setting.read_steps // 2),
    )


def torch_host_reads(setting: Setting, data_dir: str, work: Path) -> dict:
    import lightning as L
    import torch

    from cifar_lightning.backend import TorchBackend
    from cifar_lightning.core.run import run

    reads = HostReads()

    class Marks(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            reads.marks.append(reads.total)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            reads.marks.append(reads.total)

    config = read_run_config(setting, data_dir, work / "reads-pytorch")
    with reads.patch(torch.Tensor, TORCH_READS, "torch.Tensor", lambda t: t.device.type != "cpu"):
        run(config, TorchBackend(accelerator=setting.device), callbacks=(Marks(),))
    return reads.record(setting.read_steps, config.log_every_n_steps, setting.device)


def mlx_host_reads(setting: Setting, data_dir: str, work: Path, mlx: dict) -> dict:
    if not mlx["installed"]:
        return {"status": "skipped", "reason": mlx["reason"]}
    import mlx.core as mx

    from cifar_lightning.core.run import run
    from cifar_mlx_adapter import Callback
    from cifar_mlx_adapter.backend import MLXBackend

    reads = HostReads()

    class Marks(Callback):
        def on_train_epoch_start(self, trainer, module):
            reads.marks.append(reads.total)

        def on_train_batch_end(self, trainer, module, batch_idx):
            reads.marks.append(reads.total)

    config = read_run_config(setting, data_dir, work / "reads-mlx")
    backend = MLXBackend(cpu=not mlx["cuda"])
    with reads.patch(mx.array, MLX_READS, "mx.array", lambda a: mlx["cuda"]):
        run(config, backend, callbacks=(Marks(),))
    return reads.record(setting.read_steps, config.log_every_n_steps, "cuda" if mlx["cuda"] else "cpu")


# ---------------------------------------------------------------- train cases
def train_part(setting: Setting, data_dir: str, budget: Budget, mlx: dict) -> dict:
    """scripts/benchmark.py's train/* cases on `setting.device`, in this process, one at a time."""
    from cifar_lightning import get_recipe

    rows = []

    def measure(case, runner, kw, reference):
        if not budget.allows(0):
            rows.append({"case": case, **over_budget(budget), "reference": reference})
            return
        peak = gpu_peak(reset=True)
        start = time.perf_counter()
        try:
            result = runner(data_dir, **kw)
        except Exception as e:  # a failed case is recorded, the others run
            rows.append({"case": case, **failed(e), "reference": reference})
            return
        peak = gpu_peak()
        row = {"case": case, "status": "measured", **result, "wall_s": round(time.perf_counter() - start, 2)}
        rows.append({**row, "gpu_peak_mb": peak, "device": kw.get("device", row.get("device")), "reference": reference})
        print(f"{case:45s} {result['images_per_s']:10.1f} img/s", flush=True)

    for model, steps, batch_size in setting.train_cases:
        kw = {
            "model": model,
            "steps": steps,
            "warmup": setting.train_warmup,
            "batch_size": batch_size or get_recipe(model).batch_size,
            "device": setting.device,
        }
        plain = f"train/{model}: plain torch loop"
        measure(f"train/{model}: Trainer.fit", cases.bench_lightning, kw, plain)
        measure(plain, cases.bench_plain_torch, kw, None)
    mlx_rows = {"status": "skipped", "reason": mlx["reason"]}
    if mlx["cuda"]:
        model, steps, batch_size = setting.train_cases[0]
        kw = {"model": model, "steps": steps, "warmup": setting.train_warmup, "batch_size": batch_size or 128}
        plain = f"mlx/{model}: plain compiled loop"
        measure(f"mlx/{model}: MLXTrainer.fit", cases.bench_mlx_trainer, {**kw}, plain)
        measure(plain, cases.bench_plain_mlx, {**kw}, None)
        mlx_rows = {"status": "measured"}
    by_case = {r["case"]: r for r in rows}
    for row in rows:
        ref = by_case.get(row.get("reference") or "")
        if ref and "images_per_s" in row and "images_per_s" in ref:
            row["ratio"] = round(row["images_per_s"] / ref["images_per_s"], 3)
    return {"status": "measured", "rows": rows, "mlx": mlx_rows}


def gpu_peak(reset: bool = False) -> float | None:
    """torch's peak CUDA memory in MB since the last reset (None without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return None
    if reset:
        torch.cuda.reset_peak_memory_stats()
        return None
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


# ---------------------------------------------------------------- recipes
def timed_backend(device: str, precision: str):
    """A TorchBackend whose whitening, fit and test calls are timed, the device idle at each reading."""
    from cifar_lightning.backend import TorchBackend

    class TimedTorchBackend(TorchBackend):
        def start(self):
            self.spans = {}
            return super().start()

        def _timed(self, name, call, *args):
            self.sync()
            start = time.perf_counter()
            out = call(*args)
            self.sync()
            self.spans[name] = time.perf_counter() - start
            return out

        def init_whitening(self, module, data, bias):
            return self._timed("whitening_s", super().init_whitening, module, data, bias)

        def fit(self, trainer, module, data, resume):
            return self._timed("fit_s", super().fit, trainer, module, data, resume)

        def test(self, trainer, module, data):
            return self._timed("test_s", super().test, trainer, module, data)

    return TimedTorchBackend(accelerator=device, precision=precision)


def recipe_run(setting, data_dir, folder, recipe, seed, precision, warmup=False) -> dict:
    """One run of `recipe` through the run lifecycle; its figures and run.json's records."""
    from cifar_lightning.core.run import RunConfig, run

    model, optimizer = RECIPES[recipe]
    config = RunConfig(
        model=model,
        optimizer=optimizer,
        muon_dtype=setting.muon_dtype if optimizer == "muon" else None,
        seed=seed,
        data_dir=data_dir,
        download=False,
        output_dir=str(folder),
        overwrite=True,
        train_subset=setting.train_subset,
        batch_size=setting.batch_size,
        epochs=setting.epochs,
        limit_val_batches=0,
        limit_train_batches=setting.warmup_batches if warmup else setting.limit_train_batches,
        limit_test_batches=1 if warmup else setting.limit_test_batches,
    )
    backend = timed_backend(setting.device, precision)
    start = time.perf_counter()
    record = run(config, backend).record
    wall = time.perf_counter() - start
    spans = backend.spans
    steps_s = sum(record["throughput"]["epoch_s"])
    parts = {
        "whitening_s": round(spans.get("whitening_s", 0.0), 3),
        "train_steps_s": round(steps_s, 3),
        "test_s": round(spans["test_s"], 3),
    }
    return {
        "seed": seed,
        "test_accuracy": record["test_accuracy"],
        "test_accuracy_no_tta": record["test_accuracy_no_tta"],
        "seconds": round(sum(parts.values()), 3),
        "seconds_parts": parts,
        "fit_call_s": round(spans["fit_s"], 3),
        "train_time_s": record["train_time_s"],
        "validation_time_s": record["validation_time_s"],
        "test_time_s": record["test_time_s"],
        "throughput": record["throughput"],
        "memory": record["memory"],
        "epochs": record["epochs"],
        "total_steps": record["hyperparameters"]["total_steps"],
        "numerics": record["numerics"],
        "command": record["command"],
        "wall_s": round(wall, 2),
    }


def summary(runs: list[dict]) -> dict:
    def mean_sd(values):
        values = [v for v in values if v is not None]
        if not values:
            return None, None
        return round(statistics.fmean(values), 4), round(statistics.stdev(values), 4) if len(values) > 1 else None

    out = {"runs": len(runs)}
    for key, values in (
        ("test_accuracy", [r["test_accuracy"] for r in runs]),
        ("seconds", [r["seconds"] for r in runs]),
        ("train_time_s", [r["train_time_s"] for r in runs]),
        ("images_per_s", [r["throughput"]["images_per_s"] for r in runs]),
    ):
        out[f"{key}_mean"], out[f"{key}_sd"] = mean_sd(values)
    return out


def recipes_part(setting, data_dir, work, budget, precision, reserve) -> dict:
    """Each recipe's warm-up, then its seeds, the recipes interleaved so both get as many."""
    out = {name: {"status": "measured", "runs": [], "skipped_seeds": []} for name in RECIPES}
    estimate = dict.fromkeys(RECIPES, 0.0)
    for name in RECIPES:
        start = time.perf_counter()
        try:
            warm = recipe_run(setting, data_dir, work / f"{name}-warmup", name, 0, precision, warmup=True)
            out[name]["warmup"] = {"wall_s": warm["wall_s"], "batches_per_epoch": setting.warmup_batches}
        except Exception as e:
            out[name] = {**failed(e), "runs": [], "skipped_seeds": list(range(setting.seeds))}
        estimate[name] = time.perf_counter() - start
    for seed in range(setting.seeds):
        for name in RECIPES:
            entry = out[name]
            if entry["status"] == "failed":
                continue
            if not budget.allows(estimate[name] + reserve):
                entry["skipped_seeds"].append(seed)
                entry["skipped_reason"] = f"over the time budget ({budget.seconds:g} s)"
                continue
            try:
                result = recipe_run(setting, data_dir, work / f"{name}-seed{seed}", name, seed, precision)
            except Exception as e:
                out[name] = {**entry, **failed(e)}
                continue
            entry["runs"].append(result)
            estimate[name] = result["wall_s"]
            print(
                f"{name} seed {seed}: {100 * result['test_accuracy']:.2f}% in {result['seconds']:.2f} s "
                f"(airbench's protocol), train_time_s {result['train_time_s']}",
                flush=True,
            )
    for name, entry in out.items():
        entry["summary"] = summary(entry["runs"])
        model, optimizer = RECIPES[name]
        entry["flags"] = f"--model {model}" + (f" --optimizer {optimizer}" if optimizer else "")
    return out


# ---------------------------------------------------------------- compare
def mlx_status() -> dict:
    """Whether mlx is installed here and whether it runs on CUDA (mlx[cuda])."""
    try:
        import mlx.core as mx
    except ImportError:
        return {
            "installed": False,
            "cuda": False,
            "reason": "mlx is not installed here (pip install 'mlx[cuda]' measures it on the GPU)",
        }
    cuda = bool(getattr(mx, "cuda", None) is not None and mx.cuda.is_available())
    return {
        "installed": True,
        "version": getattr(mx, "__version__", None),
        "cuda": cuda,
        "default_device": str(mx.default_device()),
        "reason": None
        if cuda
        else f"mlx {getattr(mx, '__version__', '')} here has no CUDA backend (mx.cuda.is_available() is False: "
        "not the mlx[cuda] build)",
    }


def summarize_comparison(folder: Path) -> dict:
    """The runs of a cifar-compare folder (<framework>-seed<k>/run.json): each run's figures
    and each framework's means, with MLX's images/s over PyTorch's."""
    runs = []
    for path in sorted(Path(folder).glob("*-seed*/run.json")):
        record = json.loads(path.read_text())
        if record.get("status", "finished") != "finished":
            continue
        memory = record.get("memory") or {}
        primary = memory.get("primary")
        runs.append(
            {
                "framework": record["framework"],
                "seed": record["seed"],
                "device": record["hardware"]["accelerator"],
                "test_accuracy": record["test_accuracy"],
                "train_time_s": record["train_time_s"],
                "images_per_s": (record.get("throughput") or {}).get("images_per_s"),
                "memory_counter": primary,
                "peak_mb": round(memory["peak_bytes"][primary] / 2**20, 1) if primary else None,
            }
        )
    frameworks = {}
    for name in ("pytorch", "mlx"):
        mine = [r for r in runs if r["framework"] == name]
        rates = [r["images_per_s"] for r in mine if r["images_per_s"]]
        frameworks[name] = {
            "runs": len(mine),
            "test_accuracy_mean": round(statistics.fmean(r["test_accuracy"] for r in mine), 4) if mine else None,
            "images_per_s_mean": round(statistics.fmean(rates), 1) if rates else None,
            "train_time_s_mean": round(statistics.fmean(r["train_time_s"] for r in mine), 2) if mine else None,
        }
    a, b = frameworks["mlx"]["images_per_s_mean"], frameworks["pytorch"]["images_per_s_mean"]
    return {
        "status": "measured",
        "folder": str(folder),
        "runs": runs,
        "frameworks": frameworks,
        "mlx_over_pytorch_images_per_s": round(a / b, 3) if a and b else None,
    }


def compare_part(setting, data_dir, work, budget, mlx) -> dict:
    if not mlx["cuda"]:
        return {"status": "skipped", "reason": mlx["reason"]}
    from cifar_lightning.cli import compare

    folder = work / "compare"
    argv = ["--model", "small_cnn", "--epochs", f"{setting.compare_epochs:g}", "--seeds", str(setting.compare_seeds)]
    argv += ["--data-dir", data_dir, "--no-download", "--limit-val-batches", "0", "--output-dir", str(folder)]
    if setting.compare_subset:
        argv += ["--train-subset", str(setting.compare_subset)]
    try:
        compare.main(argv)
    except SystemExit as e:  # its usage errors exit with a message already printed
        return {"status": "failed", "error": f"cifar-compare exited with status {e.code}", "command": argv}
    return {**summarize_comparison(folder), "command": shlex.join(["python", "scripts/compare.py", *argv])}


# ---------------------------------------------------------------- driver
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="The GPU measurements as one command (see the docstring).")
    p.add_argument("--data-dir", default="data", help="folder holding cifar-10-batches-py/ (default: data)")
    p.add_argument("--output", help="the JSON written (default: runs/gpu/<gpu name>.json; --smoke: in --work-dir)")
    p.add_argument("--work-dir", help="where the runs' folders go (default: a new temporary folder)")
    p.add_argument("--budget-s", type=float, default=BUDGET_S, help=f"seconds in all (default: {BUDGET_S})")
    p.add_argument("--seeds", type=int, help="seeds of each recipe (default: 3; --smoke: 1)")
    p.add_argument("--precision", default="32-true", help="torch runs' Lightning precision (default: 32-true)")
    p.add_argument("--smoke", action="store_true", help="tiny subsets, a few steps, on the CPU (the test's setting)")
    return p


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    budget = Budget(args.budget_s)
    setting = SMOKE if args.smoke else FULL
    if args.seeds:
        setting = Setting(**{**setting.__dict__, "seeds": args.seeds})
    try:
        import torch
    except ImportError:
        print("benchmark --gpu: torch is not installed here (pip install -e .)", file=sys.stderr)
        return 2
    if setting.device == "cuda" and not torch.cuda.is_available():
        print(
            "benchmark --gpu: no CUDA GPU is visible to torch; --smoke runs the same steps on the CPU", file=sys.stderr
        )
        return 2
    from cifar_lightning.core.run.hardware import hardware_info
    from cifar_lightning.core.run.provenance import code_version, package_versions
    from cifar_lightning.report.results import render_gpu_benchmark

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="cifar-gpu-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.get_device_name(0) if setting.device == "cuda" else None
    output = Path(
        args.output or (work / "gpu-smoke.json" if args.smoke else ROOT / "runs" / "gpu" / f"{slug(gpu)}.json")
    )
    mlx = mlx_status()
    print(
        f"benchmark --gpu ({setting.name}) on {gpu or setting.device}; runs in {work}; mlx: {mlx['reason'] or 'cuda'}"
    )
    report = {
        "kind": "gpu-benchmark",
        "setting": setting.name,
        "command": shlex.join(["python", "scripts/benchmark.py", "--gpu", *argv]),
        "created": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "device": setting.device,
        "hardware": hardware_info(setting.device, gpu),
        "versions": package_versions("torch", "lightning", "torchmetrics", "mlx", "mlx-cuda"),
        "code": code_version(),
        "python": platform.python_version(),
        "budget_s": args.budget_s,
        "protocol": PROTOCOL,
        "mlx": mlx,
    }
    reads = {}
    for name, measure in (
        ("pytorch", lambda: torch_host_reads(setting, args.data_dir, work)),
        ("mlx", lambda: mlx_host_reads(setting, args.data_dir, work, mlx)),
    ):
        try:
            reads[name] = measure() if budget.allows(0) else over_budget(budget)
        except Exception as e:
            reads[name] = failed(e)
    report["host_reads"] = reads
    try:
        report["train"] = train_part(setting, args.data_dir, budget, mlx)
    except Exception as e:
        report["train"] = failed(e)
    reserve = setting.compare_reserve_s if mlx["cuda"] else 0
    report["recipes"] = recipes_part(setting, args.data_dir, work, budget, args.precision, reserve)
    try:
        report["compare"] = compare_part(setting, args.data_dir, work, budget, mlx)
    except Exception as e:
        report["compare"] = failed(e)
    report["wall_s"] = round(budget.elapsed(), 1)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print("\n" + "\n".join(render_gpu_benchmark(report, output.name)))
    print(f"wrote {output} in {report['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
