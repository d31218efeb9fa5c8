"""A run in several segments (cut by Ctrl-C and resumed), in both frameworks: its record's
throughput, epoch times and memory describe the whole training, and its metrics.csv keeps
every segment's rows however often it is cut; a step that recompiles is left out of the
measured steps; and macOS's physical footprint among the memory counters."""

import csv
import ctypes
import json
import os
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import FakeClock

from cifar_lightning.cli.fit import main as fit_main
from cifar_lightning.cli.fit_mlx import main as fit_mlx_main
from cifar_lightning.core.run import memory
from cifar_lightning.core.run.throughput import StepClock
from cifar_mlx_adapter import Callback

FRAMEWORKS = ["torch", "mlx"]
# small_cnn, 5 steps of 20 images an epoch, 3 epochs: 15 steps, the first 5 of each process its warm-up
SMALL = ["--model", "small_cnn", "--epochs", "3", "--batch-size", "20", "--train-subset", "100"]
SMALL_STEPS, SMALL_PER_EPOCH = 15, 5


def train(framework, data, out, *extra, callbacks=()):
    argv = ["--data-dir", str(data), "--no-download", "--log-every-n-steps", "1", "--output-dir", str(out), *extra]
    if framework == "torch":
        return fit_main([*argv, "--accelerator", "cpu"], callbacks=callbacks)
    return fit_mlx_main([*argv, "--cpu"], callbacks=callbacks)


def resume(framework, data, out, *extra, callbacks=()):
    last = Path(out) / "checkpoints" / ("last.ckpt" if framework == "torch" else "last.npz")
    argv = ["--data-dir", str(data), "--no-download", "--log-every-n-steps", "1", *extra, "--resume", str(last)]
    if framework == "torch":
        return fit_main([*argv, "--accelerator", "cpu"], callbacks=callbacks)
    return fit_mlx_main([*argv, "--cpu"], callbacks=callbacks)


def trained_seconds(framework, out) -> float:
    """The training seconds the run's last checkpoint carries."""
    if framework == "torch":
        return torch.load(Path(out) / "checkpoints/last.ckpt", weights_only=True)["run"]["train_time_s"]
    return json.loads(str(np.load(Path(out) / "checkpoints/last.npz")["meta"]))["train_time_s"]


def carried(framework, out) -> dict:
    """The figures the run's last checkpoint carries (its step callback's state)."""
    if framework == "torch":
        return torch.load(Path(out) / "checkpoints/last.ckpt", weights_only=True)["callbacks"]["StepTiming"]
    return json.loads(str(np.load(Path(out) / "checkpoints/last.npz")["meta"]))["callbacks"]["StepTiming"]


class CutTorch(L.Callback):
    """Ctrl-C as epoch `epoch` starts (the previous epoch's checkpoint written), or, with
    None, once training is done (its last checkpoint written; no final checkpoint, no test)."""

    def __init__(self, epoch=None):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt

    def on_train_end(self, trainer, pl_module):
        if self.epoch is None:
            raise KeyboardInterrupt


class CutMLX(Callback):
    def __init__(self, epoch=None):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt

    def on_fit_end(self, trainer, module):
        if self.epoch is None:
            raise KeyboardInterrupt


def cut(framework, data, out, *flags, epoch=None, resumed=False):
    """The run (or, `resumed`, its continuation) cut by Ctrl-C: exit status 130, no run.json."""
    callback = CutTorch(epoch) if framework == "torch" else CutMLX(epoch)
    with pytest.raises(SystemExit) as stop:
        (resume if resumed else train)(framework, data, out, *flags, callbacks=(callback,))
    assert stop.value.code == 130 and not (Path(out) / "run.json").exists()


# ------------------------------------------------------------ segments' figures
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_run_cut_after_its_last_epoch_records_the_figures_of_its_training(framework, cifar10_dir, tmp_path):
    """Cut once training is done and resumed: the resumed process trains nothing and only
    tests, yet the record's throughput, epoch times and memory peaks are the training's
    (carried in the checkpoint), over 2 segments: 10 steps measured after the first
    process's 5 warm-up steps, 3 epochs' seconds, each peak at least the training's."""
    out = tmp_path / "run"
    cut(framework, cifar10_dir, out, *SMALL)
    trained, trained_s = carried(framework, out), trained_seconds(framework, out)
    record = resume(framework, cifar10_dir, out, *SMALL)
    t, m = record["throughput"], record["memory"]
    assert trained_s > 0 and record["train_time_s"] >= round(trained_s, 2)  # the first segment's seconds kept
    assert t["images_per_s"] is not None and t["images_per_s"] > 0, t
    assert (t["measured_steps"], t["measured_images"]) == (SMALL_STEPS - 5, (SMALL_STEPS - 5) * 20)
    assert len(t["epoch_s"]) == 3 and all(s > 0 for s in t["epoch_s"]) and t["segments"] == 2
    assert m["segments"] == 2 and "left_out" not in t and "left_out" not in m
    for name, peak in trained["memory"]["peak_bytes"].items():
        assert m["peak_bytes"][name] >= peak > 0 or name == "mx.get_cache_memory", (name, m, trained)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_run_cut_twice_keeps_every_segments_log_and_figures(framework, cifar10_dir, tmp_path):
    """Cut as epoch 1 starts, resumed, cut again as epoch 2 starts, resumed to the end:
    metrics.csv holds a training row for every one of the 15 steps (the first segment's
    too, however often the run was cut) and the record's figures cover the 3 segments, one
    epoch each."""
    out = tmp_path / "run"
    cut(framework, cifar10_dir, out, *SMALL, epoch=1)
    cut(framework, cifar10_dir, out, *SMALL, epoch=2, resumed=True)
    steps = [int(r["step"]) for r in csv.DictReader(open(out / "metrics.csv")) if r.get("train/loss_step")]
    assert steps == list(range(2 * SMALL_PER_EPOCH))  # on disk before the third segment starts
    record = resume(framework, cifar10_dir, out, *SMALL)
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    steps = [int(r["step"]) for r in rows if r.get("train/loss_step")]
    assert steps == list(range(SMALL_STEPS))
    assert [int(r["epoch"]) for r in rows if r.get("train/loss_epoch")] == [0, 1, 2]
    assert any(r.get("test/acc") for r in rows)
    t = record["throughput"]
    assert t["segments"] == 3 and record["memory"]["segments"] == 3 and len(t["epoch_s"]) == 3
    assert t["measured_steps"] == 0  # each segment's 5 steps were its process's warm-up


# ------------------------------------------------------------ recompiled steps


def test_the_step_clock_leaves_out_a_step_that_recompiles():
    """One epoch of 12 steps of 8 images, 1 s each, after 2 warm-up steps; step 7 (0-based)
    recompiles and takes 30 s: told beforehand, the clock leaves it out (windows close
    before it and open after it) and records it; 9 steps in 9 s measured, 8 images/s."""
    fake = FakeClock()
    clock = StepClock(fake.sync, "fake", warmup=2, window=4, clock=fake)
    clock.epoch_start()
    for step in range(12):
        if step == 7:
            clock.recompiles_next(step, "the trainable parameters changed")
        fake.now += 30.0 if step == 7 else 1.0
        clock.step_end(8, last_of_epoch=step == 11)
    r = clock.record()
    assert (r["measured_steps"], r["measured_images"], r["measured_s"]) == (9, 72, 9.0)
    assert r["images_per_s"] == r["median_images_per_s"] == 8.0
    assert r["excluded_steps"] == [{"step": 7, "reason": "the trainable parameters changed"}]
    assert r["epoch_s"] == [41.0]  # an epoch's seconds hold all its steps


class Compiled(torch.nn.Module):
    """Stands in for torch.compile's module (the test trains fast: no compiler runs)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_step_after_the_whitening_bias_freezes_is_left_out_as_recompiled(
    framework, cifar10_dir, tmp_path, monkeypatch
):
    """The fast recipe freezes the whitening bias as epoch 3 starts (2 steps an epoch: step
    6, 0-based, after the 5 warm-up steps): the compiled step is made anew there (MLX
    always; torch under --compile), so that step is left out of the measured steps and the
    record names it."""
    flags = ["--model", "fast", "--epochs", "4", "--batch-size", "25", "--no-tta", "--train-subset", "50"]
    if framework == "torch":
        monkeypatch.setattr(torch, "compile", Compiled)
        flags.append("--compile")
    record = train(framework, cifar10_dir, tmp_path / "run", *flags)
    t = record["throughput"]
    assert [e["step"] for e in t["excluded_steps"]] == [6], t
    assert "compiles the step anew" in t["excluded_steps"][0]["reason"]
    assert t["measured_steps"] == 8 - 5 - 1


def test_eager_torch_leaves_no_step_out(cifar10_dir, tmp_path):
    """Without --compile nothing recompiles when the whitening bias freezes: no step left out."""
    flags = ["--model", "fast", "--epochs", "4", "--batch-size", "25", "--no-tta", "--train-subset", "50"]
    t = train("torch", cifar10_dir, tmp_path / "run", *flags)["throughput"]
    assert t["excluded_steps"] == [] and t["measured_steps"] == 8 - 5


# ------------------------------------------------------------ a Mac's memory
# struct rusage_info_v4 as Apple's <sys/resource.h> declares it (XNU, bsd/sys/resource.h:
# https://github.com/apple-oss-distributions/xnu/blob/main/bsd/sys/resource.h): uint8_t
# ri_uuid[16], then these uint64_t fields in this order.
RUSAGE_INFO_V4_FIELDS = """ri_user_time ri_system_time ri_pkg_idle_wkups ri_interrupt_wkups ri_pageins
ri_wired_size ri_resident_size ri_phys_footprint ri_proc_start_abstime ri_proc_exit_abstime ri_child_user_time
ri_child_system_time ri_child_pkg_idle_wkups ri_child_interrupt_wkups ri_child_pageins ri_child_elapsed_abstime
ri_diskio_bytesread ri_diskio_byteswritten ri_cpu_time_qos_default ri_cpu_time_qos_maintenance
ri_cpu_time_qos_background ri_cpu_time_qos_utility ri_cpu_time_qos_legacy ri_cpu_time_qos_user_initiated
ri_cpu_time_qos_user_interactive ri_billed_system_time ri_serviced_system_time ri_logical_writes
ri_lifetime_max_phys_footprint ri_instructions ri_cycles ri_billed_energy ri_serviced_energy
ri_interval_max_phys_footprint ri_runnable_time""".split()


def test_the_rusage_struct_has_apples_layout():
    """Each field where the header puts it (16 bytes of uuid, then 8 bytes a field): the
    footprint at byte 72, its lifetime maximum at byte 240, the struct 296 bytes; flavor 4."""
    s = memory.RusageInfoV4
    assert [name for name, _ in s._fields_] == ["ri_uuid", *RUSAGE_INFO_V4_FIELDS]
    assert s.ri_uuid.offset == 0 and s.ri_uuid.size == 16
    for i, name in enumerate(RUSAGE_INFO_V4_FIELDS):
        field = getattr(s, name)
        assert (field.offset, field.size) == (16 + 8 * i, 8), name
    assert (s.ri_phys_footprint.offset, s.ri_lifetime_max_phys_footprint.offset) == (72, 240)
    assert ctypes.sizeof(s) == 296 and memory.RUSAGE_INFO_V4 == 4


def fake_proc_pid_rusage(calls):
    def call(pid, flavor, info):
        calls.append((pid, flavor))
        info._obj.ri_phys_footprint = 3 << 20
        info._obj.ri_lifetime_max_phys_footprint = 5 << 30
        return 0

    return call


def test_phys_footprint_is_a_memory_counter_on_macos_only(monkeypatch):
    """On darwin both backends' memory counters hold ``phys_footprint``, the lifetime maximum
    proc_pid_rusage reports for this process (flavor RUSAGE_INFO_V4); elsewhere none, and
    nothing raises on this Linux, even told it is a Mac where libSystem cannot be found."""
    from cifar_lightning.backend import TorchBackend
    from cifar_mlx_adapter.backend import MLXBackend

    assert memory.macos_counters() == {}  # this Linux, as it is
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    monkeypatch.setattr(memory, "_proc_pid_rusage", None)
    assert memory.macos_counters() == {}  # no libSystem here: not registered, no error
    calls = []
    monkeypatch.setattr(memory, "_proc_pid_rusage", fake_proc_pid_rusage(calls))
    for backend in (TorchBackend(accelerator="cpu"), MLXBackend(cpu=True)):
        counters = backend.memory_counters()
        assert list(counters)[0] == "process_peak_rss" and "phys_footprint" in counters
        assert counters["phys_footprint"]() == 5 << 30
    assert set(calls) == {(os.getpid(), 4)}
    monkeypatch.setattr(memory.sys, "platform", "linux")
    assert "phys_footprint" not in TorchBackend(accelerator="cpu").memory_counters()
    assert "phys_footprint" not in MLXBackend(cpu=True).memory_counters()
