"""Reading whatever a run directory holds, tolerating old, partial and interrupted runs."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.curves import Aggregate, aggregate, read_aggregates
from bench.errors import UsageError
from bench.records import Record, latest_per_key, read_csv
from bench.store import AGGREGATES_CSV, MANIFEST, RECORDS_CSV


@dataclass
class RunData:
    """A run directory's contents as the report needs them.

    ``notes`` collects what was missing or unreadable, so the report can say so instead of
    failing.
    """

    directory: Path
    manifest: dict[str, Any]
    records: list[Record]
    aggregates: list[Aggregate]
    aggregates_source: str
    notes: list[str] = field(default_factory=list)

    @property
    def class_names(self) -> list[str]:
        return list((self.manifest.get("segmenter") or {}).get("class_names") or [])

    @property
    def segmentation(self) -> bool:
        """Whether segmentation ran (from the manifest, or mIoU values in the records)."""
        if self.manifest.get("task") == "segmentation" or self.manifest.get("segmenter"):
            return True
        return any(r.miou is not None and not math.isnan(r.miou) for r in self.records)

    @property
    def dataset_tag(self) -> str:
        tag = (self.manifest.get("dataset") or {}).get("tag")
        if tag:
            return str(tag)
        return self.records[0].dataset if self.records else self.directory.name

    @property
    def images(self) -> list[str]:
        """Image ids in the run's order: the manifest's list, then any others in the records."""
        listed = [str(i) for i in self.manifest.get("images") or []]
        return list(dict.fromkeys([*listed, *(r.image_id for r in self.records)]))

    @property
    def codecs(self) -> list[str]:
        """Codec names in the run's order: the manifest's, then any others in the records."""
        listed = list(self.manifest.get("codecs") or {})
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
    manifest: dict[str, Any] = {}
    if manifest_path.is_file():
        try:
            loaded = json.loads(manifest_path.read_text())
            if isinstance(loaded, dict):
                manifest = loaded
            else:
                notes.append(f"{MANIFEST} is not a JSON object; provenance is unknown")
        except (OSError, ValueError) as exc:
            notes.append(f"{MANIFEST} cannot be read ({exc}); provenance is unknown")
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
    class_names = list((manifest.get("segmenter") or {}).get("class_names") or [])
    aggregates, source = _aggregates(directory / AGGREGATES_CSV, records, class_names, notes)
    return RunData(directory, manifest, records, aggregates, source, notes)


def _aggregates(
    path: Path, records: list[Record], class_names: list[str], notes: list[str]
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
        names = class_names if _class_count_fits(records, class_names) else []
        return aggregate(records, names), f"recomputed from {RECORDS_CSV}"
    except Exception as exc:  # a damaged record must not stop the report
        notes.append(f"aggregates cannot be computed from the records ({exc})")
        return [], "none"


def _class_count_fits(records: list[Record], class_names: list[str]) -> bool:
    """Whether the confusion matrices have as many classes as the manifest names."""
    sample = next((r.confusion for r in records if r.confusion), "")
    head = sample.partition(":")[0]
    return bool(class_names) and head.isdigit() and int(head) == len(class_names)
