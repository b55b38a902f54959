"""The Sweeps and Sweep pages; cancelling a whole sweep. The records are the ones GET /sweeps
and GET /sweeps/{id} answer with, read by the same store; the cancel is POST
/sweeps/{id}/cancel's own."""

from __future__ import annotations

import contextlib
from typing import Annotated

from anyio.to_thread import run_sync
from fastapi import APIRouter, Query
from starlette.responses import Response

from training.api.deps import ContextDep
from training.api.sweeps import stop_sweep
from training.api.ui import views
from training.api.ui.dashboard import FormDep, MemberDep, PageRoute
from training.api.ui.runs import COMPARE, LIVE_MAX
from training.errors import Conflict
from training.store.sweeps import LIST_MAX

router = APIRouter(prefix="/ui", route_class=PageRoute, include_in_schema=False)


@router.get("/sweeps")
def sweeps_page(
    visit: MemberDep,
    context: ContextDep,
    limit: Annotated[int, Query(ge=1, le=LIST_MAX)] = 50,
) -> Response:
    """Sweeps, newest first, as GET /sweeps lists them: status, progress, the best run."""
    sweeps = context.sweeps.recent(limit)
    return visit.page("sweeps.html", sweeps=sweeps, limit=limit, most=LIST_MAX)


@router.get("/sweeps/{sweep_id}")
def sweep_page(sweep_id: str, visit: MemberDep, context: ContextDep) -> Response:
    """A sweep's runs with the parameters that vary and the metric, the best marked, a plot of
    the metric per run; the runs not ended yet followed live (the first ``LIVE_MAX`` of them:
    the page reloads when they end, and follows the next)."""
    sweep = context.sweeps.get(sweep_id)
    going = [run.id for run in sweep.runs if not run.status.ended]
    return visit.page(
        "sweep.html",
        sweep=sweep,
        varying=views.varying_params(sweep.runs),
        live=set(going[:LIVE_MAX]),
        compared=[("run", run_id) for run_id in views.best_runs(sweep, COMPARE[1])],
        compare_least=COMPARE[0],
        plot=views.sweep_plot(sweep),
    )


@router.post("/sweeps/{sweep_id}/cancel")
async def sweep_cancel(sweep_id: str, form: FormDep, context: ContextDep) -> Response:
    """As POST /sweeps/{id}/cancel; a sweep that ended meanwhile is simply shown as it ended."""
    sweep = await run_sync(context.sweeps.get, sweep_id)
    with contextlib.suppress(Conflict):
        await stop_sweep(context, sweep.id)
    return form.visit.redirect(f"/sweeps/{sweep.id}")
