"""The sweep: every image x codec x rate point, coded, decoded and scored into records."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.codecs import CODECS, Codec, create_codec, default_rates
from bench.codecs.base import OptionValue, RateScale, instantiate
from bench.curves import REFERENCE_CODEC, write_outputs
from bench.datasets import Dataset, Sample, SampleRef
from bench.errors import CodecError, CodecUnavailable, MetricUndefined, UsageError
from bench.memory import keep_freed_arrays_mapped
from bench.metrics.fidelity import FidelityReference, ms_ssim_db, psnr_from_mse
from bench.metrics.segmentation import (
    Confusion,
    confusion_matrix,
    encode_confusion,
    mean_iou,
    pixel_accuracy,
)
from bench.provenance import git_state, machine, now, software
from bench.records import ERROR, Record
from bench.registry import construct, import_target
from bench.search import MODES, search_rate
from bench.store import AGGREGATES_CSV, RunStore
from bench.tasks import SEGMENTERS, Segmenter, create_segmenter

log = logging.getLogger(__name__)

SIDE_COLUMNS = frozenset({"bpp_estimated", "header_bytes", "padding"})


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
    """Images per task, coded together by ``Codec.encode_batch`` where their shapes agree."""

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


@dataclass(frozen=True)
class SegmenterPlan:
    """The segmentation model every reconstruction is fed to."""

    name: str
    target: str
    options: Mapping[str, Any]
    class_names: tuple[str, ...]
    provenance: Mapping[str, Any]
    batch_size: int = 4

    @property
    def options_json(self) -> str:
        return json.dumps(dict(self.options), sort_keys=True, default=str)


@dataclass(frozen=True)
class Task:
    """Images coded by one codec at the rate points (rates or targets) still to do: one
    image, or a batch of them for codecs that take batches."""

    dataset: Dataset
    refs: tuple[SampleRef, ...]
    plan: CodecPlan
    points: tuple[float, ...]
    segmenter: SegmenterPlan | None = None


def plan_segmenter(
    name: str, options: Mapping[str, Any] | None = None, batch_size: int = 4
) -> SegmenterPlan:
    """Load a segmenter once here, so that a bad checkpoint fails before the run starts.

    Raises:
        UsageError, WeightsError: unknown segmenter or option, unusable weights.
    """
    options = dict(options or {})
    segmenter = create_segmenter(name, options)
    return SegmenterPlan(
        name=name,
        target=SEGMENTERS.entry(name).target,
        options=options,
        class_names=segmenter.class_names,
        provenance=segmenter.provenance(),
        batch_size=max(1, int(batch_size)),
    )


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
            provenance = codec.prepare(checked or _searchable(scale))
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
    )


def _searchable(scale: RateScale) -> list[float]:
    """The rate values a target-bpp search may visit, when they are few enough to prepare."""
    if scale.integer and scale.high - scale.low <= 16:
        return [float(v) for v in range(int(scale.low), int(scale.high) + 1)]
    return []


# --- worker side -----------------------------------------------------------------------------

_codec_cache: dict[tuple[str, str], Codec] = {}


def _codec_for(plan: CodecPlan) -> Codec:
    key = (plan.name, plan.options_json)
    if key not in _codec_cache:
        _codec_cache[key] = instantiate(import_target(plan.target), plan.options)
    return _codec_cache[key]


def _measure(
    codec: Codec, image: np.ndarray, reference: FidelityReference, rate: float, record: Record
) -> tuple[Record, np.ndarray | None]:
    """Code, decode and score one rate point; returns the record and the reconstruction."""
    try:
        start = time.perf_counter()
        data = codec.encode(image, rate)
        encoded = time.perf_counter()
        decoded = codec.decode(data)
        finished = time.perf_counter()
        info = getattr(codec, "encode_info", {})
    except Exception as exc:  # a failing codec costs this record, never the run
        record.status, record.error = ERROR, f"{type(exc).__name__}: {exc}"
        return record, None
    return _score(
        codec, image, reference, record, data, decoded, info, encoded - start, finished - encoded
    )


def _measure_batch(
    codec: Codec,
    images: list[np.ndarray],
    references: list[FidelityReference],
    rate: float,
    records: list[Record],
) -> list[tuple[Record, np.ndarray | None]]:
    """Code same-shaped images together at one rate point (``Codec.encode_batch``); each
    record gets the batch's wall-clock time divided by its size."""
    try:
        start = time.perf_counter()
        coded = codec.encode_batch(images, rate)
        encoded = time.perf_counter()
        decoded = codec.decode_batch([data for data, _ in coded])
        finished = time.perf_counter()
        if len(coded) != len(images) or len(decoded) != len(images):
            raise CodecError(f"{codec.name}: a batch of {len(images)} gave {len(coded)} bitstreams")
    except Exception:  # retry one by one, so that only the image at fault fails
        return [
            _measure(codec, image, reference, rate, record)
            for image, reference, record in zip(images, references, records, strict=True)
        ]
    share = len(images)
    return [
        _score(
            codec,
            image,
            reference,
            record,
            data,
            image_hat,
            info,
            (encoded - start) / share,
            (finished - encoded) / share,
        )
        for image, reference, record, (data, info), image_hat in zip(
            images, references, records, coded, decoded, strict=True
        )
    ]


def _score(
    codec: Codec,
    image: np.ndarray,
    reference: FidelityReference,
    record: Record,
    data: Any,
    decoded: Any,
    info: Mapping[str, Any],
    encode_s: float,
    decode_s: float,
) -> tuple[Record, np.ndarray | None]:
    """Check what a codec returned and fill the record's rate, times and fidelity metrics."""
    try:
        if not isinstance(data, bytes | bytearray):
            raise CodecError(f"{codec.name}: encode returned {type(data).__name__}, not bytes")
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
            raise CodecError(f"{codec.name}: decoder returned {got}, expected uint8 {image.shape}")
        for key, value in info.items():
            if key in SIDE_COLUMNS:
                setattr(record, key, value)
        record.bytes = len(data)
        record.bpp = 8.0 * len(data) / (image.shape[0] * image.shape[1])
        record.sha256 = hashlib.sha256(data).hexdigest()
        record.encode_s, record.decode_s = encode_s, decode_s
        began = time.perf_counter()
        record.mse = reference.mse(decoded)
        record.psnr_rgb = psnr_from_mse(record.mse)
        try:
            record.ssim_rgb, record.ms_ssim_rgb = reference.ssim_and_ms_ssim(decoded)
            record.ms_ssim_db = ms_ssim_db(record.ms_ssim_rgb)
        except MetricUndefined as exc:
            record.ssim_rgb = getattr(exc, "ssim", None)
            record.note = str(exc)
        record.metrics_s = time.perf_counter() - began
    except Exception as exc:  # a failing codec costs this record, never the run
        record.status, record.error = ERROR, f"{type(exc).__name__}: {exc}"
        return record, None
    return record, decoded


def _measure_target(
    codec: Codec,
    plan: CodecPlan,
    image: np.ndarray,
    reference: FidelityReference,
    target: float,
    record: Record,
) -> tuple[Record, np.ndarray | None]:
    """Search the rate value for a target bpp on this image, then measure it like any rate
    point; the record keeps the target, the chosen value and, in ``note``, the search."""
    record.target_bpp = target
    pixels = image.shape[0] * image.shape[1]
    try:
        result = search_rate(
            lambda rate: 8.0 * len(codec.encode(image, rate)) / pixels,
            codec.scale,
            target,
            mode=plan.target_mode,  # type: ignore[arg-type]
            first_guess=codec.rate_for_bpp(target),
        )
    except Exception as exc:  # a failing codec costs this record, never the run
        record.status, record.error = ERROR, f"target-bpp search: {type(exc).__name__}: {exc}"
        return record, None
    if result.rate is None:
        record.status, record.error = ERROR, result.note
        return record, None
    record.rate = result.rate
    record, decoded = _measure(codec, image, reference, result.rate, record)
    searched = f"searched {len(result.probes)} {plan.rate_param} values"
    record.note = "; ".join(n for n in (record.note, searched, result.note) if n)
    return record, decoded


_segmenter_cache: dict[tuple[str, str], Segmenter] = {}
_reference_cache: dict[tuple[str, str], Confusion] = {}


def _segmenter_for(plan: SegmenterPlan) -> Segmenter:
    key = (plan.name, plan.options_json)
    if key not in _segmenter_cache:
        _segmenter_cache[key] = construct(
            import_target(plan.target), plan.options, f"segmenter {plan.name}"
        )
    return _segmenter_cache[key]


def _segment(
    plan: SegmenterPlan,
    sample: Sample,
    dataset: str,
    measured: list[tuple[Record, np.ndarray | None]],
) -> None:
    """Segment every reconstruction (and, once per image, the original) and fill the
    records' mIoU, pixel accuracy, drop from the uncompressed image and confusion matrix."""
    assert sample.label is not None
    todo = [(record, decoded) for record, decoded in measured if decoded is not None]
    key = (dataset, sample.id)
    reference = _reference_cache.get(key)
    images = [decoded for _, decoded in todo]
    if reference is None:
        images.insert(0, sample.image)
    try:
        segmenter = _segmenter_for(plan)
        predictions: list[np.ndarray] = []
        seconds: list[float] = []
        for start in range(0, len(images), plan.batch_size):
            chunk = images[start : start + plan.batch_size]
            began = time.perf_counter()
            predictions.extend(segmenter.predict_batch(chunk))
            seconds.extend([(time.perf_counter() - began) / len(chunk)] * len(chunk))
        k = len(plan.class_names)
        if reference is None:
            reference = confusion_matrix(sample.label, predictions.pop(0), k)
            seconds.pop(0)
            if len(_reference_cache) > 16:
                _reference_cache.clear()
            _reference_cache[key] = reference
        reference_miou = mean_iou(reference)
        for (record, _), prediction, spent in zip(todo, predictions, seconds, strict=True):
            cm = confusion_matrix(sample.label, prediction, k)
            record.confusion = encode_confusion(cm)
            record.miou = mean_iou(cm)
            record.pixel_accuracy = pixel_accuracy(cm)
            record.miou_drop = reference_miou - record.miou
            record.segment_s = spent
    except Exception as exc:  # a failing model costs these records, never the run
        for record, _ in todo:
            record.status, record.error = ERROR, f"segmentation failed: {type(exc).__name__}: {exc}"


@dataclass
class _Loaded:
    """One image of a task, read and ready to be coded."""

    sample: Sample
    reference: FidelityReference
    size: dict[str, Any]


def execute(task: Task) -> list[Record]:
    """Code a task's images at every rate point; failures become error records.

    Same-shaped images go through ``Codec.encode_batch`` together when the codec takes
    batches (``batch_size`` > 1); target-bpp searches run image by image.
    """
    plan = task.plan

    def base(ref: SampleRef, **extra: Any) -> dict[str, Any]:
        return {
            "dataset": ref.dataset,
            "image_id": ref.id,
            "codec": plan.name,
            "codec_version": plan.version,
            "codec_options": plan.options_json,
            "rate_param": plan.rate_param,
            **extra,
        }

    def failed(ref: SampleRef, message: str, **extra: Any) -> list[Record]:
        return [
            Record(**base(ref, **extra), **plan.point_fields(p), status=ERROR, error=message)
            for p in task.points
        ]

    if not plan.usable:
        message = f"{plan.name} is not usable here: {plan.unusable_reason}"
        return [r for ref in task.refs for r in failed(ref, message)]
    records: list[Record] = []
    loaded: dict[str, _Loaded] = {}
    for ref in task.refs:
        try:
            sample = task.dataset.load(ref, with_label=task.segmenter is not None)
        except Exception as exc:
            records += failed(ref, f"{type(exc).__name__}: {exc}")
            continue
        size = {
            "height": sample.image.shape[0],
            "width": sample.image.shape[1],
            "conversion": sample.conversion,
        }
        if task.segmenter is not None and sample.label is None:
            records += failed(
                ref,
                f"{ref.path} has no label map; segmentation needs one for every image "
                "(cityscapes train/val, or folder with --label-dir)",
            )
            continue
        try:
            loaded[ref.id] = _Loaded(sample, FidelityReference(sample.image), size)
        except Exception as exc:
            records += failed(ref, f"{type(exc).__name__}: {exc}", **size)
    refs = {ref.id: ref for ref in task.refs}
    try:
        codec = _codec_for(plan)
    except Exception as exc:
        for image_id, item in loaded.items():
            records += failed(refs[image_id], f"{type(exc).__name__}: {exc}", **item.size)
        return records
    measured: dict[str, list[tuple[Record, np.ndarray | None]]] = {i: [] for i in loaded}
    for group in _same_shape(loaded, 1 if plan.targets else codec.batch_size):
        for point in task.points:
            fresh = [
                Record(**base(refs[i], **loaded[i].size), **plan.point_fields(point)) for i in group
            ]
            if plan.targets:
                results = [
                    _measure_target(
                        codec, plan, loaded[i].sample.image, loaded[i].reference, point, record
                    )
                    for i, record in zip(group, fresh, strict=True)
                ]
            elif len(group) == 1:
                item = loaded[group[0]]
                results = [_measure(codec, item.sample.image, item.reference, point, fresh[0])]
            else:
                results = _measure_batch(
                    codec,
                    [loaded[i].sample.image for i in group],
                    [loaded[i].reference for i in group],
                    point,
                    fresh,
                )
            for image_id, result in zip(group, results, strict=True):
                measured[image_id].append(result)
    for image_id, results in measured.items():
        if task.segmenter is not None:
            _segment(task.segmenter, loaded[image_id].sample, refs[image_id].dataset, results)
        records += [record for record, _ in results]
    return records


def _same_shape(loaded: Mapping[str, _Loaded], batch_size: int) -> list[list[str]]:
    """Image ids in groups of at most ``batch_size`` sharing one shape, in task order."""
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for image_id, item in loaded.items():
        by_shape.setdefault(item.sample.image.shape, []).append(image_id)
    size = max(1, batch_size)
    return [ids[i : i + size] for ids in by_shape.values() for i in range(0, len(ids), size)]


# --- scheduling ------------------------------------------------------------------------------


def _crashed(task: Task, detail: str) -> list[Record]:
    names = ", ".join(ref.id for ref in task.refs)
    message = (
        f"the worker process died while coding {names} with {task.plan.name} ({detail}); "
        "the codec crashed on this input"
    )
    return [
        Record(
            dataset=ref.dataset,
            image_id=ref.id,
            codec=task.plan.name,
            codec_version=task.plan.version,
            codec_options=task.plan.options_json,
            rate_param=task.plan.rate_param,
            **task.plan.point_fields(p),
            status=ERROR,
            error=message,
        )
        for ref in task.refs
        for p in task.points
    ]


def _in_pool(tasks: list[Task], workers: int) -> Iterator[list[Record]]:
    """Run tasks with at most ``workers`` in flight; a crashed worker costs only its task.

    When a worker dies (a segfault in a codec library), the tasks that were in flight are
    retried one at a time in a fresh process; one that kills it again is recorded as failed.
    """
    queue = list(reversed(tasks))
    suspects: list[Task] = []
    context = multiprocessing.get_context("spawn")
    while queue or suspects:
        if suspects:
            task = suspects.pop()
            with ProcessPoolExecutor(
                1, mp_context=context, initializer=keep_freed_arrays_mapped
            ) as solo:
                try:
                    yield solo.submit(execute, task).result()
                except BrokenProcessPool as exc:
                    yield _crashed(task, str(exc) or "BrokenProcessPool")
            continue
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=keep_freed_arrays_mapped
        ) as pool:
            running: dict[Future[list[Record]], Task] = {}
            broken = False
            while (queue and not broken) or running:
                while queue and not broken and len(running) < workers:
                    task = queue.pop()
                    try:
                        running[pool.submit(execute, task)] = task
                    except BrokenProcessPool:
                        # A worker died after the last wait returned; this task never ran.
                        queue.append(task)
                        broken = True
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    task = running.pop(future)
                    try:
                        yield future.result()
                    except BrokenProcessPool:
                        broken = True
                        suspects.append(task)
            if broken:
                log.warning(
                    "a worker process died; retrying %d task(s) one at a time", len(suspects)
                )


def _serial(tasks: list[Task]) -> Iterator[list[Record]]:
    keep_freed_arrays_mapped()
    for task in tasks:
        yield execute(task)


@dataclass
class RunResult:
    """What a finished (or interrupted) run left behind."""

    directory: Path
    records: list[Record]
    status: str
    aggregates_csv: Path
    plots: list[Path] = field(default_factory=list)


def run(
    dataset: Dataset,
    plans: Sequence[CodecPlan],
    out_dir: Path,
    *,
    workers: int = 0,
    limit: int | None = None,
    resume: bool = False,
    argv: Iterable[str] | None = None,
    progress: Callable[[int, int, list[Record]], None] | None = None,
    segmenter: SegmenterPlan | None = None,
) -> RunResult:
    """Sweep ``plans`` over ``dataset`` into ``out_dir``.

    With a ``segmenter`` every reconstruction is also segmented and scored against the
    dataset's labels, and the uncompressed images (codec ``none``) are added as the reference.

    Args:
        workers: processes to code in; 0 codes in this process (no crash isolation).
        limit: only the first N images of the dataset.
        resume: continue a run in ``out_dir``, redoing only what did not succeed.
        progress: called after each task with (tasks done, tasks total, its records).
    """
    if segmenter is not None:
        if not dataset.class_names:
            raise UsageError(
                f"dataset {dataset.tag} has no labels; segmentation needs a labelled dataset "
                "(cityscapes train/val, or folder with --label-dir and --num-classes)"
            )
        if len(dataset.class_names) != len(segmenter.class_names):
            raise UsageError(
                f"segmenter {segmenter.name} predicts {len(segmenter.class_names)} classes but "
                f"{dataset.tag} has {len(dataset.class_names)}"
            )
        if not any(p.name == REFERENCE_CODEC for p in plans):
            plans = [plan_codec(REFERENCE_CODEC), *plans]
    refs = dataset.refs()[:limit] if limit else dataset.refs()
    store = RunStore(out_dir, resume=resume)
    done = store.done_keys()
    tasks: list[Task] = []
    waiting: dict[str, list[tuple[SampleRef, tuple[float, ...]]]] = {}

    def flush(plan: CodecPlan) -> None:
        batch = waiting.pop(plan.name, [])
        if batch:
            tasks.append(Task(dataset, tuple(r for r, _ in batch), plan, batch[0][1], segmenter))

    for ref in refs:
        for plan in plans:
            todo = tuple(p for p in plan.points if (ref.dataset, ref.id, plan.name, p) not in done)
            if not todo:
                continue
            if plan.batch_size <= 1 or plan.targets:
                tasks.append(Task(dataset, (ref,), plan, todo, segmenter))
                continue
            if waiting.get(plan.name) and waiting[plan.name][0][1] != todo:
                flush(plan)
            waiting.setdefault(plan.name, []).append((ref, todo))
            if len(waiting[plan.name]) == plan.batch_size:
                flush(plan)
    for plan in plans:
        flush(plan)
    manifest: dict[str, Any] = {
        "command": " ".join(argv if argv is not None else sys.argv),
        "started": now(),
        "status": "running",
        "resumed": resume and bool(done),
        "software": software(),
        "git": git_state(),
        "machine": machine(),
        "dataset": dataset.provenance(),
        "images": [ref.id for ref in refs],
        "image_files": {ref.id: str(ref.path) for ref in refs},
        "label_files": {ref.id: str(ref.label_path) for ref in refs if ref.label_path},
        "workers": workers,
        "task": "segmentation" if segmenter else "compression",
        "segmenter": (
            {
                **segmenter.provenance,
                "class_names": list(segmenter.class_names),
                "target": segmenter.target,
                "options": json.loads(segmenter.options_json),
            }
            if segmenter
            else None
        ),
        "codecs": {
            p.name: {
                "version": p.version,
                "options": dict(p.options),
                "target": p.target,
                "rate_param": p.rate_param,
                "rates": list(p.rates),
                "target_bpp": list(p.targets),
                "target_mode": p.target_mode if p.targets else None,
                "usable": p.usable,
                "unusable_reason": p.unusable_reason,
                **dict(p.provenance),
            }
            for p in plans
        },
    }
    store.write_manifest(manifest)
    for plan in plans:
        if not plan.usable:
            log.warning("%s is not usable here: %s", plan.name, plan.unusable_reason)
    status = "finished"
    try:
        stream = _in_pool(tasks, workers) if workers > 0 else _serial(tasks)
        for count, records in enumerate(stream, start=1):
            store.add(records)
            if progress:
                progress(count, len(tasks), records)
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        result = _finish(store, manifest, status, refs, plans)
    return result


def _finish(
    store: RunStore,
    manifest: dict[str, Any],
    status: str,
    refs: list[SampleRef],
    plans: Sequence[CodecPlan],
) -> RunResult:
    """Write the sorted Parquet, aggregates, plots and the final manifest."""
    store.close()
    image_order = {ref.id: i for i, ref in enumerate(refs)}
    codec_order = {p.name: i for i, p in enumerate(plans)}
    rate_order = {(p.name, r): i for p in plans for i, r in enumerate(p.points)}
    records = sorted(
        store.final_records(),
        key=lambda r: (
            codec_order.get(r.codec, len(codec_order)),
            rate_order.get((r.codec, r.key[3]), 0),
            image_order.get(r.image_id, len(image_order)),
        ),
    )
    store.records = records
    store.write_parquet()
    segmenter = manifest.get("segmenter") or {}
    plots: list[Path] = []
    try:
        _, plots = write_outputs(
            records, store.directory, segmenter.get("class_names", ()), manifest["dataset"]["tag"]
        )
    except Exception as exc:  # a plotting failure must not lose the run's numbers
        log.error("could not write the aggregates and plots: %s", exc)
    failed = sum(1 for r in records if not r.ok)
    manifest.update(
        status=status, ended=now(), records={"ok": len(records) - failed, "error": failed}
    )
    store.write_manifest(manifest)
    try:
        from bench.report import write_report

        write_report(store.directory, crops=status == "finished")
    except Exception as exc:  # the report is derived; its failure must not lose the run
        log.error("could not write the report (bench report %s retries): %s", store.directory, exc)
    return RunResult(store.directory, records, status, store.directory / AGGREGATES_CSV, plots)
