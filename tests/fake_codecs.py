"""Misbehaving codecs for the runner's bad-input tests (imported by worker processes too)."""

from __future__ import annotations

import os
import signal

import numpy as np

from bench.codecs.base import Availability, Ceiling, Codec, Image, RateScale
from bench.errors import CodecError


class _Base(Codec):
    rate_scale = RateScale("quality", 0, 100, quality_rises=True)
    ceiling = Ceiling(rate=100, min_psnr_db=float("inf"))

    @classmethod
    def availability(cls) -> Availability:
        return Availability(True, "fake 1.0")

    def encode(self, image: Image, rate: float) -> bytes:
        header = np.array(image.shape[:2], dtype=">u4").tobytes()
        return header + image.tobytes()

    def decode(self, data: bytes) -> Image:
        h, w = np.frombuffer(data[:8], dtype=">u4")
        return np.frombuffer(data[8:], dtype=np.uint8).reshape(int(h), int(w), 3)


class FailingEncoder(_Base):
    """Raises on rate 13, like an encoder that exits with an error."""

    name = "fail-at-13"

    def encode(self, image: Image, rate: float) -> bytes:
        if rate == 13:
            raise CodecError("fail-at-13: encoder exited with status 1")
        return super().encode(image, rate)


class WrongShapeDecoder(_Base):
    """Decodes to half the height."""

    name = "wrong-shape"

    def decode(self, data: bytes) -> Image:
        return super().decode(data)[::2]


class Segfaulting(_Base):
    """Kills its process (as a crash in a C library would) on the image whose top-left is even."""

    name = "segfault"

    def encode(self, image: Image, rate: float) -> bytes:
        if os.environ.get("BENCH_TEST_SEGFAULT_ID") == str(int(image[:4, :4].sum())):
            os.kill(os.getpid(), signal.SIGSEGV)
        return super().encode(image, rate)
