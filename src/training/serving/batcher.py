"""Adaptive micro-batching: concurrent requests' rows in one model call, when that pays.

Whether it pays follows the model's measured cost of a call, ``t(n) = overhead + per_row * n``
(timed on sample rows at start, then kept current by every call), never a setting to tune:
- a call that costs less than ``INLINE_S`` (the iris pipeline: ~0.1 ms) is made at once on
  the event loop, alone: grouping would only add waiting and bookkeeping;
- a dearer one (a forest of trees: ~9 ms whatever the rows) joins a queue. While one batch
  runs, the requests that arrive wait; when it ends, they all go together, up to
  ``max_rows``. When nothing runs, a request goes at once: a lone client never waits for a
  batch that will not come. Under concurrent load the next batch may wait a moment for
  more, at most ``max_wait_s`` and never longer than the call's own overhead;
- a batch that costs more than ``THREAD_S`` runs in a worker thread, so health checks and
  cheap requests keep being answered; one batch runs at a time.
Validation happens per request before its rows get here; ``Predictor.answer`` hands every
request its own rows back, in order, or its own error.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from anyio.to_thread import run_sync

from training.serving.card import Method
from training.serving.predictor import Predictor, Row

INLINE_S = 0.0005
THREAD_S = 0.001
_DECAY = 0.97  # weight of the past in the running estimate, per call


class BatchObserver(Protocol):
    def batched(self, method: str, rows: int) -> None:
        """One model call of ``rows`` rows."""

    def waited(self, method: str, seconds: float) -> None:
        """How long one request waited for its batch to start."""


@dataclass
class CallCost:
    """What one model call costs, in seconds, for ``n`` rows: a weighted least-squares line
    through the calls seen, the start-up probe first."""

    overhead: float
    per_row: float
    _sums: list[float] = field(default_factory=lambda: [0.0] * 5)  # w, wn, wt, wnn, wnt

    def estimate(self, rows: int) -> float:
        return self.overhead + self.per_row * rows

    def observe(self, rows: int, seconds: float) -> None:
        new = (1.0, rows, seconds, rows * rows, rows * seconds)
        self._sums = [s * _DECAY + x for s, x in zip(self._sums, new, strict=True)]
        w, wn, wt, wnn, wnt = self._sums
        spread = w * wnn - wn * wn
        if spread > 1e-9 * max(1.0, w * wnn):  # sizes vary enough to tell the two terms apart
            per_row = (w * wnt - wn * wt) / spread
            self.per_row = max(0.0, per_row)
            self.overhead = max(0.0, (wt - self.per_row * wn) / w)
        else:  # one size only: keep the slope, move the level
            self.overhead = max(0.0, wt / w - self.per_row * wn / w)

    @classmethod
    def probe(cls, call: Callable[[list[Row]], object], rows: list[Row]) -> CallCost:
        """Time calls of one row and of ``len(rows)`` rows (the median of a few each)."""

        def timed(batch: list[Row], times: int) -> float:
            seconds = []
            for _ in range(times):
                started = time.perf_counter()
                call(batch)
                seconds.append(time.perf_counter() - started)
            return statistics.median(seconds)

        one, many = timed(rows[:1], 5), timed(rows, 3)
        per_row = max(0.0, (many - one) / max(1, len(rows) - 1))
        return cls(overhead=max(0.0, one - per_row), per_row=per_row)


PROBE_ROWS = 64


def batchers_for(
    predictor: Predictor, *, max_rows: int, max_wait_s: float, observe: BatchObserver
) -> dict[Method, Batcher]:
    """A batcher for each method the model has, each with its cost probed on sample rows."""
    samples = predictor.schema.sample_rows(PROBE_ROWS)
    batchers: dict[Method, Batcher] = {}
    for method in predictor.methods:

        def call(rows: list[Row], method: Method = method) -> object:
            return predictor.answer(method, [rows])

        cost = CallCost.probe(call, samples)
        batchers[method] = Batcher(
            predictor, method, cost, max_rows=max_rows, max_wait_s=max_wait_s, observe=observe
        )
    return batchers


@dataclass
class _Job:
    rows: list[Row]
    future: asyncio.Future[Any]
    queued_at: float


class Batcher:
    """The queue of one method (predict or predict_proba) of one model."""

    def __init__(
        self,
        predictor: Predictor,
        method: Method,
        cost: CallCost,
        *,
        max_rows: int,
        max_wait_s: float,
        observe: BatchObserver,
    ) -> None:
        self.predictor, self.method, self.cost = predictor, method, cost
        self.max_rows, self.max_wait_s, self.observe = max_rows, max_wait_s, observe
        self._pending: deque[_Job] = deque()
        self._busy = False
        self._drainer: asyncio.Task[None] | None = None
        self._last_jobs = 1  # requests in the last batch: how concurrent the load is

    async def answer(self, rows: list[Row]) -> list[Any]:
        """This request's answer; raises its PredictionError."""
        if not self._busy and self.cost.estimate(len(rows)) < INLINE_S:
            return self._timed_one(rows)
        loop = asyncio.get_running_loop()
        job = _Job(rows, loop.create_future(), time.perf_counter())
        self._pending.append(job)
        if not self._busy:
            self._busy = True
            self._drainer = loop.create_task(self._drain())
        # A timed-out request cancels its future: the batch skips it.
        return list(await job.future)

    def _timed_one(self, rows: list[Row]) -> list[Any]:
        started = time.perf_counter()
        try:
            return self.predictor.one(self.method, rows)
        finally:
            self.cost.observe(len(rows), time.perf_counter() - started)
            self.observe.batched(self.method, len(rows))
            self.observe.waited(self.method, 0.0)

    async def _drain(self) -> None:
        try:
            while self._pending:
                if len(self._pending) < self._last_jobs:  # more are likely on their way
                    await asyncio.sleep(min(self.max_wait_s, self.cost.overhead))
                batch = self._take()
                if batch:
                    await self._run(batch)
        finally:
            self._busy = False

    def _take(self) -> list[_Job]:
        """The next batch: waiting requests in order, up to ``max_rows`` (at least one)."""
        batch: list[_Job] = []
        rows = 0
        while self._pending and (not batch or rows + len(self._pending[0].rows) <= self.max_rows):
            job = self._pending.popleft()
            if not job.future.done():  # a cancelled (timed-out) request is dropped
                batch.append(job)
                rows += len(job.rows)
        return batch

    async def _run(self, batch: list[_Job]) -> None:
        rows = sum(len(job.rows) for job in batch)
        now = time.perf_counter()
        self.observe.batched(self.method, rows)
        for job in batch:
            self.observe.waited(self.method, now - job.queued_at)
        requests = [job.rows for job in batch]
        started = time.perf_counter()
        try:
            if self.cost.estimate(rows) > THREAD_S:
                answers = await run_sync(self.predictor.answer, self.method, requests)
            else:
                answers = self.predictor.answer(self.method, requests)
        except Exception as exc:  # noqa: BLE001 - each request gets the failure, the queue goes on
            answers = [exc] * len(batch)
        self.cost.observe(rows, time.perf_counter() - started)
        self._last_jobs = len(batch)
        for job, answer in zip(batch, answers, strict=True):
            if job.future.done():
                continue
            if isinstance(answer, Exception):  # a PredictionError, or the call's failure
                job.future.set_exception(answer)
            else:
                job.future.set_result(answer)
