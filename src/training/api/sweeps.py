"""Sweeps: queue a search over hyper-parameters, follow it, cancel it whole."""

from __future__ import annotations

import asyncio
from typing import Annotated

from anyio.to_thread import run_sync
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from training.api.deps import CallerDep, Context, ContextDep, json_body
from training.api.errors import responses
from training.api.runs import network_dataset
from training.api.schemas import SweepList, SweepSubmitted, json_response
from training.errors import Conflict, UserError
from training.jobs.queue import taken_up_here
from training.learning.sweeps import SweepRequest, plan_sweep
from training.store.records import SweepInfo

router = APIRouter(prefix="/sweeps", tags=["sweeps"])


@router.post(
    "",
    status_code=202,
    response_model=SweepSubmitted,
    responses=responses(404, 415, 429),
    dependencies=[Depends(json_body)],
)
async def start_sweep(
    body: SweepRequest, request: Request, context: ContextDep, caller: CallerDep
) -> Response:
    """Queue every run of a grid or a random search; each is checked as `POST /runs` would."""
    network_dataset(body.dataset)
    settings = context.settings
    async with context.submitting:
        plan = await run_sync(plan_sweep, body, settings, settings.training_sweep_max_runs)
        if len(plan.runs) > settings.training_max_queued:  # would wait for a room never made
            raise UserError(
                f"the sweep makes {len(plan.runs)} runs; at most {settings.training_max_queued} "
                "may wait in the queue (TRAINING_MAX_QUEUED): ask for fewer",
                field="samples" if body.samples else "grid",
            )
        context.executor.has_room(len(plan.runs))
        sweep_id, run_ids = await run_sync(context.sweeps.create, plan.recorded_as(caller))
        for run_id in run_ids:
            await context.executor.submit(run_id)
    location = str(request.url_for("get_sweep", sweep_id=sweep_id))
    body_out = SweepSubmitted(sweep_id=sweep_id, run_ids=run_ids)
    return json_response(body_out, 202, headers={"Location": location})


@router.get("", response_model=SweepList, responses=responses())
async def list_sweeps(
    context: ContextDep, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> Response:
    """Sweeps, newest first, with their status, progress and best run."""
    return json_response(SweepList(sweeps=await run_sync(context.sweeps.recent, limit)))


@router.get("/{sweep_id}", name="get_sweep", response_model=SweepInfo, responses=responses(404))
async def get_sweep(sweep_id: str, context: ContextDep) -> Response:
    """Status, progress (runs ended of all), each run with its params and metric, the best."""
    return json_response(await run_sync(context.sweeps.get, sweep_id))


async def stop_sweep(context: Context, sweep_id: str) -> None:
    """Cancel every run of the sweep not ended yet (waiting ones KILLED at once, running ones
    within seconds) and mark the sweep KILLED; Conflict when all of them had ended. A run that
    ends on its own meanwhile is no error. The API's cancel and the dashboard's button."""
    open_runs = await run_sync(context.sweeps.request_cancel, sweep_id, taken_up_here)
    results = await asyncio.gather(
        *(context.executor.cancel(run_id) for run_id in open_runs), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, Conflict):
            raise result


@router.post("/{sweep_id}/cancel", response_model=SweepInfo, responses=responses(404, 409))
async def cancel_sweep(sweep_id: str, context: ContextDep) -> Response:
    """Every run of the sweep not ended yet: waiting ones KILLED at once, running ones within
    seconds; the sweep is KILLED."""
    await stop_sweep(context, sweep_id)
    return json_response(await run_sync(context.sweeps.get, sweep_id))
