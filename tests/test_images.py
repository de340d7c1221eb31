"""Reading files as 8-bit RGB, with conversions recorded and bad files named."""

from __future__ import annotations

import imagecodecs
import numpy as np
import pytest
from PIL import Image

from bench.errors import ImageReadError
from bench.images import read_rgb8


def test_rgb_png_is_read_unchanged(kodak):
    loaded = read_rgb8(kodak / "kodim01.png")
    with Image.open(kodak / "kodim01.png") as image:
        assert np.array_equal(loaded.pixels, np.asarray(image))
    assert loaded.pixels.shape == (512, 768, 3) and loaded.conversion == ""


@pytest.mark.parametrize(
    ("mode", "note"),
    [
        ("L", "L->RGB"),
        ("RGBA", "RGBA->RGB (alpha dropped)"),
        ("P", "palette->RGB"),
        ("LA", "LA->RGB (alpha dropped)"),
    ],
)
def test_other_modes_are_converted_and_recorded(kodim, tmp_path, mode, note):
    source = Image.fromarray(kodim(5)[:64, :80])
    image = source.convert(mode) if mode != "P" else source.quantize(64)
    path = tmp_path / f"x_{mode}.png"
    image.save(path)
    loaded = read_rgb8(path)
    assert loaded.pixels.shape == (64, 80, 3) and loaded.pixels.dtype == np.uint8
    assert loaded.conversion == note
    assert np.array_equal(loaded.pixels, np.asarray(image.convert("RGB")))


def test_16_bit_png_is_rounded_not_truncated(tmp_path):
    eight = np.arange(256, dtype=np.uint16).repeat(3).reshape(16, 16, 3)
    # x * 257 maps 8 bits onto 16; +100 is rounded away, while truncation (x >> 8) would
    # turn every value from 156 up into the next one.
    sixteen = np.minimum(eight.astype(np.int64) * 257 + 100, 65535).astype(np.uint16)
    path = tmp_path / "rgb16.png"
    path.write_bytes(imagecodecs.png_encode(sixteen))
    loaded = read_rgb8(path)
    assert loaded.conversion == "16-bit->8-bit (rounded)"
    assert np.array_equal(loaded.pixels, eight.astype(np.uint8))


def test_16_bit_grayscale(tmp_path):
    gray = (np.arange(64, dtype=np.uint16) * 1000).reshape(8, 8)
    path = tmp_path / "g16.png"
    path.write_bytes(imagecodecs.png_encode(gray))
    loaded = read_rgb8(path)
    assert loaded.pixels.shape == (8, 8, 3)
    assert loaded.conversion == "16-bit->8-bit (rounded); L->RGB"
    assert np.array_equal(loaded.pixels[..., 1], np.rint(gray / 257).astype(np.uint8))


def test_truncated_and_missing_files_name_the_file(kodak, tmp_path):
    data = (kodak / "kodim09.png").read_bytes()
    truncated = tmp_path / "kodim09.png"
    truncated.write_bytes(data[:20000])
    with pytest.raises(ImageReadError, match=r"kodim09\.png.*truncated"):
        read_rgb8(truncated)
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    with pytest.raises(ImageReadError, match=r"notes\.png"):
        read_rgb8(not_an_image)
    with pytest.raises(ImageReadError, match="no such file"):
        read_rgb8(tmp_path / "absent.png")


def _png_header_only(path, width: int, height: int, bit_depth: int) -> None:
    """A PNG whose IHDR claims ``width`` x ``height`` (a bomb's header) with an empty IDAT."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


@pytest.mark.parametrize("bit_depth", [16, 8])
def test_a_decompression_bomb_is_refused_from_its_header(tmp_path, bit_depth):
    bomb = tmp_path / f"bomb{bit_depth}.png"
    _png_header_only(bomb, 20000, 20000, bit_depth)
    with pytest.raises(ImageReadError, match=r"bomb\d+\.png: 20000x20000 pixels is more than"):
        read_rgb8(bomb)


def test_the_pixel_limit_is_an_option(tmp_path):
    path = tmp_path / "gray16.png"
    path.write_bytes(imagecodecs.png_encode(np.full((30, 40), 1234, np.uint16)))
    assert read_rgb8(path).pixels.shape == (30, 40, 3)
    with pytest.raises(ImageReadError, match="40x30 pixels is more than the limit of 1,000"):
        read_rgb8(path, max_pixels=1000)
