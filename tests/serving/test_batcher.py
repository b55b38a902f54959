"""The batcher in process, over a stand-in model whose cost the test sets: who goes inline, who
waits, what a batch holds, that each request gets its own rows back, and that a slow batch
neither blocks the event loop nor outlives a request's timeout."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from training.serving.batcher import INLINE_S, Batcher, CallCost
from training.serving.predictor import PredictionError


class StandIn:
    """A model that answers each row with its own "id" times ten, ``seconds`` a call, and
    refuses a row whose id is negative (as a real model refuses a row it cannot answer)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls: list[list[list[int]]] = []  # each call: its requests' row ids

    @property
    def sizes(self) -> list[list[int]]:
        return [[len(request) for request in call] for call in self.calls]

    def answer(self, method: str, requests: list[list[dict[str, Any]]]) -> list[Any]:
        self.calls.append([[row["id"] for row in request] for request in requests])
        if self.seconds:
            time.sleep(self.seconds)
        answers: list[Any] = []
        for request in requests:
            if any(row["id"] < 0 for row in request):
                answers.append(PredictionError("row refused"))
            else:
                answers.append([row["id"] * 10 for row in request])
        return answers

    def one(self, method: str, rows: list[dict[str, Any]]) -> list[Any]:
        [result] = self.answer(method, [rows])
        if isinstance(result, PredictionError):
            raise result
        return list(result)


class Seen:
    def __init__(self) -> None:
        self.batches: list[int] = []
        self.waits: list[float] = []

    def batched(self, method: str, rows: int) -> None:
        self.batches.append(rows)

    def waited(self, method: str, seconds: float) -> None:
        self.waits.append(seconds)


class FixedCost(CallCost):
    """A cost that stays what the test says, whatever a loaded machine makes a call take."""

    def observe(self, rows: int, seconds: float) -> None:
        pass


def batcher(seconds: float, **limits: Any) -> tuple[Batcher, StandIn, Seen]:
    model, seen = StandIn(seconds), Seen()
    options = {"max_rows": 256, "max_wait_s": 0.005, **limits}
    cost = FixedCost(overhead=seconds, per_row=0.0)
    made = Batcher(model, "predict", cost, observe=seen, **options)  # type: ignore[arg-type]
    return made, model, seen


def rows(*ids: int) -> list[dict[str, Any]]:
    return [{"id": i} for i in ids]


def test_a_cheap_model_answers_inline_one_request_a_call() -> None:
    made, model, seen = batcher(0.0)

    async def scenario() -> list[list[Any]]:
        return list(await asyncio.gather(*(made.answer(rows(i)) for i in range(20))))

    assert asyncio.run(scenario()) == [[i * 10] for i in range(20)]
    assert model.sizes == [[1]] * 20 and seen.waits == [0.0] * 20


def test_concurrent_requests_share_calls_and_each_gets_its_own_rows_in_order() -> None:
    made, model, seen = batcher(0.02)
    requests = [rows(*range(100 * i, 100 * i + 1 + i % 4)) for i in range(40)]

    async def scenario() -> list[list[Any]]:
        return list(await asyncio.gather(*(made.answer(r) for r in requests)))

    answers = asyncio.run(scenario())
    assert answers == [[row["id"] * 10 for row in r] for r in requests]
    assert len(model.calls) < 10  # forty requests, a handful of calls
    assert sum(seen.batches) == sum(len(r) for r in requests) and len(seen.waits) == 40


def test_a_lone_request_never_waits_for_a_batch() -> None:
    # A gather window would hold each request for the call's overhead (0.2 s here).
    made, _, seen = batcher(0.2, max_wait_s=1.0)

    async def one_after_another() -> None:
        for i in range(3):
            await made.answer(rows(i))

    asyncio.run(one_after_another())
    assert max(seen.waits) < 0.1


def test_a_batch_holds_at_most_max_rows_but_always_one_request() -> None:
    made, model, _ = batcher(0.02, max_rows=10)

    async def scenario() -> None:
        await asyncio.gather(
            *(made.answer(rows(*range(4))) for _ in range(8)), made.answer(rows(*range(30)))
        )

    asyncio.run(scenario())
    assert all(sum(call) <= 10 or call == [30] for call in model.sizes), model.sizes
    assert [30] in model.sizes


def test_a_refused_row_fails_its_request_only() -> None:
    made, _, _ = batcher(0.02)

    async def scenario() -> list[Any]:
        return list(
            await asyncio.gather(
                made.answer(rows(1)),
                made.answer(rows(2, -3)),
                made.answer(rows(4)),
                return_exceptions=True,
            )
        )

    first, bad, last = asyncio.run(scenario())
    assert first == [10] and last == [40] and isinstance(bad, PredictionError)


def test_the_event_loop_keeps_answering_while_a_slow_batch_runs() -> None:
    made, _, _ = batcher(0.5)

    async def scenario() -> float:
        slow = asyncio.create_task(made.answer(rows(1)))
        await asyncio.sleep(0.05)  # the batch is running now, in its thread
        started = time.perf_counter()
        for _ in range(10):
            await asyncio.sleep(0.001)  # what a health check needs: the loop
        answered = time.perf_counter() - started
        assert await slow == [10]
        return answered

    assert asyncio.run(scenario()) < 0.2


def test_a_request_that_times_out_leaves_the_batch_and_the_queue() -> None:
    made, model, _ = batcher(0.2)

    async def scenario() -> list[Any]:
        running = asyncio.create_task(made.answer(rows(1)))
        await asyncio.sleep(0.02)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(made.answer(rows(2)), timeout=0.05)  # still queued
        later = asyncio.create_task(made.answer(rows(3)))
        return [await running, await later]

    assert asyncio.run(scenario()) == [[10], [30]]
    assert model.calls == [[[1]], [[3]]]  # the request that gave up was never computed


def test_the_cost_estimate_follows_the_calls() -> None:
    cost = CallCost(overhead=0.001, per_row=0.0)
    for _ in range(50):
        for n in (1, 10, 100):
            cost.observe(n, 0.009 + 0.00005 * n)
    assert cost.overhead == pytest.approx(0.009, rel=0.01)
    assert cost.per_row == pytest.approx(0.00005, rel=0.01)
    assert cost.estimate(1) > INLINE_S
