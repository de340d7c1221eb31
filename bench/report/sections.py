"""The report's sections, each built from a run directory's contents as an HTML string."""

from __future__ import annotations

import math
import re
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.curves import REFERENCE_CODEC, plot_rd
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
from bench.report.rundir import RunData
from bench.store import PLOTS

MAX_ERRORS_SHOWN = 5

PLOT_TITLES = {  # file stem written by bench.curves.plot_rd: what it shows
    "rd_psnr": "PSNR (RGB, mean over images) against bpp",
    "rd_ms_ssim": "MS-SSIM in dB (mean over images) against bpp",
    "rd_miou": "mIoU against bpp, the uncompressed image's mIoU dashed",
}


def codec_order(run: RunData) -> Callable[[Record], tuple[int, float]]:
    """Sort key for records: the run's codec order, then the codec's rate order."""
    codecs = {name: i for i, name in enumerate(run.codecs)}
    rates: dict[tuple[str, float], int] = {}
    for name, info in (run.manifest.get("codecs") or {}).items():
        for i, rate in enumerate((info or {}).get("rates") or []):
            if isinstance(rate, int | float):
                rates[(name, float(rate))] = i
    return lambda r: (codecs.get(r.codec, len(codecs)), rates.get((r.codec, r.key[3]), r.key[3]))


# --- summary and provenance ------------------------------------------------------------------


def _status_text(manifest: dict[str, Any]) -> str:
    status = str(manifest.get("status") or "unknown")
    if status == "running":
        return "running (no end recorded: the run is still going or was killed)"
    if status == "interrupted":
        return "interrupted (the records it finished are shown; `bench run --resume` continues)"
    return status


def summary(run: RunData) -> str:
    """Dataset, images, codecs, status and what failed."""
    manifest = run.manifest
    dataset = manifest.get("dataset") or {}
    failed = [r for r in run.records if not r.ok]
    images = run.images
    shown = ", ".join(images[:12]) + (
        f", ... ({len(images) - 12} more)" if len(images) > 12 else ""
    )
    facts: list[tuple[str, Any]] = [
        ("dataset", run.dataset_tag),
        ("data location", dataset.get("directory") or dataset.get("root") or "-"),
        ("images", f"{len(images)}: {shown}" if images else "none"),
        ("task", manifest.get("task") or ("segmentation" if run.segmentation else "compression")),
        ("status", _status_text(manifest)),
        ("started", manifest.get("started") or "-"),
        ("ended", manifest.get("ended") or "-"),
        ("records", f"{len(run.records) - len(failed)} ok, {len(failed)} failed"),
        ("aggregates", run.aggregates_source),
    ]
    body = key_values(facts, cls="kv summary")
    if run.notes:
        body += '<div class="warn"><ul>' + "".join(f"<li>{esc(n)}</li>" for n in run.notes)
        body += "</ul></div>"
    body += "<h3>Codecs</h3>" + _codec_table(run)
    if failed:
        body += "<h3>Failures</h3>" + _failures(failed)
    return section("summary", "Summary", body)


def _codec_table(run: RunData) -> str:
    infos = run.manifest.get("codecs") or {}
    counts: Counter[tuple[str, bool]] = Counter((r.codec, r.ok) for r in run.records)
    rows: list[list[Cell | str]] = []
    for name in run.codecs:
        info = infos.get(name) or {}
        usable = info.get("usable")
        rates = info.get("rates")
        usable_text = "-" if usable is None else "yes" if usable else "no: "
        if usable is False:
            usable_text += str(info.get("unusable_reason") or "")
        rows.append(
            [
                name,
                info.get("version") or "-",
                plain(info.get("options") or {}),
                info.get("rate_param") or "-",
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
    if not manifest:
        return section("provenance", "Provenance", note("No manifest: provenance unknown."))
    git = manifest.get("git") or {}
    dirty = git.get("dirty")
    commit = git.get("commit") or "unknown"
    facts: list[tuple[str, Any]] = [
        ("command", manifest.get("command") or "-"),
        ("git commit", f"{commit}" + (" (uncommitted changes)" if dirty else "")),
        ("started", manifest.get("started") or "-"),
        ("ended", manifest.get("ended") or "-"),
        ("resumed", manifest.get("resumed")),
        ("workers", manifest.get("workers")),
    ]
    body = "<h3>Run</h3>" + key_values(facts)
    for title, key in (("Machine", "machine"), ("Software", "software"), ("Data", "dataset")):
        if isinstance(manifest.get(key), dict):
            body += f"<h3>{title}</h3>" + key_values(manifest[key])
    segmenter = manifest.get("segmenter")
    if isinstance(segmenter, dict):
        shown = {k: v for k, v in segmenter.items() if k != "class_names"}
        shown["classes"] = len(segmenter.get("class_names") or [])
        body += "<h3>Segmenter</h3>" + key_values(shown)
    codecs = manifest.get("codecs") or {}
    if codecs:
        rows = [[name, (info or {}).get("target") or "-"] for name, info in codecs.items()]
        body += "<h3>Codec implementations</h3>" + table(["codec", "class"], rows)
    return section("provenance", "Provenance", body)


# --- plots -----------------------------------------------------------------------------------

_UNSAFE_SVG = re.compile(  # elements and attributes that could run or fetch something
    r"<\s*(script|foreignObject|iframe|object|embed|image|a)\b|<[^>]*\son[a-z]+\s*="
    r"|javascript:|href\s*=\s*[\"'](?!#)|@import|url\(\s*[\"']?(?!#)",
    re.IGNORECASE,
)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)


def inline_svg(text: str, prefix: str) -> str:
    """An SVG file as an element to inline in HTML, its ids prefixed so that several SVGs
    (matplotlib reuses glyph, marker and clip ids) can share one page."""
    text = re.sub(r"<\?xml[^>]*\?>", "", text)
    text = re.sub(r"<!DOCTYPE[^>]*>", "", text, flags=re.DOTALL)
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.DOTALL)
    text = _COMMENT.sub("", text)
    text = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", text)
    text = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}-\1"', text)
    return text.strip()


def plot_svgs(run: RunData) -> tuple[dict[str, str], str]:
    """The R-D plots as SVG text by file stem, and where they came from.

    The run's own ``plots/*.svg`` are used when every plot the aggregates call for is there
    and holds nothing but drawing; otherwise the plots are drawn again from the aggregates.
    """
    wanted = [stem for stem in PLOT_TITLES if stem != "rd_miou" or run.segmentation]
    directory = run.directory / PLOTS
    found = {s: directory / f"{s}.svg" for s in wanted if (directory / f"{s}.svg").is_file()}
    if "rd_psnr" in found and (run.segmentation <= ("rd_miou" in found)):
        texts = {stem: path.read_text(errors="replace") for stem, path in found.items()}
        if not any(_UNSAFE_SVG.search(_COMMENT.sub("", text)) for text in texts.values()):
            return texts, f"the run's {PLOTS}/ directory"
    if not run.aggregates:
        return {}, "nothing: there are no aggregates to plot"
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        written = plot_rd(run.aggregates, Path(tmp), title=run.dataset_tag)
        texts = {p.stem: p.read_text() for p in written if p.suffix == ".svg"}
    if not texts:
        return {}, "no rate point has a finite value to plot"
    why = "the run's plots are missing, incomplete or hold more than drawing"
    return texts, f"drawn again from the aggregates ({why})"


def plots(run: RunData) -> str:
    """R-D curves per metric, and mIoU-bpp with the uncompressed reference."""
    try:
        svgs, source = plot_svgs(run)
    except Exception as exc:  # a plotting failure costs this section only
        return section("plots", "Rate-distortion plots", note(f"The plots failed: {exc}", "warn"))
    if not svgs:
        return section("plots", "Rate-distortion plots", note(f"No plots: {source}."))
    figures = "".join(
        f'<figure class="plot">{inline_svg(svgs[stem], stem)}'
        f"<figcaption>{esc(title)}</figcaption></figure>"
        for stem, title in PLOT_TITLES.items()
        if stem in svgs
    )
    if run.segmentation and "rd_miou" not in svgs:
        figures += note("No mIoU plot: no record has an mIoU value.")
    return section(
        "plots", "Rate-distortion plots", note(f"Plots from {source}.") + f"<div>{figures}</div>"
    )


# --- tables ----------------------------------------------------------------------------------


def rate_point_columns(segmentation: bool) -> list[tuple[str, str, int, float]]:
    """(header, Aggregate attribute, decimals, display scale) of the per-rate-point table."""
    columns = [
        ("bpp mean", "bpp_mean", 4, 1.0),
        ("bpp pooled", "bpp_pooled", 4, 1.0),
        ("PSNR mean [dB]", "psnr_rgb_mean", 2, 1.0),
        ("PSNR pooled [dB]", "psnr_rgb_pooled", 2, 1.0),
        ("SSIM", "ssim_rgb_mean", 4, 1.0),
        ("MS-SSIM", "ms_ssim_rgb_mean", 4, 1.0),
        ("MS-SSIM [dB]", "ms_ssim_db_mean", 2, 1.0),
        ("encode [s]", "encode_s_mean", 4, 1.0),
        ("decode [s]", "decode_s_mean", 4, 1.0),
    ]
    if segmentation:
        columns += [
            ("mIoU [%]", "miou", 2, 100.0),
            ("pixel acc. [%]", "pixel_accuracy", 2, 100.0),
            ("mIoU drop [pp]", "miou_drop", 2, 100.0),
        ]
    return columns


def _scaled(value: float, scale: float, digits: int) -> Cell:
    """A cell showing ``value * scale`` that keeps ``value`` itself as its exact value."""
    shown = value * scale if isinstance(value, int | float) else value
    return Cell(fmt(shown, digits), value=value, cls="num")


def rate_points(run: RunData) -> str:
    """One row per aggregate row (codec x rate point)."""
    if not run.aggregates:
        return section("rate-points", "Per rate point", note("No aggregates: no record finished."))
    columns = rate_point_columns(run.segmentation)
    header = ["dataset", "codec", "rate parameter", "rate", "images", "failed"]
    header += [c[0] for c in columns]
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
        cells += [_scaled(getattr(row, attr), scale, digits) for _, attr, digits, scale in columns]
        rows.append(cells)
    explain = note(
        "Means are over the images coded successfully; pooled values are over every pixel "
        "(total bits / total pixels; PSNR of the pooled MSE)."
        + (
            " mIoU and pixel accuracy come from one confusion matrix summed over every image."
            if run.segmentation
            else ""
        )
    )
    return section(
        "rate-points",
        "Per rate point",
        explain + '<div class="scroll">' + table(header, rows, table_id="aggregates") + "</div>",
    )


def per_class(run: RunData) -> str:
    """Per-class IoU per rate point, when segmentation ran."""
    rows_with = [r for r in run.aggregates if r.class_iou]
    if not rows_with:
        return ""
    classes = list(dict.fromkeys(name for r in rows_with for name in r.class_iou))
    # aggregates.csv spells "traffic light" as iou_traffic_light: show the manifest's names
    spelled = {name.replace(" ", "_"): name for name in run.class_names}
    header = ["class", *(f"{r.codec}@{rate_text(r.rate)}" for r in rows_with)]
    body: list[list[Cell | str]] = [["mIoU", *(_scaled(r.miou, 100.0, 1) for r in rows_with)]]
    for name in classes:
        values = (_scaled(r.class_iou.get(name, math.nan), 100.0, 1) for r in rows_with)
        body.append([spelled.get(name, name), *values])
    return section(
        "per-class",
        "IoU per class [%]",
        note(f"{NA}: the class is absent from both labels and predictions.")
        + '<div class="scroll">'
        + table(header, body, cls="compact")
        + "</div>",
    )


_IMAGE_COLUMNS: list[tuple[str, str, int]] = [  # header, Record attribute, decimals
    ("bytes", "bytes", 0),
    ("bpp", "bpp", 4),
    ("PSNR [dB]", "psnr_rgb", 2),
    ("SSIM", "ssim_rgb", 4),
    ("MS-SSIM", "ms_ssim_rgb", 4),
    ("MS-SSIM [dB]", "ms_ssim_db", 2),
    ("encode [s]", "encode_s", 4),
    ("decode [s]", "decode_s", 4),
]


def images(run: RunData) -> str:
    """Per-image drill-down: one collapsible block per image with its records."""
    if not run.records:
        return section("images", "Per image", note("No records."))
    key = codec_order(run)
    by_image: dict[str, list[Record]] = {}
    for record in run.records:
        by_image.setdefault(record.image_id, []).append(record)
    columns = list(_IMAGE_COLUMNS)
    if run.segmentation:
        columns += [("mIoU [%]", "miou", 2), ("mIoU drop [pp]", "miou_drop", 2)]
    extra = ["target_bpp"] if any(getattr(r, "target_bpp", None) for r in run.records) else []
    header = ["codec", "rate", *extra, *(c[0] for c in columns), "status", "error / note"]
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


def _image_row(record: Record, columns: list[tuple[str, str, int]], extra: list[str]) -> list[Any]:
    cells: list[Cell | str] = [record.codec, Cell(rate_text(record.rate), cls="num")]
    cells += [num(getattr(record, name, None), 4) for name in extra]
    for _, attr, digits in columns:
        value = getattr(record, attr)
        scale = 100.0 if attr in ("miou", "miou_drop") else 1.0
        cells.append(_scaled(value, scale, digits) if value is not None else num(None))
    cells.append(Cell(record.status, cls="" if record.ok else "bad"))
    cells.append(record.error or record.note)
    return cells


# --- BD tables -------------------------------------------------------------------------------

_BD_LABELS = {"psnr_rgb": "PSNR", "ms_ssim_db": "MS-SSIM [dB]", "miou": "mIoU"}


def bd_tables(run: RunData) -> str:
    """Bjøntegaard-delta rate matrices per metric (rows anchor, columns test)."""
    title = "Bjøntegaard-delta rate"
    try:
        from bench import bjontegaard
    except ImportError as exc:
        return section("bd", title, note(f"BD tables are not available here ({exc}).", "warn"))
    codecs = [c for c in run.codecs if c != REFERENCE_CODEC]
    if len(codecs) < 2:
        return section("bd", title, note("BD tables need at least two codecs."))
    parts = [
        note(
            "BD-rate of the column codec against the row codec over their common quality "
            "range: negative means the column codec needs fewer bits for the same quality. "
            "The smaller number is the BD quality difference at equal rate. n/a: the curves "
            "do not overlap enough to compare."
        )
    ]
    for metric, column in bjontegaard.BD_METRICS.items():
        if not any(_finite(getattr(r, column, math.nan)) for r in run.aggregates):
            continue
        try:
            results = bjontegaard.bd_matrix(run.aggregates, metric)
        except Exception as exc:  # one metric's failure costs its table only
            parts.append(note(f"{_BD_LABELS.get(metric, metric)}: BD failed ({exc})", "warn"))
            continue
        parts.append(_bd_matrix(results, codecs, metric))
    return section("bd", title, "".join(parts))


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _bd_matrix(results: list[Any], codecs: list[str], metric: str) -> str:
    cells = {(r.anchor, r.test): r for r in results}
    names = [c for c in codecs if any(c in key for key in cells)]
    unit = "pp" if metric == "miou" else "dB"
    scale = 100.0 if metric == "miou" else 1.0
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
                Cell(html_text, raw=True, value=result.bd_rate, title=result.warning, cls="num")
            )
        rows.append(row)
    label = _BD_LABELS.get(metric, metric)
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
