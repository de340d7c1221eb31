"""Misbehaving and toy codecs and a toy segmenter for the runner's tests (imported by worker
processes too)."""

from __future__ import annotations

import os
import signal
import zlib
from collections.abc import Sequence

import numpy as np

from bench.codecs.base import Availability, Ceiling, Codec, CodecInputs, Image, RateScale
from bench.codecs.inputs import QualityMapSource
from bench.errors import CodecError, CodecUnavailable
from bench.metrics.base import Column, Metric, Value
from bench.tasks.base import Segmenter


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


class NeedsWeights(_Base):
    """Codes only once its ``weights`` file exists, like a learned codec without a
    checkpoint yet; ``rate_points`` are the rates listed in that file (a finite set)."""

    name = "needs-weights"
    rate_scale = RateScale("bpp", 0.001, 10.0, quality_rises=True, integer=False)

    def __init__(self, *, weights: str = "") -> None:
        super().__init__()
        self.weights = weights
        self.options = {"weights": weights}

    def _rates(self) -> list[float]:
        try:
            text = open(self.weights, encoding="utf-8").read()  # noqa: SIM115
        except OSError:
            raise CodecUnavailable(f"{self.name}: no weights at {self.weights!r}") from None
        return [float(value) for value in text.split()]

    def prepare(self, rates: Sequence[float]) -> dict[str, str]:
        missing = sorted(set(rates) - set(self._rates()))
        if missing:
            raise CodecUnavailable(f"{self.name}: no checkpoint for {missing[0]:g} bpp")
        return {}

    def rate_points(self) -> tuple[float, ...]:
        return tuple(self._rates())

    def encode(self, image: Image, rate: float) -> bytes:
        if rate not in self._rates():
            raise CodecUnavailable(f"{self.name}: no checkpoint for {rate:g} bpp")
        # Bytes in proportion to the rate: rate * pixels / 8, at least the 8-byte header.
        size = max(8, round(rate * image.shape[0] * image.shape[1] / 8))
        return super().encode(image, rate)[:8] + bytes(size - 8)

    def decode(self, data: bytes) -> Image:
        h, w = np.frombuffer(data[:8], dtype=">u4")
        return np.zeros((int(h), int(w), 3), np.uint8)


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


class QualityMapCodec(_Base):
    """Takes a per-image quality map: each pixel is quantised with a step that falls as its
    quality rises (ROI pixels finer). The map travels in the bitstream at full resolution."""

    name = "qmap"
    rate_scale = RateScale("q", 0, 1, quality_rises=True, integer=False)
    ceiling = None
    inputs = ("quality_map",)

    def __init__(self, *, roi: str = "uniform", background: float = 0.0) -> None:
        super().__init__()
        self.roi, self.background = roi, float(background)
        self.options = {"roi": roi, "background": self.background}

    def input_source(self) -> QualityMapSource:
        return QualityMapSource.parse(self.roi, self.background)

    def encode(self, image: Image, rate: float) -> bytes:
        return self.encode_with(image, rate, {"quality_map": np.full(image.shape[:2], rate)})

    def encode_with(self, image: Image, rate: float, inputs: CodecInputs) -> bytes:
        quality = np.asarray(inputs["quality_map"], dtype=np.float32)
        levels = np.round(quality * 255).astype(np.uint8)
        step = (64 - 63 * quality)[..., None]
        coarse = np.clip(np.round(image / step) * step, 0, 255).astype(np.uint8)
        header = np.array(image.shape[:2], dtype=">u4").tobytes()
        return header + zlib.compress(levels.tobytes() + coarse.tobytes(), 9)

    def decode(self, data: bytes) -> Image:
        h, w = (int(v) for v in np.frombuffer(data[:8], dtype=">u4"))
        raw = zlib.decompress(data[8:])
        return np.frombuffer(raw[h * w :], dtype=np.uint8).reshape(h, w, 3)


class ConstantSegmenter(Segmenter):
    """Predicts one class everywhere (``label`` option), for task tests without weights."""

    name = "constant"
    class_names = ("class 0", "class 1", "class 2")

    def __init__(self, *, label: int = 0, device: str = "cpu") -> None:
        self.label = int(label)

    @classmethod
    def availability(cls) -> Availability:
        return Availability(True, "constant 1.0")

    def predict_batch(self, images: Sequence[Image]) -> list[np.ndarray]:
        return [np.full(image.shape[:2], self.label, np.uint8) for image in images]

    def provenance(self) -> dict[str, object]:
        return {"name": self.name, "label": self.label}


class MeanAbsoluteError(Metric):
    """A toy metric that runs 'on a device' and reports weights, for the metric seam's tests."""

    name = "mae"
    needs_device = True
    record_columns = (Column("mae", "MAE", higher_is_better=False, digits=3),)
    aggregate_columns = (Column("mae_mean", "MAE", higher_is_better=False, record="mae"),)

    def __init__(self, *, device: str = "cpu") -> None:
        self.device = device

    def score(self, prepared: np.ndarray, reconstruction: np.ndarray) -> dict[str, Value]:
        return {"mae": float(np.abs(prepared.astype(float) - reconstruction).mean())}

    def provenance(self) -> dict[str, object]:
        return {"device": self.device, "weights_sha256": "0" * 64}
