"""Warnings for a codec whose numbers look broken rather than merely worse.

A learned codec with wrong or untrained weights still writes records: a noisy picture at
10 dB PSNR is a valid bitstream. These checks read the run's aggregates and say so in the
report's summary, so such a curve is not taken for a result.

Two rules, on the quality columns that are in dB (``bd`` columns with ``unit == "dB"``:
PSNR, PSNR-YUV, MS-SSIM in dB):

- **Far below every other codec.** At each of its rate points the codec is more than
  ``MARGIN_DB`` below every other codec whose curve can be read at that bpp. 5 dB is about
  two doublings of the rate on a typical PSNR or MS-SSIM-dB curve (2 to 3 dB per doubling),
  far more than separates JPEG from a learned codec, or a GAN codec (tuned for looks, not
  PSNR) from BPG, and far less than separates a working codec from noise (10 dB against 25).
  Another codec's curve is read by linear interpolation in log bpp inside its range and, above
  it, as its highest point (quality rises with rate, so that is a lower bound); below its range
  it says nothing and is not compared.
- **Below a flat picture.** A PSNR column (``FLOORS``) under 12 dB at ``FLOOR_MIN_BPP`` or more:
  a flat picture of an image's mean colour scores 11 to 14 dB on photographs, and 0.05 bpp
  already buys a thumbnail of about 18 dB. This rule also holds when the run has one codec.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from bench.curves import Aggregate
from bench.metrics.base import Column
from bench.tasks.task import REFERENCE_CODEC

MARGIN_DB = 5.0
"""How far below every other codec's curve, at each of its points, a codec is flagged."""
FLOORS = {"psnr_rgb_mean": 12.0, "psnr_yuv_mean": 12.0}
"""Absurdly low values (dB) of 8-bit PSNR columns, by aggregate column."""
FLOOR_MIN_BPP = 0.05
"""The floor applies at this bpp and above (at lower rates a codec may barely code anything)."""
BROKEN = "a likely broken model or wrong weights"


@dataclass(frozen=True)
class Point:
    """One rate point of a codec: bpp and the quality shown (stored value * column scale)."""

    bpp: float
    quality: float


def curves(aggregates: Sequence[Aggregate], column: Column) -> dict[tuple[str, str], list[Point]]:
    """Each (dataset, codec)'s finite points of ``column``, sorted by bpp (no reference codec)."""
    found: dict[tuple[str, str], list[Point]] = {}
    for row in aggregates:
        if row.codec == REFERENCE_CODEC or not row.n_images:
            continue
        bpp, value = row.bpp_mean, row.get(column.name)
        if math.isfinite(bpp) and bpp > 0 and math.isfinite(value):
            found.setdefault((row.dataset, row.codec), []).append(Point(bpp, value * column.scale))
    return {key: sorted(points, key=lambda p: p.bpp) for key, points in found.items()}


def quality_at(curve: Sequence[Point], bpp: float) -> float | None:
    """A sorted curve read at ``bpp``: interpolated in log bpp inside its range, its highest
    point above it (a lower bound), None below it.

    >>> curve = [Point(0.25, 30.0), Point(1.0, 36.0)]
    >>> quality_at(curve, 0.5), quality_at(curve, 2.0), quality_at(curve, 0.1)
    (33.0, 36.0, None)
    """
    if not curve or bpp < curve[0].bpp:
        return None
    if bpp >= curve[-1].bpp:
        return curve[-1].quality
    for low, high in pairwise(curve):
        if low.bpp <= bpp <= high.bpp:
            if high.bpp == low.bpp:
                return max(low.quality, high.quality)
            share = math.log(bpp / low.bpp) / math.log(high.bpp / low.bpp)
            return low.quality + share * (high.quality - low.quality)
    return None


def _far_below(
    codec: str, points: Sequence[Point], others: dict[str, list[Point]], column: Column
) -> str | None:
    """The warning when each of ``points`` is more than MARGIN_DB below every other codec
    that can be compared at its bpp (and at least one can), else None."""
    if not others or not points:
        return None
    gaps: list[tuple[float, Point, str, float]] = []
    for point in points:
        readings = {
            name: value
            for name, curve in others.items()
            if (value := quality_at(curve, point.bpp)) is not None
        }
        if not readings:
            return None
        name, lowest_other = min(readings.items(), key=lambda item: item[1])
        gaps.append((lowest_other - point.quality, point, name, lowest_other))
    gap, point, name, value = min(gaps, key=lambda item: item[0])
    if gap <= MARGIN_DB:
        return None
    unit = column.unit
    return (
        f"{codec}: {column.label} is more than {MARGIN_DB:g} {unit} below every other codec at "
        f"each of its {len(points)} rate points (closest: {point.quality:.2f} {unit} at "
        f"{point.bpp:.3f} bpp, where {name} has {value:.2f} {unit}, {gap:.1f} {unit} more) — "
        f"{BROKEN}"
    )


def _below_floor(codec: str, points: Sequence[Point], column: Column) -> str | None:
    """The warning when a PSNR column is under its floor at FLOOR_MIN_BPP or more, else None."""
    floor = FLOORS.get(column.name)
    if floor is None:
        return None
    low = [p for p in points if p.bpp >= FLOOR_MIN_BPP and p.quality < floor]
    if not low:
        return None
    worst = min(low, key=lambda p: p.quality)
    unit = column.unit
    return (
        f"{codec}: {column.label} {worst.quality:.2f} {unit} at {worst.bpp:.3f} bpp "
        f"({len(low)} of its {len(points)} rate points at {FLOOR_MIN_BPP:g} bpp or more are "
        f"below {floor:g} {unit}, less than a flat picture of the image's mean colour scores) "
        f"— {BROKEN}"
    )


def broken_codec_warnings(aggregates: Sequence[Aggregate], columns: Sequence[Column]) -> list[str]:
    """Warnings naming each codec whose dB quality curve sits far below every other codec's,
    or under the PSNR floor; empty when every curve looks plausible.

    >>> from bench.metrics.base import Column
    >>> psnr = Column("psnr_rgb_mean", "PSNR mean", "dB", True, bd=True)
    >>> def row(codec, bpp, psnr):
    ...     return Aggregate("kodak", codec, "q", bpp, 1, 0, bpp, bpp, 0.0, 0.0,
    ...                      {"psnr_rgb_mean": psnr})
    >>> rows = [row("jpeg", 0.25, 26.0), row("jpeg", 1.0, 32.0), row("gan", 0.5, 10.0)]
    >>> [w.split(":")[0] for w in broken_codec_warnings(rows, [psnr])]
    ['gan']
    """
    warnings: list[str] = []
    for column in columns:
        if not (column.bd and column.higher_is_better and column.unit == "dB"):
            continue
        by_codec = curves(aggregates, column)
        for (dataset, codec), points in by_codec.items():
            others = {c: p for (d, c), p in by_codec.items() if d == dataset and c != codec}
            warning = _far_below(codec, points, others, column) or _below_floor(
                codec, points, column
            )
            if warning:
                warnings.append(warning)
    return warnings
