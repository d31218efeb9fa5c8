"""What a user meets at the edges of the commands: a bad flag value, a report of no runs, a
failed download, the first line of a run, the export extra's hint, and the parts' fast net
under the user's own trainer.

Faults these tests were checked against (each makes a test fail): argparse's own usage block
for a bad flag value in fit.py, fit_mlx.py, compare.py or report.py; Results.md rewritten
from a missing or empty runs folder.
"""

from __future__ import annotations

import importlib

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
