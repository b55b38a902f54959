"""Jobs on a Dask cluster (TRAINING_CLUSTER): workers compute, this service records.

The queue stays here (``queue``): a run is sent to the cluster only when a worker is free, so
each worker holds at most one job and a waiting run can be cancelled at once. A sent run is
RUNNING; its worker's events (``remote.PROGRESS_TOPIC``) move its stage and log its folds as
they happen; its outcome (the fitted pipeline, metrics, versions) is recorded here, the only
writer of the run store and of BentoML's store. A cancel sets the run's Event, and the job's
worker ends itself (within a second or two; the nanny starts a new one). A worker that dies
in the middle of a job fails that run, "worker lost" (the scheduler runs with
allowed-failures 0, and a retried job refuses to run). A run the service was following when
it stopped is taken up again at the next start: followed if the cluster still runs it,
recorded if its outcome waits there, FAILED "worker lost" if the cluster lost it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from anyio.to_thread import run_sync
from distributed import Client, Event, Future, Variable, fire_and_forget, wait
from distributed.core import CommClosedError
from distributed.scheduler import KilledWorker

from training.errors import Conflict, NotFound, TrainingFailed, Unavailable, UserError
from training.jobs import remote
from training.jobs.queue import CANCEL_GRACE_S, JobListener, QueuedExecutor, taken_up_here
from training.learning.data import source_of
from training.learning.pipeline import ERROR_MAX, record, recorded
from training.store.records import RunInfo, RunStatus
from training.store.runs import RunStore

log = logging.getLogger("training.jobs")
LOST = "worker lost: the worker running it died or left the cluster; not run again"


class ClusterExecutor(QueuedExecutor):
    def __init__(
        self,
        store: RunStore,
        *,
        address: str,
        max_queued: int,
        connect_timeout_s: float = 10.0,
        on_done: JobListener | None = None,
        recover: bool = True,
    ) -> None:
        super().__init__(store, max_queued=max_queued, recover=recover, on_done=on_done)
        self.address = address
        self.connect_timeout_s = connect_timeout_s
        self._client: Client | None = None
        self._futures: dict[str, Future] = {}
        self._launching: set[str] = set()
        self._followers: dict[str, asyncio.Task[None]] = {}
        self._stop_reason: dict[str, str] = {}
        self._started_at: dict[str, float] = {}
        self._events: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._clearing: set[asyncio.Future[Any]] = set()
        self._sending: set[asyncio.Future[None]] = set()  # runs being started and sent

    @property
    def client(self) -> Client:
        assert self._client is not None, "the executor has not started"
        return self._client

    # -- what the queue asks --------------------------------------------------------------------

    async def _begin(self) -> list[str]:
        try:
            self._client = await Client(
                self.address,
                asynchronous=True,
                timeout=self.connect_timeout_s,
                name="training-service",
            )
        except (OSError, TimeoutError) as exc:
            raise Unavailable(
                f"cannot reach the training cluster at {self.address} (TRAINING_CLUSTER): {exc}"
            ) from exc
        self.client.subscribe_topic(remote.PROGRESS_TOPIC, self._events.put_nowait)
        self._writer = asyncio.create_task(self._write_events(), name="cluster-events")
        if not self.recover:
            return []
        for run in await run_sync(self._sent_runs):
            await self._take_up(run)
        return await run_sync(self.store.queued, taken_up_here)

    async def _free_slots(self) -> int:
        return len(await self._workers()) - len(self._futures)

    async def _launch(self, run_id: str) -> None:
        self._launching.add(run_id)
        try:
            await self._send(run_id)
        finally:
            self._launching.discard(run_id)

    async def _send(self, run_id: str) -> None:
        try:
            job = await run_sync(self._job, run_id)
        except (Conflict, NotFound):  # cancelled meanwhile
            return
        except UserError as exc:  # its upload vanished meanwhile
            await self._finish(run_id, RunStatus.FAILED, exc.message)
            return
        offered = max((w["resources"]["cpus"] for w in (await self._workers()).values()), default=0)
        if job.cpus > offered:
            error = f"it asks for {job.cpus} CPUs (n_jobs); no worker offers that many (--cpus)"
            await self._finish(run_id, RunStatus.FAILED, error)
            return
        # Started and sent as one step, which a stop (SIGTERM) does not cut in two: a run
        # recorded RUNNING is on the cluster, or FAILED saying why it could not be sent.
        # A stopping service waits for the step before it lets go of the cluster (``_end``).
        sending = asyncio.ensure_future(self._start_and_submit(job))
        self._sending.add(sending)
        sending.add_done_callback(self._sending.discard)
        await asyncio.shield(sending)

    async def _start_and_submit(self, job: remote.Job) -> None:
        run_id = job.run_id
        if self._closing:  # it stays QUEUED for the next start
            return
        try:
            await run_sync(lambda: self.store.start_queued(run_id, None))
        except Conflict:  # cancelled meanwhile
            return
        try:
            future = self.client.submit(
                remote.run_job,
                job,
                key=remote.task_key(run_id),
                resources={"cpus": job.cpus},
                pure=False,
                retries=0,
            )
            fire_and_forget(future)  # runs on when this service stops; taken up at next start
        except Exception as exc:  # noqa: BLE001 - recorded as the run's failure
            await self._finish(run_id, RunStatus.FAILED, f"could not be sent to the cluster: {exc}")
            return
        if not self._closing:  # a stopping service leaves it to the cluster and its next start
            self._follow(run_id, future)

    async def _stop_running(self, run: RunInfo) -> None:
        for _ in range(200):  # being sent: a moment until it is followed
            if run.id not in self._launching:
                break
            await asyncio.sleep(0.05)
        follower = self._followers.get(run.id)
        if follower is None:
            raise Conflict(f"run {run.id} is {run.status} but not handled by this service")
        self._stop_reason[run.id] = "cancelled"
        await Event(remote.cancel_name(run.id), client=self.client).set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(follower), CANCEL_GRACE_S)
            return
        # Its worker did not end itself in time (unreachable, hung): drop the task.
        future = self._futures.get(run.id)
        if future is not None:
            await self.client.cancel([future], force=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(follower), 5)

    def _running_ids(self) -> list[str]:
        return sorted(self._futures)

    async def _end(self, grace_s: float) -> None:
        """Let go at once: running jobs go on on the cluster (no grace period is needed for
        them), and the next start records them or follows them again."""
        await asyncio.gather(*self._sending, return_exceptions=True)
        for task in [*self._followers.values(), self._writer]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*self._followers.values(), return_exceptions=True)
        if self._client is not None:
            await self._client.close()

    # -- following a job ------------------------------------------------------------------------

    def _job(self, run_id: str) -> remote.Job:
        """(In a thread.) What the worker is sent for a waiting run."""
        run = self.store.get_run(run_id)
        if run.status != RunStatus.QUEUED or run.request is None:
            raise Conflict(f"run {run_id} is {run.status}")
        params = dict(run.request.get("params", {}))
        source = source_of(run.request["dataset"])
        return remote.Job(run_id, run.request, source, run.experiment, remote.cpus_for(params))

    async def _workers(self) -> dict[str, Any]:
        """The cluster's `training worker`s: those that offer CPUs (a plain `dask worker`
        offers none, and a job sent to it would wait there for ever)."""
        identity = await self.client.scheduler.identity()
        workers: dict[str, Any] = identity["workers"]
        return {a: w for a, w in workers.items() if "cpus" in (w.get("resources") or {})}

    def _follow(self, run_id: str, future: Future) -> None:
        self._futures[run_id] = future
        self._started_at[run_id] = time.monotonic()
        self._followers[run_id] = asyncio.create_task(self._await_end(run_id, future))

    async def _await_end(self, run_id: str, future: Future) -> None:
        try:
            await wait([future])
            if future.status == "finished":
                outcome = await Variable(remote.outcome_name(run_id), client=self.client).get(
                    timeout=30
                )
            else:
                exc = await future.exception() if future.status == "error" else None
                why = LOST if exc is None or isinstance(exc, KilledWorker) else str(exc)
                outcome = {"error": why}
        except asyncio.CancelledError:  # this service stops: the job runs on, taken up later
            self._futures.pop(run_id, None)
            self._followers.pop(run_id, None)
            raise
        except Exception as exc:  # the scheduler went away, or its outcome never came
            log.warning("run %s: its outcome could not be fetched", run_id, exc_info=True)
            outcome = {"error": f"the cluster lost it: {type(exc).__name__}: {exc}"}
        recorded_end = False
        try:
            await self._record(run_id, outcome)
            recorded_end = True
        except Exception:  # never lose the slot over a bookkeeping failure
            log.exception("run %s: recording its end failed", run_id)
            with contextlib.suppress(Exception):  # the store may be down: taken up at next start
                await self._finish(
                    run_id, RunStatus.FAILED, "recording its outcome failed; see the log"
                )
                recorded_end = True
            started = self._started_at.pop(run_id, time.monotonic())
            self._ended(RunStatus.FAILED, time.monotonic() - started)
        finally:
            self._futures.pop(run_id, None)
            self._followers.pop(run_id, None)
            if recorded_end:  # else its outcome stays on the scheduler for the next start
                self._forget(run_id)

    async def _record(self, run_id: str, outcome: dict[str, Any]) -> None:
        reason = self._stop_reason.pop(run_id, None)
        if reason is not None:  # a cancelled run keeps no model, even one that just finished
            await self._finish(run_id, RunStatus.KILLED, reason)
        elif "error" in outcome:
            await self._finish(run_id, RunStatus.FAILED, str(outcome["error"]))
        else:
            await run_sync(self._record_fitted, run_id, outcome)
        status = (await run_sync(self.store.get_run, run_id)).status
        seconds = time.monotonic() - self._started_at.pop(run_id, time.monotonic())
        self._ended(status, seconds)

    def _record_fitted(self, run_id: str, outcome: dict[str, Any]) -> None:
        """(In a thread.) The worker's fit, recorded here as a local job records its own."""
        run = self.store.get_run(run_id)
        if run.worker is None:  # its start event was missed (this service was away)
            self.store.set_worker(run_id, outcome["worker"], outcome.get("host"), {})
        with contextlib.suppress(TrainingFailed), recorded(self.store, run_id) as artefact:
            fitted = remote.unpack(outcome)
            if not run.environment:
                self.store.set_worker(
                    run_id, outcome["worker"], outcome.get("host"), fitted.environment
                )
            record(self.store, run_id, fitted, artefact)

    async def _finish(self, run_id: str, status: RunStatus, error: str) -> None:
        def finish() -> None:
            with contextlib.suppress(Conflict, NotFound):
                self.store.finish(run_id, status, error=error[:ERROR_MAX])

        await run_sync(finish)

    def _forget(self, run_id: str) -> None:
        """The run's names on the scheduler are no longer needed."""
        with contextlib.suppress(CommClosedError, AttributeError, RuntimeError):
            Variable(remote.outcome_name(run_id), client=self.client).delete()
            for name in (remote.cancel_name, remote.attempt_name):
                clearing = asyncio.ensure_future(Event(name(run_id), client=self.client).clear())
                self._clearing.add(clearing)
                clearing.add_done_callback(self._clearing.discard)

    # -- events and restarts --------------------------------------------------------------------

    async def _write_events(self) -> None:
        """Progress events into the run store, one at a time, in the order they came."""
        while True:
            _, msg = await self._events.get()
            run_id = msg.get("run")
            if run_id not in self._futures:  # another client's run, or one already recorded
                continue
            try:
                await run_sync(self._write_event, run_id, msg)
            except Exception:  # a busy store loses a progress line, never the follower
                log.warning("run %s: progress not recorded", run_id, exc_info=True)

    def _write_event(self, run_id: str, msg: dict[str, Any]) -> None:
        if msg.get("started"):
            self.store.set_worker(run_id, msg["name"], msg.get("host"), msg["environment"])
        elif "fold" in msg:
            points = [(f"cv_fold_{k}", v, int(msg["fold"])) for k, v in msg["scores"].items()]
            self.store.log_metrics(run_id, points)
        elif run_id not in self._stop_reason:
            self.store.set_progress(run_id, str(msg["stage"]), float(msg["fraction"]))

    def _sent_runs(self) -> list[RunInfo]:
        """(In a thread.) Runs a service sent to the cluster (running, no local process), and
        not another live process's (a `training sweep` running its own)."""
        return [
            run
            for run in self.store.running()
            if run.request is not None and run.pid is None and taken_up_here(run.owner)
        ]

    async def _take_up(self, run: RunInfo) -> None:
        """After a restart: follow a sent run the cluster still has, record one it finished."""
        key = remote.task_key(run.id)
        state = (await self.client.scheduler.get_task_status(keys=[key])).get(key)
        if state not in (None, "forgotten", "released"):
            self._follow(run.id, Future(key, client=self.client))
            return
        try:
            outcome = await Variable(remote.outcome_name(run.id), client=self.client).get(
                timeout=0.5
            )
        except TimeoutError:
            outcome = {"error": LOST}
        self._started_at[run.id] = time.monotonic()
        await self._record(run.id, outcome)
        self._forget(run.id)
        log.warning("run %s: taken up after a restart, %s", run.id, outcome.get("error", "done"))
