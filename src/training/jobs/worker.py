"""The job process: one queued run, in a process of its own (`training train --run-id RUN_ID`).

Both sides of the executor's protocol with its workers live here: the command and the
environment the executor starts a job with (``command``, ``environment``), and what the job
does with them (``run``): cap its memory, die with the service, take its run from QUEUED to
RUNNING and through the pipeline, whose ``recorded`` writes how it ended. A worker that
cannot even do that (killed, out of memory) is recorded by the executor that watches it.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys
from collections.abc import Callable
from types import FrameType

from training.errors import Conflict, Interrupted, ServiceGone
from training.learning.pipeline import TrainResult, execute, plan, recorded
from training.learning.provenance import environment as provenance
from training.learning.request import TrainRequest
from training.progress import Reporter
from training.settings import Settings
from training.store.records import RunStatus
from training.store.revision import checked_database
from training.store.runs import RunStore

#: Set for a job process by the executor: "<memory cap in MB>:<pid of the service>".
LIMITS_ENV = "TRAINING_WORKER_LIMITS"
#: One job, its share of the machine: numerical libraries and joblib's n_jobs=-1 would
#: otherwise take every CPU and defeat TRAINING_MAX_JOBS.
ONE_CPU = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "LOKY_MAX_CPU_COUNT": "1",
}
_PR_SET_PDEATHSIG = 1


def command(run_id: str) -> list[str]:
    """How the executor starts the job of one run."""
    return [sys.executable, "-m", "training", "train", "--run-id", run_id]


def environment(memory_mb: int) -> dict[str, str]:
    """What the executor adds to its own environment for a job it starts."""
    return {**ONE_CPU, LIMITS_ENV: f"{memory_mb}:{os.getpid()}"}


class _FirstStop:
    """A job ends on the first stop it is sent; the ones after it are ignored, so none can cut
    short the writing of how it ended. (Ctrl-C on `training serve` in a terminal reaches its
    jobs too, and the service's SIGTERM follows it within moments.)"""

    def __init__(self) -> None:
        self.stopping = False

    def handler(
        self, stop: type[BaseException], why: str
    ) -> Callable[[int, FrameType | None], None]:
        def on_signal(_signum: int, _frame: FrameType | None) -> None:
            if not self.stopping:
                self.stopping = True
                raise stop(why)

        return on_signal


def limit_this_worker(memory_mb: int, parent: int) -> None:
    """Called first thing in a job process: cap its memory, and die with the service, telling
    that death (FAILED, "the training service stopped") from a stop or a cancel (KILLED).

    Done by the worker itself rather than in a preexec_fn: a preexec_fn makes the service
    fork its whole (large) address space and wait for the child's Python code, which stalled
    the service's event loop ~150-200 ms per job start (measured: GET /runs p99).
    """
    memory = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    # The service's death has a signal of its own: SIGTERM means a stop or a cancel. (Telling
    # them apart by the parent pid fails: the kernel sends the signal when the thread that
    # started the job exits, while the rest of the dying service may still hold the pid.)
    stops = _FirstStop()
    signal.signal(signal.SIGUSR1, stops.handler(ServiceGone, "the training service stopped"))
    signal.signal(signal.SIGTERM, stops.handler(Interrupted, "stopped (SIGTERM)"))
    signal.signal(signal.SIGINT, stops.handler(KeyboardInterrupt, "Ctrl-C"))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGUSR1)
    if os.getppid() != parent:  # the service died before the line above: nobody to serve
        raise SystemExit("the training service that started this job is gone")


def run_queued(run_id: str, settings: Settings, store: RunStore, report: Reporter) -> TrainResult:
    """Run a QUEUED run in this process; its request is in its record."""
    run = store.get_run(run_id)
    if run.status != RunStatus.QUEUED or run.request is None:
        raise Conflict(f"run {run_id} is {run.status}, not a queued run")
    environment = provenance()  # before the run starts: it may wait on `git` for seconds
    # From the moment it is RUNNING, every way out is recorded: ``start_queued`` itself runs
    # under ``recorded`` (a stop that landed between its commit and a later ``with`` once left
    # a run RUNNING with nobody alive to end it, seen in CI). A stop before its commit ends
    # the run still waiting, recorded the same way.
    with recorded(store, run_id):
        store.start_queued(run_id, environment)
        store.set_progress(run_id, "loading", 0.02)
        report("loading", 0.02)
        checked = plan(TrainRequest.model_validate(run.request), settings)
        return execute(checked, store, report, run_id)


def run(run_id: str, settings: Settings, report: Reporter) -> TrainResult:
    """The job process: its limits when the executor started it, then its run."""
    limits = os.environ.get(LIMITS_ENV)
    if limits:
        memory_mb, parent = (int(part) for part in limits.split(":"))
        limit_this_worker(memory_mb, parent)
    return run_queued(run_id, settings, RunStore(checked_database(settings)), report)
