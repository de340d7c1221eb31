"""Per-rate-point aggregates and rate-distortion plots."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from bench.metrics.fidelity import psnr_from_mse
from bench.records import Record


@dataclass
class Aggregate:
    """One codec at one rate point, over the images of a dataset.

    Columns of ``aggregates.csv``:
        dataset, codec, rate_param, rate: the rate point.
        n_images: images coded successfully; n_failed: images that failed (see records).
        bpp_mean: mean of per-image bpp; bpp_pooled: total bits / total pixels.
        psnr_rgb_mean: mean of per-image PSNR; psnr_rgb_pooled: PSNR of the MSE pooled over
            every sample of the set (the CLIC convention); both in dB.
        ssim_rgb_mean, ms_ssim_rgb_mean: means of per-image values.
        ms_ssim_db_mean: mean of per-image -10 log10(1 - MS-SSIM).
        n_ms_ssim: images for which MS-SSIM is defined (too-small images have none).
        encode_s_mean, decode_s_mean: mean wall-clock seconds per image.
    """

    dataset: str
    codec: str
    rate_param: str
    rate: float
    n_images: int
    n_failed: int
    bpp_mean: float
    bpp_pooled: float
    psnr_rgb_mean: float
    psnr_rgb_pooled: float
    ssim_rgb_mean: float
    ms_ssim_rgb_mean: float
    ms_ssim_db_mean: float
    n_ms_ssim: int
    encode_s_mean: float
    decode_s_mean: float


AGGREGATE_COLUMNS = [f.name for f in fields(Aggregate)]


def _mean(values: Iterable[float | None]) -> float:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return math.fsum(present) / len(present) if present else math.nan


def aggregate(records: Iterable[Record]) -> list[Aggregate]:
    """Aggregate records per (dataset, codec, rate point), in order of first appearance."""
    groups: dict[tuple[str, str, str, float], list[Record]] = {}
    for record in records:
        groups.setdefault(
            (record.dataset, record.codec, record.rate_param, record.rate), []
        ).append(record)
    rows = []
    for (dataset, codec, rate_param, rate), group in groups.items():
        ok = [r for r in group if r.ok]
        pixels = [r.height * r.width for r in ok if r.height and r.width]
        total_pixels = sum(pixels)
        pooled_mse = (
            math.fsum(
                r.mse * r.height * r.width for r in ok if r.mse is not None and r.height and r.width
            )
            / total_pixels
            if total_pixels
            else math.nan
        )
        rows.append(
            Aggregate(
                dataset=dataset,
                codec=codec,
                rate_param=rate_param,
                rate=rate,
                n_images=len(ok),
                n_failed=len(group) - len(ok),
                bpp_mean=_mean(r.bpp for r in ok),
                bpp_pooled=(8 * sum(r.bytes or 0 for r in ok) / total_pixels)
                if total_pixels
                else math.nan,
                psnr_rgb_mean=_mean(r.psnr_rgb for r in ok),
                psnr_rgb_pooled=psnr_from_mse(pooled_mse)
                if not math.isnan(pooled_mse)
                else math.nan,
                ssim_rgb_mean=_mean(r.ssim_rgb for r in ok),
                ms_ssim_rgb_mean=_mean(r.ms_ssim_rgb for r in ok),
                ms_ssim_db_mean=_mean(r.ms_ssim_db for r in ok),
                n_ms_ssim=sum(1 for r in ok if r.ms_ssim_rgb is not None),
                encode_s_mean=_mean(r.encode_s for r in ok),
                decode_s_mean=_mean(r.decode_s for r in ok),
            )
        )
    return rows


def write_aggregates(rows: list[Aggregate], path: Path) -> None:
    """Write aggregates as CSV (full float precision)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=AGGREGATE_COLUMNS)
        writer.writeheader()
        writer.writerows(asdict(row) for row in rows)
    tmp.replace(path)


def read_aggregates(path: Path) -> list[Aggregate]:
    """Read an aggregates CSV written by ``write_aggregates``."""
    types = {f.name: f.type for f in fields(Aggregate)}

    def parse(name: str, text: str) -> Any:
        return text if types[name] == "str" else int(text) if types[name] == "int" else float(text)

    with path.open(newline="") as handle:
        return [
            Aggregate(**{k: parse(k, v) for k, v in row.items()}) for row in csv.DictReader(handle)
        ]


_PLOTS = {
    "rd_psnr": ("psnr_rgb_mean", "PSNR RGB [dB] (mean over images)"),
    "rd_ms_ssim": ("ms_ssim_db_mean", "MS-SSIM RGB [dB] (mean over images)"),
}


def plot_rd(rows: list[Aggregate], directory: Path, title: str = "") -> list[Path]:
    """Draw bpp vs PSNR and bpp vs MS-SSIM (dB), one line per codec, as PNG and SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    codecs = list(dict.fromkeys(r.codec for r in rows))
    written = []
    for stem, (column, label) in _PLOTS.items():
        fig, ax = plt.subplots(figsize=(7, 4.8), dpi=120)
        for codec in codecs:
            points = sorted(
                (r.bpp_mean, getattr(r, column))
                for r in rows
                if r.codec == codec
                and r.n_images
                and math.isfinite(getattr(r, column))
                and math.isfinite(r.bpp_mean)
            )
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", markersize=3.5, linewidth=1.4, label=codec)
        ax.set_xlabel("bits per pixel (mean over images)")
        ax.set_ylabel(label)
        ax.set_title(title or "Rate-distortion")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right")
        fig.tight_layout()
        for suffix in ("png", "svg"):
            path = directory / f"{stem}.{suffix}"
            fig.savefig(path, metadata={"Date": None} if suffix == "svg" else None)
            written.append(path)
        plt.close(fig)
    return written
