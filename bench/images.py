"""Reading image files as 8-bit RGB, recording any conversion that was needed."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from bench.errors import ImageReadError
from bench.types import Image

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class LoadedImage:
    """Pixels as (H, W, 3) uint8 RGB, and how they were obtained from the file.

    ``conversion`` is empty for an 8-bit RGB file, otherwise e.g. ``"L->RGB"``,
    ``"RGBA->RGB (alpha dropped)"`` or ``"16-bit->8-bit (rounded)"``.
    """

    pixels: Image
    conversion: str


MAX_PIXELS = int(os.environ.get("BENCH_MAX_IMAGE_PIXELS", "89478485"))
"""Images with more pixels are refused before they are decoded (a decompression bomb: a small
file that would decode to gigabytes). The default is Pillow's own limit (about 9459 x 9459);
``BENCH_MAX_IMAGE_PIXELS`` or ``read_rgb8(..., max_pixels=N)`` changes it."""


def _png_header(path: Path) -> tuple[int, int, int] | None:
    """(width, height, bit depth) from a PNG's IHDR, or None for another kind of file."""
    with path.open("rb") as handle:
        head = handle.read(33)
    if len(head) < 25 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big"), head[24]


def _check_pixels(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageReadError(
            f"{path}: {width}x{height} pixels is more than the limit of {max_pixels:,} "
            "(a decompression bomb, or an image too large to code here); raise "
            "BENCH_MAX_IMAGE_PIXELS if you trust the file"
        )


def _to_rgb8_from_16(pixels: np.ndarray) -> np.ndarray:
    """Map 0..65535 to 0..255 by rounding (x / 257), which inverts 8->16 bit expansion."""
    return np.rint(pixels.astype(np.float64) / 257.0).astype(np.uint8)


def _from_array(pixels: np.ndarray, path: Path) -> LoadedImage:
    notes = []
    if pixels.dtype == np.uint16:
        pixels = _to_rgb8_from_16(pixels)
        notes.append("16-bit->8-bit (rounded)")
    elif pixels.dtype != np.uint8:
        raise ImageReadError(f"{path}: unsupported sample type {pixels.dtype}; convert to 8-bit")
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
        notes.append("L->RGB")
    elif pixels.ndim == 3 and pixels.shape[2] == 2:
        pixels = np.repeat(pixels[:, :, :1], 3, axis=2)
        notes.append("LA->RGB (alpha dropped)")
    elif pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = pixels[:, :, :3]
        notes.append("RGBA->RGB (alpha dropped)")
    elif pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ImageReadError(f"{path}: unsupported image layout {pixels.shape}")
    return LoadedImage(np.ascontiguousarray(pixels), "; ".join(notes))


def _read_16bit_png(path: Path) -> LoadedImage:
    import imagecodecs

    try:
        pixels = imagecodecs.png_decode(path.read_bytes())
    except Exception as exc:
        raise ImageReadError(f"{path}: cannot decode 16-bit PNG: {exc}") from exc
    return _from_array(np.asarray(pixels), path)


def _convert_pillow(image: PILImage.Image, path: Path) -> LoadedImage:
    mode = image.mode
    if mode == "RGB":
        return LoadedImage(np.asarray(image, dtype=np.uint8), "")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        return _from_array(np.asarray(image).astype(np.uint16, copy=False), path)
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        note = f"{mode}->RGB (alpha dropped)"
    elif mode == "P":
        note = "palette->RGB"
    else:
        note = f"{mode}->RGB"
    return LoadedImage(np.asarray(image.convert("RGB"), dtype=np.uint8), note)


def read_rgb8(path: str | Path, *, max_pixels: int | None = None) -> LoadedImage:
    """Read an image file as 8-bit RGB.

    Grayscale, palette, RGBA/LA (alpha dropped), CMYK and 16-bit files are converted and
    the conversion is reported; 16-bit samples are rounded to 8 bits (Pillow would truncate).

    Raises:
        ImageReadError: the file is missing, truncated, corrupt, of an unsupported kind or
            larger than ``max_pixels`` (default ``MAX_PIXELS``, checked from the header before
            anything is decoded); the message names the file.
    """
    path = Path(path)
    limit = MAX_PIXELS if max_pixels is None else int(max_pixels)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    header = _png_header(path)
    if header is not None:
        _check_pixels(path, header[0], header[1], limit)  # every PNG, before decoding
        if header[2] == 16:
            return _read_16bit_png(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(path) as image:
                _check_pixels(path, image.size[0], image.size[1], limit)
                image.load()
                return _convert_pillow(image, path)
    except (OSError, ValueError, SyntaxError, PILImage.DecompressionBombWarning) as exc:
        raise ImageReadError(
            f"{path}: cannot read image ({exc}); the file is truncated, corrupt or not an "
            "image: replace or remove it"
        ) from exc


IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".pnm", ".bmp", ".tif", ".tiff", ".webp"}
)


def list_images(directory: Path) -> list[Path]:
    """Image files below ``directory`` (recursively), sorted; skips hidden files, macOS forks."""
    return sorted(
        path
        for path in directory.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES
        and path.is_file()
        and not any(
            part.startswith(".") or part == "__MACOSX" for part in path.relative_to(directory).parts
        )
    )


def halve_rgb(image: Image) -> Image:
    """Downscale by 2 with the rounded mean of each 2x2 block.

    For an exact factor of 2 this equals bilinear resizing with pixel-centre alignment (what
    OpenCV's INTER_LINEAR and INTER_AREA compute). An odd last row or column is dropped.
    """
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    x = image[:h, :w].astype(np.uint16)
    total = x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2]
    return ((total + 2) // 4).astype(np.uint8)


def halve_labels(labels: np.ndarray) -> np.ndarray:
    """Downscale a label map by 2 with nearest neighbour (the top-left of each 2x2 block,
    as OpenCV's INTER_NEAREST and so mmsegmentation's label resizing)."""
    return np.ascontiguousarray(
        labels[: labels.shape[0] // 2 * 2 : 2, : labels.shape[1] // 2 * 2 : 2]
    )
