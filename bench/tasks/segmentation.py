"""Semantic segmentation of reconstructions, scored by mIoU (the Cityscapes protocol).

Per record: the image's mIoU and pixel accuracy, the drop from the same image uncompressed,
seconds spent, and the image's confusion matrix (the mergeable state). Per rate point: one
confusion matrix summed over every image gives mIoU, pixel accuracy and per-class IoU.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.errors import UsageError
from bench.metrics.base import Column, Plot, Value
from bench.metrics.segmentation import (
    Confusion,
    confusion_matrix,
    decode_confusion,
    encode_confusion,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
)
from bench.registry import construct, import_target
from bench.tasks.task import Table, Task

if TYPE_CHECKING:
    from bench.datasets import Dataset, Sample
    from bench.records import Record
    from bench.tasks.base import Segmenter

CLASS_IOU = "iou_"
"""Prefix of the per-class IoU aggregate columns (``iou_traffic_light``)."""

_RD_MIOU = Plot("rd_miou", "mIoU [%]", "mIoU against bpp, the uncompressed image's mIoU dashed")
_MIOU = Column(
    "miou", "mIoU", "%", True, scale=100.0, digits=2, bd=True, record="miou", plot=_RD_MIOU
)
_PIXEL_ACCURACY = Column("pixel_accuracy", "pixel acc.", "%", True, scale=100.0, digits=2)
_MIOU_DROP = Column("miou_drop", "mIoU drop", "pp", False, scale=100.0, digits=2)
RECORD_COLUMNS = (
    Column("miou", "mIoU", "%", True, scale=100.0, digits=2),
    Column("pixel_accuracy", "pixel acc.", "%", True, scale=100.0, digits=2, hidden=True),
    Column("miou_drop", "mIoU drop", "pp", False, scale=100.0, digits=2),
    Column("segment_s", "segment", "s", False, digits=4, hidden=True),
    Column("confusion", "confusion matrix", hidden=True),
)


def class_column(name: str) -> str:
    """The aggregate column of one class's IoU: ``traffic light`` -> ``iou_traffic_light``."""
    return CLASS_IOU + name.replace(" ", "_")


def _generic(names: Sequence[str]) -> bool:
    """Whether class names are placeholders (``class 0``, ``class 1``, ...)."""
    return all(name == f"class {i}" for i, name in enumerate(names))


class SegmentationTask(Task):
    """Feed every reconstruction (and once per image the original) to a segmenter.

    Args:
        segmenter: the registry name; target: its ``module:Class`` (so workers import
            plugins directly); options: its keyword options; class_names: the classes the
            scores are named by (the dataset's label set where it names them);
            model_provenance: what the segmenter reported (weights file and SHA-256);
            batch_size: images per forward pass.
    """

    name = "segmentation"
    needs_labels = True
    description = "segment every reconstruction and score mIoU (the Cityscapes protocol)"
    aggregation = "states merged over every image (one confusion matrix summed over the set)"

    @classmethod
    def create(
        cls, options: Mapping[str, Any], *, device: str = "cpu", batch_size: int = 4
    ) -> SegmentationTask:
        """Options: ``segmenter`` (required; see ``bench list segmenters``),
        ``batch_size``, and the segmenter's own (``weights``, ``device``, ...); the CLI's
        ``--segmenter``, ``--segmenter-weights`` and ``--segmenter-option`` spell the same.

        Raises:
            UsageError, WeightsError: no or unknown segmenter or option, unusable weights.
        """
        options = dict(options)
        segmenter = options.pop("segmenter", None)
        if not segmenter:
            raise UsageError(
                "the segmentation task needs a segmenter: --segmenter NAME (or --task-option "
                "segmenter=NAME; see `bench list segmenters`)"
            )
        size = options.pop("batch_size", batch_size)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise UsageError(f"task segmentation: batch_size must be an integer >= 1, got {size!r}")
        options.setdefault("device", device)
        return cls.plan(str(segmenter), options, size)

    @staticmethod
    def legacy_options(
        segmenter: str | None, weights: str | None, options: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """The task options that ``--segmenter``, ``--segmenter-weights`` and
        ``--segmenter-option`` (``segmenter=``, ``segmenter_weights=``,
        ``segmenter_options=`` of ``bench.run``) stand for."""
        found: dict[str, Any] = {"segmenter": segmenter} if segmenter else {}
        if weights:
            found["weights"] = weights
        found.update(options or {})
        return found

    @classmethod
    def from_provenance(cls, provenance: Mapping[str, Any]) -> SegmentationTask:
        """The task of a run's manifest (the segmenter's provenance, as ``provenance()``
        wrote it; version-2 manifests kept the same in their ``segmenter`` field)."""
        own = ("class_names", "target", "options", "identity", "task", "batch_size")
        return cls(
            str(provenance.get("name") or ""),
            str(provenance.get("target") or ""),
            dict(provenance.get("options") or {}),
            list(provenance.get("class_names") or []),
            {k: v for k, v in provenance.items() if k not in own},
            int(provenance.get("batch_size") or 4),
        )

    @classmethod
    def default_rules(cls) -> tuple[Mapping[str, Any], ...]:
        return (
            {"kind": "tolerance", "metric": "pixel_accuracy", "abs": 0.001},
            {"kind": "miou_drop", "max": 0.1},
        )

    def __init__(
        self,
        segmenter: str,
        target: str,
        options: Mapping[str, Any],
        class_names: Sequence[str],
        model_provenance: Mapping[str, Any],
        batch_size: int = 4,
    ) -> None:
        self.segmenter = segmenter
        self.target = target
        self.options = dict(options)
        self.class_names = tuple(class_names)
        self.model_provenance = dict(model_provenance)
        self._batch_size = max(1, int(batch_size))
        self._model: Segmenter | None = None
        self._reference: dict[tuple[str, str], Confusion] = {}

    @classmethod
    def plan(
        cls, segmenter: str, options: Mapping[str, Any] | None = None, batch_size: int = 4
    ) -> SegmentationTask:
        """Load the segmenter once here, so that a bad checkpoint fails before the run starts.

        Raises:
            UsageError, WeightsError: unknown segmenter or option, unusable weights.
        """
        from bench.tasks import SEGMENTERS, create_segmenter

        options = dict(options or {})
        model = create_segmenter(segmenter, options)
        task = cls(
            segmenter,
            SEGMENTERS.entry(segmenter).target,
            options,
            model.class_names,
            model.provenance(),
            batch_size,
        )
        task._model = model
        return task

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_model"], state["_reference"] = None, {}
        return state

    @property
    def identity(self) -> str:
        """``segmentation:<segmenter>@<hash>`` of the segmenter, its options and its weights'
        SHA-256: the weights count by content (their path and the expected hash given as
        ``weights_sha256`` are left out where the content's hash is known), the device not
        at all."""
        weights = self.model_provenance.get("weights_sha256", "")
        dropped = {"device", "weights", "weights_sha256"} if weights else {"device"}
        options = {k: v for k, v in self.options.items() if k not in dropped}
        return self._identity_of(options, weights)

    def previous_identities(self) -> tuple[str, ...]:
        """The identity bench gave this task before the weights counted by content alone
        (with their path in it): records that carry it were made by the same model."""
        weights = self.model_provenance.get("weights_sha256", "")
        options = {k: v for k, v in self.options.items() if k != "device"}
        earlier = self._identity_of(options, weights)
        return (earlier,) if earlier != self.identity else ()

    def _identity_of(self, options: Mapping[str, Any], weights: Any) -> str:
        text = json.dumps([self.segmenter, options, weights], sort_keys=True, default=str)
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        return f"{self.name}:{self.segmenter}@{digest}"

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def record_columns(self) -> tuple[Column, ...]:
        return RECORD_COLUMNS

    @property
    def aggregate_columns(self) -> tuple[Column, ...]:
        classes = tuple(
            Column(class_column(c), f"IoU {c}", "%", True, scale=100.0, digits=1)
            for c in self.class_names
        )
        return (_MIOU, _PIXEL_ACCURACY, _MIOU_DROP, *classes)

    @classmethod
    def known_columns(cls) -> tuple[Column, ...]:
        return (_MIOU, _PIXEL_ACCURACY, _MIOU_DROP)

    @classmethod
    def describe_column(cls, name: str) -> Column | None:
        column = super().describe_column(name)
        if column is None and name.startswith(CLASS_IOU):
            return Column(name, f"IoU {name[len(CLASS_IOU) :]}", "%", True, scale=100.0, digits=1)
        return column

    def check(self, dataset: Dataset) -> None:
        """The dataset must have labels of the segmenter's classes: by name where both name
        them, by count where the dataset's names are placeholders."""
        theirs = dataset.class_names
        if not theirs:
            raise UsageError(
                f"dataset {dataset.tag} has no labels; segmentation needs a labelled dataset "
                "(cityscapes train/val, or folder with --label-dir and --num-classes)"
            )
        if len(theirs) != len(self.class_names):
            raise UsageError(
                f"segmenter {self.segmenter} predicts {len(self.class_names)} classes but "
                f"{dataset.tag} has {len(theirs)}"
            )
        if not _generic(theirs) and not _generic(self.class_names) and theirs != self.class_names:
            differ = [
                f"{i}: {a!r} vs {b!r}"
                for i, (a, b) in enumerate(zip(theirs, self.class_names, strict=True))
                if a != b
            ]
            raise UsageError(
                f"segmenter {self.segmenter} and dataset {dataset.tag} name their classes "
                f"differently ({', '.join(differ[:4])}): the scores would compare other classes"
            )
        if not _generic(theirs):
            self.class_names = tuple(theirs)

    def _segmenter(self) -> Segmenter:
        if self._model is None:
            self._model = self.load_segmenter()
        return self._model

    def load_segmenter(self, device: str | None = None) -> Segmenter:
        """A new instance of the segmentation model (``device`` replaces the recorded one).

        Raises:
            UsageError, WeightsError: the manifest names no segmenter class, or it cannot
                load here.
        """
        if not self.target:
            raise UsageError("the run's manifest does not name the segmenter's class")
        options = dict(self.options)
        if device is not None:
            options["device"] = device
        model: Segmenter = construct(
            import_target(self.target), options, f"segmenter {self.segmenter}"
        )
        return model

    def score(
        self, sample: Sample, reconstructions: Sequence[np.ndarray]
    ) -> list[dict[str, Value]]:
        """mIoU, pixel accuracy, drop from the original, time and confusion of each
        reconstruction; the original's prediction is made once per image and kept, and a
        reconstruction equal to the original (the uncompressed reference row, a lossless
        codec) takes the original's scores instead of a second prediction of the same
        pixels."""
        if sample.label is None:
            raise ValueError(f"{sample.id} has no label map")
        key = (sample.id, hashlib.sha256(sample.image.tobytes()).hexdigest())
        reference = self._reference.get(key)
        k = len(self.class_names)
        lossless = [np.array_equal(image, sample.image) for image in reconstructions]
        images = [image for image, same in zip(reconstructions, lossless, strict=True) if not same]
        if reference is None:
            images.insert(0, sample.image)
        model = self._segmenter()
        predictions: list[np.ndarray] = []
        seconds: list[float] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            began = time.perf_counter()
            predictions.extend(model.predict_batch(chunk))
            seconds.extend([(time.perf_counter() - began) / len(chunk)] * len(chunk))
        original_seconds = 0.0
        if reference is None:
            reference = confusion_matrix(sample.label, predictions.pop(0), k)
            original_seconds = seconds.pop(0)
            if len(self._reference) > 16:
                self._reference.clear()
            self._reference[key] = reference
        reference_miou = mean_iou(reference)
        coded = iter(zip(predictions, seconds, strict=True))
        rows: list[dict[str, Value]] = []
        for same in lossless:
            if same:
                cm, spent = reference, original_seconds
            else:
                prediction, spent = next(coded)
                cm = confusion_matrix(sample.label, prediction, k)
            miou = mean_iou(cm)
            rows.append(
                {
                    "miou": miou,
                    "pixel_accuracy": pixel_accuracy(cm),
                    "miou_drop": reference_miou - miou,
                    "segment_s": spent,
                    "confusion": encode_confusion(cm),
                }
            )
        return rows

    def reference_confusion(self, sample: Sample) -> Confusion:
        """The confusion matrix of the uncompressed image (predicted once per image)."""
        if sample.label is None:
            raise ValueError(f"{sample.id} has no label map")
        key = (sample.id, hashlib.sha256(sample.image.tobytes()).hexdigest())
        reference = self._reference.get(key)
        if reference is None:
            prediction = self._segmenter().predict(sample.image)
            reference = confusion_matrix(sample.label, prediction, len(self.class_names))
            if len(self._reference) > 16:
                self._reference.clear()
            self._reference[key] = reference
        return reference

    def aggregate(self, records: Sequence[Record]) -> dict[str, float]:
        """mIoU, pixel accuracy and per-class IoU from one confusion matrix summed over
        every image (never a mean of per-image values)."""
        matrices = [decode_confusion(str(c)) for r in records if (c := r.get("confusion"))]
        if not matrices:
            return {}
        total = sum(matrices[1:], matrices[0])
        names = list(self.class_names)
        if len(names) != total.shape[0]:
            names = [f"class {i}" for i in range(total.shape[0])]
        out = {"miou": mean_iou(total), "pixel_accuracy": pixel_accuracy(total)}
        out.update(
            {class_column(n): v for n, v in zip(names, iou_per_class(total).tolist(), strict=True)}
        )
        return out

    def relative(self, rows: dict[str, float], reference: dict[str, float] | None) -> None:
        if reference is not None and "miou" in rows and "miou" in reference:
            rows["miou_drop"] = reference["miou"] - rows["miou"]

    def tables(self, rows: Sequence[tuple[str, Mapping[str, float]]]) -> dict[str, Table]:
        """``per_class_iou``: header (``class``, one ``codec@rate`` per rate point that has
        an mIoU), then mIoU, then one row per class."""
        rows = [
            (label, values) for label, values in rows if math.isfinite(values.get("miou", math.nan))
        ]
        if not rows:
            return {}
        table: list[list[Any]] = [["class", *(label for label, _ in rows)]]
        table.append(["mIoU", *(values.get("miou", math.nan) for _, values in rows)])
        for name in self.class_names:
            column = class_column(name)
            table.append([name, *(values.get(column, math.nan) for _, values in rows)])
        note = "n/a: the class is absent from both labels and predictions."
        return {
            "per_class_iou": Table("IoU per class [%]", table, scale=100.0, digits=1, note=note)
        }

    def provenance(self) -> dict[str, Any]:
        return {
            **self.model_provenance,
            "task": self.name,
            "identity": self.identity,
            "class_names": list(self.class_names),
            "target": self.target,
            "options": json.loads(json.dumps(self.options, sort_keys=True, default=str)),
            "batch_size": self.batch_size,
        }
