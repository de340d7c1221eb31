"""A task from outside bench, as a plugin package would ship it (registered in the tests
through the ``bench.tasks`` entry-point group; imported by worker processes too).

Edge agreement: how well the edges of a reconstruction match the original's. Per image the
edge maps (grey-level gradient above ``threshold``) give counts of edge pixels found in
both, in the reconstruction only and in the original only: the mergeable state. Per rate
point the counts summed over every image give one F1 score (a pooled value, never a mean of
per-image F1). No labels are needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.metrics.base import Column, Plot, Value
from bench.tasks import Table, Task

if TYPE_CHECKING:
    from bench.datasets import Sample
    from bench.records import Record

_F1 = Column(
    "edge_f1", "edge F1", "%", True, scale=100.0, digits=2, bd=True, record="edge_f1",
    plot=Plot("rd_edge_f1", "edge F1 [%]", "edge F1 against bpp"),
)  # fmt: skip
_EDGES = Column("edge_pixels", "edge pixels", higher_is_better=None, digits=0)


def edge_map(image: np.ndarray, threshold: float) -> np.ndarray:
    """Pixels whose grey level differs from the right or lower neighbour's by more than
    ``threshold``."""
    grey = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    edges = np.zeros(grey.shape, dtype=bool)
    edges[:, :-1] |= np.abs(np.diff(grey, axis=1)) > threshold
    edges[:-1, :] |= np.abs(np.diff(grey, axis=0)) > threshold
    return edges


def f1(both: int, extra: int, missed: int) -> float:
    """F1 of edge pixels; 1.0 where neither image has an edge."""
    total = 2 * both + extra + missed
    return 1.0 if total == 0 else 2 * both / total


class ToyTask(Task):
    """Edge agreement between each reconstruction and its original."""

    name = "toy"
    description = "edge agreement of each reconstruction with its original (a test plugin)"
    aggregation = "edge counts summed over every image of a rate point, then one F1"

    def __init__(self, *, threshold: float = 32.0) -> None:
        if threshold <= 0:
            raise ValueError(f"threshold must be > 0, got {threshold}")
        self.options = {"threshold": float(threshold)}

    @property
    def threshold(self) -> float:
        return float(self.options["threshold"])

    @property
    def identity(self) -> str:
        return f"{self.name}:threshold={self.threshold:g}"

    @property
    def record_columns(self) -> tuple[Column, ...]:
        return (
            Column("edge_f1", "edge F1", "%", True, scale=100.0, digits=2),
            Column("edge_counts", "edge counts", hidden=True),
        )

    @property
    def aggregate_columns(self) -> tuple[Column, ...]:
        return (_F1, _EDGES)

    @classmethod
    def known_columns(cls) -> tuple[Column, ...]:
        return (_F1, _EDGES)

    @classmethod
    def default_rules(cls) -> tuple[Mapping[str, Any], ...]:
        return ({"kind": "tolerance", "metric": "edge_f1", "abs": 0.001},)

    def score(
        self, sample: Sample, reconstructions: Sequence[np.ndarray]
    ) -> list[dict[str, Value]]:
        original = edge_map(sample.image, self.threshold)
        rows: list[dict[str, Value]] = []
        for image in reconstructions:
            found = edge_map(image, self.threshold)
            both = int(np.count_nonzero(found & original))
            extra = int(np.count_nonzero(found & ~original))
            missed = int(np.count_nonzero(~found & original))
            rows.append(
                {"edge_f1": f1(both, extra, missed), "edge_counts": f"{both}:{extra}:{missed}"}
            )
        return rows

    def aggregate(self, records: Sequence[Record]) -> dict[str, float]:
        states = [str(c) for r in records if (c := r.get("edge_counts"))]
        if not states:
            return {}
        both, extra, missed = (
            sum(column) for column in zip(*(map(int, s.split(":")) for s in states), strict=True)
        )
        return {"edge_f1": f1(both, extra, missed), "edge_pixels": float(both + missed)}

    def tables(self, rows: Sequence[tuple[str, Mapping[str, float]]]) -> dict[str, Table]:
        body: list[list[Any]] = [["rate point", "edge F1"]]
        body += [[label, values["edge_f1"]] for label, values in rows if "edge_f1" in values]
        if len(body) == 1:
            return {}
        return {"edge_agreement": Table("Edge F1 per rate point [%]", body, scale=100.0, digits=2)}
