"""The Runs, Run and Compare pages; cancelling a run; the live status the pages follow."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

from anyio.to_thread import run_sync
from fastapi import APIRouter, Query
from sse_starlette.sse import EventSourceResponse
from starlette.responses import Response

from training.api.deps import ContextDep, StoreDep
from training.api.runs import event_stream
from training.api.ui import views
from training.api.ui.dashboard import FormDep, MemberDep, PageRoute
from training.errors import Conflict, UserError
from training.store.records import RunInfo, RunStatus
from training.store.search import RunSearch

router = APIRouter(prefix="/ui", route_class=PageRoute, include_in_schema=False)
#: What the pages' scripts call: JSON or event streams, refusals as the API's JSON.
feeds = APIRouter(prefix="/ui", include_in_schema=False)
PAGE_MAX = 200
COMPARE = (2, 5)
LIVE_MAX = 200  # runs one event stream follows
LOG_TAIL_BYTES = 64 * 1024


@router.get("")
def dashboard_root(visit: MemberDep) -> Response:
    return visit.redirect("/")


@router.get("/")
def runs_page(
    visit: MemberDep,
    store: StoreDep,
    filter: str | None = None,
    order_by: str | None = None,
    page_token: str | None = None,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 50,
) -> Response:
    """Runs by the search language of `training runs list`, a keyset page at a time; a
    search that cannot be read is said above the table (400), as GET /runs would say it."""
    runs: list[RunInfo] = []
    next_token = error = None
    try:
        search = RunSearch.parse(filter, order_by)
        found = store.search(search, limit, page_token)
        runs, next_token = found.runs, found.next_page_token
        columns = views.metric_columns(runs, search.order)
    except UserError as exc:
        error, columns = exc.message, []
    return visit.page(
        "runs.html",
        400 if error else 200,
        runs=runs,
        columns=columns,
        filter=filter or "",
        order_by=order_by or "",
        limit=limit,
        page_token=page_token,
        next_token=next_token,
        error=error,
        compare=COMPARE,
    )


def run_log(logs: Path, run: RunInfo) -> str | None:
    """The end of the job's output (the training service's own runs have one)."""
    path = logs / f"{run.id}.log"  # a run id is 32 hex digits: no path of another file
    try:
        with path.open("rb") as log:
            size = log.seek(0, 2)
            log.seek(max(0, size - LOG_TAIL_BYTES))
            text = log.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None
    return text if size <= LOG_TAIL_BYTES else "...\n" + text.partition("\n")[2]


@router.get("/runs/{run_id}")
def run_page(run_id: str, visit: MemberDep, context: ContextDep) -> Response:
    store = context.store
    run = store.get_run(run_id)
    history = store.metric_history(run.id)
    evaluation = store.evaluation(run.id)
    ended_badly = run.status in (RunStatus.FAILED, RunStatus.KILLED)
    return visit.page(
        "run.html",
        run=run,
        metrics=views.summary_metrics(run.metrics),
        history=[p for p in history if p.step > 0],
        evaluation=evaluation,
        shades=views.shades(evaluation.confusion) if evaluation and evaluation.confusion else [],
        importances=views.importance_bars(evaluation),
        plots=views.plot_data(history, evaluation),
        log=run_log(context.settings.run_logs_dir, run) if ended_badly else None,
    )


@router.post("/runs/{run_id}/cancel")
async def cancel_run(run_id: str, form: FormDep, context: ContextDep) -> Response:
    """As POST /runs/{id}/cancel; a run that ended meanwhile is simply shown as it ended."""
    run = await run_sync(context.store.get_run, run_id)
    with contextlib.suppress(Conflict):
        await context.executor.cancel(run.id)
    return form.visit.redirect(f"/runs/{run.id}")


@router.get("/compare")
def compare_page(
    visit: MemberDep, store: StoreDep, run: Annotated[list[str] | None, Query()] = None
) -> Response:
    """2 to 5 runs side by side: parameters that differ marked, metrics as bars."""
    chosen = list(dict.fromkeys(run or []))
    low, high = COMPARE
    if not low <= len(chosen) <= high:
        raise UserError(f"compare: choose {low} to {high} runs (got {len(chosen)})", field="run")
    runs = store.get_runs(chosen)
    return visit.page(
        "compare.html",
        runs=runs,
        params=views.param_rows(runs),
        metrics=views.metric_rows(runs),
    )


@feeds.get("/events")
async def events(
    visit: MemberDep, store: StoreDep, run: Annotated[list[str] | None, Query()] = None
) -> EventSourceResponse:
    """The event stream of GET /runs/{id}/events, for several runs at once (a page's queued
    and running ones): one connection, whatever their number."""
    chosen = list(dict.fromkeys(run or []))
    if not 1 <= len(chosen) <= LIVE_MAX:
        raise UserError(f"events: name 1 to {LIVE_MAX} runs", field="run")
    return event_stream(store, await run_sync(store.get_runs, chosen))
