"""JPEG (libjpeg-turbo) and WebP (libwebp) through Pillow."""

from __future__ import annotations

import io

import numpy as np
import PIL
from PIL import Image as PILImage
from PIL import features

from bench.codecs.base import (
    Availability,
    Ceiling,
    Codec,
    Image,
    RateScale,
    check_image,
    choice,
    flag,
)
from bench.errors import CodecError

_JPEG_SUBSAMPLING = {"444": 0, "422": 1, "420": 2}


def _decode_with_pillow(data: bytes, codec: str) -> Image:
    try:
        with PILImage.open(io.BytesIO(data)) as im:
            im.load()
            rgb = im if im.mode == "RGB" else im.convert("RGB")
            return np.asarray(rgb, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as exc:
        raise CodecError(f"{codec}: cannot decode bitstream: {exc}") from exc


class JpegCodec(Codec):
    """Baseline JPEG through Pillow's libjpeg-turbo, quality 1-100 (cjpeg's -quality)."""

    name = "jpeg"
    description = "JPEG (Pillow / libjpeg-turbo), quality 1-100"
    rate_scale = RateScale("quality", 1, 100, quality_rises=True)
    ceiling = Ceiling(rate=100, min_psnr_db=48.0, options={"subsampling": "444"})

    def __init__(
        self, *, subsampling: str = "420", optimize: bool = False, progressive: bool = False
    ) -> None:
        super().__init__()
        self.subsampling = choice(subsampling, _JPEG_SUBSAMPLING, "subsampling")
        self.optimize = flag(optimize, "optimize")
        self.progressive = flag(progressive, "progressive")
        self.options = {
            "subsampling": self.subsampling,
            "optimize": self.optimize,
            "progressive": self.progressive,
        }

    @classmethod
    def availability(cls) -> Availability:
        if not features.check("jpg"):
            return Availability(
                False, "Pillow built without libjpeg", "pip install --force-reinstall pillow"
            )
        return Availability(
            True,
            f"Pillow {PIL.__version__}, libjpeg-turbo {features.version('libjpeg_turbo')}",
        )

    def encode(self, image: Image, rate: float) -> bytes:
        buffer = io.BytesIO()
        PILImage.fromarray(check_image(image, self.name)).save(
            buffer,
            format="JPEG",
            quality=int(rate),
            subsampling=_JPEG_SUBSAMPLING[self.subsampling],
            optimize=self.optimize,
            progressive=self.progressive,
        )
        return buffer.getvalue()

    def decode(self, data: bytes) -> Image:
        return _decode_with_pillow(data, self.name)


class WebpCodec(Codec):
    """WebP through Pillow's libwebp, quality 0-100 (cwebp's -q), lossy or lossless."""

    name = "webp"
    description = "WebP (Pillow / libwebp), quality 0-100"
    rate_scale = RateScale("quality", 0, 100, quality_rises=True)
    ceiling = Ceiling(rate=100, min_psnr_db=float("inf"), options={"lossless": True})

    def __init__(self, *, method: int = 4, lossless: bool = False) -> None:
        super().__init__()
        if not 0 <= int(method) <= 6:
            raise ValueError(f"option method={method} must be in 0..6")
        self.method = int(method)
        self.lossless = flag(lossless, "lossless")
        self.options = {"method": self.method, "lossless": self.lossless}

    @classmethod
    def availability(cls) -> Availability:
        if not features.check("webp"):
            return Availability(
                False, "Pillow built without libwebp", "pip install --force-reinstall pillow"
            )
        return Availability(True, f"Pillow {PIL.__version__}, libwebp {features.version('webp')}")

    def encode(self, image: Image, rate: float) -> bytes:
        buffer = io.BytesIO()
        PILImage.fromarray(check_image(image, self.name)).save(
            buffer, format="WEBP", quality=int(rate), method=self.method, lossless=self.lossless
        )
        return buffer.getvalue()

    def decode(self, data: bytes) -> Image:
        return _decode_with_pillow(data, self.name)
