"""The metric contract: one object per metric carries everything the pipeline needs.

A metric scores one reconstruction against its original. Records, aggregates, BD tables,
``bench check`` rules, plots, the report and the CLI summary learn its columns, direction,
label and scale from the object, never from lists of their own.

>>> psnr = Column("psnr_rgb_mean", "PSNR", unit="dB", higher_is_better=True)
>>> psnr.heading, psnr.worse(30.0, 29.0)
('PSNR [dB]', True)
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from bench.records import Record

Value = float | int | str | None
"""What a record column holds."""


@dataclass(frozen=True)
class Plot:
    """A rate-distortion plot of an aggregate column against bpp.

    Attributes:
        stem: file name without suffix under ``plots/`` (``rd_psnr`` -> ``rd_psnr.svg``).
        axis: the y-axis label.
        title: what the report's caption says the plot shows.
    """

    stem: str
    axis: str
    title: str


@dataclass(frozen=True)
class Column:
    """One column of records or aggregates, and how to read it.

    Attributes:
        name: the column name in records.csv / aggregates.csv.
        label: a short human name (``PSNR``, ``MS-SSIM``, ``mIoU``).
        unit: shown after the label (``dB``, ``%``); "" for none.
        higher_is_better: the direction; None for columns that are not judged (counts of
            records, hashes).
        scale: displayed value = stored value * scale (mIoU is stored in 0..1, shown in %).
        digits: decimals shown.
        bd: whether BD-rate tables use this aggregate column (a quality axis).
        record: the record column this aggregate comes from (per-image BD reads it).
        plot: the R-D plot drawn for this aggregate column, if any.
        pooled: True for a value pooled over every pixel of the set rather than a mean of
            per-image values.
        hidden: kept in the files but not shown in the report's tables (an MSE kept for
            pooling, a serialised state).
    """

    name: str
    label: str
    unit: str = ""
    higher_is_better: bool | None = None
    scale: float = 1.0
    digits: int = 4
    bd: bool = False
    record: str = ""
    plot: Plot | None = None
    pooled: bool = False
    hidden: bool = False

    @property
    def heading(self) -> str:
        """``label [unit]``, as a table heading."""
        return f"{self.label} [{self.unit}]" if self.unit else self.label

    def worse(self, before: float, after: float) -> bool:
        """Whether moving from ``before`` to ``after`` is a worsening (False for undirected)."""
        if self.higher_is_better is None:
            return False
        return after < before if self.higher_is_better else after > before


class Metric(abc.ABC):
    """Base class of metrics of a reconstruction against its original.

    Subclasses declare ``name`` (the CLI token of ``--metrics``), ``record_columns`` (what
    ``score`` fills, in order) and ``aggregate_columns`` (what ``aggregate`` returns), and
    implement ``prepare`` and ``score``. ``prepare`` runs once per image and its result is
    reused for every rate point of that image (e.g. the original's Gaussian pyramid);
    metrics that share a preparation name the same ``preparation`` key and return the same
    kind of object, so it is made once.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    record_columns: ClassVar[tuple[Column, ...]]
    aggregate_columns: ClassVar[tuple[Column, ...]]
    preparation: ClassVar[str] = ""
    """Key of the per-image preparation; metrics with the same key share one (default: name)."""
    needs_device: ClassVar[bool] = False
    """Whether the metric runs a model on a torch device: such a metric takes a keyword
    option ``device`` (``--device``), and reports its weights and their SHA-256 through
    ``provenance`` (they go into the run manifest)."""

    inputs: ClassVar[tuple[str, ...]] = ()
    """Per-image inputs the metric scores with besides the pair (``roi``: the boolean region
    of interest of the codec's quality map); such a metric implements ``score_with``."""

    @property
    def preparation_key(self) -> str:
        return self.preparation or self.name

    def prepare(self, original: np.ndarray) -> Any:
        """Whatever of the original is reused for every rate point (default: the image)."""
        return original

    @abc.abstractmethod
    def score(self, prepared: Any, reconstruction: np.ndarray) -> dict[str, Value]:
        """The record columns for one reconstruction ((H, W, 3) uint8 RGB).

        Raises:
            MetricUndefined: the metric has no value for this image (the record keeps the
                others and notes why).
        """

    def score_with(
        self, prepared: Any, reconstruction: np.ndarray, inputs: Mapping[str, Any]
    ) -> dict[str, Value]:
        """``score`` with the inputs named in ``inputs`` (missing ones are absent or None)."""
        return self.score(prepared, reconstruction)

    def aggregate(self, records: Sequence[Record]) -> dict[str, float]:
        """The aggregate columns over the successful records of one rate point.

        The default is the mean of each aggregate column's ``record`` column over the images
        where it is defined.
        """
        return {
            column.name: mean(r.get(column.record) for r in records)
            for column in self.aggregate_columns
        }

    def provenance(self) -> dict[str, Any]:
        """What the run manifest records about the metric (e.g. weights and their hash)."""
        return {}


def mean(values: Iterable[Any]) -> float:
    """The mean of the finite-or-infinite numbers among ``values`` (None and NaN skipped).

    >>> mean([1.0, None, float("nan"), 2.0])
    1.5
    """
    present = [
        float(v)
        for v in values
        if isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v)
    ]
    return math.fsum(present) / len(present) if present else math.nan


def count_defined(values: Iterable[Any]) -> int:
    """How many of ``values`` are numbers (not None, not NaN)."""
    return sum(1 for v in values if isinstance(v, int | float) and not math.isnan(v))


def column_map(columns: Iterable[Column]) -> Mapping[str, Column]:
    """Columns by name."""
    return {c.name: c for c in columns}
