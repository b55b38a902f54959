"""The training job executor behind a small interface: submit, cancel, status, start, shutdown.

``LocalProcessExecutor`` runs each training as its own OS process (`training train --run-id`),
so a crash or a memory blow-up of one job never takes the web service down: the child has an
address-space cap, dies with the service (PR_SET_PDEATHSIG), and is stopped through the same
SIGTERM path as Ctrl-C, which records the run KILLED. At most ``max_jobs`` run at once; the
rest wait in submission order. The run store is the queue's source of truth: on start, runs
left RUNNING by a process that no longer exists are marked FAILED ("worker lost") and the
QUEUED ones are taken up again. A distributed executor can replace this one behind the same
interface without the web layer changing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import resource
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psutil
from starlette.concurrency import run_in_threadpool

from training.entities import TERMINAL_STATUSES
from training.errors import Busy, Conflict, NotFound
from training.store import RunStore

log = logging.getLogger("training.jobs")
CANCEL_GRACE_S = 10.0
#: Set for a job process by the executor: "<memory cap in MB>:<pid of the service>".
WORKER_ENV = "TRAINING_WORKER_LIMITS"
_PR_SET_PDEATHSIG = 1


@dataclass
class ExecutorStatus:
    queued: int
    running: list[str]
    finished: dict[str, int] = field(default_factory=dict)


class Executor(Protocol):
    async def start(self) -> None: ...
    async def submit(self, run_id: str) -> None: ...
    async def cancel(self, run_id: str) -> str: ...
    def status(self) -> ExecutorStatus: ...
    async def shutdown(self, grace_s: float) -> None: ...


def limit_this_worker(memory_mb: int, parent: int) -> None:
    """Called first thing in a job process: cap its memory, and die with the service.

    Done by the worker itself rather than in a preexec_fn: a preexec_fn makes the service
    fork its whole (large) address space and wait for the child's Python code, which stalled
    the service's event loop ~150-200 ms per job start (measured: GET /runs p99).
    """
    memory = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the service died before the line above: nobody to serve
        raise SystemExit("the training service that started this job is gone")


def _alive_worker(pid: int | None, run_id: str) -> bool:
    """Is this pid still the job process of this run (and not a reused pid)?"""
    if pid is None:
        return False
    try:
        return run_id in " ".join(psutil.Process(pid).cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


class LocalProcessExecutor:
    def __init__(
        self,
        store: RunStore,
        *,
        max_jobs: int,
        max_queued: int,
        memory_mb: int,
        logs: Path,
        on_done: JobListener | None = None,
    ) -> None:
        self.store = store
        self.max_jobs = max_jobs
        self.max_queued = max_queued
        self.memory_mb = memory_mb
        self.logs = logs
        self.on_done = on_done
        self._queue: deque[str] = deque()
        self._running: dict[str, asyncio.subprocess.Process] = {}
        self._adopted: set[str] = set()  # live workers of a previous service process
        self._started_at: dict[str, float] = {}
        self._wakeup = asyncio.Event()
        self._closing = False
        self._dispatcher: asyncio.Task[None] | None = None
        self._watchers: set[asyncio.Task[None]] = set()

    # -- the interface ----------------------------------------------------------------------

    async def start(self) -> None:
        await run_in_threadpool(self._recover)
        self._dispatcher = asyncio.create_task(self._dispatch(), name="job-dispatcher")

    async def submit(self, run_id: str) -> None:
        self._queue.append(run_id)
        self._wakeup.set()

    def has_room(self) -> None:
        """Refuse a submission past the queue limit (429), before anything is recorded."""
        if len(self._queue) >= self.max_queued:
            raise Busy(f"{len(self._queue)} trainings are waiting already (TRAINING_MAX_QUEUED)")

    async def cancel(self, run_id: str) -> str:
        """KILLED at once if waiting, within seconds if running; Conflict once it has ended."""
        run = await run_in_threadpool(self.store.get_run, run_id)
        if run.status in TERMINAL_STATUSES:
            raise Conflict(f"run {run_id} has ended already ({run.status})")
        if run_id in self._queue:
            self._queue.remove(run_id)
            await run_in_threadpool(
                self.store.finish, run_id, "KILLED", error="cancelled before it started"
            )
            return "KILLED"
        proc = self._running.get(run_id)
        if proc is None:
            raise Conflict(f"run {run_id} is {run.status} but not handled by this service")
        await self._stop(run_id, proc, CANCEL_GRACE_S, "cancelled")
        # It may have finished on its own while it was being stopped.
        return (await run_in_threadpool(self.store.get_run, run_id)).status

    @property
    def ready(self) -> bool:
        return self._dispatcher is not None and not self._dispatcher.done()

    def status(self) -> ExecutorStatus:
        return ExecutorStatus(
            queued=len(self._queue), running=sorted(self._running) + sorted(self._adopted)
        )

    async def shutdown(self, grace_s: float) -> None:
        """Stop taking jobs; let running ones finish within the grace period, then kill them.

        Queued runs stay QUEUED in the store: the next start takes them up again.
        """
        self._closing = True
        self._wakeup.set()
        deadline = time.monotonic() + grace_s
        while self._running and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.gather(
            *(
                self._stop(run_id, proc, CANCEL_GRACE_S, "the training service stopped")
                for run_id, proc in list(self._running.items())
            ),
            return_exceptions=True,
        )
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher

    # -- inside -----------------------------------------------------------------------------

    def _recover(self) -> None:
        """After a restart: lost workers' runs FAILED, live ones adopted, queued ones resumed."""
        for run in self.store.running():
            if _alive_worker(run.pid, run.id):
                self._adopted.add(run.id)
                continue
            with contextlib.suppress(Conflict):
                self.store.finish(
                    run.id, "FAILED", error="worker lost: its process no longer exists"
                )
            log.warning("run %s: worker lost (pid %s), marked FAILED", run.id, run.pid)
        self._queue.extend(self.store.queued())

    def _free_slots(self) -> int:
        for run_id in list(self._adopted):
            run = self.store.get_run(run_id)
            if run.status != "RUNNING" or not _alive_worker(run.pid, run_id):
                self._adopted.discard(run_id)
        return self.max_jobs - len(self._running) - len(self._adopted)

    async def _dispatch(self) -> None:
        while not self._closing:
            # Re-check the queue after the await: a cancel may have emptied it meanwhile.
            if self._queue and await run_in_threadpool(self._free_slots) > 0 and self._queue:
                if not self._closing:
                    await self._launch(self._queue.popleft())
                continue
            self._wakeup.clear()

            with contextlib.suppress(TimeoutError):
                # Woken by a submission or a finished job; the timeout notices adopted workers.
                await asyncio.wait_for(self._wakeup.wait(), timeout=2.0)

    async def _launch(self, run_id: str) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{run_id}.log").open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).with_name("training")),
                "train",
                "--run-id",
                run_id,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                env={**os.environ, WORKER_ENV: f"{self.memory_mb}:{os.getpid()}"},
            )
        self._running[run_id] = proc
        self._started_at[run_id] = time.monotonic()
        watcher = asyncio.create_task(self._watch(run_id, proc))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    async def _watch(self, run_id: str, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        self._running.pop(run_id, None)
        seconds = time.monotonic() - self._started_at.pop(run_id, time.monotonic())
        try:
            run = await run_in_threadpool(self.store.get_run, run_id)
            if run.status in ("QUEUED", "RUNNING"):
                # The worker died without recording its end: a crash, a kill, the memory cap.
                how = f"signal {-code}" if code < 0 else f"exit code {code}"
                await run_in_threadpool(
                    self.store.finish,
                    run_id,
                    "FAILED",
                    error=f"worker crashed ({how}); see its log",
                )
                run = await run_in_threadpool(self.store.get_run, run_id)
            if self.on_done is not None:
                self.on_done(run.status, seconds)
        except NotFound:
            pass
        finally:
            self._wakeup.set()

    async def _stop(
        self, run_id: str, proc: asyncio.subprocess.Process, grace_s: float, why: str
    ) -> None:
        """SIGTERM (the worker records KILLED itself), SIGKILL past the grace period."""
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout=grace_s)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        run = await run_in_threadpool(self.store.get_run, run_id)
        if run.status in ("QUEUED", "RUNNING"):
            with contextlib.suppress(Conflict):
                await run_in_threadpool(self.store.finish, run_id, "KILLED", error=why)


class JobListener(Protocol):
    def __call__(self, status: str, seconds: float) -> None: ...
