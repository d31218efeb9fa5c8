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

Issue 34's points, each fault planted alone in the fixed code (each made its test fail):
compare.py handing the MLX run initial.pt again (torch imported to read it); the
frameworks a process held never noted (an empty ``frameworks_loaded``); the report's memory
ratio over every pair, and old records' --weights *.pt not read as torch loaded; the
device-kind refusal removed (the PyTorch run started); the report's ratios over pairs across
devices; the differing conditions never listed; the version check removed (the new seed
trained); the folder named for --device ("-best"); the cores as os.cpu_count(), the GPU as
get_device_name(0) and nvidia-smi's first line; the accuracy axis auto-scaled; the old
images/s header; the MPS sampling note and phys_footprint left out.
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
from conftest import FakeClock, write_cifar

from cifar_lightning.cli.fit import main as fit_main
from cifar_lightning.cli.fit_mlx import main as fit_mlx_main
from cifar_lightning.core.run import hardware
from cifar_lightning.core.run.throughput import StepClock
from cifar_lightning.report.comparison import geometric_ratio, paired_difference
from cifar_mlx_adapter import Callback

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = ["pytorch", "mlx"]


# ------------------------------------------------------------------ the clock


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


@pytest.mark.slow
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
    assert here["cpu_count"] == len(os.sched_getaffinity(0)) and here["machine_cpu_count"] == os.cpu_count()
    assert isinstance(here["memory_bytes"], int) and "gpu_cores" not in here


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


@pytest.mark.slow
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
    # each measured process held its own framework only: the MLX run read initial.npz, not initial.pt
    assert mlx_run["memory"]["frameworks_loaded"] == ["mlx"] and torch_run["memory"]["frameworks_loaded"] == ["torch"]
    report = (out / "comparison.md").read_text()
    assert "loaded too" not in report and "Peak memory MLX / PyTorch (process_peak_rss / process_peak_rss)" in report
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


# ------------------------------------------------------------------ like with like (issue 34)
def record(framework, seed, acc=0.70, device="cpu", counter="process_peak_rss", peak=2**30, **fields):
    """A finished run.json of a comparison, as both frameworks write it (the fields the
    report reads); `fields` replace or extend it (``hardware`` and ``versions`` merged)."""
    own = {"torch": "2.14.1", "lightning": "2.6.6"} if framework == "pytorch" else {"mlx": "0.32.4"}
    r = {
        "framework": framework,
        "seed": seed,
        "status": "finished",
        "test_accuracy": acc,
        "versions": {"python": "3.11.7", **own, **fields.pop("versions", {})},
        "hardware": {
            "os": "Linux 6.1",
            "cpu": "Xeon",
            "cpu_count": 2,
            "memory_bytes": 2**34,
            "accelerator": device,
            **fields.pop("hardware", {}),
        },
        "code": {"commit": "a" * 40, "dirty": False},
        "throughput": {
            "images_per_s": 100.0,
            "median_images_per_s": 99.0,
            "iqr_images_per_s": [90.0, 110.0],
            "epoch_s": [10.0],
            "synchronized_by": "mx.eval",
            "warmup_steps": 5,
            "window_steps": 10,
            "excluded": "the warm-up steps",
        },
        "memory": {"peak_bytes": {counter: peak}, "primary": counter, "samples": 3, "sampled": "between steps"},
        "command": f"python scripts/fit.py --seed {seed}",
    }
    loaded = fields.pop("loaded", None)
    if loaded is not None:
        r["memory"]["frameworks_loaded"] = loaded
    r.update(fields)
    return r


def report(*runs) -> str:
    from cifar_lightning.report.comparison import render

    return render("t", list(runs))


def row(text: str, seed: int) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| {seed} | "))


def test_a_process_that_held_the_other_framework_is_left_out_of_the_memory_ratio():
    """Issue 34, 1: an MLX process that read initial.pt imported torch (761 MiB resident
    against 303 MiB from the same weights as .npz). Seed 0 is clean (each process held its
    own framework): MLX 512 MiB against 1 GiB, 0.50x. Seed 1's MLX process recorded torch
    among its frameworks; seed 2's record predates the field but its --weights was a .pt;
    seed 3's was an .npz (clean, 0.50x too). The ratio is 0.50x over seeds 0 and 3, and the
    other rows and a line say why they are left out. Checked against: the ratio over all
    pairs (0.71x)."""
    old_pt = "python scripts/fit_mlx.py --seed 2 --weights runs/c/pytorch-seed2/checkpoints/initial.pt"
    old_npz = "python scripts/fit_mlx.py --seed 3 --weights runs/c/pytorch-seed3/checkpoints/initial.npz"
    text = report(
        record("pytorch", 0, loaded=["torch"]),
        record("mlx", 0, peak=2**29, loaded=["mlx"]),
        record("pytorch", 1, loaded=["torch"]),
        record("mlx", 1, peak=2**30, loaded=["mlx", "torch"]),
        record("pytorch", 2),
        record("mlx", 2, peak=2**30, command=old_pt),
        record("pytorch", 3),
        record("mlx", 3, peak=2**29, command=old_npz),
    )
    assert "Peak memory MLX / PyTorch (process_peak_rss / process_peak_rss): 0.50x" in text, text
    assert "2 pairs)." in text.split("Peak memory")[1].splitlines()[0]
    assert "torch loaded too" in row(text, 1) and "torch loaded too, to read --weights initial.pt" in row(text, 2)
    assert "loaded too" not in row(text, 0) + row(text, 3)
    assert "- Left out of the memory ratio: seeds 1, 2" in text
    only_old = report(record("pytorch", 2), record("mlx", 2, command=old_pt))
    assert "Peak memory MLX / PyTorch: not stated: every pair is left out" in only_old
    # the PyTorch side too: seed 1's PyTorch process held MLX (2 GiB); the ratio is seed 0's alone
    torch_side = report(
        record("pytorch", 0, loaded=["torch"]),
        record("mlx", 0, peak=2**29, loaded=["mlx"]),
        record("pytorch", 1, peak=2**31, loaded=["mlx", "torch"]),
        record("mlx", 1, peak=2**29, loaded=["mlx"]),
    )
    assert "mlx loaded too" in row(torch_side, 1) and "- Left out of the memory ratio: seed 1," in torch_side
    assert "(process_peak_rss / process_peak_rss): 0.50x (no interval from one pair, 1 pair)." in torch_side, torch_side


def test_the_memory_record_names_the_frameworks_its_process_held(monkeypatch):
    """run.json's memory says which frameworks were imported when it was sampled (here both,
    as in this test process; without torch, only mlx). Checked against: no such field."""
    from cifar_lightning.core.run.memory import MemoryPeak

    peak = MemoryPeak({"c": lambda: 1})
    peak.sample()
    assert peak.record()["frameworks_loaded"] == ["mlx", "torch"]
    monkeypatch.delitem(sys.modules, "torch")
    alone = MemoryPeak({"c": lambda: 1})
    alone.sample()
    assert alone.record()["frameworks_loaded"] == ["mlx"]


def compare_args(*extra: str):
    from cifar_lightning.cli.compare import parser

    return parser().parse_args(["--epochs", "2", "--device", "cpu", *extra])


@pytest.mark.slow
def test_compare_starts_the_mlx_run_from_weights_it_reads_without_torch(tmp_path):
    """Issue 34, 1: the MLX run's --weights is initial.pt's copy as an .npz in MLX's layout,
    holding the same values bit for bit; an MLX process loading it into the model imports no
    torch. Checked against: --weights initial.pt (torch imported to read it)."""
    from cifar_lightning.cli.compare import run_flags
    from cifar_lightning.core.weights import read_npz_model, torch_layout_to_mlx
    from cifar_lightning.models import build_model

    out = tmp_path / "cmp"
    initial = out / "pytorch-seed0" / "checkpoints" / "initial.pt"
    initial.parent.mkdir(parents=True)
    torch.manual_seed(0)
    state = build_model("small_cnn").state_dict()
    torch.save(state, initial)
    flags = run_flags(compare_args(), "mlx", 0, out / "mlx-seed0", out)
    weights = flags[flags.index("--weights") + 1]
    probe = (
        "import sys; from cifar_mlx_adapter import build_model; from cifar_mlx_adapter.weights import load_file; "
        f"load_file(build_model('small_cnn'), {weights!r}); print('torch' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "False", (r.stdout, r.stderr[-2000:])
    copied = read_npz_model(weights)
    expected = torch_layout_to_mlx({k: v.numpy() for k, v in state.items() if not k.endswith("num_batches_tracked")})
    assert set(copied) == set(expected)
    for key, value in expected.items():
        assert copied[key].dtype == value.dtype
        np.testing.assert_array_equal(copied[key], value, err_msg=key)


class Trained(Exception):
    """Raised by the stand-in for a training process: the command got as far as training."""


def stub_training(monkeypatch) -> list:
    """compare.py's training processes replaced by a stand-in that records its call and stops."""
    from cifar_lightning.cli import compare as compare_cli

    calls: list = []

    def train(module, flags):
        calls.append((module, flags))
        raise Trained

    monkeypatch.setattr(compare_cli, "train", train)
    monkeypatch.setattr(compare_cli, "check_data", lambda args: None)  # no data behind a stand-in run
    return calls


def test_a_wrong_data_dir_is_refused_before_the_comparison_folder_is_made(monkeypatch, tmp_path, capsys, cifar10_dir):
    """A first compare.py with a mistyped --data-dir: one line naming the folder as typed,
    no folder and no compare.json left behind, so the corrected call (other flags too) is
    not refused for settings the failed one recorded. Checked against: no check (the
    comparison's folder was made and its settings written before the PyTorch run failed)."""
    from cifar_lightning.cli import compare as compare_cli

    out = tmp_path / "cmp"
    calls: list = []

    def train(module, flags):
        calls.append(flags)
        raise Trained

    monkeypatch.setattr(compare_cli, "train", train)
    with pytest.raises(SystemExit) as e:
        compare_cli.main(["--data-dir", "nope", "--no-download", "--output-dir", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "no cifar10 data in nope" in err[0], err
    assert not out.exists() and not calls
    with pytest.raises(Trained):
        compare_cli.main(
            [
                "--data-dir",
                str(cifar10_dir),
                "--no-download",
                "--device",
                "cpu",
                "--seeds",
                "1",
                "--output-dir",
                str(out),
            ]
        )
    assert len(calls) == 1


def test_compare_refuses_torch_on_a_gpu_against_mlx_on_the_cpu_before_training(monkeypatch, tmp_path, capsys):
    """Issue 34, 3: a CUDA torch beside mlx[cpu] (simulated: torch says CUDA is there; MLX here
    has no GPU), --device best: refused in one line naming both devices, nothing trained.
    Checked against: no check (the PyTorch run started)."""
    from cifar_lightning.cli.compare import main
    from cifar_mlx_adapter.backend import best_device

    assert best_device() == "cpu"
    calls = stub_training(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(SystemExit) as e:
        main(["--device", "best", "--seeds", "1", "--output-dir", str(tmp_path / "cmp")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and not calls and len(err) == 1, err
    assert err[0].startswith("error: --device best: PyTorch would train on cuda but MLX on cpu")


def test_compare_refuses_16_true_on_the_cpu_before_training(monkeypatch, tmp_path, capsys):
    """fit_mlx.py refuses 16-true on MLX's CPU (its float16 sums overflow): compare.py says so
    in the same line before the PyTorch run trains, and makes no folder."""
    from cifar_lightning.cli.compare import main

    calls = stub_training(monkeypatch)
    with pytest.raises(SystemExit) as e:
        main(["--device", "cpu", "--seeds", "1", "--precision", "16-true", "--output-dir", str(tmp_path / "cmp")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and not calls and len(err) == 1, err
    assert err[0].startswith("error: --precision 16-true on the CPU: MLX's CPU float16 sums overflow"), err
    assert not (tmp_path / "cmp").exists()


@pytest.mark.parametrize("checkpoint", [False, True])
def test_a_failed_run_says_whether_the_same_command_continues(checkpoint, monkeypatch, tmp_path, capsys):
    """A run that failed (exit status 3) with a last checkpoint resumes from it under the same
    command; one that failed before its first checkpoint is refused by that command (its
    folder must go first), and the first failure's line says which (a new user was told "the
    same command continues" and then refused). Checked against: the old line in both cases."""
    from cifar_lightning.cli import compare as compare_cli

    out = tmp_path / "cmp"

    def train(module, flags):
        folder = Path(flags[flags.index("--output-dir") + 1])
        (folder / "checkpoints").mkdir(parents=True)
        if checkpoint:
            (folder / "checkpoints" / "last.ckpt").write_bytes(b"")
        return 3

    monkeypatch.setattr(compare_cli, "train", train)
    monkeypatch.setattr(compare_cli, "check_data", lambda args: None)
    with pytest.raises(SystemExit) as e:
        compare_cli.main(["--device", "cpu", "--seeds", "1", "--output-dir", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("error: the pytorch run of seed 0 ended with exit status 3"), err
    then = "the same command continues" if checkpoint else "remove it to train the run again"
    assert err[0].endswith(f"keeps what it wrote; {then}"), err


def test_the_report_compares_speed_and_memory_only_on_devices_of_one_kind():
    """Issue 34, 3: a record pair made with torch on CUDA and MLX on the CPU: its row names
    both devices and counters and says they are not of one kind; no speed or memory ratio is
    stated from it (the old report printed "Throughput 0.00x"-like figures from a GPU against
    a CPU). Checked against: ratios over every pair."""
    text = report(
        record("pytorch", 0, device="cuda", counter="torch.cuda.max_memory_allocated"),
        record("mlx", 0, device="cpu", throughput={**record("mlx", 0)["throughput"], "images_per_s": 1.0}),
    )
    assert "| 0 | cuda, cpu (not of one kind) |" in text
    assert "torch.cuda.max_memory_allocated" in row(text, 0) and "process_peak_rss" in row(text, 0)
    assert "- Throughput MLX / PyTorch (training images per second after the warm-up, geometric mean): not" in text
    assert "0.01x" not in text and "Peak memory MLX / PyTorch: not stated" in text
    assert "- Not of one kind, left out of the speed and memory ratios: seed 0 (PyTorch on cuda, MLX on cpu)" in text
    assert "| 1 | mps, metal |" in report(record("pytorch", 1, device="mps"), record("mlx", 1, device="metal"))


def test_the_report_lists_what_differs_between_the_pairs():
    """Issue 34, 4: seed 1's MLX run on battery and under another MLX version: both listed,
    with the runs each value belongs to, instead of seed 0's machine standing for all.
    Checked against: the first pair's description only."""
    text = report(
        record("pytorch", 0, hardware={"power": "AC Power"}),
        record("mlx", 0, hardware={"power": "AC Power"}),
        record("pytorch", 1, hardware={"power": "AC Power"}),
        record("mlx", 1, hardware={"power": "Battery Power"}, versions={"mlx": "0.33.0"}),
    )
    differ = next(line for line in text.splitlines() if line.startswith("- Conditions that differ"))
    assert "power AC Power (PyTorch seeds 0, 1; MLX seed 0), Battery Power (MLX seed 1)" in differ
    assert "mlx 0.32.4 (MLX seed 0), 0.33.0 (MLX seed 1)" in differ and "torch" not in differ
    assert "Conditions that differ" not in report(record("pytorch", 0), record("mlx", 0))


def test_compare_hands_its_precision_to_both_frameworks_and_the_report_names_each_ones(tmp_path):
    """Issue 36, 6: --precision bf16-mixed reaches both frameworks' runs (as does a quick
    check's --limit-test-batches), and comparison.md names the precision each framework
    trained in. Checked against: the flag passed to one
    framework only; the hardware line without precisions."""
    from cifar_lightning.cli.compare import run_flags

    args = compare_args("--precision", "bf16-mixed", "--limit-test-batches", "2")
    out = tmp_path / "cmp"
    for framework, suffix in (("pytorch", ".ckpt"), ("mlx", ".npz")):
        last = out / f"{framework}-seed0" / "checkpoints" / f"last{suffix}"
        last.parent.mkdir(parents=True)
        last.touch()  # a run to resume: no initial weights needed for the MLX run's flags
        flags = run_flags(args, framework, 0, out / f"{framework}-seed0", out)
        assert flags[flags.index("--precision") + 1] == "bf16-mixed", (framework, flags)
        assert flags[flags.index("--limit-test-batches") + 1] == "2", (framework, flags)  # a quick check's test
    assert "--precision" not in run_flags(compare_args(), "pytorch", 0, out / "pytorch-seed0", out)
    text = report(
        record("pytorch", 0, numerics={"precision": "bf16-mixed"}),
        record("mlx", 0, numerics={"precision": "bf16-mixed"}),
    )
    assert "PyTorch on cpu in bf16-mixed, MLX on cpu in bf16-mixed." in text
    assert "MLX on cpu in an unrecorded precision." in report(record("pytorch", 0), record("mlx", 0))
    # a folder made before the flag existed records no precision: said as such, not as "None"
    from cifar_lightning.cli.compare import check_same, settings_of
    from cifar_lightning.core.errors import UsageError

    older = {k: v for k, v in settings_of(args).items() if k != "precision"}
    with pytest.raises(UsageError, match="--precision not given there, bf16-mixed here; use its own flags"):
        check_same(out, {"settings": older}, settings_of(args))


def test_a_run_shorter_than_the_warm_up_still_states_the_epoch_time_ratio_its_table_shows():
    """A tiny comparison's runs take no step past the clock's warm-up (no images/s) but record
    their epochs' seconds, which the table shows: the epoch-time line states their ratio
    (MLX 8 s against PyTorch 16 s: 0.50x) instead of "not measured". Checked against: the
    epoch-time ratio taken only over pairs with a throughput."""
    untimed = {**record("pytorch", 0)["throughput"], "images_per_s": None}
    text = report(
        record("pytorch", 0, throughput={**untimed, "epoch_s": [16.0]}),
        record("mlx", 0, throughput={**untimed, "epoch_s": [8.0]}),
    )
    assert "| 16.0 | 8.0 |" in row(text, 0)
    assert (
        "- Epoch time MLX / PyTorch (seconds of an epoch's steps): 0.50x (no interval from one pair, 1 pair)." in text
    )
    assert "- Throughput MLX / PyTorch (training images per second after the warm-up, geometric mean): not" in text
    no_epochs = {**untimed, "epoch_s": []}
    text = report(record("pytorch", 0, throughput=no_epochs), record("mlx", 0, throughput=no_epochs))
    assert "Epoch time MLX / PyTorch (seconds of an epoch's steps): not measured (no pair of runs on devices" in text


def test_compare_refuses_to_add_runs_under_other_versions_unless_told(monkeypatch, tmp_path, capsys):
    """Issue 34, 4: a folder whose MLX run was made under MLX 0.1.0: adding a seed here is
    refused in one line naming the package and both versions; --allow-version-change trains.
    Checked against: no check (the new seed's run started)."""
    from cifar_lightning.cli.compare import main

    out = tmp_path / "cmp"
    argv = ["--device", "cpu", "--epochs", "2", "--seeds", "2", "--output-dir", str(out)]
    for framework in FRAMEWORKS:
        (out / f"{framework}-seed0").mkdir(parents=True)
    (out / "pytorch-seed0" / "run.json").write_text(json.dumps(record("pytorch", 0)))
    (out / "mlx-seed0" / "run.json").write_text(json.dumps(record("mlx", 0, versions={"mlx": "0.1.0"})))
    calls = stub_training(monkeypatch)
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and not calls and len(err) == 1, err
    import mlx.core as mx

    assert f"mlx 0.1.0 there (mlx-seed0), {mx.__version__} here" in err[0] and "--allow-version-change" in err[0]
    with pytest.raises(Trained):
        main([*argv, "--allow-version-change"])
    assert calls and "--seed" in calls[0][1] and calls[0][1][calls[0][1].index("--seed") + 1] == "1"


def test_the_machine_facts_fit_the_process_cpus_and_gpu(monkeypatch):
    """Issue 34, 5: the cores are those the process may use (a process allowed 1 of the
    machine's cores records 1, and the machine's count beside it); the GPU is the one the
    framework uses: torch's current device (1 here, of those CUDA_VISIBLE_DEVICES leaves),
    nvidia-smi asked for the first CUDA_VISIBLE_DEVICES names. Checked against: os.cpu_count(),
    get_device_name(0), nvidia-smi's first line."""
    from cifar_lightning.backend import cuda_device_name

    monkeypatch.setattr(hardware.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(hardware.os, "process_cpu_count", lambda: 1, raising=False)
    monkeypatch.setattr(hardware.os, "cpu_count", lambda: 8)
    here = hardware.hardware_info("cpu")
    assert (here["cpu_count"], here["machine_cpu_count"]) == (1, 8)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: ["A100", "H200"][device])
    assert cuda_device_name() == "H200"
    smi = {"0": "A100\n", "1": "H200\n"}
    monkeypatch.setattr(hardware, "_tool", lambda *c: smi[c[c.index("-i") + 1]] if "-i" in c else "A100\nH200\n")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    assert hardware.hardware_info("cuda")["gpu"] == "H200"


def test_compare_names_its_folder_for_the_devices_it_will_use(monkeypatch, tmp_path):
    """Issue 34, 14: --device best where torch finds CUDA and MLX its CUDA build (simulated):
    runs/compare/small_cnn-2ep-cuda, decided before training; mps-metal on a Mac; cpu.
    Checked against: the folder named "-best"."""
    from cifar_lightning.cli import compare as compare_cli

    stub_training(monkeypatch)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr("cifar_mlx_adapter.backend.best_device", lambda: "cuda")
    with pytest.raises(Trained):
        compare_cli.main(["--device", "best", "--epochs", "2", "--seeds", "1"])
    assert [p.name for p in (tmp_path / "runs" / "compare").iterdir()] == ["small_cnn-2ep-cuda"]
    args = compare_args()
    assert compare_cli.default_folder(args, ("mps", "metal")).name == "small_cnn-2ep-mps-metal"
    assert compare_cli.default_folder(args, ("cpu", "cpu")).name == "small_cnn-2ep-cpu"


def test_the_accuracy_panel_shows_a_small_gap_as_small_and_every_number_is_labelled(tmp_path, monkeypatch):
    """Issue 34, 14: accuracies 70.00% and 70.19%: the panel's axis spans 10 points (it said
    so in its label), not the 0.19 points between them; the table's header names each number
    of the images/s cells. Checked against: the auto-scaled axis; the old header."""
    import matplotlib.figure

    from cifar_lightning.report.comparison import plot

    seen = {}
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: seen.setdefault("fig", fig))
    plot([record("pytorch", 0, acc=0.70), record("mlx", 0, acc=0.7019)], tmp_path / "c.png", "t")
    accuracy = seen["fig"].axes[1]
    low, high = accuracy.get_ylim()
    assert high - low == 10 and low <= 70 and 70.19 <= high and "spans 10 points" in accuracy.get_ylabel()
    header = report(record("pytorch", 0), record("mlx", 0)).split("\n| seed |")[1].split("\n")[0]
    assert "PyTorch images/s: all measured steps (median, IQR of windows)" in header
    assert "PyTorch peak memory (counter)" in header and "s/epoch (mean)" in header


def test_the_report_says_mps_memory_is_sampled_and_shows_phys_footprint():
    """Issue 34, 8: a PyTorch run on MPS (no peak counter: sampled between steps) and records
    holding macOS's phys_footprint: the report says the MPS figure is sampled between steps
    and shows phys_footprint beside each peak. Checked against: the old report (neither)."""
    mps = record("pytorch", 0, device="mps", counter="torch.mps.current_allocated_memory")
    mps["memory"]["peak_bytes"]["phys_footprint"] = 3 * 2**30
    metal = record("mlx", 0, device="metal", counter="mx.get_peak_memory")
    metal["memory"]["peak_bytes"]["phys_footprint"] = 2 * 2**30
    text = report(mps, metal)
    assert "sampled between steps" in text and "upper bound" in text
    assert "phys_footprint 3,072 MiB" in row(text, 0) and "phys_footprint 2,048 MiB" in row(text, 0)
    assert "sampled between steps" not in report(record("pytorch", 0), record("mlx", 0))
