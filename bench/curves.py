"""Per-rate-point aggregates and rate-distortion plots."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from bench.metrics.fidelity import psnr_from_mse
from bench.metrics.segmentation import (
    decode_confusion,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
)
from bench.records import Record
from bench.store import AGGREGATES_CSV, CLASS_TABLE_CSV, PLOTS

REFERENCE_CODEC = "none"
"""The uncompressed reference row that task metrics are compared with."""
TARGET_BPP = "target_bpp"
"""``rate_param`` of the aggregates of a target-bpp run, whose ``rate`` is the target."""


@dataclass
class Aggregate:
    """One codec at one rate point, over the images of a dataset.

    Columns of ``aggregates.csv``:
        dataset, codec, rate_param, rate: the rate point (in a target-bpp run, rate_param is
            ``target_bpp`` and rate the target; each image's own rate value is in records).
        n_images: images coded successfully; n_failed: images that failed (see records).
        bpp_mean: mean of per-image bpp; bpp_pooled: total bits / total pixels.
        psnr_rgb_mean: mean of per-image PSNR; psnr_rgb_pooled: PSNR of the MSE pooled over
            every sample of the set (the CLIC convention); both in dB.
        ssim_rgb_mean, ms_ssim_rgb_mean: means of per-image values.
        ms_ssim_db_mean: mean of per-image -10 log10(1 - MS-SSIM).
        n_ms_ssim: images for which MS-SSIM is defined (too-small images have none).
        encode_s_mean, decode_s_mean: mean wall-clock seconds per image.
        miou, pixel_accuracy: from one confusion matrix summed over every image (the
            Cityscapes protocol), when segmentation ran; miou_drop: the ``none`` row's mIoU
            minus this one; iou_<class>: per-class IoU (extra columns, one per class).
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
    miou: float = math.nan
    pixel_accuracy: float = math.nan
    miou_drop: float = math.nan
    class_iou: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict[str, object]:
        """The CSV row: the fields, with ``class_iou`` spread into ``iou_<class>`` columns."""
        values = asdict(self)
        classes = values.pop("class_iou")
        values.update({f"iou_{name.replace(' ', '_')}": iou for name, iou in classes.items()})
        return values


AGGREGATE_COLUMNS = [f.name for f in fields(Aggregate) if f.name != "class_iou"]


def _mean(values: Iterable[float | None]) -> float:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return math.fsum(present) / len(present) if present else math.nan


def aggregate(records: Iterable[Record], class_names: Sequence[str] = ()) -> list[Aggregate]:
    """Aggregate records per (dataset, codec, rate point), in order of first appearance.

    ``class_names`` label the per-class IoU columns when records carry confusion matrices.
    """
    groups: dict[tuple[str, str, str, float], list[Record]] = {}
    for record in records:
        point = (
            (TARGET_BPP, record.target_bpp)
            if record.target_bpp is not None
            else (record.rate_param, record.rate)
        )
        groups.setdefault((record.dataset, record.codec, *point), []).append(record)
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
                **_segmentation(ok, class_names),
            )
        )
    references = {r.dataset: r.miou for r in rows if r.codec == REFERENCE_CODEC}
    for row in rows:
        if row.dataset in references:
            row.miou_drop = references[row.dataset] - row.miou
    return rows


def _segmentation(records: list[Record], class_names: Sequence[str]) -> dict[str, Any]:
    """Set-level mIoU, pixel accuracy and per-class IoU from the records' confusion matrices."""
    matrices = [decode_confusion(r.confusion) for r in records if r.confusion]
    if not matrices:
        return {}
    total = sum(matrices[1:], matrices[0])
    names = list(class_names) or [f"class {i}" for i in range(total.shape[0])]
    return {
        "miou": mean_iou(total),
        "pixel_accuracy": pixel_accuracy(total),
        "class_iou": dict(zip(names, iou_per_class(total).tolist(), strict=True)),
    }


def write_aggregates(rows: list[Aggregate], path: Path) -> None:
    """Write aggregates as CSV (full float precision)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as handle:
        class_columns = list(
            dict.fromkeys(k for row in rows for k in row.row() if k.startswith("iou_"))
        )
        writer = csv.DictWriter(handle, fieldnames=AGGREGATE_COLUMNS + class_columns)
        writer.writeheader()
        writer.writerows(row.row() for row in rows)
    tmp.replace(path)


def read_aggregates(path: Path) -> list[Aggregate]:
    """Read an aggregates CSV written by ``write_aggregates``."""
    types = {f.name: f.type for f in fields(Aggregate)}

    def parse(name: str, text: str) -> Any:
        return text if types[name] == "str" else int(text) if types[name] == "int" else float(text)

    def build(row: dict[str, str]) -> Aggregate:
        classes = {k[4:]: float(v) for k, v in row.items() if k.startswith("iou_") and v != ""}
        known = {k: parse(k, v) for k, v in row.items() if k in types and k != "class_iou"}
        return Aggregate(**known, class_iou=classes)

    with path.open(newline="") as handle:
        return [build(row) for row in csv.DictReader(handle)]


_PLOTS = {  # file stem: (aggregate column, axis label, scale)
    "rd_psnr": ("psnr_rgb_mean", "PSNR RGB [dB] (mean over images)", 1.0),
    "rd_ms_ssim": ("ms_ssim_db_mean", "MS-SSIM RGB [dB] (mean over images)", 1.0),
    "rd_miou": ("miou", "mIoU [%] (Cityscapes protocol)", 100.0),
}


def plot_rd(rows: list[Aggregate], directory: Path, title: str = "") -> list[Path]:
    """Draw bpp vs PSNR, vs MS-SSIM (dB) and, when segmentation ran, vs mIoU with the
    uncompressed mIoU as a horizontal line; one line per codec, as PNG and SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    codecs = [c for c in dict.fromkeys(r.codec for r in rows) if c != REFERENCE_CODEC]
    written = []
    for stem, (column, label, scale) in _PLOTS.items():
        if not any(math.isfinite(getattr(r, column)) for r in rows if r.codec != REFERENCE_CODEC):
            continue
        fig, ax = plt.subplots(figsize=(7, 4.8), dpi=120)
        for codec in codecs:
            points = sorted(
                (r.bpp_mean, scale * getattr(r, column))
                for r in rows
                if r.codec == codec
                and r.n_images
                and math.isfinite(getattr(r, column))
                and math.isfinite(r.bpp_mean)
            )
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", markersize=3.5, linewidth=1.4, label=codec)
        for reference in (r for r in rows if r.codec == REFERENCE_CODEC):
            value = getattr(reference, column)
            if math.isfinite(value):
                ax.axhline(
                    scale * value,
                    color="black",
                    linestyle="--",
                    linewidth=1.0,
                    label=f"uncompressed ({scale * value:.1f})",
                )
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


def write_class_table(rows: list[Aggregate], path: Path) -> bool:
    """Per-class IoU as a table: one row per class, one column per codec@rate. Returns
    whether there was anything to write (segmentation ran)."""
    with_classes = [r for r in rows if r.class_iou]
    if not with_classes:
        return False
    classes = list(with_classes[0].class_iou)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class", *(f"{r.codec}@{r.rate:g}" for r in with_classes)])
        writer.writerow(["mIoU", *(r.miou for r in with_classes)])
        for name in classes:
            writer.writerow([name, *(r.class_iou.get(name, math.nan) for r in with_classes)])
    tmp.replace(path)
    return True


def write_outputs(
    records: list[Record], directory: Path, class_names: Sequence[str] = (), title: str = ""
) -> tuple[list[Aggregate], list[Path]]:
    """Everything derived from a run's records: aggregates.csv, per_class_iou.csv (when
    segmentation ran) and the plots. Returns the aggregates and the plot files."""
    rows = aggregate(records, class_names)
    write_aggregates(rows, directory / AGGREGATES_CSV)
    write_class_table(rows, directory / CLASS_TABLE_CSV)
    return rows, plot_rd(rows, directory / PLOTS, title=title)
