"""Reading whatever a run directory holds, tolerating old, partial and interrupted runs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from bench.curves import RATE_COLUMNS, Aggregate, aggregate, columns_of, read_aggregates
from bench.errors import UsageError
from bench.manifest import RunManifest, read_manifest, rebuild_metrics, rebuild_task
from bench.metrics import Metric, create_metrics
from bench.metrics.base import Column
from bench.records import Record, latest_per_key, read_csv
from bench.references import ReferenceCurve, read_references
from bench.store import AGGREGATES_CSV, MANIFEST, RECORDS_CSV, write_atomic
from bench.tasks.task import Task

REPORT_OPTIONS = "report_options.json"
"""A run directory's choices for its report (``{"anchor": "jpeg"}``), kept by ``bench run`` and
``bench report`` so that a report written again shows the same summary."""


@dataclass
class RunData:
    """A run directory's contents as the report needs them.

    ``notes`` collects what was missing or unreadable, so the report can say so instead of
    failing. ``metrics`` and ``task`` are the run's objects (rebuilt from the manifest): the
    report takes every column's label, unit, scale and direction from them.
    """

    directory: Path
    manifest: RunManifest
    records: list[Record]
    aggregates: list[Aggregate]
    aggregates_source: str
    metrics: list[Metric] = field(default_factory=list)
    task: Task | None = None
    notes: list[str] = field(default_factory=list)
    has_manifest: bool = True
    references: list[ReferenceCurve] = field(default_factory=list)
    anchor: str | None = None

    @property
    def curves(self) -> list[Aggregate]:
        """The run's aggregates, then every reference curve's points (in the run's dataset,
        ``rate_param`` ``published``): what plots and BD tables compare."""
        dataset = self.aggregates[0].dataset if self.aggregates else self.dataset_tag
        return [*self.aggregates, *(a for c in self.references for a in c.aggregates(dataset))]

    def reference_notes(self) -> list[str]:
        """Where the reference curves' conventions differ from the run's: one line per
        difference, naming every curve it concerns."""
        compared = [c.name for c in self.columns if c.bd or c.plot is not None]
        images = len(self.images) or None
        labels: dict[str, list[str]] = {}
        for curve in self.references:
            for text in curve.conventions(self.dataset_tag, compared, images):
                labels.setdefault(text, []).append(curve.label)
        return [f"{', '.join(names)}: {text}" for text, names in labels.items()]

    @property
    def class_names(self) -> list[str]:
        return list(getattr(self.task, "class_names", ()) or self.manifest.class_names)

    @property
    def columns(self) -> list[Column]:
        """The aggregate columns of the run's metrics and task, in table order."""
        return columns_of(self.metrics, self.task)

    @property
    def table_columns(self) -> list[Column]:
        """The per-rate-point table's numeric columns: rate, metrics, task (without the
        per-class columns, which have a table of their own), times."""
        rate = [c for c in RATE_COLUMNS if c.name in ("bpp_mean", "bpp_pooled")]
        times = [c for c in RATE_COLUMNS if c.name.endswith("_s_mean")]
        known = [c for m in self.metrics for c in m.aggregate_columns]
        if self.task is not None:
            known += [c for c in self.task.known_columns()]
        return [*rate, *(c for c in known if not c.name.startswith("n_")), *times]

    @property
    def dataset_tag(self) -> str:
        if self.manifest.dataset_tag:
            return self.manifest.dataset_tag
        return self.records[0].dataset if self.records else self.directory.name

    @property
    def images(self) -> list[str]:
        """Image ids in the run's order: the manifest's list, then any others in the records."""
        listed = [str(i) for i in self.manifest.images]
        return list(dict.fromkeys([*listed, *(r.image_id for r in self.records)]))

    @property
    def codecs(self) -> list[str]:
        """Codec names in the run's order: the manifest's, then any others in the records."""
        listed = list(self.manifest.codecs)
        return list(dict.fromkeys([*listed, *(r.codec for r in self.records)]))


def load_run(directory: Path) -> RunData:
    """Read a run directory.

    Raises:
        UsageError: ``directory`` is not a directory, or holds neither records.csv nor
            manifest.json (the message names what is missing).
    """
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a directory; pass a bench run directory")
    records_path, manifest_path = directory / RECORDS_CSV, directory / MANIFEST
    if not records_path.is_file() and not manifest_path.is_file():
        raise UsageError(
            f"{directory} has no {RECORDS_CSV} and no {MANIFEST}: it is not a bench run "
            "directory (make one with `bench run ... --out DIR`)"
        )
    notes: list[str] = []
    manifest = RunManifest(status="unknown")
    has_manifest = False
    if manifest_path.is_file():
        try:
            manifest = read_manifest(directory)
            has_manifest = True
        except UsageError as exc:
            notes.append(f"{exc}; provenance is unknown")
    else:
        notes.append(f"no {MANIFEST}: the run's provenance is unknown")
    records: list[Record] = []
    if records_path.is_file():
        try:
            records = latest_per_key(read_csv(records_path))
        except (OSError, ValueError, TypeError) as exc:
            notes.append(f"{RECORDS_CSV} cannot be read ({exc}); no per-image results")
    else:
        notes.append(f"no {RECORDS_CSV}: the run finished no record")
    try:
        metrics = rebuild_metrics(manifest)
    except UsageError as exc:
        notes.append(f"the run's metrics cannot all be loaded here ({exc})")
        metrics = [m for m in create_metrics() if m.name in manifest.metrics]
    try:
        task = rebuild_task(manifest)
    except UsageError as exc:  # a task plugin that is not installed here
        notes.append(f"the run's task cannot be loaded here ({exc}); its columns are not shown")
        task = None
    aggregates, source = _aggregates(directory / AGGREGATES_CSV, records, metrics, task, notes)
    try:
        references = read_references(directory)
    except UsageError as exc:
        notes.append(str(exc))
        references = []
    return RunData(
        directory,
        manifest,
        records,
        aggregates,
        source,
        metrics,
        task,
        notes,
        has_manifest,
        references,
        read_report_options(directory, notes).get("anchor"),
    )


def write_report_options(directory: Path, *, anchor: str | None) -> None:
    """Keep the report's choices in the run directory (``anchor`` None: forget it)."""
    path = Path(directory) / REPORT_OPTIONS
    if anchor is None:
        path.unlink(missing_ok=True)
        return
    write_atomic(path, json.dumps({"anchor": anchor}, indent=1) + "\n")


def read_report_options(directory: Path, notes: list[str] | None = None) -> dict[str, str]:
    """The report's stored choices; {} when none (or unreadable, which ``notes`` records)."""
    path = Path(directory) / REPORT_OPTIONS
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        if notes is not None:
            notes.append(f"{path} cannot be read ({exc}); the report uses its defaults")
        return {}
    return (
        {k: str(v) for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}
    )


def _aggregates(
    path: Path,
    records: list[Record],
    metrics: list[Metric],
    task: Task | None,
    notes: list[str],
) -> tuple[list[Aggregate], str]:
    """The run's aggregates.csv, else aggregates recomputed from its records."""
    if path.is_file():
        try:
            return read_aggregates(path), AGGREGATES_CSV
        except (OSError, ValueError, TypeError, KeyError) as exc:
            notes.append(f"{AGGREGATES_CSV} cannot be read ({exc}); recomputed from the records")
    elif records:
        notes.append(f"no {AGGREGATES_CSV}: aggregates recomputed from {RECORDS_CSV}")
    try:
        return aggregate(records, metrics, task), f"recomputed from {RECORDS_CSV}"
    except Exception as exc:  # a damaged record must not stop the report
        notes.append(f"aggregates cannot be computed from the records ({exc})")
        return [], "none"
