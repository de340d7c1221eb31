"""Bjøntegaard deltas: BD-rate and BD-quality of a test codec against an anchor codec.

Conventions (VCEG-M33 and the JCT-VC/JVET common-test-condition sheets, with the piecewise
interpolation of the PyPI ``bjontegaard`` package 1.3.0, whose numbers these match):

- BD-rate: on each curve log(bpp) is interpolated as a function of quality; both are
  integrated exactly (they are piecewise cubics) over the quality interval the curves share,
  and the mean difference d (test minus anchor, natural log) becomes (exp(d) - 1) * 100 %.
  Negative: the test codec needs fewer bits for the same quality. (The package uses log10 and
  10**d: the same number, as the interpolants and the mean scale with the logarithm.)
- BD-quality (BD-PSNR for PSNR): quality is interpolated as a function of log(bpp) and its mean
  difference over the shared log(bpp) interval is given in the metric's units (dB for
  ``psnr_rgb`` and ``ms_ssim_db``, 0..1 for ``miou``). Positive: the test codec is better.
- Methods: ``"pchip"`` (SciPy's PCHIP, as in the CTC sheets) and ``"akima"`` (SciPy's Akima
  1970 slopes, recommended by Herglotz et al., ICIP 2022). VCEG-M33's single cubic polynomial
  is not offered: it overshoots between points. Both need at least 2 points per curve at
  distinct bpp (with 2 points both are the straight line).
- BD-rate needs quality rising strictly with bpp on both curves (otherwise rate is not a
  function of quality): else NaN and a warning (the package raises there). BD-quality stays
  defined for a curve whose quality dips (quality is still a function of rate, as in the
  package), e.g. a noisy mIoU curve; compare()'s warning still names the dip.
- Overlap: length of the shared interval / length of the narrower curve's interval (1 = one
  range lies inside the other). No overlap: NaN. Below :data:`SMALL_OVERLAP` the number rests
  on a small part of one curve and compare() warns. (The package divides by the union of the
  intervals instead and warns below 0.75.)

Nothing raises for bad curves; an unknown method or metric is a UsageError.

>>> anchor = Curve.of([0.25, 0.5, 1.0, 2.0], [28.0, 31.0, 34.5, 38.0])
>>> test = Curve.of([0.2, 0.4, 0.8, 1.6], [28.0, 31.0, 34.5, 38.0])  # every bpp x 0.8
>>> round(bd_rate(anchor, test), 9), round(bd_quality(anchor, anchor), 9)
(-20.0, 0.0)
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench.curves import REFERENCE_CODEC, Aggregate
from bench.errors import UsageError
from bench.interpolate import (
    METHODS,
    Curve,
    bpp_at,
    check_method,
    interpolant,
    quality_at,
    shape_problem,
)
from bench.metrics.base import Column
from bench.records import Record, latest_per_key

__all__ = [
    "BD_CSV",
    "METHODS",
    "SMALL_OVERLAP",
    "BDResult",
    "Curve",
    "bd_matrix",
    "bd_metrics",
    "bd_quality",
    "bd_rate",
    "bpp_at",
    "compare",
    "curves_from_aggregates",
    "per_image_bd",
    "quality_at",
    "write_bd_csv",
]

SMALL_OVERLAP = 0.5
"""compare() warns when the curves share less than this fraction of the narrower interval."""

BD_CSV = "bd.csv"
BD_CSV_COLUMNS = [
    "dataset", "metric", "column", "method", "anchor", "test", "bd_rate", "bd_quality",
    "unit", "overlap", "rate_overlap", "warning",
]  # fmt: skip


def bd_metrics() -> dict[str, str]:
    """Metrics BD is computed for: record column -> aggregates.csv column (rate:
    ``bpp_mean``), from every registered metric and task whose aggregate column says ``bd``.

    >>> bd_metrics()["psnr_rgb"], bd_metrics()["miou"]
    ('psnr_rgb_mean', 'miou')
    """
    from bench.metrics import known_columns
    from bench.tasks import known_task_columns

    columns = [*known_columns().values(), *known_task_columns().values()]
    return {c.record: c.name for c in columns if c.bd and c.record}


@dataclass(frozen=True)
class BDResult:
    """BD-rate and BD-quality of ``test`` against ``anchor`` for one metric and method.

    Attributes:
        bd_rate: percent; negative = test needs fewer bits for the same quality; NaN if
            undefined.
        bd_quality: in the metric's units; positive = test better at the same rate; NaN if
            undefined.
        overlap: 0..1, shared quality interval / the narrower curve's (for bd_rate).
        rate_overlap: 0..1, the same on log(bpp) (for bd_quality).
        warning: "" or why the numbers are unreliable or undefined.
    """

    anchor: str
    test: str
    metric: str
    method: str
    bd_rate: float
    bd_quality: float
    overlap: float
    rate_overlap: float
    warning: str


@dataclass(frozen=True)
class _Delta:
    """One direction of a BD comparison: the mean difference, overlap, and why it is NaN."""

    mean: float
    overlap: float
    reason: str = ""  # short, the same for every curve: "test: too few points"
    detail: str = ""  # for people, with the values


def _overlap(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """(low, high, fraction) of the interval shared by the ranges of ``a`` and ``b``."""
    if not len(a) or not len(b):
        return math.nan, math.nan, math.nan
    low, high = max(min(a), min(b)), min(max(a), max(b))
    if high <= low:
        return low, high, 0.0
    narrower = min(max(a) - min(a), max(b) - min(b))
    return low, high, min(1.0, (high - low) / narrower) if narrower > 0 else math.nan


def _delta(
    anchor: Curve, test: Curve, method: str, *, of_rate: bool, names: tuple[str, str] = ("", "")
) -> _Delta:
    """Mean of test minus anchor: log(bpp) over the shared quality interval (``of_rate``),
    else quality over the shared log(bpp) interval. Curves must be cleaned."""
    log_a, log_t = np.log(anchor.bpp).tolist(), np.log(test.bpp).tolist()
    xa, ya = (anchor.quality, log_a) if of_rate else (log_a, anchor.quality)
    xt, yt = (test.quality, log_t) if of_rate else (log_t, test.quality)
    low, high, overlap = _overlap(xa, xt)
    reasons, details = [], []
    for side, name, curve in (("anchor", names[0], anchor), ("test", names[1], test)):
        reason, detail = shape_problem(curve, rising=of_rate)
        if reason:
            reasons.append(f"{side}: {reason}")
            details.append(f"{side}{' ' + name if name else ''} has {detail}")
    if reasons:
        return _Delta(math.nan, overlap, "; ".join(reasons), "; ".join(details))
    if not overlap > 0:
        text = f"no shared {'quality' if of_rate else 'bpp'} interval"
        return _Delta(math.nan, overlap, text, text)
    integral_a = interpolant(xa, ya, method).integrate(low, high)
    integral_t = interpolant(xt, yt, method).integrate(low, high)
    return _Delta(float(integral_t - integral_a) / (high - low), overlap)


def _percent(mean_log_ratio: float) -> float:
    """A mean natural-log rate ratio d as (exp(d) - 1) * 100 %."""
    return float(np.expm1(mean_log_ratio) * 100.0)


def bd_rate(anchor: Curve, test: Curve, method: str = "pchip") -> float:
    """BD-rate of ``test`` against ``anchor`` in percent (module docstring), NaN if undefined.

    :func:`compare` also says why a value is NaN or unreliable.

    Raises:
        UsageError: ``method`` is not one of :data:`METHODS`.
    """
    check_method(method)
    return _percent(_delta(anchor.cleaned(), test.cleaned(), method, of_rate=True).mean)


def bd_quality(anchor: Curve, test: Curve, method: str = "pchip") -> float:
    """BD-quality (e.g. BD-PSNR in dB) of ``test`` against ``anchor``, NaN if undefined.

    Raises:
        UsageError: ``method`` is not one of :data:`METHODS`.
    """
    check_method(method)
    return _delta(anchor.cleaned(), test.cleaned(), method, of_rate=False).mean


def _warning(rate: _Delta, quality: _Delta) -> str:
    notes = []
    if rate.detail and rate.detail == quality.detail:
        notes.append(f"BD-rate and BD-quality undefined: {rate.detail}")
    else:
        notes += [f"BD-rate undefined: {rate.detail}"] if rate.detail else []
        notes += [f"BD-quality undefined: {quality.detail}"] if quality.detail else []
    for delta, axis, number in ((rate, "quality", "BD-rate"), (quality, "log-bpp", "BD-quality")):
        if not delta.reason and delta.overlap < SMALL_OVERLAP:
            notes.append(
                f"{number} rests on a small overlap: the {axis} ranges share "
                f"{delta.overlap:.0%} of the narrower one (< {SMALL_OVERLAP:.0%})"
            )
    return "; ".join(notes)


def compare(
    anchor: Curve,
    test: Curve,
    *,
    method: str = "pchip",
    anchor_name: str = "",
    test_name: str = "",
    metric: str = "",
) -> BDResult:
    """BD-rate, BD-quality, both overlaps and a warning; NaN + warning for bad curves.

    The warning names each undefined number and why (too few points, two qualities at one bpp,
    quality not rising with bpp, no overlap) and each overlap below :data:`SMALL_OVERLAP`.

    Raises:
        UsageError: ``method`` is not one of :data:`METHODS`.
    """
    check_method(method)
    anchor, test = anchor.cleaned(), test.cleaned()
    names = (anchor_name, test_name)
    rate = _delta(anchor, test, method, of_rate=True, names=names)
    quality = _delta(anchor, test, method, of_rate=False, names=names)
    return BDResult(
        anchor=anchor_name,
        test=test_name,
        metric=metric,
        method=method,
        bd_rate=_percent(rate.mean),
        bd_quality=quality.mean,
        overlap=rate.overlap,
        rate_overlap=quality.overlap,
        warning=_warning(rate, quality),
    )


def _check_metric(metric: str) -> str:
    """The aggregate column of a BD metric (a record column name, or the aggregate column)."""
    known = bd_metrics()
    if metric in known:
        return known[metric]
    if metric in known.values():
        return metric
    raise UsageError(f"no BD for metric {metric!r}; choose one of {', '.join(known)}")


def _one_dataset(datasets: Sequence[str], dataset: str | None, what: str) -> None:
    """UsageError when ``datasets`` hold several and ``dataset`` does not pick one."""
    present = list(dict.fromkeys(datasets))
    if dataset is None and len(present) > 1:
        raise UsageError(
            f"the {what} hold several datasets ({', '.join(present)}); BD compares curves of "
            "one dataset: pass dataset=..."
        )


def curves_from_aggregates(
    rows: Sequence[Aggregate], metric: str, dataset: str | None = None
) -> dict[str, Curve]:
    """Each codec's curve from aggregates: ``bpp_mean`` against ``bd_metrics()[metric]``.

    Codecs come in order of first appearance; the reference codec ``none`` and rows without a
    successful image are skipped. Every row of a codec is a point of its curve, whatever its
    ``rate_param`` (a target-bpp row counts at its achieved ``bpp_mean``). A codec without a
    value of the metric (e.g. mIoU without segmentation) gets an empty curve.

    Raises:
        UsageError: unknown metric, or several datasets in ``rows`` and no ``dataset``.
    """
    column = _check_metric(metric)
    used = [r for r in rows if r.codec != REFERENCE_CODEC and r.n_images > 0]
    _one_dataset([r.dataset for r in used], dataset, "aggregates")
    points: dict[str, tuple[list[float], list[float]]] = {}
    for row in used:
        if dataset is None or row.dataset == dataset:
            bpp, quality = points.setdefault(row.codec, ([], []))
            bpp.append(row.bpp_mean)
            quality.append(row.get(column))
    return {codec: Curve.of(bpp, quality) for codec, (bpp, quality) in points.items()}


def bd_matrix(
    rows: Sequence[Aggregate], metric: str, method: str = "pchip", dataset: str | None = None
) -> list[BDResult]:
    """:func:`compare` for every ordered pair (anchor, test) of codecs in ``rows``, anchor !=
    test, anchor by anchor in order of first appearance (curves: :func:`curves_from_aggregates`).

    Raises:
        UsageError: unknown metric or method, or several datasets and no ``dataset``.
    """
    check_method(method)
    curves = curves_from_aggregates(rows, metric, dataset)
    return [
        compare(curves[a], curves[t], method=method, anchor_name=a, test_name=t, metric=metric)
        for a in curves
        for t in curves
        if a != t
    ]


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else math.nan


def _images(ids: list[str]) -> str:
    return ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")


def _summary(number: str, deltas: dict[str, _Delta]) -> tuple[list[_Delta], list[str]]:
    """The defined deltas of one number over the images, and notes on the images left out and
    those resting on a small overlap."""
    left_out: dict[str, list[str]] = {}
    small = []
    for image_id, delta in deltas.items():
        if delta.reason:
            left_out.setdefault(delta.reason, []).append(image_id)
        elif delta.overlap < SMALL_OVERLAP:
            small.append(image_id)
    notes = []
    if left_out:
        count = sum(len(ids) for ids in left_out.values())
        reasons = "; ".join(f"{reason} ({_images(ids)})" for reason, ids in left_out.items())
        notes.append(f"{number} left out {count} of {len(deltas)} images: {reasons}")
    if small:
        notes.append(
            f"{number} of {len(small)} images rests on an overlap < {SMALL_OVERLAP:.0%} "
            f"({_images(small)})"
        )
    return [d for d in deltas.values() if not d.reason], notes


def per_image_bd(
    records: Sequence[Record],
    anchor: str,
    test: str,
    metric: str,
    method: str = "pchip",
    dataset: str | None = None,
) -> BDResult:
    """BD per image, then the mean over the images where it is defined.

    Each image's curves are its ok records of each codec: ``bpp`` against the record column
    ``metric`` (the latest record per key, so a resumed run's retry counts). BD-rate is the
    arithmetic mean of the per-image percentages (as the CTC sheets average sequences),
    BD-quality the mean of the per-image values; ``overlap`` and ``rate_overlap`` are means over
    the images each number used. The warning says how many images each number left out and why
    (an image with records of only one codec counts as left out) and how many rest on a small
    overlap.

    Raises:
        UsageError: unknown metric or method, or several datasets and no ``dataset``.
    """
    check_method(method)
    column = _check_metric(metric)
    record_column = next((k for k, v in bd_metrics().items() if v == column), metric)
    chosen = [r for r in latest_per_key(records) if r.codec in (anchor, test)]
    _one_dataset([r.dataset for r in chosen], dataset, "records")
    points: dict[str, dict[str, tuple[list[float | None], list[float | None]]]] = {}
    for record in chosen:
        if dataset is None or record.dataset == dataset:
            sides = points.setdefault(record.image_id, {})
            if record.ok:
                bpp, quality = sides.setdefault(record.codec, ([], []))
                bpp.append(record.bpp)
                value = record.get(record_column)
                quality.append(float(value) if isinstance(value, int | float) else None)
    rates: dict[str, _Delta] = {}
    qualities: dict[str, _Delta] = {}
    for image_id, sides in points.items():
        a, t = (Curve.of(*sides.get(codec, ([], []))) for codec in (anchor, test))
        rates[image_id] = _delta(a, t, method, of_rate=True)
        qualities[image_id] = _delta(a, t, method, of_rate=False)
    used_rates, rate_notes = _summary("BD-rate", rates)
    used_qualities, quality_notes = _summary("BD-quality", qualities)
    missing = [] if points else [f"no records of {anchor} or {test}"]
    return BDResult(
        anchor=anchor,
        test=test,
        metric=metric,
        method=method,
        bd_rate=_mean([_percent(d.mean) for d in used_rates]),
        bd_quality=_mean([d.mean for d in used_qualities]),
        overlap=_mean([d.overlap for d in used_rates]),
        rate_overlap=_mean([d.overlap for d in used_qualities]),
        warning="; ".join(missing + rate_notes + quality_notes),
    )


def write_bd_csv(
    rows: Sequence[Aggregate], columns: Sequence[Column], directory: Path
) -> Path | None:
    """``bd.csv``: BD-rate and BD-quality of every ordered codec pair, for every BD column
    and both interpolation methods, per dataset, with overlaps and warnings. Written only
    when some dataset has two codecs to compare; returns the file."""
    lines: list[dict[str, object]] = []
    datasets = list(dict.fromkeys(r.dataset for r in rows))
    for dataset in datasets:
        mine = [r for r in rows if r.dataset == dataset]
        if len({r.codec for r in mine if r.codec != REFERENCE_CODEC}) < 2:
            continue
        for column in columns:
            if not any(math.isfinite(r.get(column.name)) for r in mine):
                continue
            for method in METHODS:
                for result in bd_matrix(mine, column.name, method):
                    values = asdict(result)
                    values["metric"] = column.record or column.name
                    lines.append(
                        {**values, "dataset": dataset, "column": column.name, "unit": column.unit}
                    )
    path = directory / BD_CSV
    if not lines:
        path.unlink(missing_ok=True)
        return None
    from bench.store import replacing

    with replacing(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=BD_CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(lines)
    return path
