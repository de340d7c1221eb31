"""The uncompressed reference: raw 8-bit RGB behind an 8-byte size header (24 bpp)."""

from __future__ import annotations

import struct

import numpy as np

from bench.codecs.base import Availability, Ceiling, Codec, Image, RateScale, check_image
from bench.errors import CodecError

_HEADER = struct.Struct(">II")  # height, width


class NoneCodec(Codec):
    """No compression: the reference row (``codec = none``) that task metrics are compared to.

    Its bitstream is the raw samples, so its bpp is 24 plus the 64-bit header.
    """

    name = "none"
    description = "no compression (uncompressed reference, 24 bpp)"
    rate_scale = RateScale("none", 0, 0, quality_rises=True)
    ceiling = Ceiling(rate=0, min_psnr_db=float("inf"))
    default_rates = (0.0,)

    @classmethod
    def availability(cls) -> Availability:
        return Availability(True, "raw RGB")

    def encode(self, image: Image, rate: float) -> bytes:
        image = check_image(image, self.name)
        return _HEADER.pack(image.shape[0], image.shape[1]) + image.tobytes()

    def decode(self, data: bytes) -> Image:
        if len(data) < _HEADER.size:
            raise CodecError("none: bitstream shorter than its header")
        height, width = _HEADER.unpack_from(data)
        if height == 0 or width == 0 or len(data) != _HEADER.size + height * width * 3:
            raise CodecError(f"none: {len(data)} bytes do not hold a {width}x{height} RGB image")
        return np.frombuffer(data, dtype=np.uint8, offset=_HEADER.size).reshape(height, width, 3)
