"""The report's sections, each built from a run directory's contents as an HTML string."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

from bench.curves import REFERENCE_CODEC
from bench.manifest import RunManifest
from bench.metrics.base import Column
from bench.records import Record
from bench.report.markup import (
    NA,
    Cell,
    esc,
    fmt,
    key_values,
    note,
    num,
    plain,
    rate_text,
    section,
    table,
)
from bench.report.overview import bd_class
from bench.report.rundir import RunData
from bench.report.sanity import broken_codec_warnings
from bench.report.svgplot import Series, plot_series, render_plot
from bench.store import PLOTS

MAX_ERRORS_SHOWN = 5


def codec_order(run: RunData) -> Callable[[Record], tuple[int, float]]:
    """Sort key for records: the run's codec order, then the codec's rate order."""
    codecs = {name: i for i, name in enumerate(run.codecs)}
    rates: dict[tuple[str, float], int] = {}
    for name, info in run.manifest.codecs.items():
        for i, rate in enumerate(info.rates or info.target_bpp):
            if isinstance(rate, int | float):
                rates[(name, float(rate))] = i
    return lambda r: (codecs.get(r.codec, len(codecs)), rates.get((r.codec, r.point), r.point))


# --- summary and provenance ------------------------------------------------------------------


def _status_text(manifest: RunManifest) -> str:
    status = str(manifest.status or "unknown")
    if status == "running":
        return "running (no end recorded: the run is still going or was killed)"
    if status == "interrupted":
        return "interrupted (the records it finished are shown; `bench run --resume` continues)"
    return status


def summary(run: RunData) -> str:
    """Dataset, images, codecs, status and what failed."""
    manifest = run.manifest
    dataset = manifest.dataset
    failed = [r for r in run.records if not r.ok]
    images = run.images
    shown = ", ".join(images[:12]) + (
        f", ... ({len(images) - 12} more)" if len(images) > 12 else ""
    )
    facts: list[tuple[str, Any]] = [
        ("dataset", run.dataset_tag),
        ("data location", dataset.get("directory") or dataset.get("root") or "-"),
        ("images", f"{len(images)}: {shown}" if images else "none"),
        ("task", run.task.name if run.task else manifest.task_name),
        ("metrics", ", ".join(m.name for m in run.metrics) or "-"),
        ("status", _status_text(manifest)),
        ("started", manifest.started or "-"),
        ("ended", manifest.ended or "-"),
        ("records", f"{len(run.records) - len(failed)} ok, {len(failed)} failed"),
        ("aggregates", run.aggregates_source),
    ]
    body = key_values(facts, cls="kv summary")
    warnings = [*run.notes, *run.manifest.warnings]
    warnings += broken_codec_warnings(run.aggregates, run.columns)
    if warnings:
        body += '<div class="warn"><ul>' + "".join(f"<li>{esc(n)}</li>" for n in warnings)
        body += "</ul></div>"
    body += "<h3>Codecs</h3>" + _codec_table(run)
    if failed:
        body += "<h3>Failures</h3>" + _failures(failed)
    return section("summary", "Summary", body)


def _codec_table(run: RunData) -> str:
    infos = run.manifest.codecs
    counts: Counter[tuple[str, bool]] = Counter((r.codec, r.ok) for r in run.records)
    rows: list[list[Cell | str]] = []
    for name in run.codecs:
        info = infos.get(name)
        usable = info.usable if info else None
        rates = (info.rates or info.target_bpp) if info else []
        usable_text = "-" if usable is None else "yes" if usable else "no: "
        if info is not None and usable is False:
            usable_text += info.unusable_reason
        rows.append(
            [
                name,
                (info.version if info else "") or "-",
                plain(info.options if info else {}),
                (info.rate_param if info else "") or "-",
                ", ".join(rate_text(float(r)) for r in rates) if rates else "-",
                usable_text,
                Cell(str(counts[(name, True)]), cls="num"),
                Cell(str(counts[(name, False)]), cls="num"),
            ]
        )
    header = ["codec", "version", "options", "rate parameter", "rates", "usable", "ok", "failed"]
    return table(header, rows, cls="codecs")


def _failures(failed: list[Record]) -> str:
    by_message: dict[str, list[Record]] = {}
    for record in failed:
        by_message.setdefault(record.error or "(no message)", []).append(record)
    rows: list[list[Cell | str]] = [
        [
            Cell(str(len(group)), cls="num"),
            f"{group[0].image_id} / {group[0].codec} @ {rate_text(group[0].rate)}",
            message,
        ]
        for message, group in list(by_message.items())[:MAX_ERRORS_SHOWN]
    ]
    more = len(by_message) - MAX_ERRORS_SHOWN
    tail = note(f"... and {more} other messages (records.csv has them all)") if more > 0 else ""
    return table(["records", "first (image / codec @ rate)", "error"], rows, cls="errors") + tail


def provenance(run: RunData) -> str:
    """How the numbers were made: command, code, machine, software, data, model."""
    manifest = run.manifest
    if not run.has_manifest:
        return section("provenance", "Provenance", note("No manifest: provenance unknown."))
    git = manifest.git
    dirty = git.get("dirty")
    commit = git.get("commit") or "unknown"
    facts: list[tuple[str, Any]] = [
        ("command", manifest.command or "-"),
        ("git commit", f"{commit}" + (" (uncommitted changes)" if dirty else "")),
        ("started", manifest.started or "-"),
        ("ended", manifest.ended or "-"),
        ("resumed", manifest.resumed),
        ("workers", manifest.workers),
        ("executor", manifest.executor or "-"),
        ("manifest schema", manifest.schema_version),
    ]
    body = "<h3>Run</h3>" + key_values(facts)
    for title, values in (
        ("Machine", manifest.machine),
        ("Software", manifest.software),
        ("Data", manifest.dataset),
    ):
        if values:
            body += f"<h3>{title}</h3>" + key_values(values)
    if manifest.metric_provenance:
        body += "<h3>Metrics</h3>" + key_values(manifest.metric_provenance)
    task = manifest.task
    if task is not None:
        shown: dict[str, Any] = {"identity": task.identity or "-"}
        for key, value in task.provenance.items():  # long lists (class names) as counts
            long = isinstance(value, list) and len(value) > 8
            shown[f"{key} (count)" if long else key] = len(value) if long else value
        body += f"<h3>Task: {esc(task.name)}</h3>" + key_values(shown)
    codecs = manifest.codecs
    if codecs:
        rows = [[name, info.target or "-"] for name, info in codecs.items()]
        body += "<h3>Codec implementations</h3>" + table(["codec", "class"], rows)
    if run.references:
        body += "<h3>Published reference curves</h3>" + _reference_table(run)
    folded = (
        "<details><summary>Command, code, machine, software, data, model and the sources of "
        f"published curves</summary>{body}</details>"
    )
    return section("provenance", "Provenance", folded)


def _reference_table(run: RunData) -> str:
    rows = [
        [c.label, c.dataset, str(c.points), c.description or "-", c.source or "-", c.licence or "-"]
        for c in run.references
    ]
    header = ["curve", "dataset", "points", "description", "source", "licence"]
    return table(header, rows, cls="compact references")


# --- plots -----------------------------------------------------------------------------------

X_LABEL = "bits per pixel (mean over images)"


def plot_figure(
    series: list[Series], column: Column, *, title: str, plot_id: str, caption: str
) -> str:
    """One ``<figure class="plot">``: the SVG of ``series`` (``bench.report.svgplot``) and its
    caption."""
    assert column.plot is not None
    svg = render_plot(
        series,
        x_label=X_LABEL,
        y_label=column.plot.axis,
        metric=column.heading,
        title=title,
        plot_id=plot_id,
        digits=column.digits,
    )
    return (
        f'<figure class="plot" data-plot="{esc(column.plot.stem)}">{svg}'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def plots(run: RunData) -> str:
    """R-D curves per plotted column (one series per codec, published curves dashed, the
    uncompressed reference as a dashed line), drawn from the aggregates as interactive SVG."""
    title = "Rate-distortion plots"
    if not run.aggregates:
        return section("plots", title, note("No plots: there are no aggregates to plot."))
    figures = []
    missing = []
    for column in run.columns:
        if column.plot is None:
            continue
        try:
            series = plot_series(run.curves, column)
            if not any(s.style != "uncompressed" for s in series):
                missing.append(column)
                continue
            figures.append(
                plot_figure(
                    series,
                    column,
                    title=run.dataset_tag or "Rate-distortion",
                    plot_id=column.plot.stem,
                    caption=column.plot.title,
                )
            )
        except Exception as exc:  # a plotting failure costs this plot only
            figures.append(note(f"The {column.label} plot failed: {exc}", "warn"))
    if not figures:
        return section("plots", title, note("No plots: no rate point has a finite value to plot."))
    body = "".join(figures)
    if run.task is not None and missing:
        body += note(f"No {', '.join(c.label for c in missing)} plot: no record has a value.")
    about = note(
        "Hover a point for its values; click a legend entry to hide its curve. Drawn by "
        f"matplotlib for papers in the run's {PLOTS}/."
    )
    return section("plots", title, about + f"<div>{body}</div>")


# --- tables ----------------------------------------------------------------------------------


def _scaled(value: float, scale: float, digits: int) -> Cell:
    """A cell showing ``value * scale`` that keeps ``value`` itself as its exact value."""
    shown = value * scale if isinstance(value, int | float) else value
    return Cell(fmt(shown, digits), value=value, cls="num")


def rate_points(run: RunData) -> str:
    """One row per aggregate row (codec x rate point)."""
    if not run.aggregates:
        return section("rate-points", "Per rate point", note("No aggregates: no record finished."))
    columns = run.table_columns
    header = ["dataset", "codec", "rate parameter", "rate", "images", "failed"]
    header += [c.heading for c in columns]
    rows = []
    for row in run.aggregates:
        cells: list[Cell | str] = [
            row.dataset,
            row.codec,
            row.rate_param,
            Cell(rate_text(row.rate), value=row.rate, cls="num"),
            Cell(str(row.n_images), value=row.n_images, cls="num"),
            Cell(
                str(row.n_failed), value=row.n_failed, cls="num" + (" bad" if row.n_failed else "")
            ),
        ]
        cells += [_scaled(row.get(c.name), c.scale, c.digits) for c in columns]
        rows.append(cells)
    explain = note(
        "Means are over the images coded successfully; pooled values are over every pixel "
        "(total bits / total pixels; PSNR of the pooled MSE)."
        + (
            f" Task scores ({', '.join(c.label for c in run.task.known_columns())}) come from "
            f"{run.task.aggregation}."
            if run.task is not None
            else ""
        )
    )
    return section(
        "rate-points",
        "Per rate point",
        explain + '<div class="scroll">' + table(header, rows, table_id="aggregates") + "</div>",
    )


def task_tables(run: RunData) -> str:
    """The task's own tables (``Task.tables``; segmentation: IoU per class and rate point),
    under a heading that names the task and says how it aggregates."""
    if run.task is None:
        return ""
    labelled = [(f"{r.codec}@{rate_text(r.rate)}", r.values) for r in run.aggregates]
    parts = []
    for name, found in run.task.tables(labelled).items():
        header, *body = found.rows
        rows: list[list[Cell | str]] = [
            [str(label), *(_scaled(v, found.scale, found.digits) for v in values)]
            for label, *values in body
        ]
        parts.append(
            f'<h3 id="table-{esc(name)}">{esc(found.title)}</h3>'
            + (note(found.note) if found.note else "")
            + '<div class="scroll">'
            + table([str(h) for h in header], rows, cls="compact")
            + "</div>"
        )
    if not parts:
        return ""
    about = note(f"{run.task.description}; aggregates: {run.task.aggregation}.")
    return section("per-class", f"{run.task.name.capitalize()} tables", about + "".join(parts))


def image_columns(run: RunData) -> list[Column]:
    """The per-image table's columns: rate, the metrics' and the task's shown record columns,
    times."""
    columns = [
        Column("bytes", "bytes", digits=0),
        Column("bpp", "bpp", digits=4),
        *(c for m in run.metrics for c in m.record_columns if not c.hidden),
    ]
    if run.task is not None:
        columns += [c for c in run.task.record_columns if not c.hidden]
    return [
        *columns,
        Column("encode_s", "encode", "s", digits=4),
        Column("decode_s", "decode", "s", digits=4),
    ]


def images(run: RunData) -> str:
    """Per-image drill-down: one collapsible block per image with its records."""
    if not run.records:
        return section("images", "Per image", note("No records."))
    key = codec_order(run)
    by_image: dict[str, list[Record]] = {}
    for record in run.records:
        by_image.setdefault(record.image_id, []).append(record)
    columns = image_columns(run)
    extra = ["target_bpp"] if any(getattr(r, "target_bpp", None) for r in run.records) else []
    header = ["codec", "rate", *extra, *(c.heading for c in columns), "status", "error / note"]
    blocks = []
    for image_id in run.images:
        group = sorted(by_image.get(image_id, []), key=key)
        if not group:
            continue
        failed = sum(1 for r in group if not r.ok)
        first = group[0]
        size = f"{first.width}x{first.height}" if first.width and first.height else "size unknown"
        head = f"{image_id} — {size}, {len(group) - failed} ok, {failed} failed"
        if first.conversion:
            head += f" ({first.conversion})"
        rows = [_image_row(r, columns, extra) for r in group]
        blocks.append(
            f'<details class="image" data-image="{esc(image_id)}"><summary>{esc(head)}'
            f"</summary>{table(header, rows, cls='compact')}</details>"
        )
    controls = (
        '<p class="controls" hidden><input type="search" id="image-filter" '
        'placeholder="filter images by id" aria-label="filter images by id"> '
        '<button type="button" id="expand-all">expand all</button> '
        '<button type="button" id="collapse-all">collapse all</button></p>'
    )
    return section("images", "Per image", controls + "".join(blocks))


def _image_row(record: Record, columns: list[Column], extra: list[str]) -> list[Any]:
    cells: list[Cell | str] = [record.codec, Cell(rate_text(record.rate), cls="num")]
    cells += [num(getattr(record, name, None), 4) for name in extra]
    for column in columns:
        value = record.get(column.name)
        if isinstance(value, int | float):
            cells.append(_scaled(value, column.scale, column.digits))
        else:
            cells.append(num(None))
    cells.append(Cell(record.status, cls="" if record.ok else "bad"))
    cells.append(record.error or record.note)
    return cells


# --- BD tables -------------------------------------------------------------------------------


def bd_tables(run: RunData) -> str:
    """Bjøntegaard-delta rate matrices per metric (rows anchor, columns test), the run's
    codecs and its published reference curves."""
    title = "Bjøntegaard-delta rate"
    try:
        from bench import bjontegaard
    except ImportError as exc:
        return section("bd", title, note(f"BD tables are not available here ({exc}).", "warn"))
    rows = run.curves
    codecs = list(dict.fromkeys(r.codec for r in rows if r.codec != REFERENCE_CODEC))
    if len(codecs) < 2:
        return section("bd", title, note("BD tables need at least two codecs."))
    parts = [
        note(
            "BD-rate of the column codec against the row codec over their common quality "
            "range, with PCHIP interpolation (piecewise cubic, as in the JVET common test "
            "conditions; bd.csv also has Akima): negative (green) means the column codec "
            "needs fewer bits for the same quality, positive (red) more. The smaller number "
            "is the BD quality difference at equal rate. n/a: the curves do not overlap "
            "enough to compare (each needs two points or more)."
        )
    ]
    for column in (c for c in run.columns if c.bd):
        if not any(_finite(r.get(column.name)) for r in rows):
            continue
        try:
            results = bjontegaard.bd_matrix(rows, column.name)
        except Exception as exc:  # one metric's failure costs its table only
            parts.append(note(f"{column.heading}: BD failed ({exc})", "warn"))
            continue
        if not any(_finite(r.bd_rate) or _finite(r.bd_quality) for r in results):
            parts.append(
                f"<h3>{esc(column.heading)}</h3>"
                + note(
                    "No pair of codecs can be compared: every BD number is undefined (a "
                    "curve needs two points or more, and the curves must overlap)."
                )
            )
            continue
        parts.append(_bd_matrix(results, codecs, column))
    return section("bd", title, "".join(parts))


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _bd_matrix(results: list[Any], codecs: list[str], column: Column) -> str:
    cells = {(r.anchor, r.test): r for r in results}
    names = [c for c in codecs if any(c in key for key in cells)]
    unit = "pp" if column.unit == "%" else column.unit
    scale = column.scale
    metric = column.record or column.name
    footnotes: list[str] = []
    rows = []
    for anchor in names:
        row: list[Cell | str] = [Cell(f"<b>{esc(anchor)}</b>", raw=True)]
        for test in names:
            result = cells.get((anchor, test))
            if anchor == test or result is None:
                row.append(Cell("—", cls="num diag"))
                continue
            text = _percent(result.bd_rate)
            quality = fmt(result.bd_quality * scale, 2)
            if quality != NA and not quality.startswith("-"):
                quality = "+" + quality
            html_text = f"{esc(text)}<br><small>{esc(quality)} {unit}</small>"
            if result.warning:
                footnotes.append(f"{anchor} → {test}: {result.warning}")
                html_text += f"<sup>{len(footnotes)}</sup>"
            row.append(
                Cell(
                    html_text,
                    raw=True,
                    value=result.bd_rate,
                    title=result.warning,
                    cls=bd_class(result.bd_rate),
                )
            )
        rows.append(row)
    label = column.heading
    out = f"<h3>{esc(label)}</h3>" + table(
        ["anchor \\ test", *names], rows, cls=f"bd bd-{metric}", caption=f"BD-rate, {label}"
    )
    if footnotes:
        out += '<ol class="footnotes">' + "".join(f"<li>{esc(f)}</li>" for f in footnotes)
        out += "</ol>"
    return out


def _percent(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return NA
    return f"{value:+.1f} %"
