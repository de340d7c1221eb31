"""A run directory: records as they complete, the manifest, and the derived tables.

Layout of ``RUN_DIR``:
    manifest.json      how the numbers were made (command, versions, machine, git, times)
    records.csv        one row per (image, codec, rate point), appended as each completes
    records.parquet    the same rows, rewritten at checkpoints and at the end
    aggregates.csv     one row per (codec, rate point)
    per_class_iou.csv  per-class IoU per rate point (when segmentation ran)
    plots/             rd_psnr, rd_ms_ssim (and rd_miou) as PNG and SVG
    report.html        the self-contained HTML report (``bench report RUN_DIR``)
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import IO, Any

from bench.errors import UsageError
from bench.records import (
    COLUMNS,
    INT_COLUMNS,
    TEXT_COLUMNS,
    Record,
    latest_per_key,
    read_csv,
    to_row,
)

RECORDS_CSV = "records.csv"
RECORDS_PARQUET = "records.parquet"
MANIFEST = "manifest.json"
AGGREGATES_CSV = "aggregates.csv"
CLASS_TABLE_CSV = "per_class_iou.csv"
PLOTS = "plots"
REPORT_HTML = "report.html"

_PARQUET_EVERY_S = 30.0


def write_atomic(path: Path, text: str) -> None:
    """Write a text file so that readers see the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_parquet(records: list[Record], path: Path) -> None:
    """Write records to Parquet (atomically), with the CSV's column order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([vars(r) for r in records], schema=_schema())
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def _schema() -> Any:
    import pyarrow as pa

    def kind(column: str) -> Any:
        if column in TEXT_COLUMNS:
            return pa.string()
        return pa.int64() if column in INT_COLUMNS else pa.float64()

    return pa.schema([(c, kind(c)) for c in COLUMNS])


class RunStore:
    """Appends records to a run directory as they complete.

    A run killed at any point keeps every record it finished in ``records.csv``; ``resume``
    reopens such a directory and reports what is already done.
    """

    def __init__(self, directory: Path, *, resume: bool = False) -> None:
        self.directory = directory
        self.csv_path = directory / RECORDS_CSV
        self.records: list[Record] = []
        if self.csv_path.exists() and self.csv_path.stat().st_size > 0:
            if not resume:
                raise UsageError(
                    f"{directory} already holds results; pass --resume to continue that run "
                    "or --out to write elsewhere"
                )
            self.records = read_csv(self.csv_path)
            with self.csv_path.open(newline="") as handle:
                header = next(csv.reader(handle), [])
            if header != COLUMNS:  # written by another bench version: rewrite in today's columns
                tmp = self.csv_path.with_name(f".{RECORDS_CSV}.tmp")
                with tmp.open("w", newline="") as handle:
                    writer = csv.DictWriter(handle, fieldnames=COLUMNS)
                    writer.writeheader()
                    writer.writerows(to_row(r) for r in self.records)
                tmp.replace(self.csv_path)
        directory.mkdir(parents=True, exist_ok=True)
        new_file = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
        self._handle: IO[str] = self.csv_path.open("a", newline="")
        self._writer = csv.DictWriter(self._handle, fieldnames=COLUMNS)
        if new_file:
            self._writer.writeheader()
            self._handle.flush()
        self._last_parquet = time.monotonic()

    def done_keys(self) -> set[tuple[str, str, str, float]]:
        """Keys of the records that succeeded (failed ones are tried again on resume)."""
        return {r.key for r in self.records if r.ok}

    def add(self, records: list[Record]) -> None:
        """Append records and flush them to disk."""
        for record in records:
            self._writer.writerow(to_row(record))
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.records.extend(records)
        if time.monotonic() - self._last_parquet > _PARQUET_EVERY_S:
            self.write_parquet()

    def final_records(self) -> list[Record]:
        """The latest record per key (a resumed run's retry replaces the earlier failure)."""
        return latest_per_key(self.records)

    def write_parquet(self) -> None:
        write_parquet(self.final_records(), self.directory / RECORDS_PARQUET)
        self._last_parquet = time.monotonic()

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_atomic(self.directory / MANIFEST, json.dumps(manifest, indent=2, default=str) + "\n")

    def close(self) -> None:
        self._handle.close()
