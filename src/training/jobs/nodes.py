"""The cluster's processes with the project's settings: `training scheduler`, `training worker`.

Both are Dask's own (``dask scheduler``, ``dask worker``), started with what our jobs need:
- the scheduler never retries a task whose worker died (allowed-failures 0: a half-done run
  is FAILED "worker lost", not repeated), sends a worker one task at a time
  (worker-saturation 1.0) and moves none between workers (no work stealing);
- a worker is one process with one thread: one job at a time, under its nanny, which starts
  a new process when a job ends its own (a cancel) or dies. It caps its own address space at
  TRAINING_JOB_MEMORY_MB (``dask_setup``, run by Dask as a preload), so a job past it fails
  with MemoryError and the worker goes on; it offers ``--cpus`` CPUs (resource ``cpus``), one
  by default, which a job asking for more (n_jobs) needs.
- a worker listens on loopback only and opens every connection itself: the task arrives on
  its connection to the scheduler, and everything it sends back (events, outcome) goes the
  same way (``remote``). So between hosts only the scheduler's port must be open, and nobody
  else can reach a worker (Dask runs whatever a connection to a worker asks).
"""

from __future__ import annotations

import os
import resource
import socket
import sys
from typing import Any

MEMORY_ENV = "TRAINING_WORKER_MEMORY_MB"

SCHEDULER_CONFIG = {
    "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0",
    "DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION": "1.0",
    "DASK_DISTRIBUTED__SCHEDULER__WORK_STEALING": "False",
}
# A job's memory is capped by its address space; the nanny's own thresholds (spill to disk,
# pause) are for data Dask holds, and ours holds none: off, but for the last resort.
WORKER_CONFIG = {
    "DASK_DISTRIBUTED__WORKER__MEMORY__TARGET": "False",
    "DASK_DISTRIBUTED__WORKER__MEMORY__SPILL": "False",
    "DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE": "False",
    "DASK_DISTRIBUTED__WORKER__MEMORY__TERMINATE": "0.98",
    "DASK_DISTRIBUTED__WORKER__DAEMON": "False",
}


def scheduler_command(host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "distributed.cli.dask_scheduler",
        "--host",
        host,
        "--port",
        str(port),
        "--no-dashboard",
    ]


def _loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _own_address(scheduler: str) -> str:
    """This host's address on the way to the scheduler (what Dask itself would advertise)."""
    from distributed.utils import get_ip

    host = scheduler.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return str(get_ip(host))


def worker_command(
    scheduler: str, name: str, cpus: int, memory_mb: int, contact: str | None = None
) -> list[str]:
    """A Dask worker for our jobs. It and its nanny listen on loopback: the address it tells
    the scheduler (``contact``, by default this host's, with its port) names it, unique in the
    cluster, but nothing of ours ever dials it."""
    port = _loopback_port()
    return [
        sys.executable,
        "-m",
        "distributed.cli.dask_worker",
        scheduler,
        "--name",
        name,
        "--nworkers",
        "1",
        "--nthreads",
        "1",
        "--resources",
        f"cpus={cpus}",
        "--memory-limit",
        f"{memory_mb}MiB",
        "--listen-address",
        f"tcp://127.0.0.1:{port}",
        "--contact-address",
        contact or f"tcp://{_own_address(scheduler)}:{port}",
        "--no-dashboard",
        "--preload",
        "training.jobs.nodes",
    ]


def worker_environment(memory_mb: int) -> dict[str, str]:
    return {**WORKER_CONFIG, MEMORY_ENV: str(memory_mb), "BENTOML_DO_NOT_TRACK": "true"}


def dask_setup(worker: Any) -> None:
    """Run by Dask in each worker process as it starts (``--preload``): the job memory cap,
    and the libraries a job needs loaded before the first one arrives."""
    limit = os.environ.get(MEMORY_ENV)
    if limit:
        cap = int(limit) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import training.jobs.remote
    import training.learning.fitting  # noqa: F401 - scikit-learn, pandas: paid once, not per job
