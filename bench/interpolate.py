"""R-D curves and interpolation on log-rate: a codec's quality at a bpp and the bpp at a quality.

A :class:`Curve` holds one codec's rate-distortion points, sorted by bpp. Interpolation runs on
log(bpp) with piecewise cubics from SciPy: PCHIP (monotone: a curve whose quality rises with bpp
stays rising between the points) or Akima. Nothing is ever extrapolated: a bpp or quality outside
the measured range gives NaN and a warning.

>>> curve = Curve.of([0.25, 0.5, 1.0, 2.0], [28.0, 31.0, 34.5, 38.0])
>>> quality_at(curve, 0.5)
(31.0, '')
>>> value, warning = quality_at(curve, 4.0)
>>> value, warning
(nan, 'bpp 4 is outside the measured range 0.25 to 2 bpp; not extrapolated')
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.errors import UsageError

METHODS = ("pchip", "akima")
"""Interpolation methods for BD metrics: PCHIP (JCT-VC/JVET CTC sheets) and Akima."""

MIN_POINTS = 2
"""Fewest points a curve needs for any interpolation (both methods are the chord for 2)."""


@dataclass(frozen=True)
class Curve:
    """One codec's R-D points: bpp (> 0) and a quality value (higher is better).

    Build curves with :meth:`of`, which cleans and sorts the points; the functions of this module
    and of ``bench.bjontegaard`` clean a directly constructed curve the same way before use.
    """

    bpp: tuple[float, ...]
    quality: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.bpp) != len(self.quality):
            raise UsageError(
                f"a curve needs one quality value per bpp, got {len(self.bpp)} bpp and "
                f"{len(self.quality)} quality values"
            )

    @classmethod
    def of(cls, bpp: Iterable[float | None], quality: Iterable[float | None]) -> Curve:
        """The curve through the usable points, sorted by bpp.

        Points with a missing, NaN or infinite value or a bpp <= 0 are dropped, and a point
        repeated exactly (same bpp and quality) is kept once. Two different qualities at one bpp
        stay: the curve is then not a function of bpp, and users of it say so.

        Raises:
            UsageError: ``bpp`` and ``quality`` differ in length.
        """
        rates, values = list(bpp), list(quality)
        if len(rates) != len(values):
            raise UsageError(
                f"a curve needs one quality value per bpp, got {len(rates)} bpp and "
                f"{len(values)} quality values"
            )
        points = sorted(
            {
                (float(b), float(q))
                for b, q in zip(rates, values, strict=True)
                if b is not None
                and q is not None
                and math.isfinite(b)
                and math.isfinite(q)
                and b > 0
            }
        )
        return cls(tuple(b for b, _ in points), tuple(q for _, q in points))

    def __len__(self) -> int:
        return len(self.bpp)

    def cleaned(self) -> Curve:
        """This curve as :meth:`of` would have built it."""
        return Curve.of(self.bpp, self.quality)


def check_method(method: str) -> None:
    """Raise UsageError unless ``method`` is one of :data:`METHODS`."""
    if method not in METHODS:
        raise UsageError(
            f"unknown interpolation method {method!r}; choose one of {', '.join(METHODS)}"
        )


def interpolant(x: npt.ArrayLike, y: npt.ArrayLike, method: str = "pchip") -> Any:
    """The piecewise cubic through (x, y), x strictly increasing, at least 2 points.

    Returns a SciPy ``PPoly`` (callable, with an exact ``integrate``). Akima uses SciPy's
    original Akima (1970) slopes; with 2 points both methods give the straight line.
    """
    from scipy.interpolate import Akima1DInterpolator, PchipInterpolator  # 0.4 s to import

    check_method(method)
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if method == "akima" and len(xs) > MIN_POINTS:
        return Akima1DInterpolator(xs, ys)
    return PchipInterpolator(xs, ys)


def shape_problem(curve: Curve, *, rising: bool) -> tuple[str, str]:
    """Why ``curve`` (cleaned) cannot be interpolated: (short reason, details), or ("", "").

    Needs at least :data:`MIN_POINTS` points and distinct bpp values; with ``rising`` also a
    quality that rises strictly with bpp (needed to read bpp as a function of quality).
    """
    n = len(curve)
    if n < MIN_POINTS:
        return "too few points", f"{n} usable point{'s' if n != 1 else ''} ({MIN_POINTS} needed)"
    bpp, quality = curve.bpp, curve.quality
    for i in range(n - 1):
        if bpp[i + 1] == bpp[i]:
            return "two qualities at one bpp", f"two qualities at {bpp[i]:.6g} bpp"
    if rising:
        for i in range(n - 1):
            if quality[i + 1] <= quality[i]:
                return "quality not rising with bpp", (
                    f"quality not rising with bpp ({quality[i]:.6g} at {bpp[i]:.6g} bpp, "
                    f"{quality[i + 1]:.6g} at {bpp[i + 1]:.6g} bpp)"
                )
    return "", ""


def quality_at(curve: Curve, bpp: float) -> tuple[float, str]:
    """The quality of ``curve`` at ``bpp``: monotone PCHIP of quality on log(bpp).

    Exact at the measured points; between them monotone wherever the points are.

    Returns:
        (value, warning): warning is "" when the value is good; otherwise value is NaN and the
        warning says why (bpp outside the measured range -- never extrapolated --, fewer than 2
        points, two qualities at one bpp, bpp not a positive number).
    """
    curve = curve.cleaned()
    _, problem = shape_problem(curve, rising=False)
    if problem:
        return math.nan, f"curve has {problem}"
    if not (math.isfinite(bpp) and bpp > 0):
        return math.nan, f"bpp {bpp} is not a positive number"
    if not curve.bpp[0] <= bpp <= curve.bpp[-1]:
        return math.nan, (
            f"bpp {bpp:.6g} is outside the measured range {curve.bpp[0]:.6g} to "
            f"{curve.bpp[-1]:.6g} bpp; not extrapolated"
        )
    if bpp in curve.bpp:
        return curve.quality[curve.bpp.index(bpp)], ""
    fitted = interpolant(np.log(curve.bpp), curve.quality)
    return float(fitted(math.log(bpp))), ""


def bpp_at(curve: Curve, quality: float) -> tuple[float, str]:
    """The bpp at which ``curve`` reaches ``quality``: the inverse of :func:`quality_at`.

    The root of the same monotone PCHIP (quality on log(bpp)), so
    ``quality_at(curve, bpp_at(curve, q)[0])[0] == q`` to rounding, and exact at the measured
    points. (BD-rate instead fits log(bpp) as a function of quality, which differs slightly
    between the points.)

    Returns:
        (value, warning): as :func:`quality_at`; also NaN when quality does not rise strictly
        with bpp (a quality could then be reached at several rates).
    """
    curve = curve.cleaned()
    _, problem = shape_problem(curve, rising=True)
    if problem:
        return math.nan, f"curve has {problem}"
    if not math.isfinite(quality):
        return math.nan, f"quality {quality} is not a finite number"
    low, high = curve.quality[0], curve.quality[-1]
    if not low <= quality <= high:
        return math.nan, (
            f"quality {quality:.6g} is outside the measured range {low:.6g} to {high:.6g}; "
            "not extrapolated"
        )
    if quality in curve.quality:
        return curve.bpp[curve.quality.index(quality)], ""
    i = int(np.searchsorted(curve.quality, quality)) - 1  # quality[i] < quality < quality[i+1]
    log_low, log_high = math.log(curve.bpp[i]), math.log(curve.bpp[i + 1])
    fitted = interpolant(np.log(curve.bpp), curve.quality)
    roots = [float(r) for r in fitted.solve(quality, extrapolate=False) if log_low <= r <= log_high]
    # PCHIP rises strictly inside a segment whose end values rise, so there is one root; an
    # empty list can only come from rounding at the segment's ends.
    if not roots:
        nearer_low = abs(float(fitted(log_low)) - quality) <= abs(float(fitted(log_high)) - quality)
        return (curve.bpp[i] if nearer_low else curve.bpp[i + 1]), ""
    return math.exp(roots[0]), ""
