"""A run directory: records as they complete, the manifest, and the derived tables.

Layout of ``RUN_DIR``:
    manifest.json      how the numbers were made (command, versions, machine, git, times)
    records.csv        one row per (image, codec, rate point), appended as each completes
    records.parquet    the same rows, rewritten at checkpoints and at the end
    records.superseded.csv  records a resumed run set aside: made under other codec
                       options, metrics, inputs, task, data or rate points
    records.damaged.csv  rows of records.csv a resumed run set aside because they were
                       half-written (a full disk, a kill mid-write) or malformed
    aggregates.csv     one row per (codec, rate point)
    per_class_iou.csv  per-class IoU per rate point (when segmentation ran)
    bd.csv             BD-rate and BD-quality of every ordered codec pair, per BD metric
    plots/             rd_psnr, rd_ms_ssim (and rd_miou) as PNG and SVG
    report.html        the self-contained HTML report (``bench report RUN_DIR``)
"""

from __future__ import annotations

import contextlib
import csv
import enum
import io
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench.errors import UsageError
from bench.records import (
    INT_COLUMNS,
    TEXT_COLUMNS,
    DamagedRow,
    Record,
    as_dict,
    columns,
    latest_per_key,
    read_csv,
    read_records,
    to_row,
    value_columns,
)

RECORDS_CSV = "records.csv"
RECORDS_PARQUET = "records.parquet"
SUPERSEDED_CSV = "records.superseded.csv"
"""Records a resumed run replaced or no longer covers (other options, data, rate points)."""
DAMAGED_CSV = "records.damaged.csv"
"""Rows of records.csv a resumed run set aside as damaged (half-written or malformed)."""
MANIFEST = "manifest.json"  # written and read by bench.manifest
AGGREGATES_CSV = "aggregates.csv"
CLASS_TABLE_CSV = "per_class_iou.csv"
PLOTS = "plots"
REPORT_HTML = "report.html"

_PARQUET_EVERY_S = 30.0

log = logging.getLogger(__name__)


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path to write ``path`` through: moved over ``path`` when the block ends,
    removed when it fails, so a reader never sees a partial file and a full disk leaves no
    temporary file behind."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, text: str) -> None:
    """Write a text file so that readers see the old or the new content, never a mix; a
    failed write (a full disk) leaves the old file and no temporary file behind."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8", errors="backslashreplace")


def write_records(path: Path, names: list[str], records: Iterable[Record]) -> None:
    """Write ``records`` as a records CSV with the columns ``names``, atomically."""
    with replacing(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(to_row(r) for r in records)


def write_parquet(records: list[Record], path: Path) -> None:
    """Write records to Parquet (atomically), with the CSV's column order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = columns(value_columns(records))
    table = pa.Table.from_pylist([as_dict(r) for r in records], schema=_schema(names, records))
    with replacing(path) as tmp:
        pq.write_table(table, tmp)


def _schema(names: list[str], records: list[Record]) -> Any:
    """Text, integer or float per column; a metric or task column is text when any of its
    values is text (e.g. a confusion matrix), else float."""
    import pyarrow as pa

    text = {k for r in records for k, v in r.values.items() if isinstance(v, str)}

    def kind(column: str) -> Any:
        if column in TEXT_COLUMNS or column in text:
            return pa.string()
        return pa.int64() if column in INT_COLUMNS else pa.float64()

    return pa.schema([(c, kind(c)) for c in names])


def _holds_no_rows(path: Path) -> bool:
    """Whether ``path`` is a records CSV of its header alone (no record, no damaged row)."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    try:
        read = read_records(path)
    except (OSError, UnicodeDecodeError):
        return False
    return not read.records and not read.damaged


class Reason(enum.Enum):
    """Why a resumed run set a record aside: each value is the message's middle."""

    REDONE_FAILED = "failed record(s) were done again; the failed attempts were moved to"
    REDONE = "record(s) were done again; the earlier ones were moved to"
    OTHER_IMAGES = "record(s) of images this run does not sweep were moved to"
    OTHER_POINTS = "record(s) of rate points this run does not sweep were moved to"
    OTHER_OPTIONS = "record(s) made under other codec options were moved to"
    OTHER_METRICS = "record(s) made under other metrics than this run's were moved to"
    OTHER_TASK = "record(s) made under another task than this run's were moved to"
    UNDESCRIBED = (
        "record(s) of a codec that neither this run nor the run's earlier manifest "
        "describes were moved to"
    )


@dataclass(frozen=True)
class SetAside:
    """How many records ``RunStore.keep_only`` moved to records.superseded.csv, per codec
    and why, in the order the records were first met."""

    groups: dict[tuple[str, Reason], int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """All records moved."""
        return sum(self.groups.values())

    def count(self, why: Reason, codec: str | None = None) -> int:
        """Records moved for ``why`` (of ``codec`` only, when given)."""
        return sum(n for (c, w), n in self.groups.items() if w is why and codec in (None, c))

    def messages(self) -> list[str]:
        """One line per codec and reason, for the run's log and its manifest's warnings,
        e.g. ``jpeg: 3 record(s) made under other codec options were moved to
        records.superseded.csv``."""
        return [
            f"{codec}: {n} {why.value} {SUPERSEDED_CSV}" for (codec, why), n in self.groups.items()
        ]


class RunStore:
    """Appends records to a run directory as they complete.

    A run killed at any point keeps every record it finished in ``records.csv``; ``resume``
    reopens such a directory and reports what is already done.
    """

    def __init__(
        self,
        directory: Path,
        *,
        resume: bool = False,
        value_columns: list[str] | None = None,
        adopt: Callable[[Record], bool] | None = None,
    ) -> None:
        """Open ``directory``'s records; on ``resume``, ``adopt`` may complete each record
        read (e.g. an older bench version's) and returns whether it changed it; changed
        records are written back."""
        self.directory = directory
        self.csv_path = directory / RECORDS_CSV
        self.records: list[Record] = []
        wanted = list(value_columns or [])
        if not resume and _holds_no_rows(self.csv_path):
            # A run that failed before its first record (no cluster, a full disk) left its
            # header: nothing to lose, so a plain rerun starts the file again.
            self.csv_path.unlink()
        if self.csv_path.exists() and self.csv_path.stat().st_size > 0:
            if not resume:
                raise UsageError(
                    f"{directory} already holds results; pass --resume to continue that run "
                    "or --out to write elsewhere"
                )
            read = read_records(self.csv_path)
            self.records, header = read.records, read.header
            if read.damaged:
                # Set the damaged rows aside, then drop them (good rows stay byte for byte);
                # their keys are not done, so this run does them again.
                self._set_aside(read.damaged)
                head = io.StringIO()
                csv.writer(head).writerow(header)
                with replacing(self.csv_path) as tmp, tmp.open("w", newline="") as handle:
                    handle.write(head.getvalue())
                    handle.writelines(f"{line}\r\n" for line in read.lines)
            elif not read.ends_with_newline:
                # A complete last row without its line end: the next row starts a fresh line.
                with self.csv_path.open("a", newline="") as handle:
                    handle.write("\r\n")
            adopted = [adopt(record) for record in self.records] if adopt else []
            held = [c for c in header if c not in columns()]
            self.columns = columns(list(dict.fromkeys([*held, *wanted])))
            if header != self.columns or any(adopted):  # another bench version: rewrite
                write_records(self.csv_path, self.columns, self.records)
        else:
            self.columns = columns(wanted)
        directory.mkdir(parents=True, exist_ok=True)
        new_file = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
        self._handle: IO[str] = self.csv_path.open("a", newline="")
        self._writer = csv.DictWriter(self._handle, fieldnames=self.columns, extrasaction="ignore")
        if new_file:
            self._writer.writeheader()
            self._handle.flush()
        self._last_parquet = time.monotonic()

    def _set_aside(self, damaged: list[DamagedRow]) -> None:
        """Append ``damaged`` rows to records.damaged.csv (line, what was wrong, the row as
        it stood) and say so."""
        aside = self.directory / DAMAGED_CSV
        new = not aside.is_file() or aside.stat().st_size == 0
        with aside.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["file", "line", "why", "row"])
            writer.writerows([RECORDS_CSV, d.line, d.why, d.text] for d in damaged)
            handle.flush()
            os.fsync(handle.fileno())
        log.warning(
            "%s: %d damaged row(s) (half-written or malformed, e.g. line %d: %s) set aside "
            "in %s; their records are done again",
            self.csv_path,
            len(damaged),
            damaged[0].line,
            damaged[0].why,
            aside,
        )

    def done_keys(self) -> set[tuple[object, ...]]:
        """Keys of the records that succeeded (failed ones, and those made under other
        options, metrics, inputs or task, are done again on resume)."""
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
        """The latest record per slot (a resumed run's retry replaces the earlier failure)."""
        return latest_per_key(self.records)

    def keep_only(self, conflict: Callable[[Record], Reason | None]) -> SetAside:
        """Keep in records.csv the latest record of each slot among those that can stand in
        this run (``conflict`` gives None for them, else why not); move every other record
        (one that cannot stand, or an earlier one of a slot done again) to
        ``records.superseded.csv``. Call after ``close``. Returns how many were moved, by
        codec and why."""
        reasons = [conflict(record) for record in self.records]
        latest = {r.slot: r for r, why in zip(self.records, reasons, strict=True) if why is None}
        kept: list[Record] = []
        moved: list[Record] = []
        groups: dict[tuple[str, Reason], int] = {}
        for record, why in zip(self.records, reasons, strict=True):
            if why is None and latest[record.slot] is record:
                kept.append(record)
                continue
            if why is None:
                why = Reason.REDONE if record.ok else Reason.REDONE_FAILED
            moved.append(record)
            groups[(record.codec, why)] = groups.get((record.codec, why), 0) + 1
        if not moved:
            return SetAside()
        aside = self.directory / SUPERSEDED_CSV
        earlier = read_csv(aside) if aside.is_file() else []
        set_aside = [*earlier, *moved]
        write_records(aside, columns(value_columns(set_aside)), set_aside)
        write_records(self.csv_path, self.columns, kept)
        self.records = kept
        return SetAside(groups)

    def write_parquet(self) -> None:
        write_parquet(self.final_records(), self.directory / RECORDS_PARQUET)
        self._last_parquet = time.monotonic()

    def close(self) -> None:
        self._handle.close()
