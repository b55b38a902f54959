"""Runs: queue a training, follow it, cancel it, search them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from anyio.to_thread import run_sync
from fastapi import APIRouter, Depends, Query, Request
from sse_starlette.sse import EventSourceResponse
from starlette.responses import Response

from training.api.deps import Context, ContextDep, ExecutorDep, StoreDep, json_body
from training.api.errors import responses
from training.api.schemas import Cancelled, RunEvent, Submitted, json_response
from training.errors import UserError
from training.learning import uploads
from training.learning.data import SHIPPED
from training.learning.pipeline import submit
from training.learning.request import TrainRequest
from training.store.records import RunInfo, RunPage, RunStatus
from training.store.runs import RunStore
from training.store.search import RunSearch

EVENT_POLL_S = 0.5
router = APIRouter(prefix="/runs", tags=["runs"])


def network_dataset(dataset: str) -> None:
    """A data set a request from the network may name: shipped, or an upload's id."""
    if not (dataset in SHIPPED or uploads.is_dataset_id(dataset)):
        raise UserError(
            f"dataset {dataset!r}: use a shipped set ({', '.join(SHIPPED)}) or the id of "
            "an upload (POST /datasets); paths on the server are not accepted",
            field="dataset",
        )


async def queue_training(body: TrainRequest, context: Context) -> str:
    """Check a training request as `training train` does and queue it: the one way in for the
    API and the dashboard. Data sets are shipped ones or uploads, never a path on the server."""
    network_dataset(body.dataset)
    async with context.submitting:
        context.executor.has_room()
        # Checking reads the data set's description: off the event loop.
        run_id = await run_sync(submit, body, context.settings, context.store)
        await context.executor.submit(run_id)
    return run_id


@router.post(
    "",
    status_code=202,
    response_model=Submitted,
    responses=responses(404, 415, 429),
    dependencies=[Depends(json_body)],
)
async def start_run(body: TrainRequest, request: Request, context: ContextDep) -> Response:
    """Queue a training; checked by the same rules as `training train`."""
    run_id = await queue_training(body, context)
    location = str(request.url_for("get_run", run_id=run_id))
    submitted = Submitted(run_id=run_id, status=RunStatus.QUEUED)
    return json_response(submitted, 202, headers={"Location": location})


@router.get("", response_model=RunPage, responses=responses())
def list_runs(
    store: StoreDep,
    filter: Annotated[
        str | None, Query(description="e.g. metrics.accuracy > 0.9 and status = FINISHED")
    ] = None,
    order_by: Annotated[
        str | None,
        Query(description="submitted_at (default), start_time, end_time or metrics.NAME, asc|desc"),
    ] = None,
    experiment: str | None = None,
    status: Annotated[
        str | None, Query(description="QUEUED, RUNNING, FINISHED, FAILED or KILLED")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    page_token: str | None = None,
) -> Response:
    """Runs, filtered and ordered like `training runs list`, by keyset pages."""
    search = RunSearch.parse(filter, order_by, experiment=experiment, status=status)
    return json_response(store.search(search, limit, page_token))


@router.get("/{run_id}", name="get_run", response_model=RunInfo, responses=responses(404))
def get_run(run_id: str, store: StoreDep) -> Response:
    """Status, stage, progress, timestamps, params, metrics, model tag and error."""
    return json_response(store.get_run(run_id))


@router.post("/{run_id}/cancel", response_model=Cancelled, responses=responses(404, 409))
async def cancel_run(run_id: str, store: StoreDep, executor: ExecutorDep) -> Response:
    """A queued run becomes KILLED at once; a running one is stopped within seconds."""
    run = await run_sync(store.get_run, run_id)
    status = await executor.cancel(run.id)
    return json_response(Cancelled(run_id=run.id, status=status))


def _event(run: RunInfo) -> dict[str, str]:
    data = RunEvent(
        run_id=run.id, status=run.status, stage=run.stage, progress=run.progress, error=run.error
    )
    if not run.status.ended:
        shown = data.model_dump(mode="json", exclude={"metrics", "model_tag"})
        return {"event": "progress", "data": json.dumps(shown)}
    data = data.model_copy(update={"metrics": run.metrics, "model_tag": run.model_tag})
    return {"event": "end", "data": json.dumps(data.model_dump(mode="json"))}


@router.get(
    "/{run_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "`event: progress` with a RunEvent as data whenever the status, "
            "stage or progress changes, then one `event: end`; a comment every 15 s.",
            "content": {"text/event-stream": {"schema": RunEvent.model_json_schema()}},
        },
        **responses(404),
    },
)
async def run_events(run_id: str, store: StoreDep) -> EventSourceResponse:
    """Server-sent events: the run's progress as it changes, until it ends."""
    first = await run_sync(store.get_run, run_id)
    return event_stream(store, [first])


def event_stream(store: RunStore, runs: list[RunInfo]) -> EventSourceResponse:
    """Each run's events (see ``_event``) as its status, stage or progress changes, until every
    one has ended; the store is read twice a second for the runs still going."""

    async def events() -> AsyncIterator[dict[str, str]]:
        seen: dict[str, tuple[object, ...]] = {}
        current = runs
        while True:
            for run in current:
                state = (run.status, run.stage, run.progress)
                if seen.get(run.id) != state:
                    seen[run.id] = state
                    yield _event(run)
            going = [run.id for run in current if not run.status.ended]
            if not going:
                return
            await asyncio.sleep(EVENT_POLL_S)
            current = await run_sync(store.get_runs, going)

    # A comment every 15 s keeps proxies from cutting an idle stream.
    return EventSourceResponse(events(), ping=15)
