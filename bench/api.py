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

    from bench.executors import Executor
    from bench.manifest import RunManifest
    from bench.records import Record
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

    Raises:
        UsageError: what ``bench run`` exits 2 for (unknown names, bad options).
    """
    from bench.codecs import CODECS
    from bench.codecs.base import option_names
    from bench.datasets import open_dataset
    from bench.executors import local
    from bench.metrics import create_metrics
    from bench.outputs import write_run_outputs
    from bench.runner import plan_codec
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
    count = workers if workers is not None else (os.cpu_count() or 1)
    out_dir = Path(out) if out is not None else default_out(data.tag)
    if on_start is not None:
        on_start(data.tag, out_dir)
    return run_sweep(
        data,
        plans,
        out_dir,
        workers=count,
        executor=executor or local(count),
        metrics=chosen,
        task=planned_task,
        limit=limit,
        resume=resume,
        progress=progress,
        argv=argv or ["bench.run", f"codecs={','.join(names)}", f"dataset={dataset}"],
        dataset_options=opened_with,
        finish=write_run_outputs,
    )


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
