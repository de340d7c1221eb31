"""One flat record per (image, codec, rate point), and its on-disk form.

A record has fixed identity and rate columns, then the columns of the metrics and the task
of its run (``values``), then its status. Everything that changes a record's numbers is in
its ``key``, so that a resumed run never keeps a record made under other options.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

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
    def key(self) -> tuple[Any, ...]:
        """Everything that changes the record's numbers: the slot, the codec's options, the
        per-image input's hash, the metrics and the task."""
        return (*self.slot, self.codec_options, self.input_sha256, self.metrics, self.task)

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


def to_row(record: Record) -> dict[str, Any]:
    """A record as a CSV row (None becomes an empty cell; floats keep full precision)."""
    return {k: ("" if v is None else v) for k, v in as_dict(record).items()}


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


def read_csv(path: Path) -> list[Record]:
    """All records of a records CSV."""
    with path.open(newline="") as handle:
        return [from_row(row) for row in csv.DictReader(handle)]
