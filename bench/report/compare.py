"""The comparison page of several run directories (``bench report RUN_A RUN_B ... --out FILE``).

One self-contained HTML file, with the run report's style and Content-Security-Policy:

- Runs: each run's label (A, B, ...), directory, dataset, images, codecs and status, and a
  warning when the runs are on different datasets or images, or have other metrics.
- Rate-distortion plots: per plotted metric, every run's curves on the same axes, a codec in
  the same colour in every run and each run in its own line style and marker, labelled
  ``jpeg (run A)``.
- BD tables, per BD metric (PCHIP, as ``bd.csv``'s first method): each codec of a later run
  against the same codec in run A (what changed between the runs), then every curve against one
  anchor, the first codec of run A (as R-D comparisons report every codec against an anchor).
- Provenance: per run, the command, git commit, bench version, dataset and codec versions.

Everything shown that comes from a run (directories, codec names, options, the command) is
escaped, in the plots too (SVG drawn by ``bench.report.svgplot``).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.curves import REFERENCE_CODEC, Aggregate
from bench.errors import UsageError
from bench.metrics.base import Column
from bench.provenance import bench_version, now
from bench.report.markup import (
    Cell,
    esc,
    fmt,
    key_values,
    note,
    plain,
    rate_text,
    section,
    table,
)
from bench.report.page import fill, navigation
from bench.report.rundir import RunData, load_run
from bench.report.sections import X_LABEL
from bench.report.svgplot import Series, plot_series, render_plot
from bench.store import write_atomic

__all__ = ["METHOD", "Side", "default_comparison_path", "render_comparison", "write_comparison"]

METHOD = "pchip"
"""The interpolation of the page's BD numbers (``bd.csv`` of each run has both methods)."""

_DASHES = (("", "solid"), ("6 4", "dashed"), ("1.5 3", "dotted"), ("8 3 2 3", "dash-dot"))
"""Each run's line pattern (an SVG stroke-dasharray) and its name in the captions."""
_NAV = [("runs", "Runs"), ("plots", "Plots"), ("bd", "BD-rate"), ("provenance", "Provenance")]
_MAX_NAME = 100


def run_label(index: int) -> str:
    """A run's label on the page: A, B, ..., Z, then 27, 28, ...

    >>> run_label(0), run_label(1), run_label(26)
    ('A', 'B', '27')
    """
    return chr(ord("A") + index) if index < 26 else str(index + 1)


@dataclass
class Side:
    """One run of a comparison: its label, its data and the aggregates the page uses (those of
    its dataset; ``other_datasets`` names any others its aggregates hold)."""

    label: str
    run: RunData
    dataset: str
    rows: list[Aggregate]
    other_datasets: list[str] = field(default_factory=list)

    def curve(self, codec: str) -> str:
        """The name of ``codec``'s curve of this run: ``jpeg (run A)``."""
        return f"{codec} (run {self.label})"

    @property
    def codecs(self) -> list[str]:
        """The run's codecs that have a rate point with a coded image, in the run's order."""
        coded = {r.codec for r in self.rows if r.n_images}
        return [c for c in self.run.codecs if c != REFERENCE_CODEC and c in coded] + sorted(
            coded - set(self.run.codecs) - {REFERENCE_CODEC}
        )

    def has(self, column: str) -> bool:
        return any(_finite(r.get(column)) for r in self.rows if r.codec != REFERENCE_CODEC)


def _side(index: int, run: RunData) -> Side:
    datasets = list(dict.fromkeys(r.dataset for r in run.aggregates))
    tag = run.dataset_tag
    chosen = tag if tag in datasets or not datasets else datasets[0]
    rows = [r for r in run.aggregates if r.dataset == chosen]
    return Side(run_label(index), run, chosen, rows, [d for d in datasets if d != chosen])


def load_sides(run_dirs: Sequence[Path]) -> list[Side]:
    """Read the run directories of a comparison.

    Raises:
        UsageError: fewer than two directories, one given twice, or one that is not a bench run
            directory (the message names it).
    """
    if len(run_dirs) < 2:
        raise UsageError("a comparison needs at least two run directories")
    seen: dict[Path, Path] = {}
    for directory in run_dirs:
        if not Path(directory).is_dir():
            raise UsageError(f"{directory} is not a directory; pass bench run directories")
        resolved = Path(directory).resolve()
        if resolved in seen:
            raise UsageError(f"{directory} is given twice; compare different run directories")
        seen[resolved] = Path(directory)
    return [_side(i, load_run(Path(d))) for i, d in enumerate(run_dirs)]


# --- runs ------------------------------------------------------------------------------------


def _warnings(sides: list[Side], columns: list[Column]) -> list[str]:
    """What makes the runs' numbers less comparable than they look."""
    out = []
    datasets = list(dict.fromkeys(s.dataset for s in sides))
    if len(datasets) > 1:
        named = "; ".join(f"run {s.label}: {s.dataset or 'unknown'}" for s in sides)
        out.append(
            f"The runs are on different datasets ({named}): the curves and BD numbers below "
            "compare codecs measured on different images."
        )
    else:
        images = [frozenset(s.run.images) for s in sides]
        if len(set(images)) > 1:
            counts = "; ".join(
                f"run {s.label}: {len(i)}" for s, i in zip(sides, images, strict=True)
            )
            out.append(
                f"The runs scored different images of {datasets[0] or 'their dataset'} "
                f"({counts}): the curves and BD numbers average over different sets."
            )
    for column in columns:
        missing = [s.label for s in sides if not s.has(column.name)]
        if missing and len(missing) < len(sides):
            out.append(f"{column.heading}: no values in run {', '.join(missing)}.")
    for side in sides:
        if side.other_datasets:
            out.append(
                f"Run {side.label}: only its {side.dataset} rows are shown "
                f"(its aggregates also hold {', '.join(side.other_datasets)})."
            )
        out += [f"Run {side.label}: {n}" for n in side.run.notes]
        out += [f"Run {side.label}: {n}" for n in side.run.manifest.warnings]
    return out


def runs_section(sides: list[Side], columns: list[Column]) -> str:
    """The runs compared, one row each, and the warnings."""
    rows: list[list[Cell | str]] = []
    for side in sides:
        run = side.run
        ok = sum(1 for r in run.records if r.ok)
        rows.append(
            [
                Cell(f"<b>{esc(side.label)}</b>", raw=True),
                str(run.directory),
                side.dataset or "-",
                Cell(str(len(run.images)), cls="num"),
                ", ".join(side.codecs) or "-",
                ", ".join(m.name for m in run.metrics) or "-",
                str(run.manifest.status or "unknown"),
                f"{ok} ok, {len(run.records) - ok} failed",
                run.manifest.started or "-",
            ]
        )
    header = ["run", "directory", "dataset", "images", "codecs", "metrics", "status", "records",
              "started"]  # fmt: skip
    body = table(header, rows, cls="runs", table_id="runs")
    warnings = _warnings(sides, columns)
    if warnings:
        body += '<div class="warn"><ul>' + "".join(f"<li>{esc(w)}</li>" for w in warnings)
        body += "</ul></div>"
    return section("runs", "Runs compared", body)


# --- plots -----------------------------------------------------------------------------------


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def plot_series_of(sides: list[Side], column: Column) -> list[Series]:
    """Every run's curves of ``column``: a codec in the same colour in every run, each run in
    its own line pattern, curves named ``jpeg (run A)``."""
    colours = {c: i for i, c in enumerate(dict.fromkeys(c for s in sides for c in s.codecs))}
    found = []
    for i, side in enumerate(sides):
        codecs = {side.curve(c): c for c in side.codecs}
        for one in plot_series(
            side.rows,
            column,
            codecs=side.codecs,
            name=side.curve,
            reference=f"uncompressed, run {side.label}",
        ):
            found.append(
                replace(one, colour=colours.get(codecs.get(one.name, ""), 0), dash=_dash(i))
            )
    return found


def plot_svg(sides: list[Side], column: Column) -> str | None:
    """One plot of ``column`` against bpp with every run's curves (None when no run has a
    value): an ``<svg class="rd">`` of ``bench.report.svgplot``."""
    plot = column.plot
    if plot is None:
        return None
    series = plot_series_of(sides, column)
    runs = " vs run ".join(s.label for s in sides)
    if not any(s.style != "uncompressed" for s in series):
        return None
    return render_plot(
        series,
        x_label=X_LABEL,
        y_label=plot.axis,
        metric=column.heading,
        title=f"{column.label.removesuffix(' mean')}: run {runs}",
        plot_id="cmp-" + plot.stem,
        digits=column.digits,
    )


def plots_section(sides: list[Side], columns: list[Column]) -> str:
    """Every run's curves on the same axes, one figure per plotted metric."""
    title = "Rate-distortion plots"
    figures = []
    for column in columns:
        if column.plot is None:
            continue
        try:
            svg = plot_svg(sides, column)
        except Exception as exc:  # a plotting failure costs this plot only
            figures.append(note(f"The {column.label} plot failed: {exc}", "warn"))
            continue
        if svg is None:
            continue
        curves = [s.curve(c) for s in sides for c in s.codecs if s.has(column.name)]
        figures.append(
            f'<figure class="plot" data-plot="{esc(column.plot.stem)}" '
            f'data-curves="{esc(" | ".join(curves))}">{svg}'
            f"<figcaption>{esc(column.plot.title)}; {esc(_legend_note(sides))}</figcaption>"
            "</figure>"
        )
    if not figures:
        return section("plots", title, note("No plots: no run has a rate point to plot."))
    return section("plots", title, "<div>" + "".join(figures) + "</div>")


def _dash(index: int) -> str:
    return _DASHES[index % len(_DASHES)][0]


def _legend_note(sides: list[Side]) -> str:
    return ", ".join(f"run {s.label} {_DASHES[i % len(_DASHES)][1]}" for i, s in enumerate(sides))


# --- BD tables -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """One BD comparison of the page: the anchor and test curves' names, the test curve's
    codec and the result."""

    anchor: str
    test: str
    codec: str
    result: Any  # bench.bjontegaard.BDResult


def bd_pairs(sides: list[Side], column: Column) -> tuple[list[Pair], list[Pair]]:
    """For one BD column: each codec of a later run against the same codec in run A, and every
    curve against the anchor (the first curve of the first run that has the column).

    Raises:
        UsageError: the column is not a BD metric bench knows here.
    """
    from bench.bjontegaard import compare, curves_from_aggregates

    curves = {}
    for side in sides:
        if side.has(column.name):
            found = curves_from_aggregates(side.rows, column.name, side.dataset)
            for codec in side.codecs:
                if codec in found:
                    curves[(side.label, codec)] = found[codec]

    def pair(anchor: tuple[str, str], test: tuple[str, str]) -> Pair:
        names = (f"{anchor[1]} (run {anchor[0]})", f"{test[1]} (run {test[0]})")
        result = compare(
            curves[anchor], curves[test], method=METHOD, anchor_name=names[0],
            test_name=names[1], metric=column.record or column.name,
        )  # fmt: skip
        return Pair(names[0], names[1], test[1], result)

    first = sides[0].label
    same = [
        pair((first, codec), (side.label, codec))
        for side in sides[1:]
        for codec in side.codecs
        if (first, codec) in curves and (side.label, codec) in curves
    ]
    keys = list(curves)
    anchored = [pair(keys[0], key) for key in keys[1:]] if keys else []
    return same, anchored


def _signed(value: float, digits: int) -> str:
    text = fmt(value, digits)
    return text if not _finite(value) or text.startswith("-") else "+" + text


def _bd_table(
    pairs: list[Pair], column: Column, kind: str, first_header: list[str], caption: str
) -> str:
    unit = "pp" if column.unit == "%" else column.unit
    quality = f"BD-{column.label.removesuffix(' mean')}" + (f" [{unit}]" if unit else "")
    rows: list[list[Cell | str]] = []
    for pair in pairs:
        r = pair.result
        names: list[Cell | str] = (
            [pair.test] if kind == "anchor" else [pair.codec, pair.anchor, pair.test]
        )
        rate = _signed(r.bd_rate, 2) + (" %" if _finite(r.bd_rate) else "")
        rows.append(
            [
                *names,
                Cell(rate, value=r.bd_rate, cls="num"),
                Cell(_signed(r.bd_quality * column.scale, 3), value=r.bd_quality, cls="num"),
                Cell(fmt(r.overlap, 2), value=r.overlap, cls="num"),
                r.warning or "",
            ]
        )
    header = [*first_header, "BD-rate", quality, "overlap", "note"]
    metric = column.record or column.name
    return table(
        header,
        rows,
        cls=f"bd-{kind} bd-{kind}-{metric}",
        caption=caption,
        table_id=f"bd-{kind}-{column.name}",
    )


def bd_section(sides: list[Side], columns: list[Column]) -> str:
    """The BD tables of every BD metric any run has."""
    title = "Bjøntegaard deltas between the runs"
    explain = note(
        f"BD-rate: the mean bitrate difference of the test curve against the anchor curve over "
        f"the quality range both cover ({METHOD.upper()} interpolation of log bpp against the "
        "metric, as in the JVET common-test-condition sheets); negative means the test needs "
        "fewer bits for the same quality. BD-quality: the mean quality difference at equal bpp "
        "(positive: the test is better). Overlap: the share of the narrower quality range both "
        "curves cover; n/a where a number is undefined (the note says why). First table: each "
        f"codec of a later run against the same codec in run {sides[0].label}, i.e. what "
        "changed between the runs (a new library version, checkpoint or setting). Second "
        "table: every curve against one anchor, the first codec of the first run, as R-D "
        "comparisons report every codec against an anchor."
    )
    parts = [explain]
    for column in (c for c in columns if c.bd):
        if not any(s.has(column.name) for s in sides):
            continue
        try:
            same, anchored = bd_pairs(sides, column)
        except Exception as exc:  # one metric's failure costs its tables only
            parts.append(note(f"{column.heading}: BD failed ({exc})", "warn"))
            continue
        parts.append(f"<h3>{esc(column.heading)}</h3>")
        first = sides[0].label
        if same:
            caption = f"{column.heading}: each codec against itself in run {first}"
            parts.append(_bd_table(same, column, "runs", ["codec", "anchor", "test"], caption))
        else:
            parts.append(
                note(f"No codec has {column.label} values in run {first} and in a later run.")
            )
        if anchored:
            caption = f"{column.heading}: every curve against {anchored[0].anchor}"
            parts.append(_bd_table(anchored, column, "anchor", ["test"], caption))
    if len(parts) == 1:
        parts.append(note("No BD metric has values in these runs."))
    return section("bd", title, "".join(parts))


# --- provenance ------------------------------------------------------------------------------


def _machine(machine: dict[str, Any]) -> str:
    if not machine:
        return "-"
    cpus = f" x {machine['cpu_count']}" if machine.get("cpu_count") else ""
    return f"{machine.get('hostname') or '?'}: {machine.get('cpu') or '?'}{cpus}"


def provenance_section(sides: list[Side]) -> str:
    """Per run: how its numbers were made."""
    parts = []
    for side in sides:
        run, manifest = side.run, side.run.manifest
        git = manifest.git
        commit = str(git.get("commit") or "unknown")
        if git.get("dirty"):
            commit += " (uncommitted changes)"
        dataset = manifest.dataset
        facts: list[tuple[str, Any]] = [
            ("directory", run.directory.resolve()),
            ("command", manifest.command or "-"),
            ("git commit", commit if run.has_manifest else "unknown (no manifest)"),
            ("bench", manifest.software.get("bench") or "-"),
            ("dataset", side.dataset or "-"),
            ("data location", dataset.get("directory") or dataset.get("root") or "-"),
            ("images", len(run.images)),
            ("task", run.task.name if run.task else manifest.task or "compression"),
            ("started", manifest.started or "-"),
            ("ended", manifest.ended or "-"),
            ("status", manifest.status or "unknown"),
            ("machine", _machine(manifest.machine)),
            ("dataset provenance", dataset or "-"),
        ]
        codecs = [
            [
                name,
                info.version or "-",
                plain(info.options),
                info.rate_param or "-",
                ", ".join(rate_text(float(r)) for r in (info.rates or info.target_bpp)) or "-",
            ]
            for name, info in manifest.codecs.items()
        ]
        header = ["codec", "version", "options", "rate parameter", "rates"]
        parts.append(
            f'<h3 id="provenance-{esc(side.label)}">Run {esc(side.label)}</h3>'
            + key_values(facts)
            + (table(header, codecs, cls="codecs") if codecs else "")
        )
    return section("provenance", "Provenance", "".join(parts))


# --- the page --------------------------------------------------------------------------------


def _columns(sides: list[Side]) -> list[Column]:
    """The aggregate columns of every run, by name, in order of first appearance."""
    found: dict[str, Column] = {}
    for side in sides:
        for column in side.run.columns:
            found.setdefault(column.name, column)
    return list(found.values())


def render_comparison(sides: list[Side]) -> str:
    """The comparison page of loaded runs as HTML text."""
    columns = _columns(sides)
    body = "\n".join(
        [
            runs_section(sides, columns),
            plots_section(sides, columns),
            bd_section(sides, columns),
            provenance_section(sides),
        ]
    )
    names = " vs ".join(f"{s.label}: {s.run.directory.name}" for s in sides)
    datasets = ", ".join(dict.fromkeys(s.dataset or "unknown" for s in sides))
    return fill(
        title=f"bench comparison: {' vs '.join(s.run.directory.name for s in sides)}",
        subtitle=f"runs {names} — on {datasets}",
        nav=navigation(body, _NAV),
        body=body,
        footer=f"Written by bench {bench_version()} on {now()} from "
        + ", ".join(str(s.run.directory.resolve()) for s in sides)
        + ".",
    )


def default_comparison_path(run_dirs: Sequence[Path]) -> Path:
    """``reports/A-vs-B.html`` (in the checkout, else the current directory), named after the
    run directories (characters other than letters, digits, ``.``, ``_`` and ``-`` become
    ``-``; a long name is cut and keeps a hash of the whole)."""
    from bench.config import reports_home

    parts = [re.sub(r"[^A-Za-z0-9._-]+", "-", Path(d).resolve().name).strip("-.") for d in run_dirs]
    name = "-vs-".join(p or "run" for p in parts)
    if len(name) > _MAX_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:10]
        name = f"{name[:_MAX_NAME].rstrip('-.')}-{digest}"
    return reports_home() / f"{name}.html"


def write_comparison(run_dirs: Sequence[Path], out: Path | None = None) -> Path:
    """Write the comparison page of ``run_dirs`` to ``out`` (default:
    :func:`default_comparison_path`); returns its path.

    Raises:
        UsageError: fewer than two run directories, one given twice, or one that is not a
            bench run directory (the message names it).
    """
    sides = load_sides([Path(d) for d in run_dirs])
    text = render_comparison(sides)
    target = Path(out) if out is not None else default_comparison_path(run_dirs)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, text)
    return target
