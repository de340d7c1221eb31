"""The task contract: what a machine does with reconstructions, and how it is scored.

A task runs beside the codec in the worker: for each image it scores every reconstruction
(per-record columns plus a mergeable state, e.g. a confusion matrix), states merge over a
set into aggregate columns, and the uncompressed images (the ``none`` codec) are its
reference row. Segmentation is the first task; detection would be the next.

A task is chosen by its registry name (``bench run --task NAME``, ``bench.run(task=NAME)``)
and planned from keyword options (``--task-option KEY=VALUE``) by ``create``; the manifest
keeps its ``provenance()``, from which ``from_provenance`` rebuilds it for the report,
``bench curves`` and ``bench.load``. Everything else (records, aggregates, tables, rules,
the report) asks the object.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol

import numpy as np

from bench.metrics.base import Column, Value
from bench.registry import construct, keyword_options
from bench.types import Latent

if TYPE_CHECKING:
    from bench.datasets import Dataset, Sample
    from bench.records import Record

REFERENCE_CODEC = "none"
"""The uncompressed reference row that task scores are compared with."""


class CodecView(Protocol):
    """What a task may ask of the codec that made its records (``bench.codecs.Codec`` is
    one): its name, and whether and how it gives its latent from a bitstream."""

    @property
    def name(self) -> str: ...

    @property
    def has_latent(self) -> bool: ...

    def decode_latent(self, data: bytes) -> Latent: ...


class Coded(NamedTuple):
    """One reconstruction as the runner made it: the bitstream and the decoded image."""

    data: bytes
    image: np.ndarray


@dataclass(frozen=True)
class Table:
    """A table a task adds to the outputs: written as ``NAME.csv`` and shown in the report.

    ``rows[0]`` is the header; ``rows[1:]`` start with a label, then numbers stored as
    measured, shown times ``scale`` with ``digits`` decimals.
    """

    title: str
    rows: list[list[Any]]
    scale: float = 1.0
    digits: int = 1
    note: str = ""


class Task(abc.ABC):
    """Base class of tasks run on reconstructions.

    Instances are sent to worker processes (keep them picklable: load models lazily and
    drop them in ``__getstate__``) and kept there per ``identity``, so per-image caches on
    an instance (the reference's prediction) never mix two models.
    """

    name: ClassVar[str]
    needs_labels: ClassVar[bool] = False
    reference_codec: ClassVar[str] = REFERENCE_CODEC
    description: ClassVar[str] = "a task run on every reconstruction"
    """One line for ``bench list tasks`` and the report."""
    aggregation: ClassVar[str] = "states merged over every image of a rate point"
    """How the aggregate columns come from the records, as the report explains it."""

    @classmethod
    def create(
        cls, options: Mapping[str, Any], *, device: str = "cpu", batch_size: int = 4
    ) -> Task:
        """Plan the task from the user's keyword options (``--task-option KEY=VALUE``);
        ``device`` and ``batch_size`` (``--device``, ``--batch-size``) are given to a
        constructor that takes them unless the options set them. Load models here, so that
        a bad checkpoint fails before the run starts.

        Raises:
            UsageError: an unknown or invalid option (naming the accepted ones).
        """
        accepted = keyword_options(cls)
        chosen = dict(options)
        for key, value in (("device", device), ("batch_size", batch_size)):
            if key in accepted:
                chosen.setdefault(key, value)
        return construct(cls, chosen, f"task {cls.name}")

    @classmethod
    def from_provenance(cls, provenance: Mapping[str, Any]) -> Task:
        """The task again from what ``provenance()`` recorded, without loading any model
        (that happens when it first scores). The default constructs it from the recorded
        ``options``."""
        return construct(cls, dict(provenance.get("options") or {}), f"task {cls.name}")

    @classmethod
    def default_rules(cls) -> tuple[Mapping[str, Any], ...]:
        """Rules ``bench check`` applies by default, as rules-file tables (``{"kind":
        "tolerance", "metric": ..., "abs": ...}``); skipped where a run lacks the column."""
        return ()

    @property
    @abc.abstractmethod
    def identity(self) -> str:
        """What changes the task's numbers (task, model, options, weights): the ``task``
        column of records, part of their key."""

    def previous_identities(self) -> tuple[str, ...]:
        """Identities that earlier bench versions gave this same task (same model, same
        options): a resumed run counts records that carry one as this task's. None by
        default."""
        return ()

    @property
    @abc.abstractmethod
    def record_columns(self) -> tuple[Column, ...]:
        """The record columns ``score`` fills."""

    @property
    @abc.abstractmethod
    def aggregate_columns(self) -> tuple[Column, ...]:
        """The aggregate columns ``aggregate`` returns (and ``relative`` adds)."""

    @classmethod
    def known_columns(cls) -> tuple[Column, ...]:
        """The aggregate columns every run of this task has (without per-run ones such as
        per-class columns), known without a run (for rules and BD tables)."""
        return ()

    @classmethod
    def describe_column(cls, name: str) -> Column | None:
        """A column of this task's stored tables by name, without a run (for rules)."""
        return next((c for c in cls.known_columns() if c.name == name), None)

    def check(self, dataset: Dataset) -> None:  # noqa: B027 (optional hook)
        """Raise UsageError before the run starts when the task cannot run on ``dataset``."""

    @property
    def batch_size(self) -> int:
        return 1

    @abc.abstractmethod
    def score(
        self, sample: Sample, reconstructions: Sequence[np.ndarray]
    ) -> list[dict[str, Value]]:
        """Record columns for each reconstruction of one sample.

        Raises:
            Exception: any failure costs these records only (the runner records it).
        """

    def score_coded(
        self, sample: Sample, coded: Sequence[Coded], codec: CodecView
    ) -> list[dict[str, Value]]:
        """What the runner calls: record columns for each coded rate point of one sample,
        given the bitstreams and the codec that made them (a task on latents decodes them
        with ``codec.decode_latent``). The default scores the reconstructions (``score``).

        Raises:
            Exception: any failure costs these records only (the runner records it).
        """
        return self.score(sample, [item.image for item in coded])

    @abc.abstractmethod
    def aggregate(self, records: Sequence[Record]) -> dict[str, float]:
        """Aggregate columns over the successful records of one rate point, from their
        mergeable states."""

    def relative(  # noqa: B027 (optional hook)
        self, rows: dict[str, float], reference: dict[str, float] | None
    ) -> None:
        """Fill columns relative to the reference row's (e.g. the mIoU drop) in ``rows``."""

    def tables(self, rows: Sequence[tuple[str, Mapping[str, float]]]) -> dict[str, Table]:
        """Tables of the task's own, by file stem, from (``codec@rate`` label, aggregate
        values) pairs; none by default."""
        return {}

    def provenance(self) -> dict[str, Any]:
        """What the run manifest records about the task (JSON values: options, model,
        weights and their hash); ``from_provenance`` must rebuild the task from it. The
        default records the instance's ``options`` mapping, if it has one."""
        options = dict(getattr(self, "options", {}) or {})
        return {"options": json.loads(json.dumps(options, sort_keys=True, default=str))}
