"""PSNR inside and outside a region of interest: how a codec with a quality map spends bits.

The region is the ROI of the run's codec input (``--codec-option tic.roi=classes:person,car``
or ``roi=DIR``): the pixels the quality map gives the rate value, whatever the values are;
for ``roi=heatmap:NAME`` (a heat map as the quality map) the pixels with ``heat >= threshold``.
Each side's PSNR is over its H*W*3 samples, peak 255; a run without an ROI leaves both
columns empty with a note. Chang & Yang's Fig. 11 reads off these columns: ROI PSNR rises
with q while the rest, coded at the background value, stays flat.

>>> import numpy as np
>>> a = np.zeros((2, 2, 3), np.uint8); b = a.copy(); b[0, 0] = 10
>>> region = np.array([[True, False], [False, False]])
>>> scores = RoiPsnr().score_with(a, b, {"roi": region})
>>> round(scores["psnr_roi"], 4), scores["psnr_non_roi"], scores["roi_fraction"]
(28.1308, inf, 0.25)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from bench.errors import MetricUndefined
from bench.metrics.base import Column, Metric, Value
from bench.metrics.fidelity import psnr_from_mse

ROI = "roi"


def _psnr_where(original: np.ndarray, decoded: np.ndarray, where: np.ndarray) -> float | None:
    if not where.any():
        return None
    diff = original[where].astype(np.float64) - decoded[where].astype(np.float64)
    return psnr_from_mse(float(np.mean(diff * diff)))


class RoiPsnr(Metric):
    """PSNR of 8-bit RGB inside the ROI and outside it (peak 255)."""

    name = "psnr-roi"
    description = "PSNR inside and outside the codec input's region of interest (needs roi=...)"
    inputs: ClassVar[tuple[str, ...]] = (ROI,)
    record_columns = (
        Column("psnr_roi", "PSNR ROI", "dB", higher_is_better=True, digits=2),
        Column("psnr_non_roi", "PSNR non-ROI", "dB", higher_is_better=True, digits=2),
        Column("roi_fraction", "ROI share", digits=4, hidden=True),
    )
    aggregate_columns = (
        Column("psnr_roi_mean", "PSNR ROI", "dB", True, digits=2, record="psnr_roi"),
        Column("psnr_non_roi_mean", "PSNR non-ROI", "dB", True, digits=2, record="psnr_non_roi"),
    )  # fmt: skip

    def score(self, prepared: Any, reconstruction: np.ndarray) -> dict[str, Value]:
        raise MetricUndefined(
            "psnr-roi needs a region of interest: give the codec one (e.g. --codec-option "
            "tic.roi=classes:person,car or tic.roi=DIR)"
        )

    def score_with(
        self, prepared: Any, reconstruction: np.ndarray, inputs: Mapping[str, Any]
    ) -> dict[str, Value]:
        region = inputs.get(ROI)
        if region is None:
            return self.score(prepared, reconstruction)
        region = np.asarray(region, dtype=bool)
        if region.shape != reconstruction.shape[:2]:
            raise ValueError(f"ROI of shape {region.shape} for an image of {reconstruction.shape}")
        return {
            "psnr_roi": _psnr_where(prepared, reconstruction, region),
            "psnr_non_roi": _psnr_where(prepared, reconstruction, ~region),
            "roi_fraction": float(region.mean()),
        }
