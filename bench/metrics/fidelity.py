"""PSNR, SSIM and MS-SSIM on 8-bit RGB images.

Conventions (those of pytorch-msssim, which most learned-compression papers report):
data range 255, an 11-tap Gaussian window with sigma 1.5 applied without padding ("valid"),
K1 = 0.01, K2 = 0.03, statistics per RGB channel then the mean over the three channels;
MS-SSIM over 5 scales with the weights of Wang et al. (2003), 2x2 average pooling between
scales (a zero-padded row/column when a side is odd, as ``avg_pool2d(padding=side % 2)``).
PSNR is over all H*W*3 samples with peak 255, from the exact integer sum of squared errors.

SSIM and MS-SSIM are computed in float32, as pytorch-msssim computes them, with OpenCV's
separable filter on the colour planes and every mean accumulated in float64; the original's
statistics at each scale are computed once per image and reused for every rate point. On the
216 JPEG decodings of Kodak at quality 10..90 they differ from pytorch-msssim by at most
1.5e-5 (SSIM) and 6.9e-6 (MS-SSIM) per image and by 2.4e-6 and 8.1e-7 in the mean of a
quality (the float64 computation bench used before: 2.6e-5, 1.6e-5, 2.7e-6 and 1.6e-6).

>>> import numpy as np
>>> a = np.zeros((4, 4, 3), np.uint8); b = a.copy(); b[0, 0, 0] = 255
>>> round(psnr_rgb(a, b), 4)  # one sample off by 255 among 48
16.8124
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import numpy.typing as npt

from bench.errors import MetricUndefined
from bench.metrics.base import Column, Metric, Plot, Value, count_defined, mean

if TYPE_CHECKING:
    from bench.records import Record

FloatArray = npt.NDArray[np.float64]

PEAK = 255.0
WINDOW_SIZE = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03
C1, C2 = (K1 * PEAK) ** 2, (K2 * PEAK) ** 2
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
COMPUTE_DTYPE = np.float32
"""The precision SSIM and MS-SSIM are computed in (``FidelityReference(dtype=...)`` for
another; float64 agrees with scikit-image to rounding)."""
MS_SSIM_MIN_SIDE = (WINDOW_SIZE - 1) * 2 ** (len(MS_SSIM_WEIGHTS) - 1) + 1  # 161


def gaussian_window(
    size: int = WINDOW_SIZE, sigma: float = SIGMA, dtype: npt.DTypeLike = np.float64
) -> np.ndarray:
    """The normalised 1-D Gaussian window, centred on ``size // 2``, in ``dtype``.

    In float32 it is the window pytorch-msssim builds (its float32 exponents, each tap's
    exponential rounded to float32, divided by their sum rounded to float32; bit for bit).
    That matters more than its size suggests: where a reconstruction's contrast-structure term
    is near 0, the MS-SSIM factor cs**0.0448 magnifies a 1e-8 change of the window into about
    2e-6 of the Kodak mean (the float64 taps rounded to float32 gave 2.0e-6 against
    pytorch-msssim on a random-weight CompressAI model; this window gives 6e-16 in float64).
    """
    if np.dtype(dtype) == np.float64:
        coords = np.arange(size, dtype=np.float64) - size // 2
        window = np.exp(-(coords**2) / (2.0 * sigma**2))
        return window / window.sum()  # type: ignore[no-any-return]
    coords32 = np.arange(size, dtype=np.float32) - np.float32(size // 2)
    exponents = -(coords32**2) / np.float32(2 * sigma**2)
    taps = np.exp(exponents.astype(np.float64)).astype(np.float32)
    return (taps / np.float32(taps.astype(np.float64).sum())).astype(dtype)


_WINDOWS = {np.dtype(t): gaussian_window(dtype=t) for t in (np.float32, np.float64)}


def _check_pair(original: np.ndarray, decoded: np.ndarray) -> None:
    if original.shape != decoded.shape:
        raise ValueError(f"shape mismatch: original {original.shape}, decoded {decoded.shape}")
    if original.ndim != 3 or original.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) images, got {original.shape}")


def mse_rgb(original: np.ndarray, decoded: np.ndarray) -> float:
    """Mean squared error over all H*W*3 samples (exact for 8-bit images: the squared
    differences are summed as integers)."""
    _check_pair(original, decoded)
    if original.dtype == np.uint8 and decoded.dtype == np.uint8:
        diff = np.subtract(original, decoded, dtype=np.int16)
        total = int(np.square(diff, dtype=np.int32).sum(dtype=np.int64))
        return total / diff.size
    wide = original.astype(np.float64) - decoded.astype(np.float64)
    return float(np.mean(wide * wide))


def psnr_from_mse(mse: float, peak: float = PEAK) -> float:
    """PSNR in dB for a mean squared error; ``inf`` for identical images."""
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def psnr_rgb(original: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR in dB of 8-bit RGB images, MSE over H*W*3, peak 255."""
    return psnr_from_mse(mse_rgb(original, decoded))


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on a decibel scale, -10 log10(1 - MS-SSIM), as in learned-compression papers."""
    return math.inf if value >= 1.0 else -10.0 * math.log10(1.0 - value)


def _blur(planes: np.ndarray) -> np.ndarray:
    """Separable Gaussian filter of each (H, W) plane of (planes, H, W), at full size: only
    the valid region (``_valid``) is meaningful, the margins are computed and ignored so
    that every array stays contiguous (numpy is several times slower on cropped views).
    The planes are filtered as one tall image: a window that straddles two planes lies in
    the margins, so every valid value sees its own plane only (OpenCV's SIMD filter, in the
    array's own precision)."""
    count, height, width = planes.shape
    window = _WINDOWS.get(planes.dtype)
    if window is None:
        window = gaussian_window(dtype=planes.dtype)
    tall = np.ascontiguousarray(planes).reshape(count * height, width)
    out = cv2.sepFilter2D(tall, -1, window, window, borderType=cv2.BORDER_REPLICATE)
    return out.reshape(count, height, width)  # type: ignore[no-any-return]


def _valid(x: np.ndarray) -> np.ndarray:
    """The region of a ``_blur`` output whose windows lie inside the image ("valid")."""
    pad = WINDOW_SIZE // 2
    return x[:, pad:-pad, pad:-pad]


def _downsample(x: np.ndarray) -> np.ndarray:
    """2x2 average pooling of (planes, H, W); an odd side gets a zero row/column on both ends
    (counted in the average). OpenCV's area resize of the planes stacked as one tall image
    (each pair of rows lies within a plane, the sides being even)."""
    pad_h, pad_w = x.shape[1] % 2, x.shape[2] % 2
    if pad_h or pad_w:
        x = np.pad(x, ((0, 0), (pad_h, pad_h), (pad_w, pad_w)))
        x = x[:, : x.shape[1] // 2 * 2, : x.shape[2] // 2 * 2]
    count, height, width = x.shape
    tall = np.ascontiguousarray(x).reshape(count * height, width)
    pooled = cv2.resize(tall, (width // 2, count * height // 2), interpolation=cv2.INTER_AREA)
    return pooled.reshape(count, height // 2, width // 2)  # type: ignore[no-any-return]


def _valid_means(x: np.ndarray) -> FloatArray:
    """The mean of the valid region of each plane of (planes, H, W), accumulated in
    float64."""
    return _valid(x).mean(axis=(1, 2), dtype=np.float64)  # type: ignore[no-any-return]


@dataclass
class _Level:
    """The original at one scale, as RGB planes, with the terms of every SSIM against it
    that depend on it alone: its Gaussian mean, mean^2 + C1 and variance + C2."""

    x: np.ndarray
    mu: np.ndarray
    mu_sq_c1: np.ndarray
    sigma_sq_c2: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray) -> _Level:
        moments = _blur(np.concatenate([x, x * x]))
        mu = moments[:3]
        mu_sq = mu * mu
        return cls(x, mu, mu_sq + C1, moments[3:] - mu_sq + C2)


def _ssim_cs(
    ref: _Level, y: np.ndarray, luminance_too: bool = True
) -> tuple[FloatArray | None, FloatArray]:
    """Per-channel mean SSIM (None unless ``luminance_too``: MS-SSIM's middle scales use the
    contrast-structure term alone) and contrast-structure term of the planes ``y`` against
    one level: one filter pass over (y, y^2, x*y) stacked, then the SSIM formula in place,
    over whole planes (the margins' values are finite: every denominator is at least C1 or
    C2)."""
    stack = np.empty((9, *y.shape[1:]), dtype=y.dtype)
    stack[:3] = y
    np.multiply(y, y, out=stack[3:6])
    np.multiply(ref.x, y, out=stack[6:])
    moments = _blur(stack)
    mu_y, e_yy, e_xy = moments[:3], moments[3:6], moments[6:]
    mu_xy = ref.mu * mu_y
    mu_y_sq = mu_y * mu_y
    # Each numerator is summed in the order of its denominator, (a + C) + b, so that an
    # image against itself gives exactly 1.
    sigma_xy = np.subtract(e_xy, mu_xy, out=e_xy)
    cs_map = np.add(sigma_xy, C2)
    cs_map += sigma_xy
    denominator = np.subtract(e_yy, mu_y_sq, out=e_yy)  # sigma_y^2
    denominator += ref.sigma_sq_c2
    cs_map /= denominator
    if not luminance_too:
        return None, _valid_means(cs_map)
    luminance = np.add(mu_xy, C1)
    luminance += mu_xy
    mu_y_sq += ref.mu_sq_c1
    luminance /= mu_y_sq
    luminance *= cs_map
    return _valid_means(luminance), _valid_means(cs_map)


def _planes(image: np.ndarray, dtype: npt.DTypeLike) -> np.ndarray:
    """(H, W, 3) uint8 as (3, H, W) in the compute precision."""
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=dtype)


class FidelityReference:
    """An original image with its statistics computed once, scored against many decodings.

    A sweep decodes one image at many rate points; the original's Gaussian statistics at
    every MS-SSIM scale are the same each time, so they are kept here.

    Args:
        original: (H, W, 3) uint8 RGB.
        dtype: the precision of the filtering and the SSIM maps (``COMPUTE_DTYPE``).
    """

    def __init__(self, original: np.ndarray, dtype: npt.DTypeLike = COMPUTE_DTYPE) -> None:
        if original.ndim != 3 or original.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) image, got {original.shape}")
        self.original = original
        self.shape = original.shape
        self.ms_ssim_defined = min(original.shape[:2]) >= MS_SSIM_MIN_SIDE
        self._levels: list[_Level] = []
        self._last: tuple[np.ndarray, tuple[float, float] | MetricUndefined] | None = None
        self.dtype = np.dtype(dtype)
        x = _planes(original, self.dtype)
        if min(original.shape[:2]) < WINDOW_SIZE:
            return
        for scale in range(len(MS_SSIM_WEIGHTS) if self.ms_ssim_defined else 1):
            if scale:
                x = _downsample(x)
            self._levels.append(_Level.of(x))

    def mse(self, decoded: np.ndarray) -> float:
        """Mean squared error over H*W*3."""
        return mse_rgb(self.original, decoded)

    def ssim_and_ms_ssim(self, decoded: np.ndarray) -> tuple[float, float]:
        """SSIM and MS-SSIM, each the mean over RGB channels.

        The result for the last ``decoded`` array is kept, so that the SSIM and MS-SSIM
        metrics, which share the first scale, compute it once.

        Raises:
            MetricUndefined: the image is smaller than the window (SSIM) or than
                161 pixels on a side (MS-SSIM needs 5 scales of an 11-pixel window); the
                SSIM is still available on the exception as ``.ssim`` when it is defined.
        """
        if self._last is not None and self._last[0] is decoded:
            result = self._last[1]
            if isinstance(result, MetricUndefined):
                raise result
            return result
        try:
            result = self._ssim_and_ms_ssim(decoded)
        except MetricUndefined as exc:
            self._last = (decoded, exc)
            raise
        self._last = (decoded, result)
        return result

    def _ssim_and_ms_ssim(self, decoded: np.ndarray) -> tuple[float, float]:
        _check_pair(self.original, decoded)
        if not self._levels:
            raise MetricUndefined(
                f"image {self.shape[1]}x{self.shape[0]} is smaller than the "
                f"{WINDOW_SIZE}x{WINDOW_SIZE} SSIM window"
            )
        y = _planes(decoded, self.dtype)
        ssim_channels, cs = _ssim_cs(self._levels[0], y)
        assert ssim_channels is not None
        ssim = float(ssim_channels.mean())
        if not self.ms_ssim_defined:
            error = MetricUndefined(
                f"image {self.shape[1]}x{self.shape[0]} is too small for MS-SSIM: both sides "
                f"must be at least {MS_SSIM_MIN_SIDE} pixels"
            )
            error.ssim = ssim  # type: ignore[attr-defined]
            raise error
        factors = [np.maximum(cs, 0.0)]
        last = len(self._levels) - 1
        for scale, level in enumerate(self._levels[1:], start=1):
            y = _downsample(y)
            ssim_channels, cs = _ssim_cs(level, y, luminance_too=scale == last)
            factors.append(np.maximum(cs, 0.0))
        assert ssim_channels is not None
        factors[-1] = np.maximum(ssim_channels, 0.0)
        weights = np.asarray(MS_SSIM_WEIGHTS)[:, None]
        per_channel = np.prod(np.stack(factors) ** weights, axis=0)
        return ssim, float(per_channel.mean())


def ssim_rgb(original: np.ndarray, decoded: np.ndarray) -> float:
    """SSIM, mean over RGB channels (pytorch-msssim conventions, data range 255)."""
    reference = FidelityReference(original)
    try:
        return reference.ssim_and_ms_ssim(decoded)[0]
    except MetricUndefined as exc:
        if hasattr(exc, "ssim"):
            return float(exc.ssim)
        raise


def ms_ssim_rgb(original: np.ndarray, decoded: np.ndarray) -> float:
    """MS-SSIM, mean over RGB channels (pytorch-msssim conventions, data range 255)."""
    return FidelityReference(original).ssim_and_ms_ssim(decoded)[1]


# --- the metric objects ----------------------------------------------------------------------

_RD_PSNR = Plot(
    "rd_psnr", "PSNR RGB [dB] (mean over images)", "PSNR (RGB, mean over images) against bpp"
)
_RD_MS_SSIM = Plot(
    "rd_ms_ssim",
    "MS-SSIM RGB [dB] (mean over images)",
    "MS-SSIM in dB (mean over images) against bpp",
)


class Psnr(Metric):
    """PSNR over all H*W*3 samples of 8-bit RGB, peak 255; also keeps the MSE so that
    aggregates can pool it over every pixel of a set (the CLIC convention)."""

    name = "psnr"
    description = "PSNR of 8-bit RGB over all samples, peak 255 (mean and pooled)"
    record_columns = (
        Column("mse", "MSE", digits=4, higher_is_better=False, hidden=True),
        Column("psnr_rgb", "PSNR", "dB", higher_is_better=True, digits=2),
    )
    aggregate_columns = (
        Column(
            "psnr_rgb_mean", "PSNR mean", "dB", True, digits=2, bd=True, record="psnr_rgb",
            plot=_RD_PSNR,
        ),
        Column("psnr_rgb_pooled", "PSNR pooled", "dB", True, digits=2, pooled=True),
    )  # fmt: skip

    def score(self, prepared: Any, reconstruction: np.ndarray) -> dict[str, Value]:
        mse = mse_rgb(prepared, reconstruction)
        return {"mse": mse, "psnr_rgb": psnr_from_mse(mse)}

    def aggregate(self, records: Sequence[Record]) -> dict[str, float]:
        pixels = [
            (r.get("mse"), r.height * r.width)
            for r in records
            if r.height and r.width and isinstance(r.get("mse"), float)
        ]
        total = sum(n for _, n in pixels)
        pooled = math.fsum(float(mse) * n for mse, n in pixels) / total if total else math.nan  # type: ignore[arg-type]
        return {
            "psnr_rgb_mean": mean(r.get("psnr_rgb") for r in records),
            "psnr_rgb_pooled": psnr_from_mse(pooled) if not math.isnan(pooled) else math.nan,
        }


class Ssim(Metric):
    """SSIM of 8-bit RGB, the mean over channels (pytorch-msssim conventions)."""

    name = "ssim"
    description = "SSIM, mean over RGB channels (11-tap Gaussian, sigma 1.5)"
    preparation = "rgb-gaussian-pyramid"
    record_columns = (Column("ssim_rgb", "SSIM", higher_is_better=True, digits=4),)
    aggregate_columns = (
        Column("ssim_rgb_mean", "SSIM", higher_is_better=True, digits=4, record="ssim_rgb"),
    )

    def prepare(self, original: np.ndarray) -> FidelityReference:
        return FidelityReference(original)

    def score(self, prepared: Any, reconstruction: np.ndarray) -> dict[str, Value]:
        try:
            return {"ssim_rgb": prepared.ssim_and_ms_ssim(reconstruction)[0]}
        except MetricUndefined as exc:
            if hasattr(exc, "ssim"):
                return {"ssim_rgb": float(exc.ssim)}
            raise


class MsSsim(Metric):
    """MS-SSIM of 8-bit RGB over 5 scales, the mean over channels, and on a dB scale."""

    name = "ms-ssim"
    description = "MS-SSIM, mean over RGB channels, and -10 log10(1 - MS-SSIM) in dB"
    preparation = "rgb-gaussian-pyramid"
    record_columns = (
        Column("ms_ssim_rgb", "MS-SSIM", higher_is_better=True, digits=4),
        Column("ms_ssim_db", "MS-SSIM", "dB", higher_is_better=True, digits=2),
    )
    aggregate_columns = (
        Column("ms_ssim_rgb_mean", "MS-SSIM", higher_is_better=True, digits=4),
        Column(
            "ms_ssim_db_mean", "MS-SSIM", "dB", True, digits=2, bd=True, record="ms_ssim_db",
            plot=_RD_MS_SSIM,
        ),
        Column("n_ms_ssim", "images with MS-SSIM", higher_is_better=True, digits=0),
    )  # fmt: skip

    def prepare(self, original: np.ndarray) -> FidelityReference:
        return FidelityReference(original)

    def score(self, prepared: Any, reconstruction: np.ndarray) -> dict[str, Value]:
        value = prepared.ssim_and_ms_ssim(reconstruction)[1]
        return {"ms_ssim_rgb": value, "ms_ssim_db": ms_ssim_db(value)}

    def aggregate(self, records: Sequence[Record]) -> dict[str, float]:
        return {
            "ms_ssim_rgb_mean": mean(r.get("ms_ssim_rgb") for r in records),
            "ms_ssim_db_mean": mean(r.get("ms_ssim_db") for r in records),
            "n_ms_ssim": count_defined(r.get("ms_ssim_rgb") for r in records),
        }
