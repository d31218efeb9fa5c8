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
