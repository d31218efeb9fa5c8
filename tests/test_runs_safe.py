"""Nothing lost, nothing silently wrong, in both scripts: run folders, divergence, resume
checks, interruption, the training lock, untrusted files and flag validation.

The resume tests that prove equal end weights and kept history (both frameworks, dropout
on, across weight averaging) are in test_fit.py and test_mlx_trainer.py.
"""

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import lightning as L
import mlx.core as mx
import numpy as np
import pytest
import torch

from cifar_lightning.cli.fit import main as fit_main
from cifar_lightning.cli.fit_mlx import main as fit_mlx_main
from cifar_lightning.core.errors import UsageError
from cifar_lightning.core.recipes import get_recipe
from cifar_lightning.core.run import RunConfig
from cifar_lightning.core.run.folder import check_resume_settings, resume_command, run_settings
from cifar_lightning.core.run.lock import training_lock
from cifar_lightning.core.run.record import launcher, where_text
from cifar_lightning.report.logs import load_runs
from cifar_mlx_adapter import Callback
from cifar_mlx_adapter.backend import mlx_processes

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = ["torch", "mlx"]


def script(framework):
    return "fit.py" if framework == "torch" else "fit_mlx.py"


def device_flags(framework):
    return ["--accelerator", "cpu"] if framework == "torch" else ["--cpu"]


def train(framework, data, *extra, callbacks=()):
    argv = ["--data-dir", str(data), "--no-download", *device_flags(framework), *extra]
    if framework == "torch":
        return fit_main(argv, callbacks=callbacks)
    return fit_mlx_main(argv, callbacks=callbacks)


def run_script(framework, *args, capsys, cwd=None):
    """Run the script's main() in this process (as `python scripts/...` would, without paying
    for the imports again); returns (exit status, stderr)."""
    old = Path.cwd()
    if cwd:
        os.chdir(cwd)
    try:
        capsys.readouterr()
        argv = [*device_flags(framework), *args]
        code = 0
        try:
            fit_main(argv) if framework == "torch" else fit_mlx_main(argv)
        except SystemExit as e:
            code = e.code
        return code, capsys.readouterr().err
    finally:
        os.chdir(old)


def one_line(result) -> str:
    """The last stderr line of a failed run, checked to be its only error line (no traceback)."""
    code, err = result
    assert code != 0 and "Traceback" not in err, err[-2000:]
    return [ln for ln in err.strip().splitlines() if ln.strip()][-1]


QUICK = ["--model", "small_cnn", "--epochs", "1", "--batch-size", "50", "--train-subset", "100"]


# --------------------------------------------------------------- run folders
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_each_run_gets_its_own_folder_and_a_finished_run_is_never_overwritten(
    framework, cifar10_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # default folders are made under ./runs
    first = train(framework, cifar10_dir, *QUICK)
    second = train(framework, cifar10_dir, *QUICK)
    folders = sorted(p for p in (tmp_path / "runs").iterdir())
    assert len(folders) == 2 and all((f / "run.json").is_file() for f in folders)
    assert Path(first["checkpoint"]).parent.parent != Path(second["checkpoint"]).parent.parent
    train(framework, cifar10_dir, "--model", "small_cnn", "--test-only", "--weights", first["checkpoint"])
    evaluations = [p for p in (tmp_path / "runs").iterdir() if p not in folders]
    assert len(evaluations) == 1 and "-test-" in evaluations[0].name and (evaluations[0] / "run.json").is_file()
    assert json.loads((folders[0] / "run.json").read_text())["epochs"] == 1  # the training run's record is intact

    taken = folders[0]
    r = run_script(
        framework,
        "--data-dir",
        str(cifar10_dir),
        "--no-download",
        *QUICK,
        "--output-dir",
        str(taken),
        cwd=tmp_path,
        capsys=capsys,
    )
    assert "already holds a finished run" in one_line(r) and "--overwrite" in one_line(r)
    assert json.loads((taken / "run.json").read_text())["epochs"] == 1
    train(framework, cifar10_dir, *QUICK, "--epochs", "2", "--output-dir", str(taken), "--overwrite")
    assert json.loads((taken / "run.json").read_text())["epochs"] == 2

    # an unfinished run's folder: the refusal names the checkpoint to resume, or says there is none
    stopped = tmp_path / "stopped"
    (stopped / "checkpoints").mkdir(parents=True)
    (stopped / "checkpoints" / "initial.bin").write_bytes(b"")
    refuse = ("--data-dir", str(cifar10_dir), "--no-download", *QUICK, "--output-dir", str(stopped))
    r = run_script(framework, *refuse, cwd=tmp_path, capsys=capsys)
    assert "a run that stopped before its first checkpoint (nothing to resume)" in one_line(r)
    (stopped / "checkpoints" / "last.bin").write_bytes(b"")
    r = run_script(framework, *refuse, cwd=tmp_path, capsys=capsys)
    assert f"an unfinished run (resume it with --resume {stopped / 'checkpoints' / 'last.bin'})" in one_line(r)


# ----------------------------------------------------------------- divergence
class PoisonTorch(L.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            with torch.no_grad():
                pl_module.model.fc2.weight.mul_(float("nan"))


class PoisonMLX(Callback):
    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == 1:
            module.model.fc2.weight = module.model.fc2.weight * mx.array(float("nan"))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_diverging_run_stops_keeps_its_last_good_checkpoint_and_is_recorded_as_failed(
    framework, cifar10_dir, tmp_path, capsys
):
    out = tmp_path / "run"
    poison = PoisonTorch() if framework == "torch" else PoisonMLX()
    with pytest.raises(SystemExit) as exit_info:
        train(framework, cifar10_dir, *QUICK, "--epochs", "3", "--output-dir", str(out), callbacks=(poison,))
    assert exit_info.value.code == 3
    message = capsys.readouterr().err.strip().splitlines()[-1]
    last = out / "checkpoints" / ("last.ckpt" if framework == "torch" else "last.npz")
    # 2 steps an epoch: the poisoned weights give the first NaN loss at step 2 (0-based, as metrics.csv counts)
    assert message == f"error: training loss became nan at step 2; the last good checkpoint is {last}"
    if framework == "torch":
        weights = torch.load(last, weights_only=True)["state_dict"]["model.fc2.weight"].numpy()
    else:
        weights = np.load(last)["model.fc2.weight"]
    assert np.isfinite(weights).all()
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "failed" and "nan at step 2" in record["error"] and "test_accuracy" not in record
    assert load_runs(tmp_path) == []  # Results.md never reads a failed run as a result


# --------------------------------------------------------------------- resume
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_resume_refuses_another_runs_settings_and_the_other_frameworks_checkpoint(
    framework, cifar10_dir, tmp_path, capsys
):
    out = tmp_path / "run"
    train(framework, cifar10_dir, *QUICK, "--epochs", "2", "--output-dir", str(out))
    last = out / "checkpoints" / ("last.ckpt" if framework == "torch" else "last.npz")
    common = ["--data-dir", str(cifar10_dir), "--no-download", "--model", "small_cnn", "--train-subset", "100"]
    r = run_script(framework, *common, "--epochs", "2", "--batch-size", "50", "--resume", str(last), capsys=capsys)
    assert one_line(r).startswith(f"error: --resume {last}: the run in {out.resolve()} has finished")
    (out / "run.json").unlink()  # as if it had been interrupted: no record yet
    r = run_script(framework, *common, "--epochs", "1.5", "--batch-size", "25", "--resume", str(last), capsys=capsys)
    assert one_line(r) == (
        f"error: --resume {last} was trained with other settings: --epochs 2.0 there, 1.5 here, "
        "--batch-size 50 there, 25 here; resume with the run's own"
    )
    r = run_script(
        framework,
        *common,
        "--epochs",
        "2",
        "--batch-size",
        "50",
        "--optimizer",
        "adamw",
        "--resume",
        str(last),
        capsys=capsys,
    )  # the recipe's numbers follow: the flag alone is named
    assert one_line(r) == (
        f"error: --resume {last} was trained with other settings: --optimizer sgd there, "
        "adamw here; resume with the run's own"
    )
    other = "mlx" if framework == "torch" else "torch"
    r = run_script(other, *common, "--epochs", "2", "--batch-size", "50", "--resume", str(last), capsys=capsys)
    what = "an MLX checkpoint" if framework == "mlx" else "a PyTorch file"
    assert one_line(r).startswith(
        f"error: --resume {last}: {what} (resume it with scripts/{script(framework)}); expected"
    )


def test_resume_command_continues_in_the_checkpoints_folder():
    argv = ["--model", "fast", "--output-dir", "runs/a", "--overwrite", "--epochs", "2"]
    assert resume_command("fit.py", argv, "runs/a/checkpoints/last.ckpt") == (
        "python scripts/fit.py --model fast --epochs 2 --resume runs/a/checkpoints/last.ckpt"
    )


class InterruptTorch(L.Callback):
    def __init__(self, epoch: int = 1):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt


class InterruptMLX(Callback):
    def __init__(self, epoch: int = 1):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_ctrl_c_prints_the_command_that_resumes(framework, cifar10_dir, tmp_path, capsys):
    """Both frameworks exit with 130 (Lightning's own shutdown ends in status 1) and print
    the command that resumes from the last checkpoint."""
    out = tmp_path / "run"
    interrupt = InterruptTorch() if framework == "torch" else InterruptMLX()
    with pytest.raises(SystemExit) as stop:
        train(framework, cifar10_dir, *QUICK, "--epochs", "2", "--output-dir", str(out), callbacks=(interrupt,))
    assert stop.value.code == 130
    last = out / "checkpoints" / ("last.ckpt" if framework == "torch" else "last.npz")
    err = capsys.readouterr().err
    assert f"--epochs 2 --resume {last}" in err and f"python scripts/{script(framework)} --data-dir" in err


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_ctrl_c_before_the_first_checkpoint_leaves_nothing(framework, cifar10_dir, tmp_path, capsys):
    """Nothing to resume: exit 130, one line saying so, and no folder holding initial
    weights and a partial metrics.csv; a user's own file in --output-dir stays."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    interrupt = InterruptTorch(epoch=0) if framework == "torch" else InterruptMLX(epoch=0)
    with pytest.raises(SystemExit) as stop:
        train(framework, cifar10_dir, *QUICK, "--output-dir", str(out), callbacks=(interrupt,))
    assert stop.value.code == 130
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert "nothing to resume" in capsys.readouterr().err
    (out / "notes.txt").unlink()
    with pytest.raises(SystemExit):
        train(framework, cifar10_dir, *QUICK, "--output-dir", str(out), callbacks=(interrupt,))
    assert not out.exists()


# ----------------------------------------------------------------------- lock
HOLD = """
import sys, time
from cifar_lightning.core.run.lock import training_lock
from pathlib import Path
with training_lock(Path(sys.argv[1]), "runs/holder"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_one_training_at_a_time(framework, cifar10_dir, tmp_path, capsys, monkeypatch):
    lock = tmp_path / "machine.lock"
    monkeypatch.setenv("CIFAR_LOCK_FILE", str(lock))
    args = ["--data-dir", str(cifar10_dir), "--no-download", *QUICK]
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock), "8"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert holder.stdout.readline().strip() == "held"
    busy = run_script(framework, *args, "--output-dir", str(tmp_path / "a"), "--no-wait", capsys=capsys)
    assert busy[0] == 4 and not (tmp_path / "a").exists()  # a refused run leaves no folder
    assert one_line(busy).startswith(
        f"error: another training is running (process {holder.pid}, run folder runs/holder"
    )
    waited = run_script(framework, *args, "--output-dir", str(tmp_path / "b"), capsys=capsys)
    assert waited[0] == 0, waited[1][-2000:]
    assert f"waiting for another training to finish (process {holder.pid}" in waited[1]
    assert (tmp_path / "b" / "run.json").is_file()
    holder.wait()


def test_a_killed_training_leaves_no_stale_lock(tmp_path):
    lock = tmp_path / "machine.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock), "60"], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    start = time.perf_counter()
    with training_lock(lock, "runs/next", wait=False):
        assert time.perf_counter() - start < 1


# ------------------------------------------------------------ untrusted files
class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("flag", ["--weights", "--resume"])
def test_files_that_need_pickle_or_are_no_checkpoint_are_refused_and_nothing_runs(
    framework, flag, cifar10_dir, tmp_path, capsys
):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt" if framework == "torch" else tmp_path / "evil.npz"
    if framework == "torch":
        torch.save({"state_dict": {}, "x": Exploit(marker)}, evil)
    else:
        np.savez(evil, meta=np.array([Exploit(marker)], dtype=object))
    extra = ["--test-only"] if flag == "--weights" else []
    args = [
        "--data-dir",
        str(cifar10_dir),
        "--no-download",
        "--model",
        "small_cnn",
        "--output-dir",
        str(tmp_path / "o"),
    ]
    r = run_script(framework, *args, *extra, flag, str(evil), capsys=capsys)
    assert one_line(r).startswith(f"error: {flag} {evil}") and not marker.exists()
    assert not (tmp_path / "o").exists()  # a refused run leaves no folder
    r = run_script(framework, *args, *extra, flag, str(ROOT / "README.md"), capsys=capsys)
    assert "README.md" in one_line(r)


def test_a_bug_keeps_its_traceback(cifar10_dir, tmp_path):
    class Bug(L.Callback):
        def on_train_start(self, trainer, pl_module):
            raise ValueError("a bug in a callback")

    with pytest.raises(ValueError, match="a bug in a callback"):
        train("torch", cifar10_dir, *QUICK, "--output-dir", str(tmp_path / "o"), callbacks=(Bug(),))


# ---------------------------------------------------------------- bad values
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(
    "flags,expected",
    [
        (["--train-subset", "0"], "error: --train-subset must be positive, got 0"),
        (["--val-size", "-1"], "error: --val-size must be 0 or more images, got -1"),
        (["--val-size", "200"], "error: --val-size 200 leaves no training images: cifar10 has 200"),
        (
            ["--train-subset", "500"],
            "error: --train-subset 500 exceeds the 200 training images left after --val-size 0",
        ),
        (["--momentum", "1.5"], "error: --momentum must lie in [0, 1), got 1.5"),
        (["--dropout", "0.5", "--model", "fast"], "error: --dropout applies to --model small_cnn only, not fast"),
    ],
)
def test_flags_are_checked_up_front_in_the_users_terms(framework, flags, expected, cifar10_dir, tmp_path, capsys):
    r = run_script(
        framework,
        "--data-dir",
        str(cifar10_dir),
        "--no-download",
        "--output-dir",
        str(tmp_path / "o"),
        *flags,
        capsys=capsys,
    )
    assert one_line(r) == expected
    assert not (tmp_path / "o").exists()  # bad input leaves nothing behind


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(
    "flag,value,expected",
    [
        ("--limit-train-batches", "0", "must be positive, got 0"),
        ("--limit-test-batches", "-3", "must be positive, got -3"),
        ("--limit-val-batches", "-1", "must be 0 or more batches, got -1"),
    ],
)
def test_limit_batches_flags_are_checked(framework, flag, value, expected, cifar10_dir, capsys):
    r = run_script(framework, "--data-dir", str(cifar10_dir), "--no-download", flag, value, capsys=capsys)
    assert one_line(r) == f"error: {flag} {expected}"


@pytest.mark.parametrize(
    "flag,value,expected",
    [
        ("--precision", "bogus", "--precision bogus: expected one of 32-true, 16-mixed"),
        ("--devices", "-1", "--devices -1: expected a positive number of devices, or auto"),
        ("--strategy", "nope", "--strategy nope: expected auto, ddp"),
    ],
)
def test_lightning_flags_are_checked_before_anything_is_made(flag, value, expected, cifar10_dir, tmp_path, capsys):
    r = run_script("torch", "--data-dir", str(cifar10_dir), "--no-download", flag, value, capsys=capsys, cwd=tmp_path)
    assert one_line(r).startswith(f"error: {expected}")
    assert not (tmp_path / "runs").exists()  # no run folder is left behind


def test_batch_size_is_checked_per_process(cifar10_dir, tmp_path, capsys):
    r = run_script(
        "torch",
        "--data-dir",
        str(cifar10_dir),
        "--no-download",
        "--devices",
        "3",
        "--train-subset",
        "150",
        "--batch-size",
        "64",
        "--output-dir",
        str(tmp_path / "o"),
        capsys=capsys,
    )
    assert one_line(r) == "error: --batch-size 64 exceeds the 50 training images per process (3 processes)"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_an_output_dir_that_is_a_file_is_one_line(framework, cifar10_dir, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    r = run_script(framework, "--data-dir", str(cifar10_dir), "--no-download", "--output-dir", str(f), capsys=capsys)
    assert one_line(r) == f"error: --output-dir {f} is a file; expected a folder (new, or one to --overwrite)"


def test_resume_names_the_optimiser_part_whose_numbers_differ():
    """--muon-dtype (or --lr of a one-part AdamW recipe) changes a part's field: the error
    names the part and the field, not the whole list of parts."""

    def settings(**flags):
        args = RunConfig(model="fast", optimizer="muon")
        recipe = get_recipe("fast", "muon")
        parts = tuple(replace(p, **flags) if p.kind == "muon" else p for p in recipe.optimizers)
        return run_settings(args, replace(recipe, optimizers=parts).to_dict())

    with pytest.raises(UsageError) as e:
        check_resume_settings(settings(), settings(ns_dtype="float32"), "last.ckpt")
    assert str(e.value) == (
        "--resume last.ckpt was trained with other settings: optimizer part 0 (muon) ns_dtype "
        "bfloat16 there, float32 here; resume with the run's own"
    )


def test_resume_refuses_another_number_of_processes_and_prints_the_launcher():
    """A run of 2 processes resumed by 1 (or the reverse) takes other steps: refused in one
    line naming both counts and how each script sets them; the command printed on Ctrl-C
    starts the same processes (mlx.launch for MLX; fit.py's --devices are in its flags)."""
    args = RunConfig(model="small_cnn")
    recipe = get_recipe("small_cnn").to_dict()
    with pytest.raises(UsageError) as e:
        check_resume_settings(run_settings(args, recipe, 2), run_settings(args, recipe, 1), "last.npz")
    assert str(e.value) == (
        "--resume last.npz was trained with other settings: 2 processes there, 1 here (fit.py: "
        "--devices x --num-nodes; fit_mlx.py: mlx.launch -n); resume with the run's own"
    )
    argv = ["--model", "fast", "--cpu", "--output-dir", "runs/a"]
    assert resume_command(
        "fit_mlx.py", argv, "runs/a/checkpoints/last.npz", launcher("mlx", mlx_processes(512, 2, 1, 2))
    ) == ("mlx.launch -n 2 scripts/fit_mlx.py --model fast --cpu --resume runs/a/checkpoints/last.npz")
    assert launcher("mlx", mlx_processes(512, 1)) == launcher("pytorch", {"world_size": 2, "devices": 2}) == "python"
    assert where_text("cpu") == "cpu" and where_text("cpu", 2, 1) == "2 processes (1 machine, cpu)"


def test_a_single_number_for_a_recipe_of_several_optimizers_says_what_to_do():
    with pytest.raises(ValueError, match=r"--lr: this recipe has 4 optimizers .*: drop the flag, or change"):
        get_recipe("fast", "muon").with_overrides(lr=0.1)


def test_a_resume_that_gives_a_default_explicitly_is_the_same_run():
    """A SmallCNN run started without --dropout resumes with --dropout 0.25 (the default the
    help states); another dropout is refused naming both values, and a setting left unset
    reads "not given", not Python's None."""
    recipe = get_recipe("small_cnn").to_dict()
    unset = run_settings(RunConfig(model="small_cnn"), recipe)
    check_resume_settings(unset, run_settings(RunConfig(model="small_cnn", dropout=0.25), recipe), "last.npz")
    with pytest.raises(UsageError, match=r"--dropout 0\.25 there, 0\.1 here; resume"):
        check_resume_settings(unset, run_settings(RunConfig(model="small_cnn", dropout=0.1), recipe), "last.npz")
    limited = run_settings(RunConfig(model="small_cnn", limit_train_batches=3), recipe)
    with pytest.raises(UsageError, match=r"--limit-train-batches not given there, 3 here; resume"):
        check_resume_settings(unset, limited, "last.npz")
