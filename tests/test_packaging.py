"""The wheel another project installs (``pip install .``, ``pip install git+...``) holds every
package of the checkout and imports outside it.

The wheel is built from this checkout with the environment's own setuptools and installed
without dependencies into a fresh virtual environment outside the checkout, which sees
this environment's packages (torch, MLX, ...) through a ``.pth`` path but neither the
checkout nor its editable install. Checked against: ``pyproject.toml`` listing the two top
packages only (the wheel then lacked ``cifar_lightning.core``: ModuleNotFoundError).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def checkout_packages() -> list[str]:
    """Every package of the checkout: the folders under the two top packages with an __init__.py."""
    found = []
    for top in ("cifar_lightning", "cifar_mlx_adapter"):
        for init in sorted((ROOT / top).rglob("__init__.py")):
            found.append(".".join(init.parent.relative_to(ROOT).parts))
    return found


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv outside the checkout with the wheel installed (its commands in the venv's
    bin/); returns its python."""
    where = tmp_path_factory.mktemp("wheel")
    source = where / "source"  # a copy of what the build reads: no stale build/ folder can add files
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for package in ("cifar_lightning", "cifar_mlx_adapter"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "--wheel-dir",
            str(where / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    [wheel] = (where / "dist").glob("*.whl")
    venv.EnvBuilder(with_pip=False).create(where / "venv")
    python = where / "venv" / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site, "dependencies.pth").write_text(
        "\n".join(sorted(ours)) + "\n"
    )  # paths only: their .pth files stay unread
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    return python


def test_the_wheel_holds_and_imports_every_package_outside_the_checkout(installed, tmp_path):
    packages = checkout_packages()
    assert "cifar_lightning.core" in packages
    code = (
        "import importlib, json, sys; names = json.loads(sys.argv[1]); "
        "print(json.dumps({n: importlib.import_module(n).__file__ for n in names}))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run(
        [str(installed), "-c", code, json.dumps(packages)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    files = json.loads(r.stdout.strip().splitlines()[-1])
    venv_root = installed.parents[1]
    for name, file in files.items():  # from the installed wheel, not the checkout
        assert Path(file).resolve().is_relative_to(venv_root.resolve()), (name, file)


def test_the_installed_commands_run_outside_the_checkout(installed, tmp_path):
    """The console scripts of the wheel (cifar-fit, cifar-fit-mlx, cifar-predict, cifar-export,
    cifar-report, cifar-compare) are installed and answer --help from a folder outside the checkout."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for name, words in (
        ("cifar-fit", "PyTorch Lightning"),
        ("cifar-fit-mlx", "Apple MLX"),
        ("cifar-predict", "Classify images"),
        ("cifar-export", "Export a checkpoint"),
        ("cifar-report", "Results.md"),
        ("cifar-compare", "Compare PyTorch and MLX"),
    ):
        r = subprocess.run(
            [str(installed.parent / name), "--help"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300
        )
        assert r.returncode == 0 and words in r.stdout, (name, r.stderr[-2000:])
