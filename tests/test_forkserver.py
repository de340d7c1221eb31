"""A local pool's fork server: the libraries it imports for the workers, and one that fails."""

from __future__ import annotations

import multiprocessing
import os
import sys
from multiprocessing import forkserver
from pathlib import Path

import pytest

from bench.executors import in_pool, pool_context

pytestmark = pytest.mark.skipif(
    "forkserver" not in multiprocessing.get_all_start_methods(), reason="no fork server here"
)


def loaded(name: str) -> list[bool]:
    """In a worker: whether ``name`` was imported before the job (by the fork server)."""
    return [name in sys.modules]


def crashed(job: str, detail: str) -> list[bool]:
    raise AssertionError(f"{job}: {detail}")


@pytest.fixture
def fresh_server():
    """The fork server is one per process: stop the one earlier tests started, and this
    test's afterwards, so that each starts with the imports it is given."""
    stop = getattr(forkserver._forkserver, "_stop", None)
    if stop is None:
        pytest.skip("this Python's fork server cannot be stopped")
    stop()
    yield
    stop()


def test_spawn_without_libraries_and_a_fork_server_with_them():
    assert pool_context(()).get_start_method() == "spawn"
    assert pool_context(("json",)).get_start_method() == "forkserver"


def test_workers_have_the_libraries_and_one_that_raises_costs_nothing(
    fresh_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # A broken torchvision raises RuntimeError at import, which multiprocessing's own preload
    # does not catch: the server would die and every job of the run with it.
    (tmp_path / "broken_library.py").write_text("raise RuntimeError('operator does not exist')\n")
    (tmp_path / "slow_library.py").write_text("VALUE = 1\n")
    # Python 3.11's fork server ignores the parent's sys.path; it has its environment.
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.syspath_prepend(str(tmp_path))
    preload = ("broken_library", "slow_library")
    jobs = ["slow_library", "broken_library", "slow_library"]
    assert list(in_pool(jobs, 1, loaded, crashed, preload)) == [[True], [False], [True]]


def variable(name: str) -> list[str | None]:
    return [os.environ.get(name)]


def test_workers_see_the_environment_of_their_pool(monkeypatch: pytest.MonkeyPatch):
    """Spawned workers read the environment anew; forked ones inherited the server's, as old
    as the server, and take the pool's."""
    monkeypatch.setenv("BENCH_TEST_VARIABLE", "first")
    assert list(in_pool(["BENCH_TEST_VARIABLE"], 1, variable, crashed, ("json",))) == [["first"]]
    monkeypatch.setenv("BENCH_TEST_VARIABLE", "second")
    assert list(in_pool(["BENCH_TEST_VARIABLE"], 1, variable, crashed, ("json",))) == [["second"]]
    monkeypatch.delenv("BENCH_TEST_VARIABLE")
    assert list(in_pool(["BENCH_TEST_VARIABLE"], 1, variable, crashed, ("json",))) == [[None]]
