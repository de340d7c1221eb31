"""Time bench against CompressAI's own bench on the same JPEG sweep, and compare the numbers.

    python benchmarks/vs_compressai.py --data-dir ../shared/datasets/kodak [--workers 2]

Runs, in turn and each in a fresh process, ``python -m compressai.utils.bench jpeg -q
10,20,...,90 -j N DIR`` (with OMP_NUM_THREADS=1, its best setting on a small machine) and
``bench run --codecs jpeg --rates jpeg=10,...,90 --workers N`` on the same images. Prints
each tool's wall time, CPU time (user + system of the child processes) and peak memory (the
largest child's maximum resident set), the wall-time ratio, and the largest difference of the
per-quality means of bpp, PSNR and MS-SSIM. Run by hand; the figures go in the notes and the
README, never in a timed test.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUALITIES = tuple(range(10, 100, 10))


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """Run ``command`` under a fresh measuring process (so peak memory is its own): wall
    seconds, CPU seconds (user + system of the whole tree) and peak RSS in MB of its largest
    process."""
    with tempfile.NamedTemporaryFile("w+", suffix=".json") as usage:
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, __file__, "--measure-into", usage.name, "--", *command],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
        measured = json.loads(Path(usage.name).read_text())
    return wall, measured["cpu"], measured["rss_mb"], done.stdout


def measure_into(path: str, command: list[str]) -> int:
    """Run ``command`` and write its tree's CPU time and largest peak RSS to ``path``."""
    done = subprocess.run(command, check=False)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime
    Path(path).write_text(json.dumps({"cpu": cpu, "rss_mb": usage.ru_maxrss / 1024}))
    return done.returncode


def compressai_means(stdout: str) -> dict[int, dict[str, float]]:
    """Per-quality means from CompressAI's JSON: bpp, psnr (RGB), ms-ssim."""
    results = json.loads(stdout[stdout.index("{") :])["results"]
    return {
        q: {"bpp": results["bpp"][i], "psnr": results["psnr-rgb"][i]
            if "psnr-rgb" in results else results["psnr"][i],
            "ms-ssim": results["ms-ssim-rgb"][i]
            if "ms-ssim-rgb" in results else results["ms-ssim"][i]}
        for i, q in enumerate(QUALITIES)
    }  # fmt: skip


def bench_means(run_dir: Path) -> dict[int, dict[str, float]]:
    """Per-quality means from bench's aggregates.csv."""
    with (run_dir / "aggregates.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["codec"] == "jpeg"]
    return {
        int(float(r["rate"])): {
            "bpp": float(r["bpp_mean"]),
            "psnr": float(r["psnr_rgb_mean"]),
            "ms-ssim": float(r["ms_ssim_rgb_mean"]),
        }
        for r in rows
    }


def main() -> None:
    if len(sys.argv) > 3 and sys.argv[1] == "--measure-into":
        sys.exit(measure_into(sys.argv[2], sys.argv[4:]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="a directory of the Kodak PNGs")
    parser.add_argument("--workers", type=int, default=2, help="processes for both tools (2)")
    args = parser.parse_args()
    data = str(Path(args.data_dir).resolve())
    python = sys.executable
    bench = str(Path(python).with_name("bench"))
    qualities = ",".join(str(q) for q in QUALITIES)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ours_env = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        theirs = timed(
            [python, "-m", "compressai.utils.bench", "jpeg", "-q", qualities,
             "-j", str(args.workers), data],
            env,
        )  # fmt: skip
        ours = timed(
            [bench, "run", "--codecs", "jpeg", "--rates", f"jpeg={qualities}", "--dataset",
             "kodak", "--data-dir", data, "--workers", str(args.workers), "--out",
             str(Path(tmp) / "run")],
            ours_env,
        )  # fmt: skip
        mine = bench_means(Path(tmp) / "run")
    other = compressai_means(theirs[3])
    print(f"{'tool':<12} {'wall [s]':>9} {'CPU [s]':>8} {'peak RSS [MB]':>14}")
    for name, (wall, cpu, rss, _) in (("compressai", theirs), ("bench", ours)):
        print(f"{name:<12} {wall:>9.1f} {cpu:>8.1f} {rss:>14.0f}")
    print(f"wall-time ratio compressai / bench: {theirs[0] / ours[0]:.2f}x")
    for metric in ("bpp", "psnr", "ms-ssim"):
        worst = max(abs(mine[q][metric] - other[q][metric]) for q in QUALITIES)
        print(f"largest difference of the per-quality mean {metric}: {worst:.3g}")


if __name__ == "__main__":
    main()
