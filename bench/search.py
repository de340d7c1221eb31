"""Target-bpp search: the rate parameter whose bitstream comes closest to a bpp target.

A codec's rate parameter maps to bpp only through the image, so matching codecs at a bitrate
(0.0625 bpp in the GAN paper, 0.15 in CLIC) means searching per image. The search bisects
the parameter in the codec's own direction (``RateScale.quality_rises``) and range, on whole
values for integer scales and to a relative tolerance otherwise; a codec with native rate
control (JPEG 2000's compression ratio) proposes its first probe. The answer is picked among
every probe made, so a locally non-monotone codec still gets the best point seen.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from bench.codecs.base import RateScale

Mode = Literal["nearest", "not-above"]
MODES: tuple[Mode, ...] = ("nearest", "not-above")
DEFAULT_TOLERANCE = 0.005
"""Relative bpp error at which a search on a continuous scale stops (0.5 %)."""
MAX_PROBES = 40


@dataclass(frozen=True)
class SearchResult:
    """The chosen rate parameter and how the search got there.

    Attributes:
        rate: the chosen value of the codec's rate parameter (None when ``not-above`` cannot
            be met: even the lowest quality exceeds the target).
        bpp: the bpp at ``rate``.
        probes: every (rate, bpp) tried, in order.
        note: why the answer is not within tolerance (target outside the achievable range),
            or "".
    """

    target: float
    rate: float | None
    bpp: float
    probes: tuple[tuple[float, float], ...] = field(default=())
    note: str = ""


def _midpoint(low: float, high: float, scale: RateScale) -> float:
    if scale.integer:
        return float(math.floor((low + high) / 2))
    if low > 0 and high / low > 100:  # wide ranges (a compression ratio): bisect in log
        return math.sqrt(low * high)
    return (low + high) / 2


def search_rate(
    bpp_of: Callable[[float], float],
    scale: RateScale,
    target: float,
    *,
    mode: Mode = "nearest",
    tolerance: float = DEFAULT_TOLERANCE,
    first_guess: float | None = None,
    candidates: Sequence[float] | None = None,
) -> SearchResult:
    """Find the rate parameter whose bpp is closest to ``target`` (or highest not above it).

    Assumes bpp rises with quality along ``scale``; probes are cached, and the result is the
    best of all probes, so a codec that breaks the assumption locally is not mis-served.

    Args:
        bpp_of: codes the image at a rate value and returns the bitstream's bpp.
        scale: the codec's rate scale (range, direction, integrality).
        target: the bpp to reach (> 0).
        mode: ``nearest`` (smallest |bpp - target|) or ``not-above`` (largest bpp <= target).
        tolerance: relative bpp error that ends a search on a continuous scale.
        first_guess: a rate value from the codec's own rate control, probed first.
        candidates: the only rate values the codec has (``Codec.rate_points``), e.g. the
            checkpoints of a learned codec: the search bisects over them and probes nothing
            else.

    >>> search_rate(lambda q: q / 10, RateScale("quality", 1, 100, True), 2.34).rate
    23.0
    >>> search_rate(lambda q: q / 10, RateScale("quality", 1, 100, True), 2.36).rate
    24.0
    >>> search_rate(lambda q: q / 10, RateScale("q", 1, 100, True), 2.36, mode="not-above").rate
    23.0
    >>> found = search_rate(lambda b: b, RateScale("bpp", 0.01, 1, True, False), 0.3,
    ...                     candidates=[0.0625, 0.125, 0.25, 0.5])
    >>> found.rate, [rate for rate, _ in found.probes]
    (0.25, [0.0625, 0.5, 0.125, 0.25])
    """
    if not target > 0:
        raise ValueError(f"target bpp must be positive, got {target}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    seen: dict[float, float] = {}

    def probe(rate: float) -> float:
        if rate not in seen:
            seen[rate] = float(bpp_of(rate))
        return seen[rate]

    if candidates is not None:
        return _search_among(probe, seen, scale, target, mode, candidates)
    # Work along "quality": lo is the lowest-quality end, hi the highest.
    lo, hi = (scale.low, scale.high) if scale.quality_rises else (scale.high, scale.low)
    note = ""
    if first_guess is not None and min(lo, hi) <= first_guess <= max(lo, hi):
        guess = float(round(first_guess)) if scale.integer else float(first_guess)
        close = abs(probe(guess) - target) <= tolerance * target
        if close and (mode == "nearest" or seen[guess] <= target):
            return _pick(seen, target, mode, note)
        if probe(guess) <= target:
            lo = guess
        else:
            hi = guess
    if probe(lo) > target:
        note = f"target {target:g} bpp is below the lowest achievable ({seen[lo]:.4g} bpp)"
    elif probe(hi) < target:
        note = f"target {target:g} bpp is above the highest achievable ({seen[hi]:.4g} bpp)"
    else:
        for _ in range(MAX_PROBES):
            if scale.integer and abs(hi - lo) <= 1:
                break
            mid = _midpoint(min(lo, hi), max(lo, hi), scale)
            if mid in (lo, hi):
                break
            bpp = probe(mid)
            close = abs(bpp - target) <= tolerance * target
            if not scale.integer and close and (mode == "nearest" or bpp <= target):
                break
            if bpp <= target:
                lo = mid
            else:
                hi = mid
    return _pick(seen, target, mode, note)


def _search_among(
    probe: Callable[[float], float],
    seen: dict[float, float],
    scale: RateScale,
    target: float,
    mode: Mode,
    candidates: Sequence[float],
) -> SearchResult:
    """Bisect over a finite set of rate values, lowest quality first."""
    values = sorted({float(v) for v in candidates}, reverse=not scale.quality_rises)
    if not values:
        raise ValueError("the codec has no rate point to search among")
    lo, hi = 0, len(values) - 1
    note = ""
    if probe(values[lo]) > target:
        note = f"target {target:g} bpp is below the lowest achievable ({seen[values[lo]]:.4g} bpp)"
    elif probe(values[hi]) < target:
        note = f"target {target:g} bpp is above the highest achievable ({seen[values[hi]]:.4g} bpp)"
    else:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if probe(values[mid]) <= target:
                lo = mid
            else:
                hi = mid
    return _pick(seen, target, mode, note)


def _pick(seen: dict[float, float], target: float, mode: Mode, note: str) -> SearchResult:
    probes = tuple(seen.items())
    if mode == "nearest":
        rate, bpp = min(probes, key=lambda p: (abs(p[1] - target), p[1]))
        return SearchResult(target, rate, bpp, probes, note)
    below = [p for p in probes if p[1] <= target]
    if not below:
        lowest = min(bpp for _, bpp in probes)
        return SearchResult(
            target,
            None,
            math.nan,
            probes,
            f"no rate gives at most {target:g} bpp (the lowest quality gives {lowest:.4g})",
        )
    rate, bpp = max(below, key=lambda p: p[1])
    return SearchResult(target, rate, bpp, probes, note)
