"""The HTML report of a run directory: one self-contained file that opens offline; and the
comparison page of several run directories (``bench.report.compare``).

Sections, first screen first: the headline and every codec's BD-rate against the anchor
(``bench.report.overview``), the R-D plots (interactive SVG drawn by
``bench.report.svgplot``, with published reference curves dashed), the run's summary, BD-rate
matrices, the per-rate-point table, the task's tables, a per-image drill-down, crops of
reconstructions at matched bpp, and provenance (folded).
Everything taken from the run (image ids, file names, options, error messages, the command)
is escaped, and a Content-Security-Policy allows no scripts but the report's own and no
outside requests.
"""

from __future__ import annotations

from pathlib import Path

from bench.provenance import bench_version, now
from bench.report.compare import default_comparison_path, render_comparison, write_comparison
from bench.report.crops import crops as crops_section
from bench.report.overview import overview
from bench.report.page import fill, navigation
from bench.report.rundir import RunData, load_run
from bench.report.sections import bd_tables, images, plots, provenance, rate_points, task_tables
from bench.report.sections import summary as summary_section
from bench.store import REPORT_HTML, write_atomic

__all__ = [
    "RunData",
    "default_comparison_path",
    "load_run",
    "render",
    "render_comparison",
    "write_comparison",
    "write_report",
]

_NAV = [
    ("overview", "At a glance"),
    ("plots", "Plots"),
    ("summary", "Summary"),
    ("bd", "BD-rate"),
    ("rate-points", "Rate points"),
    ("per-class", "Per class"),
    ("images", "Per image"),
    ("crops", "Crops"),
    ("provenance", "Provenance"),
]


def render(run: RunData, *, crops: bool = True, crop_image: str | None = None) -> str:
    """The report of a loaded run directory as HTML text."""
    parts = [
        # The first screen: the summary against the anchor beside the first plot.
        f'<div class="first-screen">{overview(run)}{plots(run)}</div>',
        summary_section(run),
        bd_tables(run),
        rate_points(run),
        task_tables(run),
        images(run),
    ]
    if crops:
        parts.append(crops_section(run, crop_image))
    else:
        parts.append(
            '<section id="crops"><h2>Reconstructions at matched bpp</h2>'
            '<p class="note">Skipped (--no-crops): nothing was coded again.</p></section>'
        )
    parts.append(provenance(run))
    body = "\n".join(p for p in parts if p)
    manifest = run.manifest
    codecs = ", ".join(c for c in run.codecs) or "no codec"
    subtitle = f"{codecs} on {run.dataset_tag} — {run.directory.resolve()}"
    if manifest.started:
        subtitle += f" — started {manifest.started}"
    return fill(
        title=f"bench report: {run.dataset_tag}",
        subtitle=subtitle,
        nav=navigation(body, _NAV),
        body=body,
        footer=f"Written by bench {bench_version()} on {now()} from {run.directory.resolve()}.",
    )


def write_report(
    run_dir: Path, out: Path | None = None, *, crops: bool = True, crop_image: str | None = None
) -> Path:
    """Build RUN_DIR/report.html (or ``out``) from the run directory's files; returns the path.

    Works on finished, interrupted and partial runs, runs with failed records and runs of
    codecs not installed here (their crops say so).

    Args:
        run_dir: a directory written by ``bench run``.
        out: where to write the report (default ``run_dir/report.html``).
        crops: re-code the chosen image to show crops at matched bpp (``False`` codes nothing).
        crop_image: the image id to crop (default: the first image most codecs coded).

    Raises:
        UsageError: ``run_dir`` is not a bench run directory (the message names what is missing).
    """
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    text = render(run, crops=crops, crop_image=crop_image)
    target = Path(out) if out is not None else run_dir / REPORT_HTML
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, text)
    return target
