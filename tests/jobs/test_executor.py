"""The local process executor's own rules, in process: the queue limit, and state that only the
event loop changes (the Prometheus gauges read it there while store checks run in threads)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
from pathlib import Path

import psutil
import pytest
from sqlalchemy import update

from training.errors import Busy, Conflict
from training.jobs import queue
from training.jobs.executor import LocalProcessExecutor
from training.store import revision
from training.store.db import Database
from training.store.records import DatasetInfo, RunInfo, RunStatus
from training.store.runs import RunStore
from training.store.tables import Run


class GatedStore(RunStore):
    """A store whose second read from a worker thread waits until the test lets it go."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.thread_reads = 0
        self.midway = threading.Event()
        self.go_on = threading.Event()

    def get_run(self, run_id: str) -> RunInfo:
        if threading.current_thread() is not threading.main_thread():
            self.thread_reads += 1
            if self.thread_reads == 2:
                self.midway.set()
                self.go_on.wait(10)
        return super().get_run(run_id)


@pytest.fixture
def store(tmp_path: Path) -> GatedStore:
    db = Database(f"sqlite:///{tmp_path / 'runs.db'}")
    revision.upgrade(db)
    return GatedStore(db)


def queued_run(store: RunStore) -> str:
    return store.create_run(
        experiment="jobs",
        model_name="ridge",
        task="regression",
        dataset=DatasetInfo(name="diabetes"),
        params={},
        status=RunStatus.QUEUED,
        request={"dataset": "diabetes", "model": "ridge"},
    )


def executor_for(store: RunStore, tmp_path: Path, **limits: int) -> LocalProcessExecutor:
    options = {"max_jobs": 4, "max_queued": 100, **limits}
    return LocalProcessExecutor(store, memory_mb=512, logs=tmp_path / "logs", **options)


def test_a_submission_past_the_queue_limit_is_refused_before_anything_is_recorded(
    store: GatedStore, tmp_path: Path
) -> None:
    async def scenario() -> None:
        executor = executor_for(store, tmp_path, max_queued=2)
        for run_id in ("a" * 32, "b" * 32):
            executor.has_room()
            await executor.submit(run_id)
        with pytest.raises(Busy, match="2 trainings are waiting already"):
            executor.has_room()
        assert executor.status().queued == 2
        executor.max_queued = 4
        executor.has_room(2)  # a sweep of two fits
        with pytest.raises(Busy, match="3 more do not fit"):
            executor.has_room(3)

    asyncio.run(scenario())


def test_lost_workers_of_a_previous_service_are_forgotten_on_the_event_loop_only(
    store: GatedStore, tmp_path: Path
) -> None:
    """Runs adopted after a restart whose workers then die: the check reads the store in a
    thread, and ``status()`` must not see the executor's state change while it does."""
    workers = [subprocess.Popen(["sleep", "60"]) for _ in range(3)]
    ids = [queued_run(store) for _ in workers]
    for run_id, worker in zip(ids, workers, strict=True):
        store.start_queued(run_id, {})
        with store.db.write() as session:  # as if that process had started the run
            session.execute(update(Run).where(Run.id == run_id).values(pid=worker.pid))

    async def scenario() -> tuple[list[str], list[str], int, list[str]]:
        executor = executor_for(store, tmp_path)
        await executor.start()
        try:
            adopted = executor.status().running
            for worker in workers:
                worker.kill()
                worker.wait()
            checking = asyncio.create_task(executor._free_slots())
            while not store.midway.is_set():
                await asyncio.sleep(0.01)
            during = executor.status().running  # the thread is between two runs of its check
            store.go_on.set()
            free = await checking
            return adopted, during, free, executor.status().running
        finally:
            await executor.shutdown(0)

    adopted, during, free, after = asyncio.run(scenario())
    assert adopted == sorted(ids)
    assert during == sorted(ids)
    assert (free, after) == (4, [])
    for run in store.get_runs(ids):
        assert run.status == RunStatus.FAILED and "worker lost" in (run.error or "")


def test_a_launch_that_fails_leaves_the_run_waiting_first_in_line(
    store: GatedStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy store or a cluster that does not answer while a run is launched: the run waits
    on (it is neither lost from the queue nor left QUEUED with nobody to run it)."""
    first, second = queued_run(store), queued_run(store)
    launched: list[str] = []
    failures = iter([True])

    async def launch(self: LocalProcessExecutor, run_id: str) -> None:
        if next(failures, False):
            raise OSError("the store is busy")
        launched.append(run_id)

    monkeypatch.setattr(LocalProcessExecutor, "_launch", launch)

    async def scenario() -> None:
        executor = executor_for(store, tmp_path)
        await executor.start()  # takes both up from the store, in order
        try:
            for _ in range(100):
                if len(launched) == 2:
                    break
                await asyncio.sleep(0.05)  # the dispatcher tries again within 2 s
        finally:
            await executor.shutdown(0)

    asyncio.run(scenario())
    assert launched == [first, second]


def test_a_run_that_can_never_start_fails_and_the_next_one_starts(
    store: GatedStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its launch fails every time (its data unreadable, say): after a few attempts it is
    FAILED with the reason, and the run behind it is not held up for ever."""
    store = RunStore(store.db)  # reads not held back
    doomed, behind = queued_run(store), queued_run(store)
    launched: list[str] = []

    async def launch(self: LocalProcessExecutor, run_id: str) -> None:
        if run_id == doomed:
            raise PermissionError("data.csv: permission denied")
        launched.append(run_id)

    monkeypatch.setattr(LocalProcessExecutor, "_launch", launch)
    monkeypatch.setattr(queue, "POLL_S", 0.1)

    async def scenario() -> None:
        executor = executor_for(store, tmp_path)
        await executor.start()
        try:
            for _ in range(200):
                if launched:
                    break
                await asyncio.sleep(0.05)  # two more attempts, POLL_S apart
        finally:
            await executor.shutdown(0)

    asyncio.run(scenario())
    assert launched == [behind]
    failed = store.get_run(doomed)
    assert failed.status == RunStatus.FAILED
    assert failed.error == (
        "it could not be started (3 attempts): PermissionError: data.csv: permission denied"
    )


def test_a_waiting_run_nobody_runs_is_cancelled_at_once(store: GatedStore, tmp_path: Path) -> None:
    store = RunStore(store.db)  # reads not held back
    run_id = queued_run(store)  # recorded, but not in this executor's queue

    async def scenario() -> RunStatus:
        executor = executor_for(store, tmp_path)
        return await executor.cancel(run_id)

    assert asyncio.run(scenario()) == RunStatus.KILLED
    assert store.get_run(run_id).error == "cancelled before it started"


def owner_of(pid: int, started: float | None = None) -> str:
    """A `training sweep` process's name as its runs record it (``this_process``)."""
    started = psutil.Process(pid).create_time() if started is None else started
    return f"{socket.gethostname()}:{pid}:{started:.2f}"


def owned_run(store: RunStore, owner: str) -> str:
    run_id = queued_run(store)
    with store.db.write() as session:
        session.execute(update(Run).where(Run.id == run_id).values(owner=owner))
    return run_id


def test_a_service_leaves_a_live_training_sweep_its_own_runs(
    store: GatedStore, tmp_path: Path
) -> None:
    """The runs a `training sweep` queues are its own while it lives: a service starting
    meanwhile neither runs them nor cancels them; those of a sweep that died it takes up."""
    store = RunStore(store.db)  # reads not held back
    sweep = subprocess.Popen(["sleep", "60"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    theirs = owned_run(store, owner_of(sweep.pid))
    orphan = owned_run(store, owner_of(dead.pid, started=1.0))
    # A process that has the pid of a sweep that died: not that sweep.
    reused = owned_run(store, owner_of(sweep.pid, started=1.0))
    elsewhere = owned_run(store, f"another-host:{sweep.pid}:1.00")
    ours = queued_run(store)

    async def scenario() -> tuple[int, str]:
        executor = executor_for(store, tmp_path, max_jobs=1)
        executor._free_slots = _none  # type: ignore[method-assign]
        await executor.start()
        try:
            queued = executor.status().queued
            with pytest.raises(Conflict, match="run by `training sweep`"):
                await executor.cancel(theirs)
            return queued, (await executor.cancel(orphan)).value
        finally:
            await executor.shutdown(0)

    try:
        queued, cancelled = asyncio.run(scenario())
    finally:
        sweep.kill()
        sweep.wait()
    assert queued == 3  # the orphan's, the reused pid's, ours; not the live or remote sweep's
    assert cancelled == "KILLED"
    still = (theirs, reused, elsewhere, ours)
    assert {store.get_run(r).status for r in still} == {RunStatus.QUEUED}


async def _none() -> int:
    return 0  # no free slot: what is queued stays queued for the test to look at
