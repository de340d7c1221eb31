"""Rate-distortion plots as SVG, drawn by bench itself for the HTML pages.

Why no plotting library in the page: a report must open offline, as one file, under a
Content-Security-Policy that runs nothing but the template's own script. Plotly would add about
3.5 MB of JavaScript to every report; Vega compiles its specifications with ``new Function``
and so needs ``'unsafe-eval'`` (or its slower interpreter build); uPlot or Chart.js would have
to be copied into this repository, which takes no code from public repositories. So the
drawing is done here, in Python, once: the SVG is complete and readable without JavaScript
(every point carries a native ``<title>`` tooltip), and the template's own short script only
adds the interaction (a floating tooltip, legend entries that hide and show a series, a
log-bpp switch). There is no zoom: the log-x switch and hiding series serve the same need for
the bunched low-rate points.

What the script relies on (``bench/report/template.html``):

- ``svg.rd``: one plot; ``circle.pt`` the points, with ``data-series``, ``data-codec``,
  ``data-rate``, ``data-bpp``, ``data-value`` and ``data-metric``;
- every element of series ``K`` (line, points, legend entry) has ``data-series="K"``;
  legend entries are ``g.legend-item`` (a button by role, in the tab order);
- ``g.xscale.linear`` and ``g.xscale.log``: the same series against linear and logarithmic
  bpp (the log one ``display="none"``, absent when no bpp is positive).

The legend sits to the right of the plot area, so it never covers a point. The output is
deterministic: the same series give the same bytes.

>>> svg = render_plot([Series("jpeg", (Point(0.5, 30.0, "quality=50"),))], x_label="bpp",
...                   y_label="PSNR [dB]", metric="PSNR [dB]", title="t", plot_id="p")
>>> svg.startswith("<svg") and 'class="pt"' in svg
True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from bench.curves import PALETTE, PUBLISHED, REFERENCE_CODEC, Aggregate
from bench.metrics.base import Column
from bench.report.markup import esc, rate_text

__all__ = ["PUBLISHED", "Point", "Series", "plot_series", "render_plot"]

Style = Literal["codec", "published", "uncompressed"]


@dataclass(frozen=True)
class Point:
    """One rate point: mean bpp, the plotted value and the rate label (``quality=75``)."""

    bpp: float
    value: float
    rate: str


@dataclass(frozen=True)
class Series:
    """One curve of a plot.

    Attributes:
        name: the legend label (and the codec name of the tooltips).
        points: its rate points, in any order (drawn sorted by bpp).
        style: ``codec`` a solid line; ``published`` dashed with hollow markers;
            ``uncompressed`` a dashed black horizontal line at its first point's value (its
            bpp is not used), labelled ``name (value)``.
        colour: palette index; None: the next colour of the plot.
        dash: an SVG ``stroke-dasharray`` that replaces the style's line pattern ("" none).
    """

    name: str
    points: tuple[Point, ...]
    style: Style = "codec"
    colour: int | None = None
    dash: str = ""


# Geometry of the drawing, in viewBox units (the SVG scales to the figure's width).
_LEFT, _TOP, _PLOT_W, _PLOT_H, _BOTTOM = 62.0, 34.0, 430.0, 300.0, 50.0
_LEGEND_GAP, _ROW, _FONT = 18.0, 17.0, 11.0
_MAX_LABEL = 40  # legend characters shown; the whole name is in the entry's <title>
_DASHED = "6 4"


def _n(value: float) -> str:
    """A coordinate, rounded so that the output is stable and small."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _spread(centre: float) -> float:
    """Half the range shown around a single value: from its magnitude, never a sliver."""
    size = abs(centre)
    return max(0.5, 0.02 * size) if size >= 1 else 0.1 * max(size, 0.5)


def value_range(values: Sequence[float], pad: float = 0.06) -> tuple[float, float]:
    """The shown range of ``values``: padded, and a sensible width around a single value.

    >>> value_range([3.0]), value_range([40.0])
    ((2.5, 3.5), (39.2, 40.8))
    """
    lo, hi = min(values), max(values)
    if hi - lo <= 1e-9 * max(abs(lo), abs(hi), 1e-12):
        half = _spread((lo + hi) / 2)
        return (lo + hi) / 2 - half, (lo + hi) / 2 + half
    margin = pad * (hi - lo)
    return lo - margin, hi + margin


def bpp_range(values: Sequence[float]) -> tuple[float, float]:
    """The shown bpp range: ±25 % around a single rate, else 5 % margins; not below 0 when no
    rate is negative.

    >>> bpp_range([0.0625])
    (0.046875, 0.078125)
    """
    lo, hi = min(values), max(values)
    if hi - lo <= 1e-9 * max(abs(lo), abs(hi), 1e-12):
        half = 0.25 * abs(lo) if lo else 0.5
        shown = (lo - half, hi + half)
    else:
        shown = (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    return (max(shown[0], 0.0) if lo >= 0 else shown[0]), shown[1]


def nice_ticks(lo: float, hi: float, count: int = 7) -> list[float]:
    """Round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) inside [lo, hi].

    >>> nice_ticks(0.0, 1.0)
    [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    """
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    k = first
    while k * step <= hi + 1e-9 * step:
        ticks.append(round(k * step, 12))
        k += 1
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks of every decade inside [lo, hi] (``lo`` > 0); round linear ticks when
    fewer than two fall inside.

    >>> log_ticks(0.05, 3.0)
    [0.05, 0.1, 0.2, 0.5, 1.0, 2.0]
    """
    ticks = [
        round(m * 10.0**e, 12)
        for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
        for m in (1, 2, 5)
        if lo * (1 - 1e-9) <= m * 10.0**e <= hi * (1 + 1e-9)
    ]
    return ticks if len(ticks) >= 2 else [t for t in nice_ticks(lo, hi, 4) if t > 0]


def tick_text(value: float, ticks: Sequence[float]) -> str:
    """A tick label with as many decimals as the ticks' spacing needs."""
    steps = [abs(b - a) for a, b in itertools.pairwise(ticks) if b != a]
    finest = min(steps) if steps else abs(value) or 1.0
    decimals = max(0, min(6, 1 - math.floor(math.log10(finest) + 1e-9)))
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _bpp_text(bpp: float) -> str:
    return f"{bpp:.4f}" if abs(bpp) >= 0.01 else f"{bpp:.3g}"


@dataclass(frozen=True)
class _Axis:
    lo: float
    hi: float
    start: float  # pixel of lo
    length: float  # pixels from lo to hi (negative: upwards)
    log: bool = False

    def __call__(self, value: float) -> float:
        if self.log:
            share = math.log(value / self.lo) / math.log(self.hi / self.lo)
        else:
            share = (value - self.lo) / (self.hi - self.lo)
        return self.start + share * self.length


def render_plot(
    series: Sequence[Series],
    *,
    x_label: str,
    y_label: str,
    metric: str,
    title: str,
    plot_id: str,
    digits: int = 2,
) -> str:
    """One R-D plot as an ``<svg class="rd">`` element to inline in HTML.

    Args:
        series: the curves, in legend order; points with a non-finite bpp or value are left
            out, and so is a series left with none.
        x_label, y_label: the axes' labels; ``metric`` names the value in tooltips.
        title: drawn above the plot and the SVG's accessible name.
        plot_id: prefix of the SVG's element ids (unique on the page).
        digits: decimals of the values in tooltips.
    """
    shown: list[tuple[int, Series, list[Point]]] = []
    for index, one in enumerate(series):
        points = sorted(
            (p for p in one.points if math.isfinite(p.bpp) or one.style == "uncompressed"),
            key=lambda p: (p.bpp, p.value),
        )
        points = [p for p in points if math.isfinite(p.value)]
        if points:
            shown.append((index, one, points[:1] if one.style == "uncompressed" else points))
    curves = [(i, s, p) for i, s, p in shown if s.style != "uncompressed"]
    xs = [p.bpp for _, _, points in curves for p in points] or [1.0]
    ys = [p.value for _, _, points in shown for p in points] or [0.0]

    colours: dict[int, str] = {}
    dashes: dict[int, str] = {}
    next_colour = 0
    for index, one, _ in shown:
        if one.style == "uncompressed":
            colours[index], dashes[index] = "#000000", one.dash or _DASHED
            continue
        slot = one.colour if one.colour is not None else next_colour
        next_colour = max(next_colour, slot + 1) if one.colour is None else next_colour
        colours[index] = PALETTE[slot % len(PALETTE)]
        cycle_dash = "2 2" if (slot // len(PALETTE)) % 2 else ""
        dashes[index] = one.dash or (_DASHED if one.style == PUBLISHED else cycle_dash)

    labels = {
        index: (f"{one.name} ({points[0].value:.1f})" if one.style == "uncompressed" else one.name)
        for index, one, points in shown
    }
    longest = max((min(len(t), _MAX_LABEL) for t in labels.values()), default=0)
    legend_w = max(34 + 0.62 * _FONT * longest, 170.0)  # alike plots scale alike
    right = _LEFT + _PLOT_W
    width = right + _LEGEND_GAP + legend_w + 8
    height = max(_TOP + _PLOT_H + _BOTTOM, _TOP + _ROW * len(shown) + 12)
    bottom = _TOP + _PLOT_H

    y_lo, y_hi = value_range(ys)
    y_axis = _Axis(y_lo, y_hi, bottom, -_PLOT_H)
    pid = esc(plot_id)
    out = [
        f'<svg class="rd" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_n(width)} '
        f'{_n(height)}" width="100%" role="img" aria-labelledby="{pid}-title" '
        f'data-plot="{pid}" font-family="system-ui, sans-serif" font-size="{_n(_FONT)}">',
        f'<title id="{pid}-title">{esc(title)}</title>',
        f'<text class="title" x="{_n(_LEFT + _PLOT_W / 2)}" y="{_n(_TOP - 14)}" '
        f'text-anchor="middle" font-size="13" font-weight="600">{esc(title)}</text>',
        f'<rect class="frame" x="{_n(_LEFT)}" y="{_n(_TOP)}" width="{_n(_PLOT_W)}" '
        f'height="{_n(_PLOT_H)}" fill="none" stroke="#888888"/>',
    ]
    y_ticks = nice_ticks(y_lo, y_hi)
    grid = ['<g class="yaxis">']
    for tick in y_ticks:
        y = _n(y_axis(tick))
        grid.append(
            f'<line x1="{_n(_LEFT)}" x2="{_n(right)}" y1="{y}" y2="{y}" stroke="#e3e3e3"/>'
            f'<text x="{_n(_LEFT - 6)}" y="{y}" dy="0.32em" text-anchor="end">'
            f"{tick_text(tick, y_ticks)}</text>"
        )
    grid.append("</g>")
    out += grid
    middle = _TOP + _PLOT_H / 2
    out.append(
        f'<text class="ylabel" transform="translate({_n(16)} {_n(middle)}) rotate(-90)" '
        f'text-anchor="middle">{esc(y_label)}</text>'
    )
    for index, one, points in shown:  # the same in both scales: drawn once
        if one.style != "uncompressed":
            continue
        y = _n(y_axis(points[0].value))
        out.append(
            f'<line class="ref" data-series="{index}" x1="{_n(_LEFT)}" x2="{_n(right)}" '
            f'y1="{y}" y2="{y}" stroke="#000000" stroke-width="1.2" '
            f'stroke-dasharray="{esc(dashes[index])}"><title>{esc(labels[index])}, '
            f"{esc(metric)}</title></line>"
        )

    scales = [("linear", _Axis(*bpp_range(xs), _LEFT, _PLOT_W))]
    positive = [x for x in xs if x > 0]
    if positive:
        lo, hi = min(positive), max(positive)
        factor = 1.25 if hi / lo < 1 + 1e-9 else (hi / lo) ** 0.05
        scales.append(("log", _Axis(lo / factor, hi * factor, _LEFT, _PLOT_W, log=True)))
    for kind, x_axis in scales:
        hidden = ' display="none"' if kind == "log" else ""
        out.append(f'<g class="xscale {kind}" data-scale="{kind}"{hidden}>')
        ticks = log_ticks(x_axis.lo, x_axis.hi) if x_axis.log else nice_ticks(x_axis.lo, x_axis.hi)
        for tick in ticks:
            x = _n(x_axis(tick))
            out.append(
                f'<line x1="{x}" x2="{x}" y1="{_n(_TOP)}" y2="{_n(bottom)}" stroke="#e3e3e3"/>'
                f'<text x="{x}" y="{_n(bottom + 15)}" text-anchor="middle">'
                f"{tick_text(tick, ticks)}</text>"
            )
        axis_name = f"{x_label} (log scale)" if x_axis.log else x_label
        out.append(
            f'<text class="xlabel" x="{_n(_LEFT + _PLOT_W / 2)}" y="{_n(bottom + 36)}" '
            f'text-anchor="middle">{esc(axis_name)}</text>'
        )
        for index, one, points in curves:
            drawn = [p for p in points if p.bpp > 0] if x_axis.log else points
            if not drawn:
                continue
            colour, dash = colours[index], dashes[index]
            path = " ".join(f"{_n(x_axis(p.bpp))},{_n(y_axis(p.value))}" for p in drawn)
            out.append(
                f'<g class="series" data-series="{index}">'
                f'<polyline data-series="{index}" points="{path}" fill="none" '
                f'stroke="{colour}" stroke-width="1.6"'
                + (f' stroke-dasharray="{esc(dash)}"' if dash else "")
                + "/>"
            )
            fill = "#ffffff" if one.style == PUBLISHED else colour
            for p in drawn:
                value = f"{p.value:.{digits}f}"
                bpp = _bpp_text(p.bpp)
                out.append(
                    f'<circle class="pt" data-series="{index}" data-codec="{esc(one.name)}" '
                    f'data-rate="{esc(p.rate)}" data-bpp="{bpp}" data-value="{value}" '
                    f'data-metric="{esc(metric)}" cx="{_n(x_axis(p.bpp))}" '
                    f'cy="{_n(y_axis(p.value))}" r="3.6" fill="{fill}" stroke="{colour}" '
                    f'stroke-width="1.4" tabindex="0"><title>{esc(one.name)}, {esc(p.rate)}, '
                    f"{bpp} bpp, {esc(metric)} {value}</title></circle>"
                )
            out.append("</g>")
        out.append("</g>")

    legend_x = right + _LEGEND_GAP
    out.append(f'<g class="legend" transform="translate({_n(legend_x)} {_n(_TOP)})">')
    for row, (index, one, _) in enumerate(shown):
        label = labels[index]
        short = label if len(label) <= _MAX_LABEL else label[: _MAX_LABEL - 1] + "…"
        colour, dash = colours[index], dashes[index]
        row_y = row * _ROW + 8
        mark = ""
        if one.style != "uncompressed":
            fill = "#ffffff" if one.style == PUBLISHED else colour
            mark = (
                f'<circle cx="12" cy="0" r="3.2" fill="{fill}" stroke="{colour}" '
                'stroke-width="1.4"/>'
            )
        out.append(
            f'<g class="legend-item" data-series="{index}" role="button" tabindex="0" '
            f'aria-pressed="true" transform="translate(0 {_n(row_y)})">'
            f"<title>{esc(label)}: show or hide</title>"
            f'<rect x="-2" y="-8" width="{_n(legend_w)}" height="{_n(_ROW - 1)}" '
            'fill="#ffffff" fill-opacity="0"/>'
            f'<line x1="0" x2="24" y1="0" y2="0" stroke="{colour}" stroke-width="1.6"'
            + (f' stroke-dasharray="{esc(dash)}"' if dash else "")
            + "/>"
            + mark
            + f'<text x="30" y="0" dy="0.32em">{esc(short)}</text></g>'
        )
    out.append("</g></svg>")
    return "".join(out)


def _rate_label(row: Aggregate) -> str:
    return f"{row.rate_param}={rate_text(row.rate)}"


def plot_series(
    rows: Sequence[Aggregate],
    column: Column,
    *,
    codecs: Sequence[str] | None = None,
    name: Callable[[str], str] = str,
    reference: str = "uncompressed",
) -> list[Series]:
    """The series of one plotted column from aggregate rows: one per codec (value × the
    column's scale against ``bpp_mean``; rows without images or with a non-finite value left
    out), then the reference codec's value as the ``uncompressed`` line.

    A codec whose rows all have ``rate_param == "published"`` is a published curve. Rate
    labels read ``quality=75``.

    Args:
        rows: aggregates (``bench.curves.Aggregate``).
        column: the plotted column.
        codecs: the codecs, in legend order (default: their order in ``rows``).
        name: a codec's legend label (the comparison page adds the run).
        reference: the legend label of the uncompressed line (its value is added).
    """
    order = list(dict.fromkeys(r.codec for r in rows)) if codecs is None else list(codecs)
    series = []
    for codec in order:
        if codec == REFERENCE_CODEC:
            continue
        own = [r for r in rows if r.codec == codec]
        points = tuple(
            Point(r.bpp_mean, column.scale * r.get(column.name), _rate_label(r))
            for r in own
            if r.n_images and math.isfinite(r.get(column.name)) and math.isfinite(r.bpp_mean)
        )
        if points:
            published = all(r.rate_param == PUBLISHED for r in own)
            series.append(Series(name(codec), points, "published" if published else "codec"))
    for row in rows:
        value = row.get(column.name)
        if row.codec == REFERENCE_CODEC and math.isfinite(value):
            point = Point(math.nan, column.scale * value, "uncompressed")
            series.append(Series(reference, (point,), "uncompressed"))
    return series
