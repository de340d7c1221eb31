"""A published rate-distortion curve (or a paper's reported points) as bench compares it.

A reference curve is a list of points another party measured and published: CompressAI's
``results/image/kodak/vtm.json``, a paper's table. bench never re-runs it; it draws it dashed
beside the run's own curves, labelled "published", and includes it in BD tables. Its values
are kept under CompressAI's result keys where one exists (``bpp``, ``psnr-rgb``,
``ms-ssim-rgb``, ``encoding_time``, ``decoding_time``) and under bench's aggregate column
names otherwise (``miou``, ``ssim_rgb_mean``), so a CompressAI file reads back unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from bench.curves import Aggregate
from bench.errors import UsageError

__all__ = [
    "COMPRESSAI_KEYS",
    "PUBLISHED",
    "ReferenceCurve",
    "column_of",
]

PUBLISHED = "published"
"""The ``rate_param`` of a reference curve's aggregate rows: how plots and tables tell a
published point from one the run measured."""

COMPRESSAI_KEYS: dict[str, str] = {
    "bpp": "bpp_mean",
    "psnr-rgb": "psnr_rgb_mean",
    "ms-ssim-rgb": "ms_ssim_rgb_mean",
    "encoding_time": "encode_s_mean",
    "decoding_time": "decode_s_mean",
}
"""CompressAI's result keys and the aggregate column each one is (same convention: the mean
over images of the per-image value; PSNR of 8-bit RGB over all samples, peak 255)."""

Kind = Literal["curve", "points"]


def column_of(key: str) -> str:
    """The aggregate column a result key fills: CompressAI's keys map, bench's own column
    names stand for themselves."""
    return COMPRESSAI_KEYS.get(key, key)


@dataclass(frozen=True)
class ReferenceCurve:
    """One codec's published results on one dataset.

    Attributes:
        name: the codec as its source names it (``VTM``, ``bmshj2018-hyperprior``).
        dataset: the dataset the points were measured on (``kodak``, ``cityscapes-val``).
        results: values per key (CompressAI's keys or bench aggregate columns), one per
            point; ``bpp`` is required.
        source: where the numbers come from (a URL, a paper and its table).
        licence: the licence of the source's data, or "" when none is stated.
        description: the source's own description of the codec and its settings.
        images: how many images each point averages (Kodak: 24), when known.
        notes: conventions a user must know (8-bit or float reconstructions, test split).
        kind: ``curve`` (a sweep; drawn as a line) or ``points`` (a paper's table entries).
    """

    name: str
    dataset: str
    results: Mapping[str, tuple[float, ...]]
    source: str = ""
    licence: str = ""
    description: str = ""
    images: int | None = None
    notes: str = ""
    kind: Kind = "curve"
    origin: str = field(default="", compare=False)  # the file it was read from

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise UsageError(f"a reference curve needs a name ({self.origin or 'no file'})")
        if "bpp" not in self.results:
            raise UsageError(
                f"reference curve {self.name!r} ({self.origin or 'no file'}) has no 'bpp' "
                "values: give the rate of every point as bpp"
            )
        lengths = {key: len(values) for key, values in self.results.items()}
        if len(set(lengths.values())) > 1:
            raise UsageError(
                f"reference curve {self.name!r} ({self.origin or 'no file'}): its result lists "
                f"differ in length ({lengths}); every key needs one value per point"
            )

    @property
    def label(self) -> str:
        """The name shown in plots and tables: ``VTM (published)``."""
        return f"{self.name} ({PUBLISHED})"

    @property
    def points(self) -> int:
        return len(self.results["bpp"])

    def columns(self) -> dict[str, tuple[float, ...]]:
        """The values by aggregate column; ``ms_ssim_db_mean`` is derived from a mean
        MS-SSIM when the source gives none (see :meth:`conventions`)."""
        columns = {column_of(key): tuple(values) for key, values in self.results.items()}
        if "ms_ssim_rgb_mean" in columns and "ms_ssim_db_mean" not in columns:
            columns["ms_ssim_db_mean"] = tuple(_db(v) for v in columns["ms_ssim_rgb_mean"])
        return columns

    def aggregates(self, dataset: str | None = None) -> list[Aggregate]:
        """The points as aggregate rows (``rate_param`` ``published``, ``rate`` the point's
        index), in ``dataset`` (default: the curve's own), ordered by bpp."""
        columns = self.columns()
        fixed = {"bpp_mean", "bpp_pooled", "encode_s_mean", "decode_s_mean"}
        order = sorted(range(self.points), key=lambda i: columns["bpp_mean"][i])
        rows = []
        for index in order:
            bpp = columns["bpp_mean"][index]
            rows.append(
                Aggregate(
                    dataset=dataset or self.dataset,
                    codec=self.label,
                    rate_param=PUBLISHED,
                    rate=float(index),
                    n_images=self.images or 1,
                    n_failed=0,
                    bpp_mean=bpp,
                    bpp_pooled=_at(columns.get("bpp_pooled"), index),
                    encode_s_mean=_at(columns.get("encode_s_mean"), index),
                    decode_s_mean=_at(columns.get("decode_s_mean"), index),
                    values={
                        key: values[index] for key, values in columns.items() if key not in fixed
                    },
                )
            )
        return rows

    def conventions(
        self, dataset: str, columns: Sequence[str], images: int | None = None
    ) -> list[str]:
        """Why this curve may not compare one-to-one with a run on ``dataset`` scored with
        aggregate ``columns`` over ``images`` images: one phrase per difference, without the
        curve's name (callers group curves that share a phrase)."""
        found: list[str] = []
        own = self.columns()
        if _base(dataset) != _base(self.dataset):
            found.append(f"measured on {self.dataset}, this run on {dataset}: not the same images")
        elif images is not None and self.images is not None and images != self.images:
            found.append(
                f"the mean over {self.images} images of {self.dataset}; this run has {images}, "
                "and a subset moves every point"
            )
        given = {column_of(k) for k in self.results}
        if (
            "ms_ssim_db_mean" in columns
            and "ms_ssim_db_mean" not in given
            and "ms_ssim_rgb_mean" in own
        ):
            found.append(
                "MS-SSIM in dB is -10·log10(1 - mean MS-SSIM), as CompressAI plots it; "
                "bench's is the mean of per-image dB values, a fraction of a dB higher: "
                "compare MS-SSIM BD-rates with care"
            )
        missing = [c for c in columns if c not in own]
        if missing:
            found.append(f"no {', '.join(missing)}: not drawn there")
        if self.notes:
            found.append(self.notes)
        return found


def _db(value: float) -> float:
    return math.inf if value >= 1.0 else -10.0 * math.log10(1.0 - value)


def _at(values: Sequence[float] | None, index: int) -> float:
    return float(values[index]) if values is not None else math.nan


def _base(dataset: str) -> str:
    """A dataset tag without its split or options: ``kodak``, ``cityscapes``."""
    for separator in ("[", "-", ":", "/"):
        dataset = dataset.split(separator)[0]
    return dataset.strip().lower()
