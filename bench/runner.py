"""The sweep: every image x codec x rate point, coded, decoded, scored into records.

The runner plans jobs, hands them to an executor (``bench.executors``) and stores what comes
back, then returns; aggregates, tables, ``bd.csv``, plots and the report are the output
stage's (``bench.outputs``), which the API and the CLI run after it. Nothing here imports it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.codecs import CODECS, Codec, create_codec, default_rates
from bench.codecs.base import (
    TRAINING_FILES,
    OptionValue,
    bitstream_info,
    instantiate,
    weight_digests,
)
from bench.codecs.inputs import QUALITY_MAP, QualityMapSource, map_sha256
from bench.datasets import Dataset, Sample, SampleRef
from bench.errors import CodecError, CodecUnavailable, MetricUndefined, UsageError
from bench.executors import Executor, InProcess, local
from bench.lock import RunLock
from bench.manifest import (
    MANIFEST,
    CodecEntry,
    RunManifest,
    read_manifest,
    rebuild_task,
    task_entry,
    write_manifest,
)
from bench.metrics import Metric, create_metrics, metric_names
from bench.provenance import git_state, machine, now, software
from bench.records import ERROR, RATE_VALUE, TARGET_BPP, Record
from bench.registry import import_target
from bench.search import MODES, search_rate
from bench.store import AGGREGATES_CSV, Reason, RunStore
from bench.tasks.task import REFERENCE_CODEC, Coded, Task

log = logging.getLogger(__name__)

SIDE_COLUMNS = frozenset({"bpp_estimated", "header_bytes", "padding"})
"""What an encoder may measure beyond its bytes (``Bitstream.info``) that records keep."""


@dataclass(frozen=True)
class CodecPlan:
    """One codec of a run: its options, its sweep and what it reports about itself."""

    name: str
    target: str  # "module:Class", so a worker process can import a plugin codec directly
    options: Mapping[str, OptionValue]
    rates: tuple[float, ...]
    rate_param: str
    version: str
    usable: bool
    unusable_reason: str = ""
    provenance: Mapping[str, Any] = field(default_factory=dict)
    """What the codec reported when it prepared (e.g. checkpoint files and their SHA-256)."""
    targets: tuple[float, ...] = ()
    """Target bpps: each image's rate value is searched for (``rates`` is then empty)."""
    target_mode: str = "nearest"
    batch_size: int = 1
    """Images per job, coded together by ``Codec.encode_batch`` where their shapes agree."""
    input_source: QualityMapSource | None = None
    """For codecs with per-image inputs: where their quality map comes from."""
    weight_options: tuple[str, ...] = ()
    """The options that name weight files (``Codec.weight_options``)."""
    libraries: tuple[str, ...] = ()
    """Modules its coding imports that take long to import (``Codec.libraries``)."""

    @property
    def points(self) -> tuple[float, ...]:
        """The rate points of the sweep: the targets of a target-bpp run, else the rates."""
        return self.targets or self.rates

    def point_fields(self, point: float) -> dict[str, Any]:
        """Record fields that identify a rate point."""
        return {"target_bpp": point} if self.targets else {"rate": point}

    @property
    def options_json(self) -> str:
        return json.dumps(dict(self.options), sort_keys=True)

    @property
    def codec_input(self) -> str:
        return self.input_source.describe() if self.input_source else ""

    def identity(self, point: float) -> str:
        """The ``codec_identity`` of this codec's records at a rate point (see
        :func:`codec_identity`)."""
        return codec_identity(
            self.options, self.weight_options, self.provenance, point, bool(self.targets)
        )

    def codec_key(self, point: float) -> str:
        """What a record of this codec at ``point`` must have as its ``codec_key`` to count
        as made by this codec: its identity, or its options where it has none."""
        return self.identity(point) or self.options_json


def codec_identity(
    options: Mapping[str, Any],
    weight_options: Sequence[str],
    provenance: Mapping[str, Any],
    point: float,
    searched: bool = False,
) -> str:
    """A codec's options (JSON) with each option in ``weight_options`` replaced by
    ``sha256:<hash>`` of the weights ``prepare`` found for rate point ``point`` (the file of
    that rate point in a directory of checkpoints, the one file that serves them all, or, for
    a target-bpp search (``searched``) over several, the sorted list of them all).

    "" where nothing can stand for the weights: a codec without weight options, ``random``
    stand-ins, or a rate point without a checkpoint (its records fail).
    """
    if not weight_options:
        return ""
    digests = weight_digests(provenance)
    content: str | list[str]
    if "" in digests:
        content = f"sha256:{digests['']}"
    elif searched and digests:
        found = sorted({f"sha256:{d}" for d in digests.values()})
        content = found[0] if len(found) == 1 else found
    elif f"{point:g}" in digests:
        content = f"sha256:{digests[f'{point:g}']}"
    else:
        return ""
    named = dict(options)
    named.update({name: content for name in weight_options if name in named})
    return json.dumps(named, sort_keys=True)


def plan_segmenter(
    name: str, options: Mapping[str, Any] | None = None, batch_size: int = 4
) -> Task:
    """The segmentation task with a segmenter loaded once here, so that a bad checkpoint
    fails before the run starts (``plan_task("segmentation", ...)`` with the segmenter's
    options as they are: no device added).

    Raises:
        UsageError, WeightsError: unknown segmenter or option, unusable weights.
    """
    from bench.tasks.segmentation import SegmentationTask

    return SegmentationTask.plan(name, options, batch_size)


def plan_codec(
    name: str,
    options: Mapping[str, OptionValue] | None = None,
    rates: Sequence[float] | None = None,
    *,
    targets: Sequence[float] | None = None,
    target_mode: str = "nearest",
) -> CodecPlan:
    """Validate a codec's options and rates and fix its sweep, lowest quality first.

    With ``targets`` (bpp), the sweep is a search per image for each target instead
    (``target_mode`` ``nearest`` or ``not-above``); codecs with a single rate point (the
    uncompressed reference) keep their rates.

    Raises:
        UsageError: unknown codec, option or rate outside the codec's range, bad targets.
    """
    codec = create_codec(name, options)
    scale = codec.scale
    searched: tuple[float, ...] = ()
    if targets and scale.low != scale.high:
        if rates:
            raise UsageError(f"{name}: give --rates or --target-bpp, not both")
        if target_mode not in MODES:
            raise UsageError(f"--target-mode must be one of {', '.join(MODES)}")
        if any(not (t > 0 and math.isfinite(t)) for t in targets):
            raise UsageError(f"--target-bpp values must be positive, got {list(targets)}")
        searched = tuple(sorted(dict.fromkeys(float(t) for t in targets)))
    chosen = [] if searched else list(rates) if rates else default_rates(codec)
    checked = scale.by_quality(dict.fromkeys(scale.validate(r, name) for r in chosen))
    availability = codec.availability()
    usable = availability.usable
    reason = "" if usable else f"{availability.detail}; {availability.hint}"
    provenance: dict[str, Any] = {}
    if usable:
        try:
            provenance = codec.prepare(checked or _searchable(codec))
        except CodecUnavailable as exc:
            usable, reason = False, str(exc)
    return CodecPlan(
        name=name,
        target=CODECS.entry(name).target,
        options=codec.options,
        rates=tuple(checked),
        rate_param=scale.name,
        version=availability.detail if availability.usable else "",
        usable=usable,
        unusable_reason=reason,
        provenance=provenance,
        targets=searched,
        target_mode=target_mode,
        batch_size=max(1, int(getattr(codec, "batch_size", 1))),
        input_source=codec.input_source() if QUALITY_MAP in codec.inputs else None,
        weight_options=tuple(getattr(codec, "weight_options", ())),
        libraries=tuple(getattr(codec, "libraries", ())),
    )


def _searchable(codec: Codec) -> list[float]:
    """The rate values a target-bpp search may visit, when they are few enough to prepare."""
    points = codec.rate_points()
    if points is not None:
        return list(points)
    scale = codec.scale
    if scale.integer and scale.high - scale.low <= 16:
        return [float(v) for v in range(int(scale.low), int(scale.high) + 1)]
    return []


@dataclass(frozen=True)
class Job:
    """Images coded by one codec at the rate points still to do, scored by the run's
    metrics and task: one image, or a batch of them for codecs that take batches."""

    dataset: Dataset
    refs: tuple[SampleRef, ...]
    plan: CodecPlan
    points: tuple[float, ...]
    metrics: tuple[Metric, ...]
    task: Task | None = None

    def record(self, ref: SampleRef, point: float, **extra: Any) -> Record:
        """A fresh record of this job for one image and rate point."""
        return Record(
            dataset=ref.dataset,
            image_id=ref.id,
            codec=self.plan.name,
            codec_version=self.plan.version,
            codec_options=self.plan.options_json,
            codec_identity=self.plan.identity(point),
            rate_param=self.plan.rate_param,
            codec_input=self.plan.codec_input,
            metrics=metric_names(self.metrics),
            task=self.task.identity if self.task else "",
            **self.plan.point_fields(point),
            **extra,
        )

    def resources(self) -> dict[str, float]:
        """What the job needs of a machine (Ray's task options): a GPU when its codec or its
        task runs on CUDA, else one CPU."""
        devices = [str(self.plan.options.get("device", "cpu"))]
        if self.task is not None:
            devices.append(str(dict(getattr(self.task, "options", {})).get("device", "cpu")))
        if any(d.startswith("cuda") for d in devices):
            return {"num_cpus": 1.0, "num_gpus": 1.0}
        return {"num_cpus": 1.0}

    def failed(self, ref: SampleRef, message: str, **extra: Any) -> list[Record]:
        """Error records of one image at every rate point of the job."""
        return [
            self.record(ref, point, status=ERROR, error=message, **extra) for point in self.points
        ]


# --- worker side -----------------------------------------------------------------------------

_codec_cache: dict[tuple[str, str], Codec] = {}
_task_cache: dict[str, Task] = {}


def _codec_for(plan: CodecPlan) -> Codec:
    key = (plan.name, plan.options_json)
    if key not in _codec_cache:
        _codec_cache[key] = instantiate(import_target(plan.target), plan.options)
    return _codec_cache[key]


def _task_for(task: Task) -> Task:
    """One task object per identity in a process, so that its per-image caches (the
    uncompressed prediction) serve every codec and never another model."""
    return _task_cache.setdefault(task.identity, task)


@dataclass
class Measured:
    """One rate point of one image as coded: its record, and where coding worked the
    reconstruction and the bitstream (what the task scores)."""

    record: Record
    decoded: np.ndarray | None = None
    data: bytes = b""


@dataclass
class _Loaded:
    """One image of a job, read and prepared for every metric."""

    sample: Sample
    prepared: dict[str, Any]
    size: dict[str, Any]
    region: np.ndarray | None = None
    """The codec input's region of interest, for metrics that score with it (``roi``)."""


class _Scorer:
    """Fills a record from what a codec returned: rate, side information, times, metrics."""

    def __init__(self, codec: Codec, metrics: Sequence[Metric]) -> None:
        self.codec = codec
        self.metrics = metrics

    def __call__(
        self,
        item: _Loaded,
        record: Record,
        data: Any,
        decoded: Any,
        encode_s: float,
        decode_s: float,
    ) -> Measured:
        image = item.sample.image
        try:
            if not isinstance(data, bytes | bytearray):
                raise CodecError(
                    f"{self.codec.name}: encode returned {type(data).__name__}, not bytes"
                )
            if (
                not isinstance(decoded, np.ndarray)
                or decoded.dtype != np.uint8
                or decoded.shape != image.shape
            ):
                got = (
                    f"{decoded.dtype} {decoded.shape}"
                    if isinstance(decoded, np.ndarray)
                    else type(decoded).__name__
                )
                raise CodecError(
                    f"{self.codec.name}: decoder returned {got}, expected uint8 {image.shape}"
                )
            for key, value in bitstream_info(data).items():
                if key in SIDE_COLUMNS:
                    setattr(record, key, value)
            record.bytes = len(data)
            record.bpp = 8.0 * len(data) / (image.shape[0] * image.shape[1])
            record.sha256 = hashlib.sha256(data).hexdigest()
            record.encode_s, record.decode_s = encode_s, decode_s
            began = time.perf_counter()
            notes: list[str] = []
            for metric in self.metrics:
                for column in metric.record_columns:
                    record.values[column.name] = None
                prepared = item.prepared[metric.preparation_key]
                try:
                    record.values.update(
                        metric.score_with(prepared, decoded, {"roi": item.region})
                        if metric.inputs
                        else metric.score(prepared, decoded)
                    )
                except MetricUndefined as exc:
                    if str(exc) not in notes:
                        notes.append(str(exc))
            record.metrics_s = time.perf_counter() - began
            record.note = "; ".join(notes)
        except Exception as exc:  # a failing codec costs this record, never the run
            record.status, record.error = ERROR, f"{type(exc).__name__}: {exc}"
            return Measured(record)
        return Measured(record, decoded, bytes(data) if isinstance(data, bytearray) else data)


def _encode(codec: Codec, image: np.ndarray, rate: float, inputs: Mapping[str, Any]) -> bytes:
    return codec.encode_with(image, rate, inputs) if inputs else codec.encode(image, rate)


def _measure(
    codec: Codec,
    score: _Scorer,
    item: _Loaded,
    rate: float,
    record: Record,
    inputs: Mapping[str, Any],
) -> Measured:
    """Code, decode and score one rate point; returns the record, the reconstruction and the
    bitstream."""
    try:
        start = time.perf_counter()
        data = _encode(codec, item.sample.image, rate, inputs)
        encoded = time.perf_counter()
        decoded = codec.decode(data)
        finished = time.perf_counter()
    except Exception as exc:  # a failing codec costs this record, never the run
        record.status, record.error = ERROR, f"{type(exc).__name__}: {exc}"
        return Measured(record)
    return score(item, record, data, decoded, encoded - start, finished - encoded)


def _measure_batch(
    codec: Codec, score: _Scorer, items: list[_Loaded], rate: float, records: list[Record]
) -> list[Measured]:
    """Code same-shaped images together at one rate point (``Codec.encode_batch``); each
    record gets the batch's wall-clock time divided by its size."""
    try:
        start = time.perf_counter()
        coded = codec.encode_batch([item.sample.image for item in items], rate)
        encoded = time.perf_counter()
        decoded = codec.decode_batch(coded)
        finished = time.perf_counter()
        if len(coded) != len(items) or len(decoded) != len(items):
            raise CodecError(f"{codec.name}: a batch of {len(items)} gave {len(coded)} bitstreams")
    except Exception:  # retry one by one, so that only the image at fault fails
        return [
            _measure(codec, score, item, rate, record, {})
            for item, record in zip(items, records, strict=True)
        ]
    share = len(items)
    return [
        score(
            item, record, data, image_hat, (encoded - start) / share, (finished - encoded) / share
        )
        for item, record, data, image_hat in zip(items, records, coded, decoded, strict=True)
    ]


def _measure_target(
    codec: Codec,
    score: _Scorer,
    plan: CodecPlan,
    item: _Loaded,
    target: float,
    record: Record,
) -> Measured:
    """Search the rate value for a target bpp on this image, then measure it like any rate
    point; the record keeps the target, the chosen value and, in ``note``, the search."""
    image = item.sample.image
    pixels = image.shape[0] * image.shape[1]
    try:
        result = search_rate(
            lambda rate: 8.0 * len(codec.encode(image, rate)) / pixels,
            codec.scale,
            target,
            mode=plan.target_mode,  # type: ignore[arg-type]
            first_guess=codec.rate_for_bpp(target),
            candidates=codec.rate_points(),
        )
    except Exception as exc:  # a failing codec costs this record, never the run
        record.status, record.error = ERROR, f"target-bpp search: {type(exc).__name__}: {exc}"
        return Measured(record)
    if result.rate is None:
        record.status, record.error = ERROR, result.note
        return Measured(record)
    record.rate = result.rate
    measured = _measure(codec, score, item, result.rate, record, {})
    searched = f"searched {len(result.probes)} {plan.rate_param} values"
    record.note = "; ".join(n for n in (record.note, searched, result.note) if n)
    return measured


def _inputs(job: Job, item: _Loaded, point: float, record: Record) -> dict[str, Any]:
    """The codec's per-image inputs at a rate point; their hash goes into the record."""
    source = job.plan.input_source
    if source is None:
        return {}
    quality_map = source.build(item.sample, tuple(job.dataset.class_names), point)
    record.input_sha256 = map_sha256(quality_map)
    return {QUALITY_MAP: quality_map}


def _load(job: Job, ref: SampleRef) -> _Loaded:
    with_label = job.task is not None and job.task.needs_labels
    source = job.plan.input_source
    sample = job.dataset.load(ref, with_label=with_label or bool(source and source.needs_labels))
    prepared: dict[str, Any] = {}
    for metric in job.metrics:
        if metric.preparation_key not in prepared:
            prepared[metric.preparation_key] = metric.prepare(sample.image)
    size = {
        "height": sample.image.shape[0],
        "width": sample.image.shape[1],
        "conversion": sample.conversion,
    }
    region = None
    if source is not None and any("roi" in metric.inputs for metric in job.metrics):
        region = source.region(sample, tuple(job.dataset.class_names))
    return _Loaded(sample, prepared, size, region)


def execute(job: Job) -> list[Record]:
    """Code a job's images at every rate point, score them; failures become error records.

    Same-shaped images go through ``Codec.encode_batch`` together when the codec takes
    batches (``batch_size`` > 1); target-bpp searches and codecs with per-image inputs run
    image by image.
    """
    plan = job.plan
    if not plan.usable:
        message = f"{plan.name} is not usable here: {plan.unusable_reason}"
        return [r for ref in job.refs for r in job.failed(ref, message)]
    records: list[Record] = []
    loaded: dict[str, _Loaded] = {}
    refs = {ref.id: ref for ref in job.refs}
    needs_labels = job.task is not None and job.task.needs_labels
    for ref in job.refs:
        try:
            item = _load(job, ref)
        except Exception as exc:
            records += job.failed(ref, f"{type(exc).__name__}: {exc}")
            continue
        if needs_labels and item.sample.label is None:
            records += job.failed(
                ref,
                f"{ref.path} has no label map; the {job.task.name if job.task else ''} task "
                "needs one for every image (cityscapes train/val, or folder with --label-dir)",
                **item.size,
            )
            continue
        loaded[ref.id] = item
    try:
        codec = _codec_for(plan)
    except Exception as exc:
        for image_id, item in loaded.items():
            records += job.failed(refs[image_id], f"{type(exc).__name__}: {exc}", **item.size)
        return records
    score = _Scorer(codec, job.metrics)
    one_by_one = bool(plan.targets) or plan.input_source is not None
    measured: dict[str, list[Measured]] = {i: [] for i in loaded}
    for group in _same_shape(loaded, 1 if one_by_one else codec.batch_size):
        for point in job.points:
            fresh = [job.record(refs[i], point, **loaded[i].size) for i in group]
            if plan.targets:
                results = [
                    _measure_target(codec, score, plan, loaded[i], point, record)
                    for i, record in zip(group, fresh, strict=True)
                ]
            elif len(group) == 1:
                item, record = loaded[group[0]], fresh[0]
                try:
                    inputs = _inputs(job, item, point, record)
                except Exception as exc:  # a missing mask costs this record
                    record.status, record.error = ERROR, f"{type(exc).__name__}: {exc}"
                    results = [Measured(record)]
                else:
                    results = [_measure(codec, score, item, point, record, inputs)]
            else:
                results = _measure_batch(codec, score, [loaded[i] for i in group], point, fresh)
            for image_id, result in zip(group, results, strict=True):
                measured[image_id].append(result)
    for image_id, results in measured.items():
        if job.task is not None:
            _score_task(_task_for(job.task), loaded[image_id].sample, results, codec)
        records += [result.record for result in results]
    return records


def _score_task(task: Task, sample: Sample, measured: list[Measured], codec: Codec) -> None:
    """The task's columns for every reconstruction of one image."""
    todo = [result for result in measured if result.decoded is not None]
    if not todo:
        return
    for result in todo:
        result.record.values.update({column.name: None for column in task.record_columns})
    try:
        scored = task.score_coded(
            sample, [Coded(r.data, r.decoded) for r in todo if r.decoded is not None], codec
        )
        for result, values in zip(todo, scored, strict=True):
            result.record.values.update(values)
    except Exception as exc:  # a failing model costs these records, never the run
        for result in todo:
            result.record.status = ERROR
            result.record.error = f"{task.name} failed: {type(exc).__name__}: {exc}"


def _same_shape(loaded: Mapping[str, _Loaded], batch_size: int) -> list[list[str]]:
    """Image ids in groups of at most ``batch_size`` sharing one shape, in job order."""
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for image_id, item in loaded.items():
        by_shape.setdefault(item.sample.image.shape, []).append(image_id)
    size = max(1, batch_size)
    return [ids[i : i + size] for ids in by_shape.values() for i in range(0, len(ids), size)]


def crashed(job: Job, detail: str) -> list[Record]:
    """Error records of a job whose worker process died."""
    names = ", ".join(ref.id for ref in job.refs)
    message = (
        f"the worker process died while coding {names} with {job.plan.name} ({detail}); "
        "the codec crashed on this input"
    )
    return [r for ref in job.refs for r in job.failed(ref, message)]


# --- planning and the run --------------------------------------------------------------------


@dataclass
class RunResult:
    """What a finished (or interrupted) run left behind: its records (sorted, the latest per
    slot) and what the output stage (``bench.outputs.write_run_outputs``) needs to derive
    aggregates, tables, ``bd.csv``, plots and the report from them.

    ``plots`` is empty until the output stage has drawn them. A run stopped by an exception
    (Ctrl-C, SIGTERM, a full disk) carries its result on that exception: see
    :func:`stopped_run`.
    """

    directory: Path
    records: list[Record]
    status: str
    metrics: tuple[Metric, ...] = ()
    task: Task | None = None
    dataset_tag: str = ""
    plots: list[Path] = field(default_factory=list)

    @property
    def aggregates_csv(self) -> Path:
        """Where the output stage writes the aggregates."""
        return self.directory / AGGREGATES_CSV


_STOPPED_RUN = "bench_run_result"


def stopped_run(exc: BaseException) -> RunResult | None:
    """The result of the run that ``exc`` stopped (interrupted or failed), its records and
    manifest closed before ``exc`` left :func:`run`; None when no run was closed (``exc`` came
    from elsewhere, or closing the run directory failed too)."""
    found = getattr(exc, _STOPPED_RUN, None)
    return found if isinstance(found, RunResult) else None


def _input_hashes(
    dataset: Dataset, ref: SampleRef, plan: CodecPlan, with_label: bool
) -> dict[float, str]:
    """The hash of the quality map each rate point of ``plan`` will give ``ref`` (for a
    resume to tell whether a stored record was made with the same map)."""
    source = plan.input_source
    if source is None:
        return {}
    try:
        sample = dataset.load(ref, with_label=with_label or source.needs_labels)
        names = tuple(dataset.class_names)
        return {p: map_sha256(source.build(sample, names, p)) for p in plan.points}
    except Exception:  # the job will fail and say why
        return {}


def _plan_jobs(
    dataset: Dataset,
    refs: Sequence[SampleRef],
    plans: Sequence[CodecPlan],
    metrics: tuple[Metric, ...],
    task: Task | None,
    done: set[tuple[Any, ...]],
) -> list[Job]:
    """Jobs for everything not done yet: per image and codec, or batches of images for
    codecs that take batches."""
    jobs: list[Job] = []
    waiting: dict[str, list[tuple[SampleRef, tuple[float, ...]]]] = {}
    done_codecs = {key[2] for key in done}

    def flush(plan: CodecPlan) -> None:
        batch = waiting.pop(plan.name, [])
        if batch:
            refs_ = tuple(r for r, _ in batch)
            jobs.append(Job(dataset, refs_, plan, batch[0][1], metrics, task))

    for ref in refs:
        for plan in plans:
            probe = Job(dataset, (ref,), plan, plan.points, metrics, task)
            hashes = (
                _input_hashes(dataset, ref, plan, bool(task and task.needs_labels))
                if plan.input_source is not None and plan.name in done_codecs
                else {}
            )
            todo = tuple(
                p
                for p in plan.points
                if probe.record(ref, p, input_sha256=hashes.get(p, "")).key not in done
            )
            if not todo:
                continue
            if plan.batch_size <= 1 or plan.targets or plan.input_source is not None:
                jobs.append(Job(dataset, (ref,), plan, todo, metrics, task))
                continue
            if waiting.get(plan.name) and waiting[plan.name][0][1] != todo:
                flush(plan)
            waiting.setdefault(plan.name, []).append((ref, todo))
            if len(waiting[plan.name]) == plan.batch_size:
                flush(plan)
    for plan in plans:
        flush(plan)
    return jobs


def run(
    dataset: Dataset,
    plans: Sequence[CodecPlan],
    out_dir: Path,
    *,
    workers: int = 0,
    executor: Executor | None = None,
    metrics: Sequence[Metric] | None = None,
    task: Task | None = None,
    limit: int | None = None,
    resume: bool = False,
    argv: Iterable[str] | None = None,
    progress: Callable[[int, int, list[Record]], None] | None = None,
    dataset_options: Mapping[str, Any] | None = None,
    finish: Callable[[RunResult], RunResult] | None = None,
) -> RunResult:
    """Sweep ``plans`` over ``dataset`` into ``out_dir``: records and the manifest. What is
    derived from the records (aggregates, tables, ``bd.csv``, plots, the report) is the output
    stage's: ``bench.run`` and ``bench run`` pass ``finish=bench.outputs.write_run_outputs``,
    which runs while the run directory is still locked, also after an interruption.

    An exception that stops the sweep (``KeyboardInterrupt``, a full disk) propagates once the
    records finished so far and the manifest (``interrupted`` or ``failed``) are written; it
    carries the run's result (:func:`stopped_run`) for the output stage.

    With a ``task`` (e.g. segmentation) every reconstruction is also given to it and scored,
    and the uncompressed images (codec ``none``) are added as its reference.

    Args:
        workers: processes to code in (the default executor); 0 codes in this process.
        executor: runs the jobs instead (``bench.executors``); started before ``out_dir`` is
            made, so one that cannot start (no cluster) leaves nothing there.
        metrics: what to score (default: PSNR, SSIM, MS-SSIM).
        limit: only the first N images of the dataset.
        resume: continue a run in ``out_dir``, redoing only what did not succeed or was
            made under other options, metrics, inputs or task; the records of codecs not in
            ``plans`` are kept where they stand beside this run's (growing a run).
        progress: called after each job with (jobs done, jobs total, its records).
        dataset_options: the options ``dataset`` was opened with (kept in the manifest so
            that the report can reopen it).
        finish: called with the result (of a finished run, or of the records an interrupted
            or failed run kept) before the run directory is unlocked; returns the result.
    """
    if limit is not None and limit < 1:
        raise UsageError(f"limit must be at least 1 image, got {limit}")
    if workers < 0:
        raise UsageError(f"workers must be 0 (in-process) or more, got {workers}")
    chosen = tuple(metrics) if metrics is not None else tuple(create_metrics())
    if task is not None:
        task.check(dataset)
        if not any(p.name == task.reference_codec for p in plans):
            plans = [plan_codec(task.reference_codec), *plans]
    for plan in plans:
        if plan.input_source is not None:
            plan.input_source.check(tuple(dataset.class_names), dataset.tag)
    if executor is not None:
        executor.start()  # an executor that cannot start leaves no run directory behind
    check_out_dir(out_dir)
    with RunLock(out_dir):
        try:
            result = _run(
                dataset, plans, out_dir, workers, executor, chosen, task, limit, resume, argv,
                progress, dataset_options,
            )  # fmt: skip
        except BaseException as exc:  # interrupted or failed: finish what it kept, re-raise
            stopped = stopped_run(exc)
            if stopped is not None and finish is not None:
                finish(stopped)
            raise
        return finish(result) if finish is not None else result


def _run(
    dataset: Dataset,
    plans: Sequence[CodecPlan],
    out_dir: Path,
    workers: int,
    executor: Executor | None,
    chosen: tuple[Metric, ...],
    task: Task | None,
    limit: int | None,
    resume: bool,
    argv: Iterable[str] | None,
    progress: Callable[[int, int, list[Record]], None] | None,
    dataset_options: Mapping[str, Any] | None,
) -> RunResult:
    """``run`` with the checks done and the run directory locked."""
    refs = dataset.refs()[:limit] if limit is not None else dataset.refs()
    warnings = training_leaks(refs, plans, task)
    for warning in warnings:
        log.warning("%s", warning)
    value_columns = [c.name for m in chosen for c in m.record_columns]
    if task is not None:
        value_columns += [c.name for c in task.record_columns]
    earlier = _earlier_manifest(out_dir) if resume else None
    adopt = _adopt_older_records(earlier, plans, task) if resume else None
    store = RunStore(out_dir, resume=resume, value_columns=value_columns, adopt=adopt)
    scope = _Scope.of(refs, plans, chosen, task, _kept_codecs(earlier, plans, store.records))
    done = store.done_keys()
    jobs = _plan_jobs(dataset, refs, plans, chosen, task, done)
    runner = executor or local(workers)
    manifest = RunManifest(
        command=" ".join(argv if argv is not None else sys.argv),
        started=now(),
        status="running",
        resumed=resume and bool(done),
        software=software(),
        git=git_state(),
        machine=machine(),
        dataset=dict(dataset.provenance()),
        dataset_options={k: v for k, v in (dataset_options or {}).items() if k != "download"},
        images=[ref.id for ref in refs],
        image_files={ref.id: str(ref.path) for ref in refs},
        label_files={ref.id: str(ref.label_path) for ref in refs if ref.label_path},
        workers=workers,
        executor=runner.name,
        metrics=[m.name for m in chosen],
        metric_provenance={m.name: m.provenance() for m in chosen if m.provenance()},
        task=task_entry(task),
        codecs=_codec_entries(plans, earlier, scope.kept),
    )
    manifest.warnings = warnings
    write_manifest(store.directory, manifest)
    for plan in plans:
        if not plan.usable:
            log.warning("%s is not usable here: %s", plan.name, plan.unusable_reason)
    libraries = preloaded(plans)
    runner.preload(libraries)
    if jobs and not isinstance(runner, InProcess):
        # The sweep runs in other processes; this one waits. Import what the outputs need
        # meanwhile (matplotlib, pyarrow and pandas: about a second; the codecs' libraries,
        # with which the report codes its crops again), not after the last job.
        threading.Thread(
            target=_import_output_libraries,
            args=(libraries,),
            name="bench-prefetch",
            daemon=True,
        ).start()
    try:
        stream = runner.map(jobs, execute, crashed)
        for count, records in enumerate(stream, start=1):
            store.add(records)
            if progress:
                progress(count, len(jobs), records)
    except KeyboardInterrupt as exc:
        _finish_after_failure(exc, store, manifest, "interrupted", refs, scope, chosen, task)
        raise
    except BaseException as exc:  # e.g. the disk filled up: keep what was written, say so
        _finish_after_failure(exc, store, manifest, "failed", refs, scope, chosen, task)
        raise
    return _finish(store, manifest, "finished", refs, scope, chosen, task)


def _plan_entry(plan: CodecPlan) -> CodecEntry:
    """What the manifest records about a planned codec."""
    return CodecEntry(
        version=plan.version,
        options=dict(plan.options),
        target=plan.target,
        rate_param=plan.rate_param,
        rates=list(plan.rates),
        target_bpp=list(plan.targets),
        target_mode=plan.target_mode if plan.targets else None,
        usable=plan.usable,
        unusable_reason=plan.unusable_reason,
        codec_input=plan.codec_input,
        provenance=dict(plan.provenance),
    )


def _codec_entries(
    plans: Sequence[CodecPlan], earlier: RunManifest | None, kept: Mapping[str, CodecEntry]
) -> dict[str, CodecEntry]:
    """The manifest's codecs: those of the earlier manifest that this run sweeps or keeps,
    in the earlier order (so that a grown run's table and plots keep their order), then the
    plan's new ones in the plan's order. A planned codec has this run's entry, a kept one
    its earlier entry."""
    planned = {plan.name: _plan_entry(plan) for plan in plans}
    listed = earlier.codecs if earlier is not None else {}
    before = [name for name in listed if name in planned or name in kept]
    names = dict.fromkeys([*before, *planned])
    return {name: planned[name] if name in planned else kept[name] for name in names}


def _earlier_manifest(out_dir: Path) -> RunManifest | None:
    """The manifest a resumed run directory holds before this run replaces it; None when it
    has none or it cannot be read."""
    if not (out_dir / MANIFEST).is_file():
        return None
    try:
        return read_manifest(out_dir)
    except UsageError as exc:
        log.warning("%s; records of codecs this run does not sweep are set aside", exc)
        return None


def _kept_codecs(
    earlier: RunManifest | None, plans: Sequence[CodecPlan], records: Iterable[Record]
) -> dict[str, CodecEntry]:
    """The earlier manifest's entries of codecs that hold records in the run directory but
    are not in this run's plan: a resume that adds a codec keeps them (growing a run)."""
    if earlier is None:
        return {}
    planned = {plan.name for plan in plans}
    stored = {record.codec for record in records} - planned
    return {name: entry for name, entry in earlier.codecs.items() if name in stored}


def _entry_points(entry: CodecEntry) -> tuple[str, list[float]]:
    """The kind of rate point (``TARGET_BPP`` or ``RATE_VALUE``) and the points a manifest
    entry's codec was swept at."""
    if entry.target_bpp:
        return TARGET_BPP, [float(p) for p in entry.target_bpp]
    return RATE_VALUE, [float(p) for p in entry.rates]


@dataclass(frozen=True)
class _Scope:
    """What a record must match to stay in the run directory after this run: one of this
    run's images, its metrics and task, and its codec's options and rate points: those of
    this run's plan, or for a codec it keeps without sweeping it (``kept``), those the
    earlier manifest records. Everything else is set aside (``RunStore.keep_only``)."""

    images: frozenset[tuple[str, str]]
    plans: Mapping[str, CodecPlan]
    kept: Mapping[str, CodecEntry]
    metrics: str
    task: str

    @classmethod
    def of(
        cls,
        refs: Sequence[SampleRef],
        plans: Sequence[CodecPlan],
        metrics: Sequence[Metric],
        task: Task | None,
        kept: Mapping[str, CodecEntry],
    ) -> _Scope:
        images = frozenset((ref.dataset, ref.id) for ref in refs)
        planned = {plan.name: plan for plan in plans}
        return cls(images, planned, kept, metric_names(metrics), task.identity if task else "")

    def conflict(self, record: Record) -> Reason | None:
        """Why ``record`` cannot stay (checked in this order: image, rate point, codec
        options, metrics, task), None when it can."""
        if (record.dataset, record.image_id) not in self.images:
            return Reason.OTHER_IMAGES
        reason = self._codec_conflict(record)
        if reason is not None:
            return reason
        if record.metrics != self.metrics:
            return Reason.OTHER_METRICS
        if record.task != self.task:
            return Reason.OTHER_TASK
        return None

    def _codec_conflict(self, record: Record) -> Reason | None:
        plan = self.plans.get(record.codec)
        if plan is not None:
            kind = TARGET_BPP if plan.targets else RATE_VALUE
            if record.point_kind != kind or record.point not in plan.points:
                return Reason.OTHER_POINTS
            same = record.codec_key == plan.codec_key(record.point)
            return None if same else Reason.OTHER_OPTIONS
        entry = self.kept.get(record.codec)
        if entry is None:
            return Reason.UNDESCRIBED
        kind, points = _entry_points(entry)
        if record.point_kind != kind or record.point not in points:
            return Reason.OTHER_POINTS
        same = _options_of(record) == entry.options
        return None if same else Reason.OTHER_OPTIONS

    def missing_of_kept(self, records: Sequence[Record]) -> dict[str, tuple[int, int]]:
        """For each kept codec whose records do not cover this run's images at every rate
        point of its entry: (records it has, records it would need)."""
        short: dict[str, tuple[int, int]] = {}
        for name, entry in self.kept.items():
            have = {r.slot for r in records if r.codec == name}
            if not have:
                continue
            need = len(self.images) * len(_entry_points(entry)[1])
            if len(have) < need:
                short[name] = (len(have), need)
        return short


def _options_of(record: Record) -> Any:
    """A record's codec options as a JSON value (None where they are not JSON)."""
    try:
        return json.loads(record.codec_options or "null")
    except ValueError:
        return None


def _adopt_older_records(
    earlier: RunManifest | None, plans: Sequence[CodecPlan], task: Task | None
) -> Callable[[Record], bool]:
    """What completes the records of an older bench version for a resume: their
    ``codec_identity`` (records without one, made under the options the run directory's last
    manifest names, get it from the weights' SHA-256 that manifest recorded) and their task
    identity (an earlier identity of the same task becomes this one's). Records it cannot
    match keep what they have, and a resume redoes them. Returns whether it changed one.
    ``earlier`` is the run directory's last manifest (None when it has none)."""
    tasks: dict[str, str] = {}
    if task is not None:
        tasks.update(dict.fromkeys(task.previous_identities(), task.identity))
        if earlier is not None and earlier.task is not None and earlier.task.identity:
            try:
                rebuilt = rebuild_task(earlier)
            except Exception:  # a task not installed here: its records are redone
                rebuilt = None
            if rebuilt is not None and rebuilt.identity == task.identity:
                tasks[earlier.task.identity] = task.identity
    tasks.pop(task.identity if task else "", None)
    weighted = {p.name: p.weight_options for p in plans if p.weight_options}
    entries = earlier.codecs if earlier is not None else {}

    def adopt(record: Record) -> bool:
        changed = False
        if record.task in tasks:
            record.task, changed = tasks[record.task], True
        entry, options = entries.get(record.codec), weighted.get(record.codec)
        if record.codec_identity or entry is None or not options:
            return changed
        try:
            same = json.loads(record.codec_options or "null") == entry.options
        except ValueError:
            same = False
        if same:
            record.codec_identity = codec_identity(
                entry.options, options, entry.provenance, record.point, bool(entry.target_bpp)
            )
            changed = changed or bool(record.codec_identity)
        return changed

    return adopt


def preloaded(plans: Sequence[CodecPlan]) -> tuple[str, ...]:
    """The modules every worker of a sweep of ``plans`` imports (``worker_imports``)."""
    return worker_imports((plan.target, plan.libraries) for plan in plans if plan.usable)


def worker_imports(codecs: Iterable[tuple[str, Sequence[str]]]) -> tuple[str, ...]:
    """For codecs given as (registry target, ``Codec.libraries``): where some has slow
    libraries, those, the runner and each codec's module, which a local pool imports once
    for all its workers; else none (a spawned worker imports what it needs in a second)."""
    chosen = list(codecs)
    if not any(libraries for _, libraries in chosen):
        return ()
    modules = [__name__]
    for target, libraries in chosen:
        modules += [target.partition(":")[0], *libraries]
    return tuple(dict.fromkeys(modules))


def _import_output_libraries(libraries: Sequence[str] = ()) -> None:
    """Import the libraries that ``_finish`` and then the output stage write with, and the
    codecs' ``libraries`` (the report codes its crops again); a failure is left for them to
    report."""
    for name in libraries:
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    with contextlib.suppress(Exception):
        import matplotlib.backends.backend_agg
        import matplotlib.backends.backend_svg
        import matplotlib.figure  # noqa: F401
        import pyarrow
        import pyarrow.parquet

        pyarrow.array([0.0])  # pyarrow imports pandas on first use


def _finish_after_failure(
    exc: BaseException,
    store: RunStore,
    manifest: RunManifest,
    status: str,
    refs: list[SampleRef],
    scope: _Scope,
    metrics: Sequence[Metric],
    task: Task | None,
) -> None:
    """Close an interrupted or failed run as well as the machine allows: the records already
    written stay, the manifest says ``status``; a failure here (a full disk) is logged, never
    raised over the one that stopped the run. The result rides on ``exc`` (:func:`stopped_run`)."""
    try:
        result = _finish(store, manifest, status, refs, scope, metrics, task)
    except Exception as error:
        log.error("could not finish the run directory %s (%s): %s", store.directory, status, error)
        return
    with contextlib.suppress(Exception):  # an exception that takes no attributes
        setattr(exc, _STOPPED_RUN, result)


def check_out_dir(out_dir: Path) -> None:
    """Refuse a run directory that cannot be one, before anything is coded.

    Raises:
        UsageError: ``out_dir`` is a file, or cannot be created or written (naming why).
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file, not a directory; choose a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"--out {out_dir} cannot be created ({exc.strerror or exc}); choose a writable place"
        ) from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out_dir} is not writable; choose a writable place")


def training_leaks(
    refs: Sequence[SampleRef], plans: Sequence[CodecPlan], task: Task | None = None
) -> list[str]:
    """Warnings for codecs, and the task's model, whose weights were trained on images this
    run scores (compared by the SHA-256 of the files, so another resolution of the same frame
    counts too); a task reports its training files under ``TRAINING_FILES`` in its
    ``provenance()``."""
    trained = {
        plan.name: set(plan.provenance.get(TRAINING_FILES) or ())
        for plan in plans
        if plan.provenance.get(TRAINING_FILES)
    }
    if task is not None:
        provenance = task.provenance()
        if files := provenance.get(TRAINING_FILES):
            model = f"the {task.name} model {provenance.get('name') or ''}".rstrip()
            trained[model] = {str(f) for f in files}
    if not trained:
        return []
    from bench.download import sha256_of

    scored: dict[str, str] = {}
    for ref in refs:
        try:
            scored[sha256_of(ref.path)] = ref.id
        except OSError:  # an unreadable file fails its own records later
            continue
    warnings = []
    for name, files in trained.items():
        overlap = sorted(scored[h] for h in files & set(scored))
        if overlap:
            shown = ", ".join(overlap[:5]) + (
                f" and {len(overlap) - 5} more" if len(overlap) > 5 else ""
            )
            warnings.append(
                f"{name} was trained on {len(overlap)} of the {len(refs)} images this run scores "
                f"({shown}): its numbers on them are not a fair test (train on another split)"
            )
    return warnings


def _finish(
    store: RunStore,
    manifest: RunManifest,
    status: str,
    refs: list[SampleRef],
    scope: _Scope,
    metrics: Sequence[Metric],
    task: Task | None,
) -> RunResult:
    """Close the records (setting aside what this run does not cover, and saying so in the
    log and the manifest's warnings), write them sorted as Parquet, and the final manifest
    (without the kept codecs that kept no record)."""
    store.close()
    set_aside = store.keep_only(scope.conflict)
    held = {record.codec for record in store.records}
    manifest.codecs = {
        name: entry
        for name, entry in manifest.codecs.items()
        if name in scope.plans or name in held
    }
    notes = [*set_aside.messages(), *_kept_short(scope, store.records)]
    for message in notes:
        log.warning("%s", message)
    manifest.warnings = [*manifest.warnings, *notes]
    records = sorted(store.final_records(), key=_record_order(manifest, refs))
    store.records = records
    store.write_parquet()
    failed = sum(1 for r in records if not r.ok)
    manifest.status, manifest.ended = status, now()
    manifest.records = {"ok": len(records) - failed, "error": failed}
    write_manifest(store.directory, manifest)
    return RunResult(store.directory, records, status, tuple(metrics), task, manifest.dataset_tag)


def _kept_short(scope: _Scope, records: Sequence[Record]) -> list[str]:
    """Warnings for codecs kept from earlier runs whose records do not cover this run's
    images at each of their rate points."""
    return [
        f"{name} was kept from an earlier run of this directory without being swept by this "
        f"one, and has {have} of the {need} records (image x rate point) this run's images "
        f"need: its aggregates cover those only (add {name} to --codecs to do the rest)"
        for name, (have, need) in scope.missing_of_kept(records).items()
    ]


def _record_order(
    manifest: RunManifest, refs: Sequence[SampleRef]
) -> Callable[[Record], tuple[int, int, int]]:
    """Sort key of the final records: the manifest's codec order, each codec's rate order,
    then the run's image order."""
    image_order = {ref.id: i for i, ref in enumerate(refs)}
    codec_order = {name: i for i, name in enumerate(manifest.codecs)}
    rate_order = {
        (name, point): i
        for name, entry in manifest.codecs.items()
        for i, point in enumerate(_entry_points(entry)[1])
    }
    return lambda r: (
        codec_order.get(r.codec, len(codec_order)),
        rate_order.get((r.codec, r.point), 0),
        image_order.get(r.image_id, len(image_order)),
    )


__all__ = [
    "REFERENCE_CODEC",
    "CodecPlan",
    "Job",
    "RunResult",
    "crashed",
    "execute",
    "plan_codec",
    "plan_segmenter",
    "preloaded",
    "run",
    "stopped_run",
    "worker_imports",
]
