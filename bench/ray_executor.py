"""Jobs on a Ray cluster (``bench run --executor ray [--ray-address ADDRESS]``).

Each job becomes one Ray task that runs the same ``work`` function a local worker runs, so
a record is the same wherever it was made. Tasks ask for resources by what they run: one
CPU for a job on the CPU, one GPU (and one CPU) for a job whose codec or segmenter runs on
CUDA, so Ray places learned codecs on GPU nodes and classical codecs anywhere. Records
stream back as tasks finish and the runner appends them to the run directory at once; a
resumed run plans only what is missing, as locally.

A worker process that dies (a segfault in a codec library, a node lost) is retried once by
Ray on another worker; a task that fails again costs only its job, which becomes
``crashed`` records. Ray is an extra (``scripts/setup.sh ray``); every node needs the same
bench installed and must read the data and checkpoints at the same paths as the driver.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from bench.errors import UsageError
from bench.executors import Executor, J, R

log = logging.getLogger(__name__)

RETRIES = 1
"""How often Ray runs a task again after its worker process died (LocalPool's rule)."""

RAY_HINT = "install the ray extra: scripts/setup.sh ray (or pip install 'bench[ray]')"


def job_resources(job: Any) -> dict[str, float]:
    """The Ray resources a job asks for: ``job.resources()`` when it has it, else one CPU."""
    wanted = getattr(job, "resources", None)
    return dict(wanted()) if callable(wanted) else {"num_cpus": 1.0}


def _run_job(work: Callable[[Any], list[Any]], job: Any) -> list[Any]:
    """The body of every Ray task: the worker tuning of a local pool, then the job."""
    from bench.memory import tune_worker

    tune_worker()
    return work(job)


class RayExecutor(Executor):
    """Runs jobs as Ray tasks on a running cluster (``address``) or on a local Ray instance
    started for the run (``address`` None; ``num_cpus`` caps it, default all cores).

    Args:
        address: a cluster (``ray://host:10001`` or ``host:6379``), ``auto`` for the one this
            machine belongs to, or None for a local instance.
        num_cpus: CPUs of a local instance (ignored with ``address``).
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        self.address = address or None
        self.num_cpus = num_cpus
        if self.address:
            check_reachable(self.address)  # before the run directory is made

    def start(self) -> None:
        """Connect to the cluster ``address`` names (``auto`` with no cluster fails here, in
        about two seconds, before the run directory is made); a local instance starts with
        the first jobs."""
        if self.address:
            self._ray()

    def _ray(self) -> Any:
        try:
            import ray
        except ImportError as exc:
            raise UsageError(f"--executor ray: Ray is not installed ({exc}); {RAY_HINT}") from exc
        if not ray.is_initialized():
            options: dict[str, Any] = {"log_to_driver": True, "include_dashboard": False}
            if self.address:
                options["address"] = self.address
            elif self.num_cpus:
                options["num_cpus"] = self.num_cpus
            try:
                ray.init(**options)
            except ConnectionError as exc:
                raise UsageError(f"--ray-address {self.address}: cannot connect ({exc})") from exc
        return ray

    def map(
        self,
        jobs: Sequence[J],
        work: Callable[[J], list[R]],
        crashed: Callable[[J, str], list[R]],
    ) -> Iterator[list[R]]:
        if not jobs:
            return
        ray = self._ray()
        task = ray.remote(max_retries=RETRIES, retry_exceptions=False)(_run_job)
        work_ref = ray.put(work)
        pending: dict[Any, J] = {}
        for job in jobs:
            ref = task.options(**job_resources(job)).remote(work_ref, job)
            pending[ref] = job
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                job = pending.pop(ref)
                try:
                    yield ray.get(ref)
                except ray.exceptions.RayError as exc:
                    reason = _reason(exc)
                    log.warning("a Ray task failed (%s); its job becomes error records", reason)
                    yield crashed(job, reason)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse a cluster address nothing answers on (Ray itself retries for minutes).

    Raises:
        UsageError: ``HOST:PORT`` (or ``ray://HOST:PORT``) refuses or ignores a connection.
    """
    if address == "auto":
        return
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray-address {address}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UsageError(
            f"--ray-address {address}: nothing answers there ({exc}); start the cluster "
            "(ray start --head) or check the address"
        ) from None


def _reason(exc: BaseException) -> str:
    """One line saying why a Ray task failed."""
    text = str(exc).strip().splitlines()
    first = next((line for line in text if line.strip()), type(exc).__name__)
    return f"{type(exc).__name__}: {first[:300]}"


__all__ = ["RETRIES", "RayExecutor", "check_reachable", "job_resources"]
