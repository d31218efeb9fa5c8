"""scripts/predict.py and scripts/export.py: predictions that agree with --test-only in both
frameworks from both frameworks' checkpoints, exports that round-trip, bad inputs in one line.

The real checkpoint is made here, once per session, by scripts/fit.py on real CIFAR-10
(SmallCNN, 2 epochs of the first 1,000 training images, 40 steps; tests skip without the real data);
its "test set" is the first 200 real test images (a data folder written in the official
format). The MLX checkpoint is fit_mlx.py's, continuing from it for 2 steps.

Planted faults, each made the named tests fail before it was reverted:
  1. normalisation skipped in the exported graph (UInt8Classifier.forward feeding the model
     raw 0-255 floats; the same in the MLX export's logits_function): every case of
     test_every_export_round_trips (export.py's verification: logits differ by up to 6.98 and
     323, accuracy 10% against 20% and 9% against 24.5%; exit status 1, nothing written).
  2. channels swapped (BGR) in read_image: all four cases of test_predict_csv_matches_test_only.
  3. class names shifted by one in write_predictions_csv: all four cases of
     test_predict_csv_matches_test_only.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA, write_cifar

from cifar_lightning.cli.images import write_png
from cifar_lightning.core.datasets import DATASETS, read_class_names, read_split
from cifar_lightning.core.predictions import read_predictions_csv

ROOT = Path(__file__).resolve().parents[1]
N_TEST = 200  # real test images the predictions are compared on


def write_real_cifar(root: Path, n_train: int, n_test: int) -> Path:
    """A cifar-10-batches-py/ holding the first n_train training and n_test test images of the
    real CIFAR-10 (read with CIFAR_ALLOW_PARTIAL_DATA=1, set by conftest)."""
    if not (SHARED_DATA / "cifar-10-batches-py" / "data_batch_1").is_file():
        pytest.skip(f"real CIFAR-10 not found at {SHARED_DATA}")
    info = DATASETS["cifar10"]
    folder = root / info.folder
    folder.mkdir(parents=True, exist_ok=True)
    train_x, train_y = read_split_prefix(SHARED_DATA, True, n_train)
    test_x, test_y = read_split_prefix(SHARED_DATA, False, n_test)
    per = n_train // len(info.train_files)
    for i, name in enumerate(info.train_files):
        dump(folder / name, train_x[i * per : (i + 1) * per], train_y[i * per : (i + 1) * per])
    dump(folder / "test_batch", test_x, test_y)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": read_class_names(SHARED_DATA, "cifar10")}, f)
    return root


def read_split_prefix(data, train, n):
    if train:  # the first batch file holds 10,000: enough for the prefix
        with open(Path(data) / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        return batch["data"][:n].reshape(-1, 3, 32, 32), np.asarray(batch["labels"][:n])
    images, labels = read_split(data, "cifar10", train=False)
    return images[:n], labels[:n]


def dump(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    with open(path, "wb") as f:
        pickle.dump({"data": images.reshape(len(images), -1), "labels": labels.tolist()}, f)


@pytest.fixture(scope="session")
def real(tmp_path_factory):
    """{"data", "torch", "mlx", "pngs", "labels"}: the real data folder, fit.py's and fit_mlx.py's
    final checkpoints, and a folder of the test images as PNGs (sorted names = test order)."""
    import os

    from cifar_lightning.cli.fit import main as fit
    from cifar_lightning.cli.fit_mlx import main as fit_mlx

    os.environ["CIFAR_ALLOW_PARTIAL_DATA"] = "1"  # conftest sets it per test; this fixture runs first
    root = tmp_path_factory.mktemp("real")
    data = write_real_cifar(root / "data", 1000, N_TEST)
    common = ["--data-dir", str(data), "--no-download", "--lock-file", "none", "--limit-val-batches", "0"]
    fit(
        [
            *common,
            "--accelerator",
            "cpu",
            "--model",
            "small_cnn",
            "--epochs",
            "2",
            "--batch-size",
            "50",
            "--output-dir",
            str(root / "torch"),
        ]
    )
    fit_mlx(
        [
            *common,
            "--cpu",
            "--weights",
            str(root / "torch/checkpoints/final.ckpt"),
            "--epochs",
            "1",
            "--batch-size",
            "100",
            "--train-subset",
            "200",
            "--output-dir",
            str(root / "mlx"),
        ]
    )
    images, labels = read_split(data, "cifar10", train=False)
    pngs = root / "pngs"
    pngs.mkdir()
    for i, image in enumerate(images):
        write_png(pngs / f"{i:04d}.png", image.transpose(1, 2, 0))
    return {
        "data": data,
        "torch": root / "torch/checkpoints/final.ckpt",
        "mlx": root / "mlx/checkpoints/final.npz",
        "pngs": pngs,
        "labels": labels,
        "root": root,
    }


def predict(*argv):
    from cifar_lightning.cli.predict import main

    return main([str(a) for a in argv])


def run_test_only(real, checkpoint: str, framework: str) -> dict:
    """run.json of `--test-only` on the same test images, by the framework's own script."""
    out = real["root"] / f"test-only-{checkpoint}-{framework}"
    if not (out / "run.json").exists():
        argv = [
            "--data-dir",
            str(real["data"]),
            "--no-download",
            "--lock-file",
            "none",
            "--test-only",
            "--weights",
            str(real[checkpoint]),
            "--output-dir",
            str(out),
        ]
        if framework == "pytorch":
            from cifar_lightning.cli.fit import main

            main([*argv, "--accelerator", "cpu"])
        else:
            from cifar_lightning.cli.fit_mlx import main

            main([*argv, "--cpu"])
    return json.loads((out / "run.json").read_text())


@pytest.mark.parametrize("framework", ["pytorch", "mlx"])
@pytest.mark.parametrize("checkpoint", ["torch", "mlx"])
def test_predict_csv_matches_test_only(real, tmp_path, checkpoint, framework):
    """The CSV's top-1 of a folder of PNGs written from the test set, mapped back to class
    numbers through the data's own class names (not the checkpoint's), gives --test-only's
    accuracy and per-class accuracy on the same images, from each checkpoint in each framework."""
    csv = tmp_path / "p.csv"
    predict("--weights", real[checkpoint], "--framework", framework, "--output", csv, "--cpu", real["pngs"])
    names = read_class_names(real["data"], "cifar10")
    rows = read_predictions_csv(csv)
    assert [Path(r["input"]).name for r in rows] == [f"{i:04d}.png" for i in range(N_TEST)]
    predicted = np.array([names.index(r["class_1"]) for r in rows])
    record = run_test_only(real, checkpoint, framework)
    labels = real["labels"]
    assert float((predicted == labels).mean()) == pytest.approx(record["test_accuracy"], abs=1e-6)
    per_class = {names[c]: float((predicted[labels == c] == c).mean()) for c in range(10)}
    assert per_class == pytest.approx(record["per_class_accuracy"], abs=1e-6)
    assert record["test_accuracy"] > 0.2  # a model that learned something: faults move its predictions


def test_the_csv_has_the_columns_and_rows_a_user_expects(real, tmp_path, capsys):
    """--top-k 3 on a .npy and cifar10:test: columns input, class_1, prob_1, ..., probabilities
    in [0, 1] in decreasing order; the summary states the accuracy of the labelled inputs."""
    images, labels = read_split(real["data"], "cifar10", train=False)
    npy = tmp_path / "x.npy"
    np.save(npy, images[:5].transpose(0, 2, 3, 1))
    csv = tmp_path / "p.csv"
    result = predict(
        "--weights", real["torch"], "--output", csv, "--top-k", "3", "--data-dir", real["data"], npy, "cifar10:test"
    )
    rows = read_predictions_csv(csv)
    assert list(rows[0]) == ["input", "class_1", "prob_1", "class_2", "prob_2", "class_3", "prob_3"]
    assert [r["input"] for r in rows[:6]] == [f"{npy}[{i}]" for i in range(5)] + ["cifar10:test[0]"]
    assert len(rows) == 5 + N_TEST
    probs = np.array([[float(r[f"prob_{i}"]) for i in (1, 2, 3)] for r in rows])
    assert ((probs >= 0) & (probs <= 1)).all() and (np.diff(probs, axis=1) <= 0).all()
    np.testing.assert_allclose(result["probabilities"].sum(axis=1), 1, atol=1e-5)
    assert rows[0]["class_1"] == rows[5]["class_1"]  # the same image by two roads
    accuracy = float((result["probabilities"][5:].argmax(1) == labels).mean())
    assert f"top-1 accuracy {100 * accuracy:.2f}% on the {N_TEST} inputs with a label" in capsys.readouterr().out


def test_the_mlx_predict_path_imports_no_torch(real, tmp_path):
    code = (
        "import sys; from cifar_lightning.cli.predict import main; "
        f"main(['--weights', {str(real['mlx'])!r}, '--output', {str(tmp_path / 'p.csv')!r}, '--cpu', "
        f"{str(real['pngs'] / '0000.png')!r}]); print('torch' in sys.modules, 'lightning' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "False False"
    assert "in mlx" in r.stdout


@pytest.fixture(scope="session")
def fixture_checkpoint(tmp_path_factory):
    """fit.py's checkpoint of SmallCNN after 1 epoch on the synthetic fixture data."""
    import os

    from cifar_lightning.cli.fit import main as fit

    os.environ["CIFAR_ALLOW_PARTIAL_DATA"] = "1"
    root = tmp_path_factory.mktemp("fixture")
    data = write_cifar(root / "data", "cifar10", n_train=200, n_test=50)
    fit(
        [
            "--data-dir",
            str(data),
            "--no-download",
            "--lock-file",
            "none",
            "--accelerator",
            "cpu",
            "--epochs",
            "1",
            "--batch-size",
            "50",
            "--output-dir",
            str(root / "run"),
        ]
    )
    return {"data": data, "torch": root / "run/checkpoints/final.ckpt"}


@pytest.mark.parametrize("source", ["fixture", "real"])
@pytest.mark.parametrize("fmt", ["onnx", "torch-export", "mlx"])
def test_every_export_round_trips(request, tmp_path, fmt, source):
    """export.py's own verification passes (logits on the first 256 test images within the
    tolerance, the same accuracy on the whole test set); the exported file then runs by itself
    on 1 and 3 uint8 images (any batch size) and carries the class names and normalisation."""
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason="the export extra (pip install -e '.[export]') is not installed")
    from cifar_lightning.cli.export import LOGIT_TOLERANCE, main

    made = request.getfixturevalue("real" if source == "real" else "fixture_checkpoint")
    suffix = {"onnx": ".onnx", "torch-export": ".pt2", "mlx": ".mlxfn"}[fmt]
    out = tmp_path / f"model{suffix}"
    report = main(
        ["--weights", str(made["torch"]), "--format", fmt, "--output", str(out), "--data-dir", str(made["data"])]
    )
    assert out.is_file() and not list(tmp_path.glob(".*tmp*"))
    images, labels = read_split(made["data"], "cifar10", train=False)
    assert report["images"] == len(labels) and report["max_logit_difference"] <= LOGIT_TOLERANCE
    assert report["export_accuracy"] == report["source_accuracy"]
    names = read_class_names(made["data"], "cifar10")
    assert report["metadata"]["class_names"] == names and report["metadata"]["mean"] == list(DATASETS["cifar10"].mean)
    if fmt == "onnx":
        from cifar_lightning.export import onnx_runner as runner
    elif fmt == "torch-export":
        from cifar_lightning.export import pt2_runner as runner
    else:
        from cifar_mlx_adapter.export import mlxfn_runner as runner
    run, _ = runner(str(out))
    nhwc = np.ascontiguousarray(images.transpose(0, 2, 3, 1))
    three = run(nhwc[:3])
    np.testing.assert_allclose(run(nhwc[:1]), three[:1], atol=LOGIT_TOLERANCE)
    assert three.shape == (3, 10) and three.dtype == np.float32


def test_an_mlx_checkpoint_exports_to_onnx(real, tmp_path):
    pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    from cifar_lightning.cli.export import main

    report = main(
        [
            "--weights",
            str(real["mlx"]),
            "--format",
            "onnx",
            "--output",
            str(tmp_path / "m.onnx"),
            "--data-dir",
            str(real["data"]),
        ]
    )
    assert report["export_accuracy"] == report["source_accuracy"] and report["metadata"]["source_framework"] == "mlx"


# ------------------------------------------------------------------ bad input
def bad_files(folder: Path, good: np.ndarray) -> dict[str, str]:
    """Bad inputs, each with a word its error line must hold."""
    from PIL import Image

    folder.mkdir()
    (folder / "notes.png").write_text("not an image\n")
    write_png(folder / "whole.png", good)
    (folder / "truncated.png").write_bytes((folder / "whole.png").read_bytes()[:200])
    Image.fromarray((good[..., 0].astype(np.uint16) * 257)).save(folder / "deep.png")  # 16-bit grey
    Image.fromarray(good).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(good).convert("YCbCr").save(folder / "ycbcr.tif")
    np.save(folder / "shape.npy", np.zeros((2, 3, 32, 32), np.uint8))
    np.save(folder / "dtype.npy", np.zeros((2, 32, 32, 3), np.float32))
    (folder / "empty").mkdir()
    (folder / "whole.png").unlink()
    return {
        "notes.png": "not an image",
        "truncated.png": "truncated",
        "deep.png": "more than 8 bits",
        "cmyk.jpg": "CMYK",
        "ycbcr.tif": "mode YCbCr",
        "shape.npy": "uint8 (2, 3, 32, 32)",
        "dtype.npy": "float32",
        "empty": "no image files",
        "missing.png": "no such file",
        "cifar100:test": "100",
    }


def test_each_bad_input_is_one_line_and_the_others_are_predicted(real, tmp_path, capsys):
    """Every bad input of the issue in one call, with good ones around them (a file, a .npy,
    a folder holding a bad file among good ones): one `error:` line per bad input naming it,
    exit status 2, and the good inputs predicted and written."""
    images, _ = read_split(real["data"], "cifar10", train=False)
    good = images[:4].transpose(0, 2, 3, 1)
    bad = bad_files(tmp_path / "bad", good[0])
    mixed = tmp_path / "mixed"  # a folder with a bad file among good ones
    mixed.mkdir()
    write_png(mixed / "a.png", good[1])
    (mixed / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    write_png(mixed / "c.png", good[2])
    write_png(tmp_path / "one.png", good[3])
    np.save(tmp_path / "ok.npy", good[:2])
    csv = tmp_path / "p.csv"
    inputs = [
        tmp_path / "one.png",
        *[tmp_path / "bad" / n if ":" not in n else n for n in bad],
        mixed,
        tmp_path / "ok.npy",
    ]
    with pytest.raises(SystemExit) as stop:
        predict("--weights", real["torch"], "--output", csv, "--data-dir", real["data"], *inputs)
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == len(bad) + 1 and all(line.startswith("error: ") for line in lines)
    for name, word in [*bad.items(), ("b.png", "truncated")]:
        found = [line for line in lines if f"{name}:" in line]
        assert len(found) == 1, (name, lines)
        line = found[0]
        assert word in line and "expected" in line, line
    rows = read_predictions_csv(csv)
    assert [r["input"] for r in rows] == [
        str(tmp_path / "one.png"),
        str(mixed / "a.png"),
        str(mixed / "c.png"),
        f"{tmp_path / 'ok.npy'}[0]",
        f"{tmp_path / 'ok.npy'}[1]",
    ]


def one_line(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    for word in words:
        assert word in lines[0], lines[0]


def script(name: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def test_weights_of_another_model_or_class_count_are_one_line(real, tmp_path, capsys):
    """A checkpoint whose weights do not fit the model it names (another model, another number
    of classes), bare weights without the model's facts, a file that is no checkpoint: one line,
    status 2, no CSV."""
    import torch

    checkpoint = torch.load(real["torch"], weights_only=True)
    cases = {}
    for key, value in (("model", "resnet18"), ("num_classes", 100)):
        edited = dict(
            checkpoint,
            hyper_parameters=dict(checkpoint["hyper_parameters"], **{key: value}),
            inference=dict(checkpoint["inference"], **{key: value}),
        )
        if key == "num_classes":
            edited["inference"]["class_names"] = [f"c{i}" for i in range(100)]
        cases[key] = tmp_path / f"{key}.ckpt"
        torch.save(edited, cases[key])
    cases["bare"] = real["torch"].parent / "initial.pt"
    cases["text"] = real["torch"].parents[1] / "run.json"
    csv = tmp_path / "p.csv"
    for case, path in cases.items():
        with pytest.raises(SystemExit) as stop:
            predict("--weights", path, "--output", csv, real["pngs"] / "0000.png")
        err = capsys.readouterr().err.strip().splitlines()
        assert stop.value.code == 2 and len(err) == 1 and err[0].startswith(f"error: --weights {path}"), err
        assert {
            "model": "another model",
            "num_classes": "another model or number of classes",
            "bare": "without the model's facts",
            "text": "a JSON file",
        }[case] in err[0], err
    assert not csv.exists()


def test_unknown_formats_and_flags_are_one_line(real, tmp_path):
    one_line(
        script("export.py", "--weights", real["torch"], "--format", "tflite", "--output", tmp_path / "m"), "tflite"
    )
    one_line(
        script("export.py", "--weights", real["torch"], "--format", "onnx", "--output", tmp_path / "m.pt2"),
        "expected a .onnx file",
    )
    one_line(script("predict.py", "--weights", real["torch"], "--framework", "jax", real["pngs"]), "jax")
    one_line(script("predict.py", "--weights", real["torch"], "--top-k", "11", real["pngs"]), "--top-k 11")
    assert not list(tmp_path.iterdir())
