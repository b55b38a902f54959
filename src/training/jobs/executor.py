"""Jobs as OS processes on this machine: the executor used when TRAINING_CLUSTER is unset.

``LocalProcessExecutor`` runs each training as its own OS process (``worker``), so a crash or
a memory blow-up of one job never takes the web service down: the worker caps its own memory,
dies with the service (PR_SET_PDEATHSIG), and is stopped through the same SIGTERM path as
Ctrl-C. At most ``max_jobs`` run at once; the rest wait in submission order (``queue``).
On start, running runs whose worker is gone are marked FAILED ("worker lost"), live ones are
adopted and the QUEUED ones are taken up again. ``cluster.ClusterExecutor`` takes its place
behind the same interface when jobs go to a Dask cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from pathlib import Path

import psutil
from anyio.to_thread import run_sync

from training.errors import Conflict, NotFound
from training.jobs import worker
from training.jobs.queue import CANCEL_GRACE_S, JobListener, QueuedExecutor, taken_up_here
from training.store.records import RunInfo, RunStatus
from training.store.runs import RunStore

log = logging.getLogger("training.jobs")


def _worker_alive(run: RunInfo) -> bool:
    """Is the recorded pid still this run's worker (started no later than the run, so not a
    reused pid), on this host?"""
    if run.pid is None or run.host != socket.gethostname():
        return False
    try:
        return psutil.Process(run.pid).create_time() <= run.start_time.timestamp() + 1
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


class LocalProcessExecutor(QueuedExecutor):
    def __init__(
        self,
        store: RunStore,
        *,
        max_jobs: int,
        max_queued: int,
        memory_mb: int,
        logs: Path,
        on_done: JobListener | None = None,
        recover: bool = True,
    ) -> None:
        super().__init__(store, max_queued=max_queued, recover=recover, on_done=on_done)
        self.max_jobs = max_jobs
        self.memory_mb = memory_mb
        self.logs = logs
        self._launching: set[str] = set()
        self._running: dict[str, asyncio.subprocess.Process] = {}
        self._exited: dict[str, asyncio.Event] = {}
        self._stop_reason: dict[str, str] = {}
        self._adopted: dict[str, int] = {}  # run id -> pid: live workers of a previous process
        self._started_at: dict[str, float] = {}
        self._watchers: set[asyncio.Task[None]] = set()

    # -- what the queue asks --------------------------------------------------------------------

    async def _begin(self) -> list[str]:
        if not self.recover:
            return []
        adopted, queued = await run_sync(self._recover)
        self._adopted.update(adopted)
        return queued

    async def _stop_running(self, run: RunInfo) -> None:
        run_id = run.id
        for _ in range(100):  # being launched: a moment until it has a process
            if run_id not in self._launching:
                break
            await asyncio.sleep(0.05)
        if run_id in self._running:
            await self._stop(run_id, "cancelled")
        elif run_id in self._adopted:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._adopted[run_id], signal.SIGTERM)  # its own exit path records KILLED
            await self._await_end(run_id, CANCEL_GRACE_S)
        else:
            raise Conflict(f"run {run_id} is {run.status} but not handled by this service")

    def _running_ids(self) -> list[str]:
        return sorted(self._running) + sorted(self._adopted)

    async def _end(self, grace_s: float) -> None:
        """Running ones finish within the grace period, then they are stopped."""
        deadline = time.monotonic() + grace_s
        while self._running and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.gather(
            *(self._stop(run_id, "the training service stopped") for run_id in list(self._running)),
            return_exceptions=True,
        )
        await asyncio.gather(*self._watchers, return_exceptions=True)

    # -- inside -----------------------------------------------------------------------------
    def _recover(self) -> tuple[dict[str, int], list[str]]:
        """(In a worker thread, at start.) After a restart: running runs whose worker is gone
        FAILED, live ones to adopt, waiting ones to resume. Runs of the CLI (no recorded
        request, or a live `training sweep` running its own) are not ours to judge."""
        adopted: dict[str, int] = {}
        for run in self.store.running():
            if run.request is None or run.host not in (None, socket.gethostname()):
                continue
            if not taken_up_here(run.owner):
                continue
            if _worker_alive(run):
                assert run.pid is not None
                adopted[run.id] = run.pid
                continue
            with contextlib.suppress(Conflict):
                self.store.finish(
                    run.id, RunStatus.FAILED, error="worker lost: its process no longer exists"
                )
            log.warning("run %s: worker lost (pid %s), marked FAILED", run.id, run.pid)
        return adopted, self.store.queued(taken_up_here)

    def _lost_adopted(self, adopted: dict[str, int]) -> list[str]:
        """(In a worker thread: store reads and process checks.) The adopted runs whose worker
        has ended; one that ended without recording it is marked FAILED."""
        lost: list[str] = []
        for run_id in adopted:
            run = self.store.get_run(run_id)
            if run.status == RunStatus.RUNNING and _worker_alive(run):
                continue
            lost.append(run_id)
            if run.status == RunStatus.RUNNING:
                with contextlib.suppress(Conflict):
                    self.store.finish(
                        run_id,
                        RunStatus.FAILED,
                        error="worker lost: its process ended without a result",
                    )
        return lost

    async def _free_slots(self) -> int:
        if self._adopted:
            for run_id in await run_sync(self._lost_adopted, dict(self._adopted)):
                self._adopted.pop(run_id, None)  # on the loop: status() never sees it change
        return self.max_jobs - len(self._running) - len(self._launching) - len(self._adopted)

    async def _launch(self, run_id: str) -> None:
        self._launching.add(run_id)
        try:
            self.logs.mkdir(parents=True, exist_ok=True)
            with (self.logs / f"{run_id}.log").open("ab") as out:
                proc = await asyncio.create_subprocess_exec(
                    *worker.command(run_id),
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    stdin=asyncio.subprocess.DEVNULL,
                    env={**os.environ, **worker.environment(self.memory_mb)},
                )
        except OSError as exc:
            log.error("run %s: the worker could not start: %s", run_id, exc)
            error = f"the worker could not start: {exc}"
            with contextlib.suppress(Conflict, NotFound):
                await run_sync(lambda: self.store.finish(run_id, RunStatus.FAILED, error=error))
            return
        finally:
            self._launching.discard(run_id)
        self._running[run_id] = proc
        self._exited[run_id] = asyncio.Event()
        self._started_at[run_id] = time.monotonic()
        watcher = asyncio.create_task(self._watch(run_id, proc))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    async def _watch(self, run_id: str, proc: asyncio.subprocess.Process) -> None:
        """The one place that records a job's end when its worker could not (crash, kill)."""
        code = await proc.wait()
        seconds = time.monotonic() - self._started_at.pop(run_id, time.monotonic())
        try:
            run = await run_sync(self.store.get_run, run_id)
            if not run.status.ended:
                reason = self._stop_reason.get(run_id)
                how = f"signal {-code}" if code < 0 else f"exit code {code}"
                status, error = (
                    (RunStatus.KILLED, reason)
                    if reason
                    else (RunStatus.FAILED, f"worker crashed ({how}); see its log")
                )
                with contextlib.suppress(Conflict):
                    await run_sync(lambda: self.store.finish(run_id, status, error=error))
                run = await run_sync(self.store.get_run, run_id)
            self._ended(run.status, seconds)
        except Exception:  # never lose the slot over a bookkeeping failure
            log.exception("run %s: recording the end of its worker failed", run_id)
        finally:
            self._running.pop(run_id, None)
            self._stop_reason.pop(run_id, None)
            self._exited.pop(run_id, asyncio.Event()).set()
            self._wakeup.set()  # the slot is free even when the bookkeeping failed

    async def _stop(self, run_id: str, why: str) -> None:
        """SIGTERM (the worker records KILLED), SIGKILL past the grace period; the watcher
        records KILLED for a worker that could not."""
        proc = self._running.get(run_id)
        exited = self._exited.get(run_id)
        if proc is None or exited is None:
            return
        self._stop_reason[run_id] = why
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(exited.wait(), timeout=CANCEL_GRACE_S)
            except TimeoutError:
                proc.kill()
        await exited.wait()

    async def _await_end(self, run_id: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = await run_sync(self.store.get_run, run_id)
            if run.status.ended:
                return
            await asyncio.sleep(0.2)
