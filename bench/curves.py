"""Per-rate-point aggregates, the task's tables and rate-distortion plots, from records and
the run's metrics and task (every column's meaning comes from its metric or task object).

Aggregation only: BD numbers are computed from these aggregates by ``bench.bjontegaard``, and
``bench.outputs`` writes everything derived from a run's records.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.metrics.base import Column, Metric, mean
from bench.records import TARGET_BPP, Record
from bench.store import replacing
from bench.tasks.task import REFERENCE_CODEC, Task

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "AGGREGATE_COLUMNS",
    "PALETTE",
    "RATE_COLUMNS",
    "REFERENCE_CODEC",
    "TARGET_BPP",
    "Aggregate",
    "aggregate",
    "plot_rd",
    "rd_figure",
    "read_aggregates",
    "write_aggregates",
    "write_task_tables",
]

PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C6D00")
"""Curve colours of every plot (Okabe and Ito's colour-blind-safe set, its yellow darkened to
read on white; black is the uncompressed line's), cycled in codec order."""

PUBLISHED = "published"
"""The ``rate_param`` of aggregate rows that hold a published reference curve (a codec named
like ``VTM (published)``): plots draw them dashed with hollow markers."""

RATE_COLUMNS = (
    Column("n_images", "images", higher_is_better=True, digits=0),
    Column("n_failed", "failed", higher_is_better=False, digits=0),
    Column("bpp_mean", "bpp mean", higher_is_better=False, digits=4),
    Column("bpp_pooled", "bpp pooled", higher_is_better=False, digits=4, pooled=True),
    Column("encode_s_mean", "encode", "s", higher_is_better=False, digits=4),
    Column("decode_s_mean", "decode", "s", higher_is_better=False, digits=4),
)
"""The aggregate columns every run has, whatever its metrics: counts, rate and times."""


@dataclass
class Aggregate:
    """One codec at one rate point, over the images of a dataset.

    Columns of ``aggregates.csv``:
        dataset, codec, rate_param, rate: the rate point (in a target-bpp run, rate_param is
            ``target_bpp`` and rate the target; each image's own rate value is in records).
        n_images: images coded successfully; n_failed: images that failed (see records).
        bpp_mean: mean of per-image bpp; bpp_pooled: total bits / total pixels.
        encode_s_mean, decode_s_mean: mean wall-clock seconds per image.
    Then the aggregate columns of the run's metrics (e.g. ``psnr_rgb_mean``,
    ``psnr_rgb_pooled``, ``ssim_rgb_mean``, ``ms_ssim_rgb_mean``, ``ms_ssim_db_mean``,
    ``n_ms_ssim``) and of its task (e.g. ``miou``, ``pixel_accuracy``, ``miou_drop``,
    ``iou_<class>``), in ``values``.
    """

    dataset: str
    codec: str
    rate_param: str
    rate: float
    n_images: int
    n_failed: int
    bpp_mean: float
    bpp_pooled: float
    encode_s_mean: float
    decode_s_mean: float
    values: dict[str, float] = field(default_factory=dict)

    def __getattr__(self, name: str) -> float:
        values = self.__dict__.get("values")
        if values is not None and name in values:
            return values[name]
        raise AttributeError(f"aggregates have no column {name!r}")

    def get(self, column: str) -> float:
        """Any column by name; NaN where this row has none."""
        if column in _FIXED:
            return getattr(self, column)  # type: ignore[no-any-return]
        return self.values.get(column, math.nan)

    def row(self) -> dict[str, object]:
        """The CSV row: the fixed fields, then the values."""
        return {**{name: getattr(self, name) for name in AGGREGATE_COLUMNS}, **self.values}


AGGREGATE_COLUMNS = [f.name for f in fields(Aggregate) if f.name != "values"]
_FIXED = frozenset(AGGREGATE_COLUMNS)
_INTS = frozenset({"n_images", "n_failed"})


def aggregate(
    records: Iterable[Record], metrics: Sequence[Metric] | None = None, task: Task | None = None
) -> list[Aggregate]:
    """Aggregate records per (dataset, codec, rate point), in order of first appearance.

    Each metric (default: ``bench.metrics.DEFAULT_METRICS``) and the task aggregate their
    own columns over the successful records; the task then fills what is relative to its
    reference row (the ``none`` codec).
    """
    if metrics is None:
        from bench.metrics import create_metrics

        metrics = create_metrics()
    groups: dict[tuple[str, str, str, float], list[Record]] = {}
    for record in records:
        point = (
            (TARGET_BPP, record.target_bpp)
            if record.target_bpp is not None
            else (record.rate_param, record.rate)
        )
        groups.setdefault((record.dataset, record.codec, *point), []).append(record)
    rows = []
    for (dataset, codec, rate_param, rate), group in groups.items():
        ok = [r for r in group if r.ok]
        total_pixels = sum(r.height * r.width for r in ok if r.height and r.width)
        values: dict[str, float] = {}
        for metric in metrics:
            values.update(metric.aggregate(ok))
        if task is not None:
            values.update(task.aggregate(ok))
        rows.append(
            Aggregate(
                dataset=dataset,
                codec=codec,
                rate_param=rate_param,
                rate=rate,
                n_images=len(ok),
                n_failed=len(group) - len(ok),
                bpp_mean=mean(r.bpp for r in ok),
                bpp_pooled=(8 * sum(r.bytes or 0 for r in ok) / total_pixels)
                if total_pixels
                else math.nan,
                encode_s_mean=mean(r.encode_s for r in ok),
                decode_s_mean=mean(r.decode_s for r in ok),
                values=values,
            )
        )
    if task is not None:
        references = {r.dataset: r.values for r in rows if r.codec == task.reference_codec}
        for row in rows:
            task.relative(row.values, references.get(row.dataset))
    return rows


def columns_of(metrics: Sequence[Metric], task: Task | None) -> list[Column]:
    """The aggregate columns of a run beyond ``RATE_COLUMNS``, in table order."""
    columns = [c for m in metrics for c in m.aggregate_columns]
    if task is not None:
        columns += task.aggregate_columns
    return columns


def write_aggregates(rows: list[Aggregate], path: Path) -> None:
    """Write aggregates as CSV (full float precision)."""
    with replacing(path) as tmp, tmp.open("w", newline="") as handle:
        extra = list(dict.fromkeys(k for row in rows for k in row.values))
        writer = csv.DictWriter(handle, fieldnames=AGGREGATE_COLUMNS + extra)
        writer.writeheader()
        writer.writerows(row.row() for row in rows)


def read_aggregates(path: Path) -> list[Aggregate]:
    """Read an aggregates CSV written by ``write_aggregates`` (any bench version's)."""

    def parse(name: str, text: str) -> Any:
        if name in ("dataset", "codec", "rate_param"):
            return text
        if name in _INTS:
            return int(text)
        return float(text) if text != "" else math.nan

    def build(row: dict[str, str]) -> Aggregate:
        fixed = {k: parse(k, row.get(k) or "") for k in AGGREGATE_COLUMNS if k in row}
        for name in ("encode_s_mean", "decode_s_mean", "bpp_pooled"):
            fixed.setdefault(name, math.nan)
        values = {k: parse(k, v or "") for k, v in row.items() if k not in _FIXED}
        return Aggregate(**fixed, values=values)

    with path.open(newline="") as handle:
        return [build(row) for row in csv.DictReader(handle)]


def plot_rd(
    rows: list[Aggregate], columns: Sequence[Column], directory: Path, title: str = ""
) -> list[Path]:
    """Draw bpp against every column that declares a plot (:func:`rd_figure`), as PNG and
    SVG in ``directory``; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for column in columns:
        fig = rd_figure(rows, column, title)
        if fig is None or column.plot is None:
            continue
        for suffix in ("png", "svg"):
            path = directory / f"{column.plot.stem}.{suffix}"
            fig.savefig(
                path, metadata={"Date": None} if suffix == "svg" else None, bbox_inches="tight"
            )
            written.append(path)
    return written


def rd_figure(rows: Sequence[Aggregate], column: Column, title: str = "") -> Figure | None:
    """A matplotlib figure of bpp against ``column`` (one line per codec, published curves
    dashed with hollow markers, the reference codec as a horizontal line, the legend outside
    the axes so that it covers no point); None when the column declares no plot or no codec
    has a finite value of it."""
    from matplotlib.figure import Figure  # no pyplot: no global state, 0.4 s less to import

    plot = column.plot
    name, scale = column.name, column.scale
    if plot is None or not any(
        math.isfinite(r.get(name)) for r in rows if r.codec != REFERENCE_CODEC
    ):
        return None
    codecs = [c for c in dict.fromkeys(r.codec for r in rows) if c != REFERENCE_CODEC]
    fig = Figure(figsize=(8.4, 4.8), dpi=120)
    ax = fig.subplots()
    ax.set_prop_cycle(color=list(PALETTE))
    xs: list[float] = []
    for codec in codecs:
        own = [r for r in rows if r.codec == codec]
        points = sorted(
            (r.bpp_mean, scale * r.get(name))
            for r in own
            if r.n_images and math.isfinite(r.get(name)) and math.isfinite(r.bpp_mean)
        )
        if not points:
            continue
        x, y = zip(*points, strict=True)
        xs += x
        published = all(r.rate_param == PUBLISHED for r in own)
        line = ax.plot(
            x, y, marker="o", markersize=3.5, linewidth=1.4, label=codec,
            linestyle="--" if published else "-",
        )[0]  # fmt: skip
        if published:
            line.set_markerfacecolor("none")
    for reference in (r for r in rows if r.codec == REFERENCE_CODEC):
        value = reference.get(name)
        if math.isfinite(value):
            ax.axhline(
                scale * value,
                color="black",
                linestyle="--",
                linewidth=1.0,
                label=f"uncompressed ({scale * value:.1f})",
            )
    if xs and max(xs) - min(xs) <= 1e-9 * max(abs(max(xs)), 1e-12):
        half = 0.25 * abs(xs[0]) if xs[0] else 0.5  # one rate: not a 0.001-bpp-wide axis
        ax.set_xlim(xs[0] - half, xs[0] + half)
    ax.set_xlabel("bits per pixel (mean over images)")
    ax.set_ylabel(plot.axis)
    ax.set_title(title or "Rate-distortion")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig


def write_task_tables(rows: list[Aggregate], task: Task | None, directory: Path) -> list[Path]:
    """The task's own tables (segmentation: ``per_class_iou.csv``, IoU per class and rate
    point) as CSV files; returns the files written."""
    if task is None:
        return []
    written = []
    labelled = [(f"{r.codec}@{r.rate:g}", r.values) for r in rows]
    for name, table in task.tables(labelled).items():
        path = directory / f"{name}.csv"
        with replacing(path) as tmp, tmp.open("w", newline="") as handle:
            csv.writer(handle).writerows(table.rows)
        written.append(path)
    return written
