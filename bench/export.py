"""A run's results in other people's forms (``bench export``).

- ``compressai``: one results JSON per codec, as ``compressai.utils.eval_model`` writes them
  (``bpp``, ``psnr-rgb``, ``ms-ssim-rgb``, ``encoding_time``, ``decoding_time``; bench's other
  aggregate columns under their own names), with bench's ``"bench"`` block (dataset, image
  count, the run and its command). CompressAI's plotting script and ``bench import
  compressai`` read them.
- ``csv``: every codec in one file, bench's reference CSV form (``bench import csv``).
- ``latex``, ``markdown``: the anchor summary (:func:`bench.anchor.anchor_summary`: each
  codec's BD-rate per quality metric against one anchor, and their mean) and the R-D points,
  as tables for a paper or a pull request.

The ``none`` reference codec of a task run is no curve and is left out. The published curves a
run stores (``references.json``) are exported only when asked (``with_references``): they are
someone else's numbers, and an export is first of all the run's own.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.anchor import AnchorSummary, anchor_summary
from bench.curves import RATE_COLUMNS, REFERENCE_CODEC, Aggregate
from bench.errors import UsageError
from bench.metrics.base import Column
from bench.references import (
    COMPRESSAI_KEYS,
    PUBLISHED,
    ReferenceCurve,
    read_references,
    to_compressai,
    write_csv_curves,
)
from bench.references.library import slug
from bench.report.rundir import RunData, load_run
from bench.store import write_atomic

__all__ = [
    "FORMATS",
    "Exported",
    "default_out",
    "export_run",
    "latex_escape",
    "latex_tables",
    "markdown_escape",
    "markdown_tables",
    "run_curves",
]

FORMATS = ("compressai", "csv", "latex", "markdown")
STDOUT = "-"

_TO_COMPRESSAI = {column: key for key, column in COMPRESSAI_KEYS.items()}
_RATE = {c.name: c for c in RATE_COLUMNS}
_POINT_COLUMNS = ("psnr_rgb_mean", "ms_ssim_rgb_mean", "miou")
"""The quality columns of the R-D points table, where the run has them."""


@dataclass(frozen=True)
class Exported:
    """What :func:`export_run` did: the files written, the text for stdout (``out="-"``),
    and notes for the user (columns left out, what the run lacked)."""

    paths: tuple[Path, ...]
    text: str = ""
    notes: tuple[str, ...] = ()


def default_out(run_dir: Path, fmt: str) -> Path:
    """Where a format goes when no ``out`` is given: ``RUN_DIR/export/compressai/`` (a
    directory), ``RUN_DIR/export/curves.csv``, ``RUN_DIR/export/anchor.tex`` or ``.md``."""
    names = {
        "compressai": "compressai",
        "csv": "curves.csv",
        "latex": "anchor.tex",
        "markdown": "anchor.md",
    }
    return Path(run_dir) / "export" / names[fmt]


def export_run(
    run_dir: Path,
    fmt: str,
    *,
    anchor: str | None = None,
    out: str | Path | None = None,
    with_references: bool = False,
) -> Exported:
    """Export the run in ``run_dir`` as ``fmt`` (one of :data:`FORMATS`) to ``out`` (default
    :func:`default_out`; an existing folder: the default file name in it; ``"-"``: return
    the text instead, for every format but ``compressai``).

    Raises:
        UsageError: an unknown format, not a run directory, a run without aggregates, an
            anchor that is not a codec of the run, or ``"-"`` for ``compressai``.
    """
    if fmt not in FORMATS:
        raise UsageError(f"cannot export as {fmt!r}; choose one of {', '.join(FORMATS)}")
    if anchor is not None and fmt in ("compressai", "csv"):
        raise UsageError(f"--anchor is for the latex and markdown tables, not {fmt}")
    run = load_run(Path(run_dir))
    curves, notes = run_curves(run)
    notes = [*run.notes, *notes]
    references: list[ReferenceCurve] = []
    if with_references:
        references = read_references(run.directory)
        if not references:
            notes.append(f"{run.directory} stores no reference curves (references.json)")
    to_stdout = str(out) == STDOUT
    target = Path(out) if out is not None and not to_stdout else default_out(run.directory, fmt)
    if fmt != "compressai" and target.is_dir():  # a folder to put the file in
        target = target / default_out(run.directory, fmt).name
    if fmt == "compressai":
        if to_stdout:
            raise UsageError(
                "--out - writes one file, but the compressai form is one file per codec: "
                "give a directory"
            )
        return Exported(tuple(_write_compressai(curves, references, run, target)), "", tuple(notes))
    if fmt == "csv":
        text = _csv_text([*curves, *references])
    else:
        rows = [*run.aggregates, *_reference_rows(references, run)]
        summary = anchor_summary(
            rows, run.columns, _anchor_name(anchor, rows), dataset=_dataset(run)
        )
        images = len(run.manifest.images) or None
        used = [column.name for column in summary.columns]
        conventions = [
            f"{c.label}: {note}"
            for c in references
            for note in c.conventions(summary.dataset, used, images)
        ]
        render = latex_tables if fmt == "latex" else markdown_tables
        text = render(summary, rows, run.columns, source=str(run.directory), notes=conventions)
    if to_stdout:
        return Exported((), text, tuple(notes))
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, text)
    return Exported((target,), "", tuple(notes))


# --- curves ------------------------------------------------------------------------------------


def run_curves(run: RunData) -> tuple[list[ReferenceCurve], list[str]]:
    """Each codec of the run (not ``none``) as a curve: its rate points in bpp order, under
    CompressAI's keys where one exists and bench's column names otherwise; and notes on what
    was left out (points without a successful image, columns with undefined values)."""
    notes: list[str] = []
    names = [
        "bpp_mean",
        "bpp_pooled",
        "encode_s_mean",
        "decode_s_mean",
        *(c.name for c in run.columns if not c.hidden and not c.name.startswith("n_")),
    ]
    codecs = list(dict.fromkeys(r.codec for r in run.aggregates if r.codec != REFERENCE_CODEC))
    if not codecs:
        raise UsageError(f"{run.directory} has no aggregates of any codec: nothing to export")
    command = run.manifest.command or "command unknown"
    curves = []
    for codec in codecs:
        rows = [r for r in run.aggregates if r.codec == codec]
        points = sorted(
            (r for r in rows if r.n_images > 0 and math.isfinite(r.bpp_mean)),
            key=lambda r: r.bpp_mean,
        )
        if len(points) < len(rows):
            notes.append(
                f"{codec}: {len(rows) - len(points)} rate point(s) without a successful image "
                "left out"
            )
        if not points:
            continue
        results: dict[str, tuple[float, ...]] = {}
        for name in names:
            values = tuple(float(r.get(name)) for r in points)
            if all(math.isfinite(v) for v in values):
                results[_TO_COMPRESSAI.get(name, name)] = values
            elif any(math.isfinite(v) for v in values):
                notes.append(f"{codec}: {name} is undefined at some rate points; left out")
        entry = run.manifest.codecs.get(codec)
        version = f" ({entry.version})" if entry is not None and entry.version else ""
        counts = sorted({r.n_images for r in points})
        rate = ", ".join(f"{r.rate_param} {r.rate:g}" for r in points)
        curves.append(
            ReferenceCurve(
                name=codec,
                dataset=points[0].dataset,
                results=results,
                source=f"bench run {run.directory.resolve()}: {command}",
                description=f"{codec}{version}, measured by bench",
                images=counts[-1],
                notes=f"rate points: {rate}"
                + ("" if len(counts) == 1 else f"; images per point: {counts}"),
                kind="curve",
            )
        )
    return curves, notes


def _write_compressai(
    curves: Sequence[ReferenceCurve],
    references: Sequence[ReferenceCurve],
    run: RunData,
    directory: Path,
) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    files = [(slug(c.name), c) for c in curves]
    files += [(f"{PUBLISHED}-{slug(c.name)}", c) for c in references]
    for stem, curve in files:
        path = directory / f"{stem}.json"
        if path in written:
            raise UsageError(f"two curves would be written to {path}; rename one of the codecs")
        payload = to_compressai(curve)
        if curve in curves:
            payload["bench"]["run"] = str(run.directory.resolve())
            payload["bench"]["command"] = run.manifest.command
        write_atomic(path, json.dumps(payload, indent=1) + "\n")
        written.append(path)
    return written


def _csv_text(curves: Sequence[ReferenceCurve]) -> str:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "curves.csv"
        write_csv_curves(curves, path)
        return path.read_text(encoding="utf-8")


def _reference_rows(references: Sequence[ReferenceCurve], run: RunData) -> list[Aggregate]:
    return [row for c in references for row in c.aggregates(_dataset(run))]


def _dataset(run: RunData) -> str:
    return run.aggregates[0].dataset if run.aggregates else run.dataset_tag


def _anchor_name(anchor: str | None, rows: Sequence[Aggregate]) -> str | None:
    """``anchor``, or its published curve's label when only that is present (``VTM``)."""
    codecs = {r.codec for r in rows}
    if anchor is not None and anchor not in codecs and f"{anchor} ({PUBLISHED})" in codecs:
        return f"{anchor} ({PUBLISHED})"
    return anchor


# --- tables ------------------------------------------------------------------------------------


def _percent(value: float) -> str:
    return f"{value:+.2f}" if math.isfinite(value) else "n/a"


def _value(column: Column, value: float) -> str:
    return f"{column.scale * value:.{column.digits}f}" if math.isfinite(value) else "n/a"


def _point_columns(rows: Sequence[Aggregate], columns: Sequence[Column]) -> list[Column]:
    known = {c.name: c for c in columns}
    chosen = [_RATE["bpp_mean"]]
    for name in _POINT_COLUMNS:
        if name in known and any(math.isfinite(r.get(name)) for r in rows):
            chosen.append(known[name])
    return chosen


def _caption(summary: AnchorSummary) -> str:
    metrics = ", ".join(c.heading for c in summary.columns) or "no quality metric"
    return (
        f"BD-rate in % against the anchor {summary.anchor} on {summary.dataset}, per quality "
        f"metric ({metrics}) and their mean. Negative: fewer bits than the anchor for the "
        f"same quality. Log-rate interpolated against quality with "
        f"{summary.method.upper()} over the quality range the two curves share (the "
        "interpolation of the JPEG AI and JVET common test conditions); the mean is over the "
        "metrics where the BD-rate is defined."
    )


def _point_caption(summary: AnchorSummary) -> str:
    return (
        f"Rate-distortion points on {summary.dataset}: each codec's rate parameter, mean bpp "
        "and mean quality over the images."
    )


def _rate(row: Aggregate) -> str:
    return PUBLISHED if row.rate_param == PUBLISHED else f"{row.rate_param} {row.rate:g}"


def _warnings(summary: AnchorSummary) -> list[str]:
    return [f"{r.codec}, {w}" for r in summary.rows for w in r.warnings]


def _body(summary: AnchorSummary) -> list[list[str]]:
    lines = []
    for row in summary.rows:
        cells = [_percent(row.results[c.name].bd_rate) for c in summary.columns]
        mean = _percent(row.mean_bd_rate)
        if math.isfinite(row.mean_bd_rate) and row.metrics_in_mean < len(summary.columns):
            mean += f" ({row.metrics_in_mean} of {len(summary.columns)})"
        lines.append([row.codec, *cells, mean])
    return lines


def _points(
    rows: Sequence[Aggregate], columns: Sequence[Column]
) -> tuple[list[Column], list[list[str]]]:
    used = [r for r in rows if r.codec != REFERENCE_CODEC]
    chosen = _point_columns(used, columns)
    order = list(dict.fromkeys(r.codec for r in used))
    ordered = sorted(used, key=lambda r: (order.index(r.codec), r.bpp_mean))
    return chosen, [
        [r.codec, _rate(r), *(_value(c, r.get(c.name)) for c in chosen)] for r in ordered
    ]


_MARKDOWN_SPECIAL = set("\\`*_[]<>|#")


def markdown_escape(text: str) -> str:
    """Text for a Markdown table cell: no line breaks, no table or inline markup.

    >>> markdown_escape("a|b_c")
    'a\\\\|b\\\\_c'
    """
    flat = " ".join(str(text).split())
    return "".join(f"\\{ch}" if ch in _MARKDOWN_SPECIAL else ch for ch in flat)


def markdown_tables(
    summary: AnchorSummary,
    rows: Sequence[Aggregate],
    columns: Sequence[Column],
    *,
    source: str = "",
    notes: Sequence[str] = (),
) -> str:
    """The anchor summary and the R-D points as two Markdown pipe tables; ``notes`` (e.g.
    how a published curve's conventions differ) follow the first."""
    e = markdown_escape
    head = ["Codec", *(c.heading for c in summary.columns), "Mean"]
    lines = [f"**BD-rate against {e(summary.anchor)}** ({e(summary.dataset)})", ""]
    lines += [_pipe([e(h) for h in head]), _pipe(["---", *["---:"] * (len(head) - 1)])]
    body = _body(summary)
    lines += [_pipe([e(c) for c in cells]) for cells in body]
    if not body:
        lines.append(
            _pipe([f"no codec but the anchor {e(summary.anchor)}", *[""] * (len(head) - 1)])
        )
    lines += ["", e(_caption(summary))]
    warnings = [*_warnings(summary), *notes]
    if warnings:
        lines += ["", "Notes:", "", *(f"- {e(w)}" for w in warnings)]
    chosen, points = _points(rows, columns)
    head = ["Codec", "Rate", *(c.heading for c in chosen)]
    lines += ["", "**Rate-distortion points**", ""]
    lines += [_pipe([e(h) for h in head]), _pipe(["---", "---", *["---:"] * len(chosen)])]
    lines += [_pipe([e(c) for c in cells]) for cells in points]
    lines += ["", e(_point_caption(summary))]
    if source:
        lines += ["", f"Exported by bench from {e(source)}."]
    return "\n".join(lines) + "\n"


def _pipe(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


_LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "[": "{[}",  # never an optional argument of the \\ before it
    "]": "{]}",
}


def latex_escape(text: str) -> str:
    """Text for LaTeX: its special characters as commands, line breaks as spaces.

    >>> latex_escape("a_b 50% & #1")
    'a\\\\_b 50\\\\% \\\\& \\\\#1'
    """
    return "".join(_LATEX.get(ch, ch) for ch in " ".join(str(text).split()))


def _number(cell: str) -> str:
    """A signed number in math mode (a real minus sign); other cells escaped."""
    head, _, rest = cell.partition(" ")
    try:
        float(head)
    except ValueError:
        return latex_escape(cell)
    return f"${head}$" + (f" {latex_escape(rest)}" if rest else "")


def latex_tables(
    summary: AnchorSummary,
    rows: Sequence[Aggregate],
    columns: Sequence[Column],
    *,
    source: str = "",
    notes: Sequence[str] = (),
) -> str:
    """The anchor summary and the R-D points as two LaTeX tables (booktabs rules: load
    ``\\usepackage{booktabs}``); ``notes`` follow the first below its rules."""
    e = latex_escape
    lines = ["% Written by bench export" + (f" from {e(source)}" if source else "")]
    lines.append("% needs \\usepackage{booktabs}")
    head = ["Codec", *(c.heading for c in summary.columns), "Mean"]
    body = [[e(cells[0]), *(_number(c) for c in cells[1:])] for cells in _body(summary)]
    if not body:
        body = [[f"\\multicolumn{{{len(head)}}}{{l}}{{no codec but the anchor}}"]]
    below = [e(w) for w in [*_warnings(summary), *notes]]
    lines += _latex_table(_caption(summary), "tab:bench-anchor", head, body, below)
    chosen, points = _points(rows, columns)
    head = ["Codec", "Rate", *(c.heading for c in chosen)]
    body = [[e(cells[0]), e(cells[1]), *(_number(c) for c in cells[2:])] for cells in points]
    lines += [""]
    lines += _latex_table(_point_caption(summary), "tab:bench-rd-points", head, body, [])
    return "\n".join(lines) + "\n"


def _latex_table(
    caption: str, label: str, head: list[str], body: list[list[str]], notes: list[str]
) -> list[str]:
    spec = "l" + "r" * (len(head) - 1)
    if len(head) > 1 and head[1] == "Rate":
        spec = "ll" + "r" * (len(head) - 2)
    lines = [
        "\\begin{table}[t]",
        "  \\centering",
        f"  \\caption{{{latex_escape(caption)}}}",
        f"  \\label{{{label}}}",
        f"  \\begin{{tabular}}{{{spec}}}",
        "    \\toprule",
        "    " + " & ".join(latex_escape(h) for h in head) + " \\\\",
        "    \\midrule",
        *("    " + " & ".join(cells) + " \\\\" for cells in body),
        "    \\bottomrule",
        "  \\end{tabular}",
    ]
    if notes:
        lines.append("  \\par\\smallskip\\footnotesize")
        lines += [f"  Note: {note}\\par" for note in notes]
    lines.append("\\end{table}")
    return lines
