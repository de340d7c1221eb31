"""One flat record per (image, codec, rate point), and its on-disk form.

A record has fixed identity and rate columns, then the columns of the metrics and the task
of its run (``values``), then its status. Everything that changes a record's numbers is in
its ``key``, so that a resumed run never keeps a record made under other options.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

OK = "ok"
ERROR = "error"

Value = float | int | str | None

RATE_VALUE, TARGET_BPP = "rate", "target_bpp"
"""The two kinds of rate point: a value of the codec's own parameter, or a bpp target."""


@dataclass
class Record:
    """Everything measured for one image coded by one codec at one rate point.

    Fixed columns (the CSV header starts with them, in this order):
        dataset, image_id: which image; height, width: its size in pixels.
        conversion: how the file was turned into 8-bit RGB ("" when it already was).
        codec, codec_version, codec_options: the codec, its library version, its options (JSON).
        codec_identity: for codecs with weight files (learned codecs), their options (JSON)
            with each option that names weights (``weights``, ``checkpoint``) replaced by
            ``sha256:<hash>`` of the file that coded this rate point: the weights' content,
            not their path, tells records apart. Empty for codecs without weight files
            (classical codecs, ``random`` stand-ins) and in records of older bench versions.
        rate_param, rate: the codec's rate parameter and its value at this point.
        target_bpp: with --target-bpp, the target this point was searched for (``rate`` is
            then the value the search chose for this image); empty otherwise.
        codec_input, input_sha256: for codecs that take a per-image input (a quality map),
            where it came from (``uniform``, ``classes:person,car``, ``dir:PATH``) and the
            SHA-256 of the map the codec was given; empty otherwise.
        metrics: the metrics of the run (``psnr,ssim,ms-ssim``); task: the task and its model
            (``segmentation:espnetv2@<hash>``), "" for compression alone.
        bytes: length of the bitstream; bpp: 8 * bytes / (height * width).
        bpp_estimated, header_bytes, padding: for learned codecs, the rate the model's
            likelihoods predict, the bytes of bench's header inside ``bytes``, and the
            (top, bottom, left, right) padding the model needed.
        sha256: hash of the bitstream (equal hashes mean identical bytes).
        encode_s, decode_s, metrics_s: wall-clock seconds for each step.
    Then one column per record column of the run's metrics and task (``values``), e.g.
    ``mse``, ``psnr_rgb``, ``ssim_rgb``, ``ms_ssim_rgb``, ``ms_ssim_db``, ``miou``.
    Last: status ("ok" or "error"), error (what went wrong), note (caveats).
    """

    dataset: str
    image_id: str
    height: int | None = None
    width: int | None = None
    conversion: str = ""
    codec: str = ""
    codec_version: str = ""
    codec_options: str = ""
    codec_identity: str = ""
    rate_param: str = ""
    rate: float = math.nan
    target_bpp: float | None = None
    codec_input: str = ""
    input_sha256: str = ""
    metrics: str = ""
    task: str = ""
    bytes: int | None = None
    bpp: float | None = None
    bpp_estimated: float | None = None
    header_bytes: int | None = None
    padding: str = ""
    sha256: str = ""
    encode_s: float | None = None
    decode_s: float | None = None
    metrics_s: float | None = None
    values: dict[str, Value] = field(default_factory=dict)
    status: str = OK
    error: str = ""
    note: str = ""

    def __getattr__(self, name: str) -> Value:
        # Metric and task columns read like fixed ones: ``record.psnr_rgb``.
        values = self.__dict__.get("values")
        if values is not None and name in values:
            return values[name]
        raise AttributeError(f"{type(self).__name__} has no column {name!r}")

    def get(self, column: str) -> Value:
        """A fixed or a metric/task column; None where the record has no such value."""
        if column in FIXED:
            return getattr(self, column)  # type: ignore[no-any-return]
        return self.values.get(column)

    @property
    def point_kind(self) -> str:
        """``target_bpp`` for a searched point, ``rate`` for a value of the codec's parameter."""
        return TARGET_BPP if self.target_bpp is not None else RATE_VALUE

    @property
    def point(self) -> float:
        """The rate point: the target bpp in a target-bpp run, the rate value otherwise."""
        return self.target_bpp if self.target_bpp is not None else self.rate

    @property
    def slot(self) -> tuple[str, str, str, str, float]:
        """Where the record sits in a sweep: (dataset, image, codec, kind of point, point).
        A run directory keeps the latest record per slot."""
        return (self.dataset, self.image_id, self.codec, self.point_kind, self.point)

    @property
    def codec_key(self) -> str:
        """What made the codec's numbers: ``codec_identity`` where the record has one (the
        weights by content), else ``codec_options``."""
        return self.codec_identity or self.codec_options

    @property
    def key(self) -> tuple[Any, ...]:
        """Everything that changes the record's numbers: the slot, the codec (its options,
        its weights by content), the per-image input's hash, the metrics and the task."""
        return (*self.slot, self.codec_key, self.input_sha256, self.metrics, self.task)

    @property
    def ok(self) -> bool:
        return self.status == OK


_HEAD = [f.name for f in fields(Record) if f.name not in ("values", "status", "error", "note")]
_TAIL = ["status", "error", "note"]
FIXED = frozenset([*_HEAD, *_TAIL])
INT_COLUMNS = frozenset({"height", "width", "bytes", "header_bytes"})
TEXT_COLUMNS = frozenset(f.name for f in fields(Record) if f.type == "str")


def columns(value_columns: Sequence[str] = ()) -> list[str]:
    """The CSV header: fixed columns, then ``value_columns``, then status, error, note."""
    return [*_HEAD, *(c for c in value_columns if c not in FIXED), *_TAIL]


def value_columns(records: Iterable[Record]) -> list[str]:
    """The metric and task columns that ``records`` hold, in order of first appearance."""
    return list(dict.fromkeys(name for record in records for name in record.values))


def as_dict(record: Record) -> dict[str, Any]:
    """A record as one flat mapping of every column it has (None where empty)."""
    flat = {name: getattr(record, name) for name in _HEAD}
    flat.update(record.values)
    flat.update({name: getattr(record, name) for name in _TAIL})
    return flat


def _text(value: Any) -> Any:
    """A value as a CSV cell: None becomes empty, and text that cannot be written as UTF-8 (a
    file name's undecodable bytes, kept by Python as surrogates) is escaped reversibly."""
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            try:
                raw = value.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                raw = value.encode("utf-8", "backslashreplace")
            return raw.decode("utf-8", "backslashreplace")
    return value


def to_row(record: Record) -> dict[str, Any]:
    """A record as a CSV row (None becomes an empty cell; floats keep full precision)."""
    return {k: _text(v) for k, v in as_dict(record).items()}


def _parse_value(text: str) -> Value:
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def from_row(row: dict[str, str]) -> Record:
    """Parse a CSV row written by ``to_row`` (columns it does not have are left empty)."""
    fixed: dict[str, Any] = {}
    for name in (*_HEAD, *_TAIL):
        text = row.get(name) or ""
        if name in TEXT_COLUMNS:
            fixed[name] = text
        elif text == "":
            fixed[name] = math.nan if name == "rate" else None
        elif name in INT_COLUMNS:
            fixed[name] = int(text)
        else:
            fixed[name] = float(text)
    values = {
        name: _parse_value(text or "")
        for name, text in row.items()
        if name is not None and name not in FIXED
    }
    return Record(**fixed, values=values)


def latest_per_key(records: Iterable[Record]) -> list[Record]:
    """The last record of each slot: a resumed run's retry (or its recomputation under other
    options) replaces the earlier record, in the earlier one's place."""
    return list({record.slot: record for record in records}.values())


@dataclass
class DamagedRow:
    """A row of a records CSV that cannot be a record: half-written (a disk filled up or the
    run was killed mid-write), or with the wrong number of fields."""

    line: int
    """Line number in the file (1 is the header)."""
    text: str
    """The row as it stands in the file (without its line end)."""
    why: str


@dataclass
class RecordsFile:
    """A records CSV read back: its header, its records, and the rows that are damaged.

    ``lines`` holds, per record, the raw text of its row (so that a rewrite without the
    damaged rows leaves every good row byte for byte as it was).
    """

    header: list[str]
    records: list[Record]
    lines: list[str]
    damaged: list[DamagedRow]
    ends_with_newline: bool


def _check_row(header: list[str], cells: list[str]) -> Record:
    """The record of one CSV row; ValueError when it is not one (wrong number of fields,
    a number that does not parse, a status that is neither ok nor error)."""
    if len(cells) != len(header):
        raise ValueError(f"{len(cells)} fields where the header has {len(header)}")
    try:
        record = from_row(dict(zip(header, cells, strict=True)))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"a value does not parse ({exc})") from None
    if record.status not in (OK, ERROR):
        raise ValueError(f"status {record.status!r} is neither {OK!r} nor {ERROR!r}")
    return record


def read_records(path: Path) -> RecordsFile:
    """Read a records CSV, setting aside (not raising on) rows that cannot be records."""
    with path.open(newline="") as handle:
        text = handle.read()
    raw = io.StringIO(text, newline="").readlines()
    header: list[str] = []
    records: list[Record] = []
    lines: list[str] = []
    damaged: list[DamagedRow] = []
    consumed = 0

    def feed():  # type: ignore[no-untyped-def]
        nonlocal consumed
        for line in raw:
            consumed += 1
            yield line

    reader = csv.reader(feed())
    start = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            rest = "".join(raw[start:]).rstrip("\r\n")
            damaged.append(DamagedRow(start + 1, rest, f"not CSV ({exc})"))
            break
        row_text = "".join(raw[start:consumed]).rstrip("\r\n")
        number, start = start + 1, consumed
        if not header:
            header = cells
            continue
        if not cells:
            continue
        try:
            records.append(_check_row(header, cells))
            lines.append(row_text)
        except ValueError as exc:
            damaged.append(DamagedRow(number, row_text, str(exc)))
    return RecordsFile(header, records, lines, damaged, text == "" or text.endswith("\n"))


def read_csv(path: Path) -> list[Record]:
    """All records of a records CSV.

    Rows that cannot be records (a half-written last row, the wrong number of fields) are
    skipped with a warning; the file is not modified (``RunStore`` sets them aside on
    ``--resume``).
    """
    read = read_records(path)
    if read.damaged:
        where = ", ".join(str(d.line) for d in read.damaged)
        log.warning(
            "%s: skipped %d damaged row(s) (line %s: %s); `bench run ... --resume` sets them "
            "aside and redoes their records",
            path,
            len(read.damaged),
            where,
            read.damaged[0].why,
        )
    return read.records
