"""The anchor summary: every codec's BD-rate against one chosen anchor, per quality metric
and their mean, as JPEG AI's common test conditions report codecs against VVC intra.

The BD-rates are :func:`bench.bjontegaard.compare`'s (PCHIP by default, as in the CTC sheets);
the mean is the arithmetic mean over the metrics where the BD-rate is defined, and says over
how many. The headline names the codec with the lowest mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bench.bjontegaard import BDResult, bd_metrics, compare, curves_from_aggregates
from bench.curves import REFERENCE_CODEC, Aggregate
from bench.errors import UsageError
from bench.interpolate import Curve, check_method
from bench.metrics.base import Column

__all__ = ["AnchorRow", "AnchorSummary", "anchor_summary", "default_anchor"]

_NO_POINTS = Curve.of([], [])
PUBLISHED_SUFFIX = " (published)"
"""How a reference curve's label ends (``bench.references.ReferenceCurve.label``)."""


@dataclass(frozen=True)
class AnchorRow:
    """One codec against the anchor: a BD result per metric column and the mean BD-rate."""

    codec: str
    results: dict[str, BDResult]
    mean_bd_rate: float
    metrics_in_mean: int

    @property
    def warnings(self) -> list[str]:
        return [f"{name}: {r.warning}" for name, r in self.results.items() if r.warning]


@dataclass(frozen=True)
class AnchorSummary:
    """Every codec (but the anchor) against ``anchor`` over ``columns``, in the rows' order."""

    anchor: str
    method: str
    dataset: str
    columns: tuple[Column, ...]
    rows: tuple[AnchorRow, ...]

    def best(self) -> AnchorRow | None:
        """The row with the lowest defined mean BD-rate among the run's own codecs (among
        the published curves when the run has no other codec)."""
        defined = [r for r in self.rows if math.isfinite(r.mean_bd_rate)]
        own = [r for r in defined if not r.codec.endswith(PUBLISHED_SUFFIX)]
        return min(own or defined, key=lambda r: r.mean_bd_rate) if defined else None

    def headline(self) -> str:
        """One sentence: the best codec's mean BD-rate against the anchor (and on what)."""
        best = self.best()
        if best is None:
            return f"No codec has a BD-rate against {self.anchor}: the curves do not overlap."
        over = ", ".join(
            c.label.removesuffix(" mean")
            for c in self.columns
            if math.isfinite(best.results[c.name].bd_rate)
        )
        verb = "fewer" if best.mean_bd_rate < 0 else "more"
        return (
            f"{best.codec} {best.mean_bd_rate:+.1f} % BD-rate against {self.anchor} "
            f"(mean over {over}): {abs(best.mean_bd_rate):.1f} % {verb} bits for the same "
            "quality."
        )


def default_anchor(codecs: Sequence[str]) -> str | None:
    """The anchor when none is chosen: the first codec the run names (a published curve
    only when the run has no codec of its own)."""
    own = [c for c in codecs if c != REFERENCE_CODEC and not c.endswith(PUBLISHED_SUFFIX)]
    return own[0] if own else next((c for c in codecs if c != REFERENCE_CODEC), None)


def anchor_summary(
    rows: Sequence[Aggregate],
    columns: Sequence[Column],
    anchor: str | None = None,
    *,
    method: str = "pchip",
    dataset: str | None = None,
) -> AnchorSummary:
    """BD-rate of every codec in ``rows`` against ``anchor`` for each BD column of
    ``columns`` (those with ``bd`` and a finite value), and the mean over the columns.

    Raises:
        UsageError: ``anchor`` is not a codec of ``rows`` (the message lists them), an
            unknown method, or several datasets and no ``dataset``.
    """
    check_method(method)
    codecs = list(dict.fromkeys(r.codec for r in rows if r.codec != REFERENCE_CODEC))
    chosen = anchor if anchor is not None else default_anchor(codecs)
    if chosen is None or chosen not in codecs:
        raise UsageError(
            f"anchor {anchor!r} is not a codec of this run; choose one of {', '.join(codecs)}"
        )
    known = set(bd_metrics().values())
    used = [
        c
        for c in columns
        if c.bd and c.name in known and any(math.isfinite(r.get(c.name)) for r in rows)
    ]
    curves = {c.name: curves_from_aggregates(rows, c.name, dataset) for c in used}
    lines = []
    for codec in codecs:
        if codec == chosen:
            continue
        results = {
            c.name: compare(
                curves[c.name].get(chosen, _NO_POINTS),
                curves[c.name].get(codec, _NO_POINTS),
                method=method,
                anchor_name=chosen,
                test_name=codec,
                metric=c.record or c.name,
            )
            for c in used
        }
        finite = [r.bd_rate for r in results.values() if math.isfinite(r.bd_rate)]
        mean = math.fsum(finite) / len(finite) if finite else math.nan
        lines.append(AnchorRow(codec, results, mean, len(finite)))
    datasets = list(dict.fromkeys(r.dataset for r in rows))
    return AnchorSummary(
        anchor=chosen,
        method=method,
        dataset=dataset or (datasets[0] if datasets else ""),
        columns=tuple(used),
        rows=tuple(lines),
    )
