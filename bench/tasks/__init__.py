"""Tasks run on reconstructions (entry-point group ``bench.tasks``), and the segmenters the
segmentation task feeds (entry-point group ``bench.segmenters``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.metrics.base import Column
from bench.registry import Registry, construct
from bench.tasks.base import Segmenter
from bench.tasks.task import REFERENCE_CODEC, Table, Task

TASKS: Registry[Task] = Registry("tasks", "bench.tasks")
TASKS.add("segmentation", "bench.tasks.segmentation:SegmentationTask", "pip install torch")
TASKS.add("segmentation-latent", "bench.tasks.latent:LatentSegmentationTask", "pip install torch")

SEGMENTATION_TASKS = ("segmentation", "segmentation-latent")
"""Tasks that take ``--segmenter``, ``--segmenter-weights`` and ``--segmenter-option``."""

NO_TASK = "compression"
"""The ``--task`` of a run that only codes and measures (no task object)."""

SEGMENTERS: Registry[Segmenter] = Registry("segmenters", "bench.segmenters")
SEGMENTERS.add("espnet", "bench.tasks.espnet:EspnetSegmenter", "pip install torch")
SEGMENTERS.add("espnetv2", "bench.tasks.espnetv2:Espnetv2Segmenter", "pip install torch")
SEGMENTERS.add("mmseg", "bench.tasks.mmseg:MmsegSegmenter", "scripts/setup.sh mmseg")


def create_segmenter(name: str, options: Mapping[str, object] | None = None) -> Segmenter:
    """Instantiate a registered segmenter with keyword options (``weights``, ``device``, ...)."""
    return construct(SEGMENTERS.load(name), dict(options or {}), f"segmenter {name}")


def plan_task(
    name: str, options: Mapping[str, Any] | None = None, *, device: str = "cpu", batch_size: int = 4
) -> Task:
    """A registered task planned from its keyword options (``Task.create``).

    Raises:
        UsageError: an unknown task (with the closest names) or option.
    """
    cls = TASKS.load(name)
    return cls.create(dict(options or {}), device=device, batch_size=batch_size)


def rebuild_task_from(name: str, provenance: Mapping[str, Any]) -> Task:
    """A registered task again from the provenance a run's manifest recorded.

    Raises:
        UsageError: the task is not registered here (a plugin that is not installed).
    """
    return TASKS.load(name).from_provenance(provenance)


def task_default_rules() -> list[tuple[str, Mapping[str, Any]]]:
    """Every registered task's default ``bench check`` rules, as (task, rule table) pairs."""
    found: list[tuple[str, Mapping[str, Any]]] = []
    for name in TASKS.names():
        try:
            rules = TASKS.load(name).default_rules()
        except Exception:  # a broken plugin costs its own rules only
            continue
        found.extend((name, rule) for rule in rules)
    return found


def known_task_columns() -> dict[str, Column]:
    """The fixed aggregate columns of every registered task, by name (per-class columns are
    found through ``describe_column``)."""
    found: dict[str, Column] = {}
    for name in TASKS.names():
        try:
            cls = TASKS.load(name)
        except Exception:  # a broken plugin costs its own columns only
            continue
        for column in cls.known_columns():
            found.setdefault(column.name, column)
    return found


def describe_task_column(name: str) -> Column | None:
    """A column of any registered task's stored tables, by name."""
    for task in TASKS.names():
        try:
            column = TASKS.load(task).describe_column(name)
        except Exception:  # a broken plugin costs its own columns only
            continue
        if column is not None:
            return column
    return None


__all__ = [
    "NO_TASK",
    "REFERENCE_CODEC",
    "SEGMENTATION_TASKS",
    "SEGMENTERS",
    "TASKS",
    "Segmenter",
    "Table",
    "Task",
    "create_segmenter",
    "describe_task_column",
    "known_task_columns",
    "plan_task",
    "rebuild_task_from",
    "task_default_rules",
]
