"""The comparison users came for: throughput and memory by one protocol in both frameworks'
run.json, the machine's facts, the compare command, and its statistics.

Planted faults, each made a test here fail: the warm-up left in (the clock measuring from
each epoch's start, never restarted at the warm-up's end: 15 steps measured, not 10); the
clock left running across an epoch's end (the sleeping validation entered it); MLX's clock
read without ``mx.eval`` (MLXBackend.sync a no-op: readings not preceded by an evaluation);
the memory counters never sampled (peaks of 0); compare.py training a finished run again
(refused by the run itself: the command failed); compare.py starting the MLX run from its
own initialisation (no --weights: conv1.weight differs); the geometric mean taken as the
ratios' arithmetic mean; compare.py restarting a run killed before its first checkpoint
without --overwrite (refused as unfinished, with nothing to resume: the command failed).
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import write_cifar

from cifar_lightning.cli.fit import main as fit_main
from cifar_lightning.cli.fit_mlx import main as fit_mlx_main
from cifar_lightning.core.run import hardware
from cifar_lightning.core.run.throughput import StepClock
from cifar_lightning.report.comparison import geometric_ratio, paired_difference
from cifar_mlx_adapter import Callback

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = ["pytorch", "mlx"]


# ------------------------------------------------------------------ the clock
class FakeClock:
    """A clock that moves only when told (seconds), and counts the waits for the device."""

    def __init__(self):
        self.now, self.syncs = 0.0, 0

    def __call__(self):
        return self.now

    def sync(self):
        self.syncs += 1


def test_the_step_clock_measures_the_steps_after_the_warm_up_and_between_epochs_nothing():
    """Two epochs of 12 steps of 8 images, each measured step 0.5 s; the 5 warm-up steps take
    10 s each and 100 s pass between the epochs (validation, a checkpoint): 19 measured steps
    in 9.5 s, 16 images/s, every window at 16; each epoch's seconds are its steps'."""
    fake = FakeClock()
    clock = StepClock(fake.sync, "fake", warmup=5, window=4, clock=fake)
    for epoch in range(2):
        clock.epoch_start()
        for step in range(12):
            fake.now += 10.0 if clock.steps < 5 else 0.5
            clock.step_end(8, last_of_epoch=step == 11)
        fake.now += 100.0
    r = clock.record()
    assert (r["measured_steps"], r["measured_images"], r["measured_s"]) == (19, 152, 9.5)
    assert r["images_per_s"] == r["median_images_per_s"] == 16.0 and r["iqr_images_per_s"] == [16.0, 16.0]
    assert r["epoch_s"] == [10.0 * 5 + 0.5 * 7, 0.5 * 12] and r["warmup_steps"] == 5
    assert r["windows"] == 2 + 3  # epoch 1: 4 + 3 steps; epoch 2: 4 + 4 + 4
    assert fake.syncs == len([None for _ in range(fake.syncs)]) > 0  # every reading waited for the device


def test_a_run_no_longer_than_its_warm_up_measures_nothing():
    fake = FakeClock()
    clock = StepClock(fake.sync, "fake", warmup=5, clock=fake)
    clock.epoch_start()
    for step in range(5):
        fake.now += 1.0
        clock.step_end(8, last_of_epoch=step == 4)
    r = clock.record()
    assert r["images_per_s"] is None and r["measured_steps"] == 0 and r["epoch_s"] == [5.0]


WARMUP_SLEEP, VALIDATION_SLEEP = 0.6, 1.5  # seconds: 3 s of warm-up and 3 s of validation against ~2 s of steps


class Reference:
    """The protocol computed by the test itself, from a clock read after every step with the
    device waited for: the seconds of the steps after the warm-up, each from the previous
    step's end (or its epoch's start). Also sleeps in the warm-up steps and in validation,
    which the record must leave out."""

    def __init__(self, sync, warmup: int):
        self.sync, self.warmup, self.steps, self.seconds, self.last = sync, warmup, 0, 0.0, None

    def epoch_start(self):
        self.sync()
        self.last = time.perf_counter()

    def step_end(self):
        self.steps += 1
        if self.steps <= self.warmup:
            time.sleep(WARMUP_SLEEP)
        self.sync()
        now = time.perf_counter()
        if self.steps > self.warmup:
            self.seconds += now - self.last
        self.last = now


class TorchReference(L.Callback):
    def __init__(self):
        self.ref = Reference(lambda: None, 5)

    def on_train_epoch_start(self, trainer, pl_module):
        self.ref.epoch_start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.ref.step_end()

    def on_validation_start(self, trainer, pl_module):
        time.sleep(VALIDATION_SLEEP)


class MLXReference(Callback):
    def __init__(self):
        self.ref = None

    def on_fit_start(self, trainer, module):
        import mlx.core as mx

        self.ref = Reference(lambda: mx.eval(module.model.parameters(), trainer.optimizer.state), 5)
        validate = trainer.validate

        def slow_validate(*args, **kwargs):
            time.sleep(VALIDATION_SLEEP)
            return validate(*args, **kwargs)

        trainer.validate = slow_validate

    def on_train_epoch_start(self, trainer, module):
        self.ref.epoch_start()

    def on_train_batch_end(self, trainer, module, batch_idx):
        self.ref.step_end()


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_throughput_counts_the_steps_after_the_warm_up_with_the_device_waited_for(
    framework, cifar10_dir, tmp_path, monkeypatch
):
    """3 epochs of 5 steps of 20 images; the warm-up steps sleep 0.6 s each (3 s) and each
    validation 1.5 s (3 s inside the measured span): the record's measured seconds equal the
    test's own reading of the 10 steps after the warm-up (device waited for after each
    step), within 25% and 0.3 s, so neither sleep is in them, and its images per second are
    those steps' images over those seconds. Memory is sampled at every reading of the step
    clock and once more after training."""
    readings: list = []
    spy_on_clock_readings(monkeypatch, readings)
    ref = TorchReference() if framework == "pytorch" else MLXReference()
    argv = [
        "--data-dir",
        str(cifar10_dir),
        "--no-download",
        "--model",
        "small_cnn",
        "--epochs",
        "3",
        "--batch-size",
        "20",
        "--train-subset",
        "100",
        "--limit-val-batches",
        "1",
        "--log-every-n-steps",
        "50",
        "--output-dir",
        str(tmp_path / "run"),
    ]  # no logged step: the trainer waits for none itself
    if framework == "pytorch":
        record = fit_main([*argv, "--accelerator", "cpu"], callbacks=(ref,))
    else:
        record = fit_mlx_main([*argv, "--cpu"], callbacks=(ref,))
    t = record["throughput"]
    assert (t["warmup_steps"], t["measured_steps"], t["measured_images"]) == (5, 10, 200)
    assert t["synchronized_by"] == ("mx.eval" if framework == "mlx" else "none: torch computes synchronously on a CPU")
    ours = ref.ref.seconds
    assert abs(t["measured_s"] - ours) < 0.25 * ours + 0.3, (t["measured_s"], ours)
    assert t["images_per_s"] == pytest.approx(200 / t["measured_s"], rel=1e-2)
    assert len(t["epoch_s"]) == 3 and t["epoch_s"][0] > 5 * WARMUP_SLEEP  # an epoch's seconds hold its warm-up
    assert record["train_time_s"] > t["measured_s"]
    assert record["memory"]["samples"] == len(readings) + 1 and len(readings) >= 6, (record["memory"], len(readings))


def spy_on_clock_readings(monkeypatch, waits: list):
    """Record, in `waits`, a ("read",) for every reading of the step clock: wraps the clock
    each StepClock is made with."""
    from cifar_lightning.core.run import throughput

    made = throughput.StepClock.__init__

    def init(self, *args, **kwargs):
        made(self, *args, **kwargs)
        clock = self.clock

        def reading():
            waits.append(("read",))
            return clock()

        self.clock = reading

    monkeypatch.setattr(throughput.StepClock, "__init__", init)


def test_mlx_reads_the_clock_only_after_evaluating_the_steps_state(monkeypatch, cifar10_dir, tmp_path):
    """MLX computes lazily: a clock read before ``mx.eval`` times the graph's building, not
    the step (on this CPU MLX keeps one step in flight, so each reading would be off by up to
    a step; on a GPU by more). Every reading of the step clock follows an ``mx.eval`` of the
    model's parameters and the optimiser's state. Checked against: MLXBackend.sync a no-op."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from cifar_mlx_adapter import build_model

    events: list = []
    spy_on_clock_readings(monkeypatch, events)
    real_eval = mx.eval

    def eval_spy(*args):
        events.append(("eval", len(tree_flatten(list(args)))))
        return real_eval(*args)

    monkeypatch.setattr(mx, "eval", eval_spy)
    record = fit_mlx_main(
        [
            "--data-dir",
            str(cifar10_dir),
            "--no-download",
            "--cpu",
            "--model",
            "small_cnn",
            "--epochs",
            "2",
            "--batch-size",
            "20",
            "--train-subset",
            "100",
            "--limit-val-batches",
            "0",
            "--log-every-n-steps",
            "50",
            "--output-dir",
            str(tmp_path / "run"),
        ]
    )
    readings = [i for i, e in enumerate(events) if e == ("read",)]
    assert len(readings) >= 4 and record["throughput"]["synchronized_by"] == "mx.eval"
    parameters = len(
        tree_flatten(build_model("small_cnn").parameters())
    )  # the model's arrays; the optimiser's come on top
    for i in readings:
        assert i > 0 and events[i - 1][0] == "eval" and events[i - 1][1] > parameters, events[max(0, i - 2) : i + 1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here: torch on a CPU computes synchronously")
def test_torch_reads_the_clock_only_after_synchronizing_cuda(monkeypatch, cifar10_dir, tmp_path):
    """On CUDA every reading of the step clock follows a ``torch.cuda.synchronize``."""
    events: list = []
    spy_on_clock_readings(monkeypatch, events)
    real = torch.cuda.synchronize
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: (events.append(("sync",)), real(*a))[1])
    fit_main(
        [
            "--data-dir",
            str(cifar10_dir),
            "--no-download",
            "--accelerator",
            "cuda",
            "--model",
            "small_cnn",
            "--epochs",
            "2",
            "--batch-size",
            "20",
            "--train-subset",
            "100",
            "--output-dir",
            str(tmp_path / "run"),
        ]
    )
    readings = [i for i, e in enumerate(events) if e == ("read",)]
    assert readings and all(i > 0 and events[i - 1] == ("sync",) for i in readings)


# ------------------------------------------------------------------ memory
def memory_of(framework: str, data: Path, out: Path, batch: int) -> dict:
    """run.json's memory of a run in a fresh process (a process's peak resident set is its
    whole life's)."""
    module = "cifar_lightning.cli.fit" if framework == "pytorch" else "cifar_lightning.cli.fit_mlx"
    device = ["--accelerator", "cpu"] if framework == "pytorch" else ["--cpu"]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            module,
            "--data-dir",
            str(data),
            "--no-download",
            "--model",
            "small_cnn",
            "--epochs",
            "1",
            "--batch-size",
            str(batch),
            "--train-subset",
            str(2 * batch),
            "--limit-val-batches",
            "0",
            "--limit-test-batches",
            "1",
            "--output-dir",
            str(out),
            *device,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((out / "run.json").read_text())["memory"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_memory_peak_grows_with_the_batch(framework, tmp_path):
    """SmallCNN at batch 32 and 256 (8x the activations: measured here 1.09 GB against 1.47
    GB in torch, 0.35 against 1.75 in MLX; at 128 torch's peak was the process's start-up,
    the same at both): each counter the device has is sampled and named, in bytes, and the
    primary one (the process's peak resident set on a CPU, in both frameworks) is larger at
    256; MLX's own peak too."""
    data = write_cifar(tmp_path / "data", "cifar10", n_train=600, n_test=20)
    small, large = (memory_of(framework, data, tmp_path / f"b{b}", b) for b in (32, 256))
    for m in (small, large):
        assert m["primary"] == "process_peak_rss" and m["samples"] >= 2
        assert all(v > 0 for k, v in m["peak_bytes"].items() if k != "mx.get_cache_memory"), m
    assert large["peak_bytes"]["process_peak_rss"] > small["peak_bytes"]["process_peak_rss"] + 100 * 2**20
    if framework == "mlx":
        assert large["peak_bytes"]["mx.get_peak_memory"] > 2 * small["peak_bytes"]["mx.get_peak_memory"]


# ------------------------------------------------------------------ hardware
SYSTEM_PROFILER = """Graphics/Displays:

    Apple M4 Max:

      Chipset Model: Apple M4 Max
      Type: GPU
      Bus: Built-In
      Total Number of Cores: 40
      Vendor: Apple (0x106b)
      Metal Support: Metal 3
"""
PMSET_AC = "Now drawing from 'AC Power'\n -InternalBattery-0 (id=1234)\t100%; charged; 0:00 remaining present: true\n"
PMSET_BATTERY = "Now drawing from 'Battery Power'\n -InternalBattery-0 (id=1234)\t80%; discharging; 5:10 remaining\n"


def test_the_machine_facts_are_read_from_the_systems_tools_and_unknown_otherwise(monkeypatch):
    """A Mac's chip, GPU cores, memory, macOS and power come from sysctl, system_profiler,
    platform and pmset, as they print them; an absent tool gives "unknown", never a guess.
    On this Linux: the CPU and memory from /proc."""
    assert hardware.gpu_cores(SYSTEM_PROFILER) == 40 and hardware.gpu_cores("") == "unknown"
    assert hardware.power_source(PMSET_AC) == "AC Power" and hardware.power_source(PMSET_BATTERY) == "Battery Power"
    assert hardware.power_source(None) == "unknown"
    assert hardware.linux_memory_bytes("MemTotal:       24683592 kB\nMemFree: 1 kB\n") == 24683592 * 1024
    outputs = {
        ("sysctl", "-n", "machdep.cpu.brand_string"): "Apple M4 Max\n",
        ("sysctl", "-n", "hw.memsize"): "68719476736\n",
        ("system_profiler", "SPDisplaysDataType"): SYSTEM_PROFILER,
        ("pmset", "-g", "batt"): PMSET_BATTERY,
    }
    monkeypatch.setattr(hardware.sys, "platform", "darwin")
    monkeypatch.setattr(hardware, "_tool", lambda *command: outputs.get(command))
    monkeypatch.setattr(hardware.platform, "mac_ver", lambda: ("15.3", ("", "", ""), "arm64"))
    mac = hardware.hardware_info("metal")
    assert (mac["cpu"], mac["memory_bytes"], mac["gpu_cores"], mac["macos"], mac["power"]) == (
        "Apple M4 Max",
        64 * 2**30,
        40,
        "15.3",
        "Battery Power",
    )
    monkeypatch.setattr(hardware, "_tool", lambda *command: None)  # no tool answers
    monkeypatch.setattr(hardware.platform, "mac_ver", lambda: ("", ("", "", ""), ""))
    bare = hardware.hardware_info("metal")
    assert (bare["memory_bytes"], bare["gpu_cores"], bare["macos"], bare["power"]) == ("unknown",) * 4
    monkeypatch.undo()
    here = hardware.hardware_info("cpu")
    assert here["cpu_count"] == os.cpu_count() and isinstance(here["memory_bytes"], int) and "gpu_cores" not in here


# ------------------------------------------------------------------ statistics
def test_the_paired_accuracy_difference_against_a_hand_computed_case_and_scipy():
    """Differences 0.01, 0, 0.02: mean 0.01, sd 0.01, t = sqrt(3) on 2 degrees of freedom.
    With 2 degrees of freedom the t distribution's CDF is 1/2 + t / (2 sqrt(2 + t^2)), so
    p = 2 (1/2 - sqrt(3) / (2 sqrt(5))) and the 97.5% quantile is sqrt(2 x 0.95^2 / (1 -
    0.95^2)) = 4.3027; the interval is 0.01 -+ 4.3027 x 0.01 / sqrt(3)."""
    from scipy import stats

    d = paired_difference([0.90, 0.92, 0.91], [0.91, 0.92, 0.93])
    quantile = math.sqrt(2 * 0.95**2 / (1 - 0.95**2))
    assert d["mean"] == pytest.approx(0.01) and d["n"] == 3
    assert d["p"] == pytest.approx(2 * (0.5 - math.sqrt(3) / (2 * math.sqrt(5))), rel=1e-6)
    assert d["ci95"] == pytest.approx([0.01 - quantile * 0.01 / math.sqrt(3), 0.01 + quantile * 0.01 / math.sqrt(3)])
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.9, 0.01, 6), rng.normal(0.91, 0.01, 6)
    d = paired_difference(list(a), list(b))
    assert d["p"] == pytest.approx(stats.ttest_rel(b, a).pvalue, rel=1e-9)
    low, high = stats.t.interval(0.95, 5, loc=(b - a).mean(), scale=stats.sem(b - a))
    assert d["ci95"] == pytest.approx([low, high], rel=1e-9)
    assert paired_difference([0.9], [0.91])["ci95"] is None  # no interval from one pair


def test_the_throughput_ratio_is_a_geometric_mean_with_its_interval():
    """Ratios 2 and 8: geometric mean 4 (the arithmetic mean would say 5); with 1 degree of
    freedom the 97.5% quantile of t is tan(0.475 pi) = 12.706, so the interval is
    4 exp(-+12.706 x sd(log r) / sqrt(2)) with sd(log r) = ln(4) / sqrt(2); against scipy
    on random ratios."""
    from scipy import stats

    g = geometric_ratio([1.0, 1.0], [2.0, 8.0])
    half = math.tan(0.475 * math.pi) * (math.log(4) / math.sqrt(2)) / math.sqrt(2)
    assert g["ratio"] == pytest.approx(4.0) and g["ci95"] == pytest.approx([4 * math.exp(-half), 4 * math.exp(half)])
    rng = np.random.default_rng(5)
    t, m = rng.uniform(100, 200, 5), rng.uniform(100, 300, 5)
    logs = np.log(m / t)
    low, high = stats.t.interval(0.95, 4, loc=logs.mean(), scale=stats.sem(logs))
    g = geometric_ratio(list(t), list(m))
    assert g["ratio"] == pytest.approx(stats.gmean(m / t)) and g["ci95"] == pytest.approx(
        [math.exp(low), math.exp(high)]
    )


# ------------------------------------------------------------------ the command
# Put on PYTHONPATH of one compare call, this makes every MLX run it starts stop once its
# save_checkpoint has written checkpoints/last.npz and returned (the run then knows its last
# checkpoint), after writing a file named "paused" beside this module, until a signal ends
# the wait: a test's Ctrl-C lands inside the run however loaded the machine is (a tiny run
# can finish between two polls of a busy CI machine). Python imports sitecustomize at every
# start, so the hook reaches every process the call starts.
PAUSE_AFTER_MLX_CHECKPOINT = """
import importlib.abc, importlib.util, pathlib, sys, time

class PauseAfterCheckpoint(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "cifar_mlx_adapter.trainer":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            save = module.MLXTrainer.save_checkpoint

            def save_then_wait(self, path, *args, **kwargs):
                saved = save(self, path, *args, **kwargs)
                if str(path).endswith("last.npz"):
                    pathlib.Path(__file__).with_name("paused").touch()
                    for _ in range(6000):  # 10 minutes at most; short sleeps, so any signal ends it
                        time.sleep(0.1)
                return saved

            module.MLXTrainer.save_checkpoint = save_then_wait

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, PauseAfterCheckpoint())
"""


def compare(data: Path, out: Path, *extra: str, wait: bool = True, env: dict | None = None):
    argv = [
        sys.executable,
        str(ROOT / "scripts" / "compare.py"),
        "--model",
        "small_cnn",
        "--seeds",
        "1",
        "--epochs",
        "2",
        "--batch-size",
        "25",
        "--train-subset",
        "100",
        "--limit-val-batches",
        "0",
        "--device",
        "cpu",
        "--data-dir",
        str(data),
        "--no-download",
        "--output-dir",
        str(out),
        *extra,
    ]
    if not wait:
        return subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, env=env
        )
    return subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env)


def test_compare_trains_both_frameworks_from_one_start_and_continues_where_it_stopped(tmp_path):
    """One seed: PyTorch, then MLX from its initial.pt (the same weights, the same seed and
    batches). Ctrl-C during the MLX run (after its first epoch's checkpoint) leaves the
    finished PyTorch run and exits 130 with the command that continues; that command then
    resumes the MLX run from its checkpoint (trains the rest only) and writes
    comparison.md; once more, it trains nothing; another --epochs is refused in one line."""
    from cifar_lightning.weights import load_torch_state

    data = write_cifar(tmp_path / "data", "cifar10", n_train=200, n_test=20)
    out = tmp_path / "cmp"
    hook = tmp_path / "pause"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(PAUSE_AFTER_MLX_CHECKPOINT)
    paths = [str(hook), *filter(None, [os.environ.get("PYTHONPATH")])]
    process = compare(data, out, wait=False, env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)})
    try:
        deadline = time.time() + 600
        while not (hook / "paused").is_file() and process.poll() is None and time.time() < deadline:
            time.sleep(0.05)  # the MLX run waits there, after its first checkpoint, until Ctrl-C
        assert (hook / "paused").is_file(), process.communicate(timeout=60)[1][-3000:]
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C reaches compare.py and the run it started
        _, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:  # the test failed before its Ctrl-C ended the run
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, err[-3000:]
    assert "interrupted: every finished run is kept; the same command continues" in err
    torch_run = json.loads((out / "pytorch-seed0" / "run.json").read_text())
    assert torch_run["status"] == "finished" and not (out / "mlx-seed0" / "run.json").exists()

    r = compare(data, out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "compare: pytorch seed 0" not in r.stdout and "compare: mlx seed 0" in r.stdout  # only what was missing
    mlx_run = json.loads((out / "mlx-seed0" / "run.json").read_text())
    assert mlx_run["status"] == "finished" and "--resume" in mlx_run["command"]
    rows = list(csv.DictReader(open(out / "mlx-seed0" / "metrics.csv")))
    assert sorted({int(r["step"]) for r in rows if r.get("train/loss_step")}) == list(range(8))  # both segments
    assert mlx_run["seed"] == torch_run["seed"] == 0  # the same batches: the seed draws them in both
    for key in ("batch_size", "epochs", "total_steps", "train_subset"):
        assert mlx_run["hyperparameters"][key] == torch_run["hyperparameters"][key], key
    start = {k: v.numpy() for k, v in load_torch_state(out / "pytorch-seed0/checkpoints/initial.pt").items()}
    with np.load(out / "mlx-seed0" / "checkpoints" / "initial.npz") as z:  # the MLX run's start, as it saved it
        mlx_start = {k: z[k].transpose(0, 3, 1, 2) if z[k].ndim == 4 else z[k] for k in z.files}
    assert set(mlx_start) <= set(start) and len(mlx_start) > 10
    for key, value in mlx_start.items():
        np.testing.assert_array_equal(value, start[key], err_msg=key)
    report = (out / "comparison.md").read_text()
    assert (
        "| 0 | " in report and "Throughput MLX / PyTorch" in report and (out / "comparison.png").stat().st_size > 1000
    )

    times = {p: p.stat().st_mtime for p in out.glob("*-seed0/run.json")}
    again = compare(data, out)
    assert again.returncode == 0 and "compare: " not in again.stdout  # nothing trained twice
    assert {p: p.stat().st_mtime for p in out.glob("*-seed0/run.json")} == times

    refused = compare(data, out, "--epochs", "3")
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        f"error: --output-dir {out} holds a comparison with other settings: --epochs 2.0 there, 3.0 here; use its "
        "own flags, or another --output-dir"
    ]

    # more seeds add a pair; its PyTorch run was killed before its first checkpoint (only
    # initial.pt and metrics.csv, no run.json): nothing to resume, so it starts again
    # instead of being refused as an unfinished run by every later call
    killed = out / "pytorch-seed1"
    (killed / "checkpoints").mkdir(parents=True)
    (killed / "checkpoints" / "initial.pt").write_bytes(b"partly written")
    (killed / "metrics.csv").write_text("epoch,step\n")
    more = compare(data, out, "--seeds", "2")
    assert more.returncode == 0, more.stderr[-3000:]
    assert f"compare: {killed} holds no checkpoint to resume from: its run starts again" in more.stdout
    assert "compare: pytorch seed 0" not in more.stdout and "compare: mlx seed 1" in more.stdout
    assert {p: p.stat().st_mtime for p in out.glob("*-seed0/run.json")} == times  # seed 0 kept as it was
    assert all(
        json.loads((out / f / "run.json").read_text())["status"] == "finished" for f in ("pytorch-seed1", "mlx-seed1")
    )
    assert json.loads((out / "compare.json").read_text())["settings"]["seeds"] == 2
    assert "| 1 | " in (out / "comparison.md").read_text()
    fewer = compare(data, out)  # --seeds 1 again: trains nothing, the folder keeps its 2 seeds
    assert fewer.returncode == 0 and "compare: " not in fewer.stdout
    assert json.loads((out / "compare.json").read_text())["settings"]["seeds"] == 2
