"""What ``scripts/predict.py`` is asked to classify, read into one uint8 array (numpy, Pillow).

Each INPUT is one of:
  - an image file (any format and size Pillow reads: ``images.read_image``);
  - a folder: every file in it and its subfolders whose name ends in an image suffix
    (``images.IMAGE_SUFFIXES``, any case), in sorted path order; other files are not read;
  - a ``.npy`` of uint8 (N, 32, 32, 3), RGB, as ``np.save`` writes it (read without pickle);
  - ``cifar10:test`` or ``cifar100:test``: the official test split from ``data_dir`` (with
    its labels, so the summary can state an accuracy).

A bad input (a file that is no usable image, a ``.npy`` of another shape or dtype, an empty
folder, a path that does not exist, the test set of a dataset with another number of
classes than the model's) gives one error line naming it and is left out; every other input
is still read. Inside a folder, a bad file is left out and the folder's other images are
read. Nothing is left out silently: each left-out input has its line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cifar_lightning.cli.images import EXPECTED_IMAGE, IMAGE_SUFFIXES, SIZE, ImageInputError, display_name, read_image
from cifar_lightning.core.datasets import DATASETS, CIFARDataError, read_split

EXPECTED_INPUT = (
    "expected image files, folders of them, a .npy of uint8 (N, 32, 32, 3), or cifar10:test / cifar100:test"
)


@dataclass
class Inputs:
    """Images read so far: names (N,) as the CSV's ``input`` column gives them, pixels uint8
    (N, 32, 32, 3) RGB, labels int64 (N,) with -1 where unknown; `errors` holds one line per
    input left out."""

    names: list[str] = field(default_factory=list)
    pixels: list[np.ndarray] = field(default_factory=list)  # parts, concatenated by ``images``
    labels: list[np.ndarray] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, names: list[str], pixels: np.ndarray, labels: np.ndarray | None = None) -> None:
        self.names += names
        self.pixels.append(pixels)
        self.labels.append(np.full(len(names), -1, np.int64) if labels is None else labels.astype(np.int64))

    @property
    def images(self) -> np.ndarray:
        """uint8 (N, 32, 32, 3) of every input read."""
        return np.concatenate(self.pixels) if self.pixels else np.zeros((0, SIZE, SIZE, 3), np.uint8)

    @property
    def known_labels(self) -> np.ndarray:
        """int64 (N,), -1 where the input has no label."""
        return np.concatenate(self.labels) if self.labels else np.zeros(0, np.int64)


def _npy_header(path: Path) -> tuple[tuple, np.dtype, int]:
    """(shape, dtype, bytes of data the header promises) of a .npy, read from its header
    alone; ValueError for a header numpy cannot read."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
        return shape, dtype, f.tell()


def read_npy(path: Path) -> np.ndarray:
    """A .npy of uint8 (N, 32, 32, 3); ImageInputError naming the file otherwise. The header
    is checked before any data is read: an array of another shape or dtype, or one larger
    than the file holds, is refused without reserving its memory."""
    name = display_name(path)
    expected = f"expected a .npy of uint8 (N, {SIZE}, {SIZE}, 3) RGB images"
    try:
        shape, dtype, offset = _npy_header(path)
    except Exception as e:  # a truncated or foreign header fails in many ways; KeyboardInterrupt is no Exception
        raise ImageInputError(f"{name}: not a readable .npy ({type(e).__name__}); {expected}") from None
    if dtype.hasobject:
        raise ImageInputError(f"{name}: a .npy of pickled objects (refused: nothing in it was run); {expected}")
    if dtype != np.uint8 or len(shape) != 4 or tuple(shape[1:]) != (SIZE, SIZE, 3):
        hint = " (channels first? transpose to (N, 32, 32, 3))" if tuple(shape[1:2]) == (3,) else ""
        raise ImageInputError(f"{name}: a .npy of {dtype} {tuple(shape)}{hint}; {expected}")
    if shape[0] == 0:
        raise ImageInputError(f"{name}: a .npy of 0 images; {expected}")
    held = path.stat().st_size - offset
    if held < shape[0] * SIZE * SIZE * 3:
        raise ImageInputError(
            f"{name}: a truncated .npy: its header says {shape[0]:,} images "
            f"({shape[0] * SIZE * SIZE * 3:,} bytes), the file holds {max(held, 0):,} bytes; "
            f"{expected}"
        )
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:  # a damaged file that passed its header; KeyboardInterrupt is no Exception
        raise ImageInputError(f"{name}: a damaged .npy ({type(e).__name__}: {e}); {expected}") from None


def folder_images(folder: Path) -> list[Path]:
    """Files under `folder` (recursively) with an image suffix, in sorted order; hidden ones skipped."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def read_test_split(spec: str, data_dir: Path, num_classes: int, inputs: Inputs) -> None:
    name = spec.split(":")[0]
    info = DATASETS[name]
    if info.num_classes != num_classes:
        raise ImageInputError(
            f"{spec}: the model classifies {num_classes} classes, {name} has "
            f"{info.num_classes}; expected the test set of its own dataset"
        )
    try:
        images, labels = read_split(data_dir, name, train=False)
    except CIFARDataError as e:
        raise ImageInputError(f"{spec}: {e}") from None
    inputs.add([f"{spec}[{i}]" for i in range(len(images))], images.transpose(0, 2, 3, 1), labels)


def read_inputs(specs: list[str], data_dir: str | Path, num_classes: int) -> Inputs:
    """Every INPUT in `specs` read (see the module's docstring), with one error line per one
    left out."""
    inputs = Inputs()
    for spec in specs:
        try:
            _read_one(spec, Path(data_dir), num_classes, inputs)
        except ImageInputError as e:
            inputs.errors.append(str(e))
    return inputs


def _read_one(spec: str, data_dir: Path, num_classes: int, inputs: Inputs) -> None:
    if ":" in spec and spec.split(":")[0] in DATASETS and not Path(spec).exists():
        if spec.split(":", 1)[1] != "test":
            raise ImageInputError(f"{spec}: only the test split can be predicted; {EXPECTED_INPUT}")
        return read_test_split(spec, data_dir, num_classes, inputs)
    path = Path(spec)
    if path.is_dir():
        files = folder_images(path)
        if not files:
            raise ImageInputError(
                f"{display_name(spec)}: a folder with no image files ({', '.join(IMAGE_SUFFIXES[:4])}, ...); "
                f"{EXPECTED_INPUT}"
            )
        for file in files:
            try:
                inputs.add([display_name(file)], read_image(file)[None])
            except ImageInputError as e:
                inputs.errors.append(str(e))
        return
    if not path.is_file():
        raise ImageInputError(f"{display_name(spec)}: no such file or folder; {EXPECTED_INPUT}")
    with open(path, "rb") as f:
        is_npy = f.read(6) == b"\x93NUMPY"
    if is_npy or path.suffix.lower() == ".npy":
        array = read_npy(path)
        inputs.add([f"{display_name(spec)}[{i}]" for i in range(len(array))], array)
        return
    inputs.add([display_name(spec)], read_image(path)[None])


__all__ = ["EXPECTED_IMAGE", "EXPECTED_INPUT", "ImageInputError", "Inputs", "read_inputs", "read_npy"]
