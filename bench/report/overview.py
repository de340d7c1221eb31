"""The report's first screen: a headline and every codec's BD-rate against one anchor, per
metric and on average (``bench.anchor``), with the notes on published curves."""

from __future__ import annotations

import math

from bench.anchor import AnchorSummary, anchor_summary
from bench.bjontegaard import BDResult
from bench.curves import REFERENCE_CODEC
from bench.errors import UsageError
from bench.report.markup import NA, Cell, esc, note, section, table
from bench.report.rundir import RunData

__all__ = ["bd_class", "overview", "summary_of"]

TITLE = "At a glance"


def summary_of(run: RunData) -> tuple[AnchorSummary | None, str]:
    """The run's anchor summary (its stored anchor, else its first codec) and a note: why
    there is none, or why the stored anchor was not used."""
    codecs = {r.codec for r in run.curves if r.codec != REFERENCE_CODEC}
    if len(codecs) < 2:
        return None, "BD-rates need at least two codecs (or a codec and a --reference curve)."
    try:
        return anchor_summary(run.curves, run.columns, run.anchor), ""
    except UsageError as exc:
        if run.anchor is None:
            return None, str(exc)
        return anchor_summary(run.curves, run.columns), f"{exc}; the first codec is the anchor"


def bd_class(value: float) -> str:
    """The cell class that colours a BD-rate: green for fewer bits, red for more, three
    strengths (below 5 %, below 20 %, from 20 %)."""
    if not math.isfinite(value):
        return "num"
    strength = 1 if abs(value) < 5 else 2 if abs(value) < 20 else 3
    return f"num {'bd-better' if value < 0 else 'bd-worse'} s{strength}"


def _cell(result: BDResult | None) -> Cell:
    if result is None or not math.isfinite(result.bd_rate):
        why = result.warning if result is not None else ""
        return Cell(NA, cls="num", title=why)
    text = f"{result.bd_rate:+.1f} %" + (" *" if result.warning else "")
    return Cell(text, value=result.bd_rate, cls=bd_class(result.bd_rate), title=result.warning)


def _table(found: AnchorSummary) -> str:
    header = ["codec", *(c.label.removesuffix(" mean") for c in found.columns), "mean"]
    rows: list[list[Cell | str]] = [
        [
            Cell(f"<b>{esc(found.anchor)}</b> (anchor)", raw=True),
            *(Cell("0 %", cls="num diag") for _ in found.columns),
            Cell("0 %", cls="num diag"),
        ]
    ]
    for row in found.rows:
        mean = row.mean_bd_rate
        mean_cell = (
            Cell(
                f"{mean:+.1f} %"
                + (
                    f" ({row.metrics_in_mean} of {len(found.columns)})"
                    if row.metrics_in_mean < len(found.columns)
                    else ""
                ),
                value=mean,
                cls=bd_class(mean),
            )
            if math.isfinite(mean)
            else Cell(NA, cls="num")
        )
        rows.append(
            [row.codec, *(_cell(row.results.get(c.name)) for c in found.columns), mean_cell]
        )
    caption = f"BD-rate against {found.anchor}"
    return table(header, rows, cls="bd anchor", table_id="anchor-summary", caption=caption)


def overview(run: RunData) -> str:
    """The headline, the anchor summary and what to know about published curves."""
    found, why = summary_of(run)
    body = note(why, "warn") if why and found is not None else ""
    if found is None:
        body += note(why)
    else:
        starred = any(r.warnings for r in found.rows)
        body += f'<p class="headline">{esc(found.headline())}</p>' + _table(found)
        body += note(
            f"BD-rate against {found.anchor} over the quality range both share, "
            f"{found.method.upper()} interpolation (as in the JVET common test conditions); "
            "negative: fewer bits for the same quality. Mean: over the metrics where it is "
            "defined, as JPEG AI reports codecs. Anchor: --anchor CODEC."
            + (
                " *: the number rests on a small overlap; the BD-rate section says why."
                if starred
                else ""
            )
        )
    notes = run.reference_notes()
    if notes:
        body += (
            f'<details class="warn"><summary>{len(notes)} note(s) on the published curves: '
            "they may not compare one-to-one</summary><ul>"
            + "".join(f"<li>{esc(n)}</li>" for n in notes)
            + "</ul></details>"
        )
    return section("overview", TITLE, body)
