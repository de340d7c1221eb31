"""The Ray executor on a local Ray instance started here (no network): the same records as a
local run, resume, a crashed worker costing only its job, resources by device."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (scripts/setup.sh ray)")

from bench.codecs import CODECS  # noqa: E402
from bench.datasets.kodak import KodakDataset  # noqa: E402
from bench.errors import UsageError  # noqa: E402
from bench.images import read_rgb8  # noqa: E402
from bench.ray_executor import RayExecutor, job_resources  # noqa: E402
from bench.records import read_csv  # noqa: E402
from bench.registry import Entry  # noqa: E402
from bench.runner import plan_codec, run  # noqa: E402

TESTS = Path(__file__).parent
SWEEP = {"jpeg": [20, 70], "webp": [30, 80], "jpeg2000": [48]}
COMPARED = ("status", "bytes", "bpp", "sha256", "mse", "psnr_rgb", "ssim_rgb", "ms_ssim_rgb")


@pytest.fixture(scope="module")
def local_ray(kodak: Path):
    """A local Ray instance of 2 CPUs whose workers can import tests/fake_codecs.py and know
    which image the segfaulting codec dies on (workers inherit the environment at start)."""
    victim = read_rgb8(kodak / "kodim02.png").pixels
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "BENCH_TEST_SEGFAULT_ID")}
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), saved["PYTHONPATH"]]))
    os.environ["BENCH_TEST_SEGFAULT_ID"] = str(int(victim[:4, :4].sum()))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _plans():
    return [plan_codec(name, rates=rates) for name, rates in SWEEP.items()]


def _keyed(records):
    return {(r.image_id, r.codec, r.rate): r for r in records}


def _same_records(a, b) -> None:
    left, right = _keyed(a), _keyed(b)
    assert set(left) == set(right)
    for key, record in left.items():
        for column in COMPARED:
            assert record.get(column) == right[key].get(column), (key, column)


def test_a_ray_run_makes_the_records_of_a_local_run(kodak, tmp_path, local_ray):
    dataset = KodakDataset(data_dir=kodak)
    local = run(dataset, _plans(), tmp_path / "local", workers=0, limit=3)
    remote = run(dataset, _plans(), tmp_path / "ray", executor=RayExecutor(), limit=3)
    assert len(remote.records) == 3 * 5 and all(r.ok for r in remote.records)
    _same_records(local.records, remote.records)
    # Streamed into the run directory: records.csv has them all, the manifest names Ray.
    assert len(read_csv(tmp_path / "ray" / "records.csv")) == 15
    manifest = (tmp_path / "ray" / "manifest.json").read_text()
    assert '"executor": "ray"' in manifest


def test_a_ray_run_resumes_like_a_local_one(kodak, tmp_path, local_ray):
    dataset = KodakDataset(data_dir=kodak)
    out = tmp_path / "ray"
    first = run(dataset, _plans(), out, executor=RayExecutor(), limit=2)
    assert len(first.records) == 10
    resumed = run(dataset, _plans(), out, executor=RayExecutor(), limit=3, resume=True)
    local = run(dataset, _plans(), tmp_path / "local", workers=0, limit=3)
    _same_records(local.records, resumed.records)


def test_a_worker_lost_mid_task_costs_only_its_job(kodak, tmp_path, local_ray, monkeypatch):
    monkeypatch.setitem(CODECS._entries, "segfault", Entry("segfault", "fake_codecs:Segfaulting"))
    plans = [plan_codec("segfault", rates=[50]), plan_codec("jpeg", rates=[50])]
    result = run(
        KodakDataset(data_dir=kodak), plans, tmp_path / "run", executor=RayExecutor(), limit=3
    )
    by_key = {(r.image_id, r.codec): r for r in result.records}
    assert len(by_key) == 6
    lost = by_key[("kodim02", "segfault")]
    assert not lost.ok and "worker process died" in lost.error
    assert all(r.ok for key, r in by_key.items() if key != ("kodim02", "segfault"))


def test_jobs_ask_for_a_gpu_only_when_they_run_on_cuda(kodak):
    dataset = KodakDataset(data_dir=kodak)
    ref = dataset.refs()[0]
    from bench.runner import Job

    cpu = Job(dataset, (ref,), plan_codec("jpeg", rates=[50]), (50.0,), ())
    assert job_resources(cpu) == {"num_cpus": 1.0}
    gpu_plan = plan_codec("jpeg", rates=[50])
    gpu = Job(dataset, (ref,), _with_device(gpu_plan, "cuda"), (50.0,), ())
    assert job_resources(gpu) == {"num_cpus": 1.0, "num_gpus": 1.0}


def _with_device(plan, device: str):
    from dataclasses import replace

    return replace(plan, options={**plan.options, "device": device})


def test_an_address_nothing_answers_on_is_a_usage_error_before_the_run(kodak, tmp_path):
    """Ray retries an unreachable cluster for minutes; bench says so at once, and makes no
    run directory."""
    import socket

    from bench.cli import EXIT_USAGE, main

    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "run"
    argv = ["run", "--codecs", "jpeg", "--rates", "jpeg=50", "--limit", "1", "--data-dir"]
    argv += [str(kodak), "--executor", "ray", "--ray-address", f"127.0.0.1:{port}"]
    assert main([*argv, "--out", str(out)]) == EXIT_USAGE
    assert not out.exists()
    with pytest.raises(UsageError, match="expected HOST:PORT"):
        RayExecutor("nonsense")
    assert main(["run", "--codecs", "jpeg", "--ray-address", "h:1", "--out", str(out)]) == 2


def test_auto_with_no_cluster_leaves_no_run_directory_and_a_rerun_is_not_refused(
    kodak, tmp_path, monkeypatch
):
    """``--ray-address auto`` with no cluster running exits 2 before the run directory is
    made; and a run directory a failed run left without records (a lock, a ``failed``
    manifest, a records.csv of its header) takes a plain rerun."""
    from bench.cli import EXIT_USAGE, main

    if ray.is_initialized():
        pytest.skip("a Ray instance is running in this process")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)

    # No cluster here, whatever else runs on this machine: Ray finds none to connect to.
    def no_instances() -> list[str]:
        return []

    no_instances.cache_clear = lambda: None  # type: ignore[attr-defined]
    monkeypatch.setattr(ray._private.services, "find_gcs_addresses", no_instances)
    monkeypatch.setattr(ray._private.services, "find_bootstrap_address", lambda _: None)
    out = tmp_path / "run"
    argv = ["run", "--codecs", "jpeg", "--rates", "jpeg=50", "--limit", "1"]
    argv += ["--data-dir", str(kodak), "--out", str(out)]
    assert main([*argv, "--executor", "ray", "--ray-address", "auto"]) == EXIT_USAGE
    assert not out.exists()
    # What the failed run used to leave: its lock, a failed manifest, a header-only CSV.
    from bench.runner import run as sweep

    class Refused(RayExecutor):
        def start(self) -> None:  # connects only when the jobs start, like the old code
            pass

        def map(self, jobs, work, crashed):
            raise UsageError("--ray-address auto: cannot connect")
            yield

    with pytest.raises(UsageError, match="cannot connect"):
        sweep(KodakDataset(data_dir=kodak), _plans()[:1], out, executor=Refused(), limit=1)
    assert (out / "records.csv").is_file() and '"failed"' in (out / "manifest.json").read_text()
    assert main(argv) == 0
    assert len(read_csv(out / "records.csv")) == 1
