"""One job on a Dask worker, and the names both sides of the cluster agree on.

A worker has neither the run store, nor BentoML's store, nor the data folder: the job carries
the validated request and the data set (a shipped name, or the CSV's bytes with their hash),
runs the compute half of the pipeline (``fitting.fit``), and hands back the outcome.

Everything travels over connections the worker opened to the scheduler, so a worker needs
no open port of its own: progress as events (``log_event``, followed by the service with
``subscribe_topic``), the outcome through a named ``Variable`` (never as the task's return
value, which the scheduler would fetch by connecting to the worker), a cancel as a named
``Event`` the job waits on. A task the scheduler starts a second time (its first worker died
with it) refuses to run: a half-done run is never repeated behind anyone's back.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import threading
from dataclasses import dataclass
from typing import Any

from training.learning.data import DatasetSource

PROGRESS_TOPIC = "training-progress"


def task_key(run_id: str) -> str:
    return f"training-run-{run_id}"


def outcome_name(run_id: str) -> str:
    return f"training-outcome-{run_id}"


def cancel_name(run_id: str) -> str:
    return f"training-cancel-{run_id}"


def attempt_name(run_id: str) -> str:
    return f"training-attempt-{run_id}"


@dataclass(frozen=True)
class Job:
    """What a worker is sent: the run, its validated request and its data."""

    run_id: str
    request: dict[str, Any]
    source: DatasetSource
    experiment: str
    cpus: int = 1


def cpus_for(params: dict[str, Any]) -> int:
    """One CPU per job, unless the job asks for more with scikit-learn's own n_jobs."""
    n_jobs = params.get("n_jobs")
    return n_jobs if isinstance(n_jobs, int) and not isinstance(n_jobs, bool) and n_jobs > 1 else 1


@dataclass(frozen=True)
class _Events:
    """Progress of one job as the cluster's events (``fitting.Progress``)."""

    worker: Any
    run_id: str

    def send(self, **msg: Any) -> None:
        self.worker.log_event(PROGRESS_TOPIC, {"run": self.run_id, **msg})

    def stage(self, name: str, fraction: float) -> None:
        self.send(stage=name, fraction=fraction)

    def fold(self, number: int, scores: dict[str, float]) -> None:
        self.send(fold=number, scores=scores)


def _stop_when_cancelled(cancel: Any, done: threading.Event, events: _Events) -> None:
    """Wait for the run's cancel (no polling: the scheduler answers when it is set); then end
    this worker process, the one way to stop a fit inside a C loop. The nanny starts a fresh
    worker; the service records the run KILLED."""
    cancel.wait()
    if not done.is_set():
        events.send(stage="cancelled", fraction=0.0)
        os.kill(os.getpid(), signal.SIGKILL)


def _compute(job: Job, events: _Events) -> dict[str, Any]:
    import sklearn
    from threadpoolctl import threadpool_limits

    from training.learning.data import load_source
    from training.learning.fitting import fit, make_plan
    from training.learning.request import TrainRequest

    with threadpool_limits(job.cpus):
        request = TrainRequest.model_validate(job.request)
        plan = make_plan(request, load_source(job.source, request.target), job.experiment)
        fitted = fit(plan, events)
    events.stage("sending the model", 0.88)
    return {"sklearn": sklearn.__version__, "fitted": pickle.dumps(fitted, protocol=5)}


def run_job(job: Job) -> None:
    """The Dask task of one run: its outcome lands in the run's Variable."""
    from distributed import Event, Variable, get_client, get_worker

    from training.learning.pipeline import ending

    worker, client = get_worker(), get_client()
    events = _Events(worker, job.run_id)
    here = {"worker": str(worker.name), "host": socket.gethostname()}
    outcome = Variable(outcome_name(job.run_id), client=client)
    attempt, cancel = (
        Event(name(job.run_id), client=client) for name in (attempt_name, cancel_name)
    )
    if attempt.is_set():  # a retry: its first worker died in the middle of it
        outcome.set({**here, "error": "worker lost: the worker running it died; not run again"})
        return
    attempt.set()
    if cancel.is_set():
        outcome.set({**here, "error": "cancelled before it started"})
        return
    from training.learning.provenance import environment

    # ("name": Dask writes its own address over an event's "worker".)
    events.send(started=True, environment=environment(), name=here["worker"], host=here["host"])
    done = threading.Event()
    watcher = threading.Thread(
        target=_stop_when_cancelled, args=(cancel, done, events), daemon=True
    )
    watcher.start()
    try:
        result: dict[str, Any] = {**here, **_compute(job, events)}
    except Exception as exc:  # noqa: BLE001 - told to the service as the run's error, as a local job's
        result = {**here, "error": ending(exc)[1]}
    done.set()
    cancel.set()  # lets the watcher go; the service clears both events once it has recorded
    outcome.set(result)


def unpack(outcome: dict[str, Any]) -> Any:
    """A worker's fitted outcome, unpickled only once its scikit-learn is the service's own
    (a pipeline pickled by one version may load wrongly, or not at all, in another)."""
    import sklearn

    theirs = outcome.get("sklearn")
    if theirs != sklearn.__version__:
        raise RuntimeError(
            f"worker {outcome.get('worker')} has scikit-learn {theirs}, this service "
            f"{sklearn.__version__}: install the same version on both"
        )
    return pickle.loads(outcome["fitted"])  # from our own cluster's workers: trusted
