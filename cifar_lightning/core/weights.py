"""Weight files of either framework, checked against the model they load into.

torch files: Lightning checkpoints (``.ckpt``, keys prefixed ``model.``) or plain
state dicts (``.pt``/``.pth``), recognised here and read by the torch wing
(``cifar_lightning.weights``). MLX files: ``.npz`` written by ``cifar_mlx_adapter``
and ``.safetensors`` in MLX layout (both read here with numpy only, so torch users need
no MLX to read them).

Files are recognised by their content, not by their name (``weights_file_kind``): a
file that is no weights file of either framework, or one that does not parse, is a
UsageError of one line, ``<file>: <what it is>; expected <what>``. Floating arrays
are handed on in their own width (float16, float32, float64), bfloat16 as float32
(numpy has no bfloat16); each framework's loader then puts them into its model's own
dtype, float32 in both scripts. Integer arrays (torch's ``num_batches_tracked``)
keep theirs.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from cifar_lightning.core.errors import CIFARError, UsageError

# the "expected ..." part of every message about a --weights file
EXPECTED_WEIGHTS = (
    "expected weights of either framework (fit.py's .ckpt or .pt, fit_mlx.py's .npz, or MLX .safetensors)"
)

# torch.save writes a zip holding <name>/data.pkl; before torch 1.6 (or with
# _use_new_zipfile_serialization=False) a pickle stream that opens with torch's magic number
TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"

# other files at hand in a run folder or a download folder, by their first bytes
MAGIC = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip file"),
    (b"BZh", "a bzip2 file"),
    (b"\xfd7zXZ", "an xz file"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"\x89HDF", "an HDF5 file"),
    (b"\x93NUMPY", "a single NumPy array (.npy), not named weights"),
    (b"\x7fELF", "an executable"),
)
TEXT_KINDS = {
    ".yaml": "a YAML file",
    ".yml": "a YAML file",
    ".csv": "a CSV file",
    ".json": "a JSON file",
    ".md": "a Markdown file",
    ".py": "a Python file",
}

# safetensors dtype names -> numpy (BF16 is read by hand: numpy has no bfloat16)
SAFETENSORS_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U64": "<u8",
    "U32": "<u4",
    "U16": "<u2",
    "U8": "u1",
    "BOOL": "?",
}


class WeightsMismatchError(CIFARError, ValueError):
    """Weights that do not fit the model: names the first offending key and both shapes."""


def check_weights(expected: dict[str, tuple], given: dict[str, tuple], what: str = "weights") -> None:
    """Raise WeightsMismatchError at the first key missing, extra or of another shape."""
    for key, shape in expected.items():
        if key not in given:
            raise WeightsMismatchError(f"{what}: missing key {key!r} (model expects shape {tuple(shape)})")
        if tuple(given[key]) != tuple(shape):
            raise WeightsMismatchError(
                f"{what}: key {key!r} has shape {tuple(given[key])}, the model expects {tuple(shape)} "
                "(another model or number of classes?)"
            )
    for key in given:
        if key not in expected:
            raise WeightsMismatchError(f"{what}: unexpected key {key!r} of shape {tuple(given[key])} (another model?)")


def is_conv_weight(key: str, array) -> bool:
    return key.endswith("weight") and array.ndim == 4


def mlx_layout_to_torch(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Conv weights (out, kh, kw, in) -> (out, in, kh, kw); everything else as is."""
    return {k: (np.transpose(v, (0, 3, 1, 2)) if is_conv_weight(k, v) else v) for k, v in weights.items()}


def torch_layout_to_mlx(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Conv weights (out, in, kh, kw) -> (out, kh, kw, in); everything else as is."""
    return {k: (np.transpose(v, (0, 2, 3, 1)) if is_conv_weight(k, v) else v) for k, v in weights.items()}


# ----------------------------------------------------------- what a file is
def _safetensors_header(head: bytes, size: int) -> dict | None:
    """The JSON header of a safetensors file (8 bytes of little-endian length, then JSON), or None."""
    if len(head) < 10 or head[8:9] != b"{":
        return None
    n = int.from_bytes(head[:8], "little")
    if n > size - 8 or n > len(head) - 8:
        return None
    try:
        header = json.loads(head[8 : 8 + n])
    except ValueError:
        return None
    return header if isinstance(header, dict) else None


def _text_kind(path: Path, head: bytes) -> str | None:
    """'a YAML file starting ...' for a text file, else None."""
    if b"\0" in head:
        return None
    for cut in range(4):  # the bytes read may end inside a UTF-8 character
        try:
            text = head[: len(head) - cut].decode("utf-8")
            break
        except UnicodeDecodeError:
            continue
    else:
        return None
    start = " ".join(text.split())  # pretty-printed JSON opens with a lone "{"
    if not start:
        return "a file of blank lines"
    kind = TEXT_KINDS.get(path.suffix.lower(), "a JSON file" if start[0] in "{[" else "a text file")
    return f"{kind} starting {start[:30]!r}"


def weights_file_kind(path: str | Path) -> tuple[str | None, str]:
    """What `path` is, by its content (its name is not trusted): ``(kind, description)``.

    kind: "torch" (written by torch.save), "npz" (a zip of .npy arrays, as numpy and
    MLX write them), "safetensors", or None for anything else (text, images, other
    archives, an empty file), which the description names."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError as e:
        return None, f"a file that cannot be read ({e.strerror or type(e).__name__})"
    if not head:
        return None, "an empty file"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except Exception:  # a damaged zip fails in many ways; KeyboardInterrupt is no Exception
            return None, "a damaged or truncated zip file"
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            return "torch", "a PyTorch file"
        if names and all(n.endswith(".npy") for n in names):
            if "meta.npy" in names and any(n.startswith("model.") for n in names):
                return "npz", "an MLX checkpoint"
            return "npz", "an .npz of weights"
        if not names:
            return None, "an empty zip archive"
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        return None, f"a zip archive of other files ({shown})"
    if head.startswith(TORCH_LEGACY_MAGIC):
        return "torch", "a PyTorch file"
    if _safetensors_header(head, size) is not None:
        return "safetensors", "a safetensors file"
    for magic, what in MAGIC:
        if head.startswith(magic):
            return None, what
    text = _text_kind(path, head)
    if text is not None:
        return None, text
    if head[:1] == b"\x80":
        return None, "a Python pickle that is no PyTorch file"
    return None, "a binary file of an unknown kind"


def check_weights_file(path: str | Path, flag: str = "--weights") -> str:
    """The kind of a --weights file (see ``weights_file_kind``); UsageError when it is none."""
    kind, what = weights_file_kind(path)
    if kind is None:
        raise UsageError(f"{flag} {path}: {what}; {EXPECTED_WEIGHTS}")
    return kind


# ------------------------------------------------------------------ readers
def unreadable(path, what: str, e: BaseException, expected: str = EXPECTED_WEIGHTS) -> UsageError:
    return UsageError(f"{path}: {what} that does not read ({type(e).__name__}); {expected}")


def read_npz_model(path: str | Path) -> dict[str, np.ndarray]:
    """The model arrays of an MLX checkpoint (keys ``model.<name>``) or a bare weights .npz."""
    try:  # allow_pickle=False: an .npz holding pickled objects is refused, and nothing in it runs
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:
        if "pickle" not in str(e):
            raise unreadable(path, "an .npz", e) from None
        raise UsageError(
            f"{path}: an .npz holding pickled objects (refused: nothing in it was run); {EXPECTED_WEIGHTS}"
        ) from None
    except Exception as e:  # any other parse error of a damaged file; KeyboardInterrupt is no Exception
        raise unreadable(path, "an .npz", e) from None
    model = {k[len("model.") :]: v for k, v in arrays.items() if k.startswith("model.")}
    model = model or arrays
    for key, value in model.items():
        if not isinstance(value, np.ndarray):  # numpy hands on a member that is no .npy as its bytes
            raise UsageError(f"{path}: an .npz that does not read ({key!r} is no array); {EXPECTED_WEIGHTS}")
        if value.dtype.kind not in "biuf":
            raise UsageError(
                f"{path}: an .npz whose array {key!r} holds {value.dtype} values, no weights; {EXPECTED_WEIGHTS}"
            )
    return model


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a .safetensors file (keys ``model.<name>`` stripped), read with numpy
    alone; bfloat16 arrays come as float32 (exact: bfloat16 is float32's upper half)."""
    try:
        data = Path(path).read_bytes()
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + n])
        arrays = {}
        for key, info in header.items():
            if key == "__metadata__":
                continue
            start, end = info["data_offsets"]
            raw = data[8 + n + start : 8 + n + end]
            if info["dtype"] == "BF16":
                array = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                array = np.frombuffer(raw, SAFETENSORS_DTYPES[info["dtype"]])
            arrays[key] = array.reshape(info["shape"]).astype(array.dtype.newbyteorder("="))
    except Exception as e:  # any parse error of a damaged file; KeyboardInterrupt is no Exception
        raise unreadable(path, "a safetensors file", e) from None
    model = {k[len("model.") :]: v for k, v in arrays.items() if k.startswith("model.")}
    return model or arrays
