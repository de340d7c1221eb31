"""One flat record per (image, codec, rate point), and its on-disk form."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

OK = "ok"
ERROR = "error"


@dataclass
class Record:
    """Everything measured for one image coded by one codec at one rate point.

    Columns (also the CSV header, in this order):
        dataset, image_id: which image; height, width: its size in pixels.
        conversion: how the file was turned into 8-bit RGB ("" when it already was).
        codec, codec_version, codec_options: the codec, its library version, its options (JSON).
        rate_param, rate: the codec's rate parameter and its value at this point.
        target_bpp: with --target-bpp, the target this point was searched for (``rate`` is
            then the value the search chose for this image); empty otherwise.
        bytes: length of the bitstream; bpp: 8 * bytes / (height * width).
        bpp_estimated, header_bytes, padding: for learned codecs, the rate the model's
            likelihoods predict, the bytes of bench's header inside ``bytes``, and the
            (top, bottom, left, right) padding the model needed.
        sha256: hash of the bitstream (equal hashes mean identical bytes).
        encode_s, decode_s, metrics_s: wall-clock seconds for each step.
        mse: mean squared error over height * width * 3 samples (for pooled PSNR).
        psnr_rgb (dB), ssim_rgb, ms_ssim_rgb, ms_ssim_db (= -10 log10(1 - ms_ssim_rgb)).
        With --task segmentation: miou and pixel_accuracy of this image's prediction,
        miou_drop (this image's mIoU on the uncompressed image minus on this reconstruction),
        segment_s (seconds), confusion (the image's confusion matrix, ``K:i,j,n;...``).
        status: "ok" or "error"; error: what went wrong; note: caveats (e.g. MS-SSIM undefined).
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
    bytes: int | None = None
    bpp: float | None = None
    bpp_estimated: float | None = None
    header_bytes: int | None = None
    padding: str = ""
    sha256: str = ""
    encode_s: float | None = None
    decode_s: float | None = None
    metrics_s: float | None = None
    mse: float | None = None
    psnr_rgb: float | None = None
    ssim_rgb: float | None = None
    ms_ssim_rgb: float | None = None
    ms_ssim_db: float | None = None
    miou: float | None = None
    pixel_accuracy: float | None = None
    miou_drop: float | None = None
    segment_s: float | None = None
    confusion: str = ""
    status: str = OK
    error: str = ""
    note: str = ""

    @property
    def key(self) -> tuple[str, str, str, float]:
        """Identity of the measurement: (dataset, image, codec, rate point), where the rate
        point is the target bpp in a target-bpp run and the rate value otherwise."""
        point = self.target_bpp if self.target_bpp is not None else self.rate
        return (self.dataset, self.image_id, self.codec, point)

    @property
    def ok(self) -> bool:
        return self.status == OK


COLUMNS = [f.name for f in fields(Record)]
INT_COLUMNS = frozenset({"height", "width", "bytes", "header_bytes"})
TEXT_COLUMNS = frozenset(f.name for f in fields(Record) if f.type == "str")


def to_row(record: Record) -> dict[str, Any]:
    """A record as a CSV row (None becomes an empty cell; floats keep full precision)."""
    return {k: ("" if v is None else v) for k, v in asdict(record).items()}


def from_row(row: dict[str, str]) -> Record:
    """Parse a CSV row written by ``to_row``."""
    values: dict[str, Any] = {}
    for name in COLUMNS:
        text = row.get(name, "")
        if name in TEXT_COLUMNS:
            values[name] = text
        elif text == "":
            values[name] = math.nan if name == "rate" else None
        elif name in INT_COLUMNS:
            values[name] = int(text)
        else:
            values[name] = float(text)
    return Record(**values)


def latest_per_key(records: Iterable[Record]) -> list[Record]:
    """The last record of each key: a resumed run's retry replaces the earlier failure."""
    return list({record.key: record for record in records}.values())


def read_csv(path: Path) -> list[Record]:
    """All records of a records CSV."""
    with path.open(newline="") as handle:
        return [from_row(row) for row in csv.DictReader(handle)]
