"""Time the full default Kodak sweep of jpeg, webp and jpeg2000, and say where the time goes.

    python benchmarks/kodak_sweep.py --data-dir ../shared/datasets/kodak [--workers N]

Runs the real runner (same code as `bench run`) into a temporary directory and splits the
wall-clock time into codec (encode + decode), metrics (MSE/PSNR, SSIM, MS-SSIM) and overhead
(image loading, process start-up, scheduling, writing records, aggregates and plots).
Run by hand; the figures go in the notes, not in a timed test.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench.datasets.kodak import KodakDataset
from bench.outputs import write_run_outputs
from bench.runner import plan_codec, run

CODECS = ("jpeg", "webp", "jpeg2000")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", help="the Kodak images (default: BENCH_KODAK_DIR or download)"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--limit", type=int, help="only the first N images")
    args = parser.parse_args()

    plans = [plan_codec(name) for name in CODECS]
    dataset = KodakDataset(data_dir=args.data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = run(dataset, plans, Path(tmp) / "run", workers=args.workers, limit=args.limit)
        write_run_outputs(result)  # what `bench run` does after the sweep
        wall = time.perf_counter() - start

    per_codec: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for record in result.records:
        row = per_codec[record.codec]
        row["records"] += 1
        row["encode"] += record.encode_s or 0.0
        row["decode"] += record.decode_s or 0.0
        row["metrics"] += record.metrics_s or 0.0
    failed = sum(1 for r in result.records if not r.ok)
    workers = max(args.workers, 1)
    busy = wall * workers  # process-seconds available
    codec_s = sum(r["encode"] + r["decode"] for r in per_codec.values())
    metrics_s = sum(r["metrics"] for r in per_codec.values())
    overhead_s = busy - codec_s - metrics_s

    images = len({r.image_id for r in result.records})
    print(
        f"default Kodak sweep: {images} images, {len(result.records)} records "
        f"({failed} failed), {workers} worker(s), {os.cpu_count()} CPU(s)"
    )
    print(f"wall clock: {wall:.1f} s  ({1000 * wall / len(result.records):.1f} ms per record)\n")
    print(
        f"{'codec':<10} {'records':>7} {'encode s':>9} {'decode s':>9} {'metrics s':>9} "
        f"{'ms/record':>9}"
    )
    for codec, row in per_codec.items():
        total = row["encode"] + row["decode"] + row["metrics"]
        print(
            f"{codec:<10} {int(row['records']):>7} {row['encode']:>9.1f} {row['decode']:>9.1f} "
            f"{row['metrics']:>9.1f} {1000 * total / row['records']:>9.1f}"
        )
    print(f"\nprocess-seconds ({workers} x {wall:.1f} s = {busy:.1f}):")
    for label, seconds in (
        ("codec (encode+decode)", codec_s),
        ("metrics", metrics_s),
        ("overhead", overhead_s),
    ):
        print(f"  {label:<22} {seconds:>7.1f} s  {100 * seconds / busy:>5.1f} %")


if __name__ == "__main__":
    main()
