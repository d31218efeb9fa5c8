"""What predict.py makes of a user's images: each mode of each format the README lists
converted or refused as ``core.images`` states, photos turned upright, and no input (however
named, however large its header says it is) ending the call or losing the other rows.

The expected pixels are computed here from Pillow's own stored values (the palette, the
grey level), not by ``read_image``'s code path. Planted faults, each made a test here fail:
palette images refused again; ``exif_transpose`` skipped; the TIFF and PPM bit-depth checks
removed (16-bit RGB read by dropping the low byte); ``display_name`` returning the name
unchanged (UnicodeEncodeError writing the CSV, no CSV); the .npy header check removed.
"""

from __future__ import annotations

import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifar_lightning.cli.images import ImageInputError, read_image
from cifar_lightning.cli.inputs import read_inputs
from cifar_lightning.core.predictions import read_predictions_csv

RGB = np.random.default_rng(0).integers(0, 256, (32, 32, 3)).astype(np.uint8)
# each format the README lists, saved losslessly where it can be, with the modes Pillow writes in it
FORMATS = {"png": {}, "bmp": {}, "gif": {}, "tif": {}, "ppm": {}, "webp": {"lossless": True}}


def expected_rgb(image: Image.Image) -> np.ndarray:
    """The uint8 (32, 32, 3) RGB a stored image means, from the values Pillow stores: its
    channels (alpha dropped), a grey level on all three, a palette entry."""
    mode, data = image.mode, np.asarray(image)
    if mode in ("RGB", "RGBA"):
        return data[..., :3]
    if mode in ("L", "LA"):
        grey = data if mode == "L" else data[..., 0]
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "1":
        return np.repeat(np.where(data, 255, 0).astype(np.uint8)[..., None], 3, axis=2)
    if mode in ("P", "PA"):
        palette = np.array(image.getpalette("RGB"), np.uint8).reshape(-1, 3)
        return palette[data if mode == "P" else data[..., 0]]
    raise AssertionError(mode)


@pytest.mark.parametrize("ext", sorted(FORMATS))
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "L", "1", "P", "PA"])
def test_each_8_bit_mode_of_each_format_reads_as_its_stored_colours(ext, mode, tmp_path):
    """Every 8-bit mode a format stores reads as the colours it means: alpha and a palette's
    transparency dropped, grey on three channels, palette entries looked up (GIF's every
    image is one)."""
    path = tmp_path / f"x.{ext}"
    try:
        Image.fromarray(RGB).convert(mode).save(path, **FORMATS[ext])
    except (OSError, ValueError, KeyError):
        pytest.skip(f"Pillow writes no {mode} {ext}")
    with Image.open(path) as stored:
        stored.load()
        want = expected_rgb(stored)
    np.testing.assert_array_equal(read_image(path), want)


def png16(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit RGB PNG (colour type 2, depth 16), written by hand: Pillow writes none."""
    h, w, _ = pixels.shape
    rows = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )


def tiff16(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit RGB TIFF (BitsPerSample 16, 16, 16; uncompressed), written by hand."""
    h, w, _ = pixels.shape
    data = pixels.astype("<u2").tobytes()
    bits_at, ifd_at = 8, 16
    data_at = ifd_at + 2 + 9 * 12 + 4
    tags = [
        (256, 3, 1, w),
        (257, 3, 1, h),
        (258, 3, 3, bits_at),
        (259, 3, 1, 1),
        (262, 3, 1, 2),
        (273, 4, 1, data_at),
        (277, 3, 1, 3),
        (278, 3, 1, h),
        (279, 4, 1, len(data)),
    ]
    out = b"II*\0" + struct.pack("<I", ifd_at) + struct.pack("<3H", 16, 16, 16) + b"\0\0" + struct.pack("<H", 9)
    for tag, kind, count, value in tags:
        packed = struct.pack("<HH", value, 0) if kind == 3 and count == 1 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, count) + packed
    path.write_bytes(out + struct.pack("<I", 0) + data)


DEEP = RGB.astype(np.uint16) * 257  # 16 bits per channel, the same colours


def deep_images(folder: Path) -> dict[str, Path]:
    grey = DEEP[..., 0]
    paths = {
        name: folder / name
        for name in ("grey.png", "rgb.png", "grey.tif", "rgb.tif", "rgb.ppm", "grey.pgm", "comment.ppm")
    }
    Image.fromarray(grey).save(paths["grey.png"])
    png16(paths["rgb.png"], DEEP)
    Image.fromarray(grey).save(paths["grey.tif"])
    tiff16(paths["rgb.tif"], DEEP)
    paths["rgb.ppm"].write_bytes(b"P6 32 32 65535\n" + DEEP.astype(">u2").tobytes())
    paths["grey.pgm"].write_bytes(b"P5 32 32 65535\n" + grey.astype(">u2").tobytes())
    paths["comment.ppm"].write_bytes(b"P6\n# made by hand 255\n32 32\n1023\n" + (DEEP >> 6).astype(">u2").tobytes())
    return paths


def test_more_than_8_bits_per_channel_is_refused_in_every_format(tmp_path):
    """16-bit grey and RGB in PNG, TIFF and PPM/PGM (and 10-bit PPM): one line each, never
    read silently (Pillow reads 16-bit RGB PNG and TIFF by dropping the low byte)."""
    for name, path in deep_images(tmp_path).items():
        with pytest.raises(ImageInputError) as refused:
            read_image(path)
        message = str(refused.value)
        assert message.startswith(f"{path}: an image of more than 8 bits per channel"), (name, message)
        assert "\n" not in message and "convert it to 8 bits" in message


def test_cmyk_and_other_modes_are_refused_in_one_line(tmp_path):
    for ext, mode, word in (
        ("jpg", "CMYK", "a CMYK image"),
        ("tif", "CMYK", "a CMYK image"),
        ("tif", "YCbCr", "an image of mode YCbCr"),
        ("tif", "F", "more than 8 bits"),
    ):
        path = tmp_path / f"{mode}.{ext}"
        Image.fromarray(RGB).convert(mode).save(path)
        with pytest.raises(ImageInputError, match=word):
            read_image(path)


def test_jpeg_reads_as_its_decoded_colours(tmp_path):
    """RGB and grey JPEGs read as the decoder gives their colours (grey on three channels)."""
    for mode in ("RGB", "L"):
        path = tmp_path / f"x-{mode}.jpg"
        Image.fromarray(RGB).convert(mode).save(path, quality=100)
        with Image.open(path) as stored:
            want = np.asarray(stored.convert("RGB"), np.int16)
        assert np.abs(read_image(path).astype(np.int16) - want).max() == 0


# EXIF Orientation values and what the viewer does to the stored pixels (EXIF 2.32, tag 0x0112)
ORIENTATIONS = {
    3: lambda a: np.rot90(a, 2),
    6: lambda a: np.rot90(a, -1),
    8: lambda a: np.rot90(a, 1),
    2: lambda a: a[:, ::-1],
}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
@pytest.mark.parametrize("ext", ["png", "jpg", "webp", "tif"])
def test_a_photo_stored_rotated_reads_upright(orientation, ext, tmp_path):
    """A phone stores the sensor's pixels and an EXIF Orientation tag: the image reads as the
    viewer shows it (a wide stored image read tall for 6 and 8), resized after turning."""
    stored = np.random.default_rng(1).integers(0, 256, (32, 48, 3)).astype(np.uint8)  # H 32, W 48: not square
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"photo.{ext}"
    Image.fromarray(stored).save(path, exif=exif, **({"lossless": True} if ext == "webp" else {}))
    decoded = stored
    if ext == "jpg":  # lossy: the decoder's pixels as stored (Pillow's TIFF reader turns them itself)
        with Image.open(path) as image:
            decoded = np.asarray(image.convert("RGB"))

    def resized(pixels):
        return np.asarray(Image.fromarray(np.ascontiguousarray(pixels)).resize((32, 32), Image.Resampling.BICUBIC))

    got = read_image(path)
    np.testing.assert_array_equal(got, resized(ORIENTATIONS[orientation](decoded)))
    assert np.abs(got.astype(np.int16) - resized(decoded)).max() > 40  # the tag changed the pixels


def bomb_png(path: Path, width: int, height: int) -> None:
    """A 1x1 PNG whose header claims width x height (CRC mended, so only the size is wrong)."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


def test_a_header_claiming_a_huge_image_is_refused_before_decoding(tmp_path):
    """Headers claiming 10,000 x 10,000 (over Pillow's limit: its warning) and 100,000 x
    100,000 pixels (over twice it: its error) are each one line, nothing decoded; a .npy
    whose header claims 10^9 images is refused before its memory is reserved."""
    for side in (10_000, 100_000):
        path = tmp_path / f"bomb{side}.png"
        bomb_png(path, side, side)
        with pytest.raises(ImageInputError, match=r"^\S+: an image too large to decode .*; expected"):
            read_image(path)
    path = tmp_path / "huge.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (10**9, 32, 32, 3)})
        f.write(bytes(3072))
    inputs = read_inputs([str(path)], tmp_path, 10)
    assert inputs.names == [] and len(inputs.errors) == 1
    assert "a truncated .npy: its header says 1,000,000,000 images" in inputs.errors[0]


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS file systems keep every name valid UTF-8")
def test_a_file_name_not_valid_in_the_file_systems_encoding_is_predicted_and_written(cifar10_dir, tmp_path, capsys):
    """A folder holding a Latin-1-named PNG, a bomb and a good PNG: scripts/predict.py's
    main predicts both PNGs and writes both rows (the Latin-1 byte shown as \\xe9), the bomb
    is one error line, exit status 2. Before: UnicodeEncodeError writing the CSV, no CSV."""
    from cifar_lightning.cli.fit import main as fit
    from cifar_lightning.cli.predict import main as predict

    fit(
        [
            "--data-dir",
            str(cifar10_dir),
            "--no-download",
            "--accelerator",
            "cpu",
            "--epochs",
            "1",
            "--batch-size",
            "50",
            "--limit-train-batches",
            "1",
            "--limit-val-batches",
            "0",
            "--output-dir",
            str(tmp_path / "run"),
        ]
    )
    folder = tmp_path / "photos"
    folder.mkdir()
    latin1 = os.fsdecode(b"caf\xe9.png")  # a name a Windows or an old Mac archive leaves on Linux
    Image.fromarray(RGB).save(folder / latin1)
    Image.fromarray(RGB[::-1]).save(folder / "good.png")
    bomb_png(folder / "zbomb.png", 100_000, 100_000)
    csv = tmp_path / "p.csv"
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        predict(["--weights", str(tmp_path / "run/checkpoints/final.ckpt"), "--output", str(csv), str(folder)])
    out, err = capsys.readouterr()
    assert stop.value.code == 2
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        line for line in err.splitlines() if "zbomb.png: an image too large to decode" in line
    ]
    rows = read_predictions_csv(csv)
    assert [r["input"] for r in rows] == [str(folder / "caf\\xe9.png"), str(folder / "good.png")]
    assert f"{folder}/caf\\xe9.png:" in out
