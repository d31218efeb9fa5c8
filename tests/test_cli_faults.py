"""What a user meets at the edges of the commands: a bad flag value, a report of no runs, a
failed download, the first line of a run, the export extra's hint, and the parts' fast net
under the user's own trainer.

Faults these tests were checked against (each makes a test fail): argparse's own usage block
for a bad flag value in fit.py, fit_mlx.py, compare.py or report.py; Results.md rewritten
from a missing or empty runs folder, or (the default report) from a checkout's runs/ that
tracks no run; a failed download's error without --no-download, or
leaving its empty folder; --data-dir errors with the resolved path, or no hint for the inner
cifar-10-batches-py/; the editable checkout's command as the installed package's hint; a
first line without the run's length, or a resumed run's without its epoch and step (the MLX
backend not recording the resumed step); MLX's epoch bar without the validation figures;
the fast net's whitening left unset by the module under a user's own trainer, or its starting bias
not set (either framework).
"""

from __future__ import annotations

import importlib
import re
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest

# one bad value per command, each caught by argparse before anything is read
BAD_FLAGS = {
    "fit": ["--epochs", "many"],
    "fit_mlx": ["--epochs", "many"],
    "compare": ["--seeds", "three"],
    "predict": ["--top-k", "one", "--weights", "w.ckpt", "x.png"],
    "export": ["--format", "tflite", "--weights", "w.ckpt", "--output", "m.onnx"],
    "report": ["--runs"],
}


@pytest.mark.parametrize("command", sorted(BAD_FLAGS))
def test_a_bad_flag_is_one_line_in_every_command(command, capsys):
    main = importlib.import_module(f"cifar_lightning.cli.{command}").main
    with pytest.raises(SystemExit) as e:
        main(BAD_FLAGS[command])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: argument ") and err.strip().endswith("(see --help)"), err


def test_a_report_of_no_runs_is_refused_and_overwrites_nothing(tmp_path, capsys, monkeypatch):
    from cifar_lightning.cli.report import main

    monkeypatch.chdir(tmp_path)  # main() moves to its root; the test's folder is restored after

    results = tmp_path / "Results.md"
    results.write_text("# the published report\n")
    (tmp_path / "runs" / "empty").mkdir(parents=True)
    for argv, said in [
        (["--runs", "nowhere"], "--runs nowhere: no such folder"),  # a typo
        (["--runs", str(tmp_path / "runs"), "--all"], "holds no finished run's run.json"),
        ([], "no such folder"),  # cifar-report in a folder of no runs/
    ]:
        root = tmp_path if argv else tmp_path / "runs" / "empty"
        with pytest.raises(SystemExit) as e:
            main(argv, root=root)
        err = capsys.readouterr().err
        assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and said in err, err
        assert results.read_text() == "# the published report\n"
    assert not (tmp_path / "runs" / "empty" / "Results.md").exists()
    # the default report in a git checkout (the tracked logs only), whose runs/ tracks none
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, capture_output=True)
    with pytest.raises(SystemExit) as e:
        main(["--runs", str(tmp_path / "runs")], root=tmp_path)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "holds no finished run's run.json that git tracks" in err, err
    assert results.read_text() == "# the published report\n"


FIT_COMMANDS = {"pytorch": ("fit", ["--accelerator", "cpu"]), "mlx": ("fit_mlx", ["--cpu"])}


def fit_main(framework: str, argv: list[str]):
    """Run fit.py's or fit_mlx.py's main in this process: SystemExit's code and stderr's lines."""
    module, device = FIT_COMMANDS[framework]
    main = importlib.import_module(f"cifar_lightning.cli.{module}").main
    with pytest.raises(SystemExit) as e:
        main([*argv, *device, "--lock-file", "none"])
    return e.value.code


@pytest.mark.parametrize("framework", sorted(FIT_COMMANDS))
def test_a_failed_download_names_no_download_and_leaves_no_folder(framework, tmp_path, monkeypatch, capsys):
    import urllib.request

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.chdir(tmp_path)
    assert fit_main(framework, ["--data-dir", "data"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--no-download" in err, err
    assert "download of cifar10 into data failed" in err and str(tmp_path) not in err  # the path as typed
    assert list(tmp_path.iterdir()) == []  # no empty data/ left behind


@pytest.mark.parametrize("framework", sorted(FIT_COMMANDS))
@pytest.mark.parametrize("download", [False, True])
def test_data_dir_of_the_inner_folder_is_told_to_pass_its_parent(
    framework, download, cifar10_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(cifar10_dir)
    argv = ["--data-dir", "cifar-10-batches-py", "--output-dir", str(tmp_path / "o")]
    assert fit_main(framework, argv + ([] if download else ["--no-download"])) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "no cifar10 data in cifar-10-batches-py:" in err and str(cifar10_dir) not in err  # as typed
    assert "pass the folder holding it, --data-dir ." in err, err
    assert not (cifar10_dir / "cifar-10-batches-py" / "cifar-10-batches-py").exists()
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("install", ["checkout", "package"])
def test_the_export_extras_hint_fits_the_install(install, tmp_path, monkeypatch, capsys):
    """A checkout (editable, or the scripts of a clone) is told its own `pip install -e`; an
    installed package is told the package's extra, by the project's name."""
    import importlib.util
    import re
    from pathlib import Path

    from cifar_lightning.cli import export

    root = Path(__file__).resolve().parents[1]
    name = re.search(r'^name = "(.+)"$', (root / "pyproject.toml").read_text(), re.M).group(1)
    if install == "package":  # as in site-packages: no pyproject.toml beside cifar_lightning/
        monkeypatch.setattr(export, "PACKAGE_ROOT", tmp_path / "site-packages")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m == "onnx" else real_find_spec(m, *a))
    (tmp_path / "w.ckpt").write_bytes(b"")
    with pytest.raises(SystemExit) as e:
        export.main(["--weights", str(tmp_path / "w.ckpt"), "--format", "onnx", "--output", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "onnx not installed" in err, err
    if install == "package":
        assert f"pip install '{name}[export]'" in err and "-e" not in err.split("expected")[1], err
    else:
        assert f"pip install -e '{root}[export]'" in err, err


def ctrl_c_at_epoch(framework: str, epoch: int):
    """A callback of `framework` that presses Ctrl-C as epoch `epoch` starts (the previous
    epoch's last checkpoint is written)."""
    if framework == "pytorch":
        import lightning as L

        base = L.Callback
    else:
        from cifar_mlx_adapter import Callback as base

    class CtrlC(base):
        def on_train_epoch_start(self, trainer, module):
            if trainer.current_epoch == epoch:
                raise KeyboardInterrupt

    return CtrlC()


@pytest.mark.parametrize("framework", sorted(FIT_COMMANDS))
def test_the_first_line_says_how_long_and_where_a_resumed_run_picks_up(framework, cifar10_dir, tmp_path, capsys):
    module, device = FIT_COMMANDS[framework]
    main = importlib.import_module(f"cifar_lightning.cli.{module}").main
    out = tmp_path / "run"
    common = ["--data-dir", str(cifar10_dir), "--no-download", *device, "--lock-file", "none"]
    common += ["--epochs", "3", "--batch-size", "50", "--train-subset", "100"]  # 2 steps an epoch
    with pytest.raises(SystemExit) as e:
        main([*common, "--output-dir", str(out)], callbacks=(ctrl_c_at_epoch(framework, 2),))
    assert e.value.code == 130
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"training small_cnn (573,194 parameters) for 3 epochs (6 steps) on cpu, into {out}", first
    last = out / "checkpoints" / f"last{'.ckpt' if framework == 'pytorch' else '.npz'}"
    main([*common, "--resume", str(last)])
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (
        f"training small_cnn (573,194 parameters) for 3 epochs (6 steps) on cpu, into {out}, "
        "resuming at epoch 2, step 4"
    ), first


def test_mlx_progress_shows_validation_as_lightnings_does(cifar10_dir, tmp_path, capsys):
    """Both trainers' epoch bar ends with the validation figures beside the training loss."""
    import lightning as L

    from cifar_lightning import CIFARClassifier, CIFARDataModule, get_recipe
    from cifar_mlx_adapter import MLXClassifier, MLXTrainer

    recipe = get_recipe("small_cnn").to_dict() | {"batch_size": 50}

    def data():
        return CIFARDataModule("cifar10", cifar10_dir, batch_size=50, download=False, train_subset=100)

    L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False).fit(
        CIFARClassifier("small_cnn", 10, recipe=recipe), datamodule=data()
    )
    lightning_bar = "".join(capsys.readouterr())  # Lightning's bar writes to stdout, tqdm's default is stderr
    MLXTrainer(max_epochs=1, log_every_n_steps=1, default_root_dir=tmp_path).fit(
        MLXClassifier("small_cnn", 10, recipe=recipe), data()
    )
    mlx_bar = "".join(capsys.readouterr())
    for bar in (lightning_bar, mlx_bar):  # the epoch's bar, as last drawn
        drawn = [line for line in re.split(r"[\r\n]", bar) if line.startswith("Epoch 0")]
        assert drawn and "val/loss=" in drawn[-1] and "val/acc=" in drawn[-1], bar[-800:]


def fit_fast_for_one_step(framework: str, module, dm, tmp_path):
    """One optimizer step of `module` under the framework's own trainer, as the README's parts."""
    if framework == "pytorch":
        import lightning as L

        trainer = L.Trainer(
            accelerator="cpu",
            max_steps=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
        )
        trainer.fit(module, datamodule=dm)
        return module.model.whiten.weight.detach().numpy()
    from cifar_mlx_adapter import MLXTrainer

    trainer = MLXTrainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, dm)
    return np.array(module.model.whiten.weight).transpose(0, 3, 1, 2)  # NHWC filters as torch's


@pytest.mark.parametrize("framework", sorted(FIT_COMMANDS))
def test_the_fast_net_under_a_users_own_trainer_whitens_from_its_data(framework, cifar10_dir, tmp_path):
    """The scripts' whitening (the first training images' patch filters, and the starting bias),
    set by the module at the start of fit; filters already set (here: loaded weights) are kept."""
    from cifar_lightning import CIFARClassifier, CIFARDataModule, get_recipe
    from cifar_lightning.core.spec import FAST
    from cifar_lightning.core.whitening import starting_bias, whitening_filters

    recipe = get_recipe("fast").to_dict() | {"batch_size": 50, "tta": False}
    dm = CIFARDataModule("cifar10", cifar10_dir, batch_size=50, download=False, train_subset=100)
    dm.data.setup()
    expected = whitening_filters(dm.data.normalize(dm.data.splits["train"][0][: FAST["whiten_images"]]))
    if framework == "pytorch":
        make = lambda r=recipe: CIFARClassifier("fast", 10, recipe=r)  # noqa: E731
    else:
        from cifar_mlx_adapter import MLXClassifier

        make = lambda r=recipe: MLXClassifier("fast", 10, recipe=r)  # noqa: E731
    np.testing.assert_allclose(fit_fast_for_one_step(framework, make(), dm, tmp_path), expected, rtol=1e-5, atol=1e-6)
    # and the whitening bias the scripts start from (the Muon recipe's draw from its seed), before a step trains it
    fresh = make(recipe | {"whiten_bias_init": "uniform"})
    fresh.trainer = SimpleNamespace(datamodule=dm)  # what on_fit_start reads of the trainer
    fresh.on_fit_start()
    bias = fresh.model.whiten.bias
    bias = bias.detach().numpy() if framework == "pytorch" else np.array(bias)
    np.testing.assert_array_equal(bias, starting_bias(fresh.recipe))

    loaded = make()
    if framework == "pytorch":
        import torch

        state = {k: v.clone() for k, v in loaded.model.state_dict().items()}
        state["whiten.weight"] = torch.full_like(state["whiten.weight"], 0.5)
        loaded.model.load_state_dict(state)
    else:
        import mlx.core as mx

        from cifar_mlx_adapter.weights import load_weights, mlx_state

        state = mlx_state(loaded.model)
        state["whiten.weight"] = mx.full(state["whiten.weight"].shape, 0.5)
        load_weights(loaded.model, state)
    assert (fit_fast_for_one_step(framework, loaded, dm, tmp_path) == 0.5).all()  # not set again


def test_the_fast_net_without_data_to_whiten_from_refuses_to_train(cifar10_dir, tmp_path):
    import lightning as L

    from cifar_lightning import CIFARClassifier, CIFARDataModule, get_recipe

    recipe = get_recipe("fast").to_dict() | {"batch_size": 50}
    dm = CIFARDataModule("cifar10", cifar10_dir, batch_size=50, download=False, train_subset=100)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=1, logger=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    with pytest.raises(ValueError, match=r"whitening filters are not set .* datamodule=CIFARDataModule"):
        trainer.fit(CIFARClassifier("fast", 10, recipe=recipe), train_dataloaders=dm.train_dataloader())


@pytest.mark.parametrize("framework", sorted(FIT_COMMANDS))
def test_a_datamodule_that_augments_otherwise_than_the_recipe_is_named_at_fit_start(framework, cifar10_dir):
    """README "Use the parts" with the fast net: a DataModule left at its defaults (crop 4,
    zero padding, random flip) would train it under another augmentation than its recipe's
    (reflect-pad 2, alternating flip). Fit start says so in one warning naming the arguments
    that match; a DataModule built from the recipe's augmentation, as the scripts build it,
    is not warned about."""
    import warnings
    from dataclasses import asdict

    from cifar_lightning import CIFARClassifier, CIFARDataModule, get_recipe

    recipe = get_recipe("fast")
    if framework == "pytorch":
        module = CIFARClassifier("fast", 10, recipe=recipe.to_dict())
    else:
        from cifar_mlx_adapter import MLXClassifier

        module = MLXClassifier("fast", 10, recipe=recipe.to_dict())
    for kwargs, warned in (({}, True), (asdict(recipe.augmentation), False)):
        dm = CIFARDataModule("cifar10", cifar10_dir, batch_size=50, download=False, train_subset=100, **kwargs)
        module.trainer = SimpleNamespace(datamodule=dm)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module.on_fit_start()
        said = [str(w.message) for w in caught if "augments with" in str(w.message)]
        if warned:
            assert len(said) == 1 and "crop_padding=2, pad_mode='reflect', flip='alternating'" in said[0], said
        else:
            assert said == [], said
