"""Pool workers share the cores: workers x torch threads = cores, set before torch loads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench.executors import in_pool
from bench.memory import cores, threads_per_worker


def test_threads_per_worker_divides_the_cores() -> None:
    assert threads_per_worker(1) == cores()
    assert threads_per_worker(cores()) == 1
    assert threads_per_worker(4 * cores()) == 1  # never zero


def test_pool_workers_get_their_share_unless_the_user_chose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def crashed(job: str, detail: str) -> list[str]:
        raise AssertionError(detail)

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    seen = list(in_pool(["OMP_NUM_THREADS", "MKL_NUM_THREADS"], 2, os.getenv, crashed))
    assert seen == [str(threads_per_worker(2))] * 2
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert list(in_pool(["OMP_NUM_THREADS"], 2, os.getenv, crashed)) == ["3"]


def test_torch_takes_the_limit_when_loaded_after_it() -> None:
    pytest.importorskip("torch")
    code = (
        "from bench.memory import limit_threads; limit_threads(1); "
        "import torch; print(torch.get_num_threads())"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "1"
