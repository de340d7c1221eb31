"""Time bench against CompressAI's own tools on the same work, and compare the numbers.

    python benchmarks/vs_compressai.py --data-dir ../shared/datasets/kodak [--workers 2]
        [--suite classical|learned|tic|all]

classical: runs, in turn and each in a fresh process, ``python -m compressai.utils.bench jpeg
-q 10,20,...,90 -j N DIR`` (with OMP_NUM_THREADS=1, its best setting on a small machine) and
``bench run --codecs jpeg --rates jpeg=10,...,90 --workers N`` on the same images.

learned: makes a random-weight ``bmshj2018-hyperprior`` quality-3 checkpoint (seeded,
``update(force=True)``, its state dict saved), then runs ``python -m
compressai.utils.eval_model checkpoint DIR -a bmshj2018-hyperprior -p q3.pth.tar`` (default
threads, as a user would) and ``bench run --codecs bmshj2018-hyperprior --rates
bmshj2018-hyperprior=3 --codec-option bmshj2018-hyperprior.weights=q3.pth.tar --workers N``,
both with real entropy coding. bench's bpp is compared after removing what its bitstream adds
to CompressAI's strings (``header_bytes`` and the four-byte length of each string).

Prints each tool's wall time, CPU time (user + system of the child processes) and peak memory
(the largest child's maximum resident set), the wall-time ratio, and the largest difference of
the means of bpp, PSNR and MS-SSIM. Run by hand; the figures go in the notes and the README,
never in a timed test.
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
ARCHITECTURE = "bmshj2018-hyperprior"
STRINGS = 2  # the hyperprior's two latents (y and z), each framed with a four-byte length
MAKE_CHECKPOINT = """
import sys, torch
from compressai.zoo import bmshj2018_hyperprior
torch.manual_seed(0)
net = bmshj2018_hyperprior(quality=3, pretrained=False)
net.update(force=True)
torch.save(net.state_dict(), sys.argv[1])
"""


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """Run ``command`` under a fresh measuring process (so peak memory is its own): wall
    seconds until the command's own process exits (what a user waits for), CPU seconds (user +
    system of the whole tree, processes that outlive it included) and peak RSS in MB of its
    largest process."""
    with tempfile.NamedTemporaryFile("w+", suffix=".json") as usage:
        done = subprocess.run(
            [sys.executable, __file__, "--measure-into", usage.name, "--", *command],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
        measured = json.loads(Path(usage.name).read_text())
    return measured["wall"], measured["cpu"], measured["rss_mb"], done.stdout


def measure_into(path: str, command: list[str]) -> int:
    """Run ``command`` and write its wall time (to its own exit), its tree's CPU time and
    largest peak RSS to ``path``.

    This process becomes the subreaper of the tree (Linux), so that processes the command's
    main process does not wait for (a fork server and the workers it forked) are reaped here
    and counted too."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    start = time.perf_counter()
    done = subprocess.run(command, check=False)
    wall = time.perf_counter() - start
    while True:  # the orphans re-parented here, once they exit
        try:
            os.wait()
        except ChildProcessError:
            break
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime
    Path(path).write_text(json.dumps({"wall": wall, "cpu": cpu, "rss_mb": usage.ru_maxrss / 1024}))
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


def learned_bench_means(run_dir: Path) -> dict[str, float]:
    """Means over bench's records of PSNR, MS-SSIM and the bpp of CompressAI's strings alone
    (bytes less ``header_bytes`` and the strings' length fields)."""
    with (run_dir / "records.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["codec"] == ARCHITECTURE]
    if not rows or any(r["status"] != "ok" for r in rows):
        sys.exit(f"bench's run in {run_dir} has failed records")
    payload = [
        8
        * (int(r["bytes"]) - int(float(r["header_bytes"])) - 4 * STRINGS)
        / (int(r["height"]) * int(r["width"]))
        for r in rows
    ]
    return {
        "bpp": sum(payload) / len(rows),
        "psnr": sum(float(r["psnr_rgb"]) for r in rows) / len(rows),
        "ms-ssim": sum(float(r["ms_ssim_rgb"]) for r in rows) / len(rows),
    }


def report(theirs: tuple[float, float, float, str], ours: tuple[float, float, float, str],
           other: str) -> None:  # fmt: skip
    print(f"{'tool':<12} {'wall [s]':>9} {'CPU [s]':>8} {'peak RSS [MB]':>14}")
    for name, (wall, cpu, rss, _) in ((other, theirs), ("bench", ours)):
        print(f"{name:<12} {wall:>9.1f} {cpu:>8.1f} {rss:>14.0f}")
    print(f"wall-time ratio {other} / bench: {theirs[0] / ours[0]:.2f}x "
          f"(bench / {other}: {ours[0] / theirs[0]:.2f})")  # fmt: skip


def classical(python: str, bench: list[str], data: str, workers: int) -> None:
    qualities = ",".join(str(q) for q in QUALITIES)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        theirs = timed(
            [python, "-m", "compressai.utils.bench", "jpeg", "-q", qualities,
             "-j", str(workers), data],
            env,
        )  # fmt: skip
        ours = timed(
            [*bench, "run", "--codecs", "jpeg", "--rates", f"jpeg={qualities}", "--dataset",
             "kodak", "--data-dir", data, "--workers", str(workers), "--out",
             str(Path(tmp) / "run")],
            dict(os.environ),
        )  # fmt: skip
        mine = bench_means(Path(tmp) / "run")
    other = compressai_means(theirs[3])
    print("classical: JPEG q10..90")
    report(theirs, ours, "compressai")
    for metric in ("bpp", "psnr", "ms-ssim"):
        worst = max(abs(mine[q][metric] - other[q][metric]) for q in QUALITIES)
        print(f"largest difference of the per-quality mean {metric}: {worst:.3g}")


def learned(python: str, bench: list[str], data: str, workers: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = str(Path(tmp) / "q3.pth.tar")
        subprocess.run([python, "-c", MAKE_CHECKPOINT, checkpoint], check=True)
        theirs = timed(
            [python, "-m", "compressai.utils.eval_model", "checkpoint", data,
             "-a", ARCHITECTURE, "-p", checkpoint],
            dict(os.environ),
        )  # fmt: skip
        ours = timed(
            [*bench, "run", "--codecs", ARCHITECTURE, "--rates", f"{ARCHITECTURE}=3",
             "--codec-option", f"{ARCHITECTURE}.weights={checkpoint}", "--dataset", "kodak",
             "--data-dir", data, "--workers", str(workers), "--out", str(Path(tmp) / "run")],
            dict(os.environ),
        )  # fmt: skip
        mine = learned_bench_means(Path(tmp) / "run")
    results = json.loads(theirs[3][theirs[3].index("{") :])["results"]
    other = {"bpp": results["bpp"][0], "psnr": results["psnr-rgb"][0],
             "ms-ssim": results["ms-ssim-rgb"][0]}  # fmt: skip
    print(f"learned: random-weight {ARCHITECTURE} quality 3, real entropy coding")
    report(theirs, ours, "eval_model")
    for metric in ("bpp", "psnr", "ms-ssim"):
        print(f"{metric}: eval_model {other[metric]:.7g}, bench {mine[metric]:.7g}, "
              f"difference {abs(mine[metric] - other[metric]):.3g}")  # fmt: skip


TIC = "tic-hp"
TIC_QUALITY = 3
TIC_EVAL = """
import json, sys
from pathlib import Path
import torch
from compressai.utils.eval_model.__main__ import collect_images, eval_model
from bench.codecs import create_codec

class Contract(torch.nn.Module):
    # bench's TIC model with CompressAI's decompress contract (a dict with x_hat)
    def __init__(self, model):
        super().__init__()
        self.model = model
    def compress(self, x):
        return self.model.compress(x)
    def decompress(self, strings, shape):
        return {"x_hat": self.model.decompress(strings, shape)}

model = create_codec("tic-hp", {"weights": "random"}).model(int(sys.argv[2])).model
paths = [Path(p) for p in collect_images(sys.argv[1])]
with torch.no_grad():
    metrics = eval_model(Contract(model), Path("."), Path(sys.argv[1]), paths,
                         architecture="tic-hp", half=False, per_image=False)
print(json.dumps(dict(metrics)))
"""


def tic_bench_means(run_dir: Path) -> dict[str, float]:
    """Means over bench's tic-hp records of PSNR, MS-SSIM and the bpp of the entropy-coded
    strings alone (bytes less ``header_bytes``: the header and each tile's lengths)."""
    with (run_dir / "records.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["codec"] == TIC]
    if not rows or any(r["status"] != "ok" for r in rows):
        sys.exit(f"bench's run in {run_dir} has failed records")
    payload = [
        8 * (int(r["bytes"]) - int(float(r["header_bytes"]))) / (int(r["height"]) * int(r["width"]))
        for r in rows
    ]
    return {
        "bpp": sum(payload) / len(rows),
        "psnr": sum(float(r["psnr_rgb"]) for r in rows) / len(rows),
        "ms-ssim": sum(float(r["ms_ssim_rgb"]) for r in rows) / len(rows),
    }


def tic(python: str, bench: list[str], data: str, workers: int) -> None:
    """bench's tic-hp (the seeded random stand-in, N=32, M=48) against CompressAI's
    ``eval_model`` loop (its ``eval_model`` function, default threads) on the same model."""
    theirs = timed([python, "-c", TIC_EVAL, data, str(TIC_QUALITY)], dict(os.environ))
    with tempfile.TemporaryDirectory() as tmp:
        ours = timed(
            [*bench, "run", "--codecs", TIC, "--rates", f"{TIC}={TIC_QUALITY}",
             "--codec-option", f"{TIC}.weights=random", "--dataset", "kodak", "--data-dir",
             data, "--workers", str(workers), "--out", str(Path(tmp) / "run")],
            dict(os.environ),
        )  # fmt: skip
        mine = tic_bench_means(Path(tmp) / "run")
    results = json.loads(theirs[3][theirs[3].index("{") :])
    other = {"bpp": results["bpp"], "psnr": results["psnr-rgb"],
             "ms-ssim": results["ms-ssim-rgb"]}  # fmt: skip
    print(f"learned: {TIC} (random stand-in) quality {TIC_QUALITY}, real entropy coding")
    report(theirs, ours, "eval_model")
    for metric in ("bpp", "psnr", "ms-ssim"):
        print(f"{metric}: eval_model {other[metric]:.7g}, bench {mine[metric]:.7g}, "
              f"difference {abs(mine[metric] - other[metric]):.3g}")  # fmt: skip


def main() -> None:
    if len(sys.argv) > 3 and sys.argv[1] == "--measure-into":
        sys.exit(measure_into(sys.argv[2], sys.argv[4:]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="a directory of the Kodak PNGs")
    parser.add_argument(
        "--workers", type=int, default=len(os.sched_getaffinity(0)),
        help="bench's processes (default: the cores), and compressai.utils.bench's",
    )  # fmt: skip
    parser.add_argument(
        "--suite", choices=("classical", "learned", "tic", "all"), default="all",
        help="learned: the zoo hyperprior; tic: tic-hp; all: the three",
    )  # fmt: skip
    args = parser.parse_args()
    data = str(Path(args.data_dir).resolve())
    python = sys.executable
    bench = [python, "-m", "bench.cli"]  # the bench importable here (PYTHONPATH or installed)
    if args.suite in ("classical", "all"):
        classical(python, bench, data, args.workers)
    if args.suite in ("learned", "all"):
        learned(python, bench, data, args.workers)
    if args.suite in ("tic", "all"):
        tic(python, bench, data, args.workers)


if __name__ == "__main__":
    main()
