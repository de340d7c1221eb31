"""The Python API: ``bench.run(...)`` with the CLI's options as keyword arguments, and
``bench.load(run_dir)`` giving records and aggregates as pandas DataFrames.

>>> import bench
>>> callable(bench.run) and callable(bench.load)
True
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import UsageError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from bench.executors import Executor
    from bench.manifest import RunManifest
    from bench.records import Record
    from bench.references import ReferenceCurve
    from bench.report.rundir import RunData
    from bench.runner import RunResult


def run(
    codecs: str | Sequence[str],
    dataset: str = "kodak",
    *,
    out: str | Path | None = None,
    rates: Mapping[str, Sequence[float]] | None = None,
    target_bpp: Sequence[float] | None = None,
    target_mode: str = "nearest",
    codec_options: Mapping[str, Mapping[str, Any]] | None = None,
    dataset_options: Mapping[str, Any] | None = None,
    metrics: str | Sequence[str] | None = None,
    task: str | None = None,
    task_options: Mapping[str, Any] | None = None,
    segmenter: str | None = None,
    segmenter_weights: str | None = None,
    segmenter_options: Mapping[str, Any] | None = None,
    device: str = "cpu",
    batch_size: int = 4,
    limit: int | None = None,
    workers: int | None = None,
    executor: Executor | None = None,
    resume: bool = False,
    download: bool = True,
    progress: Callable[[int, int, list[Record]], None] | None = None,
    on_start: Callable[[str, Path], None] | None = None,
    argv: Sequence[str] | None = None,
    references: Sequence[str] | None = None,
    anchor: str | None = None,
) -> RunResult:
    """Sweep codecs over a dataset, as ``bench run`` does; returns the run's result.

    The records and manifest come from ``bench.runner.run``; then the output stage
    (``bench.outputs.write_run_outputs``) writes aggregates, tables, ``bd.csv``, plots and
    ``report.html``, also when Ctrl-C, SIGTERM or an error stops the run (the exception is
    raised again once they are written).

    Args:
        codecs: names, as a list or comma-separated (``"jpeg,webp"``).
        dataset: a dataset name (``kodak``, ``clic``, ``cityscapes``, ``folder``);
            ``dataset_options`` its options (``data_dir``, ``split``, ``resolution``, ...).
        out: the run directory (default ``results/DATASET-TIMESTAMP``).
        rates: per codec, rate points in its own parameter (``{"jpeg": [10, 50, 90]}``).
        target_bpp, target_mode: instead of rates, bpp targets searched per image.
        codec_options: per codec, its options (``{"bpg": {"chroma": 444}}``).
        metrics: metric names (default ``psnr, ssim, ms-ssim``).
        task: a registered task (``bench list tasks``; ``"compression"`` or None for
            none), ``task_options`` its keyword options (segmentation: ``segmenter``,
            ``weights``, ``batch_size`` and the segmenter's own).
        segmenter, segmenter_weights, segmenter_options: the segmentation task's options
            spelled as before (they imply ``task="segmentation"``).
        device: where learned codecs and the task's model run; batch_size: the task's
            images per forward pass (both given to a task that takes them).
        workers: worker processes (default: CPU count; 0 codes in this process).
        executor: runs the jobs instead of the local pool (``bench.executors``).
        resume: continue the run in ``out``, or grow it: the records of codecs not in
            ``codecs`` are kept.
        download: whether data and weights may be downloaded.
        progress: called after each job with (jobs done, jobs total, its records).
        on_start: called with (dataset tag, run directory) once everything is planned,
            before anything is coded.
        argv: the command recorded in the manifest (default: this call).
        references: published curves drawn and compared beside the run's (names such as
            ``kodak/vtm`` or files; ``bench.references.resolve``), kept in the run
            directory's references.json (a resume without them keeps the stored ones).
        anchor: the codec (or reference curve) every other is compared with on the report's
            first screen (default: the first codec).

    Raises:
        UsageError: what ``bench run`` exits 2 for (unknown names, bad options).
    """
    from bench.codecs import CODECS
    from bench.codecs.base import option_names
    from bench.datasets import open_dataset
    from bench.executors import local
    from bench.metrics import create_metrics
    from bench.outputs import write_run_outputs
    from bench.runner import plan_codec, worker_imports
    from bench.runner import run as run_sweep
    from bench.tasks import NO_TASK, SEGMENTATION_TASKS, plan_task
    from bench.tasks.segmentation import SegmentationTask

    names = [c.strip() for c in (codecs.split(",") if isinstance(codecs, str) else codecs)]
    names = [n for n in names if n]
    if not names:
        raise UsageError("--codecs needs at least one codec name (see `bench list codecs`)")
    options = {name: dict((codec_options or {}).get(name, {})) for name in names}
    for name in [*(rates or {}), *(codec_options or {})]:
        if name not in names:
            raise UsageError(
                f"rates or options are given for {name!r}, which is not in --codecs / codecs"
            )
    for name in names:
        accepted = option_names(CODECS.load(name))
        if "device" in accepted:
            options[name].setdefault("device", device)
        if not download and "download" in accepted:
            options[name].setdefault("download", False)
    count = workers if workers is not None else (os.cpu_count() or 1)
    executor = executor or local(count)
    # A local pool starts importing the codecs' libraries now, while planning imports them here.
    executor.preload(
        worker_imports((CODECS.entry(name).target, CODECS.load(name).libraries) for name in names)
    )
    plans = [
        plan_codec(
            name,
            options[name],
            list((rates or {}).get(name, [])) or None,
            targets=list(target_bpp) if target_bpp else None,
            target_mode=target_mode,
        )
        for name in names
    ]
    opened_with = dict(dataset_options or {})
    if not download:
        opened_with["download"] = False
    data = open_dataset(dataset, opened_with)
    chosen = create_metrics(
        None if metrics is None else metrics.split(",") if isinstance(metrics, str) else metrics,
        device=device,
    )
    chosen_options = dict(task_options or {})
    if segmenter or segmenter_weights or segmenter_options:
        # The segmentation task's own spelling of its options.
        if task not in (None, "", NO_TASK, *SEGMENTATION_TASKS):
            raise UsageError(f"segmenter and its options need task={SegmentationTask.name!r}")
        task = task if task in SEGMENTATION_TASKS else SegmentationTask.name
        legacy = SegmentationTask.legacy_options(segmenter, segmenter_weights, segmenter_options)
        chosen_options = {**legacy, **chosen_options}
    planned_task = None
    if task not in (None, "", NO_TASK):
        planned_task = plan_task(task, chosen_options, device=device, batch_size=batch_size)
    elif chosen_options:
        raise UsageError("task options need a task (see `bench list tasks`)")
    published = resolve_references(references or (), dataset)
    anchor = check_anchor(anchor, names, published)
    out_dir = Path(out) if out is not None else default_out(data.tag)
    if on_start is not None:
        on_start(data.tag, out_dir)
    return run_sweep(
        data,
        plans,
        out_dir,
        workers=count,
        executor=executor,
        metrics=chosen,
        task=planned_task,
        limit=limit,
        resume=resume,
        progress=progress,
        argv=argv or ["bench.run", f"codecs={','.join(names)}", f"dataset={dataset}"],
        dataset_options=opened_with,
        finish=lambda result: write_run_outputs(
            keep_report_choices(result, published if references else None, anchor)
        ),
    )


def resolve_references(specs: Sequence[str], dataset: str | None = None) -> list[ReferenceCurve]:
    """The published curves ``specs`` name (``kodak/vtm``, ``vtm``, a file), in order.

    Raises:
        UsageError: a name or file that resolves to nothing.
    """
    from bench.references import resolve

    found: list[ReferenceCurve] = []
    for spec in specs:
        for curve in resolve(spec, dataset):
            if all(curve.label != known.label for known in found):
                found.append(curve)
    return found


def check_anchor(
    anchor: str | None, codecs: Sequence[str], references: Sequence[ReferenceCurve]
) -> str | None:
    """``anchor`` as the report names it (a reference curve's name becomes its label).

    Raises:
        UsageError: ``anchor`` is neither a codec of the run nor a reference curve.
    """
    if anchor is None:
        return None
    for curve in references:
        if anchor in (curve.name, curve.label):
            return curve.label
    if anchor in codecs:
        return anchor
    known = [*codecs, *(c.label for c in references)]
    raise UsageError(
        f"--anchor {anchor!r} is not a codec of this run; choose one of {', '.join(known)}"
    )


def keep_report_choices(
    result: RunResult, references: Sequence[ReferenceCurve] | None, anchor: str | None
) -> RunResult:
    """Store the run's reference curves (None: keep what the directory has) and anchor
    before its outputs are written."""
    from bench.references import write_references
    from bench.report.rundir import write_report_options

    if references is not None:
        write_references(references, result.directory)
    if anchor is not None:
        write_report_options(result.directory, anchor=anchor)
    return result


def default_out(tag: str) -> Path:
    """``results/TAG-YYYYmmdd-HHMMSS`` (``/`` and ``@`` of the tag as ``-``): in the checkout
    when bench runs from one, else in the current directory."""
    from bench.config import results_home

    stem = tag.replace("/", "-").replace("@", "-")
    return results_home() / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


@dataclass
class LoadedRun:
    """A run directory as DataFrames: one row per record and per aggregate, and its manifest.

    ``records`` holds the latest record per (image, codec, rate point), as the aggregates
    use them; ``aggregates`` is ``aggregates.csv`` (recomputed from the records where it is
    missing); ``bd`` is ``bd.csv`` (empty where there is none).
    """

    directory: Path
    records: pd.DataFrame
    aggregates: pd.DataFrame
    bd: pd.DataFrame
    manifest: RunManifest

    def compared(self, references: Sequence[str | ReferenceCurve] = ()) -> RunData:
        """The run as its report sees it, with ``references`` (names, files or curves) added
        to the curves it stores."""
        from bench.report import load_run

        run = load_run(self.directory)
        dataset = self.manifest.dataset.get("name") if self.manifest.dataset else None
        extra = [r for r in references if not isinstance(r, str)]
        extra += resolve_references([r for r in references if isinstance(r, str)], dataset)
        known = {c.label for c in run.references}
        run.references = [*run.references, *(c for c in extra if c.label not in known)]
        return run

    def plot(
        self,
        metric: str = "psnr_rgb_mean",
        references: Sequence[str | ReferenceCurve] = (),
        path: str | Path | None = None,
    ) -> Figure:
        """The R-D plot of ``metric`` (an aggregate column such as ``psnr_rgb_mean``, its
        record column ``psnr_rgb`` or its plot's name ``rd_psnr``) as a matplotlib figure,
        with the run's published curves and ``references`` dashed; saved to ``path`` when
        given (the format from its suffix).

        Raises:
            UsageError: the run has no plot of ``metric`` (the message lists those it has).
        """
        from bench.curves import rd_figure

        run = self.compared(references)
        plotted = [c for c in run.columns if c.plot is not None]
        column = next(
            (c for c in plotted if metric in (c.name, c.record, c.plot and c.plot.stem)), None
        )
        figure = rd_figure(run.curves, column, run.dataset_tag) if column else None
        if figure is None:
            known = ", ".join(c.name for c in plotted)
            raise UsageError(f"this run has no plot of {metric!r}; it has {known}")
        if path is not None:
            figure.savefig(Path(path), bbox_inches="tight")
        return figure

    def bd_table(
        self,
        anchor: str | None = None,
        references: Sequence[str | ReferenceCurve] = (),
        method: str = "pchip",
    ) -> pd.DataFrame:
        """Every codec's BD-rate (percent) against ``anchor`` (default: the report's anchor,
        else the first codec) per BD metric, and their mean: one row per codec, the anchor's
        row first with zeros (``bench.anchor.anchor_summary``)."""
        import pandas as pd

        from bench.anchor import anchor_summary

        run = self.compared(references)
        chosen = check_anchor(anchor, run.codecs, run.references) or run.anchor
        found = anchor_summary(run.curves, run.columns, chosen, method=method)
        names = [c.name for c in found.columns]
        lines = [{"codec": found.anchor, **dict.fromkeys(names, 0.0), "mean": 0.0}]
        for row in found.rows:
            values = {name: row.results[name].bd_rate for name in names}
            lines.append({"codec": row.codec, **values, "mean": row.mean_bd_rate})
        return pd.DataFrame(lines, columns=["codec", *names, "mean"]).set_index("codec")


def load(run_dir: str | Path) -> LoadedRun:
    """Read a run directory into pandas DataFrames.

    Raises:
        UsageError: ``run_dir`` is not a bench run directory.
    """
    import pandas as pd

    from bench.bjontegaard import BD_CSV
    from bench.curves import aggregate
    from bench.manifest import MANIFEST, RunManifest, read_manifest, rebuild_metrics, rebuild_task
    from bench.records import as_dict, columns, latest_per_key, read_csv, value_columns
    from bench.store import AGGREGATES_CSV, RECORDS_CSV

    directory = Path(run_dir)
    if not (directory / RECORDS_CSV).is_file():
        raise UsageError(
            f"{directory} has no {RECORDS_CSV}: it is not a bench run directory "
            "(make one with bench.run(...) or `bench run`)"
        )
    manifest = read_manifest(directory) if (directory / MANIFEST).is_file() else RunManifest()
    records = latest_per_key(read_csv(directory / RECORDS_CSV))
    names = columns(value_columns(records))
    frame = pd.DataFrame([as_dict(r) for r in records], columns=names)
    if (directory / AGGREGATES_CSV).is_file():
        aggregates = pd.read_csv(directory / AGGREGATES_CSV, float_precision="round_trip")
    else:
        rows = aggregate(records, rebuild_metrics(manifest), rebuild_task(manifest))
        aggregates = pd.DataFrame([row.row() for row in rows])
    bd_path = directory / BD_CSV
    bd = pd.read_csv(bd_path, float_precision="round_trip") if bd_path.is_file() else pd.DataFrame()
    return LoadedRun(directory, frame, aggregates, bd, manifest)
