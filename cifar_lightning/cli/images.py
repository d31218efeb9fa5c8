"""A user's image files as the uint8 (32, 32, 3) RGB arrays the models take (Pillow, numpy).

Accepted: any format Pillow reads (PNG, JPEG, BMP, GIF, WebP, TIFF, PPM/PGM, ...), any size,
in the 8-bit modes whose conversion to RGB is unambiguous, each decided once here:

- RGB: as stored. RGBA and LA: the alpha channel is dropped (the colour stored under a
  transparent pixel is kept, as Pillow's ``convert("RGB")`` does). L (grey) and 1 (black and
  white): the grey copied to all three channels.
- P and PA (palette: GIF, and PNG, BMP, TIFF with a palette): each pixel takes its palette
  entry, which is 8-bit RGB; transparency is dropped as alpha is.
- A stored rotation: an EXIF Orientation tag (phones write one instead of turning the
  pixels) is applied first (``ImageOps.exif_transpose``), so the image is classified upright.
- An animated GIF or WebP, or a TIFF of several pages: the first frame.

An image that is not 32 x 32 is resized to 32 x 32 with ``RESIZE_FILTER`` (the aspect ratio
is not kept: a wide photo is squeezed, not cropped).

Refused, each with one line naming the file (``ImageInputError``): a file Pillow cannot
identify, a truncated or damaged image, an image whose header claims more pixels than
Pillow's ``MAX_IMAGE_PIXELS`` (a decompression bomb: checked before any pixel is decoded),
images of more than 8 bits per channel, in every format (PNG, TIFF, PPM/PGM: Pillow clips a
16-bit grey PNG to 8 bits instead of scaling it, and reads 16-bit RGB PNG and TIFF by
dropping the low byte), CMYK images (converting them needs the image's colour profile,
which Pillow ignores: colours come out wrong, inverted for Adobe CMYK JPEGs) and any other
mode (YCbCr, LAB, HSV, float). Those are for the user to convert with a tool that knows the
colour decision (e.g. ``convert x.png -depth 8 -colorspace sRGB -type TrueColor y.png``).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

from cifar_lightning.core.errors import UsageError

SIZE = 32  # CIFAR's image side, pixels
# The filter an image of another size is resized with: Pillow's bicubic, which for a smaller
# target widens its support with the scale factor (antialiased), so a large photo is
# averaged down rather than sampled (no aliasing)
RESIZE_FILTER_NAME = "bicubic"
ACCEPTED_MODES = ("RGB", "RGBA", "LA", "L", "1", "P", "PA")
EXPECTED_IMAGE = "expected an 8-bit RGB, RGBA, grey or palette image (PNG, JPEG, ...)"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class ImageInputError(UsageError):
    """An image file that cannot be used: the message names the file and what was expected."""


def display_name(path: str | Path) -> str:
    """`path` as text that can be printed and written to a UTF-8 CSV: a name whose bytes are
    not valid in the file system's encoding (a Latin-1 name on a UTF-8 Linux) shows those
    bytes as ``\\xNN`` escapes; any other name is unchanged."""
    text = str(path)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace")


def _png_bit_depth(path: Path) -> int | None:
    """The bit depth in a PNG's IHDR chunk (byte 24), or None for any other file."""
    with open(path, "rb") as f:
        head = f.read(25)
    return head[24] if len(head) == 25 and head.startswith(b"\x89PNG\r\n\x1a\n") else None


def _pnm_maxval(path: Path) -> int | None:
    """The largest sample value a PPM/PGM header declares (255 for 8 bits), or None for a
    bitmap (P1, P4) or any other file."""
    with open(path, "rb") as f:
        head = f.read(512)
    if len(head) < 2 or head[:1] != b"P" or head[1:2] not in b"2356":
        return None
    tokens = re.sub(rb"#[^\n]*", b" ", head[2:]).split()  # width, height, maxval; comments are blanks
    return int(tokens[2]) if len(tokens) > 2 and tokens[2].isdigit() else None


def _bits_per_sample(path: Path, image) -> int:
    """Bits of each channel as the file stores them (8 unless a header says more)."""
    if image.format == "PNG":
        return _png_bit_depth(path) or 8
    if image.format == "TIFF":
        return max(image.tag_v2.get(258, (8,)))  # BitsPerSample, one per channel
    if image.format == "PPM":
        maxval = _pnm_maxval(path)
        return 16 if maxval and maxval > 255 else 8
    return 8


def _image_kind(path: Path) -> str | None:
    """ "PNG", "JPEG" or "GIF" when the file opens with that format's signature, else None."""
    with open(path, "rb") as f:
        head = f.read(8)
    for magic, kind in ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF")):
        if head.startswith(magic):
            return kind
    return None


def _refusal(path: Path, image) -> str | None:
    """Why the opened `image` is refused (see the module's docstring), or None."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F") or _bits_per_sample(path, image) > 8:
        return f"an image of more than 8 bits per channel (mode {mode}); {EXPECTED_IMAGE}: convert it to 8 bits first"
    if mode == "CMYK":
        return f"a CMYK image; {EXPECTED_IMAGE}: convert it to RGB with its colour profile first"
    if mode not in ACCEPTED_MODES:
        return f"an image of mode {mode}; {EXPECTED_IMAGE}"
    return None


def read_image(path: str | Path) -> np.ndarray:
    """The image at `path` as uint8 (32, 32, 3), RGB, upright (EXIF orientation applied),
    resized with ``RESIZE_FILTER_NAME`` when it has another size. Raises ImageInputError
    (one line: the file, what it is, what was expected) for anything the module's
    docstring lists as refused."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    name = display_name(path)
    try:
        with warnings.catch_warnings():
            # Pillow warns of a header claiming more than MAX_IMAGE_PIXELS (above twice that it
            # refuses): either way the image is refused before any pixel is decoded
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:  # reads the header: the size is checked there
                image.load()  # a truncated file fails here
                why = _refusal(path, image)
                if why is not None:
                    raise ImageInputError(f"{name}: {why}")
                rgb = ImageOps.exif_transpose(image).convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageInputError(
            f"{name}: an image too large to decode ({e}); {EXPECTED_IMAGE} of a photo's size"
        ) from None
    except UnidentifiedImageError:
        kind = _image_kind(path)
        what = f"a truncated or damaged {kind}" if kind else "not an image Pillow can read"
        raise ImageInputError(f"{name}: {what}; {EXPECTED_IMAGE}") from None
    except OSError as e:  # truncated data, a broken stream, a CRC error
        raise ImageInputError(f"{name}: a truncated or damaged image ({e}); {EXPECTED_IMAGE}") from None
    except (SyntaxError, ValueError) as e:  # what Pillow's plugins raise for a malformed header
        raise ImageInputError(f"{name}: a damaged image ({e}); {EXPECTED_IMAGE}") from None
    if rgb.size != (SIZE, SIZE):
        rgb = rgb.resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8).copy()


def write_png(path: str | Path, pixels: np.ndarray) -> None:
    """Save uint8 (H, W, 3) RGB `pixels` as a PNG (lossless: read_image gives them back)."""
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(path, format="PNG")
