"""AVIF (libavif with libaom) and JPEG XL (libjxl) through imagecodecs."""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.codecs.base import Availability, Ceiling, Codec, Image, RateScale, check_image, choice
from bench.errors import CodecError, CodecUnavailable

_HINT = "pip install imagecodecs"


def _imagecodecs(feature: str) -> Any:
    try:
        import imagecodecs
    except ImportError as exc:
        raise CodecUnavailable(f"imagecodecs is not installed; {_HINT}") from exc
    if not getattr(imagecodecs, feature).available:
        raise CodecUnavailable(f"this imagecodecs build has no {feature}; {_HINT} (a full wheel)")
    return imagecodecs


def _as_rgb(decoded: np.ndarray, codec: str) -> Image:
    if decoded.dtype != np.uint8 or decoded.ndim != 3 or decoded.shape[2] not in (3, 4):
        raise CodecError(f"{codec}: decoded {decoded.dtype} {decoded.shape}, expected 8-bit RGB")
    return np.ascontiguousarray(decoded[..., :3])


class AvifCodec(Codec):
    """AVIF: AV1 intra coding in a HEIF container, libavif quality 0-100 (avifenc's -q).

    Defaults follow avifenc: speed 6 and 4:4:4 for RGB input. One thread unless ``threads``
    says otherwise, so that encode times compare across codecs.
    """

    name = "avif"
    description = "AVIF (imagecodecs / libavif + aom), quality 0-100"
    rate_scale = RateScale("quality", 0, 100, quality_rises=True)
    ceiling = Ceiling(rate=100, min_psnr_db=float("inf"))

    def __init__(self, *, speed: int = 6, pixelformat: str = "444", threads: int = 1) -> None:
        super().__init__()
        if not 0 <= int(speed) <= 10:
            raise ValueError(f"option speed={speed} must be in 0..10")
        self.speed = int(speed)
        self.pixelformat = choice(pixelformat, ("444", "422", "420"), "pixelformat")
        self.threads = max(1, int(threads))
        self.options = {
            "speed": self.speed,
            "pixelformat": self.pixelformat,
            "threads": self.threads,
        }

    @classmethod
    def availability(cls) -> Availability:
        try:
            ic = _imagecodecs("AVIF")
        except CodecUnavailable as exc:
            return Availability(False, str(exc), _HINT)
        return Availability(True, f"imagecodecs {ic.__version__}, {ic.avif_version()}")

    def encode(self, image: Image, rate: float) -> bytes:
        ic = _imagecodecs("AVIF")
        try:
            return bytes(
                ic.avif_encode(
                    check_image(image, self.name),
                    level=int(rate),
                    speed=self.speed,
                    pixelformat=self.pixelformat,
                    numthreads=self.threads,
                )
            )
        except ic.AvifError as exc:
            raise CodecError(f"avif: libavif failed to encode: {exc}") from exc

    def decode(self, data: bytes) -> Image:
        ic = _imagecodecs("AVIF")
        try:
            decoded = ic.avif_decode(data, numthreads=self.threads)
        except (ic.AvifError, ValueError) as exc:
            raise CodecError(f"avif: libavif failed to decode: {exc}") from exc
        return _as_rgb(decoded, self.name)


class JpegXlCodec(Codec):
    """JPEG XL through libjxl; the rate is the Butteraugli distance (cjxl's -d, 0 = lossless).

    Defaults follow cjxl: effort 7. One thread unless ``threads`` says otherwise.
    """

    name = "jpegxl"
    description = "JPEG XL (imagecodecs / libjxl), distance 0-25"
    rate_scale = RateScale("distance", 0, 25, quality_rises=False, integer=False)
    ceiling = Ceiling(rate=0, min_psnr_db=float("inf"))

    def __init__(self, *, effort: int = 7, threads: int = 1) -> None:
        super().__init__()
        if not 1 <= int(effort) <= 10:
            raise ValueError(f"option effort={effort} must be in 1..10")
        self.effort = int(effort)
        self.threads = max(1, int(threads))
        self.options = {"effort": self.effort, "threads": self.threads}

    @classmethod
    def availability(cls) -> Availability:
        try:
            ic = _imagecodecs("JPEGXL")
        except CodecUnavailable as exc:
            return Availability(False, str(exc), _HINT)
        return Availability(True, f"imagecodecs {ic.__version__}, {ic.jpegxl_version()}")

    def encode(self, image: Image, rate: float) -> bytes:
        ic = _imagecodecs("JPEGXL")
        lossless = rate == 0
        try:
            return bytes(
                ic.jpegxl_encode(
                    check_image(image, self.name),
                    effort=self.effort,
                    distance=None if lossless else float(rate),
                    lossless=lossless,
                    numthreads=self.threads,
                )
            )
        except ic.JpegxlError as exc:
            raise CodecError(f"jpegxl: libjxl failed to encode: {exc}") from exc

    def decode(self, data: bytes) -> Image:
        ic = _imagecodecs("JPEGXL")
        try:
            decoded = ic.jpegxl_decode(data, numthreads=self.threads)
        except (ic.JpegxlError, ValueError) as exc:
            raise CodecError(f"jpegxl: libjxl failed to decode: {exc}") from exc
        return _as_rgb(decoded, self.name)
