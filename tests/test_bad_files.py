"""Wrong files and values on the command line, in both scripts: one line, status 2, nothing left
on disk; and weights of any float width load as float32 in both frameworks.

1. Files that are no checkpoint (a run's hparams.yaml, metrics.csv, run.json, a text file, a
   PNG, an empty file, a zip or gzip of something else, damaged checkpoints, also under a
   checkpoint's name) given to --weights (with and without --test-only) and --resume: one line
   ``error: <flag> <file>: <what it is>; expected <what>``. The other framework's real
   checkpoint is refused by --resume (naming the script that resumes it) and loads with
   --weights.
2. Float flags that are not finite (inf, -inf, nan) are refused before anything is made.
3. float16 .npz and .safetensors, bfloat16 torch state dicts and Lightning-style checkpoints
   (and fit.py --precision bf16-true's own final.ckpt) load into both frameworks' models as
   float32 equal to the source values upcast; integer buffers keep their dtype.

Checked against today's code (HEAD 3c5dfcb: 112 of these tests fail there: tracebacks
IndexError/KeyError for YAML, CSV and text files, OverflowError and a run folder for --epochs inf,
TypeError for bfloat16 into MLX, float16 kept by MLX, no .safetensors in fit.py; the torch loader's
upcast through load_state_dict already held) and against planted faults, each of which made the
named tests fail before it was reverted:
  A. load_torch_file catching only (UnpicklingError, RuntimeError, EOFError, ValueError), as
     before: the damaged-ckpt cases of test_a_file_that_is_no_checkpoint_is_one_line (IndexError).
  B. no content check of --weights in cli.validate: test_weights_are_checked_before_the_data_are_read.
  C. load_torch_file catching BaseException: test_ctrl_c_while_reading_weights_is_not_swallowed.
  D. no finite check in cli.validate: every case of test_float_flags_must_be_finite.
  E. MLX load_weights not casting into the model's dtype: test_low_precision_weights_load_as_float32_
     into_mlx (float16 .npz and .safetensors, bfloat16 .safetensors) and test_fit_mlx_trains_float32_
     from_float16_weights.
  F. torch_to_mlx without its bfloat16 -> float32 step: the bfloat16 torch cases of ..._into_mlx and
     test_the_other_frameworks_checkpoint_loads_with_weights[bf16-mlx] (TypeError).
  G, H. read_mlx_checkpoint / read_torch_checkpoint telling files by name (.ckpt/.pt/.npz): the
     --resume cases of test_a_file_that_is_no_checkpoint_is_one_line and
     test_resume_refuses_the_other_frameworks_checkpoint_and_bare_weights.
  I. read_npz_model without its is-an-array check: the damaged-npz --weights cases (AttributeError).
  K. read_safetensors without its bfloat16 branch: ..._into_torch[safetensors-bf16].
"""

import gzip
import json
import struct
import zipfile
import zlib
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import torch
from conftest import write_cifar

import cifar_lightning.models as torch_models
import cifar_mlx_adapter.models as mlx_models
from cifar_lightning.cli.fit import main as fit_main
from cifar_lightning.cli.fit_mlx import main as fit_mlx_main
from cifar_lightning.core.weights import torch_layout_to_mlx
from cifar_lightning.weights import load_into_torch, load_torch_state
from cifar_mlx_adapter.weights import load_file, mlx_state

FRAMEWORKS = ["torch", "mlx"]
EXPECTED_WEIGHTS = (
    "expected weights of either framework (fit.py's .ckpt or .pt, fit_mlx.py's .npz, or MLX .safetensors)"
)
QUICK = ["--model", "small_cnn", "--epochs", "1", "--batch-size", "50", "--train-subset", "100"]


def device_flags(framework):
    return ["--accelerator", "cpu"] if framework == "torch" else ["--cpu"]


def run_script(framework, *args, capsys):
    """main() of fit.py or fit_mlx.py in this process; returns (exit status, stderr, result)."""
    capsys.readouterr()
    argv = [*device_flags(framework), *args]
    code, result = 0, None
    try:
        result = fit_main(argv) if framework == "torch" else fit_mlx_main(argv)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err, result


def one_error_line(code, err) -> str:
    """The only error line a refused run prints (warnings aside): status 2, no traceback."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip() and not ln.startswith("warning: ")]
    assert code == 2 and "Traceback" not in err and len(lines) == 1, err[-3000:]
    return lines[0]


def tree(folder: Path) -> set:
    return {p.relative_to(folder) for p in folder.rglob("*")}


@pytest.fixture(scope="module", autouse=True)
def tiny_data_is_meant():
    """The fixtures' CIFAR copies are small on purpose."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CIFAR_ALLOW_PARTIAL_DATA", "1")
        yield


# ------------------------------------------------------------------ real files
@pytest.fixture(scope="module")
def real(tmp_path_factory, tiny_data_is_meant):
    """Checkpoints the two scripts wrote: a tiny run of each, and a fit.py --precision bf16-true run."""
    root = tmp_path_factory.mktemp("real")
    data = write_cifar(root / "data", "cifar10", n_train=200, n_test=50)
    common = [
        "--data-dir",
        str(data),
        "--no-download",
        *QUICK,
        "--limit-test-batches",
        "1",
        "--lock-file",
        str(root / "lock"),
    ]
    fit_main([*device_flags("torch"), *common, "--output-dir", str(root / "torch")])
    fit_main([*device_flags("torch"), *common, "--precision", "bf16-true", "--output-dir", str(root / "bf16")])
    fit_mlx_main([*device_flags("mlx"), *common, "--output-dir", str(root / "mlx")])
    return {"data": data, "root": root}


def png_bytes() -> bytes:
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


def write_wrong_file(case: str, folder: Path, real_root: Path) -> tuple[Path, str]:
    """A file of the table and a word its message must use to say what it is."""
    folder.mkdir(exist_ok=True)
    torch_run, mlx_run = real_root / "torch", real_root / "mlx"
    if case == "yaml":  # a run's own hparams.yaml, as in `fit.py --weights runs/<run>/hparams.yaml`
        return torch_run / "hparams.yaml", "YAML file"
    if case == "csv":
        return mlx_run / "metrics.csv", "CSV file"
    if case == "json":
        return torch_run / "run.json", "JSON file"
    path = (
        folder
        / {
            "text": "notes.txt",
            "png": "curves.png",
            "empty": "empty.ckpt",
            "zip": "other.zip",
            "gzip": "metrics.csv.gz",
            "png-as-ckpt": "model.ckpt",
            "text-as-npz": "weights.npz",
            "damaged-ckpt": "damaged.ckpt",
            "damaged-npz": "damaged.npz",
            "truncated-ckpt": "truncated.ckpt",
        }[case]
    )
    if case == "text":
        path.write_text("hello, these are my notes\n")
        return path, "text file"
    if case in ("png", "png-as-ckpt"):
        path.write_bytes(png_bytes())
        return path, "PNG image"
    if case == "empty":
        path.write_bytes(b"")
        return path, "empty file"
    if case == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("notes.txt", "hello")
        return path, "zip archive of other files"
    if case == "gzip":
        path.write_bytes(gzip.compress((mlx_run / "metrics.csv").read_bytes()))
        return path, "gzip file"
    if case == "text-as-npz":
        path.write_text("hello\n")
        return path, "text file"
    if case == "damaged-ckpt":  # a torch zip whose pickle is garbage: the weights-only unpickler raises IndexError
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("damaged/data.pkl", b"a: 1\nb: [1, 2]\n")  # YAML: the unpickler pops an empty stack
            z.writestr("damaged/version", "3\n")
        return path, "a PyTorch file that does not read"
    if case == "damaged-npz":  # an .npz whose array is no .npy
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("model.fc2.weight.npy", b"hello")
            z.writestr("meta.npy", b"hello")
        return path, "an .npz that does not read"
    if case == "truncated-ckpt":
        data = (torch_run / "checkpoints" / "final.ckpt").read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path, "damaged or truncated zip file"
    raise AssertionError(case)


CASES = [
    "yaml",
    "csv",
    "json",
    "text",
    "png",
    "empty",
    "zip",
    "gzip",
    "png-as-ckpt",
    "text-as-npz",
    "damaged-ckpt",
    "damaged-npz",
    "truncated-ckpt",
]
MODES = {"weights-test-only": ["--test-only", "--weights"], "weights": ["--weights"], "resume": ["--resume"]}


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES)
def test_a_file_that_is_no_checkpoint_is_one_line(case, mode, framework, real, tmp_path, capsys, monkeypatch):
    path, what = write_wrong_file(case, tmp_path / "files", real["root"])
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    before = tree(real["root"]), tree(tmp_path / "files")
    out = ["--output-dir", str(tmp_path / "o")] if mode != "resume" else []
    flag = MODES[mode][-1]
    code, err, _ = run_script(
        framework,
        "--data-dir",
        str(real["data"]),
        "--no-download",
        *QUICK,
        *out,
        *MODES[mode],
        str(path),
        capsys=capsys,
    )
    line = one_error_line(code, err)
    if flag == "--weights":
        expected = EXPECTED_WEIGHTS
    else:
        expected = f"expected a {'fit.py' if framework == 'torch' else 'fit_mlx.py'} checkpoint"
    assert line.startswith(f"error: {flag} {path}: ") and f"; {expected}" in line, line
    if flag == "--resume" and case == "damaged-ckpt" and framework == "mlx":
        what = "a PyTorch file (resume it with scripts/fit.py)"  # fit_mlx.py does not read torch files
    if flag == "--resume" and case == "damaged-npz":
        what = {
            "torch": "an MLX checkpoint (resume it with scripts/fit_mlx.py)",  # nor fit.py .npz files
            "mlx": "an MLX checkpoint that does not read",
        }[framework]
    assert what in line[len(f"error: {flag} {path}: ") :].split("; expected")[0], line
    assert not (tmp_path / "o").exists() and tree(work) == set()  # no run folder, here or under runs/
    assert (tree(real["root"]), tree(tmp_path / "files")) == before


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_weights_are_checked_before_the_data_are_read(framework, real, tmp_path, capsys):
    """Up front, as every flag: not after reading (or downloading) the data and waiting for the lock."""
    path = real["root"] / "torch" / "hparams.yaml"
    code, err, _ = run_script(
        framework,
        "--data-dir",
        str(tmp_path / "no-data"),
        "--no-download",
        "--test-only",
        "--weights",
        str(path),
        capsys=capsys,
    )
    assert one_error_line(code, err).startswith(f"error: --weights {path}: a YAML file starting")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_resume_refuses_the_other_frameworks_checkpoint_and_bare_weights(framework, real, tmp_path, capsys):
    other = real["root"] / ("mlx" if framework == "torch" else "torch") / "checkpoints"
    ext = ".npz" if framework == "torch" else ".ckpt"
    args = ["--data-dir", str(real["data"]), "--no-download", *QUICK]
    code, err, _ = run_script(framework, *args, "--resume", str(other / f"last{ext}"), capsys=capsys)
    line = one_error_line(code, err)
    if framework == "torch":
        assert "an MLX checkpoint (resume it with scripts/fit_mlx.py); expected a fit.py checkpoint" in line, line
    else:
        assert "a PyTorch file (resume it with scripts/fit.py); expected a fit_mlx.py checkpoint" in line
    own = real["root"] / framework / "checkpoints" / ("initial.pt" if framework == "torch" else "initial.npz")
    code, err, _ = run_script(framework, *args, "--resume", str(own), capsys=capsys)
    assert "weights without training state (start from them with --weights); expected" in one_error_line(code, err)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("source", ["final", "initial", "bf16"])
def test_the_other_frameworks_checkpoint_loads_with_weights(framework, source, real, tmp_path, capsys):
    if source == "bf16":  # fit.py --precision bf16-true's own final.ckpt: its state dict holds bfloat16 tensors
        if framework == "torch":
            pytest.skip("a bf16-true checkpoint into fit.py is its own framework's")
        path = real["root"] / "bf16" / "checkpoints" / "final.ckpt"
        assert torch.load(path, weights_only=True)["state_dict"]["model.fc2.weight"].dtype == torch.bfloat16
    else:
        other = "mlx" if framework == "torch" else "torch"
        ext = {"torch": {"final": ".ckpt", "initial": ".pt"}, "mlx": {"final": ".npz", "initial": ".npz"}}[other]
        path = real["root"] / other / "checkpoints" / f"{source}{ext[source]}"
    code, err, record = run_script(
        framework,
        "--data-dir",
        str(real["data"]),
        "--no-download",
        "--model",
        "small_cnn",
        "--test-only",
        "--weights",
        str(path),
        "--limit-test-batches",
        "1",
        "--output-dir",
        str(tmp_path / "eval"),
        capsys=capsys,
    )
    assert code == 0 and record["status"] == "finished", err[-3000:]
    assert json.loads((tmp_path / "eval" / "run.json").read_text())["checkpoint"] == str(path)


# ------------------------------------------------------------- Ctrl-C is kept
def test_ctrl_c_while_reading_weights_is_not_swallowed(tmp_path, monkeypatch):
    path = tmp_path / "w.pt"
    torch.save(torch_models.build_model("small_cnn", 10).state_dict(), path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "load", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_torch_state(path)


# ------------------------------------------------------------ float flags
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(
    "flag,value",
    [
        ("--epochs", "inf"),
        ("--epochs", "nan"),
        ("--epochs", "-inf"),
        ("--lr", "inf"),
        ("--lr", "nan"),
        ("--momentum", "nan"),
        ("--weight-decay", "inf"),
        ("--weight-decay", "nan"),
        ("--dropout", "nan"),
        ("--dropout", "inf"),
        ("--memory-limit", "inf"),
    ],
)
def test_float_flags_must_be_finite(framework, flag, value, cifar10_dir, tmp_path, capsys, monkeypatch):
    if flag == "--memory-limit" and framework == "torch":
        pytest.skip("fit_mlx.py's own flag")
    monkeypatch.chdir(tmp_path)
    args = ["--data-dir", str(cifar10_dir), "--no-download", *QUICK, "--output-dir", str(tmp_path / "o")]
    code, err, _ = run_script(framework, *args, f"{flag}={value}", capsys=capsys)  # "=": -inf is no option
    assert one_error_line(code, err) == f"error: {flag} must be a finite number, got {float(value)}"
    assert not (tmp_path / "o").exists() and not (tmp_path / "runs").exists()  # nothing left on disk


# ------------------------------------------------------- float32 in, always
@pytest.fixture
def source():
    """small_cnn weights, BatchNorm statistics randomised, in torch layout (float32)."""
    torch.manual_seed(0)
    model = torch_models.build_model("small_cnn", 10)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.num_batches_tracked.fill_(7)
    return model.state_dict()


def write_low_precision(kind: str, state: dict, folder: Path) -> tuple[Path, dict]:
    """`state` stored at low precision as a file of `kind`; returns the file and the values it
    holds upcast to float32 (torch layout; integer buffers as stored)."""
    dtype = torch.bfloat16 if kind.endswith("bf16") else torch.float16
    low = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    upcast = {k: (v.float() if v.is_floating_point() else v) for k, v in low.items()}
    mlx_arrays = torch_layout_to_mlx({k: v.numpy() for k, v in upcast.items() if not k.endswith("num_batches_tracked")})
    if kind == "npz-f16":
        path = folder / "w16.npz"
        np.savez(path, **{k: v.astype(np.float16) for k, v in mlx_arrays.items()})
    elif kind in ("safetensors-f16", "safetensors-bf16"):
        path = folder / "w.safetensors"
        mx_dtype = mx.bfloat16 if kind.endswith("bf16") else mx.float16
        mx.save_safetensors(str(path), {k: mx.array(v).astype(mx_dtype) for k, v in mlx_arrays.items()})
    elif kind == "state-dict-bf16":
        path = folder / "w.pt"
        torch.save(low, path)
    elif kind == "lightning-bf16":
        path = folder / "w.ckpt"
        torch.save({"state_dict": {f"model.{k}": v for k, v in low.items()}, "epoch": 0}, path)
    else:
        raise AssertionError(kind)
    from_mlx = kind.startswith(("npz", "safetensors"))
    return path, {
        k: (torch.zeros((), dtype=torch.int64) if from_mlx and k.endswith("num_batches_tracked") else v)
        for k, v in upcast.items()
    }


KINDS = ["npz-f16", "safetensors-f16", "safetensors-bf16", "state-dict-bf16", "lightning-bf16"]


@pytest.mark.parametrize("kind", KINDS)
def test_low_precision_weights_load_as_float32_into_torch(kind, source, tmp_path):
    path, expected = write_low_precision(kind, source, tmp_path)
    model = torch_models.build_model("small_cnn", 10)
    load_into_torch(model, path)
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            assert value.dtype == torch.int64 and value.item() == expected[key].item(), key
        else:
            assert value.dtype == torch.float32, (key, value.dtype)
            assert torch.equal(value, expected[key].reshape(value.shape)), key


@pytest.mark.parametrize("kind", KINDS)
def test_low_precision_weights_load_as_float32_into_mlx(kind, source, tmp_path):
    path, expected = write_low_precision(kind, source, tmp_path)
    model = mlx_models.build_model("small_cnn", 10)
    load_file(model, path)
    want = torch_layout_to_mlx({k: v.numpy() for k, v in expected.items() if not k.endswith("num_batches_tracked")})
    state = mlx_state(model)
    assert state.keys() == want.keys()
    for key, value in state.items():
        assert value.dtype == mx.float32, (key, value.dtype)
        assert np.array_equal(np.array(value), want[key]), key


def test_fit_mlx_trains_float32_from_float16_weights(source, cifar10_dir, tmp_path, capsys):
    path, _ = write_low_precision("npz-f16", source, tmp_path)
    out = tmp_path / "run"
    code, err, record = run_script(
        "mlx",
        "--data-dir",
        str(cifar10_dir),
        "--no-download",
        *QUICK,
        "--limit-test-batches",
        "1",
        "--weights",
        str(path),
        "--output-dir",
        str(out),
        capsys=capsys,
    )
    assert code == 0, err[-3000:]
    assert record["numerics"]["precision"] == "32-true"
    with np.load(out / "checkpoints" / "final.npz") as z:
        floats = {k: z[k].dtype for k in z.files if k.startswith(("model.", "optimizer.")) and z[k].dtype.kind == "f"}
    assert floats and set(floats.values()) == {np.dtype(np.float32)}, floats
