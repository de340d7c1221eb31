"""Synthetic stand-ins for the Kodak images, for clones without ``../shared``.

``write_synthetic_kodak`` writes ``kodim01.png`` ... at Kodak's sizes (768x512, and 512x768 for
kodim04, 09, 10, 17, 18 and 19): 8-bit RGB images that codecs and SSIM treat like photographs.
Each is a sum of smooth random fields at several scales (roughly a 1/f spectrum), a sky-to-ground
gradient, straight region boundaries, sharp-edged anti-aliased objects (ellipses, rotated
rectangles) shaded by the scene's light, textured regions and mild sensor noise, with chroma
smoother and weaker than luminance as in camera images.

The pixels depend only on the image number: numpy's PCG64 with fixed seeds, scipy's Gaussian
filter, plain IEEE arithmetic (no transcendental functions of our own), Pillow's lossless PNG.
They are not the Kodak images: numbers measured on them say nothing about published results.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

LANDSCAPE = (512, 768)  # rows, columns
PORTRAIT = frozenset({4, 9, 10, 17, 18, 19})
SEED = 0x6B6F64616B  # "kodak"
F32 = np.float32
STEP = 4  # large-scale fields are made on a grid STEP times coarser, then upsampled


def kodak_shape(number: int) -> tuple[int, int]:
    """(rows, columns) of ``kodimNN`` in the real set."""
    rows, columns = LANDSCAPE
    return (columns, rows) if number in PORTRAIT else (rows, columns)


def _noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """White noise of zero mean and unit variance, float32: uniform, which is five times
    quicker to draw than normal and, filtered or not, looks the same to a codec."""
    noise = rng.random(shape, dtype=np.float32)
    noise -= F32(0.5)
    noise *= F32(math.sqrt(12))
    return noise


def _field(
    rng: np.random.Generator, shape: tuple[int, int], sigma: float, amplitude: float = 1.0
) -> np.ndarray:
    """Gaussian-filtered white noise of correlation length sigma and standard deviation
    ~amplitude, float32."""
    noise = _noise(rng, shape)
    field = ndimage.gaussian_filter(noise, sigma, mode="wrap", output=noise)
    # Filtered unit noise has deviation 1 / (2 sqrt(pi) sigma); a constant keeps it exact.
    field *= F32(amplitude * 2 * math.sqrt(math.pi) * sigma)
    return field


def _upsample(small: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling by STEP of a grid with a margin of one sample on every side."""
    rows, columns = shape
    y = (np.arange(rows) + 0.5) / STEP + 0.5  # pixel centres on the grid, past the margin
    x = (np.arange(columns) + 0.5) / STEP + 0.5
    y0, x0 = y.astype(np.intp), x.astype(np.intp)
    wy, wx = (y - y0).astype(np.float32)[:, None], (x - x0).astype(np.float32)
    small = small.astype(np.float32)
    small = small[y0] * (1 - wy) + small[y0 + 1] * wy
    out = small[:, x0]
    out *= 1 - wx
    right = small[:, x0 + 1]
    right *= wx
    out += right
    return out


def _direction(rng: np.random.Generator) -> tuple[float, float]:
    """A uniformly random unit vector (cos, sin), by normalising a Gaussian pair."""
    a, b = rng.standard_normal(2)
    norm = math.sqrt(a * a + b * b) or 1.0
    return a / norm, b / norm


def _edges(rng: np.random.Generator, fields: list[np.ndarray]) -> None:
    """Add straight region boundaries (horizon, wall, table top), mostly near horizontal:
    steps in luminance and chroma across an anti-aliased line, so texture runs across them."""
    rows, columns = fields[0].shape
    y = np.arange(rows, dtype=np.float32)[:, None]
    x = np.arange(columns, dtype=np.float32)[None, :]
    for _ in range(int(rng.integers(0, 3))):
        cy, cx = rng.uniform(0.2 * rows, 0.8 * rows), rng.uniform(0.2 * columns, 0.8 * columns)
        slope = rng.uniform(-0.6, 0.6)
        norm = math.sqrt(1 + slope * slope)
        cos, sin = 1 / norm, slope / norm
        if rng.random() < 0.3:
            cos, sin = -sin, cos
        blur = rng.uniform(0.7, 2.0)
        cover = (x - F32(cx)) * F32(sin / blur) - (y - F32(cy)) * F32(cos / blur)
        cover += F32(0.5)
        np.clip(cover, 0, 1, out=cover)
        for field, step in zip(fields, rng.uniform(-1, 1, 3) * (45, 20, 20), strict=True):
            field += F32(step) * cover


def _shapes(rng: np.random.Generator, planes: np.ndarray, luma: np.ndarray, count: int) -> None:
    """Paint sharp-edged objects of random colour into (3, rows, columns) float32 planes,
    shaded by the scene's own light and anti-aliased over a pixel or two."""
    rows, columns = luma.shape
    side = min(rows, columns)
    for _ in range(count):
        cy, cx = rng.uniform(0, rows), rng.uniform(0, columns)
        r = rng.random()
        size = side * (0.02 + 0.23 * r * r)  # many small objects, a few large
        colour = rng.uniform(15, 240, 3)
        shading = rng.uniform(0.3, 0.9)
        blur = rng.uniform(0.7, 2.0)
        ellipse = rng.random() < 0.5
        cos, sin = _direction(rng)
        reach = int(size * (1.0 if ellipse else 1.42)) + 3
        top, bottom = max(0, int(cy) - reach), min(rows, int(cy) + reach)
        left, right = max(0, int(cx) - reach), min(columns, int(cx) + reach)
        if top >= bottom or left >= right:
            continue
        y = np.arange(top, bottom, dtype=np.float32)[:, None] - F32(cy)
        x = np.arange(left, right, dtype=np.float32)[None, :] - F32(cx)
        cos, sin = F32(cos), F32(sin)
        u = x * cos + y * sin
        v = y * cos - x * sin
        if ellipse:
            v /= F32(rng.uniform(0.5, 1.0))
            inside = F32(size) - np.sqrt(u * u + v * v)
        else:  # rotated rectangle
            half_v = F32(size * rng.uniform(0.2, 1.0))
            inside = np.minimum(F32(size) - np.abs(u), half_v - np.abs(v))
        cover = np.clip(inside / F32(blur) + F32(0.5), 0, 1, dtype=np.float32)
        window = (slice(top, bottom), slice(left, right))
        light = (luma[window] - F32(128)) * F32(shading)
        for channel in range(3):
            plane = planes[channel][window]
            change = light + F32(colour[channel])
            change -= plane
            change *= cover
            plane += change


def synthetic_image(number: int) -> np.ndarray:
    """The synthetic ``kodimNN`` as (rows, columns, 3) uint8; the same on every machine."""
    rng = np.random.Generator(np.random.PCG64([SEED, number]))
    shape = kodak_shape(number)
    rows, columns = shape
    grid = (rows // STEP + 2, columns // STEP + 2)

    def smooth(offset: float, *scales: tuple[float, float]) -> np.ndarray:
        """offset plus smooth fields, (sigma in pixels, amplitude) each, at full resolution."""
        total = np.full(grid, offset, np.float32)
        for sigma, amplitude in scales:
            total += _field(rng, grid, sigma / STEP, amplitude)
        return _upsample(total, shape)

    # Luminance: smooth fields at several scales, amplitude falling with scale (about 1/f),
    # and light falling from the sky to the ground. ``detail`` sets how busy the image is, as
    # Kodak runs from kodim12's sky and sea to kodim13's rocks and leaves.
    detail = rng.uniform(0.7, 2.0)
    gains = rng.uniform(0.6, 1.4, 4)
    luma = smooth(
        112 + rng.uniform(-20, 20),
        (64, 30 * gains[0]),
        (24, 22 * gains[1]),
        (8, 20 * gains[2] * detail),
    )
    luma += _field(rng, shape, 2, 8 * gains[3] * detail)
    luma += (np.linspace(-1.0, 1.0, rows)[:, None] * rng.uniform(-25, 25)).astype(np.float32)
    # Chroma: weaker, smoother opponent fields, plus a tint for the whole image.
    red_green = smooth(rng.uniform(-12, 12), (48, 14), (12, 4))
    blue_yellow = smooth(rng.uniform(-12, 12), (48, 14), (12, 4))
    _edges(rng, [luma, red_green, blue_yellow])
    planes = np.empty((3, *shape), np.float32)
    for plane, (a, b) in zip(planes, ((1.0, -0.3), (-0.6, -0.2), (-0.2, 1.0)), strict=True):
        np.multiply(red_green, F32(a), out=plane)
        plane += luma
        plane += F32(b) * blue_yellow
    _shapes(rng, planes, luma, int(rng.integers(15, 30) * detail))
    # Texture (foliage, fabric, gravel) where a smooth mask says so, finer than the fields,
    # and mild sensor noise, mostly shared by the channels.
    mask = smooth(rng.uniform(-0.8, 0.6), (40, 1.5))
    np.clip(mask, 0, 1, out=mask)
    grain = _field(rng, shape, 1.0, rng.uniform(8, 16) * detail)
    grain *= mask
    noise = _noise(rng, shape)
    noise *= F32(1.2)
    grain += noise
    for plane, gain in zip(planes, rng.uniform(0.8, 1.1, 3), strict=True):
        plane += F32(gain) * grain
    noise = _noise(rng, planes.shape)
    noise *= F32(0.6)
    planes += noise
    np.clip(planes, 0, 255, out=planes)
    return np.rint(planes, out=planes).astype(np.uint8).transpose(1, 2, 0).copy()


def write_synthetic_kodak(directory: Path, count: int = 24) -> Path:
    """Write ``kodim01.png`` ... ``kodimNN.png`` (``count`` images) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for number in range(1, count + 1):
        pixels = synthetic_image(number)
        # compress_level 1: quick to write; PNG is lossless, so the pixels are the same.
        Image.fromarray(pixels, "RGB").save(directory / f"kodim{number:02d}.png", compress_level=1)
    return directory
