"""The output stage: everything a run directory derives from its records.

After a run (``bench.run`` and ``bench run`` call :func:`write_run_outputs`, also for an
interrupted or failed run) and again from the stored records (``bench curves`` calls
:func:`rewrite_outputs`), it writes:

    aggregates.csv     one row per (codec, rate point)          bench.curves.aggregate
    per_class_iou.csv  the task's tables (with segmentation)    bench.curves.write_task_tables
    bd.csv             BD of every ordered codec pair           bench.bjontegaard.write_bd_csv
    plots/             rd_*.png and rd_*.svg                    bench.curves.plot_rd
    (references.json: published curves drawn dashed in the plots and compared in bd.csv,
    ``bench.references``; aggregates.csv holds the run's own rows only)
    report.html        the run's report (after a run only)      bench.report.write_report

It composes the stages below it and nothing imports it but the API and the CLI: aggregation
(``bench.curves``) knows nothing of BD, BD (``bench.bjontegaard``) reads aggregates, and the
runner (``bench.runner``) produces records and returns.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from bench.bjontegaard import write_bd_csv
from bench.curves import (
    Aggregate,
    aggregate,
    columns_of,
    plot_rd,
    write_aggregates,
    write_task_tables,
)
from bench.errors import UsageError
from bench.metrics.base import Metric
from bench.records import Record
from bench.references import ReferenceCurve, read_references
from bench.store import AGGREGATES_CSV, PLOTS, RECORDS_CSV, RECORDS_PARQUET
from bench.tasks.task import Task

if TYPE_CHECKING:
    from bench.runner import RunResult

__all__ = ["rewrite_outputs", "write_outputs", "write_run_outputs"]

log = logging.getLogger(__name__)


def write_outputs(
    records: list[Record],
    directory: Path,
    metrics: Sequence[Metric],
    task: Task | None = None,
    title: str = "",
    references: Sequence[ReferenceCurve] | None = None,
) -> tuple[list[Aggregate], list[Path]]:
    """Everything derived from a run's records but the report: aggregates.csv, the task's
    tables (e.g. per_class_iou.csv), bd.csv and the plots (titled ``title``), with the
    published ``references`` (default: the run directory's references.json) in bd.csv and
    the plots. Returns the run's own aggregates and the plot files."""
    rows = aggregate(records, metrics, task)
    write_aggregates(rows, directory / AGGREGATES_CSV)
    write_task_tables(rows, task, directory)
    columns = columns_of(metrics, task)
    if references is None:
        references = read_references(directory)
    dataset = rows[0].dataset if rows else title
    compared = [*rows, *(a for curve in references for a in curve.aggregates(dataset))]
    images = max((r.n_images for r in rows), default=None)
    shown = [c.name for c in columns if c.bd or c.plot is not None]
    for curve in references:
        for text in curve.conventions(dataset, shown, images):
            log.warning("%s: %s", curve.label, text)
    write_bd_csv(compared, [c for c in columns if c.bd], directory)
    return rows, plot_rd(compared, columns, directory / PLOTS, title=title)


def write_run_outputs(result: RunResult, *, report: bool = True) -> RunResult:
    """Write a run's outputs from its result (``bench.runner.run``'s, or
    ``bench.runner.stopped_run(exc)`` for a run an exception stopped): aggregates, tables,
    bd.csv, plots, then the report (with crops only for a finished run). Returns the result
    with its plots.

    Never raises for a failure of its own: the run's records are safe on disk whatever
    happens here, so a failure (a plotting error, a full disk) is logged with how to retry
    (``bench curves RUN_DIR``, ``bench report RUN_DIR``), and what could be written stays.
    """
    plots: list[Path] = []
    try:
        _, plots = write_outputs(
            result.records, result.directory, result.metrics, result.task, result.dataset_tag
        )
    except Exception as exc:  # a plotting failure must not lose the run's numbers
        log.error(
            "could not write the aggregates and plots (bench curves %s retries): %s",
            result.directory,
            exc,
        )
    if report:
        try:
            from bench.report import write_report

            write_report(result.directory, crops=result.status == "finished")
        except Exception as exc:  # the report is derived; its failure must not lose the run
            log.error(
                "could not write the report (bench report %s retries): %s", result.directory, exc
            )
    return replace(result, plots=plots)


def rewrite_outputs(directory: Path) -> tuple[list[Aggregate], list[Path]]:
    """Recompute a run directory's records.parquet, aggregates, tables, bd.csv and plots from
    its records.csv (the latest record per slot), with the metrics and task its manifest names
    (``bench curves RUN_DIR``). The report is left as it is (``bench report`` rewrites it).

    Raises:
        UsageError: ``directory`` holds no records.csv.
    """
    from bench.manifest import MANIFEST, RunManifest, read_manifest, rebuild_metrics, rebuild_task
    from bench.records import latest_per_key, read_csv
    from bench.store import write_parquet

    directory = Path(directory)
    if not (directory / RECORDS_CSV).is_file():
        raise UsageError(f"{directory} has no {RECORDS_CSV}: is it a bench run directory?")
    has_manifest = (directory / MANIFEST).is_file()
    manifest = read_manifest(directory) if has_manifest else RunManifest()
    records = latest_per_key(read_csv(directory / RECORDS_CSV))
    _warn_of_foreign_rows(directory / AGGREGATES_CSV, {r.codec for r in records})
    write_parquet(records, directory / RECORDS_PARQUET)
    return write_outputs(
        records,
        directory,
        rebuild_metrics(manifest),
        rebuild_task(manifest),
        manifest.dataset_tag,
    )


def _warn_of_foreign_rows(path: Path, codecs: set[str]) -> None:
    """Say so when aggregates.csv holds codecs that no record has (rows added by hand): the
    rewrite drops them, and published points belong in ``bench import``."""
    from bench.curves import read_aggregates

    if not path.is_file():
        return
    try:
        foreign = sorted({r.codec for r in read_aggregates(path)} - codecs)
    except (OSError, ValueError, TypeError, KeyError):
        return
    if foreign:
        log.warning(
            "%s holds rows of %s that no record has; they are dropped as the aggregates are "
            "recomputed from the records. Published points go in a reference curve: "
            "`bench import csv FILE --dataset DATASET`, then `--reference NAME`",
            path,
            ", ".join(foreign),
        )
