"""PSNR on the Y, U and V planes of 8-bit RGB, and the 6:1:1 weighted PSNR-YUV.

The convention of learned-image-compression papers and of the MPEG / JPEG AI anchors:

* RGB -> YCbCr with the ITU-R BT.709 full-range matrix, ``Kr = 0.2126``, ``Kb = 0.0722``,
  ``Kg = 1 - Kr - Kb = 0.7152``::

      Y = Kr R + Kg G + Kb B
      U = Cb = (B - Y) / (2 (1 - Kb)) + 128      (2 (1 - Kb) = 1.8556)
      V = Cr = (R - Y) / (2 (1 - Kr)) + 128      (2 (1 - Kr) = 1.5748)

  on the 8-bit values 0..255, computed in float64 and neither rounded nor clipped to integers
  (U and V may leave 0..255 slightly: pure red has V = 255.5). The +128 offset of U and V
  cancels in the difference of two images; it is kept so the planes read as the usual ones.
  B - Y and R - Y are evaluated as ``Kr (B - R) + Kg (B - G)`` and ``Kg (R - G) + Kb (R - B)``
  (equal, as Kr + Kg + Kb = 1), so that grey pixels have U = V = 128 exactly.
  No chroma subsampling: U and V are full resolution (4:4:4).
* Each plane's MSE is over its H*W samples; ``PSNR_P = 10 log10(255**2 / MSE_P)`` with peak
  255 for every plane (U and V included), ``+inf`` for identical planes.
* ``PSNR-YUV = (6 PSNR_Y + PSNR_U + PSNR_V) / 8``, a weighted mean of decibels (not the PSNR
  of a weighted MSE). One identical plane makes it ``+inf``, as ``inf`` dominates the
  weighted mean: a change of grey level alone leaves U and V identical, so PSNR-YUV is
  ``+inf`` although PSNR-Y is finite (and a mean over images with one such image is ``+inf``).

The aggregates are the means over images of the per-image values and, pooled over every
pixel of the set, the PSNR-YUV of the per-plane MSEs pooled with weights H*W.

>>> import numpy as np
>>> rgb_to_yuv(np.array([[[255, 0, 0]]], np.uint8)).round(4).tolist()  # pure red
[[[54.213, 98.7841, 255.5]]]
>>> a = np.full((4, 4, 3), 100, np.uint8); b = a.copy(); b[0, 0] = 110  # a grey pixel, +10
>>> scores = PsnrYuv().score(PsnrYuv().prepare(a), b)
>>> round(scores["psnr_y"], 4), scores["psnr_u"], scores["psnr_yuv"]  # only Y differs
(40.172, inf, inf)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from bench.metrics.base import Column, Metric, Plot, Value, mean
from bench.metrics.fidelity import psnr_from_mse

if TYPE_CHECKING:
    from bench.records import Record

FloatArray = npt.NDArray[np.float64]

KR = 0.2126
KB = 0.0722
KG = 1.0 - KR - KB
CB_DIVISOR = 2.0 * (1.0 - KB)  # 1.8556
CR_DIVISOR = 2.0 * (1.0 - KR)  # 1.5748
CHROMA_OFFSET = 128.0
PEAK = 255.0
PLANES = ("y", "u", "v")
WEIGHTS = (6.0, 1.0, 1.0)
"""The weights of PSNR_Y, PSNR_U, PSNR_V in PSNR-YUV (divided by their sum, 8)."""


def _check_rgb(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got {image.shape}")


def rgb_to_yuv(rgb: np.ndarray) -> FloatArray:
    """BT.709 full-range Y, Cb, Cr of an (H, W, 3) RGB image, as (H, W, 3) float64.

    Not rounded, not clipped; U and V carry the +128 offset. Grey pixels (R = G = B) get
    U = V = 128 exactly.
    """
    _check_rgb(rgb)
    x = np.asarray(rgb, dtype=np.float64)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = KR * r + KG * g + KB * b
    # B - Y and R - Y expanded with Kr + Kg + Kb = 1: the same values, but exactly 0 for a
    # grey pixel (B - Y computed from Y leaves ~1e-14, which would make PSNR_U ~ 330 dB
    # rather than inf for identical chroma).
    u = (KR * (b - r) + KG * (b - g)) / CB_DIVISOR + CHROMA_OFFSET
    v = (KG * (r - g) + KB * (r - b)) / CR_DIVISOR + CHROMA_OFFSET
    return np.stack([y, u, v], axis=-1)


def mse_planes(original_yuv: FloatArray, decoded_yuv: FloatArray) -> tuple[float, float, float]:
    """The MSE of each of the Y, U, V planes, each over its H*W samples."""
    if original_yuv.shape != decoded_yuv.shape:
        raise ValueError(
            f"shape mismatch: original {original_yuv.shape}, decoded {decoded_yuv.shape}"
        )
    diff = original_yuv - decoded_yuv
    y, u, v = (float(m) for m in np.mean(diff * diff, axis=(0, 1)))
    return y, u, v


def weighted_psnr(psnr_y: float, psnr_u: float, psnr_v: float) -> float:
    """``(6 PSNR_Y + PSNR_U + PSNR_V) / 8`` (``inf`` if any plane's PSNR is ``inf``).

    >>> weighted_psnr(40.0, 48.0, 48.0)
    42.0
    """
    wy, wu, wv = WEIGHTS
    return (wy * psnr_y + wu * psnr_u + wv * psnr_v) / (wy + wu + wv)


def _number(value: Value) -> float | None:
    """``value`` as a float when it is a finite number, else None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


_RD_PSNR_YUV = Plot(
    "rd_psnr_yuv",
    "PSNR-YUV 6:1:1 [dB] (mean over images)",
    "PSNR-YUV (6·Y+U+V)/8, mean over images, against bpp",
)


class PsnrYuv(Metric):
    """PSNR of the BT.709 full-range Y, U, V planes (peak 255) and their 6:1:1 weighting;
    keeps the per-plane MSEs so that aggregates can pool them over every pixel of a set."""

    name = "psnr-yuv"
    description = (
        "PSNR of BT.709 full-range Y, U, V (float, peak 255) and PSNR-YUV = (6Y+U+V)/8 "
        "(mean and pooled)"
    )
    record_columns = (
        Column("mse_y", "MSE-Y", higher_is_better=False, digits=4),
        Column("mse_u", "MSE-U", higher_is_better=False, digits=4),
        Column("mse_v", "MSE-V", higher_is_better=False, digits=4),
        Column("psnr_y", "PSNR-Y", "dB", higher_is_better=True, digits=2),
        Column("psnr_u", "PSNR-U", "dB", higher_is_better=True, digits=2),
        Column("psnr_v", "PSNR-V", "dB", higher_is_better=True, digits=2),
        Column("psnr_yuv", "PSNR-YUV", "dB", higher_is_better=True, digits=2),
    )
    aggregate_columns = (
        Column(
            "psnr_yuv_mean", "PSNR-YUV", "dB", True, digits=2, bd=True, record="psnr_yuv",
            plot=_RD_PSNR_YUV,
        ),
        Column("psnr_y_mean", "PSNR-Y", "dB", True, digits=2, record="psnr_y"),
        Column("psnr_u_mean", "PSNR-U", "dB", True, digits=2, record="psnr_u"),
        Column("psnr_v_mean", "PSNR-V", "dB", True, digits=2, record="psnr_v"),
        Column("psnr_yuv_pooled", "PSNR-YUV pooled", "dB", True, digits=2, pooled=True),
    )  # fmt: skip

    def prepare(self, original: np.ndarray) -> FloatArray:
        """The original's Y, U, V planes, (H, W, 3) float64, reused for every rate point."""
        return rgb_to_yuv(original)

    def score(self, prepared: Any, reconstruction: np.ndarray) -> dict[str, Value]:
        mse_y, mse_u, mse_v = mse_planes(prepared, rgb_to_yuv(reconstruction))
        psnr_y, psnr_u, psnr_v = (psnr_from_mse(m, PEAK) for m in (mse_y, mse_u, mse_v))
        return {
            "mse_y": mse_y,
            "mse_u": mse_u,
            "mse_v": mse_v,
            "psnr_y": psnr_y,
            "psnr_u": psnr_u,
            "psnr_v": psnr_v,
            "psnr_yuv": weighted_psnr(psnr_y, psnr_u, psnr_v),
        }

    def aggregate(self, records: Sequence[Record]) -> dict[str, float]:
        return {
            "psnr_yuv_mean": mean(r.get("psnr_yuv") for r in records),
            "psnr_y_mean": mean(r.get("psnr_y") for r in records),
            "psnr_u_mean": mean(r.get("psnr_u") for r in records),
            "psnr_v_mean": mean(r.get("psnr_v") for r in records),
            "psnr_yuv_pooled": pooled_psnr_yuv(records),
        }


def pooled_psnr_yuv(records: Sequence[Record]) -> float:
    """PSNR-YUV of the per-plane MSEs pooled over every pixel of ``records`` (weights H*W).

    Records without a size or without all three MSEs are left out; NaN when none is left.
    """
    weighted: list[tuple[float, float, float, int]] = []
    for record in records:
        y, u, v = (_number(record.get(f"mse_{plane}")) for plane in PLANES)
        if record.height and record.width and y is not None and u is not None and v is not None:
            weighted.append((y, u, v, record.height * record.width))
    total = sum(n for *_, n in weighted)
    if not total:
        return math.nan
    psnr_y, psnr_u, psnr_v = (
        psnr_from_mse(math.fsum(w[i] * w[3] for w in weighted) / total, PEAK) for i in range(3)
    )
    return weighted_psnr(psnr_y, psnr_u, psnr_v)
