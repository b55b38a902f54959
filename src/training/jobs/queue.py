"""What every executor shares: the ``Executor`` interface, the waiting queue and its dispatcher.

The run store is the queue's source of truth; this is its order in memory: runs wait here, in
submission order, until the executor has a free slot (a local process, a cluster worker), and
a run cancelled while it waits is KILLED at once. A subclass says how many slots are free, how
a run is launched and how a running one is stopped.

The executor's state is touched on the event loop only: store reads run in a worker thread and
hand their findings back, so ``status()`` (read by the Prometheus gauges) never sees it change
under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import psutil
from anyio.to_thread import run_sync

from training.errors import Busy, Conflict, NotFound
from training.store.records import RunInfo, RunStatus
from training.store.runs import RunStore

log = logging.getLogger("training.jobs")
CANCEL_GRACE_S = 10.0
#: The dispatcher looks again this often when nothing woke it (a lost worker, a failed launch).
POLL_S = 2.0
LAUNCH_ATTEMPTS = 3  # a launch that fails is tried again POLL_S later, this many times in all


@dataclass
class ExecutorStatus:
    queued: int
    running: list[str]


@functools.cache
def this_process() -> str:
    """How a `training sweep` process names itself as the owner of the runs it queues:
    host, pid and the process's start time, so a pid used again later is not taken for it."""
    me = psutil.Process()
    return f"{socket.gethostname()}:{me.pid}:{me.create_time():.2f}"


def owned_elsewhere(owner: str | None) -> bool:
    """Is a run someone else's to run: a `training sweep` process that is alive, or on
    another host (where this one cannot tell)? Runs of no owner, or of one that has died,
    are the training service's to take up."""
    if owner is None or owner == this_process():
        return False
    host, pid, started = [*owner.rsplit(":", 2), "", ""][:3]
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        return abs(psutil.Process(int(pid)).create_time() - float(started)) < 1.0
    except psutil.NoSuchProcess:
        return False
    except ValueError:  # no start time: not one of ours to judge
        return True


def taken_up_here(owner: str | None) -> bool:
    """Whose runs this process runs and cancels: those of no live owner but itself (the
    store's filters take it)."""
    return not owned_elsewhere(owner)


def cancel_elsewhere(run: RunInfo) -> Conflict:
    """The answer to a cancel of a run another process queues and runs."""
    return Conflict(
        f"run {run.id} is run by `training sweep` ({run.owner}); stop it there (Ctrl-C)"
    )


class JobListener(Protocol):
    def __call__(self, status: RunStatus, seconds: float) -> None: ...


class Executor(Protocol):
    """What the web layer needs from whatever runs the jobs."""

    on_done: JobListener | None

    @property
    def ready(self) -> bool: ...
    async def start(self) -> None: ...
    def has_room(self, count: int = 1) -> None: ...
    async def submit(self, run_id: str) -> None: ...
    async def cancel(self, run_id: str) -> RunStatus: ...
    def status(self) -> ExecutorStatus: ...
    async def shutdown(self, grace_s: float) -> None: ...


class QueuedExecutor:
    """The queue and the dispatcher; subclasses run the jobs."""

    def __init__(
        self,
        store: RunStore,
        *,
        max_queued: int,
        recover: bool = True,
        on_done: JobListener | None = None,
    ) -> None:
        self.store = store
        self.max_queued = max_queued
        #: Take up the store's waiting and running runs at start (the service does; a
        #: `training sweep` runs its own runs only).
        self.recover = recover
        self.on_done = on_done
        self._queue: deque[str] = deque()
        self._attempts: dict[str, int] = {}  # failed launches of a run still waiting
        self._wakeup = asyncio.Event()
        self._closing = False
        self._dispatcher: asyncio.Task[None] | None = None

    # -- the interface ----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._dispatcher is not None and not self._dispatcher.done()

    async def start(self) -> None:
        self._queue.extend(await self._begin())
        self._dispatcher = asyncio.create_task(self._dispatch(), name="job-dispatcher")

    def has_room(self, count: int = 1) -> None:
        """Refuse a submission past the queue limit (429), before anything is recorded."""
        if len(self._queue) + count > self.max_queued:
            waiting = f"{len(self._queue)} trainings are waiting already"
            extra = f"; {count} more do not fit" if count > 1 else ""
            raise Busy(f"{waiting}{extra} (TRAINING_MAX_QUEUED)")

    async def submit(self, run_id: str) -> None:
        self._queue.append(run_id)
        self._wakeup.set()

    async def cancel(self, run_id: str) -> RunStatus:
        """KILLED at once if waiting, within seconds if running; Conflict once it has ended."""
        run = await run_sync(self.store.get_run, run_id)
        if run.status.ended:
            raise Conflict(f"run {run_id} has ended already ({run.status})")
        if owned_elsewhere(run.owner):
            raise cancel_elsewhere(run)
        if run_id in self._queue or run.status == RunStatus.QUEUED:
            # Waiting here, or waiting with nobody to run it: KILLED at once either way.
            with contextlib.suppress(ValueError):
                self._queue.remove(run_id)
            try:
                await run_sync(
                    lambda: self.store.finish(
                        run_id,
                        RunStatus.KILLED,
                        error="cancelled before it started",
                        waiting_only=True,
                    )
                )
                return RunStatus.KILLED
            except Conflict:  # it started meanwhile: stop it as a running one
                run = await run_sync(self.store.get_run, run_id)
        await self._stop_running(run)
        # It may have finished on its own while it was being stopped.
        return (await run_sync(self.store.get_run, run_id)).status

    def status(self) -> ExecutorStatus:
        return ExecutorStatus(queued=len(self._queue), running=self._running_ids())

    async def shutdown(self, grace_s: float) -> None:
        """Stop taking jobs; queued runs stay QUEUED in the store for the next start."""
        self._closing = True
        self._wakeup.set()
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        await self._end(grace_s)

    # -- for subclasses -----------------------------------------------------------------------

    async def _begin(self) -> list[str]:
        """Start; the ids of the runs to queue (the store's waiting ones, when recovering)."""
        raise NotImplementedError

    async def _free_slots(self) -> int:
        raise NotImplementedError

    async def _launch(self, run_id: str) -> None:
        raise NotImplementedError

    async def _stop_running(self, run: RunInfo) -> None:
        """Stop a run that is not waiting any more; Conflict if it is not this executor's."""
        raise NotImplementedError

    def _running_ids(self) -> list[str]:
        raise NotImplementedError

    async def _end(self, grace_s: float) -> None:
        """Let running jobs finish within the grace period, then stop them."""
        raise NotImplementedError

    def _ended(self, status: RunStatus, seconds: float) -> None:
        """A job ended: tell the listener, and look for the next one to launch."""
        if self.on_done is not None:
            self.on_done(status, seconds)
        self._wakeup.set()

    # -- inside -----------------------------------------------------------------------------

    async def _not_launched(self, run_id: str, exc: Exception) -> None:
        """A launch that failed (a busy store, a cluster that did not answer) is tried again,
        first in line, a few times; then its run is FAILED saying why, so one run that can
        never start does not hold up the ones behind it."""
        attempts = self._attempts.get(run_id, 0) + 1
        if attempts < LAUNCH_ATTEMPTS:
            self._attempts[run_id] = attempts
            self._queue.appendleft(run_id)
            return
        self._attempts.pop(run_id, None)
        error = f"it could not be started ({attempts} attempts): {type(exc).__name__}: {exc}"
        try:
            await run_sync(lambda: self.store.finish(run_id, RunStatus.FAILED, error=error))
        except (Conflict, NotFound):  # ended meanwhile
            pass
        except Exception:  # the store is down too: the next start finds it again
            log.exception("run %s: recording that it could not start failed", run_id)

    async def _dispatch(self) -> None:
        while not self._closing:
            try:
                # Re-check the queue after the await: a cancel may have emptied it meanwhile.
                if self._queue and await self._free_slots() > 0 and self._queue:
                    run_id = self._queue.popleft()
                    try:
                        await self._launch(run_id)
                    except Exception as exc:
                        await self._not_launched(run_id, exc)
                        raise
                    self._attempts.pop(run_id, None)
                    continue
            except Exception:  # the store, the OS or the cluster failed: log, wait, try again
                log.exception("job dispatcher: retrying in %.0f s", POLL_S)
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                # Woken by a submission or a finished job; the timeout notices lost workers.
                await asyncio.wait_for(self._wakeup.wait(), timeout=POLL_S)
