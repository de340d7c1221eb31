"""Faults of processes (issue 14, items 4 and 7): real signals to real `bench run` processes.

A second run into a locked run directory is refused; SIGTERM stops a run like Ctrl-C (records
kept, manifest `interrupted`, exit 143, resumable to the same records); after `kill -9` of the
main process its workers notice and exit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.errors import UsageError
from bench.lock import RunLock
from bench.records import read_csv

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="uses /proc and POSIX signals"
)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Eight 256x320 smooth images: enough work that a run can be caught in the middle."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:256, 0:320]
    for i in range(8):
        base = 128 + 80 * np.sin(x / (11 + i)) * np.cos(y / (13 + i))
        pixels = base[..., None] + rng.normal(0, 6, (256, 320, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / f"im{i}.png")
    return root


def bench_run(images: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "bench.cli", "run", "--codecs", "jpeg,webp,jpeg2000",
            "--rates", "jpeg=20,40,60,80", "--rates", "webp=20,40,60,80",
            "--rates", "jpeg2000=96,48,24,12", "--dataset", "folder", "--data-dir", str(images),
            "--out", str(out), *extra]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_rows(path: Path, rows: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().count("\n") > rows:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {rows} rows in {timeout} s")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def records_table(path: Path) -> list[tuple[object, ...]]:
    return sorted((r.image_id, r.codec, r.rate, r.sha256, r.psnr_rgb) for r in read_csv(path))


def test_a_locked_run_directory_refuses_a_second_writer(tmp_path):
    held = rf"another bench run \(process {os.getpid()}\)"
    with RunLock(tmp_path), pytest.raises(UsageError, match=held):
        RunLock(tmp_path).acquire()
    RunLock(tmp_path).acquire()  # released: free again


def test_a_second_run_into_the_same_out_is_refused_while_the_first_writes(images, tmp_path):
    out = tmp_path / "run"
    first = bench_run(images, out, "--workers", "1")
    try:
        wait_for_rows(out / "records.csv", 1)
        first.send_signal(signal.SIGSTOP)  # holds the lock, and cannot finish before the second
        second = bench_run(images, out, "--workers", "1", "--resume")
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2
        assert f"another bench run (process {first.pid})" in err
    finally:
        first.send_signal(signal.SIGCONT)
        first.communicate(timeout=300)
    assert first.returncode == 0
    records = read_csv(out / "records.csv")
    assert len(records) == len({r.slot for r in records}) == 8 * 12  # none doubled


def test_sigterm_stops_like_ctrl_c_and_resume_equals_an_uninterrupted_run(images, tmp_path):
    out = tmp_path / "run"
    process = bench_run(images, out, "--workers", "2")
    wait_for_rows(out / "records.csv", 6)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert "terminated: finished records are in" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    kept = read_csv(out / "records.csv")
    assert 6 <= len(kept) < 8 * 12 and len(kept) == len({r.slot for r in kept})
    resumed = bench_run(images, out, "--workers", "2", "--resume")
    resumed.communicate(timeout=300)
    clean = bench_run(images, tmp_path / "clean", "--workers", "2")
    clean.communicate(timeout=300)
    assert resumed.returncode == clean.returncode == 0
    expected = records_table(tmp_path / "clean" / "records.csv")
    assert len(expected) == 8 * 12
    assert records_table(out / "records.csv") == expected  # lost 0, duplicated 0


def wait_for_children(pid: int, count: int, timeout: float = 60.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [child for child in children(pid) if alive(child)]
        if len(found) >= count:
            return found
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not start {count} children in {timeout} s")


@pytest.mark.parametrize("when", ["after a record", "while the workers start"])
def test_workers_exit_when_the_main_process_is_killed(images, tmp_path, when):
    process = bench_run(images, tmp_path / "run", "--workers", "2")
    if when == "after a record":
        wait_for_rows(tmp_path / "run" / "records.csv", 1)
        workers = wait_for_children(process.pid, 1)
    else:  # two workers and the resource tracker exist, the workers still importing
        workers = wait_for_children(process.pid, 3)
    kill_and_expect_gone(process, workers, "workers outlived their main process")


def kill_and_expect_gone(process: subprocess.Popen[str], pids: list[int], message: str) -> None:
    """``kill -9`` the main process; every one of ``pids`` must exit within 30 s (those left
    are killed afterwards, so that a failure leaves nothing running)."""
    process.kill()
    process.wait(timeout=60)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(alive(pid) for pid in pids):
            time.sleep(0.2)
        assert not any(alive(pid) for pid in pids), message
    finally:
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        process.communicate(timeout=60)


def descendants(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        frontier = [child for parent in frontier for child in children(parent) if alive(child)]
        found += frontier
    return found


@pytest.mark.parametrize("when", ["while the workers code", "while the fork server imports"])
def test_forked_workers_exit_when_the_main_process_is_killed(images, tmp_path, when):
    """A learned codec's workers come from a fork server that imported torch and CompressAI:
    they, and the server, go when the main process is killed."""
    pytest.importorskip("compressai", reason="needs the learned extra (CompressAI)")
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "bench.cli", "run", "--codecs", "bmshj2018-factorized",
            "--rates", "bmshj2018-factorized=1,2,3,4,5,6,7,8", "--dataset", "folder", "--data-dir",
            str(images), "--out", str(out), "--workers", "2"]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Waiting for a record instead raced the end of the run: its 64 small jobs take seconds.
    forked = 4 if when == "while the workers code" else 1  # server, tracker, 2 workers; server
    deadline = time.monotonic() + 180
    while len(found := descendants(process.pid)) < forked and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(found) >= forked, f"bench run started {found}, expected {forked} processes"
    kill_and_expect_gone(process, found, "processes outlived their main process")


def _mount_small_tmpfs(directory: Path, size: str) -> bool:
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
        capture_output=True,
    )
    return done.returncode == 0


def test_a_disk_that_fills_up_mid_run_loses_nothing_and_resume_completes_it(images, tmp_path):
    disk = tmp_path / "small-disk"
    if not _mount_small_tmpfs(disk, "40k"):
        pytest.skip("needs root and mount(8) for a size-limited tmpfs")
    try:
        out = disk / "run"
        process = bench_run(images, out, "--workers", "1")
        _, err = process.communicate(timeout=300)
        assert process.returncode == 1, err
        assert "No space left on device" in err and "Traceback" not in err
        import shutil

        moved = tmp_path / "run"
        shutil.copytree(out, moved)
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)
    kept = read_csv(moved / "records.csv")
    assert 0 < len(kept) < 8 * 12 and len(kept) == len({r.slot for r in kept})
    resumed = bench_run(images, moved, "--workers", "1", "--resume")
    resumed.communicate(timeout=300)
    clean = bench_run(images, tmp_path / "clean", "--workers", "1")
    clean.communicate(timeout=300)
    assert resumed.returncode == clean.returncode == 0
    assert records_table(moved / "records.csv") == records_table(
        tmp_path / "clean" / "records.csv"
    )
