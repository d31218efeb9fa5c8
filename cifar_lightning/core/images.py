"""A user's image files as the uint8 (32, 32, 3) RGB arrays the models take (Pillow, numpy).

Accepted: any format Pillow reads (PNG, JPEG, BMP, GIF, WebP, TIFF, ...), any size, in the
8-bit modes whose conversion to RGB is unambiguous: RGB, RGBA and LA (the alpha channel is
dropped, as Pillow's ``convert("RGB")`` does), L (grey: copied to all three channels) and 1
(black and white). An image that is not 32 x 32 is resized to 32 x 32 with
``RESIZE_FILTER`` (the aspect ratio is not kept: a wide photo is squeezed, not cropped).

Refused, each with one line naming the file (``ImageInputError``): a file Pillow cannot
identify, a truncated or damaged image, 16-bit images (Pillow clips a 16-bit grey PNG to
8 bits instead of scaling it, and reads 16-bit RGB by dropping the low byte), CMYK images
(converting them needs the image's colour profile, which Pillow ignores: colours come out
wrong, inverted for Adobe CMYK JPEGs) and palette images (mode P: their transparency and
palette can hold colours the 8-bit RGB conversion does not keep). Those are for the user to
convert with a tool that knows the colour decision (e.g. ``convert x.png -depth 8
-colorspace sRGB -type TrueColor y.png``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import UsageError

SIZE = 32  # CIFAR's image side, pixels
# The filter an image of another size is resized with: Pillow's bicubic, which for a smaller
# target widens its support with the scale factor (antialiased), so a large photo is
# averaged down rather than sampled (no aliasing)
RESIZE_FILTER_NAME = "bicubic"
ACCEPTED_MODES = ("RGB", "RGBA", "LA", "L", "1")
EXPECTED_IMAGE = "expected an 8-bit RGB, RGBA or grey image (PNG, JPEG, ...)"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class ImageInputError(UsageError):
    """An image file that cannot be used: the message names the file and what was expected."""


def _png_bit_depth(path: Path) -> int | None:
    """The bit depth in a PNG's IHDR chunk (byte 24), or None for any other file."""
    with open(path, "rb") as f:
        head = f.read(25)
    return head[24] if len(head) == 25 and head.startswith(b"\x89PNG\r\n\x1a\n") else None


def _image_kind(path: Path) -> str | None:
    """"PNG", "JPEG" or "GIF" when the file opens with that format's signature, else None."""
    with open(path, "rb") as f:
        head = f.read(8)
    for magic, kind in ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF")):
        if head.startswith(magic):
            return kind
    return None


def _refusal(path: Path, image) -> str | None:
    """Why the opened `image` is refused (see the module's docstring), or None."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F") or _png_bit_depth(path) == 16:
        return f"a 16-bit image (mode {mode}); {EXPECTED_IMAGE}: convert it to 8 bits per channel first"
    if mode == "CMYK":
        return f"a CMYK image; {EXPECTED_IMAGE}: convert it to RGB with its colour profile first"
    if mode in ("P", "PA"):
        return f"a palette image (mode {mode}); {EXPECTED_IMAGE}: save it as RGB or RGBA first"
    if mode not in ACCEPTED_MODES:
        return f"an image of mode {mode}; {EXPECTED_IMAGE}"
    return None


def read_image(path: str | Path) -> np.ndarray:
    """The image at `path` as uint8 (32, 32, 3), RGB, resized with ``RESIZE_FILTER_NAME``
    when it has another size. Raises ImageInputError (one line: the file, what it is, what
    was expected) for anything the module's docstring lists as refused."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()  # Image.open reads the header only: a truncated file fails here
            why = _refusal(path, image)
            if why is not None:
                raise ImageInputError(f"{path}: {why}")
            rgb = image.convert("RGB")
    except UnidentifiedImageError:
        kind = _image_kind(path)
        what = f"a truncated or damaged {kind}" if kind else "not an image Pillow can read"
        raise ImageInputError(f"{path}: {what}; {EXPECTED_IMAGE}") from None
    except OSError as e:  # truncated data, a broken stream, a CRC error
        raise ImageInputError(f"{path}: a truncated or damaged image ({e}); {EXPECTED_IMAGE}") from None
    except (SyntaxError, ValueError) as e:  # what Pillow's plugins raise for a malformed header
        raise ImageInputError(f"{path}: a damaged image ({e}); {EXPECTED_IMAGE}") from None
    if rgb.size != (SIZE, SIZE):
        rgb = rgb.resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8).copy()


def write_png(path: str | Path, pixels: np.ndarray) -> None:
    """Save uint8 (H, W, 3) RGB `pixels` as a PNG (lossless: read_image gives them back)."""
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(path, format="PNG")
